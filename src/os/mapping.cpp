#include "os/mapping.hpp"

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

}  // namespace mproc::os
