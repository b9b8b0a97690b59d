// Must not compile: a capturing lambda cannot be rebuilt in a spawned child.
#include <mproc/mproc.hpp>

int main() {
  int state = 42;
  mproc::Process p([state] { (void)state; });
  p.start();
}
