#include "mproc/connection.hpp"

#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <optional>
#include <thread>

#include "connection_access.hpp"
#include "mproc/detail/fd_passing.hpp"
#include "mproc/detail/timeout.hpp"
#include "os/fd.hpp"
#include "os/mapping.hpp"
#include "reduction/shm_payload.hpp"
#include "reduction/wire.hpp"

namespace mproc {

// ---------------------------------------------------------------------------------------------
// Buffer

void Buffer::reset() noexcept {
  if (kind_ == Kind::heap) {
    delete[] data_;
  } else if (kind_ == Kind::anonymous) {
    ::munmap(data_, capacity_);
  } else if (kind_ == Kind::shared) {  // a slab's payload, its head just before: the sender may reuse it
    detail::release_slab(data_ - detail::kSlabHead);
    mapping_.reset();
  }
  data_ = nullptr;
  size_ = capacity_ = 0;
  kind_ = Kind::none;
}

namespace detail {

// A header's length is believed, for allocating, up to this many bytes. A longer message gets
// memory as its bytes arrive, so that a hostile 24-byte header costs nothing.
constexpr std::size_t kTrustedLength = std::size_t{16} << 20;
// A sender that is this far ahead of its reader in shared-memory bytes (messages whose header
// the reader has not read yet) waits for the reader before it sends more: a memfd frame takes
// 24 bytes of the socket's buffer, so without this a fast writer could park gigabytes in
// memfds that nobody reads, where a stream is held back by the socket buffer.
constexpr std::uint64_t kMaxUnreadSharedBytes = std::uint64_t{64} << 20;

// Fresh memory is paid for page by page on first touch, and in a virtual machine a 4 KiB page
// fault can cost more than copying the page (bench/connection.cpp: 60 MB/s into fresh 4 KiB
// pages where 2 MiB pages take 2 GB/s on the same host). Large receive buffers therefore ask
// for transparent huge pages (advise_huge and kHugePage in serialize.hpp, a hint: without THP
// nothing changes).

// A vector of n bytes that will be overwritten at once: allocated untouched, hinted, then sized.
std::vector<std::byte> vector_for(const std::byte* from, std::size_t n) {
  std::vector<std::byte> v;
  v.reserve(n);
  advise_huge(v.data(), n);
  if (from) v.assign(from, from + n);
  else v.resize(n);
  return v;
}

struct BufferAccess {
  // Memory for a streamed payload of len bytes, not zero-filled. Up to kTrustedLength it is
  // allocated at once (on the heap: malloc reuses it from message to message). Beyond, the
  // address range is reserved without memory (PROT_NONE) and made usable a doubling step at a
  // time as bytes arrive (commit()), so a lying header costs address space, not memory.
  static Buffer for_stream(std::size_t len) {
    Buffer b;
    if (len == 0) return b;
    if (len <= kTrustedLength) {
      b.data_ = new std::byte[len];  // default-initialised: no zero fill
      advise_huge(b.data_, len);
      b.kind_ = Buffer::Kind::heap;
      b.capacity_ = len;
    } else {
      std::size_t span = len + kHugePage;  // room to align the start for huge pages
      void* p = ::mmap(nullptr, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      auto raw = reinterpret_cast<std::uintptr_t>(p);
      auto start = (raw + kHugePage - 1) & ~(kHugePage - 1);
      std::size_t reserved = (len + 4095) & ~std::size_t{4095};
      if (start > raw) ::munmap(p, start - raw);
      if (raw + span > start + reserved) ::munmap(reinterpret_cast<void*>(start + reserved), raw + span - start - reserved);
      b.data_ = reinterpret_cast<std::byte*>(start);
      b.kind_ = Buffer::Kind::anonymous;
      b.capacity_ = reserved;
      ::madvise(b.data_, reserved, MADV_HUGEPAGE);
    }
    b.size_ = len;
    return b;
  }
  static std::byte* data(Buffer& b) { return b.data_; }
  // Makes at least `need` bytes of b writable, committing memory in doubling steps; returns how
  // many bytes are writable now. Heap buffers are writable whole.
  static std::size_t commit(Buffer& b, std::size_t usable, std::size_t need) {
    if (b.kind_ != Buffer::Kind::anonymous) return b.size_;
    if (need <= usable) return usable;
    std::size_t want = std::min(b.capacity_, std::max({need, usable * 2, kTrustedLength}));
    if (::mprotect(b.data_ + usable, want - usable, PROT_READ | PROT_WRITE) != 0) throw std::bad_alloc();
    return want;
  }
  // The payload of length bytes in a mapped slab.
  static Buffer slab_payload(std::shared_ptr<os::Mapping> m, std::size_t length) {
    Buffer b;
    b.size_ = length;
    b.data_ = static_cast<std::byte*>(m->data()) + kSlabHead;
    b.kind_ = Buffer::Kind::shared;
    b.mapping_ = std::move(m);
    return b;
  }
};

struct Frame {
  std::uint64_t type = 0;
  Buffer payload;
};

// A header just read: the payload is next in the stream, or in memfd.
struct Header {
  std::uint64_t type = 0;
  std::size_t length = 0;
  os::Fd memfd;
  SlabId slab;  // of memfd
};

// A descriptor that arrived with the stream bytes [from, to) (one recvmsg). It belongs to the
// frame whose header starts in that range.
struct ArrivedFd {
  os::Fd fd;
  std::uint64_t from = 0, to = 0;
};

constexpr std::size_t kMaxFdsPerRead = 8;

// The threshold a new Connection starts with: MPROC_SHM_THRESHOLD (bytes, or "off") when set,
// read once; so a program can tune the Pool's channels, which it never sees, and children
// inherit the setting with their environment.
std::optional<std::size_t> threshold_from_environment() {
  static const std::optional<std::size_t> value = []() -> std::optional<std::size_t> {
    const char* e = std::getenv("MPROC_SHM_THRESHOLD");
    if (!e || !*e) return std::nullopt;
    if (std::strcmp(e, "off") == 0) return std::numeric_limits<std::size_t>::max();
    char* end = nullptr;
    unsigned long long v = std::strtoull(e, &end, 10);
    if (*end) return std::nullopt;
    return static_cast<std::size_t>(v);
  }();
  return value;
}
std::size_t default_shm_threshold() { return threshold_from_environment().value_or(Connection::kSharedMemoryThreshold); }

struct ConnectionImpl {
  os::Fd fd;
  bool readable = false;
  bool writable = false;
  bool unix_socket = false;  // can carry descriptors, so shared-memory frames
  bool is_socket = false;    // sends with MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE (TCP too)
  std::size_t max_message = std::size_t{1} << 30;
  std::size_t shm_threshold = default_shm_threshold();
  // Bytes read ahead of the current frame, so a small message costs one read() call.
  std::vector<char> rbuf = std::vector<char>(64 * 1024);
  std::size_t rbeg = 0, rend = 0;
  std::uint64_t stream_pos = 0;  // bytes read from fd so far: rbuf[rend] is at this offset
  std::deque<ArrivedFd> fds;     // descriptors not yet claimed by a frame
  std::optional<Frame> pending;  // a whole frame not yet taken (wrong type, too long, ...)
  std::string broken;            // framing lost: every later read fails with this message
  std::uint64_t unread_shared = 0;  // sender: memfd bytes sent since the reader was last seen caught up
  SlabCache slabs;                  // sender: the memfds of its large messages, for reuse
  SlabMappings mapped;              // receiver: its sender's slabs, mapped

