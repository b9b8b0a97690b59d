// The pool engine: workers with one connection each, a handler thread that dispatches chunks,
// reads results, and replaces workers that die. One connection per worker is what lets a crash
// fail exactly the task that worker held (Python's shared queues cannot tell, so Pool.map hangs).
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <thread>

#include "connection_access.hpp"
#include "pool/engine.hpp"
#include "reduction/shm_payload.hpp"
#include "mproc/detail/fd_passing.hpp"
#include "mproc/detail/pool_core.hpp"
#include "mproc/process.hpp"
#include "os/fd.hpp"
#include "pool/remote_info.hpp"
#include "util/stacktrace.hpp"

namespace mproc::detail {
namespace {

using Clock = std::chrono::steady_clock;
// Chunks in flight per worker: one running and at least one waiting, so that a worker never
// waits for the pool between chunks. Short chunks get more, so that they travel (and their
// answers come back) many per system call: enough to cover about kHideUs of the pool's own
// latency at the worker's measured time per chunk, at most kMaxDepth.
constexpr std::size_t kMinDepth = 2, kMaxDepth = 32;
constexpr double kHideUs = 100;
// Until a worker has answered, its chunks are taken to be long (kUnknownUs); below kShortUs a
// chunk is flagged kChunkShort, and the worker may hold an answer back while it runs it.
constexpr double kUnknownUs = 1000, kShortUs = 50;
// Chunks wait in the socket behind a running one only while they surely fit in the socket's
// buffer: a larger send would block the handler until that worker finishes, while the worker
// may itself be blocked sending a large result the handler is not reading. Only an idle worker
// (reading, not writing) gets a large chunk. A chunk that travels in shared memory puts only a
// small frame in the socket (kSlabFrameBytes, counted high), so it may wait behind another: the
// worker finds it there when it finishes, instead of a round trip through the pool later.
constexpr std::size_t kPipelineMax = 64 * 1024;
constexpr std::size_t kSlabFrameBytes = 256;
// Chunks and answers from this size on travel in shared memory (slabs, see
// docs/design/large-messages.md) rather than through the socket: for Python's default chunksize
// over 1e6 numbers (about 1 MB a chunk) a socket's 200 KiB buffer took a dozen wake-ups of each
// side per chunk; the slab takes one copy and one small frame. Connections elsewhere keep 1 MiB.
constexpr std::size_t kChunkShmThreshold = 256 * 1024;

std::uint64_t chunk_id(Chunk& c) {
  std::uint64_t id;
  std::memcpy(&id, c.data(), sizeof id);
  return id;
}
constexpr int kInitDeaths = 3;  // see handle_exit
// How long a caller waiting for a lone task's answer reads for it itself (LocalEngine::tend): at
// least kTendFor, and as long as the worker's recent chunks took when that is under kTendMax.
// A task of 100 us answered in 110 us this way, in 160-440 us through the handler thread (a
// wake-up on an idle CPU costs 20-50 us on this VM).
constexpr auto kTendFor = std::chrono::microseconds(50), kTendMax = std::chrono::microseconds(300);


std::string method_title(const std::optional<Context>& ctx) {
  std::string m = ctx ? ctx->get_start_method() : get_start_method();
  if (m == "fork") return "ForkPoolWorker";
  if (m == "spawn") return "SpawnPoolWorker";
  return "ForkServerPoolWorker";
}

}  // namespace

std::size_t chunk_shm_threshold() { return ConnectionAccess::shm_threshold_or(kChunkShmThreshold); }

char* Chunk::data() { return slab ? reinterpret_cast<char*>(slab->payload()) : bytes.data(); }

Chunk make_chunk(std::shared_ptr<JobBase> job, std::size_t index, std::size_t first, std::size_t count,
                 void (*save)(const void* ctx, OutArchive&), const void* ctx, std::string buffer) {
  Chunk c;
  c.job = std::move(job);
  c.index = index;
  c.first_item = first;
  c.item_count = count;
  c.bytes = std::move(buffer);
  c.bytes.assign(kChunkHeader, '\0');
  c.bytes[8] = static_cast<char>(ChunkKind::task);
  std::vector<int> fds;
  {
    FdExportScope scope(fds);  // a descriptor in a task's arguments lands here instead of throwing
    OutArchive ar(c.bytes);
    save(ctx, ar);
  }
  if (!fds.empty())
    throw Error(
        "mproc: a task's arguments hold a descriptor (a Value, Array, Lock, Queue, Connection or other "
        "shared object): it cannot travel to a pool worker with a task. Hand it to every worker once, through "
        "the pool's initializer (.initializer = mproc::call(init, shared)), and keep it there; Python refuses "
        "the same ('Lock objects should only be shared between processes through inheritance')");
  return c;
}

std::uint64_t load_count(InArchive& ar, std::optional<std::uint64_t> expected) {
  std::uint64_t n = 0;
  ar(n);
  if (expected && n != *expected)
    throw ProtocolError("a chunk holds " + std::to_string(n) + " items where " + std::to_string(*expected) + " were sent");
  if (!expected && n > ar.left() && n > kFreeElements) throw_bad_length(n, ar.left());
  return n;
}

void print_callback_error(const char* what) {
  std::fprintf(stderr, "mproc: a result callback threw: %s\n", what);
}

// ---------------------------------------------------------------------------------------------
// Worker side

namespace {

void set_limit(int resource, std::uint64_t value, bool lock_hard, const char* what) {
  rlimit r{};
  if (::getrlimit(resource, &r) != 0) os::throw_errno(std::string("getrlimit for ") + what);
  rlim_t v = static_cast<rlim_t>(value);
  if (r.rlim_max != RLIM_INFINITY && v > r.rlim_max) v = r.rlim_max;  // never above what we may have
  r.rlim_cur = v;
  if (lock_hard) r.rlim_max = v;  // the task cannot raise it again
  if (::setrlimit(resource, &r) != 0) os::throw_errno(std::string("setrlimit for ") + what);
}

// RLIMIT_CPU counts the process's whole life: the budget of a chunk starts from what was used.
void arm_cpu_limit(std::uint64_t seconds) {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto used = static_cast<std::uint64_t>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1;  // rounded up
  set_limit(RLIMIT_CPU, used + seconds, false, "the CPU time limit");
}

void apply_limits(const ResourceLimits& l) {
  if (l.address_space) set_limit(RLIMIT_AS, l.address_space, true, "the address space limit");
  if (l.open_files) set_limit(RLIMIT_NOFILE, l.open_files, true, "the open files limit");
  ::signal(SIGXCPU, SIG_DFL);
}

}  // namespace

namespace {

// A worker's mailbox, shared with its pool: word 0 is the worker's status (the id of the chunk
// it runs, | kChunkFinished once that is done), word 1 how many bytes of answers it holds back,
// word 2 when that chunk started (steady_clock, nanoseconds: the same clock in every process),
// then the answers, each [length: 8][bytes, padded to 8]. Answers wait here rather than in the
// worker's memory so that they outlive it: a worker that dies on the next chunk loses nothing
// it finished, and nothing runs twice.
struct Mailbox {
  std::uint64_t* words;

