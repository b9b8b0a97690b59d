// The client side of the resource tracker: one per process; a fork child gets a fresh one.
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>

#include "mproc/errors.hpp"
#include "os/proc.hpp"
#include "popen/popen.hpp"
#include "process_state.hpp"
#include "resource_tracker/protocol.hpp"
#include "resource_tracker/resource_tracker.hpp"
#include "spawn/spawn.hpp"

namespace mproc::detail {
namespace {

using namespace tracker;

// Generous: a tracker that does not answer within this time is stuck (stopped?), and a register
// that blocks forever would be worse than an error.
constexpr int kIoTimeoutSeconds = 30;

struct Client {
  // Recursive: starting the tracker builds a start-up message, which asks for the endpoint.
  std::recursive_mutex mu;
  ResourceTrackerEndpoint ep;
  bool started_here = false;  // the tracker is this process's child: reap it once it is gone
  bool had_tracker = false;   // a tracker answered before: starting another one loses its records
  os::Fd conn;                // authenticated; never shared with a fork child
  Client* parents = nullptr;  // the parent's, in a fork child: kept reachable (see ProcessState)
};

Client* make_client() {
  auto* c = new Client;
  // Every process starts as the root of its own program; a child learns its real root from its
  // parent (adopt_resource_tracker_endpoint, or the copied memory of fork).
  c->ep.root_pid = static_cast<std::int32_t>(::getpid());
  c->ep.root_start = os::process_start_time(c->ep.root_pid);
  return c;
}

// Leaked on purpose: a fork child must not destroy the parent's. Created before main (so that a
// fork child, whenever it is made, finds the root of its program in the copied memory), or at
// first use if that comes earlier, from another static initialiser.
Client* g_client = nullptr;

Client& client() {
  if (!g_client) g_client = make_client();
  return *g_client;
}

const bool g_created_before_main = (client(), true);

std::string hex(const std::uint8_t* p, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

// Derived from the program's key: every process of the program finds the same name, and no other
// process can guess it in advance to sit on it.
std::string compute_address(const ResourceTrackerEndpoint& ep) {
  std::string msg = "mproc-resource-tracker-address:" + std::to_string(ep.root_pid) + ":" + std::to_string(ep.root_start);
  Digest d = hmac_sha256(authkey(), msg.data(), msg.size());
  return "mproc-resource-tracker-" + std::to_string(ep.root_pid) + "-" + hex(d.data(), 8);
}

void ensure_address(Client& c) {
  if (c.ep.address.empty()) c.ep.address = compute_address(c.ep);
}

sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::size_t n = std::min(name.size(), sizeof(a.sun_path) - 1);
  std::memcpy(a.sun_path + 1, name.data(), n);  // sun_path[0] stays NUL: the abstract namespace
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
  return a;
}

os::Fd new_socket() {
  os::Fd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!s) os::throw_errno("socket for the resource tracker");
  return s;
}

// A connected socket, or an invalid Fd with err set.
os::Fd connect_to(const std::string& address, int& err) {
  os::Fd s = new_socket();
  socklen_t len;
  sockaddr_un addr = abstract_address(address, len);
  if (os::retry([&] { return ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), len); }) != 0) {
    err = errno;
    return {};
  }
  timeval tv{kIoTimeoutSeconds, 0};
  ::setsockopt(s.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(s.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return s;
}

[[noreturn]] void no_answer(const char* during) {
  throw Error(std::string("the resource tracker did not answer (") + during + ")");
}

// Mutual challenge-response; returns the tracker's pid, which its proof covers, or 0 when the
// tracker closed the connection without a word (it was ending just as we connected).
std::int32_t handshake(int sock) {
  unsigned char hello[kHelloSize];
  ssize_t r = os::retry([&] { return ::recv(sock, hello, sizeof hello, 0); });
  if (r == 0 || (r < 0 && errno == ECONNRESET)) return 0;
  if (r != static_cast<ssize_t>(sizeof hello) || std::memcmp(hello, "CHAL", 4) != 0) no_answer("authenticating");
  std::uint32_t pid = 0;
  std::memcpy(&pid, hello + 4, 4);
  if (pid == 0 || pid > 0x7fffffff) no_answer("authenticating");
  unsigned char reply[kReplySize];
  Digest a = answer(kClientLabel, hello + 8, pid);
  std::memcpy(reply, a.data(), 32);
  std::string mine = random_bytes(kChallenge);
  std::memcpy(reply + 32, mine.data(), kChallenge);
  if (::send(sock, reply, sizeof reply, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof reply)) no_answer("authenticating");
  unsigned char verdict[kVerdictSize];
  r = os::retry([&] { return ::recv(sock, verdict, sizeof verdict, 0); });
  if (r == 4 && std::memcmp(verdict, "FAIL", 4) == 0)
    throw AuthenticationError("the resource tracker refused this process's key");
  if (r != static_cast<ssize_t>(sizeof verdict) || std::memcmp(verdict, "OK..", 4) != 0) no_answer("authenticating");
  Digest expect = answer(kServerLabel, reinterpret_cast<const unsigned char*>(mine.data()), pid);
  if (!equal_constant_time(expect.data(), verdict + 4, 32))
    throw AuthenticationError("the resource tracker did not prove that it holds this program's key");
  return static_cast<std::int32_t>(pid);
}

void reset_after_death(Client& c) {
  c.conn.reset();
  if (c.started_here && c.ep.pid > 0) ::waitpid(c.ep.pid, nullptr, WNOHANG);  // reap it
  c.ep.pid = 0;
  c.started_here = false;
}

// Binds the address and spawns a tracker that takes the listening socket over. False when the
// address is taken: another process of the program is starting one right now.
bool start_tracker(Client& c) {
  if (!state().initialized)
    throw Error(
        "the resource tracker cannot start: mproc::init(argc, argv) must be called first in main (it runs in a "
        "spawned process). Call it, or create the segment with .track = false");
  os::Fd listener = new_socket();
  socklen_t len;
  sockaddr_un addr = abstract_address(c.ep.address, len);
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == EADDRINUSE) return false;
    os::throw_errno("bind the resource tracker's socket");
  }
  if (::listen(listener.get(), 128) != 0) os::throw_errno("listen on the resource tracker's socket");
  if (c.had_tracker)  // Python's words
    std::fputs("mproc: resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.\n", stderr);
  ProcessImpl p;
  p.name = "ResourceTracker";
  p.task = make_task(&tracker_main, PassedFd{listener.get()}, c.ep.root_pid, c.ep.root_start);
  std::vector<int> fds;
  std::string msg = make_startup_message(p, Method::spawn, fds);
  os::Fd memfd = os::memfd_with("mproc-resource-tracker", msg.data(), msg.size());
  c.ep.pid = spawn_self(kChildMarker, memfd.get(), fds);
  c.started_here = true;
  return true;  // our copy of the listener closes here: if the tracker dies, connecting fails
}

