// Listener and Client (Python's multiprocessing.connection.Listener / Client): stream sockets
// whose first messages are the authkey handshake of util/challenge, then framed Connections.
#include "listener_detail.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <system_error>

#include "mproc/detail/timeout.hpp"
#include "util/auth.hpp"
#include "util/challenge.hpp"

namespace mproc {
namespace connection {

Address::Address(std::string host_name, int port_number)
    : host(std::move(host_name)), port(static_cast<std::uint16_t>(port_number)),
      family(host.find(':') != std::string::npos ? Family::af_inet6 : Family::af_inet) {
  if (port_number < 0 || port_number > 65535) throw ValueError("port out of range: " + std::to_string(port_number));
}

std::string Address::str() const {
  std::string out;
  if (family == Family::af_unix) {
    if (!is_abstract()) return host;
    out = "@";
    out.append(host, 1);
    return out;
  }
  if (family == Family::af_inet6) out = "[";
  out += host;
  if (family == Family::af_inet6) out += "]";
  out += ":";
  out += std::to_string(port);
  return out;
}

}  // namespace connection

namespace detail {
namespace {

using connection::Address;
using connection::Family;

// Before the handshake a client may send only this much: the reply is 64 bytes.
constexpr std::size_t kHandshakeMax = 128;
constexpr challenge::Labels kLabels{"mproc-connection-client:", "mproc-connection-server:"};
constexpr std::string_view kNoAuth = "NOAUTH";
// How long a server waits for a client's part of the handshake, and a client for the server's.
constexpr double kServerHandshakeSeconds = 10;
constexpr double kClientHandshakeSeconds = 60;

struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  sockaddr* get() { return reinterpret_cast<sockaddr*>(&storage); }
};

SockAddr to_sockaddr(const Address& a) {
  SockAddr out;
  if (a.family == Family::af_unix) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    un->sun_family = AF_UNIX;
    if (a.host.empty() || a.host.size() >= sizeof(un->sun_path))
      throw ValueError("a Unix socket address must have 1 to " + std::to_string(sizeof(un->sun_path) - 1) +
                       " bytes: '" + a.str() + "'");
    std::memcpy(un->sun_path, a.host.data(), a.host.size());
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + a.host.size() + (a.is_abstract() ? 0 : 1));
    return out;
  }
  addrinfo hints{};
  hints.ai_family = a.family == Family::af_inet6 ? AF_INET6 : AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(a.host.c_str(), std::to_string(a.port).c_str(), &hints, &res);
  if (rc != 0 || !res) throw ValueError("cannot resolve '" + a.str() + "': " + ::gai_strerror(rc));
  std::memcpy(&out.storage, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  ::freeaddrinfo(res);
  return out;
}

Address from_sockaddr(const sockaddr_storage& s, socklen_t len, Family family) {
  char host[INET6_ADDRSTRLEN] = {};
  if (s.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&s);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return Address(host, ntohs(in->sin_port));
  }
  if (s.ss_family == AF_INET6) {
    auto* in = reinterpret_cast<const sockaddr_in6*>(&s);
    ::inet_ntop(AF_INET6, &in->sin6_addr, host, sizeof host);
    return Address(host, ntohs(in->sin6_port));
  }
  auto* un = reinterpret_cast<const sockaddr_un*>(&s);
  std::size_t n = len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
  std::string path(un->sun_path, n);
  if (!path.empty() && path[0] != '\0') path = path.c_str();  // a path ends at its NUL
  Address a(std::move(path));
  a.family = family;
  return a;
}

int domain_of(Family f) { return f == Family::af_unix ? AF_UNIX : f == Family::af_inet6 ? AF_INET6 : AF_INET; }

[[noreturn]] void refused(const std::string& why) { throw AuthenticationError(why); }

}  // namespace

