// A program that forgets mproc::init. Starting a process under spawn or forkserver must give a
// clear mproc::Error, not a fork bomb or a hang; fork needs no init and works.
//
//   mproc_test_no_init METHOD    prints "error: <what>" or "started, exit code N"
#include <mproc/mproc.hpp>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  try {
    auto p = mproc::get_context(argv[1]).Process([] {});
    p.start();
    p.join();
    std::printf("started, exit code %d\n", p.exitcode().value_or(-999));
  } catch (const mproc::Error& e) {
    std::printf("error: %s\n", e.what());
  }
  return 0;
}
