// The manager protocol (Python: managers.py's request tuples and '#RETURN' / '#ERROR' replies),
// carried as send_bytes messages on an authenticated Connection.
//
// Request:  op (u8), then by op
//   call      object id (u64), proxy type (u64), method (string), the method's arguments
//   create    typeid (string), proxy type (u64), the constructor's arguments -> object id (u64)
//   incref    object id (u64)                 (the reference belongs to this connection)
//   decref    object id (u64)
//   shutdown                                   -> empty; then the server stops
//   info                                       -> server pid (i32), live objects (u64)
// Reply:    status (u8) 0 then the result's bytes, or 1 then error code (u8) and message (string).
//
// References belong to the connection that took them: when it closes (the client process
// ended, cleanly or not), the server drops them. Clients take them on one "session"
// connection per process, and call on one connection per thread.
#pragma once

#include <cstdint>

namespace mproc::detail::mgr {

enum class Op : std::uint8_t { call = 1, create = 2, incref = 3, decref = 4, shutdown = 5, info = 6 };

enum class Err : std::uint8_t {
  error = 0,  // mproc::Error
  key,
  index,
  value,
  runtime,
  type_mismatch,
  function_identity,
  broken_barrier,
  empty,
  full,
  timeout,
  protocol,
  unknown_object,
  remote,  // an exception thrown by user code on the server (update_with, a registered method)
};

/// Requests larger than this are refused (the connection is closed).
constexpr std::size_t kMaxRequest = std::size_t{256} << 20;

}  // namespace mproc::detail::mgr
