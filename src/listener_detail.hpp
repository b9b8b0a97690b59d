// The pieces of Listener/Client that the manager server reuses: sockets for an Address, and
// the two halves of the authkey handshake on a framed Connection.
#pragma once

#include <optional>
#include <string>

#include "mproc/listener.hpp"
#include "os/fd.hpp"

namespace mproc::detail {

/// The address with its family filled in (from the address, or from the family asked for).
connection::Address resolve_family(const connection::Address& a, connection::Family family);
/// A listening socket bound to a; *bound receives the address in use (the port chosen).
os::Fd listen_on(const connection::Address& a, int backlog, connection::Address& bound);
/// A connected socket (ConnectionError when nobody listens).
os::Fd connect_to(const connection::Address& a);
/// Wraps a connected stream socket (TCP: with TCP_NODELAY, as every message is a whole request).
Connection connection_from_socket(os::Fd fd);

/// Server half, run on a fresh connection before anything else: the challenge (or "no key"),
/// and the answer to the client's challenge. False when the client failed, sent garbage or
/// stayed silent longer than timeout: drop the connection.
bool serve_handshake(Connection& c, const std::optional<std::string>& authkey, seconds timeout);
/// Client half; throws AuthenticationError (or ConnectionError when the server hangs up).
void client_handshake(Connection& c, const std::optional<std::string>& authkey, const connection::Address& to);

}  // namespace mproc::detail
