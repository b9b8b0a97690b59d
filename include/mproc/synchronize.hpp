// mproc/synchronize.hpp — Python's multiprocessing.synchronize: Lock, RLock, Semaphore,
// BoundedSemaphore, Condition, Event, Barrier.
//
// Every object here is a handle on state in shared memory (an anonymous memfd): copies share
// the same lock, and a handle passed as a Process argument reaches the child as a descriptor
// under fork, spawn and forkserver alike. The handles are thread-safe; their methods are const
// because they change the shared state, never the handle.
//
// Beyond Python: locks are robust. When a process (or thread) dies holding a Lock, an RLock or
// a Condition's lock, the next acquirer gets the lock and owner_died() tells it the previous
// owner died; nothing waits forever on a dead owner (a waiter notices within 50 ms).
// docs/shared-state.md has the details, including what happens to a Semaphore or a Barrier when
// a party dies.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>

#include "mproc/connection.hpp"  // mproc::seconds
#include "mproc/detail/mutex_state.hpp"
#include "mproc/detail/serialize.hpp"
#include "mproc/detail/timeout.hpp"
#include "mproc/errors.hpp"

namespace mproc {

class Condition;

namespace detail {
struct Block;
struct SemaphoreState;
struct ConditionState;
struct EventState;
struct BarrierState;
class SharedData;

/// What Lock, RLock and Condition share: a handle on a robust process-shared mutex. Not API.
class MutexHandle {
 public:
  /// Python: acquire(block=True, timeout=None). True when the lock was taken: at once when
  /// block is false, within timeout otherwise (std::nullopt: wait as long as it takes; a
  /// negative timeout: not at all). A NaN timeout throws std::invalid_argument.
  bool acquire(bool block = true, std::optional<seconds> timeout = std::nullopt) const {
    check_timeout(timeout, recursive_ ? "RLock.acquire" : "Lock.acquire");
    return mutex_try_fast(*m_) || acquire_slow(block, timeout);
  }
  /// Python: release(). Throws RuntimeError when the calling thread does not hold the lock.
  void release() const { mutex_release(*m_, recursive_, what()); }
  /// Python 3.14: locked(). Whether some thread holds the lock now. A lock whose holder died
  /// (and was reaped) is not locked: the next acquire takes it over and reports owner_died().
  bool locked() const;
  /// True while the calling thread holds the lock and took it over from an owner that died
  /// holding it: the data the lock protects may be half-updated. Cleared by the release that
  /// frees the lock. (The lock itself is already repaired and usable.)
  bool owner_died() const;

  // C++ Lockable (std::scoped_lock, std::unique_lock) and TimedLockable.
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) const {
    return acquire(true, std::chrono::duration_cast<seconds>(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) const {
    return acquire(true, std::chrono::duration_cast<seconds>(t - Clock::now()));
  }

 protected:
  MutexHandle() = default;
  explicit MutexHandle(bool recursive);
  MutexHandle(std::shared_ptr<Block> block, bool recursive);
  bool acquire_slow(bool block, std::optional<seconds> timeout) const;
  void save_handle(OutArchive& ar) const;
  void load_handle(InArchive& ar, bool lock_ok, bool rlock_ok);
  const char* what() const noexcept { return recursive_ ? "RLock" : "Lock"; }

  std::shared_ptr<Block> block_;
  MutexState* m_ = nullptr;
  bool recursive_ = false;

  friend class mproc::Condition;
};
}  // namespace detail

/// Python: multiprocessing.Lock. A non-recursive, process-shared, robust lock.
///
/// Unlike Python's, it has an owner: only the thread that acquired it may release it (release()
/// by another thread or process throws RuntimeError), which is what lets the next acquirer learn
/// that an owner died. A blocking acquire() by the thread that already holds it throws
/// RuntimeError instead of hanging; a non-blocking or timed one returns false at once.
///
///     mproc::Lock lock;
///     {
///       std::scoped_lock guard(lock);   // Python: with lock:
///       if (lock.owner_died()) repair_shared_data();
///       ...
///     }
class Lock : public detail::MutexHandle {
 public:
  /// A new, unlocked lock.
  Lock();

