// Test binaries call mproc::init before GoogleTest: spawn and forkserver children re-enter this
// very binary and must be diverted to their work before any test runs.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>

#include <cstring>

#include "support/leak_check.hpp"

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  ::testing::InitGoogleTest(&argc, argv);
  bool listing = false;
  for (int i = 1; i < argc; ++i) listing = listing || std::strcmp(argv[i], "--gtest_list_tests") == 0;
  if (!listing) mproc_test::install_leak_check();
  return RUN_ALL_TESTS();
}
