#include "spawn/spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "mproc/detail/fd_passing.hpp"
#include "mproc/errors.hpp"
#include "reduction/wire.hpp"
#include "inherited.hpp"
#include "spawn/forkserver.hpp"
#include "util/auth.hpp"
#include "util/stacktrace.hpp"

extern char** environ;

namespace mproc::detail {
std::string make_startup_message(ProcessImpl& p, Method m, std::vector<int>& fds) {
  StartupMessage msg;
  msg.authkey = authkey();
  msg.name = p.name;
  msg.identity = p.identity;
  msg.daemon = p.daemon;
  msg.parent_pid = ::getpid();
  msg.parent_name = state().name;
  msg.start_method = static_cast<std::int32_t>(m);
  msg.method_setting = start_method_setting();
  auto fs = forkserver_endpoint();
  msg.forkserver_address = fs.address;
  msg.forkserver_pid = fs.pid;
  msg.resource_tracker = resource_tracker_endpoint();
  {
    FdExportScope scope(fds);
    msg.inherited = save_inherited();
    OutArchive ar(msg.task);
    p.task.save(ar);
  }
  msg.nfds = static_cast<std::uint32_t>(fds.size());
  return encode_frame(msg);
}

void die_with_parent(bool daemon, int expected_parent) {
  ::prctl(PR_SET_PDEATHSIG, daemon ? SIGKILL : SIGTERM);
  if (::getppid() != expected_parent) ::_exit(daemon ? 128 + SIGKILL : 128 + SIGTERM);  // parent died already
}

void bootstrap(const std::function<void()>& run) {
  int code = 0;
  try {
    // Python replaces a child's stdin with /dev/null: two processes must not fight over it.
    os::Fd null = os::open_dev_null();
    ::dup2(null.get(), 0);
    run();
  } catch (...) {
    auto report = report_current_exception();
    std::fflush(stdout);
    auto text = format_report(report, "Process " + state().name + " (pid " + std::to_string(::getpid()) + "):");
    std::fputs(text.c_str(), stderr);
    code = 1;
  }
  exit_function();
  std::fflush(nullptr);
  ::_exit(code);
}

[[noreturn]] void child_main(const std::string& framed, std::vector<int> fds, int real_parent, int first_fd) {
  StartupMessage msg;
  try {
    msg = decode_frame<StartupMessage>(framed);
    if (first_fd >= 0)
      for (std::uint32_t i = 0; i < msg.nfds && msg.nfds <= 1024; ++i) fds.push_back(first_fd + static_cast<int>(i));
    if (msg.nfds != fds.size()) throw ProtocolError("start-up message names another number of descriptors");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: child %d cannot start: %s\n", ::getpid(), e.what());
    ::_exit(255);
  }
  for (int fd : fds) ::fcntl(fd, F_SETFD, FD_CLOEXEC);  // ours now, not our children's
  die_with_parent(msg.daemon, real_parent ? real_parent : msg.parent_pid);
  set_authkey(msg.authkey);
  if (msg.start_method < 0 || msg.start_method > static_cast<std::int32_t>(Method::forkserver)) {
    std::fprintf(stderr, "mproc: child %d cannot start: unknown start method %d\n", ::getpid(), msg.start_method);
    ::_exit(255);
  }
  reset_state_in_child(msg.name, msg.identity, msg.daemon, msg.parent_pid, msg.parent_name,
                       static_cast<Method>(msg.start_method));
  adopt_start_method_setting(msg.method_setting);
  adopt_forkserver_endpoint({msg.forkserver_address, msg.forkserver_pid});
  adopt_resource_tracker_endpoint(std::move(msg.resource_tracker));
  capture_throw_stacks(true);
  bootstrap([&] {
    FdImportScope scope(fds);
    try {
      restore_inherited(msg.inherited);  // before the task: its arguments' code may read them
      run_saved_task(msg.task.data(), msg.task.size(), nullptr);
    } catch (...) {
      for (int fd : fds)
        if (fd >= 0) ::close(fd);
      throw;
    }
  });
}

int spawn_self(const char* marker, int message_fd, const std::vector<int>& fds) {
  auto& st = state();
  if (!st.exe) throw Error("mproc::init(argc, argv) was not called: a spawned child could not find its work");
  // Move every source above the target range first, so that no dup2 below clobbers a source
  // that a later one still needs (the executable's descriptor is often 3 itself).
  const int top = kFirstPassedFd + static_cast<int>(fds.size());
  std::vector<int> sources = {message_fd, st.exe.get()};
  sources.insert(sources.end(), fds.begin(), fds.end());
  std::vector<os::Fd> lifted;
  for (int fd : sources) {
    lifted.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, top));
    if (!lifted.back()) os::throw_errno("dup of a descriptor for a spawned child");
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (std::size_t i = 0; i < lifted.size(); ++i)  // message -> 3, executable -> 4, passed -> 5...
    posix_spawn_file_actions_adddup2(&fa, lifted[i].get(), kMessageFd + static_cast<int>(i));
  // Nothing else of ours leaks into the child, not even descriptors opened without CLOEXEC.
  posix_spawn_file_actions_addclosefrom_np(&fa, top);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
  // Exec through the descriptor opened at init: the file on disk may have been replaced since.
  std::string path = "/proc/self/fd/" + std::to_string(kExeFd);
  std::string fd_arg = std::to_string(kMessageFd);
  char* argv[] = {st.argv0.data(), const_cast<char*>(marker), fd_arg.data(), nullptr};
  pid_t pid = 0;
  int err = ::posix_spawn(&pid, path.c_str(), &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (err != 0) os::throw_errno("posix_spawn of a child", err);
  return pid;
}

}  // namespace mproc::detail
