// Eigen's mutation operator on 2^L genotypes as an XLA FFI custom call for CPUs.
//
//   y = c * Q (w * x),   Q = M_0 (x) M_1 (x) ... (x) M_{L-1},   c = scale / (normalize ? S : 1),
//   S = sum(w * x) (returned as `total`; w = 1 when `weighted` is 0).
//
// Site j is bit p = L-1-j of the genotype index; M is [L, 2, 2] with M[j][new][old].
// Q is applied as per-bit butterflies, cache-blocked so that the vector is read and written
// about twice per call instead of once per bit (benchmarks/NOTES.md has the
// measurements):
//   pass A: blocks of 2^KA contiguous entries (L1-resident): load w*x, the lowest log2(lanes)
//           bits inside SIMD registers (a lane shuffle per bit), the remaining bits < KA as
//           radix-8/4/2 butterflies between vectors; the block sums give S;
//   pass B: the bits >= KA in groups, each group on tiles [2^bits rows x W columns] that fit
//           in L2; the factor c is folded into the coefficients of the last bit.
// Register-wide GCC vector types keep the inner loops SIMD without -ffast-math (which
// would also switch the whole process to flush-to-zero when linked into a shared library).

#include "kron.h"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "memory.h"
#include "simd.h"

namespace quasirl {

namespace {


constexpr int VBYTES = QUASIRL_VBYTES;  // one SIMD register (simd.h)

template <typename T>
struct V;
template <>
struct V<float> {
  typedef float vec __attribute__((vector_size(VBYTES)));
  typedef float uvec __attribute__((vector_size(VBYTES), aligned(4)));
  typedef int32_t ivec __attribute__((vector_size(VBYTES)));
  static constexpr int lanes = VBYTES / 4;
  static constexpr int log_lanes = VBYTES == 64 ? 4 : 3;
  static constexpr int block_bits = 13;  // 32 KiB blocks in pass A
};
template <>
struct V<double> {
  typedef double vec __attribute__((vector_size(VBYTES)));
  typedef double uvec __attribute__((vector_size(VBYTES), aligned(8)));
  typedef int64_t ivec __attribute__((vector_size(VBYTES)));
  static constexpr int lanes = VBYTES / 8;
  static constexpr int log_lanes = VBYTES == 64 ? 3 : 2;
  static constexpr int block_bits = 12;
};

template <typename T>
inline typename V<T>::vec load(const T* p) {
  return *reinterpret_cast<const typename V<T>::uvec*>(p);
}
template <typename T>
inline void store(T* p, typename V<T>::vec v) {
  *reinterpret_cast<typename V<T>::uvec*>(p) = v;
}
// a in every lane (one broadcast: a lane-by-lane fill compiles to masked inserts)
template <typename T>
inline typename V<T>::vec splat(T a) {
  return a - typename V<T>::vec{};
}

// Per-bit coefficients: y0 = m00 a + m01 b, y1 = m10 a + m11 b for the pair (a, b) = (bit 0,
// bit 1).
template <typename T>
struct Coef {
  T m00, m01, m10, m11;
};

// Coefficients of R consecutive bits as splatted vectors.
template <typename T, int R>
struct Splat {
  typename V<T>::vec m00[R], m01[R], m10[R], m11[R];
  explicit Splat(const Coef<T>* c) {
    for (int q = 0; q < R; ++q) {
      m00[q] = splat<T>(c[q].m00);
      m01[q] = splat<T>(c[q].m01);
      m10[q] = splat<T>(c[q].m10);
      m11[q] = splat<T>(c[q].m11);
    }
  }
};

// One radix-2^R butterfly on the vectors at ptr + k * s, k < 2^R (bit q of k <-> bit p + q).
// Every M is column-stochastic (m00 = 1 - m10, m11 = 1 - m01), so a pair (a, b) becomes
// (a - t, b + t) with t = m10 a - m01 b: two multiply-adds and two adds, where the general
// form needs four multiply-adds (the FMA ports are the bottleneck). With SCALED, the last
// bit carries the factor c and uses the general form.
template <typename T, int R, bool SCALED>
inline void radix(T* ptr, size_t s, const Splat<T, R>& c) {
  typedef typename V<T>::vec vec;
  constexpr int K = 1 << R;
  vec a[K];
  for (int k = 0; k < K; ++k) a[k] = load<T>(ptr + k * s);
  for (int q = 0; q < R; ++q) {
    for (int k = 0; k < K; ++k) {
      if (k & (1 << q)) continue;
      const vec x0 = a[k], x1 = a[k | (1 << q)];
      if (SCALED && q == R - 1) {
        a[k] = c.m00[q] * x0 + c.m01[q] * x1;
        a[k | (1 << q)] = c.m10[q] * x0 + c.m11[q] * x1;
      } else {
        const vec t = c.m10[q] * x0 - c.m01[q] * x1;
        a[k] = x0 - t;
        a[k | (1 << q)] = x1 + t;
      }
    }
  }
  for (int k = 0; k < K; ++k) store<T>(ptr + k * s, a[k]);
}

// Bits p..p+R-1 (stride s = 2^p) over groups: ptr = origin + hi * (s << R) + lo * lo_stride,
// then the W contiguous entries (a multiple of the lane count) from each ptr.
template <typename T, int R, bool SCALED>
void sweep_r(T* origin, int p, size_t nhi, size_t nlo, size_t lo_stride, size_t W,
             const Coef<T>* coef) {
  const size_t s = size_t(1) << p;
  constexpr int lanes = V<T>::lanes;
  const Splat<T, R> c(coef);
  for (size_t hi = 0; hi < nhi; ++hi) {
    for (size_t lo = 0; lo < nlo; ++lo) {
      T* base = origin + hi * (s << R) + lo * lo_stride;
      for (size_t j = 0; j < W; j += lanes) radix<T, R, SCALED>(base + j, s, c);
    }
  }
}

template <typename T, bool SCALED>
void sweep(T* origin, int p, int r, size_t nhi, size_t nlo, size_t lo_stride, size_t W,
           const Coef<T>* c) {
  if (r == 3) {
    sweep_r<T, 3, SCALED>(origin, p, nhi, nlo, lo_stride, W, c);
  } else if (r == 2) {
    sweep_r<T, 2, SCALED>(origin, p, nhi, nlo, lo_stride, W, c);
  } else {
    sweep_r<T, 1, SCALED>(origin, p, nhi, nlo, lo_stride, W, c);
  }
}

// Bits [p0, p1) of a contiguous region whose bit q (q >= row_bits) is the stride 2^q; every
// run of 2^row_bits entries is handled W = 2^row_bits at a time. Bit q uses coef[q + shift];
// with scaled_last, the last bit (p1 - 1) carries the factor c.
template <typename T>
void bits(T* origin, int p0, int p1, int row_bits, const Coef<T>* coef, int shift,
          bool scaled_last) {
  const size_t W = size_t(1) << row_bits;
  int p = p0;
  while (p < p1) {
    const int left = p1 - p;
    const int r = left >= 3 ? 3 : left;
    const size_t nhi = size_t(1) << (p1 - p - r);
    const size_t nlo = size_t(1) << (p - row_bits);
    if (scaled_last && p + r == p1) {
      sweep<T, true>(origin, p, r, nhi, nlo, W, W, coef + p + shift);
    } else {
      sweep<T, false>(origin, p, r, nhi, nlo, W, W, coef + p + shift);
    }
    p += r;
  }
}

}  // namespace

template <typename T>
void kron_apply(const T* x, const T* w, bool weighted, const T* M, int L, T scale, bool normalize,
           T* y, T* total) {
  typedef typename V<T>::vec vec;
  typedef typename V<T>::ivec ivec;
  constexpr int lanes = V<T>::lanes;
  constexpr int LB = V<T>::log_lanes;
  const size_t n = size_t(1) << L;

  std::vector<Coef<T>> coef(L);
  for (int p = 0; p < L; ++p) {
    const T* m = M + 4 * (L - 1 - p);
    coef[p] = Coef<T>{m[0], m[1], m[2], m[3]};
  }

  if (L < LB) {  // a handful of entries: plain loops
    double S = 0;
    for (size_t i = 0; i < n; ++i) {
      y[i] = weighted ? w[i] * x[i] : x[i];
      S += y[i];
    }
    for (int p = 0; p < L; ++p) {
      const size_t s = size_t(1) << p;
      for (size_t i = 0; i < n; ++i) {
        if (i & s) continue;
        const T a = y[i], b = y[i + s];
        y[i] = coef[p].m00 * a + coef[p].m01 * b;
        y[i + s] = coef[p].m10 * a + coef[p].m11 * b;
      }
    }
    const T c = normalize ? T(scale / S) : scale;
    for (size_t i = 0; i < n; ++i) y[i] *= c;
    *total = T(S);
    return;
  }

  // in-register bits 0..LB-1: y = same * v + other * shuffle(v, lane ^ 2^p)
  vec same[LB], other[LB];
  ivec perm[LB];
  for (int p = 0; p < LB; ++p) {
    for (int i = 0; i < lanes; ++i) {
      const bool hi = (i >> p) & 1;
      same[p][i] = hi ? coef[p].m11 : coef[p].m00;
      other[p][i] = hi ? coef[p].m10 : coef[p].m01;
      perm[p][i] = i ^ (1 << p);
    }
  }

  const int KA = L < V<T>::block_bits ? L : V<T>::block_bits;
  const size_t bs = size_t(1) << KA;
  const long nblk = long(n >> KA);
  std::vector<double> sums(nblk);

#pragma omp parallel for schedule(static) num_threads(team_size())
  for (long b = 0; b < nblk; ++b) {
    const T* xb = x + size_t(b) * bs;
    const T* wb = weighted ? w + size_t(b) * bs : nullptr;
    T* yb = y + size_t(b) * bs;
    // the block sum: vector partial sums over runs of 32 vectors, flushed into doubles
    double acc[lanes] = {0};
    for (size_t i0 = 0; i0 < bs; i0 += 32 * lanes) {
      const size_t i1 = i0 + 32 * lanes < bs ? i0 + 32 * lanes : bs;
      vec part = splat<T>(T(0));
      for (size_t i = i0; i < i1; i += lanes) {
        vec v = load<T>(xb + i);
        if (weighted) v = v * load<T>(wb + i);
        part += v;
        for (int p = 0; p < LB; ++p) v = same[p] * v + other[p] * __builtin_shuffle(v, perm[p]);
        store<T>(yb + i, v);
      }
      for (int k = 0; k < lanes; ++k) acc[k] += double(part[k]);
    }
    // bits LB..KA-1: rows of one vector each (stride 2^LB), so every run is W = lanes long
    if (KA > LB) bits<T>(yb, LB, KA, LB, coef.data(), 0, false);
    double s = 0;
    for (int k = 0; k < lanes; ++k) s += acc[k];
    sums[b] = s;
  }
  double S = 0;
  for (long b = 0; b < nblk; ++b) S += sums[b];
  *total = T(S);
  const T c = normalize ? T(double(scale) / S) : scale;

  if (KA == L) {
    if (c != T(1)) {
      for (size_t i = 0; i < n; ++i) y[i] *= c;
    }
    return;
  }
  // fold c into the last bit
  coef[L - 1] = Coef<T>{c * coef[L - 1].m00, c * coef[L - 1].m01, c * coef[L - 1].m10,
                        c * coef[L - 1].m11};

  // pass B: bits [KA, L) in groups of at most GB bits. A tile is 2^nb rows (stride 2^p0,
  // a power of two: in place they would all fall in the same cache sets) of W columns; it is
  // copied into a contiguous buffer (L2-resident), transformed there, and copied back.
  const int rest = L - KA;
  constexpr int GB = 11;
  const int ngroups = (rest + GB - 1) / GB;
  int p0 = KA;
  for (int g = 0; g < ngroups; ++g) {
    const int nb = (rest - (p0 - KA) + (ngroups - g) - 1) / (ngroups - g);
    const int p1 = p0 + nb;
    const size_t C = size_t(1) << p0;
    int wb = 16 - nb;  // tiles of <= 2^16 entries (256 KiB in float32), rows >= 64 entries
    if (wb < 6) wb = 6;
    if (wb > 8) wb = 8;
    if (wb > p0) wb = p0;
    const size_t W = size_t(1) << wb, R = size_t(1) << nb;
    const size_t ncol = C / W;
    const long ntiles = long((n >> p1) * ncol);
#pragma omp parallel num_threads(team_size())
    {
      std::vector<T> tile_store(R * W + 64 / sizeof(T));  // room to align to 64 bytes
      T* tile = tile_store.data();
      while (reinterpret_cast<uintptr_t>(tile) % 64) ++tile;
#pragma omp for schedule(static)
      for (long t = 0; t < ntiles; ++t) {
        const size_t o = size_t(t) / ncol, cc = size_t(t) % ncol;
        T* origin = y + (o << p1) + cc * W;
        for (size_t r = 0; r < R; ++r) {
          std::memcpy(tile + r * W, origin + r * C, W * sizeof(T));
        }
        bits<T>(tile, wb, wb + nb, wb, coef.data(), p0 - wb, p1 == L);
        for (size_t r = 0; r < R; ++r) {
          std::memcpy(origin + r * C, tile + r * W, W * sizeof(T));
        }
      }
    }
    p0 = p1;
  }
}


template void kron_apply<float>(const float*, const float*, bool, const float*, int, float, bool,
                                float*, float*);
template void kron_apply<double>(const double*, const double*, bool, const double*, int, double,
                                 bool, double*, double*);

}  // namespace quasirl
