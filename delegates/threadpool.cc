// See threadpool.h.
#include "threadpool.h"

#include <algorithm>
#include <chrono>

namespace wbmm {

namespace {
// Chunk index of a cursor whose job is being set up: no chunk can be claimed.
constexpr uint64_t kClosedChunk = 0xFFFFFFFFu;

uint32_t EpochOf(uint64_t cursor) { return uint32_t(cursor >> 32); }
}  // namespace

ThreadPool::ThreadPool(int num_threads, int spin_us) : num_threads_(std::max(1, num_threads)), spin_us_(std::max(0, spin_us)) {
  workers_.reserve(num_threads_ - 1);
  for (int t = 1; t < num_threads_; ++t) workers_.emplace_back(&ThreadPool::WorkerLoop, this, t);
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_.store(true);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::DrainChunks(uint32_t epoch, int thread_index) {
  uint64_t cursor = cursor_.load(std::memory_order_acquire);
  for (;;) {
    if (EpochOf(cursor) != epoch) return;
    const uint64_t chunk_bits = cursor & 0xFFFFFFFFu;
    if (chunk_bits == kClosedChunk) return;
    const int64_t chunk = int64_t(chunk_bits);
    if (chunk >= job_chunks_.load(std::memory_order_relaxed)) return;
    if (!cursor_.compare_exchange_weak(cursor, cursor + 1, std::memory_order_acq_rel, std::memory_order_acquire))
      continue;
    const int64_t begin = chunk * job_chunk_;
    job_fn_(job_context_, begin, std::min(job_n_, begin + job_chunk_), thread_index);
    if (chunks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == job_chunks_.load(std::memory_order_relaxed) &&
        thread_index != 0) {
      std::lock_guard<std::mutex> lock(done_mutex_);  // pairs with the caller's wait below
      done_.notify_one();
    }
    cursor = cursor_.load(std::memory_order_acquire);
  }
}

void ThreadPool::Run(int64_t n, RangeFn fn, void* context) {
  if (n <= 0) return;
  if (num_threads_ == 1 || n == 1 || running_.exchange(true, std::memory_order_acquire)) {
    fn(context, 0, n, 0);
    return;
  }
  // Close the previous epoch before touching the job's fields: a worker that
  // read the old cursor (its job finished, chunk index past its end) could
  // otherwise see the new, larger chunk count, win its CAS on the old epoch
  // and run -- and count -- a chunk of this job twice, so that chunks_done_
  // never equals job_chunks_ and the caller waits forever. Odd epochs mean
  // "being set up"; workers only start on even ones.
  const uint32_t setup_epoch = EpochOf(cursor_.load(std::memory_order_relaxed)) + 1;
  cursor_.store((uint64_t(setup_epoch) << 32) | kClosedChunk, std::memory_order_seq_cst);
  job_fn_ = fn;
  job_context_ = context;
  job_n_ = n;
  // 16 chunks per thread balance uneven tiles (edge windows, a thread slowed
  // or descheduled on a shared machine) without making the counter hot: w=7
  // 56x56x96 on 2 threads, the caller's wait for the worker's last chunk was
  // 0-22 us median, 48-104 us p90 with 4 chunks per thread; 3-5 and 15-21 us
  // with 16 (C++ harness, 300 runs).
  job_chunk_ = std::max<int64_t>(1, n / (int64_t(num_threads_) * 16));
  const int64_t chunks = (n + job_chunk_ - 1) / job_chunk_;
  job_chunks_.store(chunks, std::memory_order_relaxed);
  chunks_done_.store(0, std::memory_order_relaxed);
  const uint32_t epoch = setup_epoch + 1;
  {
    std::lock_guard<std::mutex> lock(mutex_);  // pairs with the workers' wait
    cursor_.store(uint64_t(epoch) << 32, std::memory_order_release);
  }
  wake_.notify_all();
  DrainChunks(epoch, 0);
  // Chunks claimed by workers are still running: poll briefly (they usually
  // finish within microseconds), then sleep instead of burning a core that a
  // descheduled worker may need.
  for (int spin = 0; spin < 64 && chunks_done_.load(std::memory_order_acquire) != chunks; ++spin)
    std::this_thread::yield();
  if (chunks_done_.load(std::memory_order_acquire) != chunks) {
    std::unique_lock<std::mutex> lock(done_mutex_);
    done_.wait(lock, [&] { return chunks_done_.load(std::memory_order_acquire) == chunks; });
  }
  running_.store(false, std::memory_order_release);
}

void ThreadPool::WorkerLoop(int thread_index) {
  uint32_t seen = 0;
  auto is_new_job = [&](uint32_t epoch) { return epoch != seen && (epoch & 1u) == 0; };
  for (;;) {
    uint32_t now = EpochOf(cursor_.load(std::memory_order_acquire));
    // Poll for the next job for spin_us (the next WBMM layer of an invoke,
    // or the next invoke of a back-to-back benchmark, usually comes sooner),
    // then sleep: a worker polling longer only burns the core's energy. Each
    // poll yields the CPU rather than spinning on a pause instruction, so the
    // polling worker steps aside for any thread that could run there -- in a
    // model, XNNPACK's pool running the layers between ours. Stock
    // ConvNeXtTiny with claim_depthwise, 2 threads, against XNNPACK alone:
    // 1.45x with pause-polling, 1.59x yielding, same as spin_us=0 (medians of
    // 20 and 30 interleaved invokes).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::microseconds(spin_us_);
    for (int spin = 1; !is_new_job(now) && !stopping_.load(std::memory_order_relaxed); ++spin) {
      if ((spin & 63) == 0 && std::chrono::steady_clock::now() > give_up) break;
      std::this_thread::yield();
      now = EpochOf(cursor_.load(std::memory_order_acquire));
    }
    if (!is_new_job(now)) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] {
        return stopping_.load() || is_new_job(EpochOf(cursor_.load(std::memory_order_acquire)));
      });
      now = EpochOf(cursor_.load(std::memory_order_acquire));
    }
    if (stopping_.load()) return;
    seen = now;
    DrainChunks(now, thread_index);
  }
}

}  // namespace wbmm
