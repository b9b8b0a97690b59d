// Runs a whole program (a helper of tests/helpers, or mpirun) and collects what it printed.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace mproc_test {

struct ProgramResult {
  int exit_code = -1;  // -1: killed by a signal, or not started
  std::string out;
};

/// Runs cmd through /bin/sh (popen) and waits for it: its standard output (add "2>&1" to the
/// command for standard error too) and its exit code.
inline ProgramResult run_program(const std::string& cmd) {
  ProgramResult r;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return r;
  char buf[512];
  while (std::fgets(buf, sizeof buf, f)) r.out += buf;
  int status = ::pclose(f);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace mproc_test
