// A small persistent thread pool for batch calls that run with the GIL released.
//
// Fork-safe: the pool remembers the pid that created it, and a forked child (a reward worker
// started by multiprocessing) gets a fresh pool instead of the parent's dead threads.
// Concurrent callers do not queue behind each other: a caller that finds the pool busy runs its
// batch on its own thread.
#pragma once

#include <cstdint>
#include <functional>

namespace rf {

// Runs fn(i) for i in [0, n) on up to num_threads threads (0 = all hardware threads), the calling
// thread included. Rethrows the first exception fn raised, after all workers stopped.
void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t)>& fn);
int hardware_threads();

}  // namespace rf
