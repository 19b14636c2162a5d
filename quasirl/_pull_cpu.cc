// The log-space forward recursion of free_energy as an XLA FFI custom call for CPUs (float32).
//
// For B temperatures at once (u is [S, B], temperatures innermost, as in quasirl/_dynamics.py):
//   u_{t+1}(s') = smax_T over the J entries j entering s' of u_t(src_j) + c_j(T),
//   c_j(T) = T log w_j + r_j (entries with w_j = 0 are skipped),
//   smax_T(x) = m + T log sum_j exp((x_j - m) / T), m = max_j x_j; the exact max at T = 0,
// normalised every step by the per-temperature maximum over states (folded into the next
// step's reads), and F(T) = accumulated shifts + smax_T over states of u_H. The exp and log
// are polynomial approximations to float32 rounding (2^f by Taylor, Cephes logf), with GCC
// vector types so every temperature lane runs in SIMD; nothing here needs -ffast-math.

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

// 2^y for y <= 0 (y = -inf or NaN give 2^-150 = 0): y = n + f, n = round(y), |f| <= 1/2,
// 2^f by its degree-6 Taylor polynomial in f ln 2 (relative error < 2e-7), times 2^n.
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

QI vf vexp2_neg(vf y) {
  y = vmax(y, splat(-150.0f));
  const vf n = vround(y);
  const vf f = y - n;
  vf p = splat(1.5403530393381606e-4f);
  p = p * f + splat(1.3333558146428443e-3f);
  p = p * f + splat(9.6181291076284772e-3f);
  p = p * f + splat(5.5504108664821580e-2f);
  p = p * f + splat(2.4022650695910071e-1f);
  p = p * f + splat(6.9314718055994531e-1f);
  p = p * f + splat(1.0f);
  return vldexp(p, n);
}

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

struct Lanes {
  vf T, invT;  // invT: log2(e) / T (0 where T = 0), so exp((x - m) / T) = 2^((x - m) invT)
  vi maxplus;  // -1 where T == 0 (exact max-plus lanes), else 0
};

// soft maximum of x[0..n) per lane, -inf where every term is -inf
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

void forward(const float* u0, const int32_t* src, const float* logw, const float* rew,
             const float* Tin, int64_t S, int64_t J, int64_t B, int64_t horizon, float* F) {
  const int64_t nv = (B + LANES - 1) / LANES, Bp = nv * LANES;
  std::vector<Lanes> lanes(nv);
  for (int64_t v = 0; v < nv; ++v) {
    for (int i = 0; i < LANES; ++i) {
      const int64_t b = v * LANES + i;
      const float T = b < B ? Tin[b] : 1.0f;
      lanes[v].T[i] = T;
      lanes[v].invT[i] = T > 0 ? float(1.4426950408889634 / double(T)) : 0.0f;
      lanes[v].maxplus[i] = T > 0 ? 0 : -1;
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
  std::vector<float> ilw(S * J), irw(S * J);
  for (int64_t s = 0; s < S; ++s) {
    int64_t k = 0;
    for (int64_t j = 0; j < J; ++j) {
      if (logw[s * J + j] > NEG_INF) {
        isrc[s * J + k] = src[s * J + j];
        ilw[s * J + k] = logw[s * J + j];
        irw[s * J + k] = rew[s * J + j];
        ++k;
      }
    }
  }
  std::vector<float> a_store(S * Bp + LANES), b_store(S * Bp + LANES);
  float* cur = a_store.data();
  float* nxt = b_store.data();
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t b = 0; b < Bp; ++b) cur[s * Bp + b] = b < B ? u0[s * B + b] : NEG_INF;
  }
  std::vector<double> acc(Bp, 0.0);
  std::vector<float> shift(Bp, NEG_INF);
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t b = 0; b < Bp; ++b) shift[b] = std::max(shift[b], cur[s * Bp + b]);
  }
  for (int64_t b = 0; b < Bp; ++b) {
    if (!(shift[b] > NEG_INF)) shift[b] = 0.0f;  // no start state: F = -inf, kept finite here
  }
  int nthreads = 1;
#ifdef _OPENMP
  nthreads = omp_get_max_threads();
#endif
  std::vector<float> tmax(size_t(nthreads) * Bp);
  const int64_t JM = J > 0 ? J : 1;

  for (int64_t t = 0; t < horizon; ++t) {
    for (auto& x : tmax) x = NEG_INF;
#pragma omp parallel num_threads(nthreads)
    {
      int tid = 0;
#ifdef _OPENMP
      tid = omp_get_thread_num();
#endif
      std::vector<vf> x(JM), mymax(nv, splat(NEG_INF));
#pragma omp for schedule(static)
      for (int64_t s = 0; s < S; ++s) {
        const int32_t c = cnt[s];
        const int32_t* sj = isrc.data() + s * J;
        const float* lw = ilw.data() + s * J;
        const float* rw = irw.data() + s * J;
        for (int64_t v = 0; v < nv; ++v) {
          const Lanes& L = lanes[v];
          const vf sh = vload(shift.data() + v * LANES);
          for (int32_t j = 0; j < c; ++j) {
            const vf cj = L.T * splat(lw[j]) + splat(rw[j]);
            x[j] = vload(cur + int64_t(sj[j]) * Bp + v * LANES) - sh + cj;
          }
          const vf out = smax_lanes(x.data(), c, L);
          vstore(nxt + s * Bp + v * LANES, out);
          mymax[v] = vmax(mymax[v], out);
        }
      }
      for (int64_t v = 0; v < nv; ++v) vstore(tmax.data() + size_t(tid) * Bp + v * LANES, mymax[v]);
    }
    for (int64_t b = 0; b < Bp; ++b) {
      acc[b] += shift[b];
      float m = NEG_INF;
      for (int k = 0; k < nthreads; ++k) m = std::max(m, tmax[size_t(k) * Bp + b]);
      shift[b] = m > NEG_INF ? m : 0.0f;
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
    double part[LANES] = {0};
    for (int64_t s0 = 0; s0 < S; s0 += 256) {  // float partial sums of <= 256 terms
      const int64_t s1 = s0 + 256 < S ? s0 + 256 : S;
      vf ps = splat(0.0f);
      for (int64_t s = s0; s < s1; ++s) {
        ps += vexp2_neg((vload(cur + s * Bp + v * LANES) - m0) * lanes[v].invT);
      }
      for (int i = 0; i < LANES; ++i) part[i] += double(ps[i]);
    }
    for (int i = 0; i < LANES; ++i) sum[v * LANES + i] = part[i];
  }
  for (int64_t b = 0; b < B; ++b) {
    const double T = Tin[b], m = mfin[b];
    if (!(m > double(NEG_INF))) {
      F[b] = NEG_INF;
      continue;
    }
    const double out = T > 0 ? m + T * std::log(sum[b]) : m;
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
