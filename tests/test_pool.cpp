// Pool under every start method: results, errors that come back, workers that die, options.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <numeric>
#include <ranges>
#include <set>
#include <string>
#include <system_error>
#include <thread>

#include "support/timeouts.hpp"

#include "pool/remote_info.hpp"

namespace {

using namespace std::chrono_literals;

class PoolTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::PoolOptions opts(int n = 2) const { return {.processes = n, .context = mproc::get_context(GetParam())}; }
};

int square(int x) { return x * x; }
std::string label(int x) { return "item " + std::to_string(x); }
int add(int a, int b) { return a + b; }
void nothing() {}
int throw_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
int throw_int(int) { throw 42; }
int die(int x) {
  if (x == 5) ::raise(SIGKILL);
  return x;
}
int exit_on_five(int x) {
  if (x == 5) ::_exit(7);
  return x;
}
int my_pid(int) { return ::getpid(); }
// Size and first and last bytes: enough to tell each of a map's large strings from the others.
std::string string_tag(const std::string& s) {
  return std::to_string(s.size()) + ":" + (s.empty() ? std::string() : std::string{s.front(), s.back()});
}
std::size_t slow_size(const std::string& s) {
  ::usleep(50'000);
  return s.size();
}
int sleep_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}

int g_initialized = 0;  // set by the initializer, in the worker only
void init_worker(int v) { g_initialized = v; }
int read_initialized(int) { return g_initialized; }
void failing_init() { throw std::runtime_error("cannot load plugins"); }

// Shared objects handed to each worker once, through the initializer (descriptors included).
std::optional<mproc::Lock> g_lock;
std::optional<mproc::Value<int>> g_counter;
void keep_shared(mproc::Lock lock, mproc::Value<int> counter) {
  g_lock = lock;
  g_counter = counter;
}
// 1 when the lock was free (taken and given back), 0 when someone else held it.
int try_lock(int) {
  if (!g_lock->acquire(false)) return 0;
  g_lock->release();
  return 1;
}
// 1 when the lock could be taken within a second: the other worker holds it only for a moment.
int lock_within_a_second(int) {
  if (!g_lock->acquire(true, mproc::seconds(1))) return 0;
  g_lock->release();
  return 1;
}
int count_under_lock(int x) {
  std::scoped_lock guard(*g_lock);
  ++g_counter->value();
  return x;
}
int read_value(mproc::Value<int> v) { return v.value(); }

long allocate_mib(long mib) {
  std::vector<char> big(static_cast<std::size_t>(mib) << 20, 1);
  return static_cast<long>(big.size() >> 20);
}
int spin_forever(int) {
  for (;;) asm volatile("" ::: "memory");  // burns CPU; the compiler may not drop the loop
}
int open_dev_null(int n) {  // opens n descriptors, closes them, returns n; throws on EMFILE
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      int err = errno;
      for (int f : fds) ::close(f);
      throw std::system_error(err, std::generic_category(), "open /dev/null");
    }
    fds.push_back(fd);
  }
  for (int f : fds) ::close(f);
  return n;
}

// Found by fuzz/fuzz_remote_info.cpp: what() is a C string, so a NUL in a worker's error report
// hid the rest of it (the exception's type and message) from whoever printed the error.
TEST(PoolHostileBytes, AWorkersErrorReportWithNulBytesShowsEveryFieldInWhat) {
  using namespace std::string_literals;
  std::string report;
  mproc::detail::encode(report, mproc::detail::RemoteInfo{"my\0type"s, "bad\0news"s, "Worker\0-1"s, "", 42});
  auto sut = mproc::detail::remote_error_from(reinterpret_cast<const std::byte*>(report.data()), report.size());
  std::string what = sut.what();
  EXPECT_NE(what.find("my\\0type: bad\\0news"), std::string::npos) << what;
  EXPECT_NE(what.find("Worker\\0-1, pid 42"), std::string::npos) << what;
  EXPECT_EQ(sut.type(), "my\0type"s);  // the fields themselves keep the bytes
  EXPECT_EQ(sut.message(), "bad\0news"s);
}

TEST_P(PoolTest, MapReturnsResultsInInputOrder) {
  mproc::Pool sut(opts());
  std::vector<int> in(1000);
  std::iota(in.begin(), in.end(), 0);
  std::vector<int> expected;
  for (int x : in) expected.push_back(x * x);
  EXPECT_EQ(sut.map(square, in), expected);
  EXPECT_EQ(sut.map(square, in, 1), expected);
  EXPECT_EQ(sut.map(square, in, 7), expected);
  EXPECT_EQ(sut.map(square, in, 5000), expected);
}

