// A worker's error report: what a task threw, as it crosses from the worker to the parent.
// Not API; here so that the fuzz target (fuzz/fuzz_remote_info.cpp) decodes it as the pool does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail {

struct RemoteInfo {
  std::string type, what, worker, stack;
  std::int32_t pid = 0;
  template <class A>
  void serialize(A& a) {
    a(type, what, worker, stack, pid);
  }
};

/// The RemoteError a worker's report stands for. Throws an mproc::Error (ProtocolError) when
/// the bytes are not a whole report.
inline RemoteError remote_error_from(const std::byte* data, std::size_t n) {
  auto info = decode<RemoteInfo>(data, n);
  return RemoteError(std::move(info.type), std::move(info.what), std::move(info.worker), info.pid,
                     std::move(info.stack));
}

}  // namespace mproc::detail
