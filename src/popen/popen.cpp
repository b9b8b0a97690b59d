#include "popen/popen.hpp"

#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

namespace mproc::detail {

int pidfd_open(int pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

int returncode_from_status(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return -WTERMSIG(st);
  return 255;
}

std::optional<int> Popen::wait(double timeout) {
  if (auto rc = poll(false)) return rc;
  if (timeout >= 0) {
    if (!os::wait_readable(sentinel(), os::to_poll_ms(timeout))) return std::nullopt;
    return poll(false);
  }
  return poll(true);
}

void Popen::send_signal(int sig) {
  if (returncode_ || !pidfd_) return;
  if (::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) != 0 && errno != ESRCH)
    os::throw_errno("cannot signal process " + std::to_string(pid_));
}

PopenChild::PopenChild(int pid) {
  pid_ = pid;
  pidfd_.reset(pidfd_open(pid));
  if (!pidfd_) {
    // Out of descriptors (EMFILE) after the child already runs: nobody could ever wait for or
    // signal it, so it must not run on (or stay a zombie) behind a start() that failed.
    int err = errno;
    ::kill(pid, SIGKILL);
    os::retry([&] { return ::waitpid(pid, nullptr, 0); });
    os::throw_errno("pidfd_open for child " + std::to_string(pid) + " (the child was killed)", err);
  }
}

std::optional<int> PopenChild::poll(bool block) {
  if (returncode_) return returncode_;
  siginfo_t info{};
  int r = os::retry([&] { return ::waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | (block ? 0 : WNOHANG)); });
  if (r != 0) {
    if (errno == ECHILD) return returncode_ = 255;  // reaped behind our back (SIGCHLD ignored?)
    os::throw_errno("waitid for process " + std::to_string(pid_));
  }
  if (info.si_pid == 0) return std::nullopt;  // still running
  returncode_ = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  return returncode_;
}

}  // namespace mproc::detail
