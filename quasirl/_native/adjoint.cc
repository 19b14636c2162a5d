// The adjoint of the forward recursion (pull.h), over the kept u_t: per temperature, with
// N = dF/dc per entry (forward_backward, for forward mode), or contracted with weights W
// over temperatures as it goes (adjoint, for reverse mode: W holds the cotangent of F), in
// one pass per step by destination (benchmarks/NOTES.md, sections 12 and 13).

#include "pull.h"

namespace quasirl {

namespace {

// ------------------------------------------------------------------------------------------
// The adjoint: with p_j = exp((x_j - smax) / T) the weights of the entries entering s' (T = 0:
// shared equally by the entries at the maximum, the subgradient JAX takes for max), the
// message g_t(s) = dF/du_t(s) = sum over entries j leaving s of g_{t+1}(s') p_j, starting
// from g_H = the softmax over states of u_H. It gives, per temperature,
//   N_j = dF/dc_j = sum_t g_{t+1}(s') p_j   (the tempered occupancy of entry j),
//   rho = g_0 = dF/du_0,
//   dF/dT at fixed init, w and r = Hs + sum_j N_j log w_j + sum_s rho_s log init(s), with
//   Hs = sum_t sum_s' g_{t+1}(s') H(p(s')) + H(g_H) (entropies in nats), the part at fixed
//   u_0 and c (c = T log w + r and u_0 = T log init carry the rest).
// forward_backward (forward mode) runs each step in two passes. By destination: the weights
// (entry_weights), q_j = g_{t+1}(s') p_j added to N and kept. By source: g_t(s) = the sum of
// the q of the entries leaving s (a gather, so no two threads write one place).
// ------------------------------------------------------------------------------------------

// The live entries numbered consecutively (entry e = first[s'] + j, j < cnt[s']), and the
// entries leaving each state as such numbers.
struct Out {
  std::vector<int64_t> first;  // [S + 1]
  std::vector<int64_t> start;  // [S + 1]
  std::vector<int64_t> pos;    // [live entries]
  explicit Out(const Problem& P) : first(P.S + 1, 0), start(P.S + 1, 0) {
    for (int64_t s = 0; s < P.S; ++s) {
      first[s + 1] = first[s] + P.cnt[s];
      for (int32_t j = 0; j < P.cnt[s]; ++j) ++start[P.isrc[s * P.J + j] + 1];
    }
    for (int64_t s = 0; s < P.S; ++s) start[s + 1] += start[s];
    pos.assign(start[P.S], 0);
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t s = 0; s < P.S; ++s) {
      for (int32_t j = 0; j < P.cnt[s]; ++j) pos[fill[P.isrc[s * P.J + j]]++] = first[s] + j;
    }
  }
};

// The weights of the c entries entering state s, for one vector of lanes: the terms formed
// exactly as the forward formed them (col = u_t's column of these lanes, sh their shift),
// normalised over the entries (at low T an unnormalised exp(x_j - u_{t+1}) would carry the
// rounding of u_{t+1}, ulp(|u| / T), into the mass), times g: q_j into q[j * qs] and
// log2 of the normalised weight into y[j]. T = 0 lanes share equally among exact ties (the
// subgradient JAX takes for max); lanes where no entry is reachable get q = 0. x and ex are
// scratch of c vectors.
QI void entry_weights(const Problem& P, const Lanes& L, int64_t s, int32_t c, const float* col,
                      vf sh, vf g, vf* x, vf* ex, vf* y, vf* q, int64_t qs) {
  const int32_t* sj = P.isrc.data() + s * P.J;
  if (L.scaled) {
    for (int32_t j = 0; j < c; ++j) {
      const int64_t p = s * P.J + j;
      x[j] = splat(P.irw[p]) * L.invT + (vload(col + int64_t(sj[j]) * P.Bp) + splat(P.ilw2[p]));
    }
  } else {
    for (int32_t j = 0; j < c; ++j) {
      const int64_t p = s * P.J + j;
      const vf cj = L.T * splat(P.ilw[p]) + splat(P.irw[p]);
      x[j] = vload(col + int64_t(sj[j]) * P.Bp) - sh + cj;
    }
  }
  vf m = x[0];
  for (int32_t j = 1; j < c; ++j) m = vmax(m, x[j]);
  const auto live = L.scaled ? (m > splat(SENT_BELOW)) : (m > splat(NEG_INF));
  const vf m0 = live ? m : splat(0.0f);
  const vf mul = L.scaled ? splat(1.0f) : L.invT;
  vf sum = splat(0.0f);
  for (int32_t j = 0; j < c; ++j) {  // y: log2 of the weight times the sum, for now
    y[j] = L.scaled ? x[j] - m0 : vmax((x[j] - m0) * mul, splat(-150.0f));
    ex[j] = vexp2(y[j]);
    sum += ex[j];
  }
  sum = vmax(sum, splat(1.0f));
  const vf ginv = g / sum;
  const vf lg = add_log2(splat(0.0f), sum);  // log2 of the sum, in [0, log2 J]
  vf gtie = splat(0.0f), lt = splat(0.0f);   // T = 0 lanes: g / ties, log2 ties
  if (!L.scaled) {
    vf ties = splat(0.0f);
    for (int32_t j = 0; j < c; ++j) ties += (x[j] == m) ? splat(1.0f) : splat(0.0f);
    ties = vmax(ties, splat(1.0f));
    gtie = g / ties;
    for (int i = 0; i < LANES; ++i) lt[i] = std::log2(ties[i]);
  }
  for (int32_t j = 0; j < c; ++j) {
    vf qj = ex[j] * ginv;
    vf yj = y[j] - lg;
    if (!L.scaled) {
      qj = L.maxplus ? ((x[j] == m) ? gtie : splat(0.0f)) : qj;
      yj = L.maxplus ? -lt : yj;
    }
    q[j * qs] = live ? qj : splat(0.0f);
    y[j] = yj;
  }
}

// pass 1 of a backward step: for every s', the normalised weights of its entries; adds
// q = g_{t+1}(s') p to N and writes it to Qb (both [entries, Bp]); adds the entropy and
// sum_j q_j log2 w_j (log2 units) to ent [nthreads, Bp]
void back_pull(const Problem& P, const Out& O, const float* cur, const float* shift,
               const float* gnext, float* N, float* Qb, double* ent) {
  const int64_t Bp = P.Bp, J = P.J, JM = J > 0 ? J : 1;
#pragma omp parallel num_threads(P.nthreads)
  {
    const Share me = share_of(P.S);
    const int tid = me.tid;
    const int64_t s0 = me.s0, s1 = me.s1;
    std::vector<vf> x(JM), y2(JM), ex(JM), qb(JM), myent(P.nv, splat(0.0f));
    constexpr int64_t PD = 16;
    for (int64_t s = s0; s < s1; ++s) {
      if (s + PD < s1) {
        const int32_t* sp = P.isrc.data() + (s + PD) * J;
        for (int32_t j = 0; j < P.cnt[s + PD]; ++j) {
          for (int64_t o = 0; o < Bp; o += 16) __builtin_prefetch(cur + int64_t(sp[j]) * Bp + o);
        }
      }
      const int32_t c = P.cnt[s];
      if (c == 0) continue;
      for (int64_t v = 0; v < P.nv; ++v) {
        const Lanes& L = P.lanes[v];
        const int64_t off = v * LANES;
        const vf g = vload(gnext + s * Bp + off);
        entry_weights(P, L, s, c, cur + off, vload(shift + off), g, x.data(), ex.data(),
                      y2.data(), qb.data(), 1);
        vf e = myent[v];
        for (int32_t j = 0; j < c; ++j) {
          const vf q = qb[j];
          const int64_t at = (O.first[s] + j) * Bp + off;
          vstore(N + at, vload(N + at) + q);
          vstream<true>(Qb + at, q);  // read once, by pass 2
          e += q * (splat(P.ilw2[s * J + j]) - y2[j]);  // entropy and sum N log w, log2 units
        }
        myent[v] = e;
      }
    }
    stream_fence();  // the streamed stores, before pass 2 reads them
    for (int64_t v = 0; v < P.nv; ++v) {
      for (int i = 0; i < LANES; ++i) ent[size_t(tid) * Bp + v * LANES + i] += double(myent[v][i]);
    }
  }
}

// pass 2: g_t(s) = sum of Qb over the entries leaving s
void back_push(const Problem& P, const Out& O, const float* Qb, float* gcur) {
  const int64_t Bp = P.Bp;
#pragma omp parallel for schedule(static) num_threads(P.nthreads)
  for (int64_t s = 0; s < P.S; ++s) {
    constexpr int64_t PD = 16;
    if (s + PD < P.S) {
      for (int64_t k = O.start[s + PD]; k < O.start[s + PD + 1]; ++k) {
        for (int64_t o = 0; o < Bp; o += 16) __builtin_prefetch(Qb + O.pos[k] * Bp + o);
      }
    }
    for (int64_t v = 0; v < P.nv; ++v) {
      vf acc = splat(0.0f);
      for (int64_t k = O.start[s]; k < O.start[s + 1]; ++k) acc += vload(Qb + O.pos[k] * Bp + v * LANES);
      vstore(gcur + s * Bp + v * LANES, acc);
    }
  }
}

// The sum over states of g_0 li log2(e) (li = -inf: 0), per lane, into d [Bp] (double): the
// part of dF/dT that enters through u_0 = T li, in log2 units like the rest of d.
void add_init_term(const Problem& P, const float* g0, const float* li, double* d) {
  for (int64_t s = 0; s < P.S; ++s) {
    if (!(li[s] > NEG_INF)) continue;
    const double l2 = double(li[s]) * 1.4426950408889634;
    for (int64_t b = 0; b < P.Bp; ++b) d[b] += double(g0[s * P.Bp + b]) * l2;
  }
}

}  // namespace

