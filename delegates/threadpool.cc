// See threadpool.h.
#include "threadpool.h"

#include <algorithm>

namespace wbmm {

namespace {
// About 20-50 microseconds of polling before a worker goes to sleep.
constexpr int kSpinIterations = 20000;
}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  workers_.reserve(num_threads_ - 1);
  for (int t = 1; t < num_threads_; ++t) workers_.emplace_back(&ThreadPool::WorkerLoop, this, t);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::DrainChunks(int thread_index) {
  for (;;) {
    const int64_t chunk = next_chunk_.fetch_add(1, std::memory_order_relaxed);
    const int64_t begin = chunk * job_chunk_;
    if (begin >= job_n_) return;
    job_fn_(job_context_, begin, std::min(job_n_, begin + job_chunk_), thread_index);
  }
}

void ThreadPool::Run(int64_t n, RangeFn fn, void* context) {
  if (n <= 0) return;
  if (num_threads_ == 1 || n == 1 || running_) {
    fn(context, 0, n, 0);
    return;
  }
  running_ = true;
  job_fn_ = fn;
  job_context_ = context;
  job_n_ = n;
  // A few chunks per thread balance uneven tiles (edge windows) without
  // making the shared counter hot.
  job_chunk_ = std::max<int64_t>(1, n / (int64_t(num_threads_) * 4));
  next_chunk_.store(0, std::memory_order_relaxed);
  busy_workers_.store(num_threads_ - 1, std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  DrainChunks(0);
  while (busy_workers_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  running_ = false;
}

void ThreadPool::WorkerLoop(int thread_index) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t now = generation_.load(std::memory_order_acquire);
    for (int spin = 0; now == seen && spin < kSpinIterations; ++spin) {
      if ((spin & 255) == 255) std::this_thread::yield();
      now = generation_.load(std::memory_order_acquire);
    }
    if (now == seen) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
      now = generation_.load(std::memory_order_acquire);
    }
    seen = now;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (stopping_) return;
    }
    DrainChunks(thread_index);
    busy_workers_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

}  // namespace wbmm
