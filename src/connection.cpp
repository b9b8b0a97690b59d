#include "mproc/connection.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "mproc/detail/fd_passing.hpp"
#include "os/fd.hpp"
#include "reduction/wire.hpp"

namespace mproc {
namespace detail {

struct Frame {
  std::uint64_t type = 0;
  std::vector<std::byte> payload;
};

struct ConnectionImpl {
  os::Fd fd;
  bool readable = false;
  bool writable = false;
  bool is_socket = false;
  std::size_t max_message = std::size_t{1} << 30;
  // Bytes read ahead of the current frame, so a small message costs one read() call.
  std::vector<char> rbuf = std::vector<char>(64 * 1024);
  std::size_t rbeg = 0, rend = 0;
  std::optional<Frame> pending;  // a whole frame not yet taken (wrong type, too long, ...)
  std::string broken;            // framing lost: every later read fails with this message

  std::size_t buffered() const { return rend - rbeg; }

  [[noreturn]] void fail(const std::string& why) {
    broken = why;
    throw ProtocolError(why);
  }

  // Reads until at least n bytes are buffered; false at EOF.
  bool fill(std::size_t n) {
    if (rbeg > 0 && rbuf.size() - rbeg < n) {
      std::memmove(rbuf.data(), rbuf.data() + rbeg, buffered());
      rend -= rbeg;
      rbeg = 0;
    }
    while (buffered() < n) {
      ssize_t r = os::retry([&] { return ::read(fd.get(), rbuf.data() + rend, rbuf.size() - rend); });
      if (r < 0) os::throw_errno("recv on a Connection");
      if (r == 0) return false;
      rend += static_cast<std::size_t>(r);
    }
    return true;
  }

  Frame read_frame() {
    if (pending) return std::exchange(pending, std::nullopt).value();
    if (!broken.empty()) throw ProtocolError(broken);
    if (!fill(kFrameHeaderSize)) {
      if (buffered() == 0) throw EOFError("the peer closed the connection");
      fail("truncated frame: the peer closed after " + std::to_string(buffered()) + " bytes of a frame header");
    }
    FrameHeader h;
    try {
      h = parse_header(rbuf.data() + rbeg, max_message);
    } catch (const ProtocolError& e) {
      fail(e.what());
    }
    rbeg += kFrameHeaderSize;
    Frame f{h.type, {}};
    auto len = static_cast<std::size_t>(h.length);
    std::size_t have = std::min(len, buffered());
    // Grow as bytes arrive rather than trusting the header with one huge allocation.
    f.payload.resize(std::min(len, std::max(have, std::size_t{1} << 20)));
    if (have) std::memcpy(f.payload.data(), rbuf.data() + rbeg, have);  // data() may be null when empty
    rbeg += have;
    while (have < len) {
      if (have == f.payload.size()) f.payload.resize(std::min(len, f.payload.size() * 2));
      ssize_t r = os::retry([&] { return ::read(fd.get(), f.payload.data() + have, f.payload.size() - have); });
      if (r < 0) os::throw_errno("recv on a Connection");
      if (r == 0)
        fail("truncated frame: the peer closed after " + std::to_string(have) + " of " + std::to_string(len) +
             " payload bytes");
      have += static_cast<std::size_t>(r);
    }
    if (rbeg == rend) rbeg = rend = 0;
    return f;
  }

  void write_iov(iovec* iov, int n) {
    while (n > 0) {
      ssize_t w;
      if (is_socket) {
        msghdr m{};
        m.msg_iov = iov;
        m.msg_iovlen = static_cast<std::size_t>(n);
        w = os::retry([&] { return ::sendmsg(fd.get(), &m, MSG_NOSIGNAL); });
      } else {
        w = os::retry([&] { return ::writev(fd.get(), iov, n); });
      }
      if (w < 0) {
        if (errno == EPIPE || errno == ECONNRESET) throw EOFError("the peer closed the connection (send failed)");
        os::throw_errno("send on a Connection");
      }
      auto done = static_cast<std::size_t>(w);
      while (n > 0 && done >= iov->iov_len) {
        done -= iov->iov_len;
        ++iov;
        --n;
      }
      if (n > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + done;
        iov->iov_len -= done;
      }
    }
  }
};

}  // namespace detail

Connection::Connection(int fd, bool readable, bool writable) : impl_(std::make_shared<detail::ConnectionImpl>()) {
  impl_->fd.reset(fd);
  impl_->readable = readable;
  impl_->writable = writable;
  struct stat st {};
  impl_->is_socket = ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

detail::ConnectionImpl& Connection::impl() const {
  if (!impl_ || !impl_->fd) throw Error("the connection is closed");
  return *impl_;
}

void Connection::send_frame(std::uint64_t type, std::string& frame) {
  auto& c = impl();
  if (!c.writable) throw Error("the connection is read-only");
  if (frame.size() - kHeaderSize > c.max_message)
    throw ProtocolError("message of " + std::to_string(frame.size() - kHeaderSize) + " bytes is over the limit of " +
                        std::to_string(c.max_message) + " bytes");
  detail::write_header(frame.data(), type, frame.size() - kHeaderSize);
  iovec iov{frame.data(), frame.size()};
  c.write_iov(&iov, 1);
}

void Connection::send_bytes(std::span<const std::byte> buf) {
  auto& c = impl();
  if (!c.writable) throw Error("the connection is read-only");
  if (buf.size() > c.max_message)
    throw ProtocolError("message of " + std::to_string(buf.size()) + " bytes is over the limit of " +
                        std::to_string(c.max_message) + " bytes");
  char header[kHeaderSize];
  detail::write_header(header, detail::kBytesType, buf.size());
  iovec iov[2] = {{header, kHeaderSize}, {const_cast<std::byte*>(buf.data()), buf.size()}};
  c.write_iov(iov, buf.empty() ? 1 : 2);
}

std::vector<std::byte> Connection::recv_payload(std::uint64_t type, std::string_view type_name) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  detail::Frame f = c.read_frame();
  if (f.type != type) {
    std::string got = f.type == detail::kBytesType ? std::string("raw bytes (send_bytes)") : "another type";
    c.pending = std::move(f);
    throw TypeMismatchError("recv<" + std::string(type_name) + ">: the message holds " + got +
                            "; it is kept for a recv of the right type or recv_bytes()");
  }
  return std::move(f.payload);
}

std::vector<std::byte> Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  detail::Frame f = c.read_frame();
  if (maxlength && f.payload.size() > *maxlength) {
    auto n = f.payload.size();
    c.pending = std::move(f);
    throw ProtocolError("recv_bytes: message of " + std::to_string(n) + " bytes is longer than maxlength " +
                        std::to_string(*maxlength) + "; it is kept");
  }
  return std::move(f.payload);
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buf, std::size_t offset) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  if (offset > buf.size()) throw std::out_of_range("recv_bytes_into: offset is past the end of the buffer");
  detail::Frame f = c.read_frame();
  auto n = f.payload.size();
  if (n > buf.size() - offset) {
    c.pending = std::move(f);
    throw BufferTooShort("recv_bytes_into: message of " + std::to_string(n) + " bytes does not fit in " +
                             std::to_string(buf.size() - offset) + " bytes; it is kept",
                         n);
  }
  std::memcpy(buf.data() + offset, f.payload.data(), n);
  return n;
}

