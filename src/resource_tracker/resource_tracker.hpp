// The resource tracker (CPython's resource_tracker.py): one process per program that remembers
// the shared-memory segments and named semaphores the program created and has not unlinked, and
// unlinks them when the program is gone, however it ended (SIGKILL included).
//
// One per program. The program is its main process (the "root", where mproc::init ran as a
// program, or which never was a child of another mproc process) and every process started from
// it. The tracker is started lazily, by whichever process of the program registers first, and
// listens on an abstract Unix socket whose name is derived from the program's key and the root's
// pid: every process of the program can compute or inherit it (fork: in memory; spawn and
// forkserver: in the start-up message), no other program can guess it, and a second process
// racing to start a tracker finds the name taken and connects to the winner instead. Clients
// prove they hold the program's key (and the tracker proves it too) before anything is accepted.
//
// The tracker ends, after cleaning up, when the root has exited and no process that talked to
// it is still connected. Nobody waits for it: a program's exit never blocks on the tracker.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "os/shm.hpp"

namespace mproc::detail {

/// Python's rtype: what a name denotes and how it is cleaned (shm_unlink or sem_unlink).
enum class ResourceKind : std::uint32_t { shared_memory = 1, semaphore = 2 };
const char* resource_kind_name(ResourceKind kind) noexcept;

struct ResourceTrackerEndpoint {
  std::string address;         // abstract socket name, without the leading NUL; empty: not computed yet
  std::int32_t pid = 0;        // the tracker, once this process has talked to it (0: unknown)
  std::int32_t root_pid = 0;   // the program's main process
  std::uint64_t root_start = 0;  // its start time, so that a recycled pid is not taken for it
  template <class A>
  void serialize(A& a) {
    a(address, pid, root_pid, root_start);
  }
};

/// Where this process's tracker is (or will be, once someone starts it). Never starts it.
ResourceTrackerEndpoint resource_tracker_endpoint();
/// A spawn or forkserver child joins its parent's program: same root, same tracker.
void adopt_resource_tracker_endpoint(ResourceTrackerEndpoint ep);
/// In a fork child: drop the copy of the parent's connection (a fork child must not write into
/// a connection another process uses) and keep the endpoint.
void resource_tracker_reset_in_child() noexcept;
/// Descriptors this process keeps for the tracker (for leak checks: they live as long as it does).
std::vector<int> resource_tracker_client_fds();

/// Python's ensure_running(): connects, starting the tracker when none runs. Throws mproc::Error
/// when it cannot be started (mproc::init was not called), AuthenticationError when the process
/// at the address does not hold the program's key.
void resource_tracker_ensure_running();
/// Python's register(): from now on the tracker unlinks name at the program's end unless it is
/// unregistered first, and only while the name still refers to the file identified by id.
void resource_tracker_register(ResourceKind kind, const std::string& name, os::FileIdentity id);
/// Python's unregister(). With id, only a registration of that file is forgotten (a process of
/// the program may have created the name again meanwhile, and its registration may arrive
/// first). Never starts a tracker; does nothing when none is reachable (then none holds the
/// name). Never throws.
void resource_tracker_unregister(ResourceKind kind, const std::string& name, os::FileIdentity id = {}) noexcept;

/// Unlinks name (of the given kind) if it still refers to the file id. Returns 0, ENOENT when the
/// name is gone, ESTALE when it now refers to another file (left alone), or the errno of the unlink.
int unlink_if_same(ResourceKind kind, const std::string& name, os::FileIdentity id) noexcept;

}  // namespace mproc::detail
