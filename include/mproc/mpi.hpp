// mproc/mpi.hpp — the "mpi" context: the workers of a Pool or ProcessPoolExecutor are MPI ranks,
// on this machine or many (Python: mpi4py.futures). Link the CMake target mproc::mpi.
//
//     int main(int argc, char** argv) {
//       mproc::init(argc, argv);  // under mpirun, ranks 1..N-1 serve as workers here
//       mproc::Pool pool({.context = mproc::get_context("mpi")});
//       auto squares = pool.map(square, std::vector<int>{1, 2, 3});
//     }
//
// Two ways to start, as mpi4py.futures:
// - `mpirun -n N ./app`: rank 0 runs main; ranks 1..N-1 never return from mproc::init and run
//   the tasks of rank 0's pools, one pool at a time each. A pool takes every free worker rank,
//   or .processes of them.
// - `./app` alone (or `mpirun -n 1`): each pool spawns .processes new ranks of this program
//   (MPI_Comm_spawn; default cpu_count()), which end with the pool.
// Every rank must run the same binary (checked when a pool starts). A task that crashes kills a
// process its rank forked for it, not the rank: the task fails with WorkerCrashed naming the
// rank and host, and the rank goes on. If a rank itself dies, OpenMPI ends the whole job.
// README, "Running on a cluster", has the command lines.
#pragma once

#include "mproc/context.hpp"

namespace mproc::detail {
/// Registers the MPI backend with mproc (defined in libmproc_mpi: referencing it is what links
/// the backend into a program).
bool link_mpi_backend() noexcept;
inline const bool mpi_backend_linked = link_mpi_backend();
}  // namespace mproc::detail
