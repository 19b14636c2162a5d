// SIMD arithmetic shared by quasirl's native CPU kernels: vector types one register wide,
// exp2 and log2 polynomials to float32 rounding, and the few operations whose best form
// depends on the instruction set. Every #if on an ISA macro (__AVX512F__, __CLZERO__) is in
// this file, and tests/test_native_isa.py builds and checks each variant the CPU can run.
//
// Vectors are one SIMD register wide: 64 bytes where the target has AVX-512, else 32 (also on
// targets without AVX: GCC then splits the vector into the registers there are). A wider GCC
// vector type would be split into several registers and passed through memory between
// functions (measured: 80 ms instead of 11 ms per step of the forward kernel on AVX2).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define QUASIRL_VBYTES 64
#else
#define QUASIRL_VBYTES 32
#endif

#define QUASIRL_INLINE static inline __attribute__((always_inline))
#define QI QUASIRL_INLINE

namespace quasirl {

constexpr int LANES = QUASIRL_VBYTES / 4;  // one SIMD register of floats
typedef float vf __attribute__((vector_size(4 * LANES)));
typedef float uvf __attribute__((vector_size(4 * LANES), aligned(4)));
typedef int32_t vi __attribute__((vector_size(4 * LANES)));
#define QI QUASIRL_INLINE

// a in every lane (one broadcast: a lane-by-lane fill compiles to 16 masked inserts)
QI vf splat(float a) { return a - vf{}; }
QI vf vload(const float* p) { return *reinterpret_cast<const uvf*>(p); }
QI void vstore(float* p, vf v) { *reinterpret_cast<uvf*>(p) = v; }
QI vf vmax(vf a, vf b) { return a > b ? a : b; }
QI vf vmin(vf a, vf b) { return a < b ? a : b; }

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

// orders the streamed stores before what other threads read next
QI void stream_fence() {
#if defined(__AVX512F__)
  _mm_sfence();
#endif
}

#if defined(__AVX512F__)
// The AVX-512 intrinsics below are called in their zero-masked form with every lane selected
// (the same instruction): the plain forms pass _mm512_undefined_ps() as the merge source,
// which GCC 12 reports as maybe-uninitialized, an error under -Werror.
constexpr __mmask16 ALL16 = 0xFFFF;
QI vf vldexp(vf p, vf n) {  // p 2^floor(n)
  return (vf)_mm512_maskz_scalef_ps(ALL16, (__m512)p, (__m512)n);
}
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
alignas(64) inline constexpr float EXP2_TAB[16] = {
    1.0f, 1.0442737340927124f, 1.0905077457427979f, 1.1387885808944702f,
    1.1892070770263672f, 1.2418577671051025f, 1.2968395948410034f, 1.3542555570602417f,
    1.4142135381698608f, 1.4768261909484863f, 1.5422108173370361f, 1.610490322113037f,
    1.6817928552627563f, 1.7562521696090698f, 1.8340080976486206f, 1.9152065515518188f};

// vpermps of a 16-entry table (zero-masked form, see ALL16)
QI __m512 table16(__m512i idx, const float* table) {
  return _mm512_maskz_permutexvar_ps(ALL16, idx, _mm512_load_ps(table));
}

QI vf vexp2(vf y) {
  const vf magic = splat(786432.0f);
  const vf t = y + magic;
  const vf r = t - magic;
  const vf f = y - r;
  const vf tk = (vf)table16(_mm512_castps_si512((__m512)t), EXP2_TAB);
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

inline constexpr float NEG_INF = -std::numeric_limits<float>::infinity();
inline constexpr float LOG2E = 1.44269504088896341f;

#if defined(__AVX512F__)
// ref + log2(s) for s >= 1 (finite): s = m 2^e with m in [1, 2) (getexp/getmant); the top four
// bits of m pick c_k ~ 1 + (k + 1/2)/16 from a 16-entry table (one vpermps), so log2 m =
// log2 c_k + log2(1 + r) with r = m / c_k - 1 in [-1/32, 1/32], a degree-4 polynomial
// (absolute error 6e-8). e is added to ref first (exactly).
alignas(64) inline constexpr float LOG_INV[16] = {
    0.9696969985961914f, 0.9142857193946838f, 0.8648648858070374f, 0.8205128312110901f,
    0.7804877758026123f, 0.7441860437393188f, 0.7111111283302307f, 0.6808510422706604f,
    0.6530612111091614f, 0.6274510025978088f, 0.6037735939025879f, 0.581818163394928f,
    0.5614035129547119f, 0.5423728823661804f, 0.5245901346206665f, 0.5079365372657776f};
alignas(64) inline constexpr float LOG_LG[16] = {  // -log2 of LOG_INV[k], to float rounding
    0.044394075870513916f, 0.12928301095962524f, 0.20945332944393158f, 0.28540220856666565f,
    0.35755205154418945f, 0.42626476287841797f, 0.4918530583381653f, 0.5545889139175415f,
    0.6147098541259766f, 0.6724252700805664f, 0.727920413017273f, 0.7813597321510315f,
    0.832889974117279f, 0.8826430439949036f, 0.9307374358177185f, 0.9772798418998718f};

QI vf add_log2(vf ref, vf s) {
  const __m512 sv = (__m512)s;
  const vf e = (vf)_mm512_maskz_getexp_ps(ALL16, sv);
  const vf m = (vf)_mm512_maskz_getmant_ps(ALL16, sv, _MM_MANT_NORM_1_2, _MM_MANT_SIGN_src);
  const __m512i k = _mm512_maskz_srli_epi32(ALL16, _mm512_castps_si512(sv), 19);  // bits 0-3
  const vf inv = (vf)table16(k, LOG_INV);
  const vf lg = (vf)table16(k, LOG_LG);
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

QI float hsum(vf a) {
#if defined(__AVX512F__)
  // the tree of _mm512_reduce_add_ps (halves, then quarters, ...); its extracts, and GCC 12's
  // _mm512_castps512_ps256, pass an undefined merge source (see ALL16)
  const __m512d d = _mm512_castps_pd((__m512)a);
  const __m256 s8 = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(__mmask8(0xFF), d, 0)) +
                    _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(__mmask8(0xFF), d, 1));
  __m128 s4 = _mm256_castps256_ps128(s8) + _mm256_extractf128_ps(s8, 1);
  s4 = s4 + _mm_movehl_ps(s4, s4);
  s4 = s4 + _mm_shuffle_ps(s4, s4, 1);
  return _mm_cvtss_f32(s4);
#else
  float s = 0.0f;
  for (int i = 0; i < LANES; ++i) s += a[i];
  return s;
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

}  // namespace quasirl
