// Must not compile: a raw pointer's value means nothing in another process.
#include <mproc/mproc.hpp>

void use(int*) {}

int main() {
  int x = 1;
  mproc::Process p(use, &x);
  p.start();
}
