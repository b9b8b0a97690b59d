// Which engine runs a pool's workers, and the seam through which the MPI backend (a separate
// library, src/mpi/) plugs in when a program links it. Not API.
#pragma once

#include <memory>
#include <string>

#include "mproc/detail/pool_core.hpp"

namespace mproc::detail {

/// "exited with code 3", "killed by signal 9": how a worker ended, for error messages.
std::string describe_exit(int code);

/// Workers that are processes on this machine, one connection each.
std::unique_ptr<PoolEngine> make_local_engine(PoolConfig config);

/// What libmproc_mpi registers (mproc/mpi.hpp pulls it into a program): the part of
/// mproc::init that gives MPI ranks their roles, and the engine of the "mpi" context.
struct MpiBackend {
  /// Called at the end of mproc::init. Returns on rank 0 (or without mpirun); a worker rank
  /// serves pools here and exits.
  void (*init)(int argc, char** argv);
  std::unique_ptr<PoolEngine> (*make_engine)(PoolConfig config);
};
void set_mpi_backend(const MpiBackend* backend) noexcept;
/// Null when the program did not link the MPI backend.
const MpiBackend* mpi_backend() noexcept;

}  // namespace mproc::detail