  // Passing to a child process (cereal): the memfd travels as a descriptor.
  void save(detail::OutArchive& ar) const { save_handle(ar); }
  void load(detail::InArchive& ar) { load_handle(ar, true, false); }
};

/// Python: multiprocessing.RLock. A recursive lock: the holder may acquire it again and must
/// release it as many times. Process-shared and robust like Lock.
class RLock : public detail::MutexHandle {
 public:
  /// A new, unlocked lock.
  RLock();

  void save(detail::OutArchive& ar) const { save_handle(ar); }
  void load(detail::InArchive& ar) { load_handle(ar, false, true); }

 private:
  explicit RLock(std::shared_ptr<detail::Block> block) : MutexHandle(std::move(block), true) {}
  friend class detail::SharedData;
};

/// Python: multiprocessing.Semaphore. A counter: acquire() takes one unit (waiting while it is
/// zero), release() gives one back; any thread or process may release.
///
/// A Semaphore has no owner (as in Python), so units taken by a process that dies are not
/// given back: the count stays lower. Waiters with a timeout return false; waiters without one
/// wait until someone releases. Give a Semaphore that guards a resource a timeout.
class Semaphore {
 public:
  /// value: the initial count (ValueError when negative).
  explicit Semaphore(int value = 1);

  /// Python: acquire(block=True, timeout=None). True when a unit was taken.
  bool acquire(bool block = true, std::optional<seconds> timeout = std::nullopt) const;
  /// Python: release(). Gives one unit back and wakes one waiter.
  void release() const;
  /// Python: get_value(). The current count.
  int get_value() const;

  // C++ Lockable / TimedLockable.
  void lock() const { acquire(); }
  void unlock() const { release(); }
  bool try_lock() const { return acquire(false); }
  template <class Rep, class Period>
  bool try_lock_for(const std::chrono::duration<Rep, Period>& d) const {
    return acquire(true, std::chrono::duration_cast<seconds>(d));
  }
  template <class Clock, class Duration>
  bool try_lock_until(const std::chrono::time_point<Clock, Duration>& t) const {
    return acquire(true, std::chrono::duration_cast<seconds>(t - Clock::now()));
  }

  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 protected:
  Semaphore(int value, bool bounded);
  void load_impl(detail::InArchive& ar, bool bounded_only);

  std::shared_ptr<detail::Block> block_;
  detail::SemaphoreState* s_ = nullptr;
};

/// Python: multiprocessing.BoundedSemaphore. A Semaphore whose count may not exceed its initial
/// value: a release() that would throws ValueError ("released too many times").
class BoundedSemaphore : public Semaphore {
 public:
  explicit BoundedSemaphore(int value = 1);

  void save(detail::OutArchive& ar) const { Semaphore::save(ar); }
  void load(detail::InArchive& ar) { load_impl(ar, true); }
};

/// Python: multiprocessing.Condition. A lock (an RLock unless one is given) and a way to sleep
/// until another process notifies.
///
///     mproc::Condition cond;
///     // consumer                                  // producer
///     std::scoped_lock g(cond);                    std::scoped_lock g(cond);
///     cond.wait_for([&] { return ready(); });      make_ready(); cond.notify();
///
/// notify(n) wakes exactly min(n, waiting) waiters. wait() may also return true without a
/// notify after a waiter was killed while waiting (see docs/shared-state.md): as with any
/// condition variable, check the predicate, or use wait_for.
class Condition : public detail::MutexHandle {
 public:
  /// A condition with a new RLock.
  Condition();
  /// A condition over an existing lock (copies of the handle share the lock).
  explicit Condition(const Lock& lock);
  explicit Condition(const RLock& lock);

