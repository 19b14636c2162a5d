// The sparse MDP as the pull kernels see it (Problem), the forward pass the adjoint kernels
// keep (Trajectory, Kept, KeptCache), and the kernels' entry points.
//
// For B temperatures at once (u is [S, B], temperatures innermost, as in quasirl/_pull_xla.py):
//   u_0(s) = T log init(s) (-inf where init(s) = 0),
//   u_{t+1}(s') = smax_T over the J entries j entering s' of u_t(src_j) + c_j(T),
//   c_j(T) = T log w_j + r_j (entries with w_j = 0 are skipped),
//   smax_T(x) = T log sum_j exp(x_j / T); the exact max at T = 0,
// normalised every step by the per-temperature maximum over states, and F(T) = accumulated
// shifts + smax_T over states of u_H (forward.cc). The adjoint (adjoint.cc) runs backwards
// over the kept u_t.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "memory.h"
#include "simd.h"

namespace quasirl {

struct Lanes {
  vf T, invT;  // invT: log2(e) / T (0 where T = 0), so exp((x - m) / T) = 2^((x - m) invT)
  vi maxplus;  // -1 where T == 0 (exact max-plus lanes), else 0
  bool scaled;  // every lane has 1e-20 <= T <= 1e20: u is stored in log2 units, u log2(e) / T
};

// Scaled storage (the common case): x_j = u~(src_j) + log2 w_j + r_j log2(e) / T, and the new
// u~ = log2 sum_j 2^(x_j): no multiply by 1/T per term, and no clamp, since unreachable states
// hold a large finite sentinel instead of -inf (so no -inf - -inf). Below SENT_BELOW a value
// means unreachable; |u~| stays far below it for 1e-20 <= T <= 1e20.
constexpr float SENT = -1e37f;
constexpr float SENT_BELOW = -1e36f;

// The problem as the kernels see it: lanes, live entries (padding dropped) in the pull layout
// and, for the adjoint, the same entries by source (the push layout).
struct Problem {
  int64_t S, J, B, nv, Bp;
  std::vector<Lanes> lanes;
  std::vector<double> unit;  // value units per stored unit: T ln 2 (log2 units) or 1
  Buf<int32_t> cnt, isrc;  // the live entries of each state first (padding dropped)
  Buf<float> ilw, ilw2, irw;
  int nthreads = 1;
  bool stream;

  Problem(const int32_t* src, const float* logw, const float* rew, const float* Tin,
          int64_t S_, int64_t J_, int64_t B_)
      : S(S_), J(J_), B(B_), nv((B_ + LANES - 1) / LANES), Bp(nv * LANES), lanes(nv),
        unit(Bp), cnt(S_), isrc(S_ * J_), ilw(S_ * J_), ilw2(S_ * J_), irw(S_ * J_) {
    for (int64_t v = 0; v < nv; ++v) {
      bool scaled = true;
      for (int i = 0; i < LANES; ++i) {
        const int64_t b = v * LANES + i;
        const float T = b < B ? Tin[b] : 1.0f;
        lanes[v].T[i] = T;
        lanes[v].invT[i] = T > 0 ? float(1.4426950408889634 / double(T)) : 0.0f;
        lanes[v].maxplus[i] = T > 0 ? 0 : -1;
        scaled = scaled && T >= 1e-20f && T <= 1e20f;
      }
      lanes[v].scaled = scaled;
      for (int i = 0; i < LANES; ++i) {
        unit[v * LANES + i] = scaled ? double(lanes[v].T[i]) * 0.6931471805599453 : 1.0;
      }
    }
    // the team by size: a step is one parallel region and a barrier (a few microseconds),
    // so small problems run on fewer threads (a 60-state gridworld over 10^5 steps: 2.4 s on
    // two threads, 0.2 s on one). QUASIRL_NATIVE_GRAIN (state-vectors per thread, default
    // 1024) sets the share; tests set 1 to run the threaded code on small problems.
    const char* grain_env = std::getenv("QUASIRL_NATIVE_GRAIN");
    const int64_t grain = grain_env != nullptr && std::atoll(grain_env) > 0
                              ? std::atoll(grain_env) : 1024;
    nthreads = int(std::max<int64_t>(1, std::min<int64_t>(team_size(), S * nv / grain)));
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t s = 0; s < S; ++s) {
      int32_t k = 0;
      for (int64_t j = 0; j < J; ++j) {
        if (logw[s * J + j] > NEG_INF) {
          isrc[s * J + k] = src[s * J + j];
          ilw[s * J + k] = logw[s * J + j];
          ilw2[s * J + k] = float(double(logw[s * J + j]) * 1.4426950408889634);
          irw[s * J + k] = rew[s * J + j];
          ++k;
        }
      }
      cnt[s] = k;
    }
    // stream the output past the caches when u is much larger than they are (the measured
    // effect: -6% per step at S = 10^6, B = 32; +12% when u fits in L2).
    // QUASIRL_NATIVE_STREAM=1 (or 0) forces it, so that tests cover the streamed stores
    // on small problems.
    const char* force = std::getenv("QUASIRL_NATIVE_STREAM");
    stream = force != nullptr && *force != '\0' ? *force == '1'
                                                 : double(S) * double(Bp) * 4.0 > 64.0 * (1 << 20);
  }

