// The log-space forward recursion of free_energy as an XLA FFI custom call for CPUs (float32).
//
// For B temperatures at once (u is [S, B], temperatures innermost, as in quasirl/_dynamics.py):
//   u_0(s) = T log init(s) (-inf where init(s) = 0),
//   u_{t+1}(s') = smax_T over the J entries j entering s' of u_t(src_j) + c_j(T),
//   c_j(T) = T log w_j + r_j (entries with w_j = 0 are skipped),
//   smax_T(x) = T log sum_j exp(x_j / T); the exact max at T = 0,
// normalised every step by the per-temperature maximum over states, and F(T) = accumulated
// shifts + smax_T over states of u_H.
//
// A vector of lanes whose temperatures all lie in [1e-20, 1e20] (the usual case) keeps u in
// log2 units, u log2(e) / T, so a term is u~(src) + log2 w + r log2(e) / T and the soft maximum
// is log2 sum_j 2^(x_j - x_0) + x_0: no multiply by 1/T per term, and x_0's term is exactly 1,
// one exp fewer. Other vectors (a T = 0 lane, extreme T) use value units and the maximum as the
// reference. exp2 and log2 are SIMD polynomials to float32 rounding (table-assisted with
// AVX-512), in GCC vector types; nothing here needs -ffast-math. The gathered rows of the next
// states are prefetched, and a u much larger than the caches is written with streaming stores.
// benchmarks/NOTES.md (section 11) has the measured effect of each of these.
//
// The adjoint (below forward()) runs backwards over the kept u_t: per temperature, with
// N = dF/dc per entry (forward_backward, for forward mode), or contracted with weights W
// over temperatures as it goes (adjoint, for reverse mode: W holds the cotangent of F), in
// one pass per step by destination (sections 12 and 13).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <list>
#include <memory>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "_native_simd.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int LANES = QUASIRL_VBYTES / 4;  // one SIMD register of floats (_native_simd.h)
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef float uvf __attribute__((vector_size(4 * LANES), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
#define QI QUASIRL_INLINE

// a in every lane (one broadcast: a lane-by-lane fill compiles to 16 masked inserts)
QI vf splat(float a) { return a - vf{}; }
QI vf vload(const float* p) { return *reinterpret_cast<const uvf*>(p); }
QI void vstore(float* p, vf v) { *reinterpret_cast<uvf*>(p) = v; }
QI vf vmax(vf a, vf b) { return a > b ? a : b; }
// a store that bypasses the caches where the target has one (the next step's input is far
// larger than the caches, so reading each output line in before writing it is wasted traffic)
// Ask for 2 MB pages over the 2 MB-aligned part of [p, p + bytes) (an output buffer XLA
// allocated and nothing has touched yet)
QI void hint_huge(void* p, size_t bytes) {
#ifdef MADV_HUGEPAGE
  const uintptr_t align = uintptr_t(2) << 20;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + align - 1) & ~(align - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(align - 1);
  if (e > a) madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
#endif
}

// Freed large buffers, kept for the next call: a fresh page costs the OS zeroing it, which was
// a third of a 10-step forward-backward at S = 10^6 (repeated calls on one problem, as in an
// optimisation loop, are the common case; XLA's allocator keeps its buffers too). The free
// buffers and the forward passes kept for an adjoint (KeptCache, below) together stay within
// QUASIRL_NATIVE_POOL bytes (read once; default 4 GiB; 0 keeps nothing).
class Pool {
 public:
  static Pool& get() {
    static Pool pool;
    return pool;
  }
  // a kept block of at least `bytes` and at most 1.25 times that, or nullptr
  void* take(size_t bytes, size_t& got) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 4) return nullptr;
    got = it->first;
    void* p = it->second;
    held_ -= it->first;
    free_.erase(it);
    return p;
  }
  void give(void* p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!room(bytes)) {
      std::free(p);
      return;
    }
    free_.emplace(bytes, p);
    held_ += bytes;
  }
  // account `bytes` more (or fewer) held by kept forward passes; false (and nothing
  // accounted) where they do not fit beside what must stay
  bool hold(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!room(bytes)) return false;
    kept_ += bytes;
    return true;
  }
  void unhold(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    kept_ -= bytes;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& kv : free_) std::free(kv.second);
    free_.clear();
    held_ = 0;
  }
  size_t limit() const { return limit_; }
  size_t free_bytes() const { return held_; }
  size_t kept_bytes() const { return kept_; }

 private:
  Pool() {
    const char* env = std::getenv("QUASIRL_NATIVE_POOL");
    limit_ = env != nullptr ? size_t(std::strtoull(env, nullptr, 10)) : (size_t(4) << 30);
  }
  // frees kept blocks, the largest first, until `bytes` more fit (mu_ held)
  bool room(size_t bytes) {
    while (held_ + kept_ + bytes > limit_ && !free_.empty()) {
      auto last = std::prev(free_.end());
      std::free(last->second);
      held_ -= last->first;
      free_.erase(last);
    }
    return held_ + kept_ + bytes <= limit_;
  }
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t held_ = 0, kept_ = 0, limit_;
};

