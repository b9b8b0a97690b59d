// ProcessPoolExecutor under every start method: futures, map, as_completed, wait, shutdown,
// crashes with and without Python's broken-pool behaviour.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ranges>
#include <set>
#include <thread>

#include "support/timeouts.hpp"

namespace {

using namespace std::chrono_literals;

int square(int x) { return x * x; }
int sleep_ms(int ms) {
  ::usleep(static_cast<useconds_t>(ms) * 1000);
  return ms;
}
int fail_with(int x) { throw std::out_of_range("bad " + std::to_string(x)); }
int die(int) {
  ::raise(SIGKILL);
  return 0;
}

class ExecutorTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::ExecutorOptions opts(int n = 2) const { return {.max_workers = n, .mp_context = mproc::get_context(GetParam())}; }
};

TEST_P(ExecutorTest, SubmitReturnsAFutureWithTheResult) {
  mproc::ProcessPoolExecutor sut(opts());
  auto f = sut.submit(square, 7);
  EXPECT_EQ(f.result(30s), 49);
  EXPECT_TRUE(f.done());
  EXPECT_FALSE(f.cancelled());
  EXPECT_EQ(f.exception(), nullptr);
}

TEST_P(ExecutorTest, SubmitAndResultInALoopFromTwoThreadsAnswersEveryCall) {
  mproc::ProcessPoolExecutor sut(opts());
  std::atomic<int> wrong{0};
  std::thread other([&] {
    for (int i = 0; i < 300; ++i)
      if (sut.submit(square, i).result(30s) != i * i) ++wrong;
  });
  for (int i = 0; i < 300; ++i)
    if (sut.submit(sleep_ms, i % 2).result(30s) != i % 2) ++wrong;
  other.join();
  EXPECT_EQ(wrong, 0);
}

TEST_P(ExecutorTest, AnExceptionIsKeptInTheFuture) {
  mproc::ProcessPoolExecutor sut(opts());
  auto f = sut.submit(fail_with, 3);
  EXPECT_NE(f.exception(30s), nullptr);
  try {
    f.result();
    FAIL();
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::out_of_range");
    EXPECT_EQ(e.message(), "bad 3");
  }
}

TEST_P(ExecutorTest, ANaNTimeoutIsRefusedAndAnInfiniteOneWaitsWithoutADeadline) {
  using support::kInf, support::kNaN;
  mproc::ProcessPoolExecutor sut(opts(2));
  auto f = sut.submit(sleep_ms, 100);
  auto never = sut.submit(sleep_ms, 600'000);  // ended by terminate_workers below
  support::expect_nan_refused("Future.result", [&] { (void)f.result(mproc::seconds(kNaN)); });
  support::expect_nan_refused("Future.exception", [&] { (void)f.exception(mproc::seconds(kNaN)); });
  std::vector<mproc::Future<int>> fs{f};
  support::expect_nan_refused("wait", [&] { (void)mproc::wait(fs, mproc::seconds(kNaN)); });
  support::expect_nan_refused("as_completed", [&] { (void)mproc::as_completed(fs, mproc::seconds(kNaN)); });
  EXPECT_THROW(never.result(mproc::seconds(-1)), mproc::TimeoutError);  // negative: no wait at all
  EXPECT_EQ(f.result(mproc::seconds(kInf)), 100);
  EXPECT_EQ(mproc::wait(fs, mproc::seconds(kInf)).done.size(), 1u);
  sut.terminate_workers();
}

TEST_P(ExecutorTest, ResultWithTimeoutThrowsTimeoutError) {
  mproc::ProcessPoolExecutor sut(opts(1));
  auto f = sut.submit(sleep_ms, 300);
  EXPECT_THROW(f.result(10ms), mproc::TimeoutError);
  EXPECT_EQ(f.result(30s), 300);
}

TEST_P(ExecutorTest, MapYieldsResultsInOrder) {
  mproc::ProcessPoolExecutor sut(opts());
  std::vector<int> out;
  for (int r : sut.map(square, std::views::iota(0, 30), 4)) out.push_back(r);
  ASSERT_EQ(out.size(), 30u);
  for (int i = 0; i < 30; ++i) EXPECT_EQ(out[static_cast<std::size_t>(i)], i * i);
}

TEST_P(ExecutorTest, AsCompletedYieldsEveryFutureOnceAndWaitSplitsDoneFromNotDone) {
  mproc::ProcessPoolExecutor sut(opts());
  std::vector<mproc::Future<int>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(sut.submit(square, i));
  std::multiset<int> got;
  for (auto& f : mproc::as_completed(fs, 30s)) got.insert(f.result());
  EXPECT_EQ(got, (std::multiset<int>{0, 1, 4, 9, 16, 25}));

  std::vector<mproc::Future<int>> mixed{sut.submit(square, 2), sut.submit(sleep_ms, 100000)};
  auto [done, not_done] = mproc::wait(mixed, 30s, mproc::FIRST_COMPLETED);
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0].result(), 4);
  EXPECT_EQ(not_done.size(), 1u);
  sut.terminate_workers();
  EXPECT_THROW(not_done[0].result(30s), mproc::Error);
}