TEST_P(PoolTest, MapWithChunksLargerThanSocketBuffersCompletes) {
  // Megabyte chunks each way: sends and results larger than any socket buffer must not wedge
  // the handler against a worker writing its result.
  mproc::Pool sut(opts());
  std::vector<int> in(2'000'000);
  std::iota(in.begin(), in.end(), 0);
  auto out = sut.map([](int x) { return static_cast<long>(x) * 3; }, in);
  ASSERT_EQ(out.size(), in.size());
  EXPECT_EQ(out.front(), 0);
  EXPECT_EQ(out.back(), 3L * 1'999'999);
  auto strings = sut.map([](int x) { return std::string(300'000, static_cast<char>('a' + x)); }, std::views::iota(0, 8), 2);
  EXPECT_EQ(strings[7], std::string(300'000, 'h'));
}

// More chunks than the pool queues unsent (16 MiB): the map writes them as they go out, and
// every result comes back in its place.
TEST_P(PoolTest, AMapOfMoreMegabyteStringsThanThePoolQueuesComesBackWhole) {
  mproc::Pool sut(opts());
  std::vector<std::string> in;
  for (int i = 0; i < 48; ++i) in.push_back(std::string((1 << 20) + i, static_cast<char>('a' + i % 26)));
  auto out = sut.map(string_tag, in, 1);
  ASSERT_EQ(out.size(), in.size());
  for (int i = 0; i < 48; ++i) EXPECT_EQ(out[i], string_tag(in[i])) << i;
}

// A map whose writer waits for the pool to take its chunks (64 MiB of them, one worker taking
// one every 50 ms) ends when another thread terminates the pool: the pool's error, not a hang.
TEST_P(PoolTest, TerminateWhileAMapWaitsToWriteMoreChunksEndsThatMap) {
  mproc::Pool sut(opts(1));
  std::vector<std::string> in(64, std::string(1 << 20, 'x'));
  std::thread stopper([&] {
    std::this_thread::sleep_for(200ms);
    sut.terminate();
  });
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(sut.map(slow_size, in, 1), mproc::Error);
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);
  sut.join();
  EXPECT_TRUE(sut.worker_pids().empty());
}

TEST_P(PoolTest, MapTakesAnyRangeAndNonTrivialTypes) {
  mproc::Pool sut(opts());
  auto out = sut.map(label, std::views::iota(0, 5));
  EXPECT_EQ(out, (std::vector<std::string>{"item 0", "item 1", "item 2", "item 3", "item 4"}));
  auto lens = sut.map([](std::string s) { return s.size(); }, std::vector<std::string>{"a", "bb", ""});
  EXPECT_EQ(lens, (std::vector<std::size_t>{1, 2, 0}));
}

TEST_P(PoolTest, MapOfEmptyInputIsEmpty) {
  mproc::Pool sut(opts());
  EXPECT_TRUE(sut.map(square, std::vector<int>{}).empty());
}

TEST_P(PoolTest, StarmapUnpacksTuples) {
  mproc::Pool sut(opts());
  std::vector<std::tuple<int, int>> in{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(sut.starmap(add, in), (std::vector<int>{3, 7, 11}));
}

TEST_P(PoolTest, ApplyReturnsTheResultAndApplyAsyncCallsBack) {
  mproc::Pool sut(opts());
  EXPECT_EQ(sut.apply(add, 2, 3), 5);
  sut.apply(nothing);
  std::atomic<int> got{0};
  auto r = sut.apply_async(mproc::Callbacks<int>{.callback = [&](const int& v) { got = v; }}, square, 9);
  EXPECT_EQ(r.get(10s), 81);
  EXPECT_TRUE(r.ready());
  EXPECT_TRUE(r.successful());
  for (int i = 0; i < 100 && got != 81; ++i) std::this_thread::sleep_for(10ms);  // callback runs after get() may return
  EXPECT_EQ(got, 81);
}

// A lone apply's caller reads the answer itself (LocalEngine::tend) while the handler thread
// may be reading the other workers: several threads calling apply at once cross both paths.
TEST_P(PoolTest, ApplyInALoopFromSeveralThreadsAnswersEveryCallRight) {
  mproc::Pool sut(opts());
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i)
        if (sut.apply(add, t * 1000, i) != t * 1000 + i) ++wrong;
    });
  for (int i = 0; i < 300; ++i)
    if (sut.apply(square, i) != i * i) ++wrong;
  for (auto& c : callers) c.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(sut.worker_pids().size(), 2u);
}

// The callbacks' promise holds while a caller reads lone answers itself: they run on the
// pool's thread, never on the thread waiting in get().
TEST_P(PoolTest, ACallbackRunsOnThePoolsThreadNotOnTheOneWaitingInGet) {
  mproc::Pool sut(opts());
  for (int i = 0; i < 20; ++i) {
    std::promise<std::thread::id> ran_on;
    auto r = sut.apply_async(mproc::Callbacks<int>{.callback = [&](const int&) { ran_on.set_value(std::this_thread::get_id()); }},
                             square, i);
    EXPECT_EQ(r.get(30s), i * i);
    auto f = ran_on.get_future();
    ASSERT_EQ(f.wait_for(30s), std::future_status::ready);
    EXPECT_NE(f.get(), std::this_thread::get_id());
  }
}

// A lone task whose worker dies at once ends while its caller reads for the answer: the caller
// learns it from the handler (WorkerCrashed), which replaces the worker.
TEST_P(PoolTest, ALoneApplyWhoseWorkerDiesAtOnceFailsWithWorkerCrashedAndThePoolGoesOn) {
  mproc::Pool sut(opts());
  for (int round = 0; round < 3; ++round) {
    try {
      sut.apply(exit_on_five, 5);
      FAIL() << "no exception";
    } catch (const mproc::WorkerCrashed& e) {
      EXPECT_EQ(e.exitcode(), 7);
    }
    EXPECT_THROW(sut.apply(die, 5), mproc::WorkerCrashed);
    EXPECT_EQ(sut.apply(square, round), round * round);
    EXPECT_EQ(sut.apply(sleep_ms, 5), 5);  // longer than the caller reads: the handler answers
  }
  EXPECT_EQ(sut.worker_pids().size(), 2u);
}

TEST_P(PoolTest, ImapYieldsInOrderAndImapUnorderedYieldsEverything) {
  mproc::Pool sut(opts());
  std::vector<int> ordered;
  for (int r : sut.imap(square, std::views::iota(0, 50), 3)) ordered.push_back(r);
  std::vector<int> expected;
  for (int i = 0; i < 50; ++i) expected.push_back(i * i);
  EXPECT_EQ(ordered, expected);
  std::multiset<int> unordered;
  for (int r : sut.imap_unordered(square, std::views::iota(0, 50))) unordered.insert(r);
  EXPECT_EQ(unordered, std::multiset<int>(expected.begin(), expected.end()));
}

TEST_P(PoolTest, ImapReadsAnEndlessInputLazily) {
  mproc::Pool sut(opts());
  auto it = sut.imap(square, std::views::iota(0), 1, 4);  // endless: only a window is ever read
  for (int i = 0; i < 20; ++i) EXPECT_EQ(it.next(10s), i * i);
}

TEST_P(PoolTest, ExceptionComesBackAsRemoteErrorAndThePoolStaysUsable) {
  mproc::Pool sut(opts());
  try {
    sut.map(throw_on_three, std::views::iota(0, 10), 1);
    FAIL() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "three is not allowed");
    EXPECT_NE(e.worker().find("PoolWorker-"), std::string::npos) << e.worker();
    EXPECT_GT(e.pid(), 0);
    EXPECT_NE(e.stack().find("throw_on_three"), std::string::npos) << e.stack();
    EXPECT_NE(std::string(e.what()).find("std::invalid_argument: three is not allowed"), std::string::npos);
  }
  EXPECT_EQ(sut.apply(square, 4), 16);
}

TEST_P(PoolTest, AnExceptionNotDerivedFromStdExceptionComesBackToo) {
  mproc::Pool sut(opts(1));
  try {
    sut.apply(throw_int, 1);
    FAIL() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "int");
  }
}