  std::size_t buffered() const { return rend - rbeg; }
  std::uint64_t read_pos() const { return stream_pos - buffered(); }

  [[noreturn]] void fail(const std::string& why) {
    broken = why;
    fds.clear();
    throw ProtocolError(why);
  }

  // One read of at most n bytes; 0 at EOF. On a Unix socket a descriptor that comes with the
  // bytes is queued with their stream range (recvmsg never returns bytes of two messages that
  // each carry descriptors, so there is at most one set per call).
  std::size_t read_some(void* p, std::size_t n) {
    ssize_t r;
    if (!unix_socket) {
      r = os::retry([&] { return ::read(fd.get(), p, n); });
      if (r < 0) os::throw_errno("recv on a Connection");
    } else {
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerRead)];
      iovec iov{p, n};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = control;
      m.msg_controllen = sizeof control;
      r = os::retry([&] { return ::recvmsg(fd.get(), &m, MSG_CMSG_CLOEXEC); });
      if (r < 0) os::throw_errno("recv on a Connection");
      // Own every descriptor before anything can throw.
      os::Fd got[kMaxFdsPerRead];
      std::size_t ngot = 0;
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        std::size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t i = 0; i < k && ngot < kMaxFdsPerRead; ++i) {
          int one;
          std::memcpy(&one, CMSG_DATA(c) + i * sizeof(int), sizeof one);
          got[ngot++].reset(one);
        }
      }
      auto from = stream_pos;
      stream_pos += static_cast<std::size_t>(r);
      if (m.msg_flags & MSG_CTRUNC)
        fail("descriptors sent with a message were dropped (more than " + std::to_string(kMaxFdsPerRead) +
             ", or this process is out of descriptors)");
      if (ngot > 1) fail(std::to_string(ngot) + " descriptors came with one message; an mproc frame carries at most one");
      if (ngot == 1) fds.push_back({std::move(got[0]), from, stream_pos});
      return static_cast<std::size_t>(r);
    }
    stream_pos += static_cast<std::size_t>(r);
    return static_cast<std::size_t>(r);
  }

  // Reads until at least n bytes are buffered; false at EOF.
  bool fill(std::size_t n) {
    if (rbeg > 0 && rbuf.size() - rbeg < n) {
      std::memmove(rbuf.data(), rbuf.data() + rbeg, buffered());
      rend -= rbeg;
      rbeg = 0;
    }
    while (buffered() < n) {
      std::size_t r = read_some(rbuf.data() + rend, rbuf.size() - rend);
      if (r == 0) return false;
      rend += r;
    }
    return true;
  }

  // A descriptor whose bytes all lie before pos was claimed by none of the frames that began
  // there: the peer sent one without announcing it.
  void check_no_stray_fd(std::uint64_t pos) {
    if (!fds.empty() && fds.front().to <= pos) fail("a descriptor arrived that no frame announced");
  }

  // After the last byte of a frame: forget the read-ahead position if it is empty.
  void end_frame() {
    if (rbeg == rend) rbeg = rend = 0;
    check_no_stray_fd(read_pos());
  }

  // The header at the read position when all of it is read ahead (nothing is consumed).
  // ProtocolError for a bad one, naming what is wrong.
  std::optional<FrameHeader> peek_header() const {
    if (buffered() < kFrameHeaderSize) return std::nullopt;
    return parse_header(rbuf.data() + rbeg, max_message, unix_socket ? kFrameInMemfd : 0);
  }

  // Reads and checks the next header. EOFError when the peer closed between frames.
  Header next_header() {
    if (!broken.empty()) throw ProtocolError(broken);
    if (!fill(kFrameHeaderSize)) {
      if (buffered() == 0) {
        check_no_stray_fd(read_pos() + 1);
        throw EOFError("the peer closed the connection");
      }
      fail("truncated frame: the peer closed after " + std::to_string(buffered()) + " bytes of a frame header");
    }
    const std::uint64_t at = read_pos();
    FrameHeader h;
    try {
      h = *peek_header();
    } catch (const ProtocolError& e) {
      fail(e.what());
    }
    rbeg += kFrameHeaderSize;
    check_no_stray_fd(at);
    Header out{h.type, static_cast<std::size_t>(h.length), {}, {}};
    if (h.flags & kFrameInMemfd) {
      if (fds.empty() || fds.front().from > at)
        fail("a frame announces a payload in shared memory but no descriptor came with it");
      out.memfd = std::move(fds.front().fd);
      fds.pop_front();
      end_frame();
      // The frame is consumed whole: a bad descriptor costs this message, not the connection.
      out.slab = check_payload_memfd(out.memfd.get(), h.length);
    }
    return out;
  }

  // The payload of h, in memory of its own. A shared-memory payload is mapped when map_shared
  // or when it is large; otherwise it is copied out with pread into heap memory, which malloc
  // reuses: mmap + munmap per message costs more than copying a few MiB (munmap flushes TLBs,
  // with inter-processor interrupts that are slow in a virtual machine).
  Buffer read_payload(Header& h, bool map_shared = false) {
    if (h.memfd && (map_shared || h.length > kTrustedLength)) {
      // Writable for the head's state word (release_slab). Not populated: pages are faulted in
      // as they are read, which costs less than populating first (and a slab's pages past
      // this payload may not exist).
      auto m = mapped.map(h.memfd.get(), h.slab);
      h.memfd.reset();
      return BufferAccess::slab_payload(std::move(m), h.length);
    }
    Buffer b = BufferAccess::for_stream(h.length);
    if (h.memfd) {
      read_payload_into(h, BufferAccess::data(b));
      return b;
    }
    std::size_t have = std::min(h.length, buffered());
    std::size_t usable = BufferAccess::commit(b, 0, have);
    if (have) std::memcpy(BufferAccess::data(b), rbuf.data() + rbeg, have);
    rbeg += have;
    while (have < h.length) {
      usable = BufferAccess::commit(b, usable, have + 1);
      std::size_t r = read_some(BufferAccess::data(b) + have, std::min(usable, h.length) - have);
      if (r == 0) fail_truncated(have, h.length);
      have += r;
    }
    end_frame();
    return b;
  }

  // The payload of h, straight into dst (h.length bytes of room).
  void read_payload_into(Header& h, std::byte* dst) {
    if (h.memfd) {
      std::size_t got = os::pread_full(h.memfd.get(), dst, h.length, kSlabHead, "reading a shared-memory message");
      release_slab(h.memfd.get());
      h.memfd.reset();
      if (got != h.length) throw ProtocolError("a shared-memory message ended after " + std::to_string(got) + " bytes");
      return;
    }
    std::size_t have = std::min(h.length, buffered());
    if (have) std::memcpy(dst, rbuf.data() + rbeg, have);
    rbeg += have;
    while (have < h.length) {
      std::size_t r = read_some(dst + have, h.length - have);
      if (r == 0) fail_truncated(have, h.length);
      have += r;
    }
    end_frame();
  }

  [[noreturn]] void fail_truncated(std::size_t have, std::size_t len) {
    fail("truncated frame: the peer closed after " + std::to_string(have) + " of " + std::to_string(len) +
         " payload bytes");
  }

  std::optional<Frame> take_pending() { return std::exchange(pending, std::nullopt); }

  // ------------------------------------------------------------------------------- sending

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
      if (w < 0) throw_send_error();
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

  [[noreturn]] static void throw_send_error() {
    if (errno == EPIPE || errno == ECONNRESET) throw EOFError("the peer closed the connection (send failed)");
    os::throw_errno("send on a Connection");
  }

  // Bytes this end sent that the peer has not read yet (0 also when the kernel cannot say).
  int unread_by_peer() const {
    int q = 0;
    if (::ioctl(fd.get(), SIOCOUTQ, &q) != 0) return 0;
    return q;
  }

  // Blocks while the reader is more than kMaxUnreadSharedBytes behind (see there).
  void wait_for_reader(std::size_t n) {
    if (unread_shared == 0) return;
    if (unread_shared + n > kMaxUnreadSharedBytes) {
      auto nap = std::chrono::microseconds(20);
      while (unread_by_peer() != 0) {
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, std::chrono::microseconds(2000));
      }
      unread_shared = 0;
    } else if (unread_by_peer() == 0) {
      unread_shared = 0;
    }
  }

  // Sends payload as a shared-memory frame. False (and nothing sent) when no memfd could be
  // made or passed; the caller streams the message instead.
  bool send_in_memfd(std::uint64_t type, const void* payload, std::size_t n) {
    SlabCache::Slab* slab = nullptr;
    try {
      slab = &slabs.fill(payload, n);
    } catch (const OSError&) {
      return false;  // out of memory for tmpfs, or of descriptors: the stream still works
    }
    if (send_slab(type, *slab, n)) return true;
    SlabCache::unsent(*slab);
    return false;
  }

  // Sends the first n payload bytes of slab (marked busy) as a frame. False when the descriptor
  // could not be passed (too many in flight); throws on other send errors.
  bool send_slab(std::uint64_t type, Slab& slab, std::size_t n) {
    wait_for_reader(n);
    char header[kFrameHeaderSize];
    write_header(header, type, n, kFrameInMemfd);
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    iovec iov{header, sizeof header};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    int mfd = slab.fd.get();
    std::memcpy(CMSG_DATA(c), &mfd, sizeof mfd);
    ssize_t w = os::retry([&] { return ::sendmsg(fd.get(), &msg, MSG_NOSIGNAL); });
    if (w < 0) {
      if (errno == ETOOMANYREFS) return false;
      throw_send_error();
    }
    // The descriptor went with the first byte; the rest of the header (after a signal) follows.
    if (static_cast<std::size_t>(w) < sizeof header) {
      iovec rest{header + w, sizeof header - static_cast<std::size_t>(w)};
      write_iov(&rest, 1);
    }
    unread_shared += n;
    return true;
  }

  // Sends one frame: header (at least kFrameHeaderSize bytes of room) then payload.
  void send_message(std::uint64_t type, char* header, const void* payload, std::size_t n) {
    if (!writable) throw Error("the connection is read-only");
    if (n > max_message)
      throw ProtocolError("message of " + std::to_string(n) + " bytes is over the limit of " + std::to_string(max_message) +
                          " bytes");
    if (unix_socket && n >= shm_threshold && n > 0 && send_in_memfd(type, payload, n)) return;
    write_header(header, type, n);
    if (header + kFrameHeaderSize == payload || n == 0) {
      iovec iov{header, kFrameHeaderSize + n};
      write_iov(&iov, 1);
    } else {
      iovec iov[2] = {{header, kFrameHeaderSize}, {const_cast<void*>(payload), n}};
      write_iov(iov, 2);
    }
  }
};

}  // namespace detail

