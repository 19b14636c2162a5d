// The buffer pool and the team size (memory.h).
#include "memory.h"

#include <atomic>

namespace quasirl {

Pool& Pool::get() {
  static Pool pool;
  return pool;
}

Pool::Pool() {
  const char* env = std::getenv("QUASIRL_NATIVE_POOL");
  limit_ = env != nullptr ? size_t(std::strtoull(env, nullptr, 10)) : (size_t(4) << 30);
}

namespace {
std::atomic<int> team{0};
}  // namespace

int team_size() {
  const int n = team.load(std::memory_order_relaxed);
  if (n > 0) return n;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

void set_team_size(int n) { team.store(n > 0 ? n : 0, std::memory_order_relaxed); }

}  // namespace quasirl
