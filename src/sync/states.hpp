// The shared-memory state of each primitive, at kStateOffset of its block (src/sync/block.hpp).
// Everything here is read and written by several processes at once: plain fields only under the
// block's mutex, atomics otherwise; futex words are 32-bit.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

namespace mproc::detail {

struct SemaphoreState {
  std::atomic<std::uint32_t> value;    // futex word: the count
  std::atomic<std::uint32_t> waiters;  // sleepers, so that release() skips the wake-up system call when none
  std::uint32_t bound;                 // the largest value release() may reach
};

// notify(n) turns min(n, waiters) registered waiters into tokens; any sleeping waiter may take
// a token (so a waiter that died cannot swallow the wake-up of a live one). waiters and the
// token grant change only under the condition's lock; tokens are taken without it.
struct ConditionState {
  std::atomic<std::uint32_t> tokens;   // futex word
  std::atomic<std::uint32_t> waiters;  // registered and not yet granted a token
};

struct EventState {
  std::atomic<std::uint32_t> word;     // futex word: bit 0 the flag, the rest counts set() calls
  std::atomic<std::uint32_t> waiters;
};

// A party waiting at a Barrier holds the mutex of its slot. The kernel marks the mutex
// FUTEX_OWNER_DIED when the party dies, and a trylock by any other party then says so: an exact
// liveness check, immune to pid reuse.
struct alignas(64) BarrierSlot {
  pthread_mutex_t mutex;  // robust, process-shared
  std::int32_t pid;       // for messages
  std::uint32_t occupied; // set after the mutex is taken, cleared before it is released (under the barrier's mutex)
};

struct alignas(64) BarrierState {
  std::int32_t parties;
  std::int32_t state;               // Python's values: 0 filling, 1 draining, -1 resetting, -2 broken
  std::int32_t count;               // parties inside wait() == occupied slots
  std::uint32_t cycle;              // completed cycles: a waiter is released when it changes
  std::atomic<std::uint32_t> seq;   // futex word: bumped and woken on every change waiters look for
  std::int32_t dead_pid;            // the last party found dead, for messages
  std::uint32_t why;                // why it broke (BreakReason)
};

inline constexpr std::size_t kSlotsOffset = 64;  // from the start of BarrierState

}  // namespace mproc::detail
