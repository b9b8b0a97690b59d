// The engine under Pool and ProcessPoolExecutor: chunks of work, the jobs they belong to, and
// the chunk codecs the worker side runs. Not API.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <variant>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/context.hpp"
#include "mproc/detail/callable.hpp"
#include "mproc/errors.hpp"
#include "mproc/sharedctypes.hpp"

namespace mproc {

/// Limits applied (setrlimit) in every worker of a Pool or ProcessPoolExecutor before its
/// initializer and first task, under every start method, so that one runaway input cannot take
/// the machine down. 0: no limit (the worker keeps what it inherited).
///
///     mproc::Pool pool({.limits = {.address_space = 2ull << 30, .cpu_seconds = 60, .open_files = 256}});
///
/// - address_space (bytes, RLIMIT_AS): the worker's whole virtual memory, including what it
///   inherited under fork; an allocation beyond it fails, so the task's std::bad_alloc comes back
///   as RemoteError (or the worker dies, e.g. of a stack overflow, as WorkerCrashed).
/// - cpu_seconds (RLIMIT_CPU): CPU time per chunk of work, counted from when the worker takes it
///   (rounded up to a whole second); a task over it is killed by SIGXCPU and fails with
///   WorkerCrashed; the worker is replaced.
/// - open_files (RLIMIT_NOFILE): descriptors the worker may hold, the pool's own included (about
///   a dozen); an open beyond it fails with EMFILE inside the task.
/// Neither the worker nor its task can raise address_space or open_files again.
struct ResourceLimits {
  std::uint64_t address_space{0};
  std::uint64_t cpu_seconds{0};
  std::uint64_t open_files{0};
  bool any() const noexcept { return address_space != 0 || cpu_seconds != 0 || open_files != 0; }
};

}  // namespace mproc

namespace mproc::detail {

// ---------------------------------------------------------------------------------------------
// Jobs and chunks (parent side)

/// What a chunk of work reports to. Called on the pool's handler thread, one call at a time.
class JobBase {
 public:
  virtual ~JobBase() = default;
  /// The encoded result of chunk `index`. May throw (a malformed result): the chunk then fails.
  virtual void chunk_done(std::size_t index, const std::byte* data, std::size_t n) = 0;
  virtual void chunk_failed(std::size_t index, std::exception_ptr error) = 0;
};

/// Bytes on the wire to a worker: [id: 8][kind | flags: 1][task written by a thunk].
constexpr std::size_t kChunkHeader = 9;
enum class ChunkKind : std::uint8_t { task = 1, init = 2, stop = 3 };
/// Flag on a chunk the pool expects to run briefly: the worker may hold the previous chunk's
/// answer back while it runs this one, to send both in one system call.
constexpr std::uint8_t kChunkShort = 0x80;
/// Flag on a task sent alone into an idle pool, whose caller waits for its answer (apply in a
/// loop): the worker then looks for its next chunk for a moment before it sleeps.
constexpr std::uint8_t kChunkLone = 0x40;
/// In a worker's status word: the chunk whose id is the rest has finished (its answer was sent,
/// or is held back in the mailbox). Without it, the chunk is running.
constexpr std::uint64_t kChunkFinished = std::uint64_t{1} << 63;
/// A worker's mailbox (see src/pool/pool_core.cpp): its status words, then the answers it holds
/// back, in 64-bit words of shared memory.
constexpr std::size_t kMailboxHeldBytes = 64 * 1024 + 32 * 16;
constexpr std::size_t kMailboxWords = 3 + kMailboxHeldBytes / 8;

struct Slab;  // shared memory (src/reduction/shm_payload.hpp)

struct Chunk {
  std::shared_ptr<JobBase> job;  // null for the initializer
  std::size_t index = 0;
  std::size_t first_item = 0;  // for error reports: which input items this chunk holds
  std::size_t item_count = 1;
  std::string bytes;  // header space + payload
  int attempts = 0;
  /// Or the header and payload are the first slab_size bytes of a slab (bytes is then empty):
  /// an MPI rank received them there, and the worker's connection passes the slab on as it is.
  std::shared_ptr<Slab> slab;
  std::size_t slab_size = 0;

