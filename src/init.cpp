// mproc::init: the __main__ guard. Decides from argv whether this process is the program, a
// spawned child or the fork server.
#include "mproc/init.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "pool/engine.hpp"
#include "process_state.hpp"
#include "spawn/forkserver.hpp"
#include "spawn/spawn.hpp"
#include "util/auth.hpp"

namespace mproc {
namespace {

[[noreturn]] void run_marked(const char* marker, int message_fd) {
  auto& st = detail::state();
  st.exe.reset(detail::kExeFd);
  ::fcntl(detail::kExeFd, F_SETFD, FD_CLOEXEC);
  st.initialized = true;
  std::string framed;
  try {
    framed = os::read_whole(message_fd, std::size_t{1} << 30);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mproc: %s %d cannot read its start-up message: %s\n", marker, ::getpid(), e.what());
    ::_exit(255);
  }
  ::close(message_fd);
  if (std::strcmp(marker, detail::kForkserverMarker) == 0)
    detail::forkserver_main(framed, detail::kFirstPassedFd, detail::kFirstPassedFd + 1);
  detail::child_main(framed, {}, 0, detail::kFirstPassedFd);
}

}  // namespace

void init(int argc, char** argv) {
  auto& st = detail::state();
  if (st.initialized) return;
  if (argc >= 1 && argv && argv[0]) st.argv0 = argv[0];
  if (argc == 3 && (std::strcmp(argv[1], detail::kChildMarker) == 0 || std::strcmp(argv[1], detail::kForkserverMarker) == 0)) {
    if (std::strcmp(argv[2], "3") != 0) {
      std::fprintf(stderr, "mproc: malformed child command line\n");
      ::_exit(255);
    }
    run_marked(argv[1], detail::kMessageFd);
  }
  st.exe.reset(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!st.exe) os::throw_errno("mproc::init: cannot open /proc/self/exe");
  detail::set_authkey(detail::random_bytes(32));
  detail::prime_code_identity();
  st.initialized = true;
  std::atexit(detail::exit_function);
  // Under mpirun, with the MPI backend linked: worker ranks serve pools there and never return.
  if (const auto* mpi = detail::mpi_backend()) mpi->init(argc, argv);
}

bool initialized() noexcept { return detail::state().initialized; }

}  // namespace mproc
