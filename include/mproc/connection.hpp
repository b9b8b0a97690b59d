// mproc/connection.hpp — Python's multiprocessing.connection: Pipe, Connection, wait.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mproc/detail/serialize.hpp"
#include "mproc/errors.hpp"

namespace mproc {

/// Timeouts are seconds, as in Python; any std::chrono duration converts.
using seconds = std::chrono::duration<double>;

namespace detail {
struct ConnectionImpl;
}

/// One end of a Pipe (Python: multiprocessing.connection.Connection).
///
/// Messages are framed: send(obj) writes one typed frame, recv<T>() reads one and checks that it
/// holds a T. A Connection is a handle: copies share the same descriptor, and close() closes it
/// for all of them. Pass it to a child as a Process argument under any start method. One
/// Connection is not meant to be used by two threads at once (as in Python).
///
///     auto [parent, child] = mproc::Pipe();
///     parent.send(std::vector<int>{1, 2, 3});
///     auto v = child.recv<std::vector<int>>();
class Connection {
 public:
  /// An invalid Connection (closed() is true).
  Connection() = default;
  /// Takes ownership of a connected stream socket or pipe end.
  Connection(int fd, bool readable, bool writable);

  /// Sends obj as one frame. Throws EOFError when the peer has closed.
  template <class T>
  void send(const T& obj) {
    std::string frame(kHeaderSize, '\0');
    detail::encode(frame, obj);
    send_frame(detail::type_fingerprint<T>(), frame);
  }

  /// Receives one frame holding a T; blocks until one arrives. Throws EOFError when the peer
  /// closed, TypeMismatchError (keeping the message) when it holds another type, ProtocolError
  /// on malformed bytes.
  template <class T>
  T recv() {
    std::vector<std::byte> payload = recv_payload(detail::type_fingerprint<T>(), detail::type_name<T>());
    return detail::decode<T>(payload.data(), payload.size());
  }

  /// Python: send_bytes(buf). The bytes travel unchanged; recv_bytes() on the other end returns them.
  void send_bytes(std::span<const std::byte> buf);
  void send_bytes(std::string_view buf) { send_bytes(std::as_bytes(std::span(buf.data(), buf.size()))); }
  /// Python: recv_bytes(maxlength). Returns the payload of the next message, whatever it holds.
  /// A message longer than maxlength throws ProtocolError and stays queued.
  std::vector<std::byte> recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);
  /// Python: recv_bytes_into(buf, offset). Returns the message length. A message that does not
  /// fit throws BufferTooShort and stays queued.
  std::size_t recv_bytes_into(std::span<std::byte> buf, std::size_t offset = 0);

  /// Python: poll(timeout). True when a recv would not block. std::nullopt waits forever.
  bool poll(std::optional<seconds> timeout = seconds(0)) const;

  void close();
  bool closed() const;
  bool readable() const;
  bool writable() const;
  int fileno() const;

  /// Frames whose declared length is larger are refused with ProtocolError (default 1 GiB).
  void set_max_message_size(std::size_t bytes);
  std::size_t max_message_size() const;

  // Passing to a child process (cereal).
  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

  static constexpr std::size_t kHeaderSize = 24;

 private:
  void send_frame(std::uint64_t type, std::string& frame);
  std::vector<std::byte> recv_payload(std::uint64_t type, std::string_view type_name);
  detail::ConnectionImpl& impl() const;

  std::shared_ptr<detail::ConnectionImpl> impl_;
  friend std::vector<Connection> connection_wait_impl(const std::vector<Connection>&, std::optional<seconds>);
};

/// Python: multiprocessing.Pipe(duplex). Returns (conn1, conn2); with duplex = false conn1 can
/// only receive and conn2 only send.
std::pair<Connection, Connection> Pipe(bool duplex = true);

namespace connection {
/// Python: multiprocessing.connection.wait. Returns the connections that are ready to recv (or
/// at EOF), waiting at most timeout (std::nullopt: forever).
std::vector<Connection> wait(const std::vector<Connection>& conns, std::optional<seconds> timeout = std::nullopt);
/// The same for raw descriptors, such as Process::sentinel().
std::vector<int> wait(const std::vector<int>& fds, std::optional<seconds> timeout = std::nullopt);
}  // namespace connection

}  // namespace mproc