  std::atomic_ref<std::uint64_t> status() const { return std::atomic_ref(words[0]); }
  std::atomic_ref<std::uint64_t> held_bytes() const { return std::atomic_ref(words[1]); }
  std::atomic_ref<std::uint64_t> started_ns() const { return std::atomic_ref(words[2]); }
  std::byte* held() const { return reinterpret_cast<std::byte*>(words + 3); }
};

constexpr std::size_t padded(std::size_t n) { return (n + 7) & ~std::size_t{7}; }

// The answers a worker holds back while the next chunk, expected short, is already waiting:
// they go back together, in one system call.
class HeldReplies {
 public:
  explicit HeldReplies(Mailbox box) : box_(box) {}

  /// Whether an answer may wait behind the chunk just read: it must not wait for long.
  bool may_wait(std::chrono::steady_clock::time_point now) const {
    return count_ == 0 || (count_ < kMaxCount && now - first_ < kMaxWait);
  }
  /// Keeps a copy of reply in the mailbox, if it fits.
  bool hold(const std::string& reply, std::chrono::steady_clock::time_point now) {
    std::size_t need = 8 + padded(reply.size());
    if (count_ == kMaxCount || used_ + need > kMailboxHeldBytes) return false;
    std::uint64_t len = reply.size();
    std::memcpy(box_.held() + used_, &len, 8);
    std::memcpy(box_.held() + used_ + 8, reply.data(), reply.size());
    views_[count_++] = {reinterpret_cast<const char*>(box_.held() + used_ + 8), reply.size()};
    used_ += need;
    box_.held_bytes().store(used_, std::memory_order_release);
    if (count_ == 1) first_ = now;
    return true;
  }
  /// Sends what is held, then `last` if given, in one go.
  void flush(Connection& conn, std::optional<std::string_view> last = std::nullopt) {
    std::size_t n = count_;
    if (last) views_[n++] = *last;
    if (n == 0) return;
    ConnectionAccess::send_bytes_many(conn, std::span<const std::string_view>(views_, n));
    count_ = used_ = 0;
    box_.held_bytes().store(0, std::memory_order_release);  // all sent: nothing for the pool to take
  }