// Python's timeout bounds the whole iteration, from the call: each of 4 tasks of 300 ms on 2
// workers would finish within 400 ms of the one before, but the last two not within 400 ms of
// the call.
TEST_P(ExecutorTest, AsCompletedTimeoutCountsFromTheCallNotFromEachFuture) {
  mproc::ProcessPoolExecutor sut(opts(2));
  std::vector<mproc::Future<int>> fs;
  for (int i = 0; i < 4; ++i) fs.push_back(sut.submit(sleep_ms, 300));
  mproc::AsCompleted<int> it(fs, 0.4s);
  std::size_t yielded = 0;
  try {
    while (it.next()) ++yielded;
    FAIL() << "every future came within the timeout";
  } catch (const mproc::TimeoutError& e) {
    EXPECT_LT(yielded, 3u);
    EXPECT_NE(std::string(e.what()).find("(of 4) futures unfinished"), std::string::npos) << e.what();
  }
  for (auto& f : fs) EXPECT_EQ(f.result(30s), 300);
}

TEST_P(ExecutorTest, CancelRemovesAQueuedTask) {
  mproc::ProcessPoolExecutor sut(opts(1));
  auto busy = sut.submit(sleep_ms, 500);
  auto also_busy = sut.submit(sleep_ms, 500);  // in flight at the worker (depth 2)
  auto queued = sut.submit(square, 3);
  EXPECT_TRUE(queued.cancel());
  EXPECT_TRUE(queued.cancelled());
  EXPECT_THROW(queued.result(), mproc::CancelledError);
  EXPECT_EQ(busy.result(30s), 500);
  EXPECT_EQ(also_busy.result(30s), 500);
  EXPECT_FALSE(busy.cancel());
}

TEST_P(ExecutorTest, ShutdownWithCancelFuturesCancelsWhatDidNotStart) {
  mproc::ProcessPoolExecutor sut(opts(1));
  std::vector<mproc::Future<int>> fs;
  for (int i = 0; i < 6; ++i) fs.push_back(sut.submit(sleep_ms, 50));
  sut.shutdown(true, true);
  int ok = 0, cancelled = 0;
  for (auto& f : fs) (f.cancelled() ? cancelled : ok) += 1;
  EXPECT_EQ(ok + cancelled, 6);
  EXPECT_GE(cancelled, 1);
  EXPECT_THROW(sut.submit(square, 1), mproc::Error);
}

TEST_P(ExecutorTest, ACrashFailsOnlyItsFutureByDefault) {
  mproc::ProcessPoolExecutor sut(opts());
  auto bad = sut.submit(die, 0);
  auto good = sut.submit(square, 5);
  EXPECT_THROW(bad.result(30s), mproc::WorkerCrashed);
  EXPECT_EQ(good.result(30s), 25);
  EXPECT_EQ(sut.submit(square, 6).result(30s), 36);
}

TEST_P(ExecutorTest, CompatibilityModeBreaksThePoolOnACrashAsPythonDoes) {
  auto o = opts(1);
  o.break_on_crash = true;
  mproc::ProcessPoolExecutor sut(o);
  auto bad = sut.submit(die, 0);
  EXPECT_THROW(bad.result(30s), mproc::BrokenProcessPool);
  EXPECT_THROW(sut.submit(square, 1), mproc::BrokenProcessPool);
}

TEST_P(ExecutorTest, KillWorkersStopsEverythingNow) {
  mproc::ProcessPoolExecutor sut(opts());
  auto f = sut.submit(sleep_ms, 100000);
  sut.kill_workers();
  EXPECT_THROW(f.result(30s), mproc::Error);
  EXPECT_TRUE(sut.worker_pids().empty());
}

int spin_forever(int) {
  for (;;) asm volatile("" ::: "memory");  // burns CPU; the compiler may not drop the loop
}

TEST_P(ExecutorTest, ResourceLimitsApplyToItsWorkers) {
  auto o = opts(1);
  o.limits.cpu_seconds = 1;
  mproc::ProcessPoolExecutor sut(o);
  auto runaway = sut.submit(spin_forever, 0);
  try {
    runaway.result(60s);
    FAIL() << "no exception";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.signal(), SIGXCPU) << e.what();
  }
  EXPECT_EQ(sut.submit(square, 4).result(30s), 16);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ExecutorTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

}  // namespace