  /// Python: wait(timeout=None). Releases the lock (all levels of an RLock), sleeps until
  /// notified or timeout, takes the lock again (forever if need be, as Python). True when
  /// notified. Throws RuntimeError unless the calling thread holds the lock.
  bool wait(std::optional<seconds> timeout = std::nullopt) const;

  /// Python: wait_for(predicate, timeout=None). Waits until predicate() is true or timeout has
  /// passed in total; returns the last value of predicate().
  template <class Predicate>
  bool wait_for(Predicate predicate, std::optional<seconds> timeout = std::nullopt) const {
    detail::check_timeout(timeout, "Condition.wait_for");
    bool result = static_cast<bool>(predicate());
    if (result) return result;
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    while (!result) {
      std::optional<seconds> left;
      if (timeout) {
        left = *timeout - std::chrono::duration_cast<seconds>(clock::now() - start);
        if (left->count() <= 0) break;
      }
      wait(left);
      result = static_cast<bool>(predicate());
    }
    return result;
  }

  /// Python: notify(n=1). Wakes at most n waiters. Throws RuntimeError unless the calling
  /// thread holds the lock.
  void notify(int n = 1) const;
  /// Python: notify_all().
  void notify_all() const;

  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 private:
  std::shared_ptr<detail::Block> cblock_;
  detail::ConditionState* c_ = nullptr;
};

/// Python: multiprocessing.Event. A flag that processes can wait for. Built on a futex with
/// no lock: nothing a dead process leaves behind can block it.
class Event {
 public:
  /// A new event, not set.
  Event();

  bool is_set() const;
  /// Sets the flag and wakes every waiter.
  void set() const;
  void clear() const;
  /// Waits until the flag is set or timeout has passed. True when the flag is set, or was set
  /// (by set()) while this call waited, even if cleared again since.
  bool wait(std::optional<seconds> timeout = std::nullopt) const;

  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 private:
  std::shared_ptr<detail::Block> block_;
  detail::EventState* e_ = nullptr;
};

/// Python's Barrier keyword arguments.
struct BarrierOptions {
  /// Run by the last party to arrive, before any party is released. A plain function or a
  /// captureless lambda: it is called in whichever process arrives last, so it crosses to
  /// children as a checked function identity, like a Process target. If it throws, the barrier
  /// breaks and the exception propagates from that party's wait().
  void (*action)(){nullptr};
  /// The default timeout of wait() (std::nullopt: none).
  std::optional<seconds> timeout{};
};

/// Python: multiprocessing.Barrier. parties processes (or threads) call wait(); all return when
/// the last arrives, each with a different index in [0, parties).
///
/// Beyond Python: a party that dies while waiting at the barrier breaks it (the others get
/// BrokenBarrierError within about 100 ms instead of waiting forever). A party that dies before
/// it reaches wait() cannot be told from a slow one: use a timeout.
class Barrier {
 public:
  /// ValueError unless parties >= 1.
  explicit Barrier(int parties, BarrierOptions options = {});
  /// A barrier of one party (what a handle is before it receives another in a child).
  Barrier() : Barrier(1) {}

  /// Python: wait(timeout=None). Returns the arrival index. Throws BrokenBarrierError when the
  /// barrier is or becomes broken: abort(), reset() while waiting, a timeout (which breaks it
  /// for everyone), a throwing action, or a party that died while waiting. std::nullopt: the
  /// barrier's default timeout.
  int wait(std::optional<seconds> timeout = std::nullopt) const;
  /// Python: reset(). Back to the empty state; current waiters get BrokenBarrierError.
  void reset() const;
  /// Python: abort(). Breaks the barrier: current and future waiters get BrokenBarrierError
  /// until reset().
  void abort() const;
  int parties() const;
  /// Parties waiting now.
  int n_waiting() const;
  bool broken() const;

  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

 private:
  std::shared_ptr<detail::Block> block_;
  detail::BarrierState* b_ = nullptr;
  void (*action_)() = nullptr;
  std::optional<seconds> timeout_;
};

}  // namespace mproc
