// The log-space forward recursion of free_energy as an XLA FFI custom call for CPUs (float32).
//
// For B temperatures at once (u is [S, B], temperatures innermost, as in quasirl/_dynamics.py):
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

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

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
QI vf vround(vf y) {
  return (vf)_mm512_roundscale_ps((__m512)y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
QI vf vldexp(vf p, vf n) { return (vf)_mm512_scalef_ps((__m512)p, (__m512)n); }
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

void forward(const float* u0, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, float* F) {
  const int64_t nv = (B + LANES - 1) / LANES, Bp = nv * LANES;
  std::vector<Lanes> lanes(nv);
  std::vector<double> unit(Bp);  // value units per stored unit: T ln 2 (scaled) or 1
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
  // live entries of each state, first (padding has log w = -inf)
  std::vector<int32_t> cnt(S);
  for (int64_t s = 0; s < S; ++s) {
    int32_t c = 0;
    for (int64_t j = 0; j < J; ++j) c += logw[s * J + j] > NEG_INF;
    cnt[s] = c;
  }
  std::vector<int32_t> isrc(S * J);
  std::vector<float> ilw(S * J), ilw2(S * J), irw(S * J);
  for (int64_t s = 0; s < S; ++s) {
    int64_t k = 0;
    for (int64_t j = 0; j < J; ++j) {
      if (logw[s * J + j] > NEG_INF) {
        isrc[s * J + k] = src[s * J + j];
        ilw[s * J + k] = logw[s * J + j];
        ilw2[s * J + k] = float(double(logw[s * J + j]) * 1.4426950408889634);
        irw[s * J + k] = rew[s * J + j];
        ++k;
      }
    }
  }
  // u and the next u, 64-byte aligned (the stores below are whole cache lines)
  std::vector<float> a_store(S * Bp + LANES), b_store(S * Bp + LANES);
  auto align64 = [](float* p) {
    return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
  };
  float* cur = align64(a_store.data());
  float* nxt = align64(b_store.data());
  std::vector<double> per_unit(Bp);
  for (int64_t b = 0; b < Bp; ++b) per_unit[b] = 1.0 / unit[b];
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t b = 0; b < Bp; ++b) {
      const float u = b < B ? u0[s * B + b] : NEG_INF;
      const bool scaled = lanes[b / LANES].scaled;
      cur[s * Bp + b] = !(u > NEG_INF) ? (scaled ? SENT : NEG_INF) : float(u * per_unit[b]);
    }
  }
  // a lane's shift: the maximum over states of its values, 0 where none is reachable
  auto reachable = [&](int64_t b, float m) {
    return lanes[b / LANES].scaled ? m > SENT_BELOW : m > NEG_INF;
  };
  std::vector<double> acc(Bp, 0.0);
  std::vector<float> shift(Bp, NEG_INF);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t b = 0; b < Bp; ++b) shift[b] = std::max(shift[b], cur[s * Bp + b]);
  }
  for (int64_t b = 0; b < Bp; ++b) {
    if (!reachable(b, shift[b])) shift[b] = 0.0f;  // no start state: F = -inf, finite here
  }
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  std::vector<float> tmax(size_t(nthreads) * Bp);
  // stream the output past the caches when u is much larger than they are (the measured
  // effect: -6% per step at S = 10^6, B = 32; +12% when u fits in L2)
  const bool stream = double(S) * double(Bp) * 4.0 > 64.0 * (1 << 20);
  const int64_t JM = J > 0 ? J : 1;

  for (int64_t t = 0; t < horizon; ++t) {
    for (auto& x : tmax) x = NEG_INF;
#pragma omp parallel num_threads(nthreads)
    {
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
      std::vector<vf> x(JM), x1(JM), mymax(nv, splat(NEG_INF));
      int nth = 1;
#ifdef _OPENMP
      nth = omp_get_num_threads();
#endif
      const int64_t s0 = S * tid / nth, s1 = S * (tid + 1) / nth;
      const Step st{cnt.data(), isrc.data(), ilw.data(), ilw2.data(), irw.data(), lanes.data(),
                    shift.data(), cur, nxt, J, Bp, nv};
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
      acc[b] += double(shift[b]) * unit[b];
      float m = NEG_INF;
      for (int k = 0; k < nthreads; ++k) m = std::max(m, tmax[size_t(k) * Bp + b]);
      shift[b] = reachable(b, m) ? m : 0.0f;
    }
    std::swap(cur, nxt);
  }
  // F = acc + smax_T over states of u_H: the maximum, then the sum of exp((u - max) / T) in
  // double per lane, both row by row (a column at a time would stride through memory)
  std::vector<float> mfin(Bp, NEG_INF);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t v = 0; v < nv; ++v) {
      vstore(mfin.data() + v * LANES,
             vmax(vload(mfin.data() + v * LANES), vload(cur + s * Bp + v * LANES)));
    }
  }
  std::vector<double> sum(Bp, 0.0);
  for (int64_t v = 0; v < nv; ++v) {
    const vf m = vload(mfin.data() + v * LANES);
    const vf m0 = m > splat(NEG_INF) ? m : splat(0.0f);
    const vf mul = lanes[v].scaled ? splat(1.0f) : lanes[v].invT;
    double part[LANES] = {0};
    for (int64_t s0 = 0; s0 < S; s0 += 256) {  // float partial sums of <= 256 terms
      const int64_t s1 = s0 + 256 < S ? s0 + 256 : S;
      vf ps = splat(0.0f);
      for (int64_t s = s0; s < s1; ++s) {
        ps += vexp2_neg((vload(cur + s * Bp + v * LANES) - m0) * mul);
      }
      for (int i = 0; i < LANES; ++i) part[i] += double(ps[i]);
    }
    for (int i = 0; i < LANES; ++i) sum[v * LANES + i] = part[i];
  }
  for (int64_t b = 0; b < B; ++b) {
    const double T = Tin[b], m = mfin[b];
    if (!reachable(b, mfin[b])) {
      F[b] = NEG_INF;
      continue;
    }
    double out;
    if (lanes[b / LANES].scaled) {
      out = unit[b] * (m + std::log2(sum[b]));
    } else {
      out = T > 0 ? m + T * std::log(sum[b]) : m;
    }
    F[b] = float(acc[b] + out);
  }
}

}  // namespace

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

ffi::Error PullImpl(ffi::Buffer<ffi::F32> u0, ffi::Buffer<ffi::S32> src,
                    ffi::Buffer<ffi::F32> logw, ffi::Buffer<ffi::F32> rew,
                    ffi::Buffer<ffi::F32> T, ffi::ResultBuffer<ffi::F32> F, int64_t horizon) {
  const auto ud = u0.dimensions();
  const auto sd = src.dimensions();
  if (ud.size() != 2 || sd.size() != 2 || ud[0] != sd[0] || T.element_count() != size_t(ud[1])) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "u0 [S, B], src [S, J], T [B]");
  }
  forward(u0.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
          T.typed_data(), ud[0], sd[1], ud[1], horizon, F->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlPullF32, PullImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("horizon"));
