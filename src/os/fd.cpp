#include "os/fd.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "mproc/errors.hpp"

namespace mproc::os {

std::string errno_text(int err) {
  const char* name = ::strerrorname_np(err);  // null for an unknown errno
  std::string text = std::system_category().message(err);
  return name ? text + " (" + name + ")" : text;
}

void throw_errno(const std::string& what, int err) {
  throw OSError(what + ": " + errno_text(err), std::error_code(err, std::system_category()));
}

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // no retry on EINTR: see retry()
  fd_ = fd;
}

void write_all(int fd, const void* buf, std::size_t n, const char* what) {
  auto p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t w = retry([&] { return ::write(fd, p, n); });
    if (w < 0) throw_errno(what);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

std::size_t read_full(int fd, void* buf, std::size_t n, const char* what) {
  auto p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = retry([&] { return ::read(fd, p + got, n - got); });
    if (r < 0) throw_errno(what);
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  int r = retry([&] { return ::poll(&p, 1, timeout_ms); });
  if (r < 0) throw_errno("poll");
  return r > 0;
}

int to_poll_ms(double seconds) {
  if (!(seconds >= 0)) return 0;  // negative or NaN: do not wait, as Python treats timeout < 0
  double ms = std::ceil(seconds * 1000.0);
  if (ms > std::numeric_limits<int>::max()) return std::numeric_limits<int>::max();
  return static_cast<int>(ms);
}

Fd open_dev_null() {
  Fd fd(retry([] { return ::open("/dev/null", O_RDWR | O_CLOEXEC); }));
  if (!fd) throw_errno("cannot open /dev/null");
  return fd;
}

Fd memfd_with(const char* name, const void* data, std::size_t n) {
  Fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno(std::string("memfd_create '") + name + "'");
  write_all(fd.get(), data, n, "write to memfd");
  // Sealed so that neither side can change the message after it was handed over.
  ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
  return fd;
}

std::string read_whole(int fd, std::size_t max) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("fstat");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size > max) throw std::length_error("start-up message of " + std::to_string(size) + " bytes is over the limit");
  std::string out(size, '\0');
  std::size_t got = 0;
  while (got < size) {
    ssize_t r = retry([&] { return ::pread(fd, out.data() + got, size - got, static_cast<off_t>(got)); });
    if (r < 0) throw_errno("read start-up message");
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

}  // namespace mproc::os