  // a lane's shift: the maximum over states of its values, 0 where none is reachable
  bool reachable(int64_t b, float m) const {
    return lanes[b / LANES].scaled ? m > SENT_BELOW : m > NEG_INF;
  }

  // u_0 from li = log init [S] into cur [S, Bp] (stored units: li log2(e) in log2 units, the
  // same for every temperature; T li in value units); the first shift
  void load(const float* li, float* cur, float* shift) const {
    std::vector<float> tmax(size_t(nthreads) * Bp, NEG_INF);
#pragma omp parallel num_threads(nthreads)
    {
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
      std::vector<vf> mx(nv, splat(NEG_INF));
#pragma omp for schedule(static)
      for (int64_t s = 0; s < S; ++s) {
        const float l = li[s];
        const bool ok = l > NEG_INF;
        const vf log2u = splat(ok ? float(double(l) * 1.4426950408889634) : SENT);
        for (int64_t v = 0; v < nv; ++v) {
          const vf out = lanes[v].scaled ? log2u : (ok ? lanes[v].T * splat(l) : splat(NEG_INF));
          vstore(cur + s * Bp + v * LANES, out);
          mx[v] = vmax(mx[v], out);
        }
      }
      for (int64_t v = 0; v < nv; ++v) vstore(tmax.data() + size_t(tid) * Bp + v * LANES, mx[v]);
    }
    for (int64_t b = 0; b < Bp; ++b) {
      float m = NEG_INF;
      for (int k = 0; k < nthreads; ++k) m = std::max(m, tmax[size_t(k) * Bp + b]);
      shift[b] = reachable(b, m) ? m : 0.0f;  // no start state: F = -inf, finite here
    }
  }

  // one step: nxt from cur, whose per-lane shift is `shift`; the new shift into next_shift
  // (forward.cc)
  void step(const float* cur, float* nxt, const float* shift, float* next_shift) const;