void ensure_connected(Client& c) {
  if (c.conn) return;
  ensure_address(c);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int err = 0;
    os::Fd s = connect_to(c.ep.address, err);
    if (s) {
      std::int32_t pid = handshake(s.get());
      if (pid == 0) continue;  // it was ending: the next connect finds nobody and starts another
      if (c.started_here && pid != c.ep.pid) reset_after_death(c);  // ours died; someone else's answered
      c.ep.pid = pid;
      c.conn = std::move(s);
      c.had_tracker = true;
      return;
    }
    if (err != ECONNREFUSED && err != ENOENT) os::throw_errno("connect to the resource tracker", err);
    if (c.started_here) reset_after_death(c);  // it listened once, so it is gone now
    if (!start_tracker(c)) ::usleep(1000);     // another process is between bind() and listen()
  }
  throw Error("cannot reach or start the resource tracker at '@" + c.ep.address + "'");
}

std::string request(const char* op, ResourceKind kind, const std::string& name, os::FileIdentity id) {
  std::string msg(kRequestHeader, '\0');
  auto k = static_cast<std::uint32_t>(kind);
  std::memcpy(msg.data(), op, 4);
  std::memcpy(msg.data() + 4, &k, 4);
  std::memcpy(msg.data() + 8, &id.dev, 8);
  std::memcpy(msg.data() + 16, &id.ino, 8);
  return msg + name;
}