// A large buffer on 2 MB pages where the kernel allows it (transparent huge pages in
// "madvise" mode): touching hundreds of MB in 4 KB pages costs more than the steps themselves.
// Uninitialised unless `zero`.
template <class T>
class Buf {
 public:
  explicit Buf(size_t n, bool zero = false) {
    const size_t align = size_t(2) << 20;
    bytes_ = ((n * sizeof(T) + align - 1) / align) * align;
    if (bytes_ == 0) bytes_ = align;
    p_ = static_cast<T*>(Pool::get().take(bytes_, bytes_));
    if (p_ == nullptr) {
      p_ = static_cast<T*>(std::aligned_alloc(align, bytes_));
      if (p_ == nullptr) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
      madvise(p_, bytes_, MADV_HUGEPAGE);
#endif
    }
    if (zero) std::memset(static_cast<void*>(p_), 0, n * sizeof(T));
  }
  ~Buf() { Pool::get().give(p_, bytes_); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T* data() const { return p_; }
  T& operator[](size_t i) const { return p_[i]; }
  size_t bytes() const { return bytes_; }  // as allocated

 private:
  size_t bytes_;
  T* p_;
};
using Big = Buf<float>;

template <bool STREAM>
QI void vstream(float* p, vf v) {
#if defined(__AVX512F__)
  if (STREAM) {
    _mm512_stream_ps(p, (__m512)v);
    return;
  }
#endif
  *reinterpret_cast<vf*>(p) = v;
}

#if defined(__AVX512F__)
QI vf vldexp(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }  // p 2^floor(n)
#else
QI vf vround(vf y) {
  const vf magic = splat(12582912.0f);  // 1.5 * 2^23: adding and subtracting rounds
  return (y + magic) - magic;
}
QI vf vldexp(vf p, vf n) {  // p in [0.7, 1.5), n >= -150: two steps keep exponents valid
  const vi ni = __builtin_convertvector(n, vi);
  const vi n1 = ni >> 1, n2 = ni - n1;
  const vf a = (vf)((n1 + 127) << 23), b = (vf)((n2 + 127) << 23);
  return p * a * b;
}
#endif

#if defined(__AVX512F__)
// 2^y for finite y: y = r + f with r a multiple of 1/16 (adding 1.5 * 2^19 rounds to it and
// leaves 16 r mod 16 in the low mantissa bits), f in [-1/32, 1/32]; 2^r = 2^floor(r) 2^(k/16)
// with 2^(k/16) from a 16-entry table (one vpermps) and vscalef (0 below the float range, inf
// above, where the caller falls back), 2^f by a degree-3 minimax polynomial. Relative error
// 1.2e-7, mean -7e-9. Mostly adds and a shuffle: the FMA ports are the kernel's bound.
alignas(64) constexpr float EXP2_TAB[16] = {
    1.0f, 1.0442737340927124f, 1.0905077457427979f, 1.1387885808944702f,
    1.1892070770263672f, 1.2418577671051025f, 1.2968395948410034f, 1.3542555570602417f,
    1.4142135381698608f, 1.4768261909484863f, 1.5422108173370361f, 1.610490322113037f,
    1.6817928552627563f, 1.7562521696090698f, 1.8340080976486206f, 1.9152065515518188f};

QI vf vexp2(vf y) {
  const vf magic = splat(786432.0f);
  const vf t = y + magic;
  const vf r = t - magic;
  const vf f = y - r;
  const vf tk = (vf)_mm512_permutexvar_ps(_mm512_castps_si512((__m512)t),
                                          _mm512_load_ps(EXP2_TAB));
  vf p = splat(0.0552048422396183f);
  p = p * f + splat(0.24022652208805084f);
  p = p * f + splat(0.6931471824645996f);
  return vldexp((tk * f) * p + tk, r);  // vscalef: times 2^floor(r)
}
#else
// 2^y for finite y (clamped to [-150, 127]): y = n + f, n = round(y), |f| <= 1/2, 2^f by a
// degree-6 minimax polynomial (relative error 7e-8 in float32 arithmetic, mean 1e-9), times 2^n.
QI vf vexp2(vf y) {
  y = vmax(y, splat(-150.0f));
  y = y < splat(127.0f) ? y : splat(127.0f);
  const vf n = vround(y);
  const vf f = y - n;
  vf p = splat(1.4920956164132804e-4f);
  p = p * f + splat(1.3391863321885467e-3f);
  p = p * f + splat(9.62006114423275e-3f);
  p = p * f + splat(5.550360679626465e-2f);
  p = p * f + splat(2.4022634327411652e-1f);
  p = p * f + splat(6.931471824645996e-1f);
  p = p * f + splat(1.0f);
  return vldexp(p, n);
}
#endif

// 2^y for y <= 0, where y may also be -inf or NaN (both give 0)
QI vf vexp2_neg(vf y) { return vexp2(vmax(y, splat(-150.0f))); }

// log(s) for s >= 1 (finite); Cephes logf, ~1 ulp.
QI vf vlog_ge1(vf s) {
  const vi bits = (vi)s;
  vi e = (bits >> 23) - 126;  // s = m 2^e, m in [0.5, 1)
  vf m = (vf)((bits & 0x007fffff) | 0x3f000000);
  const auto small = m < splat(0.707106781186547524f);
  e = small ? e - 1 : e;
  m = small ? m + m - splat(1.0f) : m - splat(1.0f);
  const vf ef = __builtin_convertvector(e, vf);
  const vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m + splat(-1.1514610310e-1f);
  y = y * m + splat(1.1676998740e-1f);
  y = y * m + splat(-1.2420140846e-1f);
  y = y * m + splat(1.4249322787e-1f);
  y = y * m + splat(-1.6668057665e-1f);
  y = y * m + splat(2.0000714765e-1f);
  y = y * m + splat(-2.4999993993e-1f);
  y = y * m + splat(3.3333331174e-1f);
  y = y * m * z;
  y = y + ef * splat(-2.12194440e-4f);
  y = y - splat(0.5f) * z;
  return m + y + ef * splat(0.693359375f);
}

constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
constexpr float LOG2E = 1.44269504088896341f;

#if defined(__AVX512F__)
// ref + log2(s) for s >= 1 (finite): s = m 2^e with m in [1, 2) (getexp/getmant); the top four
// bits of m pick c_k ~ 1 + (k + 1/2)/16 from a 16-entry table (one vpermps), so log2 m =
// log2 c_k + log2(1 + r) with r = m / c_k - 1 in [-1/32, 1/32], a degree-4 polynomial
// (absolute error 6e-8). e is added to ref first (exactly).
alignas(64) constexpr float LOG_INV[16] = {
    0.9696969985961914f, 0.9142857193946838f, 0.8648648858070374f, 0.8205128312110901f,
    0.7804877758026123f, 0.7441860437393188f, 0.7111111283302307f, 0.6808510422706604f,
    0.6530612111091614f, 0.6274510025978088f, 0.6037735939025879f, 0.581818163394928f,
    0.5614035129547119f, 0.5423728823661804f, 0.5245901346206665f, 0.5079365372657776f};
alignas(64) constexpr float LOG_LG[16] = {  // -log2 of LOG_INV[k], to float rounding
    0.044394075870513916f, 0.12928301095962524f, 0.20945332944393158f, 0.28540220856666565f,
    0.35755205154418945f, 0.42626476287841797f, 0.4918530583381653f, 0.5545889139175415f,
    0.6147098541259766f, 0.6724252700805664f, 0.727920413017273f, 0.7813597321510315f,
    0.832889974117279f, 0.8826430439949036f, 0.9307374358177185f, 0.9772798418998718f};

QI vf add_log2(vf ref, vf s) {
  const __m512 sv = (__m512)s;
  const vf e = (vf)_mm512_getexp_ps(sv);
  const vf m = (vf)_mm512_getmant_ps(sv, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  const __m512i k = _mm512_srli_epi32(_mm512_castps_si512(sv), 19);  // vpermps reads bits 0-3
  const vf inv = (vf)_mm512_permutexvar_ps(k, _mm512_load_ps(LOG_INV));
  const vf lg = (vf)_mm512_permutexvar_ps(k, _mm512_load_ps(LOG_LG));
  const vf r = m * inv - splat(1.0f);
  vf p = splat(-0.36067376022224085f);
  p = p * r + splat(0.48089834696298783f);
  p = p * r + splat(-0.72134752044448170f);
  p = p * r + splat(1.4426950408889634f);
  return (ref + e) + (lg + r * p);
}
#else
// ref + log2(s) for s >= 1 (finite): s = m 2^e with m in [sqrt(1/2), sqrt(2)), e added to ref
// first (exactly), then log2(m) by Cephes' logf polynomial, so the error is that of ref + e.
QI vf add_log2(vf ref, vf s) {
  const vi bits = (vi)s;
  vi e = (bits >> 23) - 126;  // s = m 2^e, m in [0.5, 1)
  vf m = (vf)((bits & 0x007fffff) | 0x3f000000);
  const auto small = m < splat(0.707106781186547524f);
  e = small ? e - 1 : e;
  m = small ? m + m - splat(1.0f) : m - splat(1.0f);
  const vf z = m * m;
  vf y = splat(7.0376836292e-2f);
  y = y * m + splat(-1.1514610310e-1f);
  y = y * m + splat(1.1676998740e-1f);
  y = y * m + splat(-1.2420140846e-1f);
  y = y * m + splat(1.4249322787e-1f);
  y = y * m + splat(-1.6668057665e-1f);
  y = y * m + splat(2.0000714765e-1f);
  y = y * m + splat(-2.4999993993e-1f);
  y = y * m + splat(3.3333331174e-1f);
  y = y * m * z - splat(0.5f) * z;  // log(1 + m) - m
  return (ref + __builtin_convertvector(e, vf)) + (m + y) * splat(LOG2E);
}
#endif

// every lane of s in [1, lim) (false for NaN; a sum with an overflowed term can be -inf)
QI bool all_below(vf s, float lim) {
#if defined(__AVX512F__)
  return (_mm512_cmp_ps_mask((__m512)s, _mm512_set1_ps(lim), _CMP_LT_OQ) &
          _mm512_cmp_ps_mask((__m512)s, _mm512_set1_ps(1.0f), _CMP_GE_OQ)) == 0xFFFF;
#else
  const vi ok = (s < splat(lim)) & (s >= splat(1.0f));
  int all = -1;
  for (int i = 0; i < LANES; ++i) all &= ok[i];
  return all != 0;
#endif
}

// this OpenMP thread's number, the team's size and the thread's share [s0, s1) of n states
struct Share {
  int tid, nth;
  int64_t s0, s1;
};
QI Share share_of(int64_t n) {
  int tid = 0, nth = 1;
#ifdef _OPENMP
  tid = omp_get_thread_num();
  nth = omp_get_num_threads();
#endif
  return {tid, nth, n * tid / nth, n * (tid + 1) / nth};
}

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

QI vf vmin(vf a, vf b) { return a < b ? a : b; }

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
#pragma omp parallel for schedule(static)
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
#ifdef _OPENMP
    nthreads = omp_get_max_threads();
#endif
    // stream the output past the caches when u is much larger than they are (the measured
    // effect: -6% per step at S = 10^6, B = 32; +12% when u fits in L2)
    stream = double(S) * double(Bp) * 4.0 > 64.0 * (1 << 20);
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
  void step(const float* cur, float* nxt, const float* shift, float* next_shift) const {
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
#if defined(__AVX512F__)
      _mm_sfence();  // the streamed stores, before the other threads read them
#endif
      for (int64_t v = 0; v < nv; ++v) vstore(tmax.data() + size_t(tid) * Bp + v * LANES, mymax[v]);
    }
    for (int64_t b = 0; b < Bp; ++b) {
      float m = NEG_INF;
      for (int k = 0; k < nthreads; ++k) m = std::max(m, tmax[size_t(k) * Bp + b]);
      next_shift[b] = reachable(b, m) ? m : 0.0f;
    }
  }

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
#if defined(__AVX512F__)
    _mm_sfence();  // the streamed stores, before pass 2 reads them
#endif
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
          vf l;
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
       const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, int64_t budget)
      : P(src, logw, rew, Tin, S, J, B), F(B), tr(P, li, horizon, budget, F.data()) {}
  size_t bytes() const {
    return tr.bytes() + P.cnt.bytes() + P.isrc.bytes() + P.ilw.bytes() + P.ilw2.bytes() +
           P.irw.bytes();
  }
  Problem P;
  std::vector<float> F;
  Trajectory tr;
};