Connection::Connection(int fd, bool readable, bool writable) : impl_(std::make_shared<detail::ConnectionImpl>()) {
  impl_->fd.reset(fd);
  impl_->readable = readable;
  impl_->writable = writable;
  int domain = 0, type = 0;
  socklen_t len = sizeof domain;
  bool is_unix = ::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
  len = sizeof type;
  impl_->is_socket = ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
  impl_->unix_socket = is_unix && impl_->is_socket && type == SOCK_STREAM;
}

detail::ConnectionImpl& Connection::impl() const {
  if (!impl_ || !impl_->fd) throw Error("the connection is closed");
  return *impl_;
}

void Connection::send_frame(std::uint64_t type, std::string& frame) {
  impl().send_message(type, frame.data(), frame.data() + kHeaderSize, frame.size() - kHeaderSize);
}

void Connection::send_bytes(std::span<const std::byte> buf) {
  char header[kHeaderSize];
  impl().send_message(detail::kBytesType, header, buf.data(), buf.size());
}

void detail::ConnectionAccess::send_bytes_many(Connection& conn, std::span<const std::string_view> parts) {
  auto& c = conn.impl();
  if (!c.writable) throw Error("the connection is read-only");
  // Small frames are packed into one buffer and sent with one write: the kernel copies one
  // block much faster than many small iovec segments. A large one (kPackMax and up, or over the
  // shared-memory threshold) goes by itself through send_message, in order.
  constexpr std::size_t kPackMax = 16 * 1024;
  thread_local std::string packed;
  packed.clear();
  auto flush = [&] {
    if (packed.empty()) return;
    iovec iov{packed.data(), packed.size()};
    c.write_iov(&iov, 1);
    packed.clear();
  };
  for (std::string_view part : parts) {
    if (part.size() >= kPackMax || part.size() > c.max_message || (c.unix_socket && part.size() >= c.shm_threshold)) {
      flush();
      char header[kFrameHeaderSize];
      c.send_message(kBytesType, header, part.data(), part.size());
      continue;
    }
    std::size_t at = packed.size();
    packed.resize(at + kFrameHeaderSize + part.size());
    write_header(packed.data() + at, kBytesType, part.size());
    std::memcpy(packed.data() + at + kFrameHeaderSize, part.data(), part.size());
    if (packed.size() >= 4 * kPackMax) flush();
  }
  flush();
  if (packed.capacity() > 8 * kPackMax) std::string().swap(packed);
}

