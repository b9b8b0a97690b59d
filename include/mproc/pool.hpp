// mproc/pool.hpp — Python's multiprocessing.pool: Pool, AsyncResult, imap iterators.
#pragma once

#include <chrono>
#include <cstddef>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/context.hpp"
#include "mproc/detail/pool_core.hpp"
#include "mproc/detail/timeout.hpp"
#include "mproc/errors.hpp"
#include "mproc/progress.hpp"

namespace mproc {

/// A call to run later in another process: a target and its arguments, checked like a
/// Process target (Python's initializer + initargs).
///
///     mproc::Pool pool({.initializer = mproc::call(load_plugins, "plugins/")});
class Call {
 public:
  Call() = default;
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, Call>)
  Call(F f) : task_(detail::make_task(std::move(f))) {}  // NOLINT: implicit, as `.initializer = f`
  explicit Call(detail::Task task) : task_(std::move(task)) {}
  const std::optional<detail::Task>& task() const noexcept { return task_; }

 private:
  std::optional<detail::Task> task_;
};

/// A Call with arguments (Python: initializer=f, initargs=(args...)).
template <class F, class... Args>
Call call(F&& f, Args&&... args) {
  return Call(detail::make_task<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f), std::forward<Args>(args)...));
}

/// Python's Pool keyword arguments, plus what Python lacks.
struct PoolOptions {
  /// Empty: cpu_count() (the mpi context: every free worker rank; see mproc/mpi.hpp).
  std::optional<int> processes{};
  /// Run once in each worker (and each replacement) before its first task. Its arguments may
  /// hold shared objects with descriptors (Value, Array, Lock, Queue, Connection) under every
  /// start method; a task's arguments may not (submitting one throws mproc::Error): hand them
  /// over here and keep them in the worker, as Python's `initargs`.
  Call initializer{};
  /// Replace a worker after this many tasks (0: never).
  int maxtasksperchild{0};
  /// Empty: the start method in force.
  std::optional<Context> context{};
  /// A task running longer is stopped: its worker is killed and replaced, the task fails with
  /// TimeoutError. Empty: no limit.
  std::optional<seconds> task_timeout{};
  /// A task whose worker crashed is run again up to this many times before it fails.
  int max_retries{0};
  /// Per-worker address space, CPU seconds per chunk and open files (see ResourceLimits).
  ResourceLimits limits{};
  /// Reports completed/total items of map, starmap, imap and imap_unordered (and their async
  /// forms): Progress::bar() draws a bar on a terminal (see mproc/progress.hpp).
  Progress progress{};
};

/// Python: multiprocessing.pool.AsyncResult. R = void for a call without a result.
template <class R>
class AsyncResult {
 public:
  using value_type = detail::stored_t<R>;
  AsyncResult() = default;
  explicit AsyncResult(std::shared_ptr<detail::ResultState<R>> s) : s_(std::move(s)) {}

  /// The result; rethrows the task's error (RemoteError, WorkerCrashed, TimeoutError, ...).
  value_type get() {
    wait();
    return take();
  }
  /// Throws mproc::TimeoutError when the result is not ready within timeout.
  value_type get(seconds timeout) {
    if (!wait_for(timeout, "AsyncResult.get")) throw TimeoutError("the result was not ready within the timeout");
    return take();
  }
  void wait() const {
    s_->tend(std::nullopt);
    std::unique_lock lock(s_->mu);
    s_->cv.wait(lock, [&] { return s_->done; });
  }
  /// True when ready.
  bool wait(seconds timeout) const { return wait_for(timeout, "AsyncResult.wait"); }
  bool ready() const {
    std::lock_guard lock(s_->mu);
    return s_->done;
  }
  /// Throws mproc::Error when not ready yet (Python: ValueError).
  bool successful() const {
    std::lock_guard lock(s_->mu);
    if (!s_->done) throw Error("the result is not ready");
    return !s_->error;
  }

 private:
  friend class Pool;
  bool wait_for(seconds timeout, const char* call) const {
    s_->tend(timeout);
    std::unique_lock lock(s_->mu);
    return detail::wait_for(s_->cv, lock, timeout, [&] { return s_->done; }, call);
  }
  value_type take() {
    std::lock_guard lock(s_->mu);
    if (s_->error) std::rethrow_exception(s_->error);
    return *s_->value;
  }
  /// get() of a result no one else can see and without callbacks (Pool::map's and apply's
  /// own): the value is moved out instead of copied (a map of 1e6 items copied 8 MB).
  value_type get_only() {
    wait();
    std::lock_guard lock(s_->mu);
    if (s_->error) std::rethrow_exception(s_->error);
    return std::move(*s_->value);
  }
  std::shared_ptr<detail::ResultState<R>> s_;
};

/// Success and error callbacks for the *_async methods; both run on the pool's handler thread.
template <class R>
struct Callbacks {
  std::function<void(const detail::stored_t<R>&)> callback{};
  std::function<void(std::exception_ptr)> error_callback{};
};

namespace detail {
template <class R>
class IMapState;
}

/// Results of imap / imap_unordered, as they come; a range (`for (auto r : pool.imap(f, xs))`)
/// and Python's next(timeout). An error of a task is thrown when its result would be next.
template <class R>
class IMapIterator {
 public:
  explicit IMapIterator(std::shared_ptr<detail::IMapState<R>> s) : s_(std::move(s)) {}
  /// The next result; empty at the end. Throws TimeoutError when none comes within timeout.
  std::optional<R> next(std::optional<seconds> timeout = std::nullopt) { return s_->next(timeout); }