 private:
  static constexpr std::size_t kMaxCount = 32;
  static constexpr auto kMaxWait = std::chrono::microseconds(200);
  Mailbox box_;
  std::string_view views_[kMaxCount + 1];
  std::size_t count_ = 0, used_ = 0;
  std::chrono::steady_clock::time_point first_;
};

// Polls conn without sleeping until it has something to read (true) or `until` passes: for a
// message due within microseconds, cheaper than a sleep and a wake-up on an idle CPU (10-50 us
// in a VM). The worker's look for its next chunk and the caller's for its answer (tend).
bool readable_before(const Connection& conn, std::chrono::steady_clock::time_point until) {
  for (;;) {
    if (conn.poll(seconds(0))) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
  }
}

// After the answer of a lone task (kChunkLone) a worker looks for its next chunk for a moment
// before it sleeps: a caller that waits for each answer before it sends the next task sends it
// within microseconds. Not after other chunks: the pool's own dispatch needs that CPU more
// (apply_async's rate).
constexpr auto kLookFor = std::chrono::microseconds(50);

}  // namespace

void pool_worker_main(Connection conn, WorkerSetup setup) {
  ::signal(SIGINT, SIG_IGN);  // Ctrl-C is for the program; it stops the pool (see README)
  if (setup.mailbox.size() != kMailboxWords) throw ProtocolError("a pool worker's mailbox has the wrong size");
  Mailbox box{setup.mailbox.data()};
  HeldReplies held(box);
  std::int64_t done = 0;
  bool look = false;  // the last chunk was lone: the next may come at once
  // One reply buffer for the worker's life: a fresh one per chunk made the heap grow and shrink
  // by the size of every large result (each page faulted in again). A huge one is kept while
  // huge results keep coming (fresh memory costs a fault and a zeroing per page, more than the
  // copy: echoing 256 MiB) and let go after the first answer that did not need it.
  std::string reply;
  constexpr std::size_t kKeepReply = 64u << 20;
  auto report_failure = [&] {
    auto report = report_current_exception();
    reply.resize(kChunkHeader);
    reply[8] = 0;
    encode(reply, RemoteInfo{report.type, report.what, current_process().name(), report.stack, ::getpid()});
  };
  if (setup.handshake) {
    // Limits, then the initializer; the answer is the placeholder chunk the pool holds (id 0).
    reply.assign(kChunkHeader, '\0');
    try {
      apply_limits(setup.limits);
      if (setup.initializer)
        setup.initializer->call();  // fork: in memory, its descriptors inherited
      else if (!setup.saved_initializer.empty())  // imports its descriptors: still in scope here
        run_saved_task(setup.saved_initializer.data(), setup.saved_initializer.size(), nullptr);
      reply[8] = 1;
    } catch (...) {
      report_failure();
    }
    conn.send_bytes(reply);
    if (reply[8] == 0) return;  // a worker without its initializer is no worker
  }
  for (;;) {
    // A chunk already read ahead is run where it lies; another is received into memory of its own.
    auto in_place = ConnectionAccess::peek_buffered(conn);
    Buffer received;
    if (!in_place) {
      if (look) (void)readable_before(conn, std::chrono::steady_clock::now() + kLookFor);
      try {
        received = conn.recv_buffer();
      } catch (const EOFError&) {
        return;  // the pool closed our connection, or the parent is gone: nobody reads answers
      }
    }
    std::span<const std::byte> msg = in_place ? *in_place : received.span();
    if (msg.size() < kChunkHeader) throw ProtocolError("a pool message shorter than its header");
    auto flags = static_cast<std::uint8_t>(msg.data()[8]);
    auto kind = static_cast<ChunkKind>(flags & ~(kChunkShort | kChunkLone));
    look = flags & kChunkLone;
    auto now = std::chrono::steady_clock::now();
    // Answers wait behind this chunk only if the pool expects it to be short.
    if (!(flags & kChunkShort) || !held.may_wait(now)) held.flush(conn);
    if (kind == ChunkKind::stop) return;
    std::uint64_t id;
    std::memcpy(&id, msg.data(), sizeof id);
    if (reply.capacity() > kKeepReply && reply.size() <= kKeepReply) std::string().swap(reply);
    reply.assign(kChunkHeader, '\0');
    std::memcpy(reply.data(), &id, sizeof id);
    box.started_ns().store(static_cast<std::uint64_t>(std::chrono::nanoseconds(now.time_since_epoch()).count()),
                           std::memory_order_relaxed);
    box.status().store(id, std::memory_order_release);
    try {
      if (setup.limits.cpu_seconds) arm_cpu_limit(setup.limits.cpu_seconds);
      run_saved_task(msg.data() + kChunkHeader, msg.size() - kChunkHeader, &reply);
      reply[8] = 1;
    } catch (...) {
      report_failure();
    }
    if (in_place) ConnectionAccess::consume_buffered(conn);
    received.reset();
    bool retire = kind == ChunkKind::task && setup.maxtasks > 0 && ++done >= setup.maxtasks;
    // Held back only while the next chunk is already here: never while this worker waits.
    if (retire || !ConnectionAccess::frame_buffered(conn) || !held.hold(reply, now)) held.flush(conn, reply);
    box.status().store(id | kChunkFinished, std::memory_order_release);
    if (retire) return;
  }
}

// ---------------------------------------------------------------------------------------------
// Parent side

struct LocalEngine final : QueueEngine {
  struct Worker {
    Worker(Process p, Connection c, RawArray<std::uint64_t> m) : proc(std::move(p)), conn(std::move(c)), mailbox(std::move(m)) {}
    Process proc;
    Connection conn;
    RawArray<std::uint64_t> mailbox;  // WorkerSetup::mailbox
    std::deque<Chunk> inflight;
    std::size_t waiting_bytes = 0;  // of inflight after the front one: what may sit in the socket
    std::int64_t sent = 0;
    Clock::time_point running_since;  // of inflight.front(): sent to an idle worker, or the last answer came
    double chunk_us = kUnknownUs;     // time per chunk, a moving average
    bool timed_out = false;
    bool gone = false;  // a send found it dead; it takes nothing more

