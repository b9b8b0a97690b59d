// POSIX shared-memory and named-semaphore names (shm_open, shm_unlink, /dev/shm) and the identity
// of the file behind a name, so that a name is unlinked only while it still means the same file.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

#include "os/fd.hpp"

namespace mproc::os {

/// Which file a name refers to (device and inode). A name that was unlinked and created again
/// refers to another file, even when the name is the same.
struct FileIdentity {
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  bool operator==(const FileIdentity&) const = default;
  explicit operator bool() const noexcept { return ino != 0; }
};

/// Where the kernel keeps shm_open names (glibc: /dev/shm/<name without its slash>).
constexpr const char* kShmDir = "/dev/shm/";
/// Longest name after the leading slash: a file name in /dev/shm (NAME_MAX). Named semaphores
/// lose four more to their "sem." prefix.
constexpr std::size_t kMaxShmName = 255;

/// Why name (with or without its leading '/') cannot name a segment; empty when it can.
std::string shm_name_problem(std::string_view name);

/// shm_open(name, flags, mode) with O_CLOEXEC (glibc adds O_NOFOLLOW); on failure an invalid Fd
/// and err set. name starts with '/'.
Fd shm_open(const std::string& name, int flags, mode_t mode, std::error_code& err) noexcept;
/// shm_unlink; false with err set on failure.
bool shm_unlink(const std::string& name, std::error_code& err) noexcept;

FileIdentity identity_of_fd(int fd) noexcept;
/// The identity of the file a path names now (not following a final symlink); empty when none.
FileIdentity identity_of_path(const std::string& path) noexcept;
/// The path of a shared-memory name ("/x" -> "/dev/shm/x") or of a named semaphore
/// ("/x" -> "/dev/shm/sem.x").
std::string shm_path(const std::string& name);
std::string semaphore_path(const std::string& name);

}  // namespace mproc::os
