// MPI for mproc: one initialisation per process, one lock around every MPI call mproc makes,
// messages received whole, and polling that backs off (MPI has no descriptor to poll). Not API.
#pragma once

#include <mpi.h>

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mproc::detail::mpi {

/// argv[1] of a worker started by MPI_Comm_spawn (the dynamic model).
inline constexpr const char* kWorkerMarker = "--mproc-mpi-worker";

/// Initialises MPI if nobody has (a program started without mpirun: the dynamic model).
void ensure_initialized();
/// Every MPI call mproc makes holds it: pools' handler threads share MPI with each other, and the
/// program may call MPI too (it gets MPI_THREAD_MULTIPLE when the library offers it).
std::unique_lock<std::mutex> lock();
/// MPI_COMM_WORLD's duplicate that mproc's messages use, so that they never meet the program's.
MPI_Comm world();
int world_rank();
int world_size();
const std::string& host();
/// Throws mproc::Error naming the call and MPI's message unless rc is MPI_SUCCESS.
void check(int rc, const char* call);

/// Rank 0, static model: worker ranks of MPI_COMM_WORLD not taken by another pool. take_ranks
/// gives `want` of them (0: every free one) or throws, naming how many there are.
std::vector<int> take_ranks(int want);
void release_ranks(const std::vector<int>& ranks);

struct Message {
  int tag = 0;
  std::string bytes;
};
/// The next message from `source`, if one has come; received into *spare (taken) when it is
/// large enough: memory already in use, where a fresh buffer's every page faults in zeroed.
std::optional<Message> try_recv(MPI_Comm comm, int source, std::string* spare = nullptr);

/// A message matched (MPI_Improbe: no other receive can take it) but not received yet. Its
/// sender's send does not finish until it is received: every one must be.
struct Probed {
  int tag = 0;
  std::size_t size = 0;
  MPI_Message handle = MPI_MESSAGE_NULL;
};
/// The next message from `source`, if one has come, to be received later with receive().
std::optional<Probed> try_probe(MPI_Comm comm, int source);
/// Receives p's bytes into dst (p.size bytes of room).
void receive_into(Probed& p, void* dst);
/// Receives p as a Message, into *spare (taken) when it is large enough (see try_recv).
Message receive(Probed& p, std::string* spare = nullptr);

/// Sends in flight: their buffers live until MPI is done with them.
class Sends {
 public:
  Sends() = default;
  Sends(const Sends&) = delete;
  Sends& operator=(const Sends&) = delete;
  ~Sends();
  void start(MPI_Comm comm, int dest, int tag, std::string bytes);
  /// Forgets the finished ones (their buffers go to *finished, if given); true when any finished.
  bool test(std::vector<std::string>* finished = nullptr);
  /// Until every send has finished (polling: never blocks other MPI users).
  void wait();
  bool empty() const noexcept { return pending_.empty(); }

 private:
  struct Pending {
    MPI_Request request;
    std::string bytes;
  };
  std::vector<Pending> pending_;
};

/// Sends and waits until MPI is done with the bytes (polling: never blocks other MPI users).
void send(MPI_Comm comm, int dest, int tag, std::string bytes);
/// Waits for the next message from `source`, polling at most `cap` apart.
Message recv(MPI_Comm comm, int source, std::chrono::microseconds cap = std::chrono::microseconds(1000));

/// How long to wait before polling MPI again: at once a few times, then sleeps that double up to
/// `cap`. Not sched_yield: with more runnable processes than CPUs (ranks and their task
/// processes, as in mpirun --oversubscribe) a yield may give the CPU away for a whole time slice.
class Backoff {
 public:
  explicit Backoff(std::chrono::microseconds cap = std::chrono::microseconds(500)) : cap_(cap) {}
  void reset() noexcept { misses_ = 0; }
  /// Zero while still spinning (the caller polls again at once).
  std::chrono::microseconds next() noexcept;
  /// Sleeps for next(), if not zero.
  void pause();

 private:
  std::chrono::microseconds cap_;
  int misses_ = 0;
};

/// Packed small messages: [length: 8][bytes] each.
void append_frame(std::string& packed, std::string_view frame);
/// Calls f(data, size) for each frame of a packed message; throws ProtocolError if malformed.
template <class F>
void for_each_frame(const std::string& packed, F&& f);

}  // namespace mproc::detail::mpi

#include "mpi/runtime_inl.hpp"
