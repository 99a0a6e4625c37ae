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

// Runs helper_job on up to num_threads - 1 pool threads while the calling thread runs main_job,
// and returns when all are done. main_job must be able to finish the whole work alone: when the
// pool is busy (another caller) or num_threads <= 1, only main_job runs. Exceptions of main_job
// are rethrown after the helpers stopped; helper_job must not throw.
void run_with_helpers(int num_threads, const std::function<void()>& helper_job,
                      const std::function<void()>& main_job);

}  // namespace rf
