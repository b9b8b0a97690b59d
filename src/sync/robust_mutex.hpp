// The mutex under Lock, RLock, Condition, Barrier and the lock of Value / Array: a robust,
// process-shared pthread mutex plus the bookkeeping Python's locks need (owner, recursion depth)
// and the report of a dead owner.
//
// Why pthread rather than a futex of our own: the kernel knows which robust mutexes a thread
// holds (glibc registers them on the thread's robust list, set_robust_list(2)); when the thread
// dies it marks each FUTEX_OWNER_DIED and wakes a waiter, at the moment of death. A hand-made
// futex lock could only learn of a death by polling its owner's tid (racy with pid reuse, and
// with nobody to wake a sleeping waiter), and cannot join the robust list, which belongs to glibc.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>

#include "os/futex.hpp"

namespace mproc::detail {

struct MutexState {
  pthread_mutex_t mutex;            // PTHREAD_PROCESS_SHARED, PTHREAD_MUTEX_ROBUST
  std::atomic<std::int32_t> owner;  // tid of the holder, 0 when free (set and cleared by the holder)
  std::uint32_t depth;              // recursion depth: only the holder touches it
  std::uint32_t owner_died;         // the holder took the lock over from a dead owner
  std::uint32_t reserved;
  std::atomic<std::uint64_t> takeovers;  // how many times a dead owner's lock was taken over
};

/// Initialises m in fresh zero-filled shared memory. The mutex is never destroyed: another
/// process may still use it, and pthread_mutex_destroy frees nothing on Linux.
void mutex_init(MutexState& m);

/// The calling thread's kernel tid, cached per thread (reset in a fork child).
pid_t current_tid() noexcept;

/// Takes m: at once (block false), until deadline, or forever. True when taken. A recursive
/// mutex held by the caller only counts one more level. A non-recursive mutex held by the
/// caller returns false at once when not blocking or with a deadline (nobody else can release
/// it), and throws RuntimeError instead of deadlocking when blocking forever. When the previous
/// owner died holding it, the lock is taken, made consistent, and owner_died is set.
/// `what` names the object in messages ("Lock").
bool mutex_acquire(MutexState& m, bool recursive, bool block, const os::Deadline& deadline, const char* what);
/// Releases one level. Throws RuntimeError when the caller does not hold m.
void mutex_release(MutexState& m, bool recursive, const char* what);
/// The caller holds m.
bool mutex_is_mine(const MutexState& m) noexcept;
/// Some live thread holds m. A lock whose owner died counts as free: the next acquire takes it.
bool mutex_locked(const MutexState& m) noexcept;

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
