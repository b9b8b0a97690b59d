// Rank 0's side of a pool on the mpi context: the pool's chunks go to worker ranks as MPI
// messages, many per message when small; the answers come back the same way. One handler
// thread per pool polls MPI, backing off when nothing comes (MPI has no descriptor to poll).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <thread>

#include "mpi/protocol.hpp"
#include "mpi/relay.hpp"
#include "mpi/runtime.hpp"
#include "mproc/detail/fd_passing.hpp"
#include "mproc/init.hpp"
#include "pool/engine.hpp"
#include "util/auth.hpp"

namespace mproc::detail::mpi {
namespace {

using Clock = std::chrono::steady_clock;
// Chunks in flight per rank: enough to cover about kHideUs of the round trip at the rank's
// measured time per chunk, between kMinDepth and kMaxDepth, and never more than
// kMaxWaitingBytes waiting behind the running one. The round trip includes both sides' polling
// (up to 0.5 ms each): 1 MiB chunks (about 1 ms each) went 1.4 -> 1.55 GB/s from 2 ms to 8 ms.
constexpr std::size_t kMinDepth = 2, kMaxDepth = 256;
constexpr double kHideUs = 8000, kUnknownUs = 1000;
constexpr std::size_t kMaxWaitingBytes = 16u << 20;

class MpiEngine final : public QueueEngine {
 public:
  explicit MpiEngine(PoolConfig config) : cfg_(std::move(config)) {
    if (!initialized())
      throw Error(
          "mproc::init(argc, argv) must be called first in main to use the mpi context: under mpirun it makes ranks "
          "1..N-1 the pool's workers (they never return from it), and a worker started by MPI_Comm_spawn finds its "
          "work there");
    if (cfg_.processes < 0) throw std::invalid_argument("mproc: a pool needs at least one process");
    ensure_initialized();
    Attach attach = make_attach();
    if (world_size() > 1) {
      if (world_rank() != 0) throw Error("an mpi pool can only be made on rank 0 (this is rank " + std::to_string(world_rank()) + ")");
      comm_ = world();
      owned_ = take_ranks(cfg_.processes);
      for (int r : owned_) ranks_.push_back(Rank{r});
    } else {
      spawn(cfg_.processes ? cfg_.processes : cpu_count());
    }
    try {
      start(attach);
    } catch (...) {
      end_ranks();
      throw;
    }
    handler = std::thread([this] { run(); });
  }

  ~MpiEngine() override {
    terminate(SIGTERM);
    join();
  }

  int processes() const noexcept override { return static_cast<int>(ranks_.size()); }

  std::vector<int> worker_pids() const override {
    std::vector<int> p;
    for (auto& r : ranks_) p.push_back(r.pid);
    return p;
  }


 private:
  struct Sent {
    std::uint64_t id;
    std::size_t size;  // of the message: its bytes went with it
    Chunk chunk;
  };
  struct Rank {
    explicit Rank(int r) : rank(r) {}
    int rank = 0;
    int pid = 0;
    std::string host;
    std::deque<Sent> inflight;
    std::size_t waiting_bytes = 0;
    Clock::time_point running_since;
    double chunk_us = kUnknownUs;
    bool attached = false;

    std::size_t depth() const {
      double d = static_cast<double>(kMinDepth) + kHideUs / std::max(chunk_us, 0.1);
      return static_cast<std::size_t>(std::min(d, static_cast<double>(kMaxDepth)));
    }
    std::string where() const { return "MPI rank " + std::to_string(rank) + " on " + host; }
  };

