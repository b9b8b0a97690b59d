// Waiting for a manager server to drop what a finished client held.
#pragma once

#include <mproc/managers.hpp>

#include <chrono>
#include <cstddef>
#include <thread>

namespace mproc_test {

// The server drops a dead client's references when it notices its session closed, which is
// soon but not synchronous with join(): wait (boundedly, 30 s) for the count to settle.
inline std::size_t settled_objects(const mproc::BaseManager& m, std::size_t want) {
  std::size_t n = m.number_of_objects();
  for (int i = 0; i < 3000 && n != want; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = m.number_of_objects();
  }
  return n;
}

}  // namespace mproc_test
