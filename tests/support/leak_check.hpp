// Every test must leave no child process, descriptor or /dev/shm entry behind, and must not hang.
#pragma once

#include <set>
#include <string>

namespace mproc_test {

/// Installs a GoogleTest listener that snapshots descriptors, children and /dev/shm entries
/// before each test and fails the test when anything new is left after it, plus a watchdog
/// that aborts a test running longer than 60 s (times MPROC_TEST_TIMEOUT_MULTIPLIER).
void install_leak_check();

std::set<std::string> open_fds();
std::set<int> child_pids();
std::set<std::string> shm_entries();

/// Starts and joins one forkserver child, so that the fork server (started once, lazily, and
/// kept for the program's life) is part of the baseline rather than a leak of the first test.
void warm_up_forkserver();

}  // namespace mproc_test