  char* data();
  std::size_t size() const { return slab ? slab_size : bytes.size(); }
};

/// A chunk whose payload is written by save(ctx, archive); the header is filled in at dispatch.
/// buffer: the string to write into (its capacity is reused; see PoolCore::take_buffer).
Chunk make_chunk(std::shared_ptr<JobBase> job, std::size_t index, std::size_t first, std::size_t count,
                 void (*save)(const void* ctx, OutArchive&), const void* ctx, std::string buffer = {});
/// The same with any callable save(archive), called in place (no std::function to allocate).
template <class Save>
Chunk make_chunk(std::shared_ptr<JobBase> job, std::size_t index, std::size_t first, std::size_t count, const Save& save,
                 std::string buffer = {}) {
  return make_chunk(
      std::move(job), index, first, count, [](const void* f, OutArchive& ar) { (*static_cast<const Save*>(f))(ar); }, &save,
      std::move(buffer));
}

/// Workers when none is asked for: cpu_count(), or 0 under the mpi context (every worker rank).
int default_workers(const Context& ctx);

struct PoolConfig {
  int processes = 1;  // 0 under the mpi context: every worker rank there is
  std::optional<Context> context;
  std::optional<Task> initializer;
  int maxtasksperchild = 0;
  double task_timeout = 0;  // seconds; 0: none
  int max_retries = 0;
  bool break_on_crash = false;  // the executor's compatibility mode: a crash breaks the pool
  ResourceLimits limits;
};

/// How a pool reaches its workers: processes on this machine (src/pool/pool_core.cpp) or MPI
/// ranks (src/mpi/). PoolCore's methods, as one engine implements them.
class PoolEngine {
 public:
  virtual ~PoolEngine() = default;
  virtual void submit(std::vector<Chunk> chunks) = 0;
  virtual bool cancel(const JobBase* job) = 0;
  virtual void cancel_all(std::exception_ptr error) = 0;
  virtual void close() = 0;
  virtual void terminate(int signal) = 0;
  virtual void join() = 0;
  virtual int processes() const noexcept = 0;
  virtual std::vector<int> worker_pids() const = 0;
  virtual std::string take_buffer() = 0;
  /// Called by a map's writer between batches of chunks: returns when the engine has room for
  /// more (see ChunkQueue), at once if it is closed or the caller is its handler thread.
  virtual void wait_for_room() {}
  /// Called by a thread about to wait for job's answer: an engine may let it read that answer
  /// itself for a moment, if job is all the pool has to do. Returns when it did, or did not.
  virtual void tend(const JobBase* /*job*/) {}
};

class PoolCore {
 public:
  explicit PoolCore(PoolConfig config);
  ~PoolCore();
  PoolCore(const PoolCore&) = delete;
  PoolCore& operator=(const PoolCore&) = delete;

  /// Queues chunks; throws mproc::Error once closed or terminated (or BrokenProcessPool).
  void submit(std::vector<Chunk> chunks);
  /// Removes the job's chunks that no worker has started; true when any were removed.
  bool cancel(const JobBase* job);
  /// Fails every chunk that no worker has started with error.
  void cancel_all(std::exception_ptr error);
  void close();
  /// Stops the workers now; every pending chunk fails.
  void terminate(int signal = 15);
  /// Waits for the handler and the workers to end (after close or terminate).
  void join();
  int processes() const noexcept;
  std::vector<int> worker_pids() const;
  /// The buffer of an answered chunk (empty if none is kept), for make_chunk: a map's large
  /// chunks then reuse memory instead of making the heap grow and shrink on every map.
  std::string take_buffer();
  /// See PoolEngine::wait_for_room.
  void wait_for_room();
  /// See PoolEngine::tend.
  void tend(const JobBase* job);

 private:
  std::unique_ptr<PoolEngine> impl_;
};

/// The chunk of one call (apply_async, the executor's submit): written straight from the
/// caller's objects, no copy of the arguments kept, into the buffer of an answered chunk if the
/// pool keeps one. Fn and Args are the decayed types the worker calls with.
template <class Fn, class... Args, class F, class... A>
Chunk make_call_chunk(PoolCore& core, std::shared_ptr<JobBase> job, const F& f, const A&... args) {
  auto save = [&](OutArchive& ar) { save_call<Fn, Args...>(ar, f, args...); };
  return make_chunk(std::move(job), 0, 0, 1, save, core.take_buffer());
}

/// What a worker needs before its first task. It travels as an argument of the worker's Process,
/// not through the worker's connection, so that descriptors in the initializer's arguments (a
/// Value, a Lock, a Connection) reach the worker the way a Process's arguments do: in memory
/// under fork, beside the start-up message under spawn and forkserver.
struct WorkerSetup {
  std::int64_t maxtasks = 0;
  ResourceLimits limits;
  bool handshake = false;  // the worker reports its initializer (and limits) before any task
  std::shared_ptr<const Task> initializer;  // here, and in a fork child: run in memory
  std::string saved_initializer;  // in a spawned or forkserver child: written by Task::save
  /// Shared with the pool: which chunk the worker runs and the answers it holds back, so that
  /// when the worker dies the pool knows which task killed it and loses no finished one.
  RawArray<std::uint64_t> mailbox;  // kMailboxWords, made by the pool

