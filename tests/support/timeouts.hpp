// Timeouts every blocking call reads alike (include/mproc/detail/timeout.hpp): the values that
// test those rules, and the check that a NaN one is refused with a message naming the call.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <limits>
#include <stdexcept>
#include <string>

namespace support {

inline constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
inline constexpr double kInf = std::numeric_limits<double>::infinity();

/// call() must throw std::invalid_argument saying "<name>(): timeout is NaN" (Python: ValueError).
template <class F>
void expect_nan_refused(const std::string& name, F&& call) {
  try {
    call();
    ADD_FAILURE() << name << ": a NaN timeout was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(name + "(): timeout is NaN"), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << name << ": another exception: " << e.what();
  }
}

}  // namespace support