    std::size_t depth() const {
      double d = static_cast<double>(kMinDepth) + kHideUs / std::max(chunk_us, 0.1);
      return static_cast<std::size_t>(std::min(d, static_cast<double>(kMaxDepth)));
    }
    /// What c puts in the socket while it waits there: its bytes, or a frame naming its slab.
    std::size_t in_socket(const Chunk& c) const {
      return c.slab || c.bytes.size() >= conn.shared_memory_threshold() ? kSlabFrameBytes : c.bytes.size();
    }
    void push(Chunk c) {
      if (inflight.empty()) running_since = Clock::now();
      else waiting_bytes += in_socket(c);
      inflight.push_back(std::move(c));
    }
    Chunk pop() {
      Chunk c = std::move(inflight.front());
      inflight.pop_front();
      if (!inflight.empty()) waiting_bytes -= in_socket(inflight.front());
      return c;
    }
  };

  PoolConfig cfg;
  os::Fd wake_fd;
  os::Fd epoll_fd;  // wake_fd and every worker's connection: the handler's wait (see tend)
  std::vector<std::unique_ptr<Worker>> workers;  // the handler thread's after the constructor
  std::vector<std::vector<Chunk>> batches;  // dispatch's, one per worker: kept for their memory
  std::vector<std::size_t> batch_bytes;     // dispatch's
  std::vector<std::string_view> frames;     // send_batch's
  std::vector<epoll_event> events;          // run's, for read_ready
  std::vector<Chunk> direct;                // send_now's
  std::mutex io_mu;  // the workers and their connections: the handler's, but for send_now and tend
  std::atomic<const JobBase*> lone{nullptr};  // the job of send_now's last task: tend's quick check
  std::uint64_t tends = 0;  // under io_mu: how often a caller read a worker (see read_ready)
  std::atomic<int> live_workers{0};
  std::vector<int> pids;  // snapshot for worker_pids(), under mu
  std::uint64_t next_id = 1;
  int worker_counter = 0;
  std::string title;
  std::shared_ptr<const Task> initializer;  // cfg.initializer, shared with every WorkerSetup
  int init_deaths = 0;  // workers in a row that died before their initializer answered

  void wake() override {
    std::uint64_t one = 1;
    (void)!::write(wake_fd.get(), &one, sizeof one);
  }

  void start_worker() {
    auto [parent_end, child_end] = Pipe();
    ConnectionAccess::default_shm_threshold(parent_end, kChunkShmThreshold);
    ConnectionAccess::default_shm_threshold(child_end, kChunkShmThreshold);
    WorkerSetup setup;
    setup.maxtasks = cfg.maxtasksperchild;
    setup.limits = cfg.limits;
    setup.handshake = initializer || cfg.limits.any();
    setup.initializer = initializer;
    setup.mailbox = RawArray<std::uint64_t>(kMailboxWords);
    RawArray<std::uint64_t> mailbox = setup.mailbox;
    auto w = std::make_unique<Worker>(
        Process(ProcessOptions{.name = title + "-" + std::to_string(++worker_counter), .daemon = true, .context = cfg.context},
                pool_worker_main, child_end, std::move(setup)),
        parent_end, std::move(mailbox));
    w->proc.start();
    child_end.close();
    if (initializer || cfg.limits.any()) {  // the worker answers this placeholder (id 0) first
      Chunk init;
      init.bytes.assign(kChunkHeader, '\0');
      init.bytes[8] = static_cast<char>(ChunkKind::init);
      w->push(std::move(init));
    }
    watch(*w, EPOLLIN, EPOLL_CTL_ADD);
    workers.push_back(std::move(w));
  }

  // What the handler's epoll_wait wakes for on w's connection: EPOLLIN, or nothing while a
  // caller reads it (tend). Changed with EPOLL_CTL_MOD, this takes effect in a wait under way.
  void watch(Worker& w, std::uint32_t what, int op = EPOLL_CTL_MOD) {
    epoll_event ev{};
    ev.events = what;
    ev.data.ptr = &w;
    if (::epoll_ctl(epoll_fd.get(), op, w.conn.fileno(), &ev) != 0) os::throw_errno("epoll_ctl for a pool worker");
  }
  // Before w's connection closes: under fork a worker's children hold copies of it, which would
  // keep it in the epoll set, pointing at a Worker that is gone.
  void unwatch(Worker& w) { ::epoll_ctl(epoll_fd.get(), EPOLL_CTL_DEL, w.conn.fileno(), nullptr); }