// Forward passes that reverse mode will need: the forward in free_energy's derivative rule
// (quasirl_pull_keep_f32) leaves its Kept here under a token, which JAX hands to the adjoint
// as an operand (a data dependency, so XLA runs the two in order); the adjoint then skips
// the tables and the forward. The least recently used entries go first once the kept bytes
// exceed the pool's limit; an adjoint whose token is gone (or 0) recomputes everything, with
// the same result bit for bit. The adjoint takes its entry out.
class KeptCache {
 public:
  static KeptCache& get() {
    static KeptCache cache;
    return cache;
  }
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

// The pass kept under `token` when it is there and matches these shapes and horizon, taken
// out of the cache; else a new one (the same arithmetic, so the same bits).
std::unique_ptr<Kept> kept_or_new(uint64_t token, const float* li, const int32_t* src,
                                  const float* logw, const float* rew, const float* Tin,
                                  int64_t S, int64_t J, int64_t B, int64_t horizon,
                                  int64_t budget) {
  std::unique_ptr<Kept> kept = KeptCache::get().take(token);
  if (kept && kept->P.S == S && kept->P.J == J && kept->P.B == B &&
      kept->tr.horizon() == horizon) {
    return kept;
  }
  return std::make_unique<Kept>(li, src, logw, rew, Tin, S, J, B, horizon, budget);
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

QI float hsum(vf a) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps((__m512)a);
#else
  float s = 0.0f;
  for (int i = 0; i < LANES; ++i) s += a[i];
  return s;
#endif
}

// Zero the n floats at p (p and n multiples of LANES floats; rows of a buffer aligned to 64
// bytes). With CLZERO (AMD) a line is zeroed in the cache without first being read from
// memory, but CLZERO clears a whole 64-byte line: it is used only on the lines that lie
// entirely inside [p, p + n). With 8-lane vectors a row is 32 bytes, so a line may hold part
// of a neighbouring row that already holds sums (or another thread's row): those edges are
// zeroed with ordinary stores. CLZERO is weakly ordered: clzero_fence() before other threads
// read what was zeroed.
QI void zero_floats(float* p, int64_t n) {
  float* const e = p + n;
#if defined(__CLZERO__)
  float* const a = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
  float* const z = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(e) & ~uintptr_t(63));
  if (a < z) {
    for (; p < a; p += LANES) vstore(p, splat(0.0f));
    for (; p < z; p += 16) __builtin_ia32_clzero(p);
  }
#endif
  for (; p < e; p += LANES) vstore(p, splat(0.0f));
}