  template <class A>
  void save(A& ar) const {
    std::string init;
    if (initializer) {
      OutArchive inner(init);  // descriptors go to the start-up message's FdExportScope
      initializer->save(inner);
    }
    ar(maxtasks, limits.address_space, limits.cpu_seconds, limits.open_files, handshake, init, mailbox);
  }
  template <class A>
  void load(A& ar) {
    ar(maxtasks, limits.address_space, limits.cpu_seconds, limits.open_files, handshake, saved_initializer, mailbox);
  }
};

/// The function a pool worker runs.
void pool_worker_main(Connection conn, WorkerSetup setup);

// ---------------------------------------------------------------------------------------------
// Results (shared between the handler thread and the caller)

template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, std::monostate, R>;

template <class R>
struct ResultState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<stored_t<R>> value;
  std::exception_ptr error;
  std::function<void(const stored_t<R>&)> callback;
  std::function<void(std::exception_ptr)> error_callback;
  std::vector<std::function<void()>> done_callbacks;
  /// The pool and the job of a single call (apply, submit): a caller about to wait for it may
  /// read its answer itself (see tend). Empty for the results of maps.
  std::weak_ptr<PoolCore> core;
  const JobBase* job = nullptr;

  /// Before a wait for the answer: a thread waiting for a single call's answer reads it itself
  /// for a moment, when nothing else is in the pool (one thread hop less: apply's latency).
  /// Not with callbacks, which run on the pool's handler thread; not for a short timeout.
  void tend(std::optional<seconds> timeout) {
    if (!job || (timeout && *timeout < std::chrono::milliseconds(1))) return;
    {
      std::lock_guard lock(mu);
      if (done || callback || error_callback || !done_callbacks.empty()) return;
    }
    if (auto c = core.lock()) c->tend(job);
  }

  void finish(std::optional<stored_t<R>> v, std::exception_ptr e) {
    std::vector<std::function<void()>> todo;
    {
      std::lock_guard lock(mu);
      if (done) return;  // a map's first error wins
      value = std::move(v);
      error = e;
      done = true;
      todo.swap(done_callbacks);
    }
    cv.notify_all();
    run_callbacks(todo);
  }

  void run_callbacks(std::vector<std::function<void()>>& todo) {
    try {
      if (error && error_callback) error_callback(error);
      if (!error && callback) callback(*value);
      for (auto& f : todo) f();
    } catch (const std::exception& ex) {  // a callback must not take the pool's handler down
      report_callback_error(ex.what());
    } catch (...) {
      report_callback_error("unknown exception");
    }
  }

  static void report_callback_error(const char* what);
};

void print_callback_error(const char* what);
template <class R>
void ResultState<R>::report_callback_error(const char* what) {
  print_callback_error(what);
}

// ---------------------------------------------------------------------------------------------
// Chunk codecs: a count, then the items (one memcpy for plain types).