// F [B], N [S, J, B] (dF/dc, the pull layout with its padding), rho [S, B] (dF/du_0), dT [B]
// (dF/dT at fixed init, w and r).
void forward_backward(const float* li, const int32_t* src, const float* logw, const float* rew,
                      const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon,
                      int64_t budget, uint64_t token, float* F, float* Nout, float* rho,
                      float* dT) {
  std::unique_ptr<Kept> kept = kept_or_new(token, li, src, logw, rew, Tin, S, J, B, horizon,
                                           budget);
  const Problem& P = kept->P;
  Trajectory& tr = kept->tr;
  for (int64_t b = 0; b < B; ++b) F[b] = kept->F[b];
  const Out O(P);
  const int64_t Bp = P.Bp;
  const Big g_a(S * Bp), g_b(S * Bp);
  float* gnext = g_a.data();
  float* gcur = g_b.data();
  std::vector<double> ent(size_t(P.nthreads) * Bp, 0.0);
  tr.final_message(gnext, ent.data());

  const int64_t E = O.first[S];
  const Big Nb(size_t(E * Bp), true), Qb(size_t(E * Bp));
  float* N = Nb.data();
  for (int64_t i = tr.segments() - 1; i >= 0; --i) {
    int64_t t0, t1;
    tr.open(i, t0, t1);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      back_pull(P, O, tr.state(t), tr.shift(t), gnext, N, Qb.data(), ent.data());
      back_push(P, O, Qb.data(), gcur);
      std::swap(gnext, gcur);
    }
  }
  // outputs: gnext holds g_0; N back to the padded layout (padding entries 0)
  hint_huge(rho, sizeof(float) * S * B);
  hint_huge(Nout, sizeof(float) * S * J * B);