TEST_P(PoolTest, AKilledWorkerFailsOnlyItsTaskAndIsReplaced) {
  mproc::Pool sut(opts());
  std::vector<mproc::AsyncResult<int>> results;
  for (int i = 0; i < 10; ++i) results.push_back(sut.apply_async(die, i));
  for (int i = 0; i < 10; ++i) {
    if (i == 5) {
      try {
        results[i].get(30s);
        FAIL() << "no exception for the killed task";
      } catch (const mproc::WorkerCrashed& e) {
        EXPECT_EQ(e.signal(), SIGKILL);
        EXPECT_EQ(e.exitcode(), -SIGKILL);
        EXPECT_GT(e.pid(), 0);
      }
    } else {
      EXPECT_EQ(results[i].get(30s), i);
    }
  }
  EXPECT_EQ(sut.map(square, std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  EXPECT_EQ(sut.worker_pids().size(), 2u);
}

TEST_P(PoolTest, MapWithAWorkerThatExitsThrowsWorkerCrashedInsteadOfHanging) {
  mproc::Pool sut(opts());
  try {
    sut.map(exit_on_five, std::views::iota(0, 10), 2);
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.exitcode(), 7);
    EXPECT_EQ(e.first_item(), 4u);
    EXPECT_EQ(e.item_count(), 2u);
  }
  EXPECT_EQ(sut.apply(square, 3), 9);
}

TEST_P(PoolTest, MaxTasksPerChildReplacesWorkers) {
  mproc::Pool sut({.processes = 1, .maxtasksperchild = 2, .context = mproc::get_context(GetParam())});
  std::set<int> pids;
  for (int i = 0; i < 6; ++i) pids.insert(sut.apply(my_pid, i));
  EXPECT_EQ(pids.size(), 3u);
}

TEST_P(PoolTest, InitializerRunsInEveryWorkerBeforeItsTasks) {
  mproc::Pool sut({.processes = 2, .initializer = mproc::call(init_worker, 17), .context = mproc::get_context(GetParam())});
  EXPECT_EQ(sut.map(read_initialized, std::views::iota(0, 8), 1), std::vector<int>(8, 17));
  EXPECT_EQ(g_initialized, 0) << "the initializer ran in the parent";
}

TEST_P(PoolTest, AFailingInitializerFailsTheTasksInsteadOfRespawningForever) {
  mproc::Pool sut({.processes = 2, .initializer = failing_init, .context = mproc::get_context(GetParam())});
  try {
    sut.apply(square, 2);
    FAIL() << "no exception";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.message(), "cannot load plugins");
  } catch (const mproc::Error& e) {
    FAIL() << e.what();
  }
}