void detail::ConnectionAccess::send_slab(Connection& conn, Slab& slab, std::size_t n) {
  auto& c = conn.impl();
  if (!c.writable) throw Error("the connection is read-only");
  if (n > slab.capacity) throw std::invalid_argument("mproc: a slab frame of more bytes than its slab holds");
  if (n > c.max_message)
    throw ProtocolError("message of " + std::to_string(n) + " bytes is over the limit of " + std::to_string(c.max_message) +
                        " bytes");
  if (!c.unix_socket) throw Error("a shared-memory frame needs a Unix socket connection");
  slab.mark_busy();  // its receiver may have released it before (a chunk sent again)
  if (c.send_slab(kBytesType, slab, n)) return;
  // Too many descriptors in flight: the bytes go through the socket instead.
  char header[kFrameHeaderSize];
  c.send_message(kBytesType, header, slab.payload(), n);
  SlabCache::unsent(slab);
}

std::optional<std::span<const std::byte>> detail::ConnectionAccess::peek_buffered(Connection& conn) {
  auto& c = conn.impl();
  if (c.pending || !c.broken.empty()) return std::nullopt;
  std::optional<FrameHeader> header;
  try {
    header = c.peek_header();
  } catch (const ProtocolError&) {
    return std::nullopt;  // recv_buffer reports it
  }
  if (!header) return std::nullopt;
  const FrameHeader& h = *header;
  if ((h.flags & kFrameInMemfd) || c.buffered() - kFrameHeaderSize < h.length) return std::nullopt;
  // A descriptor that came with these bytes belongs to no frame here: recv_buffer reports it.
  if (!c.fds.empty() && c.fds.front().from <= c.read_pos() + kFrameHeaderSize + h.length) return std::nullopt;
  return std::span(reinterpret_cast<const std::byte*>(c.rbuf.data() + c.rbeg + kFrameHeaderSize), h.length);
}

