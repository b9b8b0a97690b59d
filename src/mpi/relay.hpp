// A worker rank's side of a pool: it runs rank 0's chunks in a local pool of one forked worker,
// so that a task that crashes kills that process, not the rank (OpenMPI ends the whole job when
// a rank dies). Not API.
#pragma once

#include "mpi/protocol.hpp"
#include "mpi/runtime.hpp"

namespace mproc::detail::mpi {

/// Serves the pool that `attach` (a kAttach message) starts, until rank `leader` detaches it.
/// False when the program ends instead (kExit).
bool serve_pool(MPI_Comm comm, int leader, Message attach);

/// Part of mproc::init: a worker rank serves here and exits; rank 0 (or a program started
/// without mpirun) returns.
void init_ranks(int argc, char** argv);

}  // namespace mproc::detail::mpi
