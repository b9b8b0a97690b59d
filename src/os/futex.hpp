// Futexes on 32-bit words in shared memory, and the monotonic deadlines of every timed wait of
// the synchronisation primitives.
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>
#include <optional>

namespace mproc::os {

/// An absolute CLOCK_MONOTONIC time, or never. Timed waits take a deadline rather than a
/// duration so that a wait that is woken early and goes back to sleep does not start over.
class Deadline {
 public:
  /// Waits forever.
  static Deadline never() noexcept { return Deadline(); }
  /// seconds from now. Zero, negative or NaN: already passed (Python treats a negative timeout
  /// as 0). +inf, or too far to represent: never.
  static Deadline after(double seconds) noexcept;
  /// std::nullopt: never.
  static Deadline after(std::optional<double> seconds) noexcept { return seconds ? after(*seconds) : never(); }

  bool is_never() const noexcept { return never_; }
  bool passed() const noexcept;
  /// The absolute time, or nullptr for never (what futex and pthread calls take).
  const timespec* abs() const noexcept { return never_ ? nullptr : &at_; }
  /// The earlier of the two.
  Deadline earliest(const Deadline& other) const noexcept;

 private:
  Deadline() = default;
  bool never_ = true;
  timespec at_{};
};

timespec monotonic_now() noexcept;

enum class FutexWait {
  woken,     // woken, or the word no longer held the expected value, or a signal: recheck
  timed_out  // the deadline passed
};

/// Sleeps while word == expected, until woken or the deadline. The futex is process-shared (no
/// FUTEX_PRIVATE_FLAG): the word lives in a mapping other processes see. Never throws: any
/// other failure is reported as woken, so callers recheck their condition and loop.
FutexWait futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& deadline) noexcept;

/// Wakes at most n sleepers on word (n = INT_MAX: all). Returns how many were woken.
int futex_wake(std::atomic<std::uint32_t>& word, int n) noexcept;

}  // namespace mproc::os
