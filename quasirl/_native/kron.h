// Eigen's mutation operator on 2^L genotypes (kron.cc).
#pragma once

namespace quasirl {

// y = c Q (w * x) over n = 2^L entries, Q = M_0 (x) ... (x) M_{L-1} (M [L, 2, 2], M[j][new][old],
// site j = bit L-1-j of the index), c = scale / (normalize ? S : 1), *total = S = sum(w * x)
// (w = 1 unless weighted). T is float or double.
template <typename T>
void kron_apply(const T* x, const T* w, bool weighted, const T* M, int L, T scale,
                bool normalize, T* y, T* total);

}  // namespace quasirl
