#include "reduction/shm_payload.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "mproc/errors.hpp"

namespace mproc::detail {
namespace {

const char* kind_of(mode_t mode) {
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISFIFO(mode)) return "a pipe";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISLNK(mode)) return "a symbolic link";
  return "not a regular file";
}

std::string missing_seals(int have) {
  std::string out;
  auto add = [&](int seal, const char* name) {
    if (!(have & seal)) out += (out.empty() ? "" : ", ") + std::string(name);
  };
  add(F_SEAL_WRITE, "F_SEAL_WRITE");
  add(F_SEAL_SHRINK, "F_SEAL_SHRINK");
  add(F_SEAL_GROW, "F_SEAL_GROW");
  return out;
}

}  // namespace

int required_payload_seals() { return F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE; }

void check_payload_memfd(int fd, std::uint64_t length) {
  const std::string what = "the descriptor that came with a shared-memory frame ";
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw ProtocolError(what + "cannot be examined: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw ProtocolError(what + "is not a memfd: it is " + kind_of(st.st_mode));
  // Only memfds (and other tmpfs/hugetlbfs files, which are born with F_SEAL_SEAL and so can
  // never carry the seals checked below) answer F_GET_SEALS.
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) throw ProtocolError(what + "is a regular file, not a memfd (it has no seals)");
  if ((seals & required_payload_seals()) != required_payload_seals())
    throw ProtocolError(what + "is not sealed against change by its sender: it lacks " + missing_seals(seals));
  if (static_cast<std::uint64_t>(st.st_size) != length)
    throw ProtocolError(what + "holds " + std::to_string(st.st_size) + " bytes where the frame announces " +
                        std::to_string(length));
}

}  // namespace mproc::detail
