// One Popen per start method (CPython's popen_*.py). They differ only in how the child is
// launched and how its end is observed; Process talks to this interface alone.
#pragma once

#include <memory>
#include <optional>

#include "os/fd.hpp"
#include "process_state.hpp"

namespace mproc::detail {

class Popen {
 public:
  virtual ~Popen() = default;
  int pid() const noexcept { return pid_; }
  /// The exit code once the child has ended; block waits for it.
  virtual std::optional<int> poll(bool block) = 0;
  /// timeout < 0 waits forever.
  std::optional<int> wait(double timeout);
  virtual int sentinel() const = 0;
  /// Sends sig unless the child has ended (never to a recycled pid: the pidfd pins the process).
  void send_signal(int sig);

 protected:
  int pid_ = 0;
  os::Fd pidfd_;
  std::optional<int> returncode_;
};

/// Python's returncode: the exit status, or -signal.
int returncode_from_status(int wait_status);
int pidfd_open(int pid);

/// fork: the child runs the task in a copy of this address space.
std::unique_ptr<Popen> launch_fork(ProcessImpl& p);
/// spawn: a fresh copy of this binary, told its work through a start-up message.
std::unique_ptr<Popen> launch_spawn(ProcessImpl& p);
/// forkserver: the fork server forks a clean child and hands it the start-up message.
std::unique_ptr<Popen> launch_forkserver(ProcessImpl& p);

/// The pidfd-based Popen of a direct child (fork and spawn).
class PopenChild : public Popen {
 public:
  explicit PopenChild(int pid);
  std::optional<int> poll(bool block) override;
  int sentinel() const override { return pidfd_.get(); }
};

}  // namespace mproc::detail
