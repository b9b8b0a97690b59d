// The objects a manager server holds (Python: the referents in Server.id_to_obj). The built-in
// kinds keep values as the bytes their clients encoded, so the server needs none of the
// clients' types; registered types run their own code.
#pragma once

#include <poll.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "managers/protocol.hpp"
#include "mproc/detail/managers.hpp"
#include "mproc/errors.hpp"

namespace mproc::detail::mgr {

/// Thrown out of a blocking call whose client went away (or when the server stops): there is
/// nobody to reply to.
struct ClientGone {};

/// An error to reply with a given code (for codes that have no exception type here).
struct Reply {
  Err code;
  std::string message;
};

/// What a call knows about its caller.
struct CallCtx {
  std::uint64_t conn = 0;  // the connection (its locks, its references)
  int fd = -1;             // its socket, to notice a client that died during a blocking call
  const std::atomic<bool>* stopping = nullptr;
  /// Set by a call whose effect must be undone when its reply cannot be delivered (an item
  /// taken from a queue by a client that died meanwhile goes back).
  std::function<void()> undo;
  /// Where a registered method's returned object goes (set by the dispatcher).
  ObjectSink* sink = nullptr;

  /// True when the client left (or the server stops), and when there is no client at all (no
  /// socket: the dispatcher fed directly), whom a blocking call could never answer.
  bool client_gone() const {
    if (fd < 0) return true;
    if (stopping && stopping->load(std::memory_order_relaxed)) return true;
    pollfd p{fd, POLLRDHUP, 0};
    return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
  }
};

/// Waits on cv until pred() holds (true), the timeout passes (false; timeout < 0: never) or
/// the client goes away (ClientGone). Wakes every slice to look at the client.
template <class P>
bool wait_until(std::unique_lock<std::mutex>& lk, std::condition_variable& cv, double timeout, const CallCtx& ctx,
                P pred) {
  using clock = std::chrono::steady_clock;
  // The timeout comes from a client as any double. One too large for the clock (converting it
  // would be undefined behaviour) or NaN means no deadline, as a negative one does.
  if (!(timeout >= 0 && timeout <= 1e9)) timeout = -1;  // over 31 years, NaN, or none
  auto deadline = clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout));
  constexpr auto slice = std::chrono::milliseconds(100);
  while (!pred()) {
    if (ctx.client_gone()) throw ClientGone{};
    if (timeout >= 0) {
      auto now = clock::now();
      if (now >= deadline) return false;
      cv.wait_for(lk, std::min<clock::duration>(deadline - now, slice));
    } else {
      cv.wait_for(lk, slice);
    }
  }
  return true;
}

class Object {
 public:
  virtual ~Object() = default;
  /// Runs one method; appends the result's bytes to out. Throws mproc errors, Reply or
  /// ClientGone.
  virtual void call(std::string_view method, InArchive& in, std::string& out, CallCtx& ctx) = 0;
  /// The connection closed: give back what it held (locks).
  virtual void disconnected(std::uint64_t /*conn*/) {}
  /// Whether disconnected() must be called for connections that used the object.
  virtual bool has_owners() const { return false; }
  std::uint64_t type = 0;
};

using Lookup = std::function<std::shared_ptr<Object>(std::uint64_t id)>;

/// A built-in object (dict, list, Namespace, Value, Array, Queue, JoinableQueue, Lock, RLock,
/// Semaphore, BoundedSemaphore, Condition, Event, Barrier) from its constructor's arguments;
/// nullptr for another typeid.
std::shared_ptr<Object> make_builtin(std::string_view typeid_, InArchive& args, const Lookup& lookup);
/// A registered type's object from its factory and create()'s arguments; an exception thrown
/// by the factory comes back as the client's RemoteError.
std::shared_ptr<void> run_factory(const TypeOps& ops, InArchive& factory, InArchive& args);
/// The server object that serves `obj` (made by run_factory, or returned by a method).
std::shared_ptr<Object> make_registered(const TypeOps* ops, std::shared_ptr<void> obj);

[[noreturn]] void unknown_method(std::string_view kind, std::string_view method);

}  // namespace mproc::detail::mgr
