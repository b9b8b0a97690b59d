// The smallest program that uses mproc: it only needs the umbrella header and mproc::init.
#include <mproc/mproc.hpp>

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  return 0;
}
