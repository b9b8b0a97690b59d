// forkserver: the server forks the child and reports its exit code on a status socket, since
// only the server (its real parent) can wait for it.
#include <signal.h>

#include "popen/popen.hpp"
#include "spawn/forkserver.hpp"
#include "spawn/spawn.hpp"

namespace mproc::detail {
namespace {

class PopenForkserver : public Popen {
 public:
  explicit PopenForkserver(ForkserverChild child) : status_(std::move(child.status)) {
    pid_ = child.pid;
    pidfd_.reset(pidfd_open(pid_));  // fails only when the child is already gone
  }

  std::optional<int> poll(bool block) override {
    if (returncode_) return returncode_;
    if (!block && !os::wait_readable(status_.get(), 0)) return std::nullopt;
    std::int32_t rc = 0;
    // EOF without a code: the fork server died while the child ran (Python reports 255 too).
    if (os::read_full(status_.get(), &rc, sizeof rc, "read an exit code from the fork server") != sizeof rc) rc = 255;
    return returncode_ = rc;
  }

  int sentinel() const override { return status_.get(); }

 private:
  os::Fd status_;
};

}  // namespace

std::unique_ptr<Popen> launch_forkserver(ProcessImpl& p) {
  std::vector<int> fds;
  std::string msg = make_startup_message(p, Method::forkserver, fds);
  os::Fd memfd = os::memfd_with("mproc-start", msg.data(), msg.size());
  return std::make_unique<PopenForkserver>(forkserver_launch(memfd.get(), fds, p.daemon));
}

}  // namespace mproc::detail