Address resolve_family(const Address& a, Family family) {
  Address out = a;
  if (family != Family::any) {
    bool unix_like = family == Family::af_unix;
    if (unix_like != (a.family == Family::af_unix) && a.family != Family::any)
      throw ValueError("address '" + a.str() + "' does not belong to the family asked for");
    out.family = family;
  }
  if (out.family == Family::any) out.family = Family::af_unix;
  return out;
}

os::Fd listen_on(const Address& a, int backlog, Address& bound) {
  SockAddr sa = to_sockaddr(a);
  os::Fd s(::socket(domain_of(a.family), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) os::throw_errno("socket for a Listener");
  if (a.family != Family::af_unix) {
    int one = 1;
    ::setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(s.get(), sa.get(), sa.len) != 0) os::throw_errno("cannot listen on '" + a.str() + "'");
  if (::listen(s.get(), backlog < 1 ? 1 : backlog) != 0) os::throw_errno("listen on '" + a.str() + "'");
  sockaddr_storage got{};
  socklen_t len = sizeof got;
  ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&got), &len);
  bound = a.family == Family::af_unix ? a : from_sockaddr(got, len, a.family);
  return s;
}

os::Fd connect_to(const Address& a) {
  SockAddr sa = to_sockaddr(a);
  os::Fd s(::socket(domain_of(a.family), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!s) os::throw_errno("socket for a Client");
  if (os::retry([&] { return ::connect(s.get(), sa.get(), sa.len); }) != 0)
    throw ConnectionError("cannot connect to '" + a.str() + "': " + std::strerror(errno));
  return s;
}

Connection connection_from_socket(os::Fd fd) {
  sockaddr_storage me{};
  socklen_t len = sizeof me;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&me), &len) == 0 && me.ss_family != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return Connection(fd.release(), true, true);
}

bool serve_handshake(Connection& c, const std::optional<std::string>& authkey, seconds timeout) {
  try {
    if (!authkey) {
      c.send_bytes(kNoAuth);
      return true;
    }
    unsigned char mine[challenge::kSize];
    c.send_bytes(challenge::hello(mine));
    if (!c.poll(timeout)) return false;
    auto reply = c.recv_bytes(kHandshakeMax);
    bool ok = false;
    std::string v = challenge::verdict(*authkey, kLabels, mine, reply.data(), reply.size(), ok);
    c.send_bytes(v);
    return ok;
  } catch (const std::exception&) {  // garbage, a hang-up, a frame too long: this client is done
    return false;
  }
}

void client_handshake(Connection& c, const std::optional<std::string>& authkey, const Address& to) {
  auto next = [&](const char* during) {
    try {
      if (!c.poll(seconds(kClientHandshakeSeconds)))
        refused("the server at '" + to.str() + "' did not answer while " + during);
      return c.recv_bytes(kHandshakeMax);
    } catch (const EOFError&) {
      // A server that refuses a key says FAIL first: a bare hang-up is a server that went away.
      throw ConnectionError("the server at '" + to.str() + "' closed the connection while " + during);
    } catch (const ProtocolError& e) {
      refused("the server at '" + to.str() + "' sent garbage while " + during + ": " + e.what());
    } catch (const OSError& e) {  // a reset: gone too
      throw ConnectionError("the server at '" + to.str() + "' dropped the connection while " + during + ": " + e.what());
    }
  };
  auto hello = next("greeting");
  std::string_view h(reinterpret_cast<const char*>(hello.data()), hello.size());
  if (h == kNoAuth) {
    if (authkey) refused("the server at '" + to.str() + "' does not authenticate: it cannot prove that it holds the key");
    return;
  }
  if (!authkey) refused("the server at '" + to.str() + "' requires an authkey and none was given");
  std::string reply, mine;
  if (challenge::reply(*authkey, kLabels, hello.data(), hello.size(), reply, mine) != challenge::Outcome::ok)
    refused("the server at '" + to.str() + "' sent a malformed challenge");
  try {
    c.send_bytes(reply);
  } catch (const std::exception& e) {
    throw ConnectionError("the server at '" + to.str() + "' hung up during authentication: " + e.what());
  }
  auto verdict = next("authenticating");
  switch (challenge::check_verdict(*authkey, kLabels, mine, verdict.data(), verdict.size())) {
    case challenge::Outcome::ok:
      return;
    case challenge::Outcome::refused:
      refused("digest received was wrong: the server at '" + to.str() + "' refused the authkey");
    case challenge::Outcome::unproven:
      refused("the server at '" + to.str() + "' did not prove that it holds the authkey");
    case challenge::Outcome::malformed:
      refused("the server at '" + to.str() + "' sent a malformed verdict");
  }
}

}  // namespace detail