  // Hands the batch to w in one system call. When w is already gone (EOFError: it died, e.g. of
  // a chunk before these), the chunks stay in its inflight and handle_exit, reading w's mailbox,
  // sends them elsewhere when w's end of the connection is read. (A chunk must never be lost
  // with a failed send: that made the caller wait forever.)
  void send_batch(Worker& w, std::vector<Chunk>& batch, std::uint8_t flags = 0) {
    const std::uint8_t kind = static_cast<std::uint8_t>(ChunkKind::task) | (w.chunk_us < kShortUs ? kChunkShort : 0) | flags;
    for (auto& c : batch) {
      std::uint64_t id = next_id++;
      std::memcpy(c.data(), &id, 8);
      c.data()[8] = static_cast<char>(kind);
      w.push(std::move(c));
      ++w.sent;
    }
    // Views once every chunk is in place: a short string's bytes move with it.
    frames.clear();
    auto send_frames = [&] {
      if (!frames.empty()) ConnectionAccess::send_bytes_many(w.conn, frames);
      frames.clear();
    };
    try {
      for (auto it = w.inflight.end() - static_cast<std::ptrdiff_t>(batch.size()); it != w.inflight.end(); ++it) {
        if (!it->slab) {
          frames.emplace_back(it->bytes);
          continue;
        }
        send_frames();
        ConnectionAccess::send_slab(w.conn, *it->slab, it->slab_size);
      }
      send_frames();
    } catch (const EOFError&) {
      w.gone = true;
    }
    batch.clear();
  }

  bool accepts(const Worker& w, std::size_t batched) const {
    std::size_t n = w.inflight.size() + batched;
    return n < w.depth() && !w.timed_out && !w.gone &&
           (cfg.maxtasksperchild == 0 || w.sent + static_cast<std::int64_t>(batched) < cfg.maxtasksperchild);
  }

  void handle_reply(Worker& w, const Buffer& msg) { handle_reply(w, msg.data(), msg.size()); }
  void handle_reply(Worker& w, const std::byte* msg, std::size_t size) {
    if (size < kChunkHeader || w.inflight.empty() || std::memcmp(msg, w.inflight.front().data(), 8) != 0)
      throw ProtocolError("a pool worker answered a task it was not given");
    Chunk c = w.pop();
    spares.put(std::move(c.bytes));  // answered: its bytes are not sent again
    c.slab.reset();
    const std::byte* data = msg + kChunkHeader;
    std::size_t n = size - kChunkHeader;
    if (msg[8] == std::byte{1}) {
      if (!c.job) {  // the initializer ran
        init_deaths = 0;
        return;
      }
      try {
        c.job->chunk_done(c.index, data, n);
      } catch (...) {
        fail(c, std::current_exception());
      }
      return;
    }
    std::exception_ptr e;
    try {
      e = std::make_exception_ptr(remote_error_from(data, n));
    } catch (...) {
      e = std::current_exception();
    }
    if (!c.job) {
      set_broken(e);
      return;
    }
    fail(c, e);
  }

  // The worker's time per chunk, from the answers that came since the last ones (the worker was
  // busy all along: it had chunks in flight).
  void measure(Worker& w, Clock::time_point since, std::size_t answers) {
    if (answers == 0) return;
    double us = std::chrono::duration<double, std::micro>(w.running_since - since).count() / static_cast<double>(answers);
    w.chunk_us += (us - w.chunk_us) * 0.5;
  }

  // The answers a dead worker held back (see Mailbox): those of chunks still in flight count as
  // if they had come. The worker is dead, but its bytes are checked all the same.
  void take_held_answers(Worker& w) {
    Mailbox box{w.mailbox.data()};
    std::size_t used = std::min<std::size_t>(box.held_bytes().load(std::memory_order_acquire), kMailboxHeldBytes);
    for (std::size_t at = 0; at + 8 <= used && !w.inflight.empty();) {
      std::uint64_t len;
      std::memcpy(&len, box.held() + at, 8);
      if (len < kChunkHeader || len > used - at - 8) return;
      const std::byte* answer = box.held() + at + 8;
      at += 8 + padded(len);
      std::uint64_t id;
      std::memcpy(&id, answer, 8);
      if (id != chunk_id(w.inflight.front())) continue;  // it came through the socket before the worker died
      handle_reply(w, answer, len);
    }
  }

