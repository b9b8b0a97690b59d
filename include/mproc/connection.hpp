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
struct BufferAccess;
struct ConnectionAccess;
}  // namespace detail

/// The payload of one received message, from Connection::recv_buffer(): recv_bytes() without
/// the copy into a std::vector. Move-only, read-only. A large message that came through shared
/// memory (see Connection::set_shared_memory_threshold) is a read-only mapping of the sealed
/// memfd its sender filled: receiving it copied nothing. Other messages are ordinary memory.
/// Not thread-safe; destroying it releases the memory.
class Buffer {
 public:
  Buffer() noexcept = default;
  Buffer(Buffer&& o) noexcept { take(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      take(o);
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  const std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const std::byte* begin() const noexcept { return data_; }
  const std::byte* end() const noexcept { return data_ + size_; }
  std::span<const std::byte> span() const noexcept { return {data_, size_}; }
  operator std::span<const std::byte>() const noexcept { return span(); }
  /// The bytes as characters.
  std::string_view view() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
  /// True when the bytes are a mapping of the sender's shared memory (no copy was made).
  bool is_shared_memory() const noexcept { return kind_ == Kind::shared; }
  /// Releases the memory; the Buffer is empty afterwards.
  void reset() noexcept;

 private:
  friend struct detail::BufferAccess;
  enum class Kind : unsigned char { none, heap, anonymous, shared };
  void take(Buffer& o) noexcept {
    data_ = o.data_;
    size_ = o.size_;
    capacity_ = o.capacity_;
    kind_ = o.kind_;
    mapping_ = std::move(o.mapping_);
    o.data_ = nullptr;
    o.size_ = o.capacity_ = 0;
    o.kind_ = Kind::none;
  }
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;  // bytes owned at data_ (an anonymous mapping's length)
  Kind kind_ = Kind::none;
  std::shared_ptr<void> mapping_;  // shared: the sender's slab, mapped (the receiving end keeps it for reuse)
};

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
    std::optional<T> out;
    recv_payload(
        detail::type_fingerprint<T>(), detail::type_name<T>(),
        [](const std::byte* p, std::size_t n, void* o) { static_cast<std::optional<T>*>(o)->emplace(detail::decode<T>(p, n)); },
        &out);
    return std::move(*out);
  }

  /// Python: send_bytes(buf). The bytes travel unchanged; recv_bytes() on the other end returns them.
  void send_bytes(std::span<const std::byte> buf);
  void send_bytes(std::string_view buf) { send_bytes(std::as_bytes(std::span(buf.data(), buf.size()))); }
  /// Python: recv_bytes(maxlength). Returns the payload of the next message, whatever it holds.
  /// A message longer than maxlength throws ProtocolError and stays queued.
  std::vector<std::byte> recv_bytes(std::optional<std::size_t> maxlength = std::nullopt);
  /// Python: recv_bytes_into(buf, offset). Returns the message length. A message that does not
  /// fit throws BufferTooShort and stays queued. The bytes are read straight into buf.
  std::size_t recv_bytes_into(std::span<std::byte> buf, std::size_t offset = 0);
  /// recv_bytes() without the copy into a vector (no Python equivalent): a large message that
  /// came through shared memory is handed over as the mapping it arrived in.
  Buffer recv_buffer(std::optional<std::size_t> maxlength = std::nullopt);

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

  /// Messages of at least this many bytes sent on a Unix socket (every Pipe) travel in shared
  /// memory: the sender copies the payload once into a new memfd, seals it and passes it with
  /// SCM_RIGHTS beside a 24-byte header; the receiver checks the seals and the size and maps it.
  /// This skips the socket's small buffer and the context switches it costs (see
  /// docs/design/large-messages.md). Default kSharedMemoryThreshold, or the environment's
  /// MPROC_SHM_THRESHOLD (bytes, or "off") read once per process; SIZE_MAX turns it off.
  /// Smaller messages, and every message on a plain pipe, stream through the descriptor. The
  /// setting belongs to the sending end and goes with the Connection to a child process.
  void set_shared_memory_threshold(std::size_t bytes);
  std::size_t shared_memory_threshold() const;
  static constexpr std::size_t kSharedMemoryThreshold = std::size_t{1} << 20;

  // Passing to a child process (cereal).
  void save(detail::OutArchive& ar) const;
  void load(detail::InArchive& ar);

  static constexpr std::size_t kHeaderSize = 24;

 private:
  void send_frame(std::uint64_t type, std::string& frame);
  using DecodeFn = void (*)(const std::byte* data, std::size_t n, void* out);
  void recv_payload(std::uint64_t type, std::string_view type_name, DecodeFn decode, void* out);
  detail::ConnectionImpl& impl() const;

  std::shared_ptr<detail::ConnectionImpl> impl_;
  friend struct detail::ConnectionAccess;
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

// Listener and Client (Python: multiprocessing.connection.Listener / Client).
#include "mproc/listener.hpp"  // IWYU pragma: export