QI void clzero_fence() {
#if defined(__CLZERO__)
  __builtin_ia32_sfence();
#endif
}

QI bool all_zero(vf a) {
#if defined(__AVX512F__)
  return _mm512_cmp_ps_mask((__m512)a, _mm512_setzero_ps(), _CMP_EQ_OQ) == 0xFFFF;
#else
  const vi z = a == splat(0.0f);
  int all = -1;
  for (int i = 0; i < LANES; ++i) all &= z[i];
  return all != 0;
#endif
}

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

}  // namespace

// What the kernels keep between calls, in bytes: out[0] free buffers, out[1] forward passes
// kept for an adjoint, out[2] the limit (QUASIRL_NATIVE_POOL).
extern "C" __attribute__((visibility("default"))) void QuasirlNativeHeld(uint64_t* out) {
  out[0] = Pool::get().free_bytes();
  out[1] = Pool::get().kept_bytes();
  out[2] = Pool::get().limit();
}

// Drop everything the kernels keep between calls (kept forward passes are recomputed if an
// adjoint asks for them later).
extern "C" __attribute__((visibility("default"))) void QuasirlNativeRelease() {
  KeptCache::get().clear();
  Pool::get().release();
}

// The kernel's exp throughput, for the benchmarks' measured ceilings: x <- 2^(-|x|), iters
// times over x[0..n) (n a multiple of the lane count; each thread keeps its chunk in L1).
extern "C" __attribute__((visibility("default"))) void QuasirlExpBench(float* x, int64_t n,
                                                                      int64_t iters) {
  const int64_t chunk = 64 * LANES;
#pragma omp parallel for schedule(static)
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t c1 = c0 + chunk < n ? c0 + chunk : n;
    for (int64_t it = 0; it < iters; ++it) {
      for (int64_t i = c0; i < c1; i += LANES) {
        const vf v = vload(x + i);
        vstore(x + i, vexp2_neg(vmax(v, -v) * splat(-1.0f)));
      }
    }
  }
}

