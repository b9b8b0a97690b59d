// How blocking calls read a timeout: the same rules for local objects (synchronize.hpp,
// queues.hpp), manager proxies (managers.hpp), and the waits of processes, connections, pool
// results and futures. Not API.
//
// std::nullopt waits without a deadline. NaN is refused (Python: ValueError), as no wait can
// mean it. A negative timeout, -inf included, waits not at all (multiprocessing's rule); +inf,
// or one too large for the clock, waits without a deadline.
#pragma once

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <optional>

namespace mproc::detail {

[[noreturn]] void throw_nan_timeout(const char* call);

/// Throws std::invalid_argument naming `call` ("Lock.acquire") and its timeout argument when
/// the timeout is NaN. Inline: on the fast path of Lock::acquire it is one test of has_value().
inline void check_timeout(const std::optional<std::chrono::duration<double>>& timeout, const char* call) {
  if (timeout && std::isnan(timeout->count())) throw_nan_timeout(call);
}

/// Beyond this many seconds (about 30 years) a wait has no deadline: a clock's time point that
/// far ahead could overflow. os::Deadline (futexes) reads timeouts with the same bound.
constexpr double kNoDeadlineSeconds = 1e9;

/// The seconds a wait may take: -1 for no deadline (nullopt, +inf, beyond kNoDeadlineSeconds),
/// 0 for a negative timeout, else the timeout. NaN: std::invalid_argument naming call.
inline double wait_seconds(const std::optional<std::chrono::duration<double>>& timeout, const char* call) {
  check_timeout(timeout, call);
  if (!timeout || timeout->count() > kNoDeadlineSeconds) return -1;
  return timeout->count() < 0 ? 0 : timeout->count();
}

/// cv.wait(lock, pred) bounded by timeout, read as wait_seconds does. True when pred holds.
template <class Pred>
bool wait_for(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
              const std::optional<std::chrono::duration<double>>& timeout, Pred pred, const char* call) {
  double s = wait_seconds(timeout, call);
  if (s < 0) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_for(lock, std::chrono::duration<double>(s), pred);
}

}  // namespace mproc::detail