void detail::ConnectionAccess::consume_buffered(Connection& conn) {
  auto& c = conn.impl();
  FrameHeader h;
  std::memcpy(&h, c.rbuf.data() + c.rbeg, sizeof h);
  c.rbeg += kFrameHeaderSize + h.length;
  c.end_frame();
}

std::size_t detail::ConnectionAccess::shm_threshold_or(std::size_t bytes) { return threshold_from_environment().value_or(bytes); }

void detail::ConnectionAccess::default_shm_threshold(Connection& conn, std::size_t bytes) {
  if (!threshold_from_environment()) conn.set_shared_memory_threshold(bytes);
}

bool detail::ConnectionAccess::frame_buffered(const Connection& conn) {
  auto& c = conn.impl();
  if (c.pending || !c.broken.empty()) return true;
  try {
    auto h = c.peek_header();
    // A shared-memory frame's descriptor came with the header's first byte.
    return h && ((h->flags & kFrameInMemfd) || c.buffered() - kFrameHeaderSize >= h->length);
  } catch (const ProtocolError&) {
    return true;  // the next recv reports it at once
  }
}

void Connection::recv_payload(std::uint64_t type, std::string_view type_name, DecodeFn decode, void* out) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  auto mismatch = [&](std::uint64_t got_type) {
    std::string got = got_type == detail::kBytesType ? std::string("raw bytes (send_bytes)") : "another type";
    return TypeMismatchError("recv<" + std::string(type_name) + ">: the message holds " + got +
                             "; it is kept for a recv of the right type or recv_bytes()");
  };
  if (auto f = c.take_pending()) {
    if (f->type != type) {
      auto e = mismatch(f->type);
      c.pending = std::move(f);
      throw e;
    }
    decode(f->payload.data(), f->payload.size(), out);
    return;
  }
  detail::Header h = c.next_header();
  if (h.type != type) {
    c.pending = detail::Frame{h.type, c.read_payload(h)};
    throw mismatch(h.type);
  }
  if (!h.memfd && c.buffered() >= h.length) {
    // The whole payload is in the read-ahead buffer: decode it where it is. Nothing reads into
    // the buffer until decode returns.
    const auto* p = reinterpret_cast<const std::byte*>(c.rbuf.data() + c.rbeg);
    c.rbeg += h.length;
    c.end_frame();
    decode(p, h.length, out);
    return;
  }
  Buffer b = c.read_payload(h);
  decode(b.data(), b.size(), out);
}

