#include "os/shm.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

namespace mproc::os {

std::string shm_name_problem(std::string_view name) {
  std::string_view rest = name;
  if (!rest.empty() && rest.front() == '/') rest.remove_prefix(1);
  if (rest.empty()) return "a shared memory name must not be empty";
  if (rest.size() > kMaxShmName)
    return "a shared memory name must be at most " + std::to_string(kMaxShmName) + " characters (this one has " +
           std::to_string(rest.size()) + ")";
  if (rest.find('/') != std::string_view::npos) return "a shared memory name must not contain '/' after its first character";
  if (rest.find('\0') != std::string_view::npos) return "a shared memory name must not contain a NUL character";
  if (rest == "." || rest == "..") return "'.' and '..' are not shared memory names";
  return {};
}

Fd shm_open(const std::string& name, int flags, mode_t mode, std::error_code& err) noexcept {
  Fd fd(retry([&] { return ::shm_open(name.c_str(), flags | O_CLOEXEC, mode); }));
  if (!fd) err.assign(errno, std::system_category());
  return fd;
}

bool shm_unlink(const std::string& name, std::error_code& err) noexcept {
  if (::shm_unlink(name.c_str()) == 0) return true;
  err.assign(errno, std::system_category());
  return false;
}

FileIdentity identity_of_fd(int fd) noexcept {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {};
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

FileIdentity identity_of_path(const std::string& path) noexcept {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return {};
  return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

std::string shm_path(const std::string& name) { return kShmDir + name.substr(name.starts_with('/') ? 1 : 0); }
std::string semaphore_path(const std::string& name) {
  return std::string(kShmDir) + "sem." + name.substr(name.starts_with('/') ? 1 : 0);
}

}  // namespace mproc::os
