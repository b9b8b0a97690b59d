// The resource tracker after a program dies or exits: it unlinks what the program created with
// track = true and did not unlink, reports it once, and leaves everything else alone. The
// programs under test are tests/helpers/shm_owner.cpp, killed with SIGKILL here.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "resource_tracker/resource_tracker.hpp"
#include "util/auth.hpp"

extern char** environ;

namespace {

using namespace std::string_literals;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}
bool shm_exists(const std::string& name) { return exists("/dev/shm/" + name); }

std::string unique_name(const char* what) {
  static int n = 0;
  return "mproc_rt_"s + what + "_" + std::to_string(::getpid()) + "_" + std::to_string(++n);
}

// True when pid no longer runs (gone, or a zombie nobody reaped yet).
bool gone(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && line.size() > close_paren + 2 && line[close_paren + 2] == 'Z';
}

// The helper program with its stdout and stderr on pipes.
class Program {
 public:
  explicit Program(const std::vector<std::string>& args) {
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    std::vector<std::string> all = {MPROC_TEST_HELPER_shm_owner};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
    if (rc != 0) throw std::runtime_error("posix_spawn of the helper failed");
  }
  ~Program() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(out_);
    ::close(err_);
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;

  /// The next line the program prints ("" at EOF).
  std::string line() {
    std::string s;
    char c;
    while (::read(out_, &c, 1) == 1 && c != '\n') s += c;
    return s;
  }
  /// SIGKILL, as the OOM killer or `kill -9` would.
  void kill() {
    ::kill(pid_, SIGKILL);
    wait();
  }
  int wait() {
    int st = 0;
    ::waitpid(pid_, &st, 0);
    pid_ = 0;
    return st;
  }
  /// Everything written to stderr, once every holder closed it: the program, its children and
  /// its resource tracker, which ends after cleaning up. So this also waits for the cleanup.
  std::string stderr_to_eof() {
    std::string s;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(err_, buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
    return s;
  }

 private:
  pid_t pid_ = 0;
  int out_ = -1, err_ = -1;
};

std::string report(std::size_t n, const std::string& kind, const std::string& names) {
  return "mproc: resource_tracker: There appear to be " + std::to_string(n) + " leaked " + kind +
         " objects to clean up at shutdown: " + names + "\n";
}

TEST(ResourceTrackerFault, SigkilledProgramsSegmentsAreUnlinkedAndReportedOnce) {
  auto a = unique_name("a"), b = unique_name("b");
  Program sut({"create", a, "create", b, "wait"});
  ASSERT_EQ(sut.line(), "created " + a);
  ASSERT_EQ(sut.line(), "created " + b);
  ASSERT_EQ(sut.line(), "ready");
  EXPECT_TRUE(shm_exists(a) && shm_exists(b));
  sut.kill();
  std::string err = sut.stderr_to_eof();
  EXPECT_EQ(err, report(2, "shared_memory", "/" + a + ", /" + b));
  EXPECT_FALSE(shm_exists(a));
  EXPECT_FALSE(shm_exists(b));
}

TEST(ResourceTrackerFault, SegmentUnlinkedBeforeTheKillIsNeitherReportedNorTouched) {
  auto kept = unique_name("kept"), unlinked = unique_name("unlinked");
  Program sut({"create", kept, "create-unlink", unlinked, "wait"});
  ASSERT_EQ(sut.line(), "created " + kept);
  ASSERT_EQ(sut.line(), "unlinked " + unlinked);
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), report(1, "shared_memory", "/" + kept));
  EXPECT_FALSE(shm_exists(kept));
}

TEST(ResourceTrackerFault, UntrackedSegmentIsNotCleanedAndNotReported) {
  auto name = unique_name("untracked");
  Program sut({"create-untracked", name, "tracker", "wait"});
  ASSERT_EQ(sut.line(), "created " + name);
  ASSERT_EQ(sut.line().rfind("tracker ", 0), 0u);
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), "");
  EXPECT_TRUE(shm_exists(name)) << "track = false: only unlink() removes it";
  mproc::SharedMemory({.name = name}).unlink();
}

TEST(ResourceTrackerFault, SegmentOfAnotherProgramIsNeverUnlinkedByOneThatAttachedIt) {
  mproc::SharedMemory ours({.create = true, .size = 4096, .track = false});
  ours.buf()[0] = std::byte{77};
  Program sut({"attach", ours.name(), "tracker", "wait"});
  ASSERT_EQ(sut.line(), "attached " + ours.name());
  ASSERT_EQ(sut.line().rfind("tracker ", 0), 0u);
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), "");
  ASSERT_TRUE(shm_exists(ours.name()));
  EXPECT_EQ(ours.buf()[0], std::byte{77});
  ours.unlink();
}

TEST(ResourceTrackerFault, NameCreatedAgainByAnotherProgramIsNeverUnlinked) {
  auto name = unique_name("reused");
  Program sut({"create", name, "wait"});
  ASSERT_EQ(sut.line(), "created " + name);
  ASSERT_EQ(sut.line(), "ready");
  // Another program removes the dead one's segment and makes its own under the same name.
  mproc::SharedMemory({.name = name}).unlink();
  mproc::SharedMemory ours({.name = name, .create = true, .size = 128, .track = false});
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), "") << "it is not the segment the dead program created";
  EXPECT_TRUE(shm_exists(name));
  ours.unlink();
}

TEST(ResourceTrackerFault, ProgramThatExitsIsNotHeldUpAndItsLeaksAreCleanedAfterIt) {
  auto name = unique_name("exit");
  Program sut({"create", name, "exit"});
  ASSERT_EQ(sut.line(), "created " + name);
  int st = sut.wait();  // the program's exit does not wait for its tracker
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  EXPECT_EQ(sut.stderr_to_eof(), report(1, "shared_memory", "/" + name));
  EXPECT_FALSE(shm_exists(name));
}

