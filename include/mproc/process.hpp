// mproc/process.hpp — Python's multiprocessing.process: Process, current_process, ...
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "mproc/connection.hpp"
#include "mproc/context.hpp"
#include "mproc/detail/callable.hpp"

namespace mproc {

namespace detail {
struct ProcessImpl;
}

/// Python's Process keyword arguments.
struct ProcessOptions {
  /// Empty: "Process-N" (Python's naming, with ":M" per level of nesting).
  std::string name{};
  /// Empty: the daemon flag of the creating process. Daemon children are terminated when their
  /// parent exits; they may not have children of their own.
  std::optional<bool> daemon{};
  /// Empty: the start method in force when start() is called.
  std::optional<Context> context{};
};

/// A child process running target(args...) (Python: multiprocessing.Process).
///
/// The target is a function, a captureless lambda or a serialisable function object; the
/// arguments are copied (and serialised under spawn and forkserver). A capturing lambda does
/// not compile: pass its state as an argument. Process is a handle: copies refer to the same
/// child. Destroying it does not stop the child; at exit the parent terminates its daemon
/// children and joins the others, as Python does.
///
///     mproc::Process p(work, 42);
///     p.start();
///     p.join();
///     assert(p.exitcode() == 0);
class Process {
 public:
  template <class F, class... Args>
    requires(!std::is_same_v<std::remove_cvref_t<F>, ProcessOptions> && !std::is_same_v<std::remove_cvref_t<F>, Process>)
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  template <class F, class... Args>
  Process(ProcessOptions options, F&& target, Args&&... args)
      : Process(std::move(options),
                detail::make_task<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(target), std::forward<Args>(args)...)) {}

  Process(ProcessOptions options, detail::Task task);

  /// Starts the child. Throws ProcessError when already started, mproc::Error when spawn or
  /// forkserver is asked for without mproc::init.
  void start();
  /// Waits for the child to end.
  void join();
  /// Waits at most timeout (negative: not at all, as Python); true when the child has ended.
  bool join(seconds timeout);
  bool is_alive() const;
  /// Empty while running (or not started); the exit status, or -N when killed by signal N.
  std::optional<int> exitcode() const;
  /// Empty before start().
  std::optional<int> pid() const;
  const std::string& name() const;
  void set_name(std::string name);
  bool daemon() const;
  /// Only before start().
  void set_daemon(bool daemon);
  /// A descriptor that becomes readable when the child ends (pollable, e.g. with connection::wait).
  int sentinel() const;
  /// SIGINT (Python 3.14's interrupt()), SIGTERM, SIGKILL. Nothing happens once the child ended.
  void interrupt();
  void terminate();
  void kill();
  /// Releases the process's resources; throws ProcessError while it still runs.
  void close();

 private:
  explicit Process(std::shared_ptr<detail::ProcessImpl> impl) : impl_(std::move(impl)) {}
  detail::ProcessImpl& impl() const;
  bool join_for(double seconds);  // -1: no deadline
  std::shared_ptr<detail::ProcessImpl> impl_;
  friend std::vector<Process> active_children();
};

/// A snapshot of the calling process (Python: current_process()).
class ProcessInfo {
 public:
  ProcessInfo(std::string name, int pid, bool daemon, std::vector<int> identity)
      : name_(std::move(name)), pid_(pid), daemon_(daemon), identity_(std::move(identity)) {}
  const std::string& name() const noexcept { return name_; }
  int pid() const noexcept { return pid_; }
  bool daemon() const noexcept { return daemon_; }
  /// Python's _identity: (1,) for Process-1, (1, 2) for Process-1:2, empty for MainProcess.
  const std::vector<int>& identity() const noexcept { return identity_; }
  /// The key that authenticates this program's processes to each other (inherited by children).
  std::string authkey() const;

 private:
  std::string name_;
  int pid_;
  bool daemon_;
  std::vector<int> identity_;
};

/// The process that started this one (Python: parent_process()).
class ParentProcess {
 public:
  ParentProcess(std::string name, int pid) : name_(std::move(name)), pid_(pid) {}
  const std::string& name() const noexcept { return name_; }
  int pid() const noexcept { return pid_; }
  bool is_alive() const;

 private:
  std::string name_;
  int pid_;
};

ProcessInfo current_process();
/// Empty in the main process.
std::optional<ParentProcess> parent_process();
/// Children started by this process that are still running; finished ones are reaped.
std::vector<Process> active_children();

template <class F, class... Args>
mproc::Process Context::Process(F&& target, Args&&... args) const {
  return mproc::Process(ProcessOptions{.context = *this}, std::forward<F>(target), std::forward<Args>(args)...);
}

template <class F, class... Args>
mproc::Process Context::Process(ProcessOptions options, F&& target, Args&&... args) const {
  options.context = *this;
  return mproc::Process(std::move(options), std::forward<F>(target), std::forward<Args>(args)...);
}

}  // namespace mproc
