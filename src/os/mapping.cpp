#include "os/mapping.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace mproc::os {

Mapping::Mapping(int fd, std::size_t size) : size_(size) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw_errno("mmap of " + std::to_string(size) + " bytes");
  addr_ = p;
}

Mapping::Mapping(int fd, std::size_t size, int prot, int flags) : size_(size) {
  void* p = ::mmap(nullptr, size, prot, flags, fd, 0);
  if (p == MAP_FAILED) throw_errno("mmap of " + std::to_string(size) + " bytes");
  addr_ = p;
}

void Mapping::reset() noexcept {
  if (addr_) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

Fd memfd_of_size(const char* name, std::size_t size) {
  Fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_errno(std::string("memfd_create '") + name + "'");
  if (retry([&] { return ::ftruncate(fd.get(), static_cast<off_t>(size)); }) != 0)
    throw_errno(std::string("ftruncate memfd '") + name + "' to " + std::to_string(size) + " bytes");
  return fd;
}

std::size_t file_size(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno("fstat");
  return static_cast<std::size_t>(st.st_size);
}

std::size_t pread_full(int fd, void* dst, std::size_t n, std::size_t at, const char* what) {
  auto p = static_cast<char*>(dst);
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = retry([&] { return ::pread(fd, p + got, n - got, static_cast<off_t>(at + got)); });
    if (r < 0) throw_errno(what);
    if (r == 0) break;
    got += static_cast<std::size_t>(r);
  }
  return got;
}

void pwrite_full(int fd, const void* src, std::size_t n, std::size_t at, const char* what) {
  auto p = static_cast<const char*>(src);
  std::size_t done = 0;
  while (done < n) {
    ssize_t w = retry([&] { return ::pwrite(fd, p + done, n - done, static_cast<off_t>(at + done)); });
    if (w < 0) throw_errno(what);
    if (w == 0) throw_errno(what, EIO);  // no room and no error: never loop on it
    done += static_cast<std::size_t>(w);
  }
}

}  // namespace mproc::os
