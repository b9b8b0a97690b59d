// The shared state of mproc's process-shared mutex (under Lock, RLock, Condition, Barrier and
// the lock of Value / Array) and the fast paths of acquire and release. Not API: see
// synchronize.hpp. The design, the slow paths and the detection of dead owners are in
// src/sync/robust_mutex.*.
//
// Why inline: with two processes taking turns on one lock (bench/value_lock), a function call
// on each side of the critical section gives the other process time to steal the cache line;
// measured, the out-of-line lock ran at 0.8x a sem_t, the inlined one at 1.2x.
#pragma once

#include <atomic>
#include <cstdint>

namespace mproc::detail {

inline constexpr std::uint32_t kTidMask = 0x3fffffffu;  // as the kernel's FUTEX_TID_MASK
inline constexpr std::uint32_t kWaiters = 0x80000000u;  // someone sleeps (or slept) on the word

/// Lives in shared memory. 24 bytes: a small Value shares its cache line.
struct MutexState {
  std::atomic<std::uint32_t> word;      // futex word: 0 free, else owner tid | kWaiters
  std::uint32_t depth;                  // recursion depth: only the holder touches it
  std::uint32_t owner_died;             // the holder took the lock over from a dead owner
  std::uint32_t reserved;
  std::atomic<std::uint64_t> owner_id;  // tid << 32 | start time of the holder (tid reuse check)
};

/// The calling thread: its tid, and its tid with its start time. Cached per thread (gettid()
/// is a system call, the start time a read of /proc); cleared in a fork child.
struct ThreadIdentity {
  std::uint32_t tid;
  std::uint64_t id;
};
extern constinit thread_local ThreadIdentity t_self;
const ThreadIdentity& cache_identity() noexcept;
inline const ThreadIdentity& self() noexcept { return t_self.tid != 0 ? t_self : cache_identity(); }

/// The calling thread holds m.
inline bool mutex_is_mine(const MutexState& m) noexcept {
  return (m.word.load(std::memory_order_relaxed) & kTidMask) == self().tid;
}

/// Takes m if it is free, with one compare-exchange. False otherwise (held, even by the
/// caller: recursion is the slow path's business).
inline bool mutex_try_fast(MutexState& m) noexcept {
  const ThreadIdentity& me = self();
  std::uint32_t expected = 0;
  if (!m.word.compare_exchange_strong(expected, me.tid, std::memory_order_acquire, std::memory_order_relaxed))
    return false;
  m.owner_id.store(me.id, std::memory_order_relaxed);
  m.depth = 1;
  m.owner_died = 0;
  return true;
}

void mutex_wake_one(MutexState& m) noexcept;
[[noreturn]] void throw_not_owner(const char* what);

/// Releases one level. Throws RuntimeError when the caller does not hold m.
inline void mutex_release(MutexState& m, bool recursive, const char* what) {
  if (!mutex_is_mine(m)) [[unlikely]]
    throw_not_owner(what);
  if (recursive && m.depth > 1) {
    --m.depth;
    return;
  }
  m.depth = 0;
  m.owner_died = 0;
  if (m.word.exchange(0, std::memory_order_release) & kWaiters) mutex_wake_one(m);
}

}  // namespace mproc::detail