  Attach make_attach() const {
    Attach a;
    a.program = program_id();
    a.authkey = authkey();
    if (cfg_.initializer) {
      std::vector<int> fds;
      {
        FdExportScope scope(fds);
        OutArchive ar(a.initializer);
        cfg_.initializer->save(ar);
      }
      if (!fds.empty())
        throw Error(
            "the pool's initializer has an argument that is a descriptor (a Value, Array, Lock, Queue, Connection or "
            "other shared object): it cannot reach an MPI rank, which may be on another machine. Share state across "
            "ranks with a Manager, or pass values");
    }
    a.maxtasks = cfg_.maxtasksperchild;
    a.task_timeout = cfg_.task_timeout;
    a.max_retries = cfg_.max_retries;
    a.break_on_crash = cfg_.break_on_crash;
    a.address_space = cfg_.limits.address_space;
    a.cpu_seconds = cfg_.limits.cpu_seconds;
    a.open_files = cfg_.limits.open_files;
    return a;
  }

  // The dynamic model: k new processes of this program, connected to this one alone.
  void spawn(int k) {
    char exe[4096] = {};
    ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) throw Error("cannot find this program's file to spawn MPI workers: readlink /proc/self/exe failed");
    std::string marker = kWorkerMarker;
    char* args[] = {marker.data(), nullptr};
    std::vector<int> errors(static_cast<std::size_t>(k));
    auto l = lock();
    MPI_Info info;
    MPI_Info_create(&info);
    // Workers beyond the machine's cores are allowed, as a local pool's are.
    MPI_Info_set(info, "map_by", "slot:OVERSUBSCRIBE");
    // A failed spawn is an error to report, not the job's end (MPI's default on MPI_COMM_SELF).
    MPI_Errhandler previous;
    MPI_Comm_get_errhandler(MPI_COMM_SELF, &previous);
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int rc = MPI_Comm_spawn(exe, args, k, info, 0, MPI_COMM_SELF, &comm_, errors.data());
    MPI_Comm_set_errhandler(MPI_COMM_SELF, previous);
    MPI_Errhandler_free(&previous);
    MPI_Info_free(&info);
    check(rc, "MPI_Comm_spawn of the pool's workers");
    spawned_ = true;
    for (int r = 0; r < k; ++r) ranks_.push_back(Rank{r});
  }

  // Every rank takes the pool, or the pool is not made.
  void start(const Attach& attach) {
    std::string bytes = encoded(attach);
    for (auto& r : ranks_) send(comm_, r.rank, kAttach, bytes);
    std::string errors;
    for (auto& r : ranks_) {
      Message m = recv(comm_, r.rank);
      if (m.tag != kAttached) throw ProtocolError("MPI rank " + std::to_string(r.rank) + " answered a pool's start with tag " + std::to_string(m.tag));
      auto a = decode<Attached>(m.bytes.data(), m.bytes.size());
      r.pid = a.pid;
      r.host = a.host;
      r.attached = a.error.empty();
      if (!a.error.empty()) errors += (errors.empty() ? "" : "; ") + a.error;
    }
    if (!errors.empty()) throw Error("the mpi pool cannot start: " + errors);
  }

  // Detaches the attached ranks (draining their answers) and gives them back.
  void end_ranks() {
    std::int32_t sig = 0;
    {
      std::lock_guard l(mu);
      if (terminating) sig = terminate_signal;
    }
    std::string payload(reinterpret_cast<const char*>(&sig), sizeof sig);
    for (auto& r : ranks_)
      if (r.attached) sends_.start(comm_, r.rank, kDetach, payload);
    for (auto& r : ranks_) {
      if (!r.attached) continue;
      for (;;) {
        Message m = recv(comm_, r.rank);
        if (m.tag == kDetached) break;
        handle(r, m);
      }
      r.attached = false;
    }
    sends_.wait();
    if (spawned_) {
      auto l = lock();
      MPI_Comm_disconnect(&comm_);  // the workers disconnect too, then end
    } else {
      release_ranks(owned_);
    }
  }

  void wake() override {
    {
      std::lock_guard l(mu);
      woken_ = true;
    }
    cv_.notify_one();
  }

  bool accepts(const Rank& r, std::size_t batched) const { return r.inflight.size() + batched < r.depth(); }

