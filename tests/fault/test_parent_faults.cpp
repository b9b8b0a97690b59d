// The parent's own system calls made to fail: descriptors exhausted (RLIMIT_NOFILE), process
// slots exhausted (RLIMIT_NPROC, as an unprivileged user), and fork/clone/posix_spawn refused by
// a seccomp filter. Each start fails with an OSError naming the errno, nothing hangs, nothing is
// left behind (the leak check), and the library works again once the limit is lifted.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <mproc/mproc.hpp>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "spawn/forkserver.hpp"
#include "support/leak_check.hpp"

namespace {

using namespace std::string_literals;

int square(int x) { return x * x; }
int exit_worker(int) { ::_exit(3); }
void do_nothing() {}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Leaves exactly `spare` descriptors free: the soft RLIMIT_NOFILE is lowered a little above the
// descriptors in use and every hole below it is filled with /dev/null. The destructor closes the
// fillers and restores the limit ("lifts" it).
class DescriptorsExhausted {
 public:
  explicit DescriptorsExhausted(int spare = 0) {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    int top = 0;
    for (const auto& fd : mproc_test::open_fds()) top = std::max(top, std::stoi(fd));
    rlimit lowered = saved_;
    lowered.rlim_cur = static_cast<rlim_t>(top + 1 + 16);
    if (::setrlimit(RLIMIT_NOFILE, &lowered) != 0) throw std::runtime_error("setrlimit");
    for (;;) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) break;
      fillers_.push_back(fd);
    }
    for (int i = 0; i < spare && !fillers_.empty(); ++i) {
      ::close(fillers_.back());
      fillers_.pop_back();
    }
  }
  ~DescriptorsExhausted() {
    for (int fd : fillers_) ::close(fd);
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  DescriptorsExhausted(const DescriptorsExhausted&) = delete;
  DescriptorsExhausted& operator=(const DescriptorsExhausted&) = delete;

 private:
  rlimit saved_{};
  std::vector<int> fillers_;
};

// UBSan's vptr check tests memory by writing it into a pipe (sanitizer_common's
// IsAccessibleMemoryRange): with no descriptor left, it reports each object whose type it has not
// checked before as having an "invalid vptr". Its handlers are linked in when the check is on.
extern "C" void __ubsan_handle_dynamic_type_cache_miss(void*, void*, void*) __attribute__((weak));
extern "C" void __ubsan_handle_dynamic_type_cache_miss_abort(void*, void*, void*) __attribute__((weak));
bool ubsan_checks_vptrs() {
  return __ubsan_handle_dynamic_type_cache_miss != nullptr || __ubsan_handle_dynamic_type_cache_miss_abort != nullptr;
}
#define SKIP_IF_UBSAN_NEEDS_DESCRIPTORS()                                                                      \
  if (ubsan_checks_vptrs())                                                                                    \
  GTEST_SKIP() << "UBSan's vptr check needs a pipe to test memory, so it reports false errors when no "        \
                  "descriptor is left"

// The OSError that call throws (an empty what() and code when it throws nothing, which fails
// the caller's expectations).
template <class F>
mproc::OSError os_error_of(F call) {
  try {
    call();
  } catch (const mproc::OSError& e) {
    return e;
  }
  return mproc::OSError("", {});
}

class ParentFaults : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    // The fork server and the resource tracker start once per program; started here, they are
    // part of the leak check's baseline rather than something a failed start left behind.
    mproc_test::warm_up_forkserver();
  }
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

// ---- descriptors exhausted in the parent ----------------------------------------------------