template <class T>
constexpr bool is_bulk = (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || is_memcpy_type<T>;

template <class T>
void save_items(OutArchive& ar, const std::vector<T>& items, std::size_t first, std::size_t count) {
  ar(static_cast<std::uint64_t>(count));
  if constexpr (is_bulk<T>) {
    ar.saveBinary(items.data() + first, count * sizeof(T));
  } else {
    for (std::size_t i = first; i < first + count; ++i) save_value(ar, static_cast<const T&>(items[i]));
  }
}

/// save_items for a random-access range, read in place (no copy of the whole input first):
/// plain types of a contiguous range in one block, of another range item by item into the buffer.
template <class Range>
void save_range_items(OutArchive& ar, Range& items, std::size_t first, std::size_t count) {
  using T = std::ranges::range_value_t<Range>;
  ar(static_cast<std::uint64_t>(count));
  auto it = std::ranges::begin(items) + static_cast<std::ranges::range_difference_t<Range>>(first);
  if constexpr (is_bulk<T> && std::ranges::contiguous_range<Range>) {
    ar.saveBinary(std::to_address(it), count * sizeof(T));
  } else if constexpr (is_bulk<T>) {
    std::string& out = ar.buffer();
    std::size_t at = out.size();
    out.resize(at + count * sizeof(T));
    char* p = out.data() + at;
    for (std::size_t i = 0; i < count; ++i, ++it, p += sizeof(T)) {
      const T v = *it;
      std::memcpy(p, &v, sizeof(T));
    }
  } else {
    for (std::size_t i = 0; i < count; ++i, ++it) save_value(ar, static_cast<const T&>(*it));
  }
}

/// Reads a count and checks it (against the expected one, or the bytes left).
std::uint64_t load_count(InArchive& ar, std::optional<std::uint64_t> expected);

template <class T>
void load_items(InArchive& ar, std::vector<T>& out, std::size_t first, std::size_t count) {
  if constexpr (is_bulk<T>) {
    ar.loadBinary(out.data() + first, count * sizeof(T));
  } else {
    for (std::size_t i = first; i < first + count; ++i) {
      T v{};
      load_value(ar, v);
      out[i] = std::move(v);
    }
  }
}

template <bool Star, class F, class T>
decltype(auto) call_item(F& f, T& item) {
  if constexpr (Star)
    return std::apply(f, item);
  else
    return std::invoke(f, item);
}

template <bool Star, class F, class T>
using item_result_t = decltype(call_item<Star>(std::declval<F&>(), std::declval<T&>()));

/// What f returns for an item of In (a tuple's elements as arguments when Star).
template <bool Star, class F, class In>
using map_result_t = std::decay_t<item_result_t<Star, std::decay_t<F>, std::ranges::range_value_t<In>>>;

/// Worker side of a map chunk: target, items in, results out.
template <class F, class T, bool Star>
void map_chunk_thunk(InArchive& in, std::string* out) {
  using R = std::decay_t<item_result_t<Star, F, T>>;
  if constexpr (is_bulk<T> && is_bulk<R>) {
    // Plain items in, plain results out: read in place and write straight into *out, with no
    // vector of items or of results (a fresh allocation per chunk, each page of it faulted in).
    F f{};
    std::uint64_t n = 0;
    const unsigned char* src = nullptr;
    try {
      f = load_target<F>(in);
      n = load_count(in, std::nullopt);
      src = in.take(static_cast<std::size_t>(n) * sizeof(T));
    } catch (const cereal::Exception& e) {
      throw_decode_failed("a map chunk", e.what());
    }
    if (in.left() != 0) throw_trailing_bytes(in.left(), "a map chunk");
    out->reserve(out->size() + sizeof n + static_cast<std::size_t>(n) * sizeof(R));
    out->append(reinterpret_cast<const char*>(&n), sizeof n);
    // Results go through a small block that stays in cache, appended a block at a time: a
    // resize of *out first would write every byte of it twice (zeros, then the results).
    constexpr std::size_t kBlock = 4096 / sizeof(R) > 0 ? 4096 / sizeof(R) : 1;
    alignas(R) unsigned char block[kBlock * sizeof(R)];
    for (std::size_t i = 0; i < n;) {
      std::size_t k = std::min<std::size_t>(kBlock, static_cast<std::size_t>(n) - i);
      for (std::size_t j = 0; j < k; ++j, src += sizeof(T)) {
        T x;
        std::memcpy(static_cast<void*>(&x), src, sizeof(T));
        const R r = call_item<Star>(f, x);
        std::memcpy(block + j * sizeof(R), static_cast<const void*>(&r), sizeof(R));
      }
      out->append(reinterpret_cast<const char*>(block), k * sizeof(R));
      i += k;
    }
    return;
  }
  F f{};
  std::vector<T> items;
  try {
    f = load_target<F>(in);
    auto n = load_count(in, std::nullopt);
    items.resize(n);
    load_items(in, items, 0, n);
  } catch (const cereal::Exception& e) {
    throw_decode_failed("a map chunk", e.what());
  }
  if (in.left() != 0) throw_trailing_bytes(in.left(), "a map chunk");
  std::vector<R> results;
  results.reserve(items.size());
  for (auto& x : items) results.push_back(call_item<Star>(f, x));
  OutArchive ar(*out);
  save_items(ar, results, 0, results.size());
}

}  // namespace mproc::detail