TEST_P(PoolTest, GetWithTimeoutThrowsTimeoutError) {
  mproc::Pool sut(opts(1));
  auto r = sut.apply_async(sleep_ms, 300);
  EXPECT_THROW(r.get(10ms), mproc::TimeoutError);
  EXPECT_FALSE(r.ready());
  EXPECT_THROW(r.successful(), mproc::Error);
  EXPECT_EQ(r.get(30s), 300);
}

TEST_P(PoolTest, ANaNTimeoutIsRefusedAndAnInfiniteOneWaitsWithoutADeadline) {
  using support::kInf, support::kNaN;
  mproc::Pool sut(opts(1));
  auto it = sut.imap(square, std::vector<int>{1, 2, 3});
  support::expect_nan_refused("imap next", [&] { (void)it.next(mproc::seconds(kNaN)); });
  EXPECT_EQ(it.next(mproc::seconds(kInf)), 1);
  auto r = sut.apply_async(sleep_ms, 100);
  support::expect_nan_refused("AsyncResult.get", [&] { (void)r.get(mproc::seconds(kNaN)); });
  support::expect_nan_refused("AsyncResult.wait", [&] { (void)r.wait(mproc::seconds(kNaN)); });
  EXPECT_EQ(r.get(mproc::seconds(kInf)), 100);
  auto never = sut.apply_async(sleep_ms, 600'000);  // ended by the pool's destructor
  EXPECT_FALSE(never.wait(mproc::seconds(-1)));     // negative: no wait at all
  EXPECT_THROW(never.get(mproc::seconds(-kInf)), mproc::TimeoutError);
}

TEST_P(PoolTest, TaskTimeoutKillsTheTaskNotThePool) {
  mproc::Pool sut({.processes = 1, .context = mproc::get_context(GetParam()), .task_timeout = 200ms});
  auto slow = sut.apply_async(sleep_ms, 100000);
  auto next = sut.apply_async(square, 6);
  EXPECT_THROW(slow.get(30s), mproc::TimeoutError);
  EXPECT_EQ(next.get(30s), 36);
}

TEST_P(PoolTest, MaxRetriesRunsACrashedTaskAgain) {
  char path[] = "/tmp/mproc-retry-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  ::unlink(path);
  mproc::Pool sut({.processes = 1, .context = mproc::get_context(GetParam()), .max_retries = 1});
  auto r = sut.apply(
      [](std::string p) {
        if (FILE* f = std::fopen(p.c_str(), "r")) {  // second attempt: the first left a mark
          std::fclose(f);
          return 1;
        }
        std::fclose(std::fopen(p.c_str(), "w"));
        ::raise(SIGKILL);
        return 0;
      },
      std::string(path));
  ::unlink(path);
  EXPECT_EQ(r, 1);
}

TEST_P(PoolTest, TerminateFailsUnfinishedResultsAndLeavesNoWorker) {
  auto sut = std::make_unique<mproc::Pool>(opts());
  auto slow = sut->apply_async(sleep_ms, 100000);
  auto queued = sut->map_async(sleep_ms, std::vector<int>(10, 100000));
  sut->terminate();
  sut->join();
  EXPECT_THROW(slow.get(10s), mproc::Error);
  EXPECT_THROW(queued.get(10s), mproc::Error);
  EXPECT_TRUE(sut->worker_pids().empty());
}

TEST_P(PoolTest, DestructorWithTasksPendingDoesNotHang) {
  auto sut = std::make_unique<mproc::Pool>(opts());
  auto r = sut->map_async(sleep_ms, std::vector<int>(20, 100000));
  sut.reset();
  EXPECT_THROW(r.get(10s), mproc::Error);
}

TEST_P(PoolTest, CloseThenJoinFinishesQueuedWorkAndRefusesMore) {
  mproc::Pool sut(opts());
  auto r = sut.map_async(square, std::views::iota(0, 20), 1);
  sut.close();
  EXPECT_THROW(sut.apply(square, 1), mproc::Error);
  sut.join();
  EXPECT_EQ(r.get(0s).size(), 20u);
}

TEST_P(PoolTest, ATaskQueuedBehindACrashRunsOnAnotherWorker) {
  // The second task is pipelined behind the first on the only worker, which dies at once: it
  // must run on the replacement, never vanish with a send to the dead worker.
  mproc::Pool sut(opts(1));
  for (int round = 0; round < 10; ++round) {
    auto bad = sut.apply_async(die, 5);
    auto good = sut.apply_async(square, round);
    EXPECT_THROW(bad.get(30s), mproc::WorkerCrashed);
    EXPECT_EQ(good.get(30s), round * round);
  }
}

TEST_P(PoolTest, ALockAndAValueReachEveryWorkerThroughTheInitializer) {
  mproc::Lock lock;
  mproc::Value<int> counter(0);
  mproc::Pool sut({.processes = 2, .initializer = mproc::call(keep_shared, lock, counter), .context = mproc::get_context(GetParam())});
  std::vector<int> in(20);
  std::iota(in.begin(), in.end(), 0);
  EXPECT_EQ(sut.map(count_under_lock, in, 1), in);
  EXPECT_EQ(counter.value(), 20);
  {
    std::scoped_lock held(lock);
    EXPECT_EQ(sut.map(try_lock, std::views::iota(0, 4), 1), std::vector<int>(4, 0)) << "the workers' lock is not ours";
  }
  // Both workers take it in turn (try_lock could meet the other worker's brief hold).
  EXPECT_EQ(sut.map(lock_within_a_second, std::views::iota(0, 4), 1), std::vector<int>(4, 1));
}

TEST_P(PoolTest, ADescriptorInATaskArgumentIsRefusedWithTheReason) {
  mproc::Pool sut(opts(1));
  mproc::Value<int> v(3);
  try {
    sut.apply(read_value, v);
    FAIL() << "no exception";
  } catch (const mproc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("initializer"), std::string::npos) << e.what();
  }
  EXPECT_EQ(sut.apply(square, 4), 16) << "the pool stays usable";
}

