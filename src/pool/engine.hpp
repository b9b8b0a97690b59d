// Which engine runs a pool's workers, and the seam through which the MPI backend (a separate
// library, src/mpi/) plugs in when a program links it. Not API.
#pragma once

#include <signal.h>

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mproc/detail/pool_core.hpp"

namespace mproc::detail {

/// Buffers of sent chunks kept for the next chunks (PoolEngine::take_buffer): freed, the large
/// ones made glibc trim the heap after every map and fault every page in again for the next one
/// (a map of 1 MiB strings on the mpi context ran at a third of its speed). One buffer over the
/// budget is kept alone, while chunks that large keep coming (apply of a 256 MiB argument in a
/// loop: fresh memory costs a fault and a zeroing per page), and let go when a smaller chunk has
/// used it.
class SpareBuffers {
 public:
  void put(std::string&& bytes);
  /// A kept buffer (its capacity; empty if none).
  std::string take();

 private:
  static constexpr std::size_t kMin = 64 * 1024, kBytes = 64u << 20, kCount = 64;
  std::mutex mu_;
  std::vector<std::string> spare_;
  std::size_t bytes_ = 0;
};

/// The chunks no worker has taken yet, and the bytes they hold: a map's writer waits while
/// those are over kBudget (PoolEngine::wait_for_room), so that a large map is written about as
/// fast as it is sent: its chunk buffers come back for the next chunks, and a large input is not
/// copied into chunks all at once. Used under the engine's mutex, which wait_for_room's lock holds.
class ChunkQueue {
 public:
  static constexpr std::size_t kBudget = 16u << 20;
  bool empty() const noexcept { return q_.empty(); }
  Chunk& front() { return q_.front(); }
  void push_back(Chunk c);
  void push_front(Chunk c);
  Chunk pop_front();
  /// Removes job's chunks; true when any were there.
  bool erase_job(const JobBase* job);
  std::deque<Chunk> take_all();
  /// Until the queue is within budget or stop() (checked on every wake-up, see notify).
  template <class Stop>
  void wait_for_room(std::unique_lock<std::mutex>& lock, Stop stop) {
    ++waiters_;
    room_.wait(lock, [&] { return bytes_ <= kBudget || stop(); });
    --waiters_;
  }
  /// Wakes the writers waiting for room, to look at their stop() again.
  void notify() {
    if (waiters_) room_.notify_all();
  }

 private:
  std::deque<Chunk> q_;
  std::size_t bytes_ = 0;
  int waiters_ = 0;
  std::condition_variable room_;
};

/// What every engine has: the chunks no worker has taken yet, the pool's state, and a handler
/// thread that wake() tells to look again.
class QueueEngine : public PoolEngine {
 public:
  std::string take_buffer() override { return spares.take(); }
  void submit(std::vector<Chunk> chunks) override;
  bool cancel(const JobBase* job) override;
  void cancel_all(std::exception_ptr error) override;
  void close() override;
  void terminate(int signal) override;
  void join() override;
  void wait_for_room() override;

 protected:
  virtual void wake() = 0;
  /// Tells c's job; a job that throws is not the pool's problem.
  static void fail(Chunk& c, std::exception_ptr e);
  /// The pool takes no more tasks, and every queued one fails with e (the first e stays).
  void set_broken(std::exception_ptr e);

  mutable std::mutex mu;  // guards queue, closed, terminating, terminate_signal, broken
  ChunkQueue queue;
  bool closed = false;
  bool terminating = false;
  int terminate_signal = SIGTERM;
  std::exception_ptr broken;  // e.g. the initializer failed, or a crash in break_on_crash mode
  std::thread handler;
  SpareBuffers spares;  // the bytes of chunks their worker has, for the next ones
};

/// "exited with code 3", "killed by signal 9": how a worker ended, for error messages.
std::string describe_exit(int code);

/// From this size a chunk travels to a local worker in shared memory (MPROC_SHM_THRESHOLD, when
/// set, wins).
std::size_t chunk_shm_threshold();

/// Workers that are processes on this machine, one connection each.
std::unique_ptr<PoolEngine> make_local_engine(PoolConfig config);

/// What libmproc_mpi registers (mproc/mpi.hpp pulls it into a program): the part of
/// mproc::init that gives MPI ranks their roles, and the engine of the "mpi" context.
struct MpiBackend {
  /// Called at the end of mproc::init. Returns on rank 0 (or without mpirun); a worker rank
  /// serves pools here and exits.
  void (*init)(int argc, char** argv);
  std::unique_ptr<PoolEngine> (*make_engine)(PoolConfig config);
};
void set_mpi_backend(const MpiBackend* backend) noexcept;
/// Null when the program did not link the MPI backend.
const MpiBackend* mpi_backend() noexcept;

}  // namespace mproc::detail
