// Process under every start method: exit codes, signals, timeouts, names, state, cleanup.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "support/capture.hpp"
#include "support/timeouts.hpp"

namespace {

using namespace std::chrono_literals;

class ProcessTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

void do_nothing() {}
void exit_with(int code) { ::_exit(code); }
void sleep_forever() {
  for (;;) ::pause();
}
void send_back(mproc::Connection c, int a, std::string b, std::vector<double> v) { c.send(std::make_tuple(a, b, v)); }
void report_self(mproc::Connection c) {
  auto me = mproc::current_process();
  auto parent = mproc::parent_process();
  c.send(std::make_tuple(me.name(), me.pid(), me.daemon(), me.identity(), me.authkey(), parent ? parent->pid() : -1,
                         parent ? parent->name() : std::string("none")));
}
void throw_runtime_error() { throw std::runtime_error("boom from the child"); }
void throw_int() { throw 42; }

struct Adder {  // a serialisable function object: its state travels with it
  int base = 0;
  void operator()(mproc::Connection c, int x) const { c.send(base + x); }
  template <class A>
  void serialize(A& a) {
    a(base);
  }
};

// True when pid no longer runs (gone, or a zombie no one has reaped yet).
bool gone(int pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto close_paren = line.rfind(')');
  return close_paren != std::string::npos && line.size() > close_paren + 2 && line[close_paren + 2] == 'Z';
}

bool wait_gone(int pid) {
  for (int i = 0; i < 1000; ++i) {  // bounded: 10 s
    if (gone(pid)) return true;
    ::usleep(10000);
  }
  return false;
}

TEST_P(ProcessTest, StartThenJoinGivesExitCodeZero) {
  auto sut = ctx().Process(do_nothing);
  sut.start();
  sut.join();
  EXPECT_EQ(sut.exitcode(), 0);
  EXPECT_FALSE(sut.is_alive());
}

TEST_P(ProcessTest, ArgumentsArriveIntact) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(send_back, child, 7, std::string("seven"), std::vector<double>{7.5, -7});
  sut.start();
  auto got = parent.recv<std::tuple<int, std::string, std::vector<double>>>();
  sut.join();
  EXPECT_EQ(got, std::make_tuple(7, std::string("seven"), std::vector<double>{7.5, -7}));
}

TEST_P(ProcessTest, CaptureLessLambdaAndFunctionObjectAreTargets) {
  auto [parent, child] = mproc::Pipe();
  auto lambda = ctx().Process([](mproc::Connection c, int x) { c.send(x * 3); }, child, 5);
  lambda.start();
  EXPECT_EQ(parent.recv<int>(), 15);
  lambda.join();
  auto functor = ctx().Process(Adder{100}, child, 5);
  functor.start();
  EXPECT_EQ(parent.recv<int>(), 105);
  functor.join();
}

TEST_P(ProcessTest, ExitCodeIsWhatTheChildExitedWith) {
  auto sut = ctx().Process(exit_with, 3);
  sut.start();
  sut.join();
  EXPECT_EQ(sut.exitcode(), 3);
}

TEST_P(ProcessTest, ExitCodeIsMinusTheSignalThatKilledTheChild) {
  auto killed = ctx().Process(sleep_forever);
  auto terminated = ctx().Process(sleep_forever);
  auto interrupted = ctx().Process(sleep_forever);
  for (auto* p : {&killed, &terminated, &interrupted}) p->start();
  killed.kill();
  terminated.terminate();
  interrupted.interrupt();
  for (auto* p : {&killed, &terminated, &interrupted}) p->join();
  EXPECT_EQ(killed.exitcode(), -SIGKILL);
  EXPECT_EQ(terminated.exitcode(), -SIGTERM);
  EXPECT_EQ(interrupted.exitcode(), -SIGINT);
}

TEST_P(ProcessTest, SignalsAfterTheChildEndedAreIgnored) {
  auto sut = ctx().Process(do_nothing);
  sut.start();
  sut.join();
  EXPECT_NO_THROW(sut.terminate());
  EXPECT_NO_THROW(sut.kill());
  EXPECT_EQ(sut.exitcode(), 0);
}

TEST_P(ProcessTest, JoinRefusesANaNTimeoutDoesNotWaitOnANegativeOneAndWaitsOnInfinity) {
  auto sut = ctx().Process(sleep_forever);
  sut.start();
  support::expect_nan_refused("Process.join", [&] { (void)sut.join(mproc::seconds(support::kNaN)); });
  EXPECT_FALSE(sut.join(mproc::seconds(-1)));  // Python: a negative timeout does not wait
  EXPECT_TRUE(sut.is_alive());
  sut.terminate();
  EXPECT_TRUE(sut.join(mproc::seconds(support::kInf)));
}

