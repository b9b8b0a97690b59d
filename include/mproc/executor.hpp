// mproc/executor.hpp — Python's concurrent.futures.ProcessPoolExecutor, Future, as_completed, wait.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mproc/detail/timeout.hpp"
#include "mproc/pool.hpp"

namespace mproc {

/// Python's ProcessPoolExecutor keyword arguments.
struct ExecutorOptions {
  /// Empty: cpu_count() (the mpi context: every free worker rank; see mproc/mpi.hpp).
  std::optional<int> max_workers{};
  /// Empty: the start method in force.
  std::optional<Context> mp_context{};
  /// As PoolOptions::initializer: its arguments may carry shared objects to every worker.
  Call initializer{};
  int max_tasks_per_child{0};
  /// Python's behaviour: a worker's death breaks the whole pool (BrokenProcessPool for every
  /// pending future and every later submit). Off by default: only the task fails (WorkerCrashed).
  bool break_on_crash{false};
  /// Per-worker address space, CPU seconds per task and open files (see ResourceLimits).
  ResourceLimits limits{};
};

namespace detail {
template <class R>
struct FutureState : ResultState<R> {
  std::atomic<bool> cancelled{false};
};
}  // namespace detail

/// Python: concurrent.futures.Future. A handle: copies refer to the same result.
template <class R>
class Future {
 public:
  using value_type = detail::stored_t<R>;
  Future() = default;
  explicit Future(std::shared_ptr<detail::FutureState<R>> s) : s_(std::move(s)) {}

  /// The result; rethrows the task's error. Throws TimeoutError when not done within timeout.
  value_type result(std::optional<seconds> timeout = std::nullopt) const {
    wait_done(timeout, "Future.result");
    std::lock_guard lock(s_->mu);
    if (s_->error) std::rethrow_exception(s_->error);
    return *s_->value;
  }
  /// The task's error, or null. Throws TimeoutError when not done within timeout.
  std::exception_ptr exception(std::optional<seconds> timeout = std::nullopt) const {
    wait_done(timeout, "Future.exception");
    std::lock_guard lock(s_->mu);
    return s_->error;
  }
  bool done() const {
    std::lock_guard lock(s_->mu);
    return s_->done;
  }
  bool cancelled() const {
    if (s_->cancelled) return true;
    auto e = exception_if_done();
    if (!e) return false;
    try {
      std::rethrow_exception(e);
    } catch (const CancelledError&) {  // cancelled by shutdown(cancel_futures = true)
      return true;
    } catch (...) {
      return false;
    }
  }
  /// Cancels the task if no worker has started it yet; true when cancelled (or already was).
  bool cancel() {
    if (s_->cancelled) return true;
    auto core = s_->core.lock();
    if (!core || done() || !core->cancel(s_->job)) return false;
    s_->cancelled = true;
    s_->finish(std::nullopt, std::make_exception_ptr(CancelledError("the future was cancelled")));
    return true;
  }
  /// fn(future) runs when the future is done: at once (on this thread) if it is, otherwise on
  /// the pool's handler thread.
  void add_done_callback(std::function<void(Future<R>)> fn) {
    {
      std::lock_guard lock(s_->mu);
      if (!s_->done) {
        s_->done_callbacks.push_back([fn, f = *this] { fn(f); });
        return;
      }
    }
    fn(*this);
  }

 private:
  std::exception_ptr exception_if_done() const {
    std::lock_guard lock(s_->mu);
    return s_->done ? s_->error : nullptr;
  }
  void wait_done(std::optional<seconds> timeout, const char* call) const {
    s_->tend(timeout);
    std::unique_lock lock(s_->mu);
    if (!detail::wait_for(s_->cv, lock, timeout, [&] { return s_->done; }, call))
      throw TimeoutError("the future was not done within the timeout");
  }
  std::shared_ptr<detail::FutureState<R>> s_;
};

/// Python: concurrent.futures.ProcessPoolExecutor.
///
///     mproc::ProcessPoolExecutor ex({.max_workers = 4});
///     auto f = ex.submit(square, 7);
///     int r = f.result();
///
/// The destructor is shutdown(wait = true), as leaving Python's `with` block.
class ProcessPoolExecutor {
 public:
  explicit ProcessPoolExecutor(ExecutorOptions options = {});
  ~ProcessPoolExecutor();
  ProcessPoolExecutor(const ProcessPoolExecutor&) = delete;
  ProcessPoolExecutor& operator=(const ProcessPoolExecutor&) = delete;

  template <class F, class... Args>
  auto submit(F&& f, Args&&... args) {
    using Fn = std::decay_t<F>;
    using R = std::invoke_result_t<Fn&, std::decay_t<Args>&...>;
    detail::check_call<Fn, std::decay_t<Args>...>();
    auto state = std::make_shared<detail::FutureState<R>>();
    auto job = std::make_shared<detail::ApplyJob<R>>(state);
    state->core = core_;
    state->job = job.get();
    std::vector<detail::Chunk> chunks;
    chunks.push_back(detail::make_call_chunk<Fn, std::decay_t<Args>...>(*core_, job, f, args...));
    core_->submit(std::move(chunks));
    return Future<R>(state);
  }

  /// Python: map(f, iterable, chunksize, buffersize): results in order, input read lazily.
  template <class F, std::ranges::input_range In>
  auto map(F&& f, In&& items, std::size_t chunksize = 1, std::optional<std::size_t> buffersize = std::nullopt) {
    return pool_.imap(std::forward<F>(f), std::forward<In>(items), chunksize, buffersize);
  }

