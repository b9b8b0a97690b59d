// The mutex under Lock, RLock, Condition, Barrier and the lock of Value / Array: a futex word
// holding the owner's tid, plus the bookkeeping Python's locks need (recursion depth) and the
// report of a dead owner.
//
// Why not a robust pthread mutex (PTHREAD_MUTEX_ROBUST), where the kernel marks a dead owner's
// mutex at once? Speed: glibc's robust lock and unlock maintain the thread's robust list with
// several extra stores into the contended cache line; with two processes incrementing a Value
// under its lock (bench/value_lock) a bare robust mutex ran at 0.55-0.75x a sem_t, this futex
// lock at 1.0x, and the target is 0.8x. The kernel's robust list cannot be shared either: it
// belongs to glibc (one list head per thread), so a futex lock of our own cannot join it.
//
// Death is detected by whoever wants the lock instead, when a sleep on it times out (after 1 ms,
// then every 50 ms): the owner's tid is gone (kill(tid, 0) says ESRCH), a zombie (killed, not
// yet reaped), or another thread that reused the tid (its start time in /proc/<tid>/stat differs
// from the one the owner recorded). The waiter then takes the lock over with a compare-exchange
// from the dead owner's exact word, so it can never take a live owner's lock, and the new
// holder's owner_died() says so. A non-blocking acquire checks at once. Nothing is checked on
// the fast path, nor before sleeping: under contention that would add a system call to every
// acquire that loses a race.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "mproc/detail/mutex_state.hpp"  // MutexState and the inline fast paths
#include "os/futex.hpp"

namespace mproc::detail {

/// Initialises m in fresh zero-filled shared memory.
void mutex_init(MutexState& m) noexcept;

inline pid_t current_tid() noexcept { return static_cast<pid_t>(self().tid); }

/// Some live thread holds m. A lock whose owner died (and was reaped) counts as free: the next
/// acquire takes it over.
bool mutex_locked(const MutexState& m) noexcept;

/// The slow path of mutex_acquire: contended, timed, recursive, or an owner that died.
bool mutex_acquire_slow(MutexState& m, bool recursive, bool block, const os::Deadline& deadline, const char* what);

/// Takes m: at once (block false), until deadline, or forever. True when taken. A recursive
/// mutex held by the caller only counts one more level. A non-recursive mutex held by the
/// caller returns false at once when not blocking or with a deadline (nobody else can release
/// it), and throws RuntimeError instead of deadlocking when blocking forever. When the previous
/// owner died holding it, the lock is taken over and owner_died is set.
/// `what` names the object in messages ("Lock").
inline bool mutex_acquire(MutexState& m, bool recursive, bool block, const os::Deadline& deadline, const char* what) {
  return mutex_try_fast(m) || mutex_acquire_slow(m, recursive, block, deadline, what);
}

/// What a Condition's wait() keeps while it has released the lock completely.
struct MutexSaved {
  std::uint32_t depth;
  std::uint32_t owner_died;
};
/// Releases every level (the caller must hold m) and returns them.
MutexSaved mutex_release_all(MutexState& m);
/// Takes m again, forever if need be, and restores the depth. A dead owner in between is
/// reported through owner_died as for acquire.
void mutex_restore(MutexState& m, MutexSaved saved, const char* what);

}  // namespace mproc::detail
