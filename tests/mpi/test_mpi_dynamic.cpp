// The mpi context in a program started without mpirun: each pool spawns its worker ranks
// (MPI_Comm_spawn), and they end with it.
#include <gtest/gtest.h>
#include <mproc/mpi.hpp>
#include <mproc/mproc.hpp>

#include <unistd.h>

#include <numeric>
#include <set>

namespace {

int square(int x) { return x * x; }
int my_pid(int) { return static_cast<int>(::getpid()); }
int throw_on_odd(int x) {
  if (x % 2) throw std::runtime_error("odd " + std::to_string(x));
  return x;
}

class MpiDynamic : public ::testing::Test {
 protected:
  // The first pool starts MPI in this process, and with it what OpenMPI keeps for the program's
  // life (its daemon for spawning, its descriptors): part of the leak check's baseline then,
  // as the fork server is (support/leak_check.hpp). Each pool after it must leave nothing.
  static void SetUpTestSuite() {
    // CI runs as root, where OpenMPI's launcher refuses to start ranks unless told (tests/mpi/run
    // says the same for mpirun).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    mproc::Pool warm_up({.processes = 2, .context = mproc::get_context("mpi")});
    ASSERT_EQ(warm_up.apply(square, 2), 4);
  }
};

TEST_F(MpiDynamic, APoolSpawnsItsWorkersAndTheyEndWithIt) {  std::vector<int> in(5000);
  std::iota(in.begin(), in.end(), 0);
  std::set<int> first_pids;
  {
    mproc::Pool pool({.processes = 2, .context = mproc::get_context("mpi")});
    EXPECT_EQ(pool.processes(), 2);
    auto out = pool.map(square, in, 1);
    for (std::size_t i = 0; i < in.size(); ++i) ASSERT_EQ(out[i], in[i] * in[i]);
    auto pids = pool.map(my_pid, std::vector<int>(100, 0), 1);
    first_pids.insert(pids.begin(), pids.end());
    EXPECT_EQ(first_pids.size(), 2u);
    EXPECT_FALSE(first_pids.contains(static_cast<int>(::getpid())));
    try {
      pool.apply(throw_on_odd, 3);
      FAIL() << "no error";
    } catch (const mproc::RemoteError& e) {
      EXPECT_EQ(e.message(), "odd 3");
      EXPECT_NE(e.worker().find("on MPI rank "), std::string::npos) << e.worker();
    }
  }
  // The spawned ranks ended with the pool: their task processes are gone.
  for (int pid : first_pids) EXPECT_NE(::kill(pid, 0), 0) << "task process " << pid << " outlived its pool";
}

TEST_F(MpiDynamic, AnExecutorSpawnsItsOwnWorkersAndShutsThemDown) {
  mproc::ProcessPoolExecutor ex({.max_workers = 1, .mp_context = mproc::get_context("mpi")});
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 100; ++i) futures.push_back(ex.submit(square, i));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(futures[static_cast<std::size_t>(i)].result(), i * i);
  ex.shutdown(true);
}

}  // namespace