  // Breadth first, as the local pool: every rank gets a chunk before any gets a second.
  bool dispatch() {
    std::vector<std::vector<Chunk>> batches(ranks_.size());
    {
      std::lock_guard l(mu);
      if (broken) return false;
      for (bool gave = true; gave && !queue.empty();) {
        gave = false;
        for (std::size_t i = 0; i < ranks_.size() && !queue.empty(); ++i) {
          Rank& r = ranks_[i];
          if (!accepts(r, batches[i].size())) continue;
          if (queue.front().bytes.size() > kMaxMessage) {
            too_large_.push_back(queue.pop_front());
            gave = true;
            continue;
          }
          bool idle = r.inflight.empty() && batches[i].empty();
          if (!idle && r.waiting_bytes + queue.front().bytes.size() > kMaxWaitingBytes) continue;
          batches[i].push_back(queue.pop_front());
          gave = true;
        }
      }
    }
    bool any = !too_large_.empty();
    for (auto& c : too_large_)
      fail(c, std::make_exception_ptr(Error("a task of " + std::to_string(c.bytes.size()) +
                                            " bytes is over MPI's limit of 2 GiB per message")));
    too_large_.clear();
    for (std::size_t i = 0; i < ranks_.size(); ++i) {
      if (batches[i].empty()) continue;
      any = true;
      Rank& r = ranks_[i];
      std::string packed;
      for (auto& c : batches[i]) {
        std::uint64_t id = next_id_++;
        std::memcpy(c.bytes.data(), &id, sizeof id);
        c.bytes[8] = static_cast<char>(ChunkKind::task);
        std::string bytes = std::move(c.bytes);
        if (r.inflight.empty()) r.running_since = Clock::now();
        else r.waiting_bytes += bytes.size();
        r.inflight.push_back(Sent{id, bytes.size(), std::move(c)});
        if (bytes.size() >= kAloneBytes) sends_.start(comm_, r.rank, kTask, std::move(bytes));
        else append_frame(packed, bytes);
      }
      if (!packed.empty()) sends_.start(comm_, r.rank, kTasks, std::move(packed));
    }
    return any;
  }

  std::exception_ptr failure_of(const Rank& r, const Sent& s, const std::byte* data, std::size_t n) {
    auto f = decode<Failure>(data, n);
    const Chunk& c = s.chunk;
    switch (f.kind) {
      case Failure::remote:
        return std::make_exception_ptr(RemoteError(f.type, f.what, f.worker + " on " + r.where(), f.pid, f.stack));
      case Failure::crashed:
        return std::make_exception_ptr(WorkerCrashed(
            "worker " + std::to_string(f.pid) + " on " + r.where() + " " + describe_exit(f.code) + " while running items [" +
                std::to_string(c.first_item) + ", " + std::to_string(c.first_item + c.item_count) + ")",
            f.pid, f.code, c.first_item, c.item_count));
      case Failure::timeout: return std::make_exception_ptr(TimeoutError(f.what + " (on " + r.where() + ")"));
      case Failure::broken: return std::make_exception_ptr(BrokenProcessPool(f.what + " (on " + r.where() + ")"));
      default: return std::make_exception_ptr(Error(f.what + " (on " + r.where() + ")"));
    }
  }

  void answer(Rank& r, const char* p, std::size_t n) {
    if (n < kChunkHeader) throw ProtocolError("an answer from " + r.where() + " shorter than its header");
    std::uint64_t id;
    std::memcpy(&id, p, sizeof id);
    auto it = std::find_if(r.inflight.begin(), r.inflight.end(), [&](const Sent& s) { return s.id == id; });
    if (it == r.inflight.end()) throw ProtocolError(r.where() + " answered a task it was not given");
    Sent s = std::move(*it);
    bool front = it == r.inflight.begin();
    r.inflight.erase(it);
    // waiting_bytes counts every chunk but the front one
    if (!front) r.waiting_bytes -= s.size;
    else if (!r.inflight.empty()) r.waiting_bytes -= r.inflight.front().size;
    auto data = reinterpret_cast<const std::byte*>(p) + kChunkHeader;
    std::size_t size = n - kChunkHeader;
    if (p[8] == 1) {
      try {
        s.chunk.job->chunk_done(s.chunk.index, data, size);
      } catch (...) {
        fail(s.chunk, std::current_exception());
      }
      return;
    }
    std::exception_ptr e;
    try {
      e = failure_of(r, s, data, size);
    } catch (...) {
      e = std::current_exception();
    }
    if (cfg_.break_on_crash) {
      try {
        std::rethrow_exception(e);
      } catch (const BrokenProcessPool&) {
        set_broken(e);
      } catch (...) {
      }
    }
    fail(s.chunk, e);
  }

