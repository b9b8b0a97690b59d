// Start methods and contexts, init, function identities on arrival, and the fork server's
// authentication and death.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>

#include "spawn/forkserver.hpp"
#include "support/capture.hpp"
#include "support/program.hpp"
#include "util/auth.hpp"

namespace {

using namespace std::chrono_literals;

int g_set_at_run_time = 0;

void report_global(mproc::Connection c) { c.send(g_set_at_run_time); }
void report_start_method(mproc::Connection c) { c.send(mproc::get_start_method()); }

std::string run_program(const std::string& cmd) { return mproc_test::run_program(cmd).out; }

TEST(ContextTest, DefaultStartMethodIsForkserver) {
  // A spawned child has never chosen a method, so it shows the default.
  auto [parent, child] = mproc::Pipe();
  auto p = mproc::get_context("spawn").Process(report_start_method, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "forkserver");
  p.join();
  EXPECT_EQ(mproc::get_all_start_methods(), (std::vector<std::string>{"forkserver", "fork", "spawn"}));
}

TEST(ContextTest, TheMpiContextWithoutTheMpiBackendIsAClearError) {
  // This program does not link mproc::mpi (or mproc was built without MPI): "mpi" is a known
  // name, but asking for it says what is missing.
  for (auto ask : {+[] { (void)mproc::get_context("mpi"); }, +[] { mproc::set_start_method("mpi", true); }}) {
    try {
      ask();
      FAIL() << "no error";
    } catch (const mproc::Error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("the mpi context is unavailable"), std::string::npos) << what;
      EXPECT_TRUE(what.find("link the CMake target mproc::mpi") != std::string::npos ||
                  what.find("mproc was built without MPI") != std::string::npos)
          << what;
    }
  }
  EXPECT_NE(mproc::get_start_method(), "mpi");
}

TEST(ContextTest, SetStartMethodTwiceThrowsUnlessForced) {
  mproc::set_start_method("spawn", true);
  EXPECT_EQ(mproc::get_start_method(), "spawn");
  EXPECT_THROW(mproc::set_start_method("fork"), mproc::Error);
  EXPECT_EQ(mproc::get_start_method(), "spawn");
  mproc::set_start_method("fork", true);
  EXPECT_EQ(mproc::get_start_method(), "fork");
  EXPECT_EQ(mproc::get_context().get_start_method(), "fork");
  mproc::set_start_method("forkserver", true);
}

TEST(ContextTest, UnknownStartMethodNamesTheValidOnes) {
  try {
    mproc::get_context("vfork");
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'vfork'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("fork, spawn, forkserver"), std::string::npos);
  }
  EXPECT_THROW(mproc::set_start_method("threads"), std::invalid_argument);
}

TEST(ContextTest, CpuCountIsPositive) { EXPECT_GE(mproc::cpu_count(), 1); }

TEST(ContextTest, OnlyForkChildrenSeeStateSetAtRunTime) {
  g_set_at_run_time = 7;  // the seed: a global set by the parent after start-up
  std::map<std::string, int> seen;
  for (std::string m : {"fork", "spawn", "forkserver"}) {
    auto [parent, child] = mproc::Pipe();
    auto p = mproc::get_context(m).Process(report_global, child);
    p.start();
    seen[m] = parent.recv<int>();
    p.join();
  }
  g_set_at_run_time = 0;
  EXPECT_EQ(seen["fork"], 7);
  EXPECT_EQ(seen["spawn"], 0);
  EXPECT_EQ(seen["forkserver"], 0);
}

TEST(ContextTest, StartingWithoutInitIsAClearErrorForSpawnAndForkserver) {
  const std::string helper = MPROC_TEST_HELPER_no_init;
  for (std::string m : {"spawn", "forkserver"}) {
    std::string out = run_program(helper + " " + m);
    EXPECT_NE(out.find("error: mproc::init(argc, argv) must be called first in main"), std::string::npos) << m << ": " << out;
    EXPECT_NE(out.find("'" + m + "'"), std::string::npos) << out;
  }
  EXPECT_EQ(run_program(helper + " fork"), "started, exit code 0\n");
}

// Writes a call to `target` whose identity tag has one bit flipped.
struct ForgedTask {
  void (*target)(mproc::Connection);
  mproc::Connection conn;
};

void must_never_run(mproc::Connection c) { c.send(std::string("forged call ran")); }

class ForgedIdentityTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ForgedIdentityTest, ChildRejectsAForgedFunctionIdentityAndCallsNothing) {
  auto [parent, child] = mproc::Pipe();
  // The real task for must_never_run, re-encoded with the invoker's tag corrupted.
  mproc::detail::Task real = mproc::detail::make_task(must_never_run, child);
  mproc::detail::Task forged;
  forged.call = real.call;
  forged.save = [real](mproc::detail::OutArchive& ar) {
    std::string bytes;
    {
      mproc::detail::OutArchive inner(bytes);
      real.save(inner);
    }
    bytes[16] = static_cast<char>(bytes[16] ^ 0x01);  // first byte of the tag (after module and offset)
    ar.saveBinary(bytes.data(), bytes.size());
  };
  mproc_test::CaptureFd err(2);
  mproc::Process p(mproc::ProcessOptions{.context = mproc::get_context(GetParam())}, forged);
  p.start();
  p.join();
  std::string text = err.finish();
  EXPECT_EQ(p.exitcode(), 1);
  EXPECT_NE(text.find("mproc::FunctionIdentityError: function identity rejected"), std::string::npos) << text;
  EXPECT_FALSE(parent.poll(0s)) << "the forged function was called";
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ForgedIdentityTest, ::testing::Values("spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

int connect_to_forkserver() {
  auto ep = mproc::detail::forkserver_endpoint();
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

TEST(ForkserverTest, ClientWithoutTheKeyIsRefusedAndTheServerKeepsServing) {
  auto warm = mproc::get_context("forkserver").Process([] {});
  warm.start();
  warm.join();
  int s = connect_to_forkserver();
  ASSERT_GE(s, 0);
  unsigned char hello[36];
  ASSERT_EQ(::recv(s, hello, sizeof hello, 0), 36);
  EXPECT_EQ(std::memcmp(hello, "CHAL", 4), 0);
  unsigned char wrong[64] = {};  // an answer made without the key
  ASSERT_EQ(::send(s, wrong, sizeof wrong, MSG_NOSIGNAL), 64);
  unsigned char verdict[36] = {};
  EXPECT_EQ(::recv(s, verdict, sizeof verdict, 0), 4);
  EXPECT_EQ(std::memcmp(verdict, "FAIL", 4), 0);
  EXPECT_EQ(::recv(s, verdict, sizeof verdict, 0), 0) << "the server should close the connection";
  ::close(s);
  auto after = mproc::get_context("forkserver").Process([] {});
  after.start();
  after.join();
  EXPECT_EQ(after.exitcode(), 0);
}

TEST(ForkserverTest, ProcessWithAnotherKeyGetsAuthenticationError) {
  auto warm = mproc::get_context("forkserver").Process([] {});
  warm.start();
  warm.join();
  auto [parent, child] = mproc::Pipe();
  auto p = mproc::get_context("fork").Process(
      [](mproc::Connection c) {
        mproc::detail::set_authkey(std::string(32, 'x'));  // not the program's key
        try {
          mproc::get_context("forkserver").Process([] {}).start();
          c.send(std::string("started"));
        } catch (const mproc::AuthenticationError& e) {
          c.send(std::string("AuthenticationError: ") + e.what());
        }
      },
      child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "AuthenticationError: the fork server refused this process's key");
  p.join();
}

TEST(ForkserverTest, DeathOfTheServerIsReportedThenItIsRestarted) {
  auto sleeper = mproc::get_context("forkserver").Process([] {
    for (;;) ::pause();
  });
  sleeper.start();
  int server = mproc::detail::forkserver_endpoint().pid;
  ASSERT_GT(server, 0);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  // Its child learns of the death (the parent-death signal) and ends; its code is unknown: 255.
  ASSERT_TRUE(sleeper.join(10s));
  EXPECT_EQ(sleeper.exitcode(), 255);
  try {
    mproc::get_context("forkserver").Process([] {}).start();
    FAIL() << "a start through a dead fork server succeeded";
  } catch (const mproc::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("the fork server (pid " + std::to_string(server) + ") died"), std::string::npos)
        << e.what();
  }
  auto after = mproc::get_context("forkserver").Process([] {});
  after.start();
  after.join();
  EXPECT_EQ(after.exitcode(), 0);
  EXPECT_NE(mproc::detail::forkserver_endpoint().pid, server);
}

}  // namespace
