// RAII for shared mappings: an anonymous memfd (shared with children by descriptor under every
// start method) mapped MAP_SHARED.
#pragma once

#include <cstddef>
#include <utility>

#include "os/fd.hpp"

namespace mproc::os {

/// A move-only MAP_SHARED mapping; munmap in the destructor.
class Mapping {
 public:
  Mapping() noexcept = default;
  /// Maps size bytes of fd read-write and shared. Throws mproc::OSError.
  Mapping(int fd, std::size_t size);
  /// Maps size bytes of fd with the given mmap prot and flags. Throws mproc::OSError.
  Mapping(int fd, std::size_t size, int prot, int flags);
  Mapping(Mapping&& o) noexcept : addr_(std::exchange(o.addr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  void* data() const noexcept { return addr_; }
  std::size_t size() const noexcept { return size_; }
  explicit operator bool() const noexcept { return addr_ != nullptr; }
  void reset() noexcept;
  /// Gives up ownership: the caller munmaps data() (size() bytes).
  void* release() noexcept {
    size_ = 0;
    return std::exchange(addr_, nullptr);
  }

 private:
  void* addr_ = nullptr;
  std::size_t size_ = 0;
};

/// A new anonymous memfd of size bytes (zero-filled), close-on-exec.
Fd memfd_of_size(const char* name, std::size_t size);
/// The size of the file behind fd (fstat).
std::size_t file_size(int fd);

/// Reads n bytes from offset `at` of fd (pread, retrying EINTR and short reads) into dst.
/// Returns the count read: less than n only at end of file. Throws mproc::OSError.
std::size_t pread_full(int fd, void* dst, std::size_t n, std::size_t at, const char* what);
/// Writes n bytes at offset `at` of fd (pwrite, retrying EINTR and short writes). Throws
/// mproc::OSError.
void pwrite_full(int fd, const void* src, std::size_t n, std::size_t at, const char* what);

}  // namespace mproc::os
