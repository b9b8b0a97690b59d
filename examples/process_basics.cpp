// The README's example: a Process with arguments, a Pipe for the result, under two contexts.
#include <mproc/mproc.hpp>

#include <cstdio>
#include <vector>

void work(mproc::Connection out, int n, std::vector<double> data) {
  double sum = 0;
  for (double x : data) sum += x * n;
  out.send(sum);  // typed, framed, checked on arrival
}

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // first line: the C++ form of `if __name__ == "__main__":`
  auto [parent, child] = mproc::Pipe();

  mproc::Process p(work, child, 3, std::vector<double>{1, 2, 3});  // forkserver by default
  p.start();
  double sum = parent.recv<double>();
  p.join();
  std::printf("%s (%s): sum %g, exit code %d\n", p.name().c_str(), mproc::get_start_method().c_str(), sum,
              p.exitcode().value_or(-1));

  auto q = mproc::get_context("spawn").Process(work, child, 2, std::vector<double>{4});
  q.start();
  std::printf("%s (spawn): sum %g\n", q.name().c_str(), parent.recv<double>());
  q.join();
  return 0;
}