// li [S] (log init), src/logw/rew [S, J], T [B]: the inputs every handler shares
static auto PullArgs() {
  return ffi::Ffi::Bind()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::S32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Arg<ffi::Buffer<ffi::F32>>();
}

static bool pull_shapes_ok(const ffi::Buffer<ffi::F32>& li, const ffi::Buffer<ffi::S32>& src,
                           const ffi::Buffer<ffi::F32>& logw, const ffi::Buffer<ffi::F32>& rew,
                           const ffi::Buffer<ffi::F32>& T) {
  const auto sd = src.dimensions();
  return li.dimensions().size() == 1 && sd.size() == 2 && size_t(sd[0]) == li.element_count() &&
         logw.element_count() == src.element_count() &&
         rew.element_count() == src.element_count() && T.dimensions().size() == 1;
}

static ffi::Error out_of_memory() {  // no C++ exception may reach XLA
  return ffi::Error(ffi::ErrorCode::kResourceExhausted,
                    "quasirl native kernel: out of memory (QUASIRL_FB_MEMORY bounds the stored "
                    "u_t of the adjoint kernels, QUASIRL_NATIVE_POOL what they keep)");
}

// run a kernel; an allocation failure becomes an XLA error
template <class Fn>
static ffi::Error guarded(Fn&& fn) {
  try {
    fn();
  } catch (const std::bad_alloc&) {
    return out_of_memory();
  }
  return ffi::Error::Success();
}

