// RAII for descriptors and the one EINTR policy of the library (fmt's FMT_RETRY, os.cc).
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>

namespace mproc::os {

/// Retries a system call that failed with EINTR. Never use it for close(): Linux releases the
/// descriptor even when close() reports EINTR, so a retry could close someone else's new fd.
template <class F>
auto retry(F&& call) {
  for (;;) {
    auto r = call();
    if (!(r == -1 && errno == EINTR)) return r;
  }
}

/// mproc::OSError with errno and a message naming the operation, the object and the errno
/// ("socketpair for Pipe: Too many open files (EMFILE)").
[[noreturn]] void throw_errno(const std::string& what, int err = errno);
/// "Too many open files (EMFILE)": strerror and the errno's name, which is what a reader greps for.
std::string errno_text(int err);

/// A move-only owned descriptor. The destructor closes and never throws.
class Fd {
 public:
  Fd() noexcept = default;
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// Writes all of buf (retrying short writes and EINTR); throws std::system_error.
void write_all(int fd, const void* buf, std::size_t n, const char* what);
/// Reads exactly n bytes; returns the count read before EOF (< n only at EOF); throws on error.
std::size_t read_full(int fd, void* buf, std::size_t n, const char* what);

/// Waits until fd is readable. timeout_ms < 0 waits forever. Returns false on timeout.
bool wait_readable(int fd, int timeout_ms);

/// Milliseconds for poll() from optional seconds: -1 for "forever", rounded up so that a small
/// positive timeout never becomes a busy 0.
int to_poll_ms(double seconds);
/// The same for a wait read by detail::wait_seconds, whose -1 (no deadline) stays -1.
inline int to_poll_ms_or_forever(double seconds) { return seconds < 0 ? -1 : to_poll_ms(seconds); }

Fd open_dev_null();
/// A sealed memfd holding data (used to hand a start-up message to a child).
Fd memfd_with(const char* name, const void* data, std::size_t n);
/// Reads the whole content of a file descriptor from offset 0 (pread), capped at max bytes.
std::string read_whole(int fd, std::size_t max);

}  // namespace mproc::os
