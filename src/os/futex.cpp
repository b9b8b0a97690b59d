#include "os/futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cmath>

#include "mproc/detail/timeout.hpp"

namespace mproc::os {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t) &&
                  std::atomic<std::uint32_t>::is_always_lock_free,
              "a futex word must be a plain 32-bit word");

timespec monotonic_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts;
}

Deadline Deadline::after(double seconds) noexcept {
  Deadline d;
  d.never_ = false;
  d.at_ = monotonic_now();
  if (!(seconds > 0)) return d;  // 0, negative or NaN: now
  // Beyond ~30 years a deadline is never, and tv_sec cannot overflow.
  if (seconds > detail::kNoDeadlineSeconds) return never();
  double whole = std::floor(seconds);
  d.at_.tv_sec += static_cast<time_t>(whole);
  d.at_.tv_nsec += static_cast<long>((seconds - whole) * 1e9);
  if (d.at_.tv_nsec >= 1000000000L) {
    d.at_.tv_sec += 1;
    d.at_.tv_nsec -= 1000000000L;
  }
  return d;
}

bool Deadline::passed() const noexcept {
  if (never_) return false;
  timespec now = monotonic_now();
  return now.tv_sec > at_.tv_sec || (now.tv_sec == at_.tv_sec && now.tv_nsec >= at_.tv_nsec);
}

Deadline Deadline::earliest(const Deadline& other) const noexcept {
  if (never_) return other;
  if (other.never_) return *this;
  bool mine = at_.tv_sec < other.at_.tv_sec || (at_.tv_sec == other.at_.tv_sec && at_.tv_nsec <= other.at_.tv_nsec);
  return mine ? *this : other;
}

FutexWait futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected, const Deadline& deadline) noexcept {
  if (deadline.passed()) return FutexWait::timed_out;
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (plain FUTEX_WAIT a relative one).
  long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET, expected,
                     deadline.abs(), nullptr, FUTEX_BITSET_MATCH_ANY);
  if (r == -1 && errno == ETIMEDOUT) return FutexWait::timed_out;
  return FutexWait::woken;  // 0, EAGAIN (the word changed), EINTR: the caller rechecks
}

int futex_wake(std::atomic<std::uint32_t>& word, int n) noexcept {
  long r = ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, n, nullptr, nullptr, 0);
  return r < 0 ? 0 : static_cast<int>(r);
}

}  // namespace mproc::os
