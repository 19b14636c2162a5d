// The XLA FFI handlers of the native kernels and the library's C functions (ctypes): the only
// symbols the library exports (it is built with -fvisibility=hidden).

#include <cstdint>
#include <memory>

#include "kron.h"
#include "memory.h"
#include "pull.h"
#include "simd.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#define QUASIRL_EXPORT extern "C" __attribute__((visibility("default")))

// ---- C functions --------------------------------------------------------------------------

// What the kernels keep between calls, in bytes: out[0] free buffers, out[1] forward passes
// kept for an adjoint, out[2] the limit (QUASIRL_NATIVE_POOL).
QUASIRL_EXPORT void QuasirlNativeHeld(uint64_t* out) {
  out[0] = quasirl::Pool::get().free_bytes();
  out[1] = quasirl::Pool::get().kept_bytes();
  out[2] = quasirl::Pool::get().limit();
}

// Drop everything the kernels keep between calls (kept forward passes are recomputed if an
// adjoint asks for them later).
QUASIRL_EXPORT void QuasirlNativeRelease() {
  quasirl::KeptCache::get().clear();
  quasirl::Pool::get().release();
}

// The kernel's exp throughput, for the benchmarks' measured ceilings: x <- 2^(-|x|), iters
// times over x[0..n) (n a multiple of the lane count; each thread keeps its chunk in L1).
QUASIRL_EXPORT void QuasirlExpBench(float* x, int64_t n, int64_t iters) {
  using namespace quasirl;
  const int64_t chunk = 64 * LANES;
#pragma omp parallel for schedule(static) num_threads(team_size())
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

// The OpenMP team size of the kernels: n >= 1 threads, or 0 for OpenMP's default.
QUASIRL_EXPORT void QuasirlNativeSetThreads(int32_t n) { quasirl::set_team_size(n); }
QUASIRL_EXPORT int32_t QuasirlNativeThreads() { return quasirl::team_size(); }

// What this build is: out[0] float lanes per vector, out[1] AVX-512 code paths, out[2] CLZERO
// row zeroing, out[3] OpenMP.
QUASIRL_EXPORT void QuasirlNativeInfo(int32_t* out) {
  out[0] = quasirl::LANES;
#if defined(__AVX512F__)
  out[1] = 1;
#else
  out[1] = 0;
#endif
#if defined(__CLZERO__)
  out[2] = 1;
#else
  out[2] = 0;
#endif
#ifdef _OPENMP
  out[3] = 1;
#else
  out[3] = 0;
#endif
}

// The handlers XLA_FFI_DEFINE_HANDLER_SYMBOL defines carry no visibility of their own.
#pragma GCC visibility push(default)

// ---- Eigen's mutation operator ------------------------------------------------------------

namespace quasirl {

template <ffi::DataType DT, typename T>
ffi::Error KronImpl(ffi::Buffer<DT> x, ffi::Buffer<DT> w, ffi::Buffer<DT> m,
                    ffi::Buffer<DT> scale, ffi::ResultBuffer<DT> y,
                    ffi::ResultBuffer<DT> total, int32_t weighted, int32_t normalize) {
  const size_t n = x.element_count();
  int L = 0;
  while ((size_t(1) << L) < n) ++L;
  if ((size_t(1) << L) != n || n < 2) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "x must have 2^L >= 2 entries");
  }
  if (m.element_count() != size_t(4 * L)) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "m must have shape [L, 2, 2]");
  }
  if (weighted && w.element_count() != n) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "w must have as many entries as x");
  }
  kron_apply<T>(x.typed_data(), w.typed_data(), weighted != 0, m.typed_data(), L,
           scale.typed_data()[0], normalize != 0, y->typed_data(), total->typed_data());
  return ffi::Error::Success();
}

#define QUASIRL_BIND(DT)                      \
  ffi::Ffi::Bind()                            \
      .Arg<ffi::Buffer<DT>>()                 \
      .Arg<ffi::Buffer<DT>>()                 \
      .Arg<ffi::Buffer<DT>>()                 \
      .Arg<ffi::Buffer<DT>>()                 \
      .Ret<ffi::Buffer<DT>>()                 \
      .Ret<ffi::Buffer<DT>>()                 \
      .Attr<int32_t>("weighted")              \
      .Attr<int32_t>("normalize")

XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlKronF32, (KronImpl<ffi::F32, float>),
                              QUASIRL_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(QuasirlKronF64, (KronImpl<ffi::F64, double>),
                              QUASIRL_BIND(ffi::F64));

}  // namespace quasirl

// ---- the pull kernels of free_energy ------------------------------------------------------

namespace quasirl {

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
    quasirl::forward(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
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
    quasirl::forward_backward(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
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
    const uint64_t t = quasirl::keep(li.typed_data(), src.typed_data(), logw.typed_data(),
                                     rew.typed_data(), T.typed_data(), S, J, B, horizon, budget,
                                     F->typed_data());
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
    quasirl::adjoint(li.typed_data(), src.typed_data(), logw.typed_data(), rew.typed_data(),
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


}  // namespace quasirl

#pragma GCC visibility pop
