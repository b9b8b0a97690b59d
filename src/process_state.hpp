// What a process knows about itself: set by init() in the main process, by the start-up message
// (or in memory, under fork) in a child.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "mproc/context.hpp"
#include "mproc/detail/callable.hpp"
#include "os/fd.hpp"

namespace mproc::detail {

enum class Method : int { fork = 0, spawn = 1, forkserver = 2, mpi = 3 };
const char* method_name(Method m);
/// The "mpi" context asked for in a program that did not link the MPI backend.
[[noreturn]] void throw_mpi_unavailable();
/// The program's start method as set_start_method left it (-1: not chosen yet), and, in a spawn or
/// forkserver child, the parent's adopted (as Python's spawn.prepare does).
int start_method_setting();
void adopt_start_method_setting(int m);

class Popen;

struct ProcessImpl {
  Task task;
  std::string name;
  std::vector<int> identity;
  bool daemon = false;
  std::optional<Context> context;
  int creator_pid = 0;
  std::unique_ptr<Popen> popen;
  bool closed = false;
  std::mutex mu;  // poll() may race between the owner and the exit handler
  ~ProcessImpl();
};

struct ProcessState {
  bool initialized = false;
  std::string argv0 = "mproc";
  os::Fd exe;  // the running binary, opened at init: spawn execs this, never a path
  std::string name = "MainProcess";
  std::vector<int> identity;
  int child_counter = 0;
  bool daemon = false;
  int parent_pid = 0;  // 0 in the main process
  int started_with = -1;  // the Method that started this process; -1 in the main process
  std::string parent_name;
  // Children started here and not yet joined (Python's process._children).
  std::mutex children_mu;
  std::vector<std::shared_ptr<ProcessImpl>> children;
  // The parent's state in a fork child: never destroyed, but kept reachable, so that a leak
  // checker does not report it when the child calls exit().
  ProcessState* parents = nullptr;
};

ProcessState& state();
/// In a fresh child: forget the parent's children and per-process caches (they are the
/// parent's, and a lock held by another parent thread at fork would never be released here).
void reset_state_in_child(const std::string& name, std::vector<int> identity, bool daemon, int parent_pid,
                          std::string parent_name, Method started_with);

/// Python's _exit_function: terminate daemon children, then join every child.
void exit_function() noexcept;

}  // namespace mproc::detail