  /// Python: shutdown(wait, cancel_futures). No new tasks afterwards.
  void shutdown(bool wait = true, bool cancel_futures = false);
  /// Python 3.14: stop every worker now (SIGTERM / SIGKILL); pending futures fail.
  void terminate_workers();
  void kill_workers();
  std::vector<int> worker_pids() const { return pool_.worker_pids(); }

 private:
  Pool pool_;
  std::shared_ptr<detail::PoolCore> core_;
};

/// Python: FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED.
enum ReturnWhen { FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED };

template <class R>
struct DoneAndNotDone {
  std::vector<Future<R>> done;
  std::vector<Future<R>> not_done;
};

namespace detail {
struct Waiter {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::size_t> order;  // indices, in completion order
};
}  // namespace detail

/// Python: concurrent.futures.wait(fs, timeout, return_when).
template <class R>
DoneAndNotDone<R> wait(const std::vector<Future<R>>& fs, std::optional<seconds> timeout = std::nullopt,
                       ReturnWhen return_when = ALL_COMPLETED) {
  auto w = std::make_shared<detail::Waiter>();
  for (std::size_t i = 0; i < fs.size(); ++i) {
    Future<R> f = fs[i];
    f.add_done_callback([w, i](Future<R>) {
      {
        std::lock_guard lock(w->mu);
        w->order.push_back(i);
      }
      w->cv.notify_all();
    });
  }
  auto enough = [&] {
    if (w->order.size() == fs.size()) return true;
    if (return_when == FIRST_COMPLETED) return !w->order.empty();
    if (return_when == FIRST_EXCEPTION)
      for (auto i : w->order)
        if (fs[i].exception(seconds(0))) return true;
    return false;
  };
  std::unique_lock lock(w->mu);
  detail::wait_for(w->cv, lock, timeout, enough, "wait");
  std::vector<bool> is_done(fs.size(), false);
  for (auto i : w->order) is_done[i] = true;
  DoneAndNotDone<R> out;
  for (std::size_t i = 0; i < fs.size(); ++i) (is_done[i] ? out.done : out.not_done).push_back(fs[i]);
  return out;
}

/// Python: concurrent.futures.as_completed(fs, timeout): the futures as they finish. Throws
/// TimeoutError when a future is still unfinished `timeout` after the call (the whole iteration's
/// bound, as Python's, not each future's).
template <class R>
std::vector<Future<R>> as_completed(const std::vector<Future<R>>& fs, std::optional<seconds> timeout = std::nullopt);

/// The lazy form: `for (auto f : mproc::AsCompleted(fs)) ...` yields each future when done.
template <class R>
class AsCompleted {
 public:
  explicit AsCompleted(std::vector<Future<R>> fs, std::optional<seconds> timeout = std::nullopt)
      : fs_(std::move(fs)), w_(std::make_shared<detail::Waiter>()) {
    if (double s = detail::wait_seconds(timeout, "as_completed"); s >= 0)
      deadline_ = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(seconds(s));
    for (std::size_t i = 0; i < fs_.size(); ++i) {
      auto w = w_;
      fs_[i].add_done_callback([w, i](Future<R>) {
        {
          std::lock_guard lock(w->mu);
          w->order.push_back(i);
        }
        w->cv.notify_all();
      });
    }
  }
  /// The next finished future; empty when all were yielded.
  std::optional<Future<R>> next() {
    if (yielded_ == fs_.size()) return std::nullopt;
    std::unique_lock lock(w_->mu);
    auto ready = [&] { return w_->order.size() > yielded_; };
    std::optional<seconds> left;
    if (deadline_) left = *deadline_ - std::chrono::steady_clock::now();  // negative: no wait
    if (!detail::wait_for(w_->cv, lock, left, ready, "as_completed"))
      throw TimeoutError(std::to_string(fs_.size() - yielded_) + " (of " + std::to_string(fs_.size()) +
                         ") futures unfinished within as_completed's timeout");
    return fs_[w_->order[yielded_++]];
  }

  class iterator {
   public:
    using value_type = Future<R>;
    using difference_type = std::ptrdiff_t;
    iterator() = default;
    explicit iterator(AsCompleted* o) : o_(o) { ++*this; }
    const Future<R>& operator*() const { return *cur_; }
    iterator& operator++() {
      cur_ = o_->next();
      return *this;
    }
    void operator++(int) { ++*this; }
    bool operator==(std::default_sentinel_t) const { return !cur_; }

   private:
    AsCompleted* o_ = nullptr;
    std::optional<Future<R>> cur_;
  };
  iterator begin() { return iterator(this); }
  std::default_sentinel_t end() { return {}; }

 private:
  std::vector<Future<R>> fs_;
  std::shared_ptr<detail::Waiter> w_;
  std::optional<std::chrono::steady_clock::time_point> deadline_;  // none: no timeout
  std::size_t yielded_ = 0;
};

template <class R>
std::vector<Future<R>> as_completed(const std::vector<Future<R>>& fs, std::optional<seconds> timeout) {
  std::vector<Future<R>> out;
  AsCompleted<R> it(fs, timeout);
  while (auto f = it.next()) out.push_back(*f);
  return out;
}

}  // namespace mproc