  void handle_exit(std::size_t i) {
    Worker& w = *workers[i];
    w.proc.join();
    int code = w.proc.exitcode().value_or(255);
    int pid = w.proc.pid().value_or(0);
    take_held_answers(w);
    const std::uint64_t status = Mailbox{w.mailbox.data()}.status().load(std::memory_order_acquire);
    std::deque<Chunk> held;
    held.swap(w.inflight);
    bool timed_out = w.timed_out;
    unwatch(w);
    workers.erase(workers.begin() + static_cast<std::ptrdiff_t>(i));
    --live_workers;
    if (held.empty()) return;  // retired after maxtasksperchild, or stopped
    std::exception_ptr already_broken;
    {
      std::lock_guard lock(mu);
      already_broken = broken;
    }
    if (already_broken) {  // e.g. its initializer failed: what it held fails for that reason
      for (auto& c : held) fail(c, already_broken);
      return;
    }
    // What it was running: its initializer, if that never answered, or else the chunk its status
    // names, unless that one had finished (the worker died between chunks). The others never
    // started: they run elsewhere.
    std::optional<Chunk> running_chunk;
    if (!held.front().job) {
      running_chunk = std::move(held.front());
      held.pop_front();
    }
    std::deque<Chunk> requeue;
    for (auto& c : held) {
      if (!running_chunk && !(status & kChunkFinished) && chunk_id(c) == status) running_chunk = std::move(c);
      else requeue.push_back(std::move(c));
    }
    if (!running_chunk) {
      if (cfg.break_on_crash)  // Python's executor: any worker's death breaks the pool
        set_broken(std::make_exception_ptr(BrokenProcessPool("a worker of the pool died (" + describe_exit(code) +
                                                             ") between tasks; the pool is broken")));
    } else if (Chunk& running = *running_chunk; !running.job) {
      // Died before its initializer (and limits) answered. Once may be a kill from outside; the
      // same death in a row of replacements is the initializer's, and would repeat forever.
      if (++init_deaths >= kInitDeaths)
        set_broken(std::make_exception_ptr(WorkerCrashed(
                       "the pool's workers died " + std::to_string(init_deaths) +
                           " times in a row before their initializer finished (the last, " + std::to_string(pid) + ", " +
                           describe_exit(code) + ")",
                       pid, code, 0, 0)));
    } else if (timed_out) {
      fail(running, std::make_exception_ptr(TimeoutError(
                        "the task ran longer than task_timeout; worker " + std::to_string(pid) + " was killed and replaced")));
    } else if (running.attempts < cfg.max_retries) {
      ++running.attempts;
      requeue.push_front(std::move(running));
    } else {
      std::string how = describe_exit(code);
      auto e = std::make_exception_ptr(WorkerCrashed(
          "worker " + std::to_string(pid) + " " + how + " while running items [" + std::to_string(running.first_item) + ", " +
              std::to_string(running.first_item + running.item_count) + ")",
          pid, code, running.first_item, running.item_count));
      if (cfg.break_on_crash) {
        // Broken first: whoever wakes on this future must already see a broken pool.
        auto broken_error =
            std::make_exception_ptr(BrokenProcessPool("a worker of the pool died (" + how + "); the pool is broken"));
        set_broken(broken_error);
        fail(running, broken_error);
      } else {
        fail(running, e);
      }
    }
    std::lock_guard lock(mu);
    if (broken) {
      for (auto& c : requeue) fail(c, broken);
      return;
    }
    for (auto it = requeue.rbegin(); it != requeue.rend(); ++it) queue.push_front(std::move(*it));
  }

  // The handler's loop. It holds io_mu except while it waits in epoll_wait(), so that a caller
  // can hand a task straight to an idle worker meanwhile (send_now), and read its answer (tend).
  void run() {
    std::unique_lock io(io_mu);
    for (;;) {
      bool stop;
      {
        std::lock_guard lock(mu);
        bool idle = queue.empty() && std::all_of(workers.begin(), workers.end(), [](auto& w) { return w->inflight.empty(); });
        stop = terminating || (closed && idle);
      }
      if (stop) break;
      maintain();
      dispatch();
      int timeout_ms = check_timeouts();
      events.resize(workers.size() + 1);
      const std::uint64_t tends_before = tends;
      io.unlock();
      int r = os::retry([&] { return ::epoll_wait(epoll_fd.get(), events.data(), static_cast<int>(events.size()), timeout_ms); });
      io.lock();
      if (r < 0) os::throw_errno("epoll_wait in the pool");
      events.resize(static_cast<std::size_t>(r));
      read_ready(tends != tends_before);
    }
    shutdown();
  }

  // How long a caller reads for an answer: about as long as this worker's chunks have been
  // taking, when that is short; kTendFor otherwise (a long task's answer is not worth the CPU).
  static Clock::duration tend_budget(const Worker& w) {
    const double us = w.chunk_us * 1.25 + 20;
    const double max_us = std::chrono::duration<double, std::micro>(kTendMax).count();
    if (us > max_us) return kTendFor;
    return std::max<Clock::duration>(kTendFor, std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::micro>(us)));
  }

  // The caller waiting for the answer of a lone task (send_now's, no other chunk in the pool)
  // reads it itself, for a moment (tend_budget), while the handler sleeps on: the answer then
  // wakes one thread, not the handler and then the caller (apply's latency). The handler stops
  // watching that worker meanwhile (an epoll_ctl, not a wake-up), and watches it again after.
  void tend(const JobBase* job) override {
    if (lone.load(std::memory_order_relaxed) != job || cfg.task_timeout > 0 ||
        std::this_thread::get_id() == handler.get_id())
      return;
    std::unique_lock io(io_mu, std::try_to_lock);
    if (!io) return;  // the handler is at work: it reads the answer soon enough
    {
      std::lock_guard lock(mu);
      if (!queue.empty() || terminating) return;
    }
    Worker* mine = nullptr;
    for (auto& w : workers) {
      if (w->inflight.empty()) continue;
      if (mine || w->inflight.size() != 1 || w->inflight.front().job.get() != job) return;
      mine = w.get();
    }
    if (!mine) return;
    ++tends;
    watch(*mine, 0);
    const bool ready = readable_before(mine->conn, Clock::now() + tend_budget(*mine));
    // A worker found dead is left to the handler (its end stays readable, at EOF), so that its
    // exit, and the other jobs that may fail of it, are handled on the pool's thread as always.
    if (ready) read_answers(*mine);
    watch(*mine, EPOLLIN);  // level-triggered: an answer or an EOF that came meanwhile wakes the handler
  }

