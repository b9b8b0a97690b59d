// How blocking calls read a timeout: the same rules for local objects (synchronize.hpp,
// queues.hpp) and manager proxies (managers.hpp). Not API.
//
// std::nullopt waits without a deadline. NaN is refused (Python: ValueError), as no wait can
// mean it. A negative timeout, -inf included, waits not at all (multiprocessing's rule); +inf,
// or one too large for the clock, waits without a deadline.
#pragma once

#include <chrono>
#include <cmath>
#include <optional>

namespace mproc::detail {

[[noreturn]] void throw_nan_timeout(const char* call);

/// Throws std::invalid_argument naming `call` ("Lock.acquire") and its timeout argument when
/// the timeout is NaN. Inline: on the fast path of Lock::acquire it is one test of has_value().
inline void check_timeout(const std::optional<std::chrono::duration<double>>& timeout, const char* call) {
  if (timeout && std::isnan(timeout->count())) throw_nan_timeout(call);
}

}  // namespace mproc::detail