bool send_request(Client& c, const std::string& msg) {
  ssize_t w = os::retry([&] { return ::send(c.conn.get(), msg.data(), msg.size(), MSG_NOSIGNAL); });
  return w == static_cast<ssize_t>(msg.size());
}

void check_name(const std::string& name) {
  if (!name.starts_with('/') || !os::shm_name_problem(name).empty())
    throw ValueError("'" + name + "' cannot be registered with the resource tracker: " +
                     (name.starts_with('/') ? os::shm_name_problem(name) : "it must start with '/'"));
}

}  // namespace

const char* resource_kind_name(ResourceKind kind) noexcept {
  switch (kind) {
    case ResourceKind::shared_memory: return "shared_memory";
    case ResourceKind::semaphore: return "semaphore";
  }
  return "unknown";
}

ResourceTrackerEndpoint resource_tracker_endpoint() {
  std::lock_guard lock(client().mu);
  ensure_address(client());
  return client().ep;
}

void adopt_resource_tracker_endpoint(ResourceTrackerEndpoint ep) {
  if (ep.address.empty() || ep.root_pid <= 0) return;  // a parent that knows no program: stay our own
  std::lock_guard lock(client().mu);
  client().conn.reset();
  client().ep = std::move(ep);
  client().started_here = false;
  client().had_tracker = false;
}

void resource_tracker_reset_in_child() noexcept {
  Client* old = &client();
  // The parent's descriptor is a copy here; close ours without touching its mutex, which another
  // of its threads may have held at fork.
  if (old->conn) ::close(old->conn.release());
  auto* fresh = new Client;
  fresh->ep = old->ep;
  fresh->parents = old;
  g_client = fresh;
}

std::vector<int> resource_tracker_client_fds() {
  std::lock_guard lock(client().mu);
  if (client().conn) return {client().conn.get()};
  return {};
}

void resource_tracker_ensure_running() {
  std::lock_guard lock(client().mu);
  ensure_connected(client());
}

void resource_tracker_register(ResourceKind kind, const std::string& name, os::FileIdentity id) {
  check_name(name);
  if (!id) throw ValueError("'" + name + "' cannot be registered with the resource tracker without its file identity");
  std::string msg = request(kRegister, kind, name, id);
  std::lock_guard lock(client().mu);
  Client& c = client();
  for (int attempt = 0; attempt < 2; ++attempt) {
    ensure_connected(c);
    if (send_request(c, msg)) return;
    if (errno == EAGAIN || errno == EWOULDBLOCK) no_answer("registering");
    reset_after_death(c);  // it died (its records with it): the next attempt starts another one
  }
  throw Error("cannot register '" + name + "' with the resource tracker: it keeps dying");
}

void resource_tracker_unregister(ResourceKind kind, const std::string& name, os::FileIdentity id) noexcept {
  try {
    std::lock_guard lock(client().mu);
    Client& c = client();
    if (!c.conn) {
      // Connect only to a tracker that runs: a new one would hold nothing to forget.
      ensure_address(c);
      int err = 0;
      os::Fd s = connect_to(c.ep.address, err);
      if (!s) return;
      std::int32_t pid = handshake(s.get());
      if (pid == 0) return;
      c.ep.pid = pid;
      c.conn = std::move(s);
      c.had_tracker = true;
    }
    if (!send_request(c, request(kUnregister, kind, name, id))) reset_after_death(c);
  } catch (...) {  // nothing to tell: without a tracker nobody would unlink the name anyway
  }
}

}  // namespace mproc::detail