  // F = acc + smax_T over states of u_H. Also, per lane, the maximum m, log2 of the sum of
  // 2^((u - m) k) (k = 1 in log2 units, log2(e) / T in value units) and the number of states
  // at the maximum (for T = 0 lanes): what the adjoint's first message needs.
  void final(const float* cur, const std::vector<double>& acc, float* F, std::vector<float>& m,
             std::vector<float>& lg2sum, std::vector<float>& nmax) const {
    m.assign(Bp, NEG_INF);
    for (int64_t s = 0; s < S; ++s) {
      for (int64_t v = 0; v < nv; ++v) {
        vstore(m.data() + v * LANES, vmax(vload(m.data() + v * LANES), vload(cur + s * Bp + v * LANES)));
      }
    }
    std::vector<double> sum(Bp, 0.0);
    nmax.assign(Bp, 0.0f);
    for (int64_t v = 0; v < nv; ++v) {
      const vf mv = vload(m.data() + v * LANES);
      const vf m0 = mv > splat(NEG_INF) ? mv : splat(0.0f);
      const vf mul = lanes[v].scaled ? splat(1.0f) : lanes[v].invT;
      double part[LANES] = {0};
      vf nm = splat(0.0f);
      for (int64_t s0 = 0; s0 < S; s0 += 256) {  // float partial sums of <= 256 terms
        const int64_t s1 = s0 + 256 < S ? s0 + 256 : S;
        vf ps = splat(0.0f);
        for (int64_t s = s0; s < s1; ++s) {
          const vf u = vload(cur + s * Bp + v * LANES);
          ps += vexp2_neg((u - m0) * mul);
          nm += u == mv ? splat(1.0f) : splat(0.0f);
        }
        for (int i = 0; i < LANES; ++i) part[i] += double(ps[i]);
      }
      for (int i = 0; i < LANES; ++i) {
        sum[v * LANES + i] = part[i];
        nmax[v * LANES + i] = nm[i];
      }
    }
    lg2sum.assign(Bp, 0.0f);
    for (int64_t b = 0; b < Bp; ++b) {
      lg2sum[b] = sum[b] > 0 ? float(std::log2(sum[b])) : 0.0f;
      if (b >= B) continue;
      const double T = lanes[b / LANES].T[b % LANES], mb = m[b];
      if (!reachable(b, m[b])) {
        F[b] = NEG_INF;
        continue;
      }
      double out;
      if (lanes[b / LANES].scaled) {
        out = unit[b] * (mb + std::log2(sum[b]));
      } else {
        out = T > 0 ? mb + T * std::log(sum[b]) : mb;
      }
      F[b] = float(acc[b] + out);
    }
  }
};

// The forward pass the adjoint kernels share: u_t for every t kept when (horizon + 1) S Bp
// floats fit in `budget` bytes; otherwise u is kept every seg ~ sqrt(horizon) steps and each
// segment recomputed (bit for bit) when the backward reaches it. Also F, and g_H (the softmax
// over states of u_H) with its entropy (log2 units, per lane).
class Trajectory {
 public:
  Trajectory(const Problem& P, const float* li, int64_t horizon, int64_t budget, float* F)
      : P_(P), H_(horizon), stride_((P.S * P.Bp + 15) / 16 * 16),
        seg_(segment_length(P, horizon, budget)),
        nck_(horizon > 0 ? (horizon + seg_ - 1) / seg_ : 0), keep_all_(seg_ >= horizon),
        store_(size_t((keep_all_ ? horizon + 1 : seg_ + 3) * stride_)),
        ck_(keep_all_ ? 1 : size_t(nck_ * stride_)), shifts_(size_t((horizon + 1) * P.Bp)),
        acc_(P.Bp, 0.0) {
    const int64_t Bp = P.Bp;
    last_ = keep_all_ ? slot(0) : slot(seg_ + 1);
    P.load(li, last_, shifts_.data());
    for (int64_t t = 0; t < H_; ++t) {
      float *cur, *nxt;
      if (keep_all_) {
        cur = slot(t);
        nxt = slot(t + 1);
      } else {  // slots seg + 1 and seg + 2, so that u_H outlives the recomputed segments
        cur = slot(seg_ + 1 + t % 2);
        nxt = slot(seg_ + 1 + (t + 1) % 2);
        if (t % seg_ == 0) std::memcpy(ckpt(t / seg_), cur, sizeof(float) * P.S * Bp);
      }
      P.step(cur, nxt, shift(t), shifts_.data() + (t + 1) * Bp);
      for (int64_t b = 0; b < Bp; ++b) acc_[b] += double(shifts_[t * Bp + b]) * P.unit[b];
      last_ = nxt;
    }
    P.final(last_, acc_, F, m_, lg2sum_, nmax_);
  }