TEST_P(ParentFaults, StartingAProcessWithoutDescriptorsFailsWithEMFILEAndLeavesNoChild) {
  SKIP_IF_UBSAN_NEEDS_DESCRIPTORS();
  {
    DescriptorsExhausted exhausted;
    auto p = ctx().Process(do_nothing);
    auto e = os_error_of([&] { p.start(); });
    EXPECT_EQ(e.code(), std::errc::too_many_files_open) << e.what();
    EXPECT_TRUE(contains(e.what(), "EMFILE")) << e.what();
    EXPECT_TRUE(contains(e.what(), "cannot start process")) << e.what();
    EXPECT_FALSE(p.pid().has_value());
  }
  auto p = ctx().Process(do_nothing);
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

// Every descriptor count from none to enough: each start either works or fails with EMFILE, and
// a start that failed half-way (under fork: the child forked, no pidfd for it) leaves no child.
TEST_P(ParentFaults, StartingAProcessWithFewDescriptorsWorksOrFailsWithEMFILEAtEveryCount) {
  SKIP_IF_UBSAN_NEEDS_DESCRIPTORS();
  int started = 0, failed = 0;
  for (int spare = 0; spare <= 12; ++spare) {
    DescriptorsExhausted exhausted(spare);
    auto p = ctx().Process(do_nothing);
    try {
      p.start();
      p.join();
      EXPECT_EQ(p.exitcode(), 0) << spare << " spare descriptors";
      ++started;
    } catch (const mproc::OSError& e) {
      EXPECT_EQ(e.code(), std::errc::too_many_files_open) << spare << " spare: " << e.what();
      ++failed;
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(started, 0);
}

TEST_P(ParentFaults, CreatingAPoolWithoutDescriptorsFailsWithEMFILEThenWorksOnceLifted) {
  SKIP_IF_UBSAN_NEEDS_DESCRIPTORS();
  {
    DescriptorsExhausted exhausted;
    auto e = os_error_of([&] { mproc::Pool pool({.processes = 2, .context = ctx()}); });
    EXPECT_EQ(e.code(), std::errc::too_many_files_open) << e.what();
    EXPECT_TRUE(contains(e.what(), "EMFILE")) << e.what();
  }
  mproc::Pool pool({.processes = 2, .context = ctx()});
  EXPECT_EQ(pool.map(square, std::vector<int>{1, 2, 3, 4}), (std::vector<int>{1, 4, 9, 16}));
}

// A pool that runs out of descriptors while starting its workers (some started, one not) stops
// the ones it started: either it works, or it fails with EMFILE and leaves no worker.
TEST_P(ParentFaults, APoolShortOfDescriptorsForSomeWorkersWorksOrFailsWithEMFILEAndLeavesNoWorker) {
  SKIP_IF_UBSAN_NEEDS_DESCRIPTORS();
  int created = 0, failed = 0;
  for (int spare = 0; spare <= 24; ++spare) {
    DescriptorsExhausted exhausted(spare);
    try {
      mproc::Pool pool({.processes = 3, .context = ctx()});
      ++created;
    } catch (const mproc::OSError& e) {
      EXPECT_EQ(e.code(), std::errc::too_many_files_open) << spare << " spare: " << e.what();
      ++failed;
    }
  }
  EXPECT_GT(failed, 0);
  EXPECT_GT(created, 0);
  mproc::Pool pool({.processes = 3, .context = ctx()});
  EXPECT_EQ(pool.map(square, std::vector<int>{5, 6}), (std::vector<int>{25, 36}));
}

TEST(ParentFaultsAnyMethod, QueueSharedMemoryAndPipeWithoutDescriptorsFailWithEMFILE) {
  SKIP_IF_UBSAN_NEEDS_DESCRIPTORS();
  std::vector<std::string> errors;
  {
    DescriptorsExhausted exhausted;
    for (auto* make : {+[] { mproc::Queue<int> q; }, +[] { mproc::Pipe(); },
                       +[] { mproc::SharedMemory shm({.create = true, .size = 4096}); }}) {
      auto e = os_error_of(make);
      EXPECT_EQ(e.code(), std::errc::too_many_files_open) << e.what();
      errors.push_back(e.what());
    }
  }
  for (const auto& what : errors) EXPECT_TRUE(contains(what, "EMFILE")) << what;
  // Lifted: each works.
  mproc::Queue<int> q;
  q.put(7);
  EXPECT_EQ(q.get(), 7);
  auto [a, b] = mproc::Pipe();
  a.send(1);
  EXPECT_EQ(b.recv<int>(), 1);
  mproc::SharedMemory shm({.create = true, .size = 4096});
  shm.unlink();
}

// ---- helpers run in a child of the test: a limit or filter that cannot be undone there -------

// What the helper saw, one line per check: "<check>: <outcome>".
using Report = std::vector<std::string>;

std::string outcome_of(const std::function<void()>& call) {
  try {
    call();
    return "ok";
  } catch (const mproc::OSError& e) {
    return "OSError " + std::to_string(e.code().value()) + ": " + e.what();
  } catch (const mproc::WorkerCrashed& e) {
    return "WorkerCrashed: "s + e.what();
  } catch (const std::exception& e) {
    return "other: "s + e.what();
  }
}

void start_and_join(const mproc::Context& ctx) {
  auto p = ctx.Process(do_nothing);
  p.start();
  p.join();
  if (p.exitcode() != 0) throw std::runtime_error("exit code " + std::to_string(p.exitcode().value_or(-1)));
}

void pool_map(const mproc::Context& ctx) {
  mproc::Pool pool({.processes = 2, .context = ctx});
  if (pool.map(square, std::vector<int>{1, 2, 3}) != std::vector<int>{1, 4, 9}) throw std::runtime_error("wrong results");
}

// Runs as nobody (when root, which RLIMIT_NPROC does not bind) with RLIMIT_NPROC's soft limit at
// 0: no process of this user can be created. The fork server is this helper's own (started
// before the limit, then limited itself), as the program's one runs as root.
void nproc_helper(std::string method, mproc::Connection out) {
  Report r;
  if (::geteuid() == 0 && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0)) {
    out.send(Report{"setup: cannot become nobody: "s + std::strerror(errno)});
    return;
  }
  mproc::detail::adopt_forkserver_endpoint({});  // start a server owned by nobody
  auto ctx = mproc::get_context(method);
  r.push_back("before: " + outcome_of([&] { start_and_join(ctx); }));
  rlimit saved{};
  ::getrlimit(RLIMIT_NPROC, &saved);
  rlimit none = saved;
  none.rlim_cur = 0;
  int server = mproc::detail::forkserver_endpoint().pid;
  ::setrlimit(RLIMIT_NPROC, &none);
  if (server > 0) ::prlimit(server, RLIMIT_NPROC, &none, nullptr);
  r.push_back("process: " + outcome_of([&] { start_and_join(ctx); }));
  r.push_back("pool: " + outcome_of([&] { pool_map(ctx); }));
  ::setrlimit(RLIMIT_NPROC, &saved);
  if (server > 0) ::prlimit(server, RLIMIT_NPROC, &saved, nullptr);
  r.push_back("lifted: " + outcome_of([&] { pool_map(ctx); }));
  out.send(r);
}

// Refuses every new process, not new threads: clone without CLONE_THREAD, fork and vfork fail
// with EAGAIN; clone3 with ENOSYS, so that glibc falls back to clone (its flags are in a struct
// in memory, which a seccomp filter cannot read). TSYNC: the pool's thread is filtered too.
int refuse_new_processes() {
#if !defined(__x86_64__)
  return ENOSYS;  // the filter below knows x86-64's system call numbers only
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fork, 4, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_vfork, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 3),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[0])),  // the low half of flags
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAGAIN),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno;
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) return errno;
  return 0;
}

