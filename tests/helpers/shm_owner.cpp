// A program that creates shared-memory segments and named semaphores and then ends in a chosen
// way, so that tests can watch its resource tracker clean up after it.
//
//   mproc_test_shm_owner STEP... END
//
// Steps, run in order, each printing one line on stdout:
//   create NAME              a tracked segment of 4096 bytes            "created NAME"
//   create-untracked NAME    the same with track = false               "created NAME"
//   create-unlink NAME       a tracked segment, unlinked right away    "unlinked NAME"
//   attach NAME              attaches to an existing segment           "attached NAME"
//   child METHOD NAME        a child (fork, spawn, forkserver) creates a tracked segment and
//                            exits without unlinking it                "child created NAME, still there: yes|no"
//   race METHOD N NAME       N children started at once each create NAME_<i> (the first
//                            registrations of the program: they race to start the tracker)
//                                                                     "trackers K" (distinct pids)
//   semaphore NAME           a named semaphore, registered             "semaphore NAME"
//   tracker                  starts the tracker if needed              "tracker PID"
//   kill-tracker             SIGKILLs the tracker, waits for its end   "killed PID"
// END: "wait" prints "ready" and sleeps until killed; "exit" returns from main.
// Errors print "error: <what>" and exit with 1.
#include <fcntl.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mproc/mproc.hpp>
#include <set>
#include <string>
#include <vector>

#include "resource_tracker/resource_tracker.hpp"

namespace {

void create_in_child(std::string name) {
  mproc::SharedMemory shm({.name = name, .create = true, .size = 4096});
  shm.buf()[0] = std::byte{42};
}

void create_and_tell(mproc::Connection c, std::string name) {
  c.recv<int>();  // the start gun: all children are up
  mproc::SharedMemory shm({.name = name, .create = true, .size = 4096});
  c.send(mproc::detail::resource_tracker_endpoint().pid);
}

bool exists(const std::string& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name).c_str(), &st) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    for (int i = 1; i < argc; ++i) {
      std::string step = argv[i];
      auto arg = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(step + " needs an argument");
        return argv[++i];
      };
      if (step == "create" || step == "create-untracked") {
        std::string name = arg();
        mproc::SharedMemory shm({.name = name, .create = true, .size = 4096, .track = step == "create"});
        std::printf("created %s\n", name.c_str());
      } else if (step == "create-unlink") {
        std::string name = arg();
        mproc::SharedMemory shm({.name = name, .create = true, .size = 4096});
        shm.unlink();
        std::printf("unlinked %s\n", name.c_str());
      } else if (step == "attach") {
        std::string name = arg();
        mproc::SharedMemory shm({.name = name});
        std::printf("attached %s\n", name.c_str());
      } else if (step == "child") {
        std::string method = arg();
        std::string name = arg();
        auto p = mproc::get_context(method).Process(create_in_child, name);
        p.start();
        p.join();
        if (p.exitcode() != 0) throw std::runtime_error("the child failed");
        std::printf("child created %s, still there: %s\n", name.c_str(), exists(name) ? "yes" : "no");
      } else if (step == "race") {
        std::string method = arg();
        int n = std::stoi(arg());
        std::string name = arg();
        std::vector<mproc::Process> kids;
        std::vector<mproc::Connection> conns;
        for (int k = 0; k < n; ++k) {
          auto [mine, theirs] = mproc::Pipe();
          kids.push_back(mproc::get_context(method).Process(create_and_tell, theirs, name + "_" + std::to_string(k)));
          kids.back().start();
          conns.push_back(mine);
        }
        for (auto& c : conns) c.send(1);
        std::set<int> trackers;
        for (auto& c : conns) trackers.insert(c.recv<int>());
        for (auto& p : kids) p.join();
        std::printf("trackers %zu\n", trackers.size());
      } else if (step == "semaphore") {
        std::string name = arg();
        std::string full = "/" + name;
        sem_t* s = ::sem_open(full.c_str(), O_CREAT | O_EXCL, 0600, 1);
        if (s == SEM_FAILED) throw std::runtime_error(std::string("sem_open: ") + std::strerror(errno));
        auto id = mproc::os::identity_of_path(mproc::os::semaphore_path(full));
        mproc::detail::resource_tracker_register(mproc::detail::ResourceKind::semaphore, full, id);
        std::printf("semaphore %s\n", name.c_str());
      } else if (step == "tracker") {
        mproc::detail::resource_tracker_ensure_running();
        std::printf("tracker %d\n", mproc::detail::resource_tracker_endpoint().pid);
      } else if (step == "kill-tracker") {
        mproc::detail::resource_tracker_ensure_running();
        int pid = mproc::detail::resource_tracker_endpoint().pid;
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        std::printf("killed %d\n", pid);
      } else if (step == "wait") {
        std::printf("ready\n");
        for (;;) ::pause();
      } else if (step == "exit") {
        return 0;
      } else {
        throw std::runtime_error("unknown step " + step);
      }
    }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  return 0;
}