#pragma omp parallel for schedule(static) num_threads(P.nthreads)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t b = 0; b < B; ++b) rho[s * B + b] = gnext[s * Bp + b];
    int64_t k = 0;
    for (int64_t j = 0; j < J; ++j) {
      float* out = Nout + (s * J + j) * B;
      if (logw[s * J + j] > NEG_INF) {
        const float* in = N + (O.first[s] + k++) * Bp;
        for (int64_t b = 0; b < B; ++b) out[b] = in[b];
      } else {
        for (int64_t b = 0; b < B; ++b) out[b] = 0.0f;
      }
    }
  }
  for (int k = 1; k < P.nthreads; ++k) {
    for (int64_t b = 0; b < Bp; ++b) ent[b] += ent[size_t(k) * Bp + b];
  }
  add_init_term(P, gnext, li, ent.data());
  for (int64_t b = 0; b < B; ++b) dT[b] = float(ent[b] * 0.6931471805599453);
}

// ------------------------------------------------------------------------------------------
// The adjoint contracted over temperatures (reverse mode): for weights W [K, B] (the
// cotangent of F, and its products with T),
//   G[k] = sum_b W[k, b] N[:, :, b]     [K, S, J], without N itself,
//   R[k] = sum_b W[k, b] g_0[:, b]      [K, S],
//   dF/dT = Hs + sum_j N_j log w_j + sum_s g_0 log init [B] (per temperature).
// One pass per step, by destination: q_j = g_{t+1}(s') p_j as in back_pull, contracted into
// G, and added to g_t(src_j). Each thread owns the g_t rows of its own range of states: it
// zeroes them just before their first use (up to the largest source of the destination at
// hand, so on a banded MDP each row is zeroed while in cache, with CLZERO where the CPU has
// it: no read of the old line) and adds into them directly; a q bound for another thread's
// rows is queued and added by that thread after a barrier. A destination without occupancy
// (g_{t+1} = 0 in every lane) contributes nothing and is skipped, and the u_t rows gathered
// ahead (prefetched) are only those of destinations with occupancy.
// ------------------------------------------------------------------------------------------

