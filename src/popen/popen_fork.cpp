// fork: the child is a copy of this process and runs the task in memory, nothing serialised.
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>

#include "popen/popen.hpp"
#include "spawn/spawn.hpp"
#include "util/stacktrace.hpp"

namespace mproc::detail {
namespace {

int thread_count() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

// Python 3.12 warns too: a lock held by another thread at fork() stays locked in the child forever.
void warn_if_threaded() {
  static std::atomic<bool> warned{false};
  int n = thread_count();
  if (n > 1 && !warned.exchange(true))
    std::fprintf(stderr,
                 "mproc: warning: process %d has %d threads; fork() may deadlock the child (use the 'forkserver' "
                 "or 'spawn' start method)\n",
                 ::getpid(), n);
}

}  // namespace

std::unique_ptr<Popen> launch_fork(ProcessImpl& p) {
  warn_if_threaded();
  prime_code_identity();  // the child must not need the loader's lock (see code_identity.cpp)
  std::fflush(nullptr);  // or buffered output would be written twice, once by each process
  int parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) os::throw_errno("fork");
  if (pid == 0) {
    die_with_parent(p.daemon, parent);
    reset_state_in_child(p.name, p.identity, p.daemon, parent, state().name, Method::fork);
    capture_throw_stacks(true);
    bootstrap(p.task.call);
  }
  return std::make_unique<PopenChild>(pid);
}

}  // namespace mproc::detail