Buffer Connection::recv_buffer(std::optional<std::size_t> maxlength) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  auto too_long = [&](std::size_t n) {
    return ProtocolError("recv_bytes: message of " + std::to_string(n) + " bytes is longer than maxlength " +
                         std::to_string(*maxlength) + "; it is kept");
  };
  if (auto f = c.take_pending()) {
    if (maxlength && f->payload.size() > *maxlength) {
      auto e = too_long(f->payload.size());
      c.pending = std::move(f);
      throw e;
    }
    return std::move(f->payload);
  }
  detail::Header h = c.next_header();
  Buffer b = c.read_payload(h, /*map_shared=*/true);
  if (maxlength && b.size() > *maxlength) {
    auto e = too_long(b.size());
    c.pending = detail::Frame{h.type, std::move(b)};
    throw e;
  }
  return b;
}

std::vector<std::byte> Connection::recv_bytes(std::optional<std::size_t> maxlength) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  if (c.pending) {
    Buffer b = recv_buffer(maxlength);
    return detail::vector_for(b.data(), b.size());
  }
  detail::Header h = c.next_header();
  if ((maxlength && h.length > *maxlength) || h.length > detail::kTrustedLength) {
    // Kept (too long), or longer than a header is trusted with (memory grows as bytes arrive,
    // or the memfd is mapped; then one copy): through a Buffer.
    Buffer b = c.read_payload(h);
    if (maxlength && b.size() > *maxlength) {
      auto n = b.size();
      c.pending = detail::Frame{h.type, std::move(b)};
      throw ProtocolError("recv_bytes: message of " + std::to_string(n) + " bytes is longer than maxlength " +
                          std::to_string(*maxlength) + "; it is kept");
    }
    return detail::vector_for(b.data(), b.size());
  }
  if (!h.memfd && c.buffered() >= h.length) {  // a small message: one copy out of the read-ahead buffer
    const auto* p = reinterpret_cast<const std::byte*>(c.rbuf.data() + c.rbeg);
    std::vector<std::byte> v(p, p + h.length);
    c.rbeg += h.length;
    c.end_frame();
    return v;
  }
  std::vector<std::byte> v = detail::vector_for(nullptr, h.length);  // zero-filled (std::vector); at most kTrustedLength
  c.read_payload_into(h, v.data());
  return v;
}

