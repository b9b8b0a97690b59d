// mproc/listener.hpp — Python's multiprocessing.connection.Listener and Client: Connections
// between processes that did not create each other, over Unix or TCP sockets, with an
// authkey.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "mproc/connection.hpp"

namespace mproc::connection {

/// Python's address families: 'AF_UNIX', 'AF_INET', 'AF_INET6'. `any` takes the family from
/// the address (a (host, port) pair is TCP, a string a Unix socket path).
enum class Family { any, af_unix, af_inet, af_inet6 };

/// An address, as Python writes them: a Unix socket path ("/run/app.sock"; a leading '\0'
/// makes it a Linux abstract name, which needs no file and no cleanup) or a TCP (host, port)
/// pair ("127.0.0.1", "::1", "localhost"; port 0 asks the system for a free one).
///
///     Address a = "/tmp/app.sock";
///     Address b = {"127.0.0.1", 6000};
///     Address c = std::string("\0app", 4);   // abstract
struct Address {
  Address() = default;
  Address(std::string path) : host(std::move(path)), family(Family::af_unix) {}  // NOLINT: as Python's str
  Address(const char* path) : Address(std::string(path)) {}                      // NOLINT
  Address(std::string host_name, int port_number);

  /// The Unix path (or abstract name with its leading '\0'), or the TCP host.
  std::string host;
  std::uint16_t port = 0;
  /// af_unix, af_inet or af_inet6 once known; `any` only in a default-constructed Address.
  Family family = Family::any;

  bool is_abstract() const { return family == Family::af_unix && !host.empty() && host[0] == '\0'; }
  /// For messages: "/path", "@abstract", "127.0.0.1:6000", "[::1]:6000".
  std::string str() const;
  bool operator==(const Address&) const = default;

  template <class A>
  void serialize(A& a) {
    a(host, port, family);
  }
};

/// Python: Listener(address, family, backlog, authkey).
struct ListenerOptions {
  /// Empty: a fresh abstract Unix name (family any or af_unix), or 127.0.0.1 / ::1 with a port
  /// the system picks (af_inet / af_inet6). Read the result with address().
  std::optional<Address> address{};
  Family family = Family::any;
  int backlog = 1;
  /// With a key, accept() authenticates each client (mutual HMAC-SHA256 challenge) and drops
  /// those that fail. Without one (Python's authkey=None), nothing is checked.
  std::optional<std::string> authkey{};
};

/// A listening socket (Python: multiprocessing.connection.Listener).
///
///     mproc::connection::Listener server({.address = {{"127.0.0.1", 0}}, .authkey = key});
///     auto addr = server.address();                    // the port the system chose
///     mproc::Connection c = server.accept();           // a client that proved the key
///     // elsewhere: auto c = mproc::connection::Client(addr, key);
///
/// A client that fails authentication (wrong key, no key, garbage, silence for 10 s) is
/// dropped and accept() waits for the next one, so one bad client never stops a server. A Unix
/// socket file the Listener created is removed by close() and the destructor. Move-only; one
/// thread at a time may call accept().
class Listener {
 public:
  explicit Listener(ListenerOptions options = {});
  Listener(Listener&&) noexcept;
  Listener& operator=(Listener&&) noexcept;
  ~Listener();

  /// Waits for a client and returns its Connection (authenticated when the Listener has a key).
  /// Throws mproc::Error once close() was called.
  Connection accept();
  /// Like accept(), but gives up after timeout: std::nullopt then.
  std::optional<Connection> accept(seconds timeout);
  /// Stops listening (and removes the socket file it created). Idempotent.
  void close();
  Address address() const;
  /// The address of the last accepted client (a TCP peer; empty for Unix sockets).
  std::optional<Address> last_accepted() const;
  int fileno() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// Python: multiprocessing.connection.Client(address, family, authkey). Connects and, with a
/// key, proves it to the server and makes the server prove it back. Throws
/// AuthenticationError when the server refuses the key, does not prove it holds it, asks for a
/// key that was not given or gives none when one was; ConnectionError when nobody listens there
/// or the server hangs up before the handshake ends.
Connection Client(const Address& address, std::optional<std::string> authkey = std::nullopt, Family family = Family::any);

}  // namespace mproc::connection
