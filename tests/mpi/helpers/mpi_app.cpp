// A whole program for tests/mpi/test_mpi_programs.cpp, run under mpirun.
//
//   mproc_test_mpi_app pool        rank 0 maps over 100 items and prints "sum N"
//   mproc_test_mpi_app no-init     every rank skips mproc::init and tries a pool: prints the error
//   mproc_test_mpi_app kill-rank   rank 0 kills worker rank 1 with SIGKILL mid-map
//
// Built twice (MPROC_TEST_OTHER_BUILD: a different program), for the test of ranks that run
// different binaries.
#include <mproc/mpi.hpp>
#include <mproc/mproc.hpp>

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <numeric>
#include <thread>

namespace {
int square(int x) {
#ifdef MPROC_TEST_OTHER_BUILD
  std::printf("the other build\n");
#endif
  return x * x;
}
int slow_square(int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return x * x;
}
}  // namespace

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "";
  if (std::strcmp(mode, "no-init") != 0) mproc::init(argc, argv);
  std::vector<int> in(100);
  std::iota(in.begin(), in.end(), 0);
  try {
    mproc::Pool pool({.context = mproc::get_context("mpi")});
    if (std::strcmp(mode, "kill-rank") == 0) {
      auto pending = pool.map_async(slow_square, in, 1);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      ::kill(pool.worker_pids().at(0), SIGKILL);
      pending.get();
      std::printf("the map finished after its rank was killed\n");
      return 0;
    }
    auto out = pool.map(square, in);
    std::printf("sum %d\n", std::accumulate(out.begin(), out.end(), 0));
  } catch (const mproc::Error& e) {
    std::printf("error: %s\n", e.what());
    std::fflush(stdout);
    return 3;
  }
  return 0;
}