std::size_t Connection::recv_bytes_into(std::span<std::byte> buf, std::size_t offset) {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  if (offset > buf.size()) throw std::out_of_range("recv_bytes_into: offset is past the end of the buffer");
  const std::size_t room = buf.size() - offset;
  auto too_short = [&](std::size_t n) {
    return BufferTooShort("recv_bytes_into: message of " + std::to_string(n) + " bytes does not fit in " +
                              std::to_string(room) + " bytes; it is kept",
                          n);
  };
  if (auto f = c.take_pending()) {
    auto n = f->payload.size();
    if (n > room) {
      auto e = too_short(n);
      c.pending = std::move(f);
      throw e;
    }
    if (n) std::memcpy(buf.data() + offset, f->payload.data(), n);
    return n;
  }
  detail::Header h = c.next_header();
  if (h.length > room) {
    c.pending = detail::Frame{h.type, c.read_payload(h)};
    throw too_short(h.length);
  }
  c.read_payload_into(h, buf.data() + offset);
  return h.length;
}

bool Connection::poll(std::optional<seconds> timeout) const {
  auto& c = impl();
  if (!c.readable) throw Error("the connection is write-only");
  if (c.pending || c.buffered() > 0 || !c.broken.empty()) return true;
  double s = detail::wait_seconds(timeout, "Connection.poll");
  return os::wait_readable(c.fd.get(), os::to_poll_ms_or_forever(s));
}