  void handle(Rank& r, Message& m) {
    if (m.tag == kAnswer) answer(r, m.bytes.data(), m.bytes.size());
    else if (m.tag == kAnswers) for_each_frame(m.bytes, [&](const char* p, std::size_t n) { answer(r, p, n); });
    else throw ProtocolError(r.where() + " sent an MPI message with tag " + std::to_string(m.tag) + " during a pool");
  }

  bool receive() {
    bool any = sends_.test(&sent_);
    for (auto& b : sent_) spares.put(std::move(b));  // MPI is done with them: the next chunks' memory
    sent_.clear();
    for (auto& r : ranks_) {
      std::size_t answers_before = r.inflight.size();
      auto since = r.running_since;
      while (auto m = try_recv(comm_, r.rank)) {
        handle(r, *m);
        any = true;
      }
      std::size_t answered = answers_before - std::min(answers_before, r.inflight.size());
      if (answered) {
        auto now = Clock::now();
        double us = std::chrono::duration<double, std::micro>(now - since).count() / static_cast<double>(answered);
        r.chunk_us += (us - r.chunk_us) * 0.5;
        r.running_since = now;
      }
    }
    return any;
  }

  void run() {
    Backoff backoff;
    try {
      for (;;) {
        bool busy = false;
        {
          std::lock_guard l(mu);
          busy = std::any_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return !r.inflight.empty(); });
          if (terminating || (closed && queue.empty() && !busy)) break;
        }
        bool progressed = dispatch();
        progressed = receive() || progressed;
        if (progressed) {
          backoff.reset();
          continue;
        }
        auto d = busy ? backoff.next() : std::chrono::microseconds(0);
        std::unique_lock l(mu);
        if (!busy) cv_.wait(l, [&] { return woken_; });  // nothing comes from MPI: wait for the caller
        else if (d.count() != 0) cv_.wait_for(l, d, [&] { return woken_; });
        woken_ = false;
      }
    } catch (...) {
      set_broken(std::current_exception());
    }
    shutdown();
  }

  void shutdown() {
    try {
      end_ranks();
    } catch (...) {
      // An MPI failure here leaves nothing better to do than fail what is left.
    }
    auto e = std::make_exception_ptr(Error("the pool was terminated before the task finished"));
    for (auto& r : ranks_)
      for (auto& s : r.inflight) fail(s.chunk, e);
    std::deque<Chunk> pending;
    {
      std::lock_guard l(mu);
      pending = queue.take_all();
    }
    for (auto& c : pending) fail(c, e);
  }

  PoolConfig cfg_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  bool spawned_ = false;
  std::vector<int> owned_;  // static model: the world ranks taken
  std::vector<Rank> ranks_;
  std::vector<Chunk> too_large_;  // dispatch's
  Sends sends_;
  std::vector<std::string> sent_;  // receive()'s: buffers of finished sends
  std::uint64_t next_id_ = 1;

  std::condition_variable cv_;  // with mu: wake() sets woken_
  bool woken_ = false;
};

std::unique_ptr<PoolEngine> make_engine(PoolConfig config) { return std::make_unique<MpiEngine>(std::move(config)); }

const MpiBackend kBackend{init_ranks, make_engine};

}  // namespace
}  // namespace mproc::detail::mpi

namespace mproc::detail {
bool link_mpi_backend() noexcept {
  set_mpi_backend(&mpi::kBackend);
  return true;
}
}  // namespace mproc::detail
