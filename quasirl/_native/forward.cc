// The log-space forward recursion of free_energy (float32), pull.h has the recursion.
//
// A vector of lanes whose temperatures all lie in [1e-20, 1e20] (the usual case) keeps u in
// log2 units, u log2(e) / T, so a term is u~(src) + log2 w + r log2(e) / T and the soft maximum
// is log2 sum_j 2^(x_j - x_0) + x_0: no multiply by 1/T per term, and x_0's term is exactly 1,
// one exp fewer. Other vectors (a T = 0 lane, extreme T) use value units and the maximum as the
// reference. exp2 and log2 are SIMD polynomials to float32 rounding (simd.h; table-assisted
// with AVX-512), in GCC vector types; nothing here needs -ffast-math. The gathered rows of the
// next states are prefetched, and a u much larger than the caches is written with streaming
// stores. benchmarks/NOTES.md (section 11) has the measured effect of each of these.

#include "pull.h"

namespace quasirl {

namespace {

// log2 sum_j 2^(x_j), j < n (n >= 1), in log2 units, with the maximum as the reference
QI vf lse2_max(const vf* x, int n) {
  vf m = x[0];
  for (int j = 1; j < n; ++j) m = vmax(m, x[j]);
  vf s = splat(0.0f);
  for (int j = 0; j < n; ++j) s += vexp2(x[j] - m);
  return add_log2(m, s);
}

// The same for two vectors at once (two independent chains for the out-of-order core), with
// x_0 as the reference: its term is exactly 1, one exp fewer than a max-referenced sum. Where
// some lane's sum reaches 2^64 (x_0 far below another term, or x_0 unreachable) that vector
// is redone with the maximum as reference.
QI void lse2_pair(const vf* xa, const vf* xb, int n, vf& oa, vf& ob) {
  vf sa = splat(1.0f), sb = splat(1.0f);
  for (int j = 1; j < n; ++j) {
    sa += vexp2(xa[j] - xa[0]);
    sb += vexp2(xb[j] - xb[0]);
  }
  oa = all_below(sa, 1.8446744e19f) ? add_log2(xa[0], sa) : lse2_max(xa, n);
  ob = all_below(sb, 1.8446744e19f) ? add_log2(xb[0], sb) : lse2_max(xb, n);
}

QI vf lse2(const vf* x, int n) {
  vf s = splat(1.0f);
  for (int j = 1; j < n; ++j) s += vexp2(x[j] - x[0]);
  return all_below(s, 1.8446744e19f) ? add_log2(x[0], s) : lse2_max(x, n);
}

// soft maximum of x[0..n) per lane in value units, -inf where every term is -inf (the path
// for vectors with a T = 0 lane, or a temperature outside the scaled range)
QI vf smax_lanes(const vf* x, int n, const Lanes& L) {
  vf m = splat(NEG_INF);
  for (int j = 0; j < n; ++j) m = vmax(m, x[j]);
  const auto finite = m > splat(NEG_INF);
  const vf m0 = finite ? m : splat(0.0f);
  vf s = splat(0.0f);
  for (int j = 0; j < n; ++j) {
    // a T = 0 lane (invT = 0) may form 0 * -inf = NaN here: it gives 0, and the lane's
    // result is the max anyway
    s += vexp2_neg((x[j] - m0) * L.invT);
  }
  s = finite ? s : splat(1.0f);
  const vf soft = m0 + L.T * vlog_ge1(vmax(s, splat(1.0f)));
  const vf out = L.maxplus ? m0 : soft;
  return finite ? out : splat(NEG_INF);
}

// One step for states [s0, s1): the tables and buffers of forward(), below.
struct Step {
  const int32_t* cnt;
  const int32_t* isrc;
  const float *ilw, *ilw2, *irw;
  const Lanes* lanes;
  const float* shift;
  const float* cur;
  float* nxt;
  int64_t J, Bp, nv;
};

template <bool STREAM>
void step_states(const Step& T, int64_t s0, int64_t s1, vf* x, vf* x1, vf* mymax) {
  const int64_t J = T.J, Bp = T.Bp, nv = T.nv;
  constexpr int64_t PD = 16;  // prefetch distance, states
  for (int64_t s = s0; s < s1; ++s) {
    if (s + PD < s1) {
      const int32_t* sp = T.isrc + (s + PD) * J;
      for (int32_t j = 0; j < T.cnt[s + PD]; ++j) {
        const float* row = T.cur + int64_t(sp[j]) * Bp;
        for (int64_t o = 0; o < Bp; o += 16) __builtin_prefetch(row + o);
      }
    }
    const int32_t c = T.cnt[s];
    const int32_t* sj = T.isrc + s * J;
    for (int64_t v = 0; v < nv; ++v) {
      const Lanes& L = T.lanes[v];
      const vf sh = vload(T.shift + v * LANES);
      const float* col = T.cur + v * LANES;
      vf out;
      if (L.scaled && v + 1 < nv && T.lanes[v + 1].scaled) {  // two vectors at once
        const Lanes& L1 = T.lanes[v + 1];
        const vf sh1 = vload(T.shift + (v + 1) * LANES);
        const float* lw = T.ilw2 + s * J;
        const float* rw = T.irw + s * J;
        for (int32_t j = 0; j < c; ++j) {
          const float* row = col + int64_t(sj[j]) * Bp;
          x[j] = splat(rw[j]) * L.invT + (vload(row) + splat(lw[j]));
          x1[j] = splat(rw[j]) * L1.invT + (vload(row + LANES) + splat(lw[j]));
        }
        vf out1;
        if (c > 0) {
          lse2_pair(x, x1, c, out, out1);
        } else {
          out = out1 = splat(SENT);
        }
        out = out - sh;
        out1 = out1 - sh1;
        vstream<STREAM>(T.nxt + s * Bp + v * LANES, out);
        mymax[v] = vmax(mymax[v], out);
        ++v;
        vstream<STREAM>(T.nxt + s * Bp + v * LANES, out1);
        mymax[v] = vmax(mymax[v], out1);
        continue;
      }
      if (L.scaled) {
        const float* lw = T.ilw2 + s * J;
        const float* rw = T.irw + s * J;
        for (int32_t j = 0; j < c; ++j) {
          x[j] = splat(rw[j]) * L.invT + (vload(col + int64_t(sj[j]) * Bp) + splat(lw[j]));
        }
        out = c > 0 ? lse2(x, c) - sh : splat(SENT);
      } else {
        const float* lw = T.ilw + s * J;
        const float* rw = T.irw + s * J;
        for (int32_t j = 0; j < c; ++j) {
          const vf cj = L.T * splat(lw[j]) + splat(rw[j]);
          x[j] = vload(col + int64_t(sj[j]) * Bp) - sh + cj;
        }
        out = smax_lanes(x, c, L);
      }
      vstore(T.nxt + s * Bp + v * LANES, out);
      mymax[v] = vmax(mymax[v], out);
    }
  }
}

}  // namespace

// one step: nxt from cur, whose per-lane shift is `shift`; the new shift into next_shift
void Problem::step(const float* cur, float* nxt, const float* shift, float* next_shift) const {
  std::vector<float> tmax(size_t(nthreads) * Bp, NEG_INF);
  const int64_t JM = J > 0 ? J : 1;
#pragma omp parallel num_threads(nthreads)
  {
    const Share me = share_of(S);
    const int tid = me.tid;
    const int64_t s0 = me.s0, s1 = me.s1;
    std::vector<vf> x(JM), x1(JM), mymax(nv, splat(NEG_INF));
    const Step st{cnt.data(), isrc.data(), ilw.data(), ilw2.data(), irw.data(), lanes.data(),
                  shift, cur, nxt, J, Bp, nv};
    if (stream) {
      step_states<true>(st, s0, s1, x.data(), x1.data(), mymax.data());
    } else {
      step_states<false>(st, s0, s1, x.data(), x1.data(), mymax.data());
    }
    stream_fence();  // the streamed stores, before the other threads read them
    for (int64_t v = 0; v < nv; ++v) vstore(tmax.data() + size_t(tid) * Bp + v * LANES, mymax[v]);
  }
  for (int64_t b = 0; b < Bp; ++b) {
    float m = NEG_INF;
    for (int k = 0; k < nthreads; ++k) m = std::max(m, tmax[size_t(k) * Bp + b]);
    next_shift[b] = reachable(b, m) ? m : 0.0f;
  }
}

void forward(const float* li, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, float* F) {
  const Problem P(src, logw, rew, Tin, S, J, B);
  const int64_t Bp = P.Bp;
  // u and the next u, 64-byte aligned (the stores are whole cache lines)
  const Big a_store(S * Bp), b_store(S * Bp);
  float* cur = a_store.data();
  float* nxt = b_store.data();
  std::vector<float> shift(Bp), next_shift(Bp), m, lg2sum, nmax;
  std::vector<double> acc(Bp, 0.0);
  P.load(li, cur, shift.data());
  for (int64_t t = 0; t < horizon; ++t) {
    P.step(cur, nxt, shift.data(), next_shift.data());
    for (int64_t b = 0; b < Bp; ++b) acc[b] += double(shift[b]) * P.unit[b];
    std::swap(shift, next_shift);
    std::swap(cur, nxt);
  }
  P.final(cur, acc, F, m, lg2sum, nmax);
}

// ---- kept forward passes ------------------------------------------------------------------

KeptCache& KeptCache::get() {
  static KeptCache cache;
  return cache;
}

namespace {

// bytes [p, p + n) into h: four independent multiply-xorshift chains over 8-byte words (so
// the multiplies overlap), chunks of 1 MiB hashed in parallel and combined in order
uint64_t mix(uint64_t h) {
  h ^= h >> 32;
  h *= 0xd6e8feb86659fd93ULL;
  h ^= h >> 32;
  return h;
}

uint64_t hash_bytes(const void* data, size_t n, uint64_t h) {
  const unsigned char* p = static_cast<const unsigned char*>(data);
  constexpr size_t CHUNK = size_t(1) << 20;
  const int64_t nchunks = int64_t((n + CHUNK - 1) / CHUNK);
  std::vector<uint64_t> part(size_t(nchunks), 0);
#pragma omp parallel for schedule(static) num_threads(team_size()) if (nchunks > 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const unsigned char* q = p + size_t(c) * CHUNK;
    const size_t m = std::min(CHUNK, n - size_t(c) * CHUNK);
    uint64_t a[4] = {0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL, 0x94d049bb133111ebULL,
                     0x2545f4914f6cdd1dULL};
    size_t i = 0;
    for (; i + 32 <= m; i += 32) {
      for (int k = 0; k < 4; ++k) {
        uint64_t w;
        std::memcpy(&w, q + i + 8 * k, 8);
        a[k] = (a[k] ^ w) * 0x100000001b3ULL;
        a[k] ^= a[k] >> 29;
      }
    }
    uint64_t t = 0;
    for (; i < m; ++i) t = (t << 8 | q[i]) * 0x100000001b3ULL;  // the tail, byte by byte
    part[size_t(c)] = mix(a[0] ^ mix(a[1] ^ mix(a[2] ^ mix(a[3] ^ mix(t ^ m)))));
  }
  for (int64_t c = 0; c < nchunks; ++c) h = mix(h ^ part[size_t(c)]) + 0x9e3779b97f4a7c15ULL;
  return mix(h ^ n);
}

}  // namespace

