#include "pool/engine.hpp"

#include <signal.h>

#include <algorithm>
#include <atomic>
#include <string>

#include "mproc/errors.hpp"
#include "process_state.hpp"

namespace mproc::detail {
namespace {
std::atomic<const MpiBackend*> g_mpi{nullptr};
}  // namespace

void set_mpi_backend(const MpiBackend* backend) noexcept { g_mpi.store(backend, std::memory_order_release); }
const MpiBackend* mpi_backend() noexcept { return g_mpi.load(std::memory_order_acquire); }

void ChunkQueue::push_back(Chunk c) {
  bytes_ += c.size();
  q_.push_back(std::move(c));
}

void ChunkQueue::push_front(Chunk c) {
  bytes_ += c.size();
  q_.push_front(std::move(c));
}

Chunk ChunkQueue::pop_front() {
  Chunk c = std::move(q_.front());
  q_.pop_front();
  bytes_ -= c.size();
  if (bytes_ <= kBudget) notify();
  return c;
}

bool ChunkQueue::erase_job(const JobBase* job) {
  std::size_t bytes = 0;
  auto removed = std::erase_if(q_, [&](const Chunk& c) {
    if (c.job.get() != job) return false;
    bytes += c.size();
    return true;
  });
  bytes_ -= bytes;
  notify();
  return removed != 0;
}

std::deque<Chunk> ChunkQueue::take_all() {
  std::deque<Chunk> out;
  out.swap(q_);
  bytes_ = 0;
  notify();
  return out;
}

void QueueEngine::submit(std::vector<Chunk> chunks) {
  {
    std::lock_guard lock(mu);
    if (broken) std::rethrow_exception(broken);
    if (closed || terminating) throw Error("the pool is closed: no new tasks");
    for (auto& c : chunks) queue.push_back(std::move(c));
  }
  wake();
}

bool QueueEngine::cancel(const JobBase* job) {
  std::lock_guard lock(mu);
  return queue.erase_job(job);
}

void QueueEngine::cancel_all(std::exception_ptr error) {
  std::deque<Chunk> pending;
  {
    std::lock_guard lock(mu);
    pending = queue.take_all();
  }
  for (auto& c : pending) fail(c, error);
}

void QueueEngine::close() {
  {
    std::lock_guard lock(mu);
    closed = true;
    queue.notify();
  }
  wake();
}

void QueueEngine::terminate(int signal) {
  {
    std::lock_guard lock(mu);
    closed = true;
    terminating = true;
    terminate_signal = signal;
    queue.notify();
  }
  wake();
}

void QueueEngine::wait_for_room() {
  if (handler.get_id() == std::this_thread::get_id()) return;  // it empties the queue: it cannot wait for that
  std::unique_lock lock(mu);
  queue.wait_for_room(lock, [&] { return closed || terminating || broken; });
}

void QueueEngine::join() {
  {
    std::lock_guard lock(mu);
    if (!closed) throw Error("join() needs close() or terminate() first");
  }
  if (handler.joinable()) {
    if (handler.get_id() == std::this_thread::get_id()) throw Error("join() from a result callback would wait for itself");
    handler.join();
  }
}

void QueueEngine::fail(Chunk& c, std::exception_ptr e) {
  if (!c.job) return;
  try {
    c.job->chunk_failed(c.index, e);
  } catch (...) {
  }
}

void QueueEngine::set_broken(std::exception_ptr e) {
  std::deque<Chunk> pending;
  {
    std::lock_guard lock(mu);
    if (!broken) broken = e;
    pending = queue.take_all();
  }
  for (auto& c : pending) fail(c, e);
}

void SpareBuffers::put(std::string&& bytes) {
  if (bytes.capacity() < kMin) return;
  std::lock_guard lock(mu_);
  if (spare_.size() >= kCount) return;
  if (bytes_ + bytes.capacity() > kBytes && (!spare_.empty() || bytes.size() <= kBytes)) return;
  bytes_ += bytes.capacity();
  spare_.push_back(std::move(bytes));
}

std::string SpareBuffers::take() {
  std::lock_guard lock(mu_);
  if (spare_.empty()) return {};
  std::string b = std::move(spare_.back());
  spare_.pop_back();
  bytes_ -= b.capacity();
  return b;
}

std::string describe_exit(int code) {
  if (code >= 0) return "exited with code " + std::to_string(code);
  std::string s = "killed by signal " + std::to_string(-code);
  if (-code == SIGXCPU) s += " (SIGXCPU: over its cpu_seconds limit)";
  return s;
}

int default_workers(const Context& ctx) { return ctx.method_id() == static_cast<int>(Method::mpi) ? 0 : cpu_count(); }

PoolCore::PoolCore(PoolConfig config) {
  if (!config.context) config.context = get_context();
  if (config.context->method_id() == static_cast<int>(Method::mpi)) {
    const MpiBackend* mpi = mpi_backend();
    if (!mpi) throw_mpi_unavailable();
    impl_ = mpi->make_engine(std::move(config));
  } else {
    impl_ = make_local_engine(std::move(config));
  }
}

PoolCore::~PoolCore() {
  impl_->terminate(SIGTERM);
  impl_->join();
}

void PoolCore::submit(std::vector<Chunk> chunks) { impl_->submit(std::move(chunks)); }
bool PoolCore::cancel(const JobBase* job) { return impl_->cancel(job); }
void PoolCore::cancel_all(std::exception_ptr error) { impl_->cancel_all(std::move(error)); }
void PoolCore::close() { impl_->close(); }
void PoolCore::terminate(int signal) { impl_->terminate(signal); }
void PoolCore::join() { impl_->join(); }
int PoolCore::processes() const noexcept { return impl_->processes(); }
std::vector<int> PoolCore::worker_pids() const { return impl_->worker_pids(); }
std::string PoolCore::take_buffer() { return impl_->take_buffer(); }
void PoolCore::wait_for_room() { impl_->wait_for_room(); }
void PoolCore::tend(const JobBase* job) { impl_->tend(job); }

}  // namespace mproc::detail
