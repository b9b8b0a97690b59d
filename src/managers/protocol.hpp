// The manager protocol (Python: managers.py's request tuples and '#RETURN' / '#ERROR' replies),
// carried as send_bytes messages on an authenticated Connection.
//
// Request:  op (u8), then by op
//   hello     version (u32)                    -> the version this connection speaks (u32)
//   call      object id (u64), proxy type (u64), method (string), the method's arguments
//   create    typeid (string), proxy type (u64), the constructor's arguments -> object id (u64)
//   incref    object id (u64)                 (the reference belongs to this connection)
//   decref    object id (u64)
//   shutdown                                   -> empty; then the server stops
//   info                                       -> server pid (i32), live objects (u64)
// Reply:    status (u8) 0 then the result's bytes, or 1 then error code (u8) and message (string).
//
// Versions: a client's first request on every connection (after the authkey handshake) is the
// hello; the server answers every other request before it with a version error. So that any
// two versions can tell each other apart, the hello, its reply and the error reply never
// change layout. Version 1 was the protocol before the hello: a version-1 server answers the
// hello with "unknown manager request", which the client reports as version 1; a version-1
// client gets the server's version error from its first request.
//
// References belong to the connection that took them: when it closes (the client process
// ended, cleanly or not), the server drops them. Clients take them on one "session"
// connection per process, and call on one connection per thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

namespace mproc::detail::mgr {

/// Bump on any change to a request's or reply's layout, or to what a request means.
inline constexpr std::uint32_t kProtocolVersion = 2;

enum class Op : std::uint8_t { call = 1, create = 2, incref = 3, decref = 4, shutdown = 5, info = 6, hello = 7 };

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
  remote,   // an exception thrown by user code on the server (update_with, a registered method)
  version,  // another protocol version, or a request before the hello
};

/// The message of a version mismatch, the same from either side.
inline std::string version_mismatch(std::uint32_t client, std::uint32_t server) {
  return "manager protocol version " + std::to_string(client) + ", server speaks " + std::to_string(server) +
         " (the client and the server are built from different mproc versions)";
}

/// The typeids every server makes itself (SyncManager's types). register_type refuses them:
/// the server looks registered types up first, so one of these names would hide a built-in.
inline constexpr std::string_view kBuiltinTypeids[] = {
    "dict", "list",  "Namespace", "Value",            "Array",     "Queue", "JoinableQueue",
    "Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Event", "Barrier"};
inline bool is_builtin_typeid(std::string_view name) {
  return std::find(std::begin(kBuiltinTypeids), std::end(kBuiltinTypeids), name) != std::end(kBuiltinTypeids);
}

/// Requests larger than this are refused (the connection is closed).
constexpr std::size_t kMaxRequest = std::size_t{256} << 20;

}  // namespace mproc::detail::mgr