  int64_t segments() const { return nck_; }
  int64_t horizon() const { return H_; }
  size_t bytes() const { return store_.bytes() + ck_.bytes(); }
  // the steps [t0, t1) of segment i, with u_t0 .. u_t1 made available to state()
  void open(int64_t i, int64_t& t0, int64_t& t1) {
    t0 = i * seg_;
    t1 = std::min(H_, t0 + seg_);
    if (keep_all_) return;
    std::vector<float> scratch(P_.Bp);
    std::memcpy(slot(0), ckpt(i), sizeof(float) * P_.S * P_.Bp);
    for (int64_t t = t0; t < t1; ++t) P_.step(slot(t - t0), slot(t - t0 + 1), shift(t), scratch.data());
    t0_ = t0;
  }
  const float* state(int64_t t) const { return keep_all_ ? slot(t) : slot(t - t0_); }
  const float* shift(int64_t t) const { return shifts_.data() + t * P_.Bp; }

  // g_H into g [S, Bp]; adds its entropy (log2 units) to ent [Bp]
  void final_message(float* g, double* ent) const {
    const int64_t Bp = P_.Bp;
    std::vector<vf> e(P_.nv, splat(0.0f));
    for (int64_t s = 0; s < P_.S; ++s) {
      for (int64_t v = 0; v < P_.nv; ++v) {
        const Lanes& L = P_.lanes[v];
        const int64_t off = v * LANES;
        const vf u = vload(last_ + s * Bp + off), mv = vload(m_.data() + off);
        const vf m0 = mv > splat(NEG_INF) ? mv : splat(0.0f);
        const vf mul = L.scaled ? splat(1.0f) : L.invT;
        vf y = vmin(vmax((u - m0) * mul - vload(lg2sum_.data() + off), splat(-150.0f)),
                    splat(0.0f));
        vf gv = vexp2(y);
        if (!L.scaled) {
          const auto top = (u == mv) & (mv > splat(NEG_INF));
          const vf nm = vmax(vload(nmax_.data() + off), splat(1.0f));
          gv = L.maxplus ? (top ? splat(1.0f) / nm : splat(0.0f)) : gv;
          vf l = splat(0.0f);
          for (int i = 0; i < LANES; ++i) l[i] = std::log2(nm[i]);
          y = L.maxplus ? -l : y;
        }
        vstore(g + s * Bp + off, gv);
        e[v] -= gv * y;
      }
    }
    for (int64_t v = 0; v < P_.nv; ++v) {
      for (int i = 0; i < LANES; ++i) ent[v * LANES + i] += double(e[v][i]);
    }
  }

 private:
  static int64_t segment_length(const Problem& P, int64_t H, int64_t budget) {
    const double row = double(P.S) * double(P.Bp) * 4.0;
    if (H > 0 && double(H + 1) * row > double(budget)) {
      return std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(H)))));
    }
    return H;
  }
  float* slot(int64_t i) const { return store_.data() + i * stride_; }
  float* ckpt(int64_t i) const { return ck_.data() + i * stride_; }

  const Problem& P_;
  const int64_t H_, stride_, seg_, nck_;
  const bool keep_all_;
  const Big store_, ck_;
  std::vector<float> shifts_;
  std::vector<double> acc_;
  std::vector<float> m_, lg2sum_, nmax_;
  float* last_ = nullptr;
  int64_t t0_ = 0;
};

// A forward pass kept for its adjoint: the tables, the trajectory and F.
struct Kept {
  Kept(const float* li, const int32_t* src, const float* logw, const float* rew,
       const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, int64_t budget,
       uint64_t print_)
      : P(src, logw, rew, Tin, S, J, B), F(B), tr(P, li, horizon, budget, F.data()),
        print(print_) {}
  size_t bytes() const {
    return tr.bytes() + P.cnt.bytes() + P.isrc.bytes() + P.ilw.bytes() + P.ilw2.bytes() +
           P.irw.bytes();
  }
  Problem P;
  std::vector<float> F;
  Trajectory tr;
  uint64_t print;  // fingerprint() of the inputs it was computed from
};

