#include "thread_pool.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace rf {

namespace {

class Pool {
 public:
  explicit Pool(pid_t pid) : pid_(pid) {}
  pid_t pid() const { return pid_; }
  std::mutex& call_mutex() { return call_mu_; }

  // Caller holds call_mutex(). Runs job on `extra` workers and main_job on the caller.
  void run(int extra, const std::function<void()>& job, const std::function<void()>& main_job) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      while (static_cast<int>(workers_.size()) < extra) {
        const int idx = static_cast<int>(workers_.size());
        workers_.emplace_back([this, idx] { loop(idx); });
      }
      job_ = &job;
      want_ = extra;
      active_ = extra;
      ++generation_;
    }
    cv_.notify_all();
    std::exception_ptr error;
    try {
      main_job();
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::unique_lock<std::mutex> lk(mu_);
      done_cv_.wait(lk, [&] { return active_ == 0; });
      job_ = nullptr;
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  void loop(int idx) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void()>* job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return generation_ != seen && idx < want_; });
        seen = generation_;
        job = job_;
      }
      (*job)();
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  pid_t pid_;
  std::mutex call_mu_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;  // never joined: the pool lives for the process
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  int want_ = 0;
  int active_ = 0;
};

std::mutex g_pool_mu;
Pool* g_pool = nullptr;  // intentionally leaked (and replaced, not freed, after a fork)

Pool& pool() {
  std::lock_guard<std::mutex> lk(g_pool_mu);
  const pid_t pid = getpid();
  if (g_pool == nullptr || g_pool->pid() != pid) g_pool = new Pool(pid);
  return *g_pool;
}

}  // namespace

int hardware_threads() {
  const unsigned h = std::thread::hardware_concurrency();
  return h == 0 ? 1 : static_cast<int>(h);
}

void parallel_for(int64_t n, int num_threads, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  int threads = num_threads <= 0 ? hardware_threads() : num_threads;
  threads = static_cast<int>(std::min<int64_t>(threads, n));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mu;
  // Small chunks balance uneven texts; the atomic is touched once per chunk, not per item.
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(64, n / (threads * 8)));
  std::function<void()> job = [&] {
    for (;;) {
      const int64_t b = next.fetch_add(chunk);
      if (b >= n) return;
      const int64_t e = std::min(n, b + chunk);
      try {
        for (int64_t i = b; i < e; ++i) fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lk(error_mu);
        if (!error) error = std::current_exception();
        next.store(n);
        return;
      }
    }
  };
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.call_mutex(), std::try_to_lock);
  if (threads <= 1 || !lk.owns_lock()) job();
  else p.run(threads - 1, job, job);
  if (error) std::rethrow_exception(error);
}

void run_with_helpers(int num_threads, const std::function<void()>& helper_job,
                      const std::function<void()>& main_job) {
  const int threads = num_threads <= 0 ? hardware_threads() : num_threads;
  if (threads <= 1) return main_job();
  Pool& p = pool();
  std::unique_lock<std::mutex> lk(p.call_mutex(), std::try_to_lock);
  if (!lk.owns_lock()) return main_job();
  p.run(threads - 1, helper_job, main_job);
}

}  // namespace rf