static ffi::Error bad_shapes() {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                    "log init [S], src, log w, r [S, J], T [B]");
}

static uint64_t token_of(const ffi::Buffer<ffi::S32>& t) {
  const uint32_t* p = reinterpret_cast<const uint32_t*>(t.typed_data());
  return t.element_count() == 2 ? (uint64_t(p[1]) << 32) | uint64_t(p[0]) : 0;
}

ffi::Error PullImpl(ffi::Buffer<ffi::F32> li, ffi::Buffer<ffi::S32> src,
                    ffi::Buffer<ffi::F32> logw, ffi::Buffer<ffi::F32> rew,
                    ffi::Buffer<ffi::F32> T, ffi::ResultBuffer<ffi::F32> F, int64_t horizon) {
  if (!pull_shapes_ok(li, src, logw, rew, T)) return bad_shapes();
  const int64_t S = src.dimensions()[0], J = src.dimensions()[1], B = T.element_count();
  return guarded([&] {
    forward(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
            T.typed_data(), S, J, B, horizon, F->typed_data());
  });
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlPullF32, PullImpl,
                              PullArgs().Ret<ffi::Buffer<ffi::F32>>().Attr<int64_t>("horizon"));

ffi::Error PullFBImpl(ffi::Buffer<ffi::F32> li, ffi::Buffer<ffi::S32> src,
                      ffi::Buffer<ffi::F32> logw, ffi::Buffer<ffi::F32> rew,
                      ffi::Buffer<ffi::F32> T, ffi::Buffer<ffi::S32> token,
                      ffi::ResultBuffer<ffi::F32> F,
                      ffi::ResultBuffer<ffi::F32> N, ffi::ResultBuffer<ffi::F32> rho,
                      ffi::ResultBuffer<ffi::F32> dT, int64_t horizon, int64_t budget) {
  if (!pull_shapes_ok(li, src, logw, rew, T)) return bad_shapes();
  const int64_t S = src.dimensions()[0], J = src.dimensions()[1], B = T.element_count();
  return guarded([&] {
    forward_backward(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
                     T.typed_data(), S, J, B, horizon, budget, token_of(token), F->typed_data(),
                     N->typed_data(), rho->typed_data(), dT->typed_data());
  });
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlPullFBF32, PullFBImpl,
                              PullArgs()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("horizon")
                                  .Attr<int64_t>("budget"));

