#include "mpi/relay.hpp"

#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <utility>

#include "mproc/detail/pool_core.hpp"
#include "mproc/errors.hpp"
#include "pool/engine.hpp"
#include "process_state.hpp"
#include "reduction/shm_payload.hpp"
#include "util/auth.hpp"

namespace mproc::detail::mpi {
namespace {

// Slabs a rank receives its large tasks into: one being received, one running, two waiting in
// the worker's socket (it finds the next when it finishes one). The worker keeps a mapping of
// each (SlabMappings keeps 4).
constexpr std::size_t kSlabs = 4;

// Answers from the local pool's handler thread, for the rank's thread to send.
class RelayJob final : public JobBase {
 public:
  void chunk_done(std::size_t index, const std::byte* data, std::size_t n) override {
    if (kChunkHeader + n > kMaxMessage) {
      chunk_failed(index, std::make_exception_ptr(Error("a result of " + std::to_string(n) +
                                                         " bytes is over MPI's limit of 2 GiB per message")));
      return;
    }
    std::string a = header(index, true, n);
    a.append(reinterpret_cast<const char*>(data), n);
    push(std::move(a));
  }

  void chunk_failed(std::size_t index, std::exception_ptr error) override {
    std::string a = header(index, false, 0);
    encode(a, describe(error));
    push(std::move(a));
  }

  std::deque<std::string> take() {
    std::lock_guard l(mu_);
    std::deque<std::string> out;
    out.swap(answers_);
    return out;
  }

  /// Until an answer comes, or for `d` at most.
  void wait(std::chrono::microseconds d) {
    std::unique_lock l(mu_);
    if (d.count() == 0) return;
    cv_.wait_for(l, d, [&] { return !answers_.empty(); });
  }

 private:
  // [id: 8][ok: 1], with room for `payload` bytes more.
  static std::string header(std::size_t index, bool ok, std::size_t payload) {
    std::string a;
    a.reserve(kChunkHeader + payload);
    std::uint64_t id = index;
    a.append(reinterpret_cast<const char*>(&id), sizeof id);
    a.push_back(ok ? 1 : 0);
    return a;
  }

  static Failure describe(std::exception_ptr error) {
    Failure f;
    try {
      std::rethrow_exception(error);
    } catch (const RemoteError& e) {
      f = {Failure::remote, e.type(), e.message(), e.worker(), e.stack(), e.pid(), 0};
    } catch (const WorkerCrashed& e) {
      f = {Failure::crashed, {}, e.what(), {}, {}, e.pid(), e.exitcode()};
    } catch (const TimeoutError& e) {
      f = {Failure::timeout, {}, e.what(), {}, {}, 0, 0};
    } catch (const BrokenProcessPool& e) {
      f = {Failure::broken, {}, e.what(), {}, {}, 0, 0};
    } catch (const std::exception& e) {
      f = {Failure::other, {}, e.what(), {}, {}, 0, 0};
    } catch (...) {
      f = {Failure::other, {}, "unknown error", {}, {}, 0, 0};
    }
    return f;
  }