TEST_P(PoolTest, AnAddressSpaceLimitTurnsAHugeAllocationIntoBadAlloc) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "AddressSanitizer and ThreadSanitizer reserve terabytes of shadow memory: RLIMIT_AS cannot be tested under them";
#endif
  auto o = opts(1);
  o.limits.address_space = 2ull << 30;
  mproc::Pool sut(o);
  try {
    sut.apply(allocate_mib, 8L << 10);
    FAIL() << "8 GiB allocated under a 2 GiB limit";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::bad_alloc");
  }
  EXPECT_EQ(sut.apply(allocate_mib, 16L), 16L) << "the worker goes on within its limit";
}

TEST_P(PoolTest, ACpuSecondsLimitKillsARunawayTaskAndTheWorkerIsReplaced) {
  auto o = opts(1);
  o.limits.cpu_seconds = 1;
  mproc::Pool sut(o);
  try {
    sut.apply(spin_forever, 0);
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.signal(), SIGXCPU) << e.what();
  }
  EXPECT_EQ(sut.apply(square, 3), 9);
}

TEST_P(PoolTest, AnOpenFilesLimitFailsOpensBeyondIt) {
  auto o = opts(1);
  o.limits.open_files = 64;
  mproc::Pool sut(o);
  EXPECT_EQ(sut.apply(open_dev_null, 8), 8);
  try {
    sut.apply(open_dev_null, 100);
    FAIL() << "100 descriptors opened under a limit of 64";
  } catch (const mproc::RemoteError& e) {
    EXPECT_NE(e.message().find("open /dev/null"), std::string::npos) << e.what();
  }
}