ffi::Error PullKeepImpl(ffi::Buffer<ffi::F32> li, ffi::Buffer<ffi::S32> src,
                        ffi::Buffer<ffi::F32> logw, ffi::Buffer<ffi::F32> rew,
                        ffi::Buffer<ffi::F32> T, ffi::ResultBuffer<ffi::F32> F,
                        ffi::ResultBuffer<ffi::S32> token, int64_t horizon, int64_t budget) {
  if (!pull_shapes_ok(li, src, logw, rew, T) || token->element_count() != 2) return bad_shapes();
  const int64_t S = src.dimensions()[0], J = src.dimensions()[1], B = T.element_count();
  return guarded([&] {
    auto kept = std::make_unique<Kept>(li.typed_data(), src.typed_data(), logw.typed_data(),
                                       rew.typed_data(), T.typed_data(), S, J, B, horizon,
                                       budget);
    for (int64_t b = 0; b < B; ++b) F->typed_data()[b] = kept->F[b];
    const uint64_t t = KeptCache::get().put(std::move(kept));
    uint32_t* out = reinterpret_cast<uint32_t*>(token->typed_data());
    out[0] = uint32_t(t);
    out[1] = uint32_t(t >> 32);
  });
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlPullKeepF32, PullKeepImpl,
                              PullArgs()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::S32>>()
                                  .Attr<int64_t>("horizon")
                                  .Attr<int64_t>("budget"));

ffi::Error PullAdjointImpl(ffi::Buffer<ffi::F32> li, ffi::Buffer<ffi::S32> src,
                           ffi::Buffer<ffi::F32> logw, ffi::Buffer<ffi::F32> rew,
                           ffi::Buffer<ffi::F32> T, ffi::Buffer<ffi::S32> token,
                           ffi::Buffer<ffi::F32> W, ffi::ResultBuffer<ffi::F32> F,
                           ffi::ResultBuffer<ffi::F32> G, ffi::ResultBuffer<ffi::F32> R,
                           ffi::ResultBuffer<ffi::F32> dFdT, int64_t horizon, int64_t budget) {
  if (!pull_shapes_ok(li, src, logw, rew, T)) return bad_shapes();
  const int64_t S = src.dimensions()[0], J = src.dimensions()[1], B = T.element_count();
  const auto wd = W.dimensions();
  if (wd.size() != 2 || wd[1] != B) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "W [K, B] with B = T.shape[0]");
  }
  return guarded([&] {
    adjoint(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
            T.typed_data(), W.typed_data(), S, J, B, wd[0], horizon, budget, token_of(token),
            F->typed_data(), G->typed_data(), R->typed_data(), dFdT->typed_data());
  });
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlPullAdjointF32, PullAdjointImpl,
                              PullArgs()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("horizon")
                                  .Attr<int64_t>("budget"));