namespace connection {

struct Listener::Impl {
  os::Fd sock;
  Address address;
  std::optional<std::string> authkey;
  std::optional<Address> last;
  bool unlink_on_close = false;
};

Listener::Listener(ListenerOptions o) : impl_(std::make_unique<Impl>()) {
  Address want;
  if (o.address) {
    want = detail::resolve_family(*o.address, o.family);
  } else if (o.family == Family::af_inet || o.family == Family::af_inet6) {
    want = Address(o.family == Family::af_inet6 ? "::1" : "127.0.0.1", 0);
  } else {
    std::string name = std::string(1, '\0') + "mproc-listener-" + std::to_string(::getpid()) + "-";
    for (unsigned char b : detail::random_bytes(8)) name += "0123456789abcdef"[b & 15];
    want = Address(std::move(name));
  }
  impl_->sock = detail::listen_on(want, o.backlog, impl_->address);
  impl_->unlink_on_close = want.family == Family::af_unix && !want.is_abstract();
  impl_->authkey = std::move(o.authkey);
}

Listener::Listener(Listener&&) noexcept = default;
Listener& Listener::operator=(Listener&&) noexcept = default;
Listener::~Listener() {
  if (impl_) close();
}

Connection Listener::accept() {
  // No deadline: returns only with a client that passed the handshake.
  return std::move(*accept(seconds(std::numeric_limits<double>::infinity())));
}

std::optional<Connection> Listener::accept(seconds timeout) {
  if (!impl_ || !impl_->sock) throw Error("accept() on a closed Listener");
  const double s = detail::wait_seconds(timeout, "Listener.accept");  // -1: no deadline
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(seconds(std::max(s, 0.0)));
  for (;;) {
    auto left = std::chrono::duration<double>(deadline - std::chrono::steady_clock::now()).count();
    if (!os::wait_readable(impl_->sock.get(), s < 0 ? -1 : os::to_poll_ms(std::max(left, 0.0)))) return std::nullopt;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    os::Fd fd(::accept4(impl_->sock.get(), reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC));
    if (!fd) {
      if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED) continue;
      os::throw_errno("accept on '" + impl_->address.str() + "'");
    }
    Connection c = detail::connection_from_socket(std::move(fd));
    // A client that fails the handshake is dropped and the server goes on (Python's accept()
    // raises instead, which ends a naive serve loop).
    if (!detail::serve_handshake(c, impl_->authkey, seconds(detail::kServerHandshakeSeconds))) continue;
    if (impl_->address.family != Family::af_unix) impl_->last = detail::from_sockaddr(peer, len, impl_->address.family);
    return c;
  }
}

void Listener::close() {
  if (!impl_->sock) return;
  impl_->sock.reset();
  if (impl_->unlink_on_close) ::unlink(impl_->address.host.c_str());
}

Address Listener::address() const { return impl_->address; }
std::optional<Address> Listener::last_accepted() const { return impl_->last; }
int Listener::fileno() const { return impl_->sock.get(); }

Connection Client(const Address& address, std::optional<std::string> authkey, Family family) {
  Address to = detail::resolve_family(address, family);
  Connection c = detail::connection_from_socket(detail::connect_to(to));
  detail::client_handshake(c, authkey, to);
  return c;
}

}  // namespace connection
}  // namespace mproc
