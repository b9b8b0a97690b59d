#include "support/leak_check.hpp"

#include "resource_tracker/resource_tracker.hpp"
#include "spawn/forkserver.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace mproc_test {
namespace {

std::set<std::string> list_dir(const char* path) {
  std::set<std::string> out;
  if (DIR* d = ::opendir(path)) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') out.insert(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string describe_fd(const std::string& fd) {
  char buf[256] = {};
  ssize_t n = ::readlink(("/proc/self/fd/" + fd).c_str(), buf, sizeof buf - 1);
  return fd + " -> " + (n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?");
}

int timeout_seconds() {
  double mult = 1;
  if (const char* m = std::getenv("MPROC_TEST_TIMEOUT_MULTIPLIER")) mult = std::atof(m);
  return static_cast<int>(60 * (mult > 0 ? mult : 1));
}

// /dev/shm is shared by every process of the machine, and other test programs (of this run under
// ctest -j, or of another build) may create entries while this test runs. An entry is this
// program's when its name carries this program's pid as a "_<pid>_" or final "_<pid>" part, as
// the names mproc generates ("mproc_<pid of the program>_<random>") and the tests' own do.
bool names_this_program(const std::string& entry) {
  const std::string pid = "_" + std::to_string(::getpid());
  auto at = entry.find(pid + "_");
  return at != std::string::npos || (entry.size() > pid.size() && entry.ends_with(pid));
}

class LeakCheck : public ::testing::EmptyTestEventListener {
  std::set<std::string> fds_;
  std::set<int> kids_;
  std::set<std::string> shm_;

  void OnTestStart(const ::testing::TestInfo&) override {
    fds_ = open_fds();
    kids_ = child_pids();
    shm_ = shm_entries();
    ::alarm(static_cast<unsigned>(timeout_seconds()));
  }

  void OnTestEnd(const ::testing::TestInfo&) override {
    ::alarm(0);
    // The fork server and the resource tracker belong to the program, not to a test: a test may
    // start (or restart) either.
    auto programs = [] {
      return std::set<int>{mproc::detail::forkserver_endpoint().pid, mproc::detail::resource_tracker_endpoint().pid};
    };
    // A child that was killed may need a moment to be reaped by whoever waits for it.
    std::set<int> kids;
    for (int i = 0; i < 200; ++i) {
      kids = child_pids();
      bool extra = false;
      for (int k : kids) extra = extra || (!kids_.count(k) && !programs().count(k));
      if (!extra) break;
      ::usleep(10000);
    }
    const std::set<int> servers = programs();
    std::set<std::string> server_fds;
    for (int fd : mproc::detail::forkserver_client_fds()) server_fds.insert(std::to_string(fd));
    for (int fd : mproc::detail::resource_tracker_client_fds()) server_fds.insert(std::to_string(fd));
    for (int k : kids)
      if (!kids_.count(k) && !servers.count(k)) {
        ADD_FAILURE() << "leak check: child process " << k << " is still alive after the test";
        // Reported; now ended, or the program would wait for it at exit (as Python's does for
        // its non-daemon children) until ctest's timeout instead of going on to the next test.
        ::kill(k, SIGKILL);
      }
    for (const auto& fd : open_fds())
      if (!fds_.count(fd) && !server_fds.count(fd)) ADD_FAILURE() << "leak check: descriptor " << describe_fd(fd) << " left open by the test";
    for (const auto& s : shm_entries())
      if (!shm_.count(s) && names_this_program(s)) ADD_FAILURE() << "leak check: /dev/shm/" << s << " left behind by the test";
  }
};

void on_alarm(int) {
  const char msg[] = "\nwatchdog: the test ran too long (hung?); aborting\n";
  (void)!::write(2, msg, sizeof msg - 1);
  std::abort();
}

}  // namespace

std::set<std::string> open_fds() {
  auto fds = list_dir("/proc/self/fd");
  // The directory stream used to list them shows up too; drop descriptors that are gone now.
  std::set<std::string> live;
  for (const auto& fd : fds)
    if (::fcntl(std::atoi(fd.c_str()), F_GETFD) >= 0) live.insert(fd);
  return live;
}

std::set<int> child_pids() {
  std::set<int> out;
  for (const auto& task : list_dir("/proc/self/task")) {
    std::ifstream f("/proc/self/task/" + task + "/children");
    int pid;
    while (f >> pid) out.insert(pid);
  }
  return out;
}

std::set<std::string> shm_entries() {
  std::set<std::string> out;
  for (const auto& e : list_dir("/dev/shm"))
    if (e.rfind("mproc", 0) == 0 || e.rfind("sem.mproc", 0) == 0) out.insert(e);
  return out;
}

void warm_up_forkserver() {
  auto p = mproc::get_context("forkserver").Process([] {});
  p.start();
  p.join();
}

void install_leak_check() {
  std::signal(SIGALRM, on_alarm);
  warm_up_forkserver();
  ::testing::UnitTest::GetInstance()->listeners().Append(new LeakCheck);
}

}  // namespace mproc_test
