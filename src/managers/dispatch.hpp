// The manager's request decoder and its table of objects (Python: managers.Server's dispatch
// and id_to_obj), without sockets: the server's connection threads feed it the requests that
// arrive, tests and fuzz targets feed it bytes directly.
//
//     mproc::detail::mgr::Dispatcher d;                  // no registered types
//     auto s = d.open_session();                         // one client connection
//     std::string reply;
//     d.handle(s, hello, size, reply);                   // first: the protocol version
//     d.handle(s, bytes, size, reply);                   // never throws, never blocks
//     d.close_session(s);                                // releases what s held
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "managers/objects.hpp"

namespace mproc::detail::mgr {

/// A type registered with BaseManager::register_type: its operations, and the identity of its
/// factory (empty for a default-constructed type or a captureless lambda).
struct RegisteredType {
  const TypeOps* ops = nullptr;
  std::string factory;
};
using Registry = std::map<std::string, RegisteredType, std::less<>>;

/// One client connection: the references it holds and the objects that must hear when it
/// goes (locks it may hold). Used by one thread at a time.
struct Session {
  std::uint64_t id = 0;
  bool greeted = false;  // a hello of our protocol version came: other requests are served
  std::unordered_map<std::uint64_t, std::uint64_t> refs;
  std::unordered_map<std::uint64_t, std::weak_ptr<Object>> owned;
};

enum class Outcome {
  reply,     // send `reply`
  close,     // send nothing and close the connection (its client is gone, the server stops)
  shutdown,  // send `reply`, then stop the server (a shutdown request)
};

class Dispatcher {
 public:
  explicit Dispatcher(Registry registry = {});
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  Session open_session();
  /// Decodes and runs one request (the payload of one frame, see protocol.hpp) for `session`
  /// and writes the reply. Never throws: a request that is truncated, unknown, names an
  /// unknown object or method, has wrong types or fails gets an error reply. `ctx` (its conn
  /// must be session.id) lets a blocking call notice that its client went away; the overload
  /// without one has no client to wait for, so a call that would block ends with Outcome::close.
  Outcome handle(Session& session, const void* data, std::size_t size, std::string& reply, CallCtx& ctx) noexcept;
  Outcome handle(Session& session, const void* data, std::size_t size, std::string& reply) noexcept;
  /// The connection ended: the locks it held are released, its references dropped.
  void close_session(Session& session) noexcept;
  std::size_t number_of_objects();

 private:
  class Sink;
  bool answer(Session& s, const void* data, std::size_t size, std::string& out, CallCtx& ctx, bool& shutdown);
  void dispatch(Session& s, InArchive& in, std::string& out, CallCtx& ctx, bool& shutdown);
  std::shared_ptr<Object> lookup(std::uint64_t id);
  std::uint64_t insert(std::shared_ptr<Object> obj, Session& s);
  void decref(std::uint64_t id);

  Registry registry_;
  std::mutex mu_;  // the table; never held while an object runs a call
  struct Entry {
    std::shared_ptr<Object> obj;
    std::uint64_t refs = 0;
  };
  std::unordered_map<std::uint64_t, Entry> objects_;
  std::uint64_t next_id_ = 1;
  std::uint64_t next_session_ = 1;
};

}  // namespace mproc::detail::mgr
