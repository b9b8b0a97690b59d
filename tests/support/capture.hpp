// Captures what this process and its children write to a standard descriptor (1 or 2).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <string>

namespace mproc_test {

class CaptureFd {
 public:
  explicit CaptureFd(int target) : target_(target) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return;
    read_ = p[0];
    saved_ = ::fcntl(target, F_DUPFD_CLOEXEC, 10);
    ::dup2(p[1], target);
    ::close(p[1]);
  }
  ~CaptureFd() {
    restore();
    if (read_ >= 0) ::close(read_);
  }
  CaptureFd(const CaptureFd&) = delete;
  CaptureFd& operator=(const CaptureFd&) = delete;

  /// Restores the descriptor and returns everything written while captured. Children that
  /// still hold the pipe must have exited, or this waits for them.
  std::string finish() {
    restore();
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(read_, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }

 private:
  void restore() {
    if (saved_ >= 0) {
      ::dup2(saved_, target_);
      ::close(saved_);
      saved_ = -1;
    }
  }
  int target_;
  int read_ = -1;
  int saved_ = -1;
};

}  // namespace mproc_test
