// What the native kernels take from the machine: large buffers (2 MB pages, kept between
// calls up to a limit) and the OpenMP team that runs them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <new>

#include <sys/mman.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace quasirl {

// Ask for 2 MB pages over the 2 MB-aligned part of [p, p + bytes) (an output buffer XLA
// allocated and nothing has touched yet)
inline void hint_huge(void* p, size_t bytes) {
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
  static Pool& get();  // memory.cc: one pool for the whole library
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
  Pool();
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

// The number of OpenMP threads the kernels run with: set_team_size(n) (n >= 1; 0 restores the
// default), else OpenMP's default (OMP_NUM_THREADS, or one per core). Read once per call.
int team_size();
void set_team_size(int n);

// this OpenMP thread's number, the team's size and the thread's share [s0, s1) of n states
struct Share {
  int tid, nth;
  int64_t s0, s1;
};
inline Share share_of(int64_t n) {
  int tid = 0, nth = 1;
#ifdef _OPENMP
  tid = omp_get_thread_num();
  nth = omp_get_num_threads();
#endif
  return {tid, nth, n * tid / nth, n * (tid + 1) / nth};
}

}  // namespace quasirl