namespace {

struct Fused {
  const Problem& P;
  const int32_t* maxsrc;  // [S] the largest source of each state's entries (-1: none)
  const float* W;  // [K, Bp], 0 on the padding lanes
  int64_t K;
  float* G;        // [E, K], compact entry order
  const int64_t* first;  // O.first
};

// q for the K-weighted contraction, per thread: sources owned by another thread, by owner
struct Queue {
  std::vector<int32_t> src;
  std::vector<float> q;  // [n, Bp]
};

void back_fused(const Fused& A, const float* cur, const float* shift, const float* gnext,
                float* gcur, std::vector<std::vector<Queue>>& queues, double* dT) {
  const Problem& P = A.P;
  const int64_t Bp = P.Bp, J = P.J, JM = J > 0 ? J : 1, nv = P.nv, K = A.K;
#pragma omp parallel num_threads(P.nthreads)
  {
    const Share me = share_of(P.S);
    const int tid = me.tid, nth = me.nth;
    const int64_t s0 = me.s0, s1 = me.s1;
    std::vector<Queue>& mine = queues[tid];
    for (auto& qu : mine) {
      qu.src.clear();
      qu.q.clear();
    }
    std::vector<vf> x(JM), y2(JM), ex(JM), qv(JM * nv), myd(nv, splat(0.0f));
    int64_t frontier = s0;  // rows [s0, frontier) of gcur are zeroed
    auto zero_to = [&](int64_t end) {
      if (end > frontier) zero_floats(gcur + frontier * Bp, (end - frontier) * Bp);
      frontier = std::max(frontier, end);
    };
    constexpr int64_t PD = 16;  // prefetch distance, states: g at 2 PD, then u rows at PD
    auto occupied = [&](int64_t s) {
      for (int64_t v = 0; v < nv; ++v) {
        if (!all_zero(vload(gnext + s * Bp + v * LANES))) return true;
      }
      return false;
    };
    for (int64_t s = s0; s < s1; ++s) {
      if (s + 2 * PD < s1) {
        for (int64_t o = 0; o < Bp; o += 16) __builtin_prefetch(gnext + (s + 2 * PD) * Bp + o);
      }
      if (s + PD < s1 && occupied(s + PD)) {  // the rows a destination with occupancy gathers
        const int32_t* sp = P.isrc.data() + (s + PD) * J;
        for (int32_t j = 0; j < P.cnt[s + PD]; ++j) {
          for (int64_t o = 0; o < Bp; o += 16) __builtin_prefetch(cur + int64_t(sp[j]) * Bp + o);
        }
      }
      const int32_t c = P.cnt[s];
      if (c == 0) continue;
      // every owned row a source of s may be is zeroed before it is added to
      zero_to(std::min<int64_t>(A.maxsrc[s] + 1, s1));
      if (!occupied(s)) continue;  // every q is 0: nothing to add or contract
      const int32_t* sj = P.isrc.data() + s * J;
      for (int64_t v = 0; v < nv; ++v) {
        const Lanes& L = P.lanes[v];
        const int64_t off = v * LANES;
        const vf g = vload(gnext + s * Bp + off);
        vf* q = qv.data() + v;  // q[j * nv]
        if (all_zero(g)) {  // no occupancy in these lanes: every q is 0
          for (int32_t j = 0; j < c; ++j) q[j * nv] = splat(0.0f);
          continue;
        }
        entry_weights(P, L, s, c, cur + off, vload(shift + off), g, x.data(), ex.data(),
                      y2.data(), q, nv);
        vf d = myd[v];
        for (int32_t j = 0; j < c; ++j) {  // entropy and sum N log w, log2 units
          d += q[j * nv] * (splat(P.ilw2[s * J + j]) - y2[j]);
        }
        myd[v] = d;
      }
      for (int32_t j = 0; j < c; ++j) {
        const int64_t src = sj[j];
        const vf* q = qv.data() + j * nv;
        if (src >= s0 && src < s1) {
          float* row = gcur + src * Bp;
          for (int64_t v = 0; v < nv; ++v) vstore(row + v * LANES, vload(row + v * LANES) + q[v]);
        } else {
          int owner = int((src * nth) / P.S);  // the thread whose range [S k / n, ...) holds src
          while (owner > 0 && src < P.S * owner / nth) --owner;
          while (owner + 1 < nth && src >= P.S * (owner + 1) / nth) ++owner;
          Queue& qu = mine[owner];
          qu.src.push_back(int32_t(src));
          for (int64_t v = 0; v < nv; ++v) {
            for (int i = 0; i < LANES; ++i) qu.q.push_back(q[v][i]);
          }
        }
        float* gk = A.G + (A.first[s] + j) * K;
        for (int64_t k = 0; k < K; ++k) {
          const float* w = A.W + k * Bp;
          vf a = vload(w) * q[0];
          for (int64_t v = 1; v < nv; ++v) a += vload(w + v * LANES) * q[v];
          gk[k] += hsum(a);
        }
      }
    }
    zero_to(s1);
    clzero_fence();  // the zeroed rows, before the barrier after which others add to them
    for (int64_t v = 0; v < nv; ++v) {
      for (int i = 0; i < LANES; ++i) dT[size_t(tid) * Bp + v * LANES + i] += double(myd[v][i]);
    }
#pragma omp barrier
    for (int k = 0; k < nth; ++k) {  // what the other threads queued for my rows
      if (k == tid) continue;
      const Queue& qu = queues[k][tid];
      for (size_t n = 0; n < qu.src.size(); ++n) {
        float* row = gcur + int64_t(qu.src[n]) * Bp;
        const float* q = qu.q.data() + n * Bp;
        for (int64_t v = 0; v < nv; ++v) vstore(row + v * LANES, vload(row + v * LANES) + vload(q + v * LANES));
      }
    }
  }
}

}  // namespace

