// Child start-up (CPython's spawn.py): the message a spawn or forkserver child reads first, the
// bootstrap every child runs, and re-executing this binary.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "process_state.hpp"
#include "resource_tracker/resource_tracker.hpp"

namespace mproc::detail {

/// Markers on a child's command line: argv = {argv0, marker, "3"}. The message is on fd 3, the
/// executable on fd 4, passed descriptors from fd 5 on.
constexpr const char* kChildMarker = "--mproc-child";
constexpr const char* kForkserverMarker = "--mproc-forkserver";
constexpr int kMessageFd = 3;
constexpr int kExeFd = 4;
constexpr int kFirstPassedFd = 5;

struct StartupMessage {
  std::string authkey;
  std::string name;
  std::vector<int> identity;
  bool daemon = false;
  std::int32_t parent_pid = 0;
  std::string parent_name;
  std::int32_t start_method = 0;     // how this child was started
  std::int32_t method_setting = -1;  // the parent's set_start_method choice, adopted by the child
  std::string forkserver_address;  // so that nested children reuse the program's fork server
  std::int32_t forkserver_pid = 0;
  ResourceTrackerEndpoint resource_tracker;  // so that children register with the program's tracker
  std::uint32_t nfds = 0;
  std::string inherited;  // save_inherited output: the mproc::inherited values, as set in the parent
  std::string task;       // Task::save output
  template <class A>
  void serialize(A& a) {
    a(authkey, name, identity, daemon, parent_pid, parent_name, start_method, method_setting, forkserver_address, forkserver_pid,
      resource_tracker, nfds, inherited, task);
  }
};

/// The framed start-up message for p; descriptors its arguments carry are appended to fds.
std::string make_startup_message(ProcessImpl& p, Method m, std::vector<int>& fds);

/// Runs a child from its start-up message; fds are the passed descriptors, in slot order.
/// real_parent is the pid that must stay alive (the fork server for its children); 0 means the
/// parent named in the message. With first_fd >= 0 the descriptors are the message's count of
/// consecutive ones from first_fd (spawn), otherwise fds (fork server).
[[noreturn]] void child_main(const std::string& framed_message, std::vector<int> fds, int real_parent, int first_fd);

/// Python's BaseProcess._bootstrap: run, report an escaped exception, join own children, exit.
[[noreturn]] void bootstrap(const std::function<void()>& run);

/// Kills this child when its parent dies (daemon: SIGKILL, others SIGTERM); exits at once when
/// the parent is already gone.
void die_with_parent(bool daemon, int expected_parent);

/// posix_spawn of this binary with the marker; fds land at kFirstPassedFd onwards.
int spawn_self(const char* marker, int message_fd, const std::vector<int>& fds);

}  // namespace mproc::detail