TEST_P(ProcessTest, JoinWithTimeoutReturnsFalseWhileTheChildRuns) {
  auto sut = ctx().Process(sleep_forever);
  sut.start();
  EXPECT_FALSE(sut.join(50ms));
  EXPECT_TRUE(sut.is_alive());
  EXPECT_EQ(sut.exitcode(), std::nullopt);
  sut.terminate();
  EXPECT_TRUE(sut.join(10s));
  EXPECT_FALSE(sut.is_alive());
}

TEST_P(ProcessTest, SentinelBecomesReadableWhenTheChildEnds) {
  auto sut = ctx().Process(sleep_forever);
  sut.start();
  EXPECT_TRUE(mproc::connection::wait(std::vector<int>{sut.sentinel()}, 50ms).empty());
  sut.kill();
  EXPECT_EQ(mproc::connection::wait(std::vector<int>{sut.sentinel()}, 10s), std::vector<int>{sut.sentinel()});
  sut.join();
}

TEST_P(ProcessTest, PidIsEmptyBeforeStartAndSetAfter) {
  auto sut = ctx().Process(do_nothing);
  EXPECT_EQ(sut.pid(), std::nullopt);
  sut.start();
  ASSERT_TRUE(sut.pid().has_value());
  EXPECT_GT(*sut.pid(), 0);
  sut.join();
}

TEST_P(ProcessTest, ChildKnowsItsNameParentAndKey) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process({.name = "worker-a", .daemon = true}, report_self, child);
  sut.start();
  auto [name, pid, daemon, identity, key, ppid, pname] =
      parent.recv<std::tuple<std::string, int, bool, std::vector<int>, std::string, int, std::string>>();
  sut.join();
  EXPECT_EQ(name, "worker-a");
  EXPECT_EQ(pid, *sut.pid());
  EXPECT_TRUE(daemon);
  EXPECT_EQ(identity.size(), 1u);
  EXPECT_EQ(key, mproc::current_process().authkey());
  EXPECT_EQ(key.size(), 32u);
  EXPECT_EQ(ppid, ::getpid());
  EXPECT_EQ(pname, "MainProcess");
}

TEST_P(ProcessTest, NamesFollowPythonsNumberingAcrossGenerations) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(
      [](mproc::Connection c, std::string method) {
        auto grandchild = mproc::get_context(method).Process(report_self, c);
        grandchild.start();
        grandchild.join();
      },
      child, GetParam());
  sut.start();
  auto got = parent.recv<std::tuple<std::string, int, bool, std::vector<int>, std::string, int, std::string>>();
  sut.join();
  ASSERT_EQ(sut.exitcode(), 0);
  EXPECT_EQ(sut.name(), "Process-" + std::to_string(mproc::current_process().identity().size() + sut.name().size() > 0
                                                        ? std::stoi(sut.name().substr(8))
                                                        : 0));
  EXPECT_EQ(std::get<0>(got), sut.name() + ":1");  // Process-N:1
  EXPECT_EQ(std::get<6>(got), sut.name());          // its parent is our child
  EXPECT_EQ(std::get<5>(got), *sut.pid());
}

TEST_P(ProcessTest, UncaughtExceptionExitsWithOneAndPrintsTypeMessageAndStack) {
  mproc_test::CaptureFd err(2);
  auto sut = ctx().Process({.name = "thrower"}, throw_runtime_error);
  sut.start();
  sut.join();
  std::string text = err.finish();
  EXPECT_EQ(sut.exitcode(), 1);
  EXPECT_NE(text.find("Process thrower (pid " + std::to_string(*sut.pid()) + ")"), std::string::npos) << text;
  EXPECT_NE(text.find("std::runtime_error: boom from the child"), std::string::npos) << text;
  EXPECT_NE(text.find("throw_runtime_error"), std::string::npos) << "stack should name the throwing function:\n" << text;
}

TEST_P(ProcessTest, ExceptionNotDerivedFromStdExceptionIsReportedToo) {
  mproc_test::CaptureFd err(2);
  auto sut = ctx().Process(throw_int);
  sut.start();
  sut.join();
  std::string text = err.finish();
  EXPECT_EQ(sut.exitcode(), 1);
  EXPECT_NE(text.find("\nint\n"), std::string::npos) << text;
}

TEST_P(ProcessTest, ChildStdinIsDevNull) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(
      [](mproc::Connection c) {
        char buf[64] = {};
        ssize_t n = ::readlink("/proc/self/fd/0", buf, sizeof buf - 1);
        c.send(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0));
      },
      child);
  sut.start();
  EXPECT_EQ(parent.recv<std::string>(), "/dev/null");
  sut.join();
}

TEST_P(ProcessTest, StartingTwiceIsAnError) {
  auto sut = ctx().Process(do_nothing);
  sut.start();
  EXPECT_THROW(sut.start(), mproc::ProcessError);
  sut.join();
}