bool Connection::poll(std::optional<seconds> timeout) const {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  if (c.pending || c.buffered() > 0 || !c.broken.empty()) return true;
  return os::wait_readable(c.fd.get(), timeout ? os::to_poll_ms(timeout->count()) : -1);
}

void Connection::close() {
  if (impl_) impl_->fd.reset();
}
bool Connection::closed() const { return !impl_ || !impl_->fd; }
bool Connection::readable() const { return impl().readable; }
bool Connection::writable() const { return impl().writable; }
int Connection::fileno() const { return impl().fd.get(); }
void Connection::set_max_message_size(std::size_t bytes) { impl().max_message = bytes; }
std::size_t Connection::max_message_size() const { return impl().max_message; }

void Connection::save(detail::OutArchive& ar) const {
  auto& c = impl();
  int slot = detail::export_fd(c.fd.get());
  ar(slot, c.readable, c.writable, static_cast<std::uint64_t>(c.max_message));
}

void Connection::load(detail::InArchive& ar) {
  int slot = -1;
  bool r = false, w = false;
  std::uint64_t max = 0;
  ar(slot, r, w, max);
  *this = Connection(detail::import_fd(slot), r, w);
  impl_->max_message = static_cast<std::size_t>(max);
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) os::throw_errno("socketpair for Pipe");
  if (!duplex) {
    // A socket pair rather than pipe(2): send() with MSG_NOSIGNAL turns a closed reader into an
    // exception instead of SIGPIPE, and AF_UNIX streams move bulk data faster than pipes.
    ::shutdown(sv[0], SHUT_WR);
    ::shutdown(sv[1], SHUT_RD);
  }
  return {Connection(sv[0], true, duplex), Connection(sv[1], duplex, true)};
}

std::vector<Connection> connection_wait_impl(const std::vector<Connection>& conns, std::optional<seconds> timeout) {
  // A connection holding a whole frame (or buffered bytes) is ready whatever its socket says;
  // when one is, the others are only polled, not waited for.
  bool any_buffered = false;
  std::vector<int> fds;
  for (const auto& c : conns) {
    any_buffered = any_buffered || (c.impl_ && (c.impl_->pending || c.impl_->buffered() > 0));
    fds.push_back(c.fileno());
  }
  auto ready_fds = connection::wait(fds, any_buffered ? std::optional<seconds>(seconds(0)) : timeout);
  std::vector<Connection> ready;
  for (const auto& c : conns)
    if ((c.impl_->pending || c.impl_->buffered() > 0) ||
        std::find(ready_fds.begin(), ready_fds.end(), c.fileno()) != ready_fds.end())
      ready.push_back(c);
  return ready;
}

namespace connection {

std::vector<Connection> wait(const std::vector<Connection>& conns, std::optional<seconds> timeout) {
  return connection_wait_impl(conns, timeout);
}

std::vector<int> wait(const std::vector<int>& fds, std::optional<seconds> timeout) {
  std::vector<pollfd> p;
  for (int fd : fds) p.push_back({fd, POLLIN, 0});
  int ms = timeout ? os::to_poll_ms(timeout->count()) : -1;
  int r = os::retry([&] { return ::poll(p.data(), p.size(), ms); });
  if (r < 0) os::throw_errno("wait");
  std::vector<int> ready;
  for (const auto& e : p)
    if (e.revents) ready.push_back(e.fd);
  return ready;
}

}  // namespace connection
}  // namespace mproc
