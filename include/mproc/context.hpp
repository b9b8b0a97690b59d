// mproc/context.hpp — Python's multiprocessing.context: start methods and contexts.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace mproc {

class Process;
struct ProcessOptions;

/// A start method bound to factories (Python: multiprocessing.get_context(...)).
///
///     auto ctx = mproc::get_context("spawn");
///     auto p = ctx.Process(work, 42);
class Context {
 public:
  /// Throws std::invalid_argument naming the valid methods for an unknown name.
  explicit Context(std::string_view method);

  /// "fork", "spawn", "forkserver" or "mpi" (workers of a Pool or executor on MPI ranks:
  /// include <mproc/mpi.hpp> and link mproc::mpi; see README, "Running on a cluster").
  std::string get_start_method() const;

  /// A Process that starts with this context's method.
  template <class F, class... Args>
  mproc::Process Process(F&& target, Args&&... args) const;
  template <class F, class... Args>
  mproc::Process Process(ProcessOptions options, F&& target, Args&&... args) const;

  bool operator==(const Context&) const = default;
  /// Internal: the method as a number (0 fork, 1 spawn, 2 forkserver, 3 mpi).
  int method_id() const noexcept { return method_; }

 private:
  int method_;
};

/// Python: get_context(method). An empty name gives the default context.
Context get_context(std::string_view method = {});
/// Python: set_start_method(method, force). A second call throws mproc::Error unless force.
void set_start_method(std::string_view method, bool force = false);
/// Python: get_start_method(). The default is "forkserver", as on Linux since Python 3.14.
std::string get_start_method();
/// Python: get_all_start_methods(). The default comes first. "mpi" is not among them: it starts
/// no Process, only a pool's workers.
std::vector<std::string> get_all_start_methods();
/// Python: cpu_count(). Processors online.
int cpu_count();

}  // namespace mproc

#include "mproc/process.hpp"  // Context::Process needs the complete Process