// A pool made before the filter, whose only worker then dies and cannot be replaced; then a new
// process and a new pool. Under forkserver the server started before the filter (not filtered
// itself) forks the replacement; once it is stopped, a new server cannot be started.
void seccomp_helper(std::string method, mproc::Connection out) {
  Report r;
  auto ctx = mproc::get_context(method);
  mproc::detail::adopt_forkserver_endpoint({});  // forkserver: this helper's own server
  {
    mproc::Pool pool({.processes = 1, .context = ctx});
    r.push_back("before: " + outcome_of([&] { (void)pool.apply(square, 2); }));
    if (int err = refuse_new_processes()) {
      out.send(Report{"setup: cannot install the seccomp filter: "s + std::strerror(err)});
      return;
    }
    r.push_back("worker dies: " + outcome_of([&] { (void)pool.apply(exit_worker, 0); }));
    r.push_back("replacement: " + outcome_of([&] {
                  if (pool.apply(square, 3) != 9) throw std::runtime_error("wrong result");
                }));
  }
  mproc::detail::forkserver_stop();  // forkserver: a new server must be started, under the filter
  r.push_back("process: " + outcome_of([&] { start_and_join(ctx); }));
  r.push_back("pool: " + outcome_of([&] { pool_map(ctx); }));
  out.send(r);
}

