// Whole programs under mpirun (tests/mpi/run), for what one test process cannot show: a program
// that forgets mproc::init, ranks running different binaries, a worker rank that dies.
#include <gtest/gtest.h>

#include <string>

#include "support/program.hpp"

namespace {

// Runs cmd (stdout and stderr together), bounded by `timeout` so that a hang fails the test
// (exit code 124).
mproc_test::ProgramResult run(const std::string& cmd) { return mproc_test::run_program("timeout -k 5 60 " + cmd + " 2>&1"); }

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

const std::string kRun = MPROC_TEST_MPI_RUN;
const std::string kApp = MPROC_TEST_MPI_APP;
const std::string kOther = MPROC_TEST_MPI_APP_OTHER;

TEST(MpiPrograms, ThePluginMapRunsOnTheWorkerRanks) {
  auto o = run(kRun + " " + kApp + " pool");
  EXPECT_EQ(o.exit_code, 0) << o.out;
  EXPECT_NE(o.out.find("sum 328350"), std::string::npos) << o.out;
}

TEST(MpiPrograms, AProgramThatForgetsInitGetsAClearErrorOnEveryRankAndEnds) {
  auto o = run(kRun + " " + kApp + " no-init");
  EXPECT_NE(o.exit_code, 124) << "it hung: " << o.out;
  EXPECT_NE(o.exit_code, 0) << o.out;
  // Every rank runs main and fails alike; mpirun ends the job when the first of them exits, so
  // the others may not get to print.
  EXPECT_GE(count(o.out, "error: mproc::init(argc, argv) must be called first in main to use the mpi context"), 1u)
      << o.out;
}

TEST(MpiPrograms, RanksRunningAnotherBinaryAreRefusedWhenThePoolStarts) {
  auto o = run(kRun + " -n 1 " + kApp + " pool : -n 2 " + kOther + " pool");
  EXPECT_EQ(o.exit_code, 3) << o.out;
  EXPECT_NE(o.out.find("runs another program than rank 0 (its build id differs)"), std::string::npos) << o.out;
  EXPECT_EQ(o.out.find("the other build"), std::string::npos) << "a task ran on the other binary: " << o.out;
}

TEST(MpiPrograms, AWorkerRankKilledEndsTheJobWithOpenMPIsReportNotAHang) {
  auto o = run(kRun + " " + kApp + " kill-rank");
  EXPECT_NE(o.exit_code, 124) << "it hung: " << o.out;
  EXPECT_NE(o.exit_code, 0) << o.out;
  EXPECT_EQ(o.out.find("the map finished"), std::string::npos) << o.out;
  // OpenMPI's mpirun names the rank, its host and the signal.
  EXPECT_NE(o.out.find("rank 1"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("signal 9"), std::string::npos) << o.out;
}

}  // namespace
