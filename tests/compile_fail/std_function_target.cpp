// Must not compile: std::function may hold captures; it cannot cross a process boundary.
#include <functional>
#include <mproc/mproc.hpp>

int main() {
  std::function<void()> f = [] {};
  mproc::Process p(f);
  p.start();
}
