#include "os/proc.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "os/fd.hpp"

namespace mproc::os {

std::uint64_t process_start_time(int pid) noexcept {
  if (pid <= 0) return 0;
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  Fd fd(retry([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd) return 0;
  char buf[1024];
  ssize_t n = retry([&] { return ::read(fd.get(), buf, sizeof buf - 1); });
  if (n <= 0) return 0;
  buf[n] = '\0';
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so count from the last ')'.
  char* p = std::strrchr(buf, ')');
  if (!p) return 0;
  ++p;
  for (int field = 3; field <= 21; ++field) {  // skip state (3) .. itrealvalue (21); starttime is 22
    while (*p == ' ') ++p;
    while (*p && *p != ' ') ++p;
    if (!*p) return 0;
  }
  return std::strtoull(p, nullptr, 10);
}

}  // namespace mproc::os