  class iterator {
   public:
    using value_type = R;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(IMapIterator* owner) : owner_(owner) { ++*this; }
    const R& operator*() const { return *current_; }
    iterator& operator++() {
      current_ = owner_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !current_; }

   private:
    IMapIterator* owner_ = nullptr;
    std::optional<R> current_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::shared_ptr<detail::IMapState<R>> s_;
};

/// A pool of worker processes (Python: multiprocessing.Pool).
///
///     mproc::Pool pool({.processes = 4});
///     std::vector<int> squares = pool.map(square, std::vector<int>{1, 2, 3});
///
/// A task's exception comes back as RemoteError; a worker that dies fails only the task it held
/// (WorkerCrashed), is replaced, and the pool goes on. The destructor terminates the workers,
/// as leaving Python's `with Pool() as p:` does. The pool's methods are thread-safe. Create the
/// pool in a thread that outlives it: workers are tied to the thread that started them.
class Pool {
 public:
  explicit Pool(PoolOptions options = {});
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;
  Pool(Pool&&) noexcept = default;
  Pool& operator=(Pool&&) noexcept = default;

  /// Python: apply(f, args). Blocks for the result.
  template <class F, class... Args>
  auto apply(F&& f, Args&&... args) {
    return apply_async(std::forward<F>(f), std::forward<Args>(args)...).get_only();
  }

  template <class F, class... Args>
  auto apply_async(F&& f, Args&&... args) {
    using R = std::invoke_result_t<std::decay_t<F>&, std::decay_t<Args>&...>;
    return apply_async(Callbacks<R>{}, std::forward<F>(f), std::forward<Args>(args)...);
  }

  template <class R, class F, class... Args>
  AsyncResult<R> apply_async(Callbacks<R> callbacks, F&& f, Args&&... args);

  /// Python: map(f, iterable, chunksize). Results in input order; the first error is thrown.
  template <class F, std::ranges::input_range In>
  auto map(F&& f, In&& items, std::optional<std::size_t> chunksize = std::nullopt) {
    return map_async(std::forward<F>(f), std::forward<In>(items), chunksize).get_only();
  }
  /// Writes the chunks on the calling thread and returns once the pool has them all; an input of
  /// more than about 16 MiB is written as the workers take it (the pool holds at most that much
  /// unsent), so the call returns when all but the tail has been sent, not at once.
  template <class F, std::ranges::input_range In>
  auto map_async(F&& f, In&& items, std::optional<std::size_t> chunksize = std::nullopt) {
    using R = detail::map_result_t<false, F, In>;
    return map_impl<false, R>(std::forward<F>(f), std::forward<In>(items), chunksize, Callbacks<std::vector<R>>{});
  }
  template <class R, class F, std::ranges::input_range In>
  AsyncResult<std::vector<R>> map_async(Callbacks<std::vector<R>> callbacks, F&& f, In&& items,
                                        std::optional<std::size_t> chunksize = std::nullopt) {
    return map_impl<false, R>(std::forward<F>(f), std::forward<In>(items), chunksize, std::move(callbacks));
  }

  /// Python: starmap(f, iterable_of_tuples): f(*item) for each item.
  template <class F, std::ranges::input_range In>
  auto starmap(F&& f, In&& items, std::optional<std::size_t> chunksize = std::nullopt) {
    return starmap_async(std::forward<F>(f), std::forward<In>(items), chunksize).get_only();
  }
  template <class F, std::ranges::input_range In>
  auto starmap_async(F&& f, In&& items, std::optional<std::size_t> chunksize = std::nullopt) {
    using R = detail::map_result_t<true, F, In>;
    return map_impl<true, R>(std::forward<F>(f), std::forward<In>(items), chunksize, Callbacks<std::vector<R>>{});
  }

  /// Python: imap(f, iterable, chunksize) with 3.14's buffersize: the input is read lazily, at
  /// most `buffersize` chunks ahead of what was consumed (default: 4 per worker).
  template <class F, std::ranges::input_range In>
  auto imap(F&& f, In&& items, std::size_t chunksize = 1, std::optional<std::size_t> buffersize = std::nullopt) {
    return imap_impl<false>(std::forward<F>(f), std::forward<In>(items), chunksize, buffersize);
  }
  /// Python: imap_unordered: results as they finish.
  template <class F, std::ranges::input_range In>
  auto imap_unordered(F&& f, In&& items, std::size_t chunksize = 1, std::optional<std::size_t> buffersize = std::nullopt) {
    return imap_impl<true>(std::forward<F>(f), std::forward<In>(items), chunksize, buffersize);
  }

  /// No more tasks; workers exit once the queued ones are done.
  void close();
  /// Stops the workers now; unfinished results fail with mproc::Error.
  void terminate();
  /// Waits for the workers to exit; close() or terminate() first.
  void join();
  int processes() const;
  /// Pids of the current workers (they change as workers are replaced).
  std::vector<int> worker_pids() const;

 private:
  template <bool Star, class R, class F, class In>
  AsyncResult<std::vector<R>> map_impl(F&& f, In&& items, std::optional<std::size_t> chunksize,
                                       Callbacks<std::vector<R>> callbacks);
  template <bool Unordered, class F, class In>
  auto imap_impl(F&& f, In&& items, std::size_t chunksize, std::optional<std::size_t> buffersize);

  std::size_t default_chunksize(std::size_t n) const;
  explicit Pool(std::shared_ptr<detail::PoolCore> core) : core_(std::move(core)) {}
  friend class ProcessPoolExecutor;
  std::shared_ptr<detail::PoolCore> core_;
  Progress progress_;
};

}  // namespace mproc

#include "mproc/detail/pool_impl.hpp"