  // A lone task goes to an idle worker from the caller's thread, when nothing is queued before
  // it and the handler is waiting: one thread hop less on the way there (apply's latency).
  bool send_now(Chunk& c) {
    if (cfg.task_timeout > 0 || std::this_thread::get_id() == handler.get_id()) return false;
    std::unique_lock io(io_mu, std::try_to_lock);
    if (!io) return false;  // the handler is busy: it dispatches the queue soon enough
    {
      std::lock_guard lock(mu);
      if (broken || closed || !queue.empty()) return false;
    }
    // Only into an idle pool (a lone apply): tasks that come faster than the workers answer go
    // through the queue, where the handler batches them.
    if (std::any_of(workers.begin(), workers.end(), [](auto& w) { return !w->inflight.empty(); })) return false;
    for (auto& w : workers) {
      if (!accepts(*w, 0)) continue;
      lone.store(c.job.get(), std::memory_order_relaxed);
      direct.clear();
      direct.push_back(std::move(c));
      send_batch(*w, direct, kChunkLone);
      return true;
    }
    return false;
  }

  void maintain() {
    {
      std::lock_guard lock(mu);
      if (broken || terminating) return;
    }
    bool started = false;
    while (static_cast<int>(workers.size()) < cfg.processes) {
      try {
        start_worker();
        ++live_workers;
        started = true;
      } catch (const OSError& e) {
        // Out of processes or descriptors: the pool cannot keep its size, so every task, now and
        // later, fails with the cause rather than waiting for a worker that never comes.
        set_broken(std::make_exception_ptr(OSError(
                       "the pool cannot start a worker (" + std::to_string(workers.size()) + " of " +
                           std::to_string(cfg.processes) + " running): " + e.what(),
                       e.code())));
        return;
      } catch (...) {
        set_broken(std::current_exception());
        return;
      }
    }
    if (started) update_pids();
  }

  void update_pids() {
    std::vector<int> p;
    for (auto& w : workers) p.push_back(w->proc.pid().value_or(0));
    std::lock_guard lock(mu);
    pids = std::move(p);
  }

  void dispatch() {
    // Breadth first: every worker gets a chunk before any gets a second one, so that a short
    // map (or a few apply_async calls) is spread over the workers instead of queued behind one.
    // Then each worker's share goes in one system call.
    batches.resize(workers.size());
    batch_bytes.assign(workers.size(), 0);
    {
      std::lock_guard lock(mu);
      for (bool gave = true; gave && !queue.empty();) {
        gave = false;
        for (std::size_t i = 0; i < workers.size() && !queue.empty(); ++i) {
          Worker& w = *workers[i];
          auto& batch = batches[i];
          if (!accepts(w, batch.size())) continue;
          std::size_t size = w.in_socket(queue.front());
          bool idle = w.inflight.empty() && batch.empty();
          if (!idle && w.waiting_bytes + batch_bytes[i] + size > kPipelineMax) continue;
          if (!idle) batch_bytes[i] += size;  // as Worker::waiting_bytes counts
          batch.push_back(queue.pop_front());
          gave = true;
        }
      }
    }
    for (std::size_t i = 0; i < workers.size(); ++i)
      if (!batches[i].empty()) send_batch(*workers[i], batches[i]);
  }

