// The fork server (CPython's forkserver.py): a clean process spawned once, lazily, that forks
// children on request. Only processes that prove they hold the program's key may ask it.
#pragma once

#include <string>
#include <vector>

#include "os/fd.hpp"

namespace mproc::detail {

struct ForkserverEndpoint {
  std::string address;  // abstract Unix socket name, without the leading NUL; empty: none yet
  int pid = 0;
};

/// The server this process would ask (possibly none yet).
ForkserverEndpoint forkserver_endpoint();
/// Descriptors this process keeps for the server (for leak checks: they live as long as it does).
std::vector<int> forkserver_client_fds();
/// A child reuses its parent's server rather than starting its own.
void adopt_forkserver_endpoint(ForkserverEndpoint ep);
/// In a fork child: drop the parent's connection and ownership of the server.
void forkserver_reset_in_child() noexcept;

struct ForkserverChild {
  int pid;
  os::Fd status;  // the server writes the exit code here when the child ends
};

/// Asks the server (started on first use) to fork a child that runs the start-up message in
/// message_fd with fds passed. Throws ProcessError when the server died.
ForkserverChild forkserver_launch(int message_fd, const std::vector<int>& fds, bool daemon);
/// Stops the server this process started (Python's forkserver._stop): waits for it to exit.
void forkserver_stop() noexcept;

/// The server's loop; runs in the process spawned with kForkserverMarker.
[[noreturn]] void forkserver_main(const std::string& framed_message, int listener, int alive);

}  // namespace mproc::detail
