// spawn: a fresh copy of this binary reads its work from a sealed memfd.
#include "popen/popen.hpp"
#include "spawn/spawn.hpp"

namespace mproc::detail {

std::unique_ptr<Popen> launch_spawn(ProcessImpl& p) {
  std::vector<int> fds;
  std::string msg = make_startup_message(p, Method::spawn, fds);
  os::Fd memfd = os::memfd_with("mproc-start", msg.data(), msg.size());
  return std::make_unique<PopenChild>(spawn_self(kChildMarker, memfd.get(), fds));
}

}  // namespace mproc::detail