void Connection::close() {
  if (!impl_) return;
  impl_->fd.reset();
  impl_->slabs = {};  // their memory goes now, not when the last copy of this handle does
  impl_->mapped = {};
}
bool Connection::closed() const { return !impl_ || !impl_->fd; }
bool Connection::readable() const { return impl().readable; }
bool Connection::writable() const { return impl().writable; }
int Connection::fileno() const { return impl().fd.get(); }
void Connection::set_max_message_size(std::size_t bytes) { impl().max_message = bytes; }
std::size_t Connection::max_message_size() const { return impl().max_message; }
void Connection::set_shared_memory_threshold(std::size_t bytes) { impl().shm_threshold = bytes; }
std::size_t Connection::shared_memory_threshold() const { return impl().shm_threshold; }

void Connection::save(detail::OutArchive& ar) const {
  auto& c = impl();
  int slot = detail::export_fd(c.fd.get());
  ar(slot, c.readable, c.writable, static_cast<std::uint64_t>(c.max_message), static_cast<std::uint64_t>(c.shm_threshold));
}

void Connection::load(detail::InArchive& ar) {
  int slot = -1;
  bool r = false, w = false;
  std::uint64_t max = 0, threshold = 0;
  ar(slot, r, w, max, threshold);
  *this = Connection(detail::import_fd(slot), r, w);
  impl_->max_message = static_cast<std::size_t>(max);
  impl_->shm_threshold = static_cast<std::size_t>(threshold);
}

std::pair<Connection, Connection> Pipe(bool duplex) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) os::throw_errno("socketpair for Pipe");
  if (!duplex) {
    // A socket pair rather than pipe(2) (Python's Pipe(duplex=False) is an os.pipe()): send()
    // with MSG_NOSIGNAL turns a closed reader into an exception instead of SIGPIPE, AF_UNIX
    // streams move bulk data faster than pipes, and a socket can pass the memfd of a large
    // message (set_shared_memory_threshold), which a pipe cannot.
    ::shutdown(sv[0], SHUT_WR);
    ::shutdown(sv[1], SHUT_RD);
  }
  return {Connection(sv[0], true, duplex), Connection(sv[1], duplex, true)};
}

std::vector<Connection> connection_wait_impl(const std::vector<Connection>& conns, std::optional<seconds> timeout) {
  detail::check_timeout(timeout, "connection.wait");
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
  double s = detail::wait_seconds(timeout, "connection.wait");
  int ms = os::to_poll_ms_or_forever(s);
  int r = os::retry([&] { return ::poll(p.data(), p.size(), ms); });
  if (r < 0) os::throw_errno("wait");
  std::vector<int> ready;
  for (const auto& e : p)
    if (e.revents) ready.push_back(e.fd);
  return ready;
}

}  // namespace connection
}  // namespace mproc