  // How long to wait (the nearest task_timeout; -1: no limit). Kills the workers whose task is
  // past it.
  int check_timeouts() {
    int timeout_ms = -1;
    if (cfg.task_timeout > 0) {
      auto now = Clock::now();
      const auto limit = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg.task_timeout));
      for (auto& w : workers) {
        if (w->inflight.empty() || !w->inflight.front().job || w->timed_out) continue;
        // The task's time counts from when the worker started it (its mailbox says), not from
        // when it was sent: a worker still starting up, or busy with a held-back chunk, has not.
        // One not started yet is looked at again within the limit.
        Mailbox box{w->mailbox.data()};
        Clock::time_point deadline = now + limit;
        if ((box.status().load(std::memory_order_acquire) & ~kChunkFinished) == chunk_id(w->inflight.front()))
          deadline = Clock::time_point(std::chrono::nanoseconds(box.started_ns().load(std::memory_order_relaxed))) + limit;
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1;
        if (ms <= 0) {
          w->timed_out = true;
          w->proc.kill();
          continue;
        }
        timeout_ms = timeout_ms < 0 ? static_cast<int>(ms) : std::min(timeout_ms, static_cast<int>(ms));
      }
    }
    return timeout_ms;
  }

  // After epoll_wait: every worker it named is read. When a caller read a worker meanwhile
  // (tend), the answer the wait saw may be gone: each is looked at again, and skipped if there
  // is nothing (a read would block). Only this thread removes workers, so the addresses hold.
  void read_ready(bool recheck) {
    std::vector<Worker*> dead;
    for (const epoll_event& ev : events) {
      auto* w = static_cast<Worker*>(ev.data.ptr);
      if (!w) {
        std::uint64_t v;
        (void)!::read(wake_fd.get(), &v, sizeof v);
        continue;
      }
      if (recheck && !w->conn.poll(seconds(0))) continue;
      if (!read_answers(*w)) dead.push_back(w);
    }
    // Removed last: the events name workers by address.
    for (Worker* w : dead) {
      auto at = std::find_if(workers.begin(), workers.end(), [&](auto& p) { return p.get() == w; });
      handle_exit(static_cast<std::size_t>(at - workers.begin()));
    }
    if (!dead.empty()) update_pids();
  }

  // Every answer w has sent (it blocks for the first; the caller knows one is there). False when
  // w is gone: its end closed, or it sent garbage and cannot be trusted further (killed).
  bool read_answers(Worker& w) {
    const Clock::time_point since = w.running_since;
    std::size_t answers = 0;
    try {
      // Every answer already read ahead; the next wait wakes for the rest.
      do {
        if (auto answer = ConnectionAccess::peek_buffered(w.conn)) {  // read ahead: no copy
          handle_reply(w, answer->data(), answer->size());
          ConnectionAccess::consume_buffered(w.conn);
        } else {
          handle_reply(w, w.conn.recv_buffer());
        }
        ++answers;
      } while (ConnectionAccess::frame_buffered(w.conn));
      w.running_since = Clock::now();  // of the chunk now at the front, near enough
      measure(w, since, answers);
      return true;
    } catch (const EOFError&) {
      return false;
    } catch (const std::exception&) {
      w.proc.kill();
      return false;
    }
  }

  void shutdown() {
    bool kill_now;
    int sig;
    {
      std::lock_guard lock(mu);
      kill_now = terminating;
      sig = terminate_signal;
    }
    for (auto& w : workers) {
      if (kill_now) {
        try {
          if (sig == SIGKILL) w->proc.kill(); else w->proc.terminate();
        } catch (...) {
        }
      }
      // An explicit stop, not just EOF: under fork a worker holds copies of the other workers'
      // connections (even of its own parent end), so EOF alone may never come.
      try {
        const char stop[kChunkHeader] = {0, 0, 0, 0, 0, 0, 0, 0, static_cast<char>(ChunkKind::stop)};
        if (!kill_now) w->conn.send_bytes(std::string_view(stop, sizeof stop));
      } catch (...) {
      }
      unwatch(*w);
      w->conn.close();
    }
    for (auto& w : workers) {
      try {
        w->proc.join();
      } catch (...) {
      }
    }
    auto e = std::make_exception_ptr(Error("the pool was terminated before the task finished"));
    for (auto& w : workers)
      for (auto& c : w->inflight) fail(c, e);
    workers.clear();
    live_workers = 0;
    std::deque<Chunk> pending;
    {
      std::lock_guard lock(mu);
      pending = queue.take_all();
      pids.clear();
    }
    for (auto& c : pending) fail(c, e);
  }
  explicit LocalEngine(PoolConfig config) {
    cfg = std::move(config);
    if (cfg.processes < 1) throw std::invalid_argument("mproc: a pool needs at least one process");
    title = method_title(cfg.context);
    if (cfg.initializer) initializer = std::make_shared<const Task>(*cfg.initializer);
    wake_fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd) os::throw_errno("eventfd for the pool");
    epoll_fd.reset(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_fd) os::throw_errno("epoll_create1 for the pool");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = nullptr;  // the wake-up
    if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake_fd.get(), &ev) != 0) os::throw_errno("epoll_ctl for the pool");
    // The first workers start here, on the caller's thread (as Python does), before the handler
    // thread exists: a fork then happens in a process with no thread of ours.
    maintain();
    std::exception_ptr failed;
    {
      std::lock_guard lock(mu);
      failed = broken;
    }
    if (failed) {  // shutdown() takes mu itself: never call it with mu held
      shutdown();
      std::rethrow_exception(failed);
    }
    handler = std::thread([this] { run(); });
  }

  ~LocalEngine() override {
    terminate(SIGTERM);
    join();
  }

  void submit(std::vector<Chunk> chunks) override {
    if (chunks.size() == 1 && send_now(chunks.front())) return;
    QueueEngine::submit(std::move(chunks));
  }

  int processes() const noexcept override { return cfg.processes; }

  std::vector<int> worker_pids() const override {
    std::lock_guard lock(mu);
    return pids;
  }
};

std::unique_ptr<PoolEngine> make_local_engine(PoolConfig config) { return std::make_unique<LocalEngine>(std::move(config)); }

}  // namespace mproc::detail
