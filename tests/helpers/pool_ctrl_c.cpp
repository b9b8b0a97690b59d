// A program in the middle of a Pool.map when Ctrl-C arrives. The test runs it in its own
// process group and sends SIGINT to the whole group, as a terminal does.
//
//   mproc_test_pool_ctrl_c METHOD    prints "workers <pid> <pid>" once the map is running, then
//                                    waits for the map (it takes minutes: only Ctrl-C ends it)
#include <mproc/mproc.hpp>
#include <unistd.h>

#include <cstdio>
#include <vector>

namespace {
int slow(int x) {
  ::sleep(300);
  return x;
}
}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  if (argc != 2) return 2;
  mproc::Pool pool({.processes = 2, .context = mproc::get_context(argv[1])});
  auto result = pool.map_async(slow, std::vector<int>{1, 2, 3, 4}, 1);
  std::printf("workers");
  for (int pid : pool.worker_pids()) std::printf(" %d", pid);
  std::printf("\n");
  std::fflush(stdout);
  result.get();
  std::printf("the map finished: Ctrl-C did not stop the program\n");
  return 0;
}