  void push(std::string a) {
    {
      std::lock_guard l(mu_);
      answers_.push_back(std::move(a));
    }
    cv_.notify_one();
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> answers_;
};

std::string here() { return "rank " + std::to_string(world_rank()) + " on " + host(); }

// The local pool rank 0's Attach asks for, or the reason there is none.
std::unique_ptr<PoolCore> start_local(const Attach& a, Attached& reply) {
  if (a.version != kVersion) {
    reply.error = "MPI protocol version " + std::to_string(a.version) + " on rank 0, " + std::to_string(kVersion) + " on " +
                  here() + ": every rank must run the same build of mproc";
    return nullptr;
  }
  if (a.program != program_id()) {
    reply.error = here() + " runs another program than rank 0 (its build id differs): every rank must run the same binary";
    return nullptr;
  }
  set_authkey(a.authkey);  // rank 0's functions are tagged with it
  // What get_start_method() says in a task: the program's method, not the local pool's.
  adopt_start_method_setting(static_cast<int>(Method::mpi));
  PoolConfig cfg;
  cfg.processes = 1;
  // Not fork: an MPI rank has threads of MPI's own (a fork could deadlock on a lock one held), and
  // signal handlers that would print MPI's crash report for a task that crashes.
  cfg.context = get_context("forkserver");
  if (!a.initializer.empty()) {
    auto saved = std::make_shared<const std::string>(a.initializer);
    cfg.initializer = Task{[saved] { run_saved_task(saved->data(), saved->size(), nullptr); },
                           [saved](OutArchive& ar) { ar.saveBinary(saved->data(), saved->size()); }};
  }
  cfg.maxtasksperchild = static_cast<int>(a.maxtasks);
  cfg.task_timeout = a.task_timeout;
  cfg.max_retries = a.max_retries;
  cfg.break_on_crash = a.break_on_crash;
  cfg.limits = {a.address_space, a.cpu_seconds, a.open_files};
  try {
    return std::make_unique<PoolCore>(std::move(cfg));
  } catch (const std::exception& e) {
    reply.error = "cannot start the worker process on " + here() + ": " + e.what();
    return nullptr;
  }
}

// A chunk from rank 0 whose n bytes begin at head: [id: 8][kind: 1][task]. Rank 0's id is its
// index, which the answer carries back.
Chunk chunk_from(const std::shared_ptr<RelayJob>& job, const void* head, std::size_t n) {
  if (n < kChunkHeader) throw ProtocolError("a chunk from rank 0 shorter than its header");
  Chunk c;
  c.job = job;
  std::uint64_t id;
  std::memcpy(&id, head, sizeof id);
  c.index = id;
  return c;
}

Chunk to_chunk(const std::shared_ptr<RelayJob>& job, std::string bytes) {
  Chunk c = chunk_from(job, bytes.data(), bytes.size());
  c.bytes = std::move(bytes);
  return c;
}

Chunk to_chunk(const std::shared_ptr<RelayJob>& job, std::shared_ptr<Slab> slab, std::size_t n) {
  Chunk c = chunk_from(job, slab->payload(), n);
  c.slab = std::move(slab);
  c.slab_size = n;
  return c;
}

}  // namespace

bool serve_pool(MPI_Comm comm, int leader, Message attach) {
  Attached reply{{}, static_cast<std::int32_t>(::getpid()), host()};
  Attach a;
  try {
    a = decode<Attach>(attach.bytes.data(), attach.bytes.size());
  } catch (const std::exception& e) {
    reply.error = "a malformed pool start from rank 0 on " + here() + ": " + e.what();
  }
  std::unique_ptr<PoolCore> local;
  if (reply.error.empty()) local = start_local(a, reply);
  send(comm, leader, kAttached, encoded(reply));
  if (!local) return true;  // rank 0 gives up on this pool; the next may do better

  auto job = std::make_shared<RelayJob>();
  Sends sends;
  Backoff backoff;
  std::vector<Chunk> chunks;
  std::vector<std::size_t> ids;
  auto submit = [&] {
    ids.clear();
    for (auto& c : chunks) ids.push_back(c.index);
    try {
      local->submit(std::exchange(chunks, {}));
    } catch (...) {  // the local pool is broken (its initializer failed): every chunk says why
      for (auto id : ids) job->chunk_failed(id, std::current_exception());
    }
  };
  auto flush = [&] {
    std::string packed;
    for (auto& answer : job->take()) {
      if (answer.size() >= kAloneBytes)
        sends.start(comm, leader, kAnswer, std::move(answer));
      else
        append_frame(packed, answer);
    }
    if (!packed.empty()) sends.start(comm, leader, kAnswers, std::move(packed));
    return sends.test();
  };
  // A task as large as the local pool sends through shared memory is received by MPI straight
  // into a slab the worker reads (the connection would copy it into one). While every slab is
  // held it waits, matched, in MPI: the local pool gets no more large tasks than slabs.
  SlabPool slabs(kSlabs);
  std::deque<Probed> waiting;
  const std::size_t slab_from = chunk_shm_threshold();
  auto take_large = [&](Probed& p) {
    std::shared_ptr<Slab> s;
    try {
      s = slabs.take(p.size);
    } catch (const OSError&) {  // no shared memory to be had: the connection streams it
      chunks.push_back(to_chunk(job, receive(p).bytes));
      return true;
    }
    if (!s) return false;
    receive_into(p, s->payload());
    chunks.push_back(to_chunk(job, std::move(s), p.size));
    return true;
  };
  int stop_signal = -1;  // from kDetach: 0 finishes what was sent, else kills the local worker
  bool exit_program = false;
  std::string spare;  // a large chunk's memory, back from the local pool once answered
  while (stop_signal < 0) {
    bool progressed = false;
    while (!waiting.empty() && take_large(waiting.front())) {
      waiting.pop_front();
      progressed = true;
    }
    for (;;) {
      auto p = try_probe(comm, leader);
      if (!p) break;
      progressed = true;
      if (p->tag == kTask && p->size >= slab_from) {
        if (!waiting.empty() || !take_large(*p)) waiting.push_back(*p);
        continue;
      }
      if (spare.capacity() < kAloneBytes) spare = local->take_buffer();
      auto m = receive(*p, &spare);
      if (m.tag == kTask) {
        chunks.push_back(to_chunk(job, std::move(m.bytes)));
      } else if (m.tag == kTasks) {
        for_each_frame(m.bytes, [&](const char* f, std::size_t n) { chunks.push_back(to_chunk(job, std::string(f, n))); });
      } else if (m.tag == kDetach || m.tag == kExit) {
        std::int32_t sig = 0;
        if (m.tag == kExit) exit_program = true, sig = SIGKILL;
        else if (m.bytes.size() == sizeof sig) std::memcpy(&sig, m.bytes.data(), sizeof sig);
        stop_signal = sig;
        break;
      } else {
        throw ProtocolError("an MPI message with tag " + std::to_string(m.tag) + " from rank 0 in the middle of a pool");
      }
    }
    // Rank 0 detaches once every answer came, or when it terminates the pool (it fails what is
    // unanswered itself): tasks still waiting for a slab are received (so that its sends end)
    // and dropped.
    if (stop_signal >= 0)
      for (auto& p : std::exchange(waiting, {})) (void)receive(p);
    if (!chunks.empty()) submit();
    progressed = flush() || progressed;
    if (stop_signal >= 0) break;
    if (progressed) {
      backoff.reset();
    } else {
      job->wait(backoff.next());  // an answer to send wakes it at once
    }
  }
  if (stop_signal > 0) local->terminate(stop_signal);
  else local->close();
  local->join();
  local.reset();
  if (exit_program) return false;
  flush();
  sends.wait();
  send(comm, leader, kDetached, {});
  return true;
}

}  // namespace mproc::detail::mpi
