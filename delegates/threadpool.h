// A fixed-size pool that splits an index range [0, n) over num_threads
// threads (the calling thread is one of them), for the kernels' tile loops.
//
// Why not std::async or OpenMP: Invoke must not allocate, and the library must
// not pull a runtime (libgomp) into benchmark_model on Android. ParallelFor
// takes the work by reference and type-erases it through a function pointer,
// so no std::function and no heap. Idle workers poll for the next job for
// spin_us (default 1 ms) before sleeping on a condition variable, because a
// WBMM layer takes well under a millisecond and waking a sleeping worker
// costs tens of microseconds (measured here: 51-57 us median from notify to
// the worker's first chunk, on 0.25-0.3 ms of 2-thread work). XNNPACK's
// pthreadpool also polls before its futex wait (1,000,000 pause/yield
// iterations: a millisecond or more). Each poll yields the CPU (sched_yield),
// so a polling worker never keeps other threads off its core; spin_us=0 saves
// the polling energy at the cost of that wake-up per layer.
//
// Not for: nested parallelism, or several callers at once: while one
// ParallelFor runs, another (nested, or from a second interpreter sharing the
// delegate) runs inline on its own thread as thread_index 0.

#ifndef WBMM_DELEGATES_THREADPOOL_H_
#define WBMM_DELEGATES_THREADPOOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace wbmm {

class ThreadPool {
 public:
  // The delegate option spin_us defaults to this (options.cc).
  static constexpr int kDefaultSpinMicros = 1000;
  // spin_us: how long an idle worker polls for the next job before it sleeps.
  explicit ThreadPool(int num_threads, int spin_us = kDefaultSpinMicros);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end, thread_index) on disjoint chunks covering [0, n);
  // thread_index < num_threads() identifies per-thread scratch. Returns when
  // every chunk is done.
  template <class Fn>
  void ParallelFor(int64_t n, Fn& fn) {
    Run(n, &Trampoline<Fn>, &fn);
  }

 private:
  using RangeFn = void (*)(void* context, int64_t begin, int64_t end, int thread_index);
  template <class Fn>
  static void Trampoline(void* context, int64_t begin, int64_t end, int thread_index) {
    (*static_cast<Fn*>(context))(begin, end, thread_index);
  }
  void Run(int64_t n, RangeFn fn, void* context);
  void WorkerLoop(int thread_index);
  // Runs chunks of job `epoch` until none is left; false if that job is over.
  void DrainChunks(uint32_t epoch, int thread_index);

  const int num_threads_;
  const int spin_us_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::mutex done_mutex_;
  std::condition_variable done_;  // the caller sleeps here once it has spun for a while
  std::atomic<bool> stopping_{false};
  std::atomic<bool> running_{false};  // a second caller (nested, or another interpreter) runs inline
  // (epoch << 32) | next chunk index. A worker claims a chunk with a CAS that
  // also checks the epoch, so a worker waking late for a finished job never
  // touches the next job's fields, and the caller waits only for chunks that
  // were actually claimed, never for a worker that is not scheduled yet.
  std::atomic<uint64_t> cursor_{0};
  std::atomic<int64_t> chunks_done_{0};
  // The current job (written before cursor_ publishes its epoch).
  RangeFn job_fn_ = nullptr;
  void* job_context_ = nullptr;
  int64_t job_n_ = 0;
  int64_t job_chunk_ = 1;
  std::atomic<int64_t> job_chunks_{0};  // read by workers before they win a chunk
};

}  // namespace wbmm

#endif  // WBMM_DELEGATES_THREADPOOL_H_