// F [B], G [K, S, J] (sum_b W[k, b] dF/dc[:, :, b], 0 on padding), R [K, S] (sum_b W[k, b]
// dF/du_0[:, b]), dF/dT [B] (at fixed init, w and r), from the forward kept under `token`
// when it is there and matches, else from scratch.
void adjoint(const float* li, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, const float* Win, int64_t S, int64_t J, int64_t B, int64_t K,
             int64_t horizon, int64_t budget, uint64_t token, float* F, float* Gout, float* Rout,
             float* dFdT) {
  std::unique_ptr<Kept> kept = kept_or_new(token, li, src, logw, rew, Tin, S, J, B, horizon,
                                           budget);
  const Problem& P = kept->P;
  Trajectory& tr = kept->tr;
  for (int64_t b = 0; b < B; ++b) F[b] = kept->F[b];
  const int64_t Bp = P.Bp;
  std::vector<int64_t> first(S + 1, 0);
  for (int64_t s = 0; s < S; ++s) first[s + 1] = first[s] + P.cnt[s];
  const int64_t E = first[S];
  std::vector<float> W(size_t(K * Bp), 0.0f);
  for (int64_t k = 0; k < K; ++k) {
    for (int64_t b = 0; b < B; ++b) W[k * Bp + b] = Win[k * B + b];
  }
  const Big g_a(S * Bp), g_b(S * Bp), Gb(size_t(E * K), true);
  float* gnext = g_a.data();
  float* gcur = g_b.data();
  std::vector<double> dT(size_t(P.nthreads) * Bp, 0.0);
  tr.final_message(gnext, dT.data());
  std::vector<int32_t> maxsrc(S, -1);
  for (int64_t s = 0; s < S; ++s) {
    for (int32_t j = 0; j < P.cnt[s]; ++j) maxsrc[s] = std::max(maxsrc[s], P.isrc[s * J + j]);
  }
  const Fused A{P, maxsrc.data(), W.data(), K, Gb.data(), first.data()};
  std::vector<std::vector<Queue>> queues(P.nthreads, std::vector<Queue>(P.nthreads));
  for (int64_t i = tr.segments() - 1; i >= 0; --i) {
    int64_t t0, t1;
    tr.open(i, t0, t1);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      back_fused(A, tr.state(t), tr.shift(t), gnext, gcur, queues, dT.data());
      std::swap(gnext, gcur);
    }
  }
  hint_huge(Gout, sizeof(float) * K * S * J);
#pragma omp parallel for schedule(static) num_threads(P.nthreads)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t k = 0; k < K; ++k) {
      const float* w = W.data() + k * Bp;
      vf a = vload(w) * vload(gnext + s * Bp);
      for (int64_t v = 1; v < P.nv; ++v) a += vload(w + v * LANES) * vload(gnext + s * Bp + v * LANES);
      Rout[k * S + s] = hsum(a);
    }
    for (int64_t k = 0; k < K; ++k) {
      int64_t n = 0;
      for (int64_t j = 0; j < J; ++j) {
        Gout[(k * S + s) * J + j] =
            logw[s * J + j] > NEG_INF ? Gb.data()[(first[s] + n++) * K + k] : 0.0f;
      }
    }
  }
  for (int k = 1; k < P.nthreads; ++k) {
    for (int64_t b = 0; b < Bp; ++b) dT[b] += dT[size_t(k) * Bp + b];
  }
  add_init_term(P, gnext, li, dT.data());
  for (int64_t b = 0; b < B; ++b) dFdT[b] = float(dT[b] * 0.6931471805599453);
}

}  // namespace quasirl