TEST_P(ProcessTest, JoinBeforeStartIsAnError) {
  auto sut = ctx().Process(do_nothing);
  EXPECT_THROW(sut.join(), mproc::ProcessError);
}

TEST_P(ProcessTest, CloseWhileRunningIsAnErrorAndAfterwardsTheObjectIsUnusable) {
  auto sut = ctx().Process(sleep_forever);
  sut.start();
  EXPECT_THROW(sut.close(), mproc::ProcessError);
  sut.kill();
  sut.join();
  sut.close();
  EXPECT_THROW(sut.is_alive(), mproc::Error);
  EXPECT_THROW(sut.start(), mproc::Error);
}

TEST_P(ProcessTest, ActiveChildrenListsRunningChildrenOnly) {
  auto running = ctx().Process(sleep_forever);
  auto finished = ctx().Process(do_nothing);
  running.start();
  finished.start();
  finished.join();
  auto active = mproc::active_children();
  ASSERT_EQ(active.size(), 1u);
  EXPECT_EQ(active[0].pid(), running.pid());
  running.kill();
  running.join();
  EXPECT_TRUE(mproc::active_children().empty());
}

TEST_P(ProcessTest, DaemonChildCannotHaveChildren) {
  mproc_test::CaptureFd err(2);
  auto sut = ctx().Process({.daemon = true},
                           [](std::string method) { mproc::get_context(method).Process(do_nothing).start(); }, GetParam());
  sut.start();
  sut.join();
  std::string text = err.finish();
  EXPECT_EQ(sut.exitcode(), 1);
  EXPECT_NE(text.find("daemonic processes are not allowed to have children"), std::string::npos) << text;
}

TEST_P(ProcessTest, DaemonGrandchildIsTerminatedWhenItsParentExits) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(
      [](mproc::Connection c, std::string method) {
        auto daemon = mproc::get_context(method).Process({.daemon = true}, sleep_forever);
        daemon.start();
        c.send(*daemon.pid());
      },  // returning runs the exit function: daemon children are terminated and reaped
      child, GetParam());
  sut.start();
  int grandchild = parent.recv<int>();
  sut.join();
  EXPECT_EQ(sut.exitcode(), 0);
  EXPECT_TRUE(wait_gone(grandchild));
}

TEST_P(ProcessTest, ParentWaitsForNonDaemonChildrenAtExit) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(
      [](mproc::Connection c, std::string method) {
        auto late = mproc::get_context(method).Process(
            [](mproc::Connection c2) {
              ::usleep(200000);
              c2.send(std::string("late child done"));
            },
            c);
        late.start();
      },  // returns at once; the exit function joins `late`
      child, GetParam());
  sut.start();
  sut.join();
  EXPECT_EQ(sut.exitcode(), 0);
  ASSERT_TRUE(parent.poll(0s));
  EXPECT_EQ(parent.recv<std::string>(), "late child done");
}

TEST_P(ProcessTest, ChildOfAKilledParentDoesNotRunForever) {
  auto [parent, child] = mproc::Pipe();
  auto sut = ctx().Process(
      [](mproc::Connection c, std::string method) {
        auto orphan = mproc::get_context(method).Process(sleep_forever);
        orphan.start();
        c.send(*orphan.pid());
        sleep_forever();
      },
      child, GetParam());
  sut.start();
  int grandchild = parent.recv<int>();
  sut.kill();
  sut.join();
  EXPECT_TRUE(wait_gone(grandchild)) << "grandchild " << grandchild << " outlived its killed parent";
}

TEST_P(ProcessTest, ManyChildrenRunConcurrently) {
  auto [parent, child] = mproc::Pipe(false);
  std::vector<mproc::Process> procs;
  for (int i = 0; i < 8; ++i) procs.push_back(ctx().Process([](mproc::Connection c, int x) { c.send(x); }, child, i));
  for (auto& p : procs) p.start();
  std::vector<int> got;
  for (int i = 0; i < 8; ++i) got.push_back(parent.recv<int>());
  for (auto& p : procs) p.join();
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7}));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ProcessTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

TEST(ProcessForkTest, ForkInAThreadedProcessWarnsOnce) {
  // Run in a spawned child, so that the warning state is fresh and its threads are its own.
  mproc_test::CaptureFd err(2);
  auto sut = mproc::get_context("spawn").Process([] {
    std::thread t([] { ::usleep(300000); });
    for (int i = 0; i < 2; ++i) {
      auto p = mproc::get_context("fork").Process(do_nothing);
      p.start();
      p.join();
    }
    t.join();
  });
  sut.start();
  sut.join();
  std::string text = err.finish();
  EXPECT_EQ(sut.exitcode(), 0);
  auto first = text.find("threads; fork() may deadlock");
  EXPECT_NE(first, std::string::npos) << text;
  EXPECT_EQ(text.find("threads; fork() may deadlock", first + 1), std::string::npos) << "warned twice:\n" << text;
}

}  // namespace