uint64_t fingerprint(const float* li, const int32_t* src, const float* logw, const float* rew,
                     const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon) {
  uint64_t h = mix((uint64_t(S) * 0x9e3779b97f4a7c15ULL) ^ (uint64_t(J) << 40) ^
                   (uint64_t(B) << 20) ^ uint64_t(horizon));
  h = hash_bytes(li, sizeof(float) * size_t(S), h);
  h = hash_bytes(src, sizeof(int32_t) * size_t(S * J), h);
  h = hash_bytes(logw, sizeof(float) * size_t(S * J), h);
  h = hash_bytes(rew, sizeof(float) * size_t(S * J), h);
  return hash_bytes(Tin, sizeof(float) * size_t(B), h);
}

std::unique_ptr<Kept> kept_or_new(uint64_t token, const float* li, const int32_t* src,
                                  const float* logw, const float* rew, const float* Tin,
                                  int64_t S, int64_t J, int64_t B, int64_t horizon,
                                  int64_t budget) {
  const uint64_t print = fingerprint(li, src, logw, rew, Tin, S, J, B, horizon);
  std::unique_ptr<Kept> kept = KeptCache::get().take(token);
  if (kept && kept->print == print) return kept;
  kept.reset();  // another problem's pass (its buffers go back to the pool first)
  return std::make_unique<Kept>(li, src, logw, rew, Tin, S, J, B, horizon, budget, print);
}

uint64_t keep(const float* li, const int32_t* src, const float* logw, const float* rew,
              const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon,
              int64_t budget, float* F) {
  const uint64_t print = fingerprint(li, src, logw, rew, Tin, S, J, B, horizon);
  auto kept = std::make_unique<Kept>(li, src, logw, rew, Tin, S, J, B, horizon, budget, print);
  for (int64_t b = 0; b < B; ++b) F[b] = kept->F[b];
  return KeptCache::get().put(std::move(kept));
}

}  // namespace quasirl
