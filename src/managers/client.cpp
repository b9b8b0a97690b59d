// The client side of managers (Python: BaseProxy._callmethod, _incref, _decref): connections
// per thread, the session that holds this process's references, errors carried back.
#include <pthread.h>
#include <unistd.h>

#include <cmath>
#include <map>
#include <mutex>

#include "managers/protocol.hpp"
#include "mproc/managers.hpp"
#include "mproc/detail/timeout.hpp"
#include "mproc/queues.hpp"
#include "util/auth.hpp"

namespace mproc {

detail::mgr::ObjectRef& BaseProxy::ref() const {
  if (!ref_) throw Error("this proxy refers to no manager object (default-constructed)");
  return *ref_;
}

namespace detail::mgr {

struct Endpoint {
  connection::Address address;
  std::string authkey;
  std::uint64_t uid = 0;
  std::mutex mu;  // the session
  Connection session;
  int session_pid = 0;
  ~Endpoint();
};

namespace {

// getpid() is a system call on every call otherwise (glibc stopped caching it); a fork child
// refreshes the cached value in its atfork handler, before any of its code runs.
std::atomic<int> g_pid{0};
int current_pid() {
  int pid = g_pid.load(std::memory_order_relaxed);
  if (pid != 0) return pid;
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { g_pid.store(::getpid(), std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  pid = ::getpid();
  g_pid.store(pid, std::memory_order_relaxed);
  return pid;
}

std::mutex g_mu;
std::map<std::pair<std::string, std::string>, std::weak_ptr<Endpoint>> g_endpoints;
std::atomic<std::uint64_t> g_uid{1};

// One connection per thread and server, as Python's BaseProxy._tls: a blocking call (a lock,
// a queue) holds up only its own thread, and a lock is owned by the thread that took it.
struct ThreadConn {
  std::uint64_t uid;
  int pid;
  Connection conn;
};
struct ThreadConns {
  std::vector<ThreadConn> v;
  bool alive = true;  // false once this thread's copy is destroyed (at thread or program exit)
  ~ThreadConns() { alive = false; }
};
thread_local ThreadConns t_conns;

// The version hello (protocol.hpp), once per connection: a server built from another mproc
// version says so here, instead of misreading the requests that follow.
void say_hello(Connection& c, const Endpoint& ep) {
  const std::string where = "manager server at '" + ep.address.str() + "': ";
  std::string req;
  {
    OutArchive ar(req);
    ar(static_cast<std::uint8_t>(Op::hello), kProtocolVersion);
  }
  Buffer reply;
  try {
    c.send_bytes(req);
    reply = c.recv_buffer();
  } catch (const std::exception& e) {
    throw ConnectionError(where + "the connection ended at the version hello (" + e.what() + ")");
  }
  if (reply.empty()) throw ProtocolError(where + "an empty reply to the version hello");
  InArchive ar(reply.data() + 1, reply.size() - 1);
  if (reply.data()[0] == std::byte{0}) {
    std::uint32_t version = 0;
    try {
      ar(version);
    } catch (const std::exception&) {
      throw ProtocolError(where + "a malformed reply to the version hello");
    }
    // The server answers with the version the connection speaks: ours, or it refuses.
    if (version != kProtocolVersion) throw ProtocolError(where + version_mismatch(kProtocolVersion, version));
    return;
  }
  std::uint8_t code = 0;
  std::string msg;
  try {
    ar(code, msg);
  } catch (const std::exception&) {
    throw ProtocolError(where + "a malformed error reply to the version hello");
  }
  if (static_cast<Err>(code) == Err::version) throw ProtocolError(where + msg);
  // A version-1 server has no hello: it answers "unknown manager request 7".
  throw ProtocolError(where + version_mismatch(kProtocolVersion, 1) + " (it refused the version hello: " + msg + ")");
}

Connection open_connection(const Endpoint& ep) {
  Connection c;
  try {
    c = connection::Client(ep.address, ep.authkey);
  } catch (const AuthenticationError& e) {
    throw AuthenticationError("manager server at '" + ep.address.str() + "': " + e.what());
  } catch (const std::exception& e) {
    throw ConnectionError("cannot reach the manager server at '" + ep.address.str() + "': " + e.what());
  }
  say_hello(c, ep);
  return c;
}

Connection& call_connection(Endpoint& ep, int pid) {
  if (!t_conns.alive) throw ConnectionError("manager proxy used while its thread is exiting");
  for (auto& tc : t_conns.v)
    if (tc.uid == ep.uid) {
      if (tc.pid != pid) {  // inherited through fork: the parent's, not ours
        tc.conn = open_connection(ep);
        tc.pid = pid;
      }
      return tc.conn;
    }
  t_conns.v.push_back({ep.uid, pid, open_connection(ep)});
  return t_conns.v.back().conn;
}

void drop_call_connection(const Endpoint& ep) {
  if (!t_conns.alive) return;
  for (auto it = t_conns.v.begin(); it != t_conns.v.end(); ++it)
    if (it->uid == ep.uid) {
      t_conns.v.erase(it);
      return;
    }
}

[[noreturn]] void raise(const Payload& p, std::string_view method, const Endpoint& ep) {
  InArchive ar(p.data(), p.size());
  std::uint8_t code = 0;
  std::string msg;
  try {
    ar(code, msg);
  } catch (const std::exception&) {
    throw ProtocolError("the manager server at '" + ep.address.str() + "' sent a malformed error reply");
  }
  std::string where = "manager '" + std::string(method) + "': ";
  switch (static_cast<Err>(code)) {
    case Err::key: throw KeyError(where + msg);
    case Err::index: throw IndexError(where + msg);
    case Err::value: throw ValueError(where + msg);
    case Err::runtime: throw RuntimeError(where + msg);
    case Err::type_mismatch: throw TypeMismatchError(where + msg);
    case Err::function_identity: throw FunctionIdentityError(where + msg);
    case Err::broken_barrier: throw BrokenBarrierError(where + msg);
    case Err::empty: throw queue::Empty(where + msg);
    case Err::full: throw queue::Full(where + msg);
    case Err::timeout: throw TimeoutError(where + msg);
    case Err::protocol: throw ProtocolError(where + "the server refused the request: " + msg);
    case Err::version: throw ProtocolError(where + msg);
    case Err::remote: {
      auto colon = msg.find(": ");
      throw RemoteError(colon == std::string::npos ? "?" : msg.substr(0, colon),
                        colon == std::string::npos ? msg : msg.substr(colon + 2), "manager server at " + ep.address.str(), 0,
                        "");
    }
    default: throw Error(where + msg);
  }
}

Payload checked(Payload p, std::string_view method, const Endpoint& ep) {
  if (p.buf.empty()) throw ProtocolError("the manager server at '" + ep.address.str() + "' sent an empty reply");
  if (p.buf.data()[0] != std::byte{0}) raise(p, method, ep);
  return p;
}

[[noreturn]] void server_gone(const Endpoint& ep, std::string_view method, const std::exception& e) {
  throw ConnectionError("the manager server at '" + ep.address.str() + "' is gone (" + e.what() + "); '" +
                        std::string(method) + "' got no answer");
}

// Requests about references go on the process's session connection: when the process ends,
// however it ends, the server sees the session close and drops its references.
Payload session_request(Endpoint& ep, const std::string& req, std::string_view what) {
  std::lock_guard lk(ep.mu);
  int pid = current_pid();
  if (ep.session_pid != pid || ep.session.closed()) {
    ep.session = Connection();
    ep.session = open_connection(ep);
    ep.session_pid = pid;
  }
  Payload p;
  try {
    ep.session.send_bytes(req);
    p.buf = ep.session.recv_buffer();
  } catch (const std::exception& e) {
    ep.session = Connection();
    ep.session_pid = 0;
    server_gone(ep, what, e);
  }
  return checked(std::move(p), what, ep);
}

std::string ref_request(Op op, std::uint64_t id) {
  std::string req;
  OutArchive ar(req);
  ar(static_cast<std::uint8_t>(op), id);
  return req;
}

bool take_ref(ObjectRef& ref, int pid) {
  try {
    session_request(*ref.endpoint, ref_request(Op::incref, ref.id), "incref");
    ref.ref_pid = pid;
    return true;
  } catch (const std::exception&) {
    return false;  // the call that follows reports why
  }
}

}  // namespace

Endpoint::~Endpoint() { drop_call_connection(*this); }

std::shared_ptr<Endpoint> endpoint(const connection::Address& address, const std::string& authkey) {
  std::lock_guard lk(g_mu);
  auto& slot = g_endpoints[{address.str(), authkey}];
  if (auto ep = slot.lock()) return ep;
  auto ep = std::make_shared<Endpoint>();
  ep->address = address;
  ep->authkey = authkey;
  ep->uid = g_uid++;
  slot = ep;
  return ep;
}
const connection::Address& endpoint_address(const Endpoint& e) { return e.address; }
const std::string& endpoint_authkey(const Endpoint& e) { return e.authkey; }

ObjectRef::~ObjectRef() {
  if (!endpoint || ref_pid != current_pid()) return;
  try {
    session_request(*endpoint, ref_request(Op::decref, id), "decref");
  } catch (...) {  // the server is gone: so is the object
  }
}

double wire_timeout(std::optional<std::chrono::duration<double>> timeout, const char* call) {
  check_timeout(timeout, call);
  if (!timeout) return -1.0;
  double t = timeout->count();
  if (t <= 0) return 0.0;           // -inf too: a negative number would mean "no deadline" there
  return std::isinf(t) ? -1.0 : t;  // a finite t too large for the server's clock: it waits without one
}

std::string begin_call(const ObjectRef& ref, std::string_view method) {
  std::string req;
  req.reserve(64);
  OutArchive ar(req);
  ar(static_cast<std::uint8_t>(Op::call), ref.id, ref.type, static_cast<std::uint64_t>(method.size()));
  req.append(method);
  return req;
}

namespace {

// One request on the calling thread's connection.
Payload thread_request(Endpoint& ep, int pid, const std::string& request, std::string_view method) {
  Connection& c = call_connection(ep, pid);
  Payload p;
  try {
    c.send_bytes(request);
    p.buf = c.recv_buffer();
  } catch (const std::exception& e) {
    drop_call_connection(ep);  // whatever state it is in, it is no use any more
    server_gone(ep, method, e);
  }
  return checked(std::move(p), method, ep);
}

}  // namespace

Payload finish_call(ObjectRef& ref, std::string& request, std::string_view method) {
  int pid = current_pid();
  if (ref.ref_pid != pid) take_ref(ref, pid);  // a proxy inherited through fork
  return thread_request(*ref.endpoint, pid, request, method);
}

std::shared_ptr<ObjectRef> adopt_returned(ObjectRef& parent, std::uint64_t id, std::uint64_t type) {
  auto ref = std::make_shared<ObjectRef>();
  ref->endpoint = parent.endpoint;
  ref->id = id;
  ref->type = type;
  // Python's '#PROXY' reply: the proxy takes a reference of its own (on the session, which
  // outlives this thread), then the one the call left on the thread's connection goes.
  int pid = current_pid();
  session_request(*ref->endpoint, ref_request(Op::incref, id), "incref");
  ref->ref_pid = pid;
  thread_request(*ref->endpoint, pid, ref_request(Op::decref, id), "decref");
  return ref;
}

std::shared_ptr<ObjectRef> create(const std::shared_ptr<Endpoint>& ep, std::string_view typeid_, std::uint64_t type,
                                  const std::string& args, std::string_view what) {
  std::string req;
  {
    OutArchive ar(req);
    ar(static_cast<std::uint8_t>(Op::create), std::string(typeid_), type);
  }
  req += args;
  Payload p = session_request(*ep, req, what);
  auto ref = std::make_shared<ObjectRef>();
  ref->endpoint = ep;
  ref->id = decode<std::uint64_t>(p.data(), p.size());
  ref->type = type;
  ref->ref_pid = current_pid();
  return ref;
}

// A proxy travels as its server's address, the object's id and type, and the key: nothing
// when it is this program's key (every child has it), else the manager's own key.
void save_ref(OutArchive& ar, const std::shared_ptr<ObjectRef>& ref) {
  bool present = ref != nullptr;
  ar(present);
  if (!present) return;
  const std::string& key = ref->endpoint->authkey;
  bool own_key = key == authkey();
  ar(ref->endpoint->address, ref->id, ref->type, own_key);
  if (!own_key) ar(key);
}

std::shared_ptr<ObjectRef> load_ref(InArchive& ar) {
  bool present = false;
  ar(present);
  if (!present) return nullptr;
  connection::Address address;
  std::uint64_t id = 0, type = 0;
  bool own_key = true;
  std::string key;
  ar(address, id, type, own_key);
  if (own_key) key = authkey();
  else ar(key);
  auto ref = std::make_shared<ObjectRef>();
  ref->endpoint = endpoint(address, key);
  ref->id = id;
  ref->type = type;
  take_ref(*ref, current_pid());
  return ref;
}

void throw_signature_mismatch(std::string_view method) {
  throw TypeMismatchError("method '" + std::string(method) +
                          "' has another signature on the manager server than in this program");
}
void throw_null_object(std::string_view type) {
  throw ValueError("the factory of " + std::string(type) + " returned no object (a null pointer)");
}

// Used by BaseManager.
Payload plain_request(const std::shared_ptr<Endpoint>& ep, Op op) {
  std::string req(1, static_cast<char>(op));
  return session_request(*ep, req, op == Op::shutdown ? "shutdown" : "info");
}

}  // namespace detail::mgr
}  // namespace mproc