// Forward passes that reverse mode will need: the forward in free_energy's derivative rule
// (quasirl_pull_keep_f32) leaves its Kept here under a token, which JAX hands to the adjoint
// as an operand (a data dependency, so XLA runs the two in order); the adjoint then skips
// the tables and the forward. The least recently used entries go first once the kept bytes
// exceed the pool's limit; an adjoint whose token is gone (or 0) recomputes everything, with
// the same result bit for bit. The adjoint takes its entry out. A token only finds a pass:
// the pass is used only where the fingerprint of its inputs equals that of the adjoint's
// (kept_or_new), so a token handed to the wrong call costs a recomputation, never a wrong
// result.
class KeptCache {
 public:
  static KeptCache& get();  // forward.cc: one cache for the whole library
  uint64_t put(std::unique_ptr<Kept> k) {
    const size_t bytes = k->bytes();
    std::vector<std::unique_ptr<Kept>> dropped;  // destroyed after the lock is released
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t token = next_++;
    bool held;
    while (!(held = Pool::get().hold(bytes)) && !lru_.empty()) {  // least recently kept first
      dropped.push_back(std::move(lru_.back().second));
      Pool::get().unhold(dropped.back()->bytes());
      index_.erase(lru_.back().first);
      lru_.pop_back();
    }
    if (held) {  // else never kept (larger than the limit): the adjoint recomputes it
      lru_.emplace_front(token, std::move(k));
      index_[token] = lru_.begin();
    }
    return token;
  }
  // the entry, removed: its buffers go back to the pool after the adjoint, for the next
  // forward (a second adjoint on one token, as a vjp applied twice, recomputes)
  std::unique_ptr<Kept> take(uint64_t token) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = index_.find(token);
    if (it == index_.end()) return nullptr;
    std::unique_ptr<Kept> k = std::move(it->second->second);
    Pool::get().unhold(k->bytes());
    lru_.erase(it->second);
    index_.erase(it);
    return k;
  }
  void clear() {
    std::list<std::pair<uint64_t, std::unique_ptr<Kept>>> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& e : lru_) Pool::get().unhold(e.second->bytes());
      all.swap(lru_);
      index_.clear();
    }
  }

 private:
  std::mutex mu_;
  uint64_t next_ = 1;
  std::list<std::pair<uint64_t, std::unique_ptr<Kept>>> lru_;
  std::map<uint64_t, std::list<std::pair<uint64_t, std::unique_ptr<Kept>>>::iterator> index_;
};

// A 64-bit fingerprint of a pull problem's inputs (every byte of li, src, log w, r and T, and
// the horizon): what decides whether a kept pass may serve an adjoint.
uint64_t fingerprint(const float* li, const int32_t* src, const float* logw, const float* rew,
                     const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon);

// The pass kept under `token` when it is there and its fingerprint matches these inputs,
// taken out of the cache; else a new one (the same arithmetic, so the same bits).
std::unique_ptr<Kept> kept_or_new(uint64_t token, const float* li, const int32_t* src,
                                  const float* logw, const float* rew, const float* Tin,
                                  int64_t S, int64_t J, int64_t B, int64_t horizon,
                                  int64_t budget);

// ---- the kernels (li [S] = log init, src/logw/rew [S, J] the pull tables, T [B]) ----------

// F [B] (forward.cc)
void forward(const float* li, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, float* F);

// F [B], and the pass kept under the returned token (forward.cc)
uint64_t keep(const float* li, const int32_t* src, const float* logw, const float* rew,
              const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon,
              int64_t budget, float* F);

// F [B], N [S, J, B] (dF/dc, the pull layout with its padding), rho [S, B] (dF/du_0), dT [B]
// (dF/dT at fixed init, w and r) (adjoint.cc)
void forward_backward(const float* li, const int32_t* src, const float* logw, const float* rew,
                      const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon,
                      int64_t budget, uint64_t token, float* F, float* Nout, float* rho,
                      float* dT);

// F [B], G [K, S, J] (sum_b W[k, b] dF/dc[:, :, b], 0 on padding), R [K, S] (sum_b W[k, b]
// dF/du_0[:, b]), dF/dT [B] (adjoint.cc)
void adjoint(const float* li, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, const float* Win, int64_t S, int64_t J, int64_t B, int64_t K,
             int64_t horizon, int64_t budget, uint64_t token, float* F, float* Gout, float* Rout,
             float* dFdT);

}  // namespace quasirl