TEST(ResourceTrackerFault, NamedSemaphoreIsCleanedToo) {
  auto name = unique_name("sem");
  Program sut({"semaphore", name, "wait"});
  ASSERT_EQ(sut.line(), "semaphore " + name);
  ASSERT_EQ(sut.line(), "ready");
  EXPECT_TRUE(shm_exists("sem." + name));
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), report(1, "semaphore", "/" + name));
  EXPECT_FALSE(shm_exists("sem." + name));
}

TEST(ResourceTrackerFault, TrackerEndsWithTheProgram) {
  Program sut({"tracker", "wait"});
  std::string line = sut.line();
  ASSERT_EQ(line.rfind("tracker ", 0), 0u) << line;
  int tracker = std::stoi(line.substr(8));
  ASSERT_EQ(sut.line(), "ready");
  EXPECT_FALSE(gone(tracker));
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), "");
  bool ended = false;
  for (int i = 0; i < 500 && !ended; ++i, ::usleep(10000)) ended = gone(tracker);
  EXPECT_TRUE(ended) << "the tracker " << tracker << " outlived its program";
}

TEST(ResourceTrackerFault, KilledTrackerIsRelaunchedWithPythonsWarning) {
  auto lost = unique_name("lost"), later = unique_name("later");
  Program sut({"create", lost, "kill-tracker", "create", later, "wait"});
  ASSERT_EQ(sut.line(), "created " + lost);
  ASSERT_EQ(sut.line().rfind("killed ", 0), 0u);
  ASSERT_EQ(sut.line(), "created " + later);
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(),
            "mproc: resource_tracker: process died unexpectedly, relaunching.  Some resources might leak.\n" +
                report(1, "shared_memory", "/" + later));
  EXPECT_FALSE(shm_exists(later));
  EXPECT_TRUE(shm_exists(lost)) << "the killed tracker's records died with it (as Python warns)";
  mproc::SharedMemory({.name = lost}).unlink();
}

class ChildSegmentTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ChildSegmentTest, SegmentAChildLeftStaysWhileTheProgramRunsThenIsCleaned) {
  auto name = unique_name("child");
  Program sut({"child", GetParam(), name, "wait"});
  ASSERT_EQ(sut.line(), "child created " + name + ", still there: yes");
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  EXPECT_EQ(sut.stderr_to_eof(), report(1, "shared_memory", "/" + name));
  EXPECT_FALSE(shm_exists(name));
}

TEST_P(ChildSegmentTest, ChildrenRacingToStartTheTrackerSettleOnOne) {
  auto name = unique_name("race");
  Program sut({"race", GetParam(), "6", name, "wait"});
  ASSERT_EQ(sut.line(), "trackers 1");
  ASSERT_EQ(sut.line(), "ready");
  sut.kill();
  std::string names;
  for (int k = 0; k < 6; ++k) names += (k ? ", /" : "/") + name + "_" + std::to_string(k);
  EXPECT_EQ(sut.stderr_to_eof(), report(6, "shared_memory", names));
  for (int k = 0; k < 6; ++k) EXPECT_FALSE(shm_exists(name + "_" + std::to_string(k)));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ChildSegmentTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

// ------------------------------------------------------------------ authentication

int connect_to_tracker() {
  auto ep = mproc::detail::resource_tracker_endpoint();
  int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, ep.address.data(), ep.address.size());
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + ep.address.size());
  if (::connect(s, reinterpret_cast<sockaddr*>(&a), len) != 0) {
    ::close(s);
    return -1;
  }
  return s;
}

TEST(ResourceTrackerAuth, ClientWithoutTheKeyIsRefusedAndTheTrackerKeepsServing) {
  mproc::detail::resource_tracker_ensure_running();
  int s = connect_to_tracker();
  ASSERT_GE(s, 0);
  unsigned char hello[40];
  ASSERT_EQ(::recv(s, hello, sizeof hello, 0), 40);
  EXPECT_EQ(std::memcmp(hello, "CHAL", 4), 0);
  unsigned char wrong[64] = {};  // an answer made without the key
  ASSERT_EQ(::send(s, wrong, sizeof wrong, MSG_NOSIGNAL), 64);
  unsigned char verdict[36] = {};
  EXPECT_EQ(::recv(s, verdict, sizeof verdict, 0), 4);
  EXPECT_EQ(std::memcmp(verdict, "FAIL", 4), 0);
  EXPECT_EQ(::recv(s, verdict, sizeof verdict, 0), 0) << "the tracker should close the connection";
  // A request sent anyway goes nowhere.
  ::close(s);
  mproc::SharedMemory after({.create = true, .size = 16});
  EXPECT_TRUE(after.tracked());
  after.unlink();
}

TEST(ResourceTrackerAuth, ProcessWithAnotherKeyGetsAuthenticationErrorAndLeavesNoSegment) {
  mproc::detail::resource_tracker_ensure_running();
  auto name = unique_name("wrongkey");
  auto [parent, child] = mproc::Pipe();
  auto p = mproc::get_context("fork").Process(
      [](mproc::Connection c, std::string n) {
        mproc::detail::set_authkey(std::string(32, 'x'));  // not the program's key
        try {
          mproc::SharedMemory({.name = n, .create = true, .size = 16});
          c.send(std::string("created"));
        } catch (const mproc::AuthenticationError& e) {
          c.send(std::string("AuthenticationError: ") + e.what());
        }
      },
      child, name);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "AuthenticationError: the resource tracker refused this process's key");
  p.join();
  EXPECT_FALSE(shm_exists(name)) << "a segment that could not be registered must not stay";
}

}  // namespace