// Processes of a process group that have not ended (zombies count as ended).
std::vector<int> live_members(int pgid) {
  std::vector<int> out;
  if (DIR* d = ::opendir("/proc")) {
    while (dirent* e = ::readdir(d)) {
      int pid = std::atoi(e->d_name);
      if (pid <= 0) continue;
      std::FILE* f = std::fopen(("/proc/" + std::string(e->d_name) + "/stat").c_str(), "r");
      if (!f) continue;
      char buf[1024] = {};
      std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      std::string stat(buf, n);
      auto close_paren = stat.rfind(')');
      if (close_paren == std::string::npos) continue;
      char state = 0;
      int ppid = 0, group = 0;
      if (std::sscanf(stat.c_str() + close_paren + 1, " %c %d %d", &state, &ppid, &group) == 3 && group == pgid && state != 'Z')
        out.push_back(pid);
    }
    ::closedir(d);
  }
  return out;
}

TEST_P(PoolTest, CtrlCDuringAMapEndsTheProgramAndLeavesNoWorkerBehind) {
  // The helper maps tasks that sleep for minutes; SIGINT goes to its whole process group, as a
  // terminal sends it. The program ends by SIGINT (C++ has no KeyboardInterrupt: the default
  // action is what a user sees), every worker ignores SIGINT and dies with it, and so do the
  // fork server and the resource tracker.
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::setpgid(0, 0);
    ::dup2(out[1], 1);
    const char* helper = MPROC_TEST_HELPER_pool_ctrl_c;
    ::execl(helper, helper, GetParam().c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(child, child);  // either side may win the race; both ask for the same
  ::close(out[1]);
  std::string line;
  char c;
  while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
  ::close(out[0]);
  ASSERT_EQ(line.rfind("workers ", 0), 0u) << "helper said: " << line;
  std::vector<int> workers;
  for (std::size_t at = 8; at < line.size();) {
    std::size_t next = line.find(' ', at);
    workers.push_back(std::atoi(line.substr(at, next - at).c_str()));
    at = next == std::string::npos ? line.size() : next + 1;
  }
  ASSERT_EQ(workers.size(), 2u) << line;

  ASSERT_EQ(::kill(-child, SIGINT), 0);

  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 3000 && done == 0; ++i) {  // bounded: 30 s
    done = ::waitpid(child, &status, WNOHANG);
    if (done == 0) ::usleep(10000);
  }
  if (done == 0) {
    ::kill(-child, SIGKILL);
    ::waitpid(child, &status, 0);
    FAIL() << "the program did not end within 30 s of Ctrl-C";
  }
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGINT) << "status " << status;
  std::vector<int> left;
  for (int i = 0; i < 3000; ++i) {  // the workers end with their parent; bounded: 30 s
    left = live_members(child);
    if (left.empty()) break;
    ::usleep(10000);
  }
  EXPECT_TRUE(left.empty()) << left.size() << " processes of the program outlived it, the first " << left.front();
  for (int pid : left) ::kill(pid, SIGKILL);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, PoolTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

}  // namespace
