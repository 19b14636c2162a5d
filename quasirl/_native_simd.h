// Shared by quasirl's native CPU kernels (_kron_cpu.cc, _pull_cpu.cc).
//
// Vectors are one SIMD register wide: 64 bytes where the target has AVX-512, else 32. A wider
// GCC vector type would be split into several registers and passed through memory between
// functions (measured: 80 ms instead of 11 ms per step of the forward kernel on AVX2).
#pragma once

#if defined(__AVX512F__)
#define QUASIRL_VBYTES 64
#else
#define QUASIRL_VBYTES 32
#endif

#define QUASIRL_INLINE static inline __attribute__((always_inline))