Report run_helper(void (*helper)(std::string, mproc::Connection), const std::string& method) {
  auto [mine, theirs] = mproc::Pipe();
  // A fork child of the test: its limits, identity and filter end with it.
  auto p = mproc::get_context("fork").Process(helper, method, theirs);
  p.start();
  theirs.close();
  Report r;
  try {
    r = mine.recv<Report>();
  } catch (const std::exception& e) {
    r.push_back("no report: "s + e.what());
  }
  p.join();
  r.push_back("helper exit code: " + std::to_string(p.exitcode().value_or(-1)));
  return r;
}

std::string joined(const Report& r) {
  std::string s;
  for (const auto& line : r) s += line + "\n";
  return s;
}

const std::string kEAGAIN = "OSError " + std::to_string(EAGAIN) + ": ";

TEST_P(ParentFaults, WithNoProcessSlotsLeftStartsFailWithEAGAINThenWorkOnceLifted) {
  Report r = run_helper(nproc_helper, GetParam());
  ASSERT_EQ(r.size(), 5u) << joined(r);
  EXPECT_EQ(r[0], "before: ok");
  EXPECT_TRUE(r[1].starts_with("process: " + kEAGAIN)) << r[1];
  EXPECT_TRUE(contains(r[1], "(EAGAIN)")) << r[1];
  EXPECT_TRUE(contains(r[1], "cannot start process")) << r[1];
  if (GetParam() == "forkserver") {
    EXPECT_TRUE(contains(r[1], "could not fork the child")) << r[1];
  }
  EXPECT_TRUE(r[2].starts_with("pool: " + kEAGAIN)) << r[2];
  EXPECT_TRUE(contains(r[2], "the pool cannot start a worker")) << r[2];
  EXPECT_EQ(r[3], "lifted: ok");
  EXPECT_EQ(r[4], "helper exit code: 0");
}

TEST_P(ParentFaults, WhenForkAndCloneAreRefusedStartsAndWorkerReplacementFailWithEAGAIN) {
  Report r = run_helper(seccomp_helper, GetParam());
  if (r.size() == 2 && r[0].starts_with("setup: cannot install")) GTEST_SKIP() << r[0];
  ASSERT_EQ(r.size(), 6u) << joined(r);
  EXPECT_EQ(r[0], "before: ok");
  EXPECT_TRUE(r[1].starts_with("worker dies: WorkerCrashed")) << r[1];
  if (GetParam() == "forkserver") {
    EXPECT_EQ(r[2], "replacement: ok");  // the fork server, not this process, forks it
  } else {
    EXPECT_TRUE(r[2].starts_with("replacement: " + kEAGAIN)) << r[2];
    EXPECT_TRUE(contains(r[2], "the pool cannot start a worker (0 of 1 running)")) << r[2];
    EXPECT_TRUE(contains(r[2], "(EAGAIN)")) << r[2];
  }
  EXPECT_TRUE(r[3].starts_with("process: " + kEAGAIN)) << r[3];
  EXPECT_TRUE(contains(r[3], "cannot start process")) << r[3];
  EXPECT_TRUE(r[4].starts_with("pool: " + kEAGAIN)) << r[4];
  EXPECT_TRUE(contains(r[4], "the pool cannot start a worker")) << r[4];
  EXPECT_EQ(r[5], "helper exit code: 0");
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ParentFaults, ::testing::Values("fork", "spawn", "forkserver"));

}  // namespace
