// Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier under every start method:
// exclusion, timeouts, misuse errors, notifications and barriers across processes, and handles
// that arrive as garbage.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mproc/detail/fd_passing.hpp"

#include "support/handles.hpp"
#include "support/timeouts.hpp"

namespace {

using namespace std::chrono_literals;
using mproc::seconds;

class SyncTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
};

// Polls until f() is true: at most 10 s, so a broken test fails instead of hanging.
template <class F>
bool eventually(F f) {
  for (int i = 0; i < 10000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

// The outcome of f() as a name: "ok", or the mproc exception type it threw.
template <class F>
std::string outcome(F f) {
  try {
    f();
    return "ok";
  } catch (const mproc::BrokenBarrierError&) {
    return "BrokenBarrierError";
  } catch (const mproc::RuntimeError&) {
    return "RuntimeError";
  } catch (const mproc::ValueError&) {
    return "ValueError";
  } catch (const mproc::ProtocolError&) {
    return "ProtocolError";
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
}

void join_all(std::vector<mproc::Process>& ps) {
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

// --------------------------------------------------------------------------- children

void add_under_lock(mproc::Lock lock, mproc::RawValue<int> counter, int n) {
  for (int i = 0; i < n; ++i) {
    std::scoped_lock guard(lock);
    int v = counter.value();  // a read-modify-write the lock must make atomic
    counter.value() = v + 1;
  }
}

template <class L>
void hold_until(L lock, mproc::Event holding, mproc::Event release) {
  lock.acquire();
  holding.set();
  release.wait(60s);
  lock.release();
}

template <class L>
void release_foreign(L lock, mproc::Connection out) {
  out.send(outcome([&] { lock.release(); }));
}

template <class L>
void try_acquire_report(L lock, mproc::Connection out) {
  bool got = lock.acquire(false);
  if (got) lock.release();
  out.send(got);
}

void release_n(mproc::Semaphore sem, int n) {
  for (int i = 0; i < n; ++i) sem.release();
}

void over_release(mproc::BoundedSemaphore sem, mproc::Connection out) {
  out.send(outcome([&] { sem.release(); }));
}

void wait_on_condition(mproc::Condition cond, mproc::RawValue<int> ready, mproc::RawValue<int> woken) {
  std::scoped_lock guard(cond);
  ++ready.value();
  if (cond.wait(60s)) ++woken.value();
}

void set_and_notify(mproc::Condition cond, mproc::RawValue<int> flag) {
  std::scoped_lock guard(cond);
  flag.value() = 1;
  cond.notify();
}

void wait_event(mproc::Event e, mproc::Connection out, double timeout) { out.send(e.wait(seconds(timeout))); }

void set_event(mproc::Event e) { e.set(); }

int g_action_runs = 0;  // per process
void count_action() { ++g_action_runs; }
void throwing_action() { throw std::runtime_error("action failed"); }

// Two cycles: sends (cycle, index, whether this process ran the action) for each.
void barrier_party(mproc::Barrier b, mproc::Connection out) {
  for (int cycle = 0; cycle < 2; ++cycle) {
    int before = g_action_runs;
    int index = b.wait(60s);
    out.send(std::make_tuple(cycle, index, g_action_runs - before));
  }
}

void barrier_wait_report(mproc::Barrier b, mproc::Connection out) {
  out.send(outcome([&] { b.wait(60s); }));
}

// --------------------------------------------------------------------------- Lock

TEST_P(SyncTest, LockMakesIncrementsOfFourProcessesExact) {
  mproc::Lock lock;
  mproc::RawValue<int> counter(0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 4; ++i) ps.push_back(ctx().Process(add_under_lock, lock, counter, 10000));
  for (auto& p : ps) p.start();
  join_all(ps);
  EXPECT_EQ(counter.value(), 40000);
  EXPECT_FALSE(lock.locked());
}

TEST_P(SyncTest, LockHeldByAnotherProcessTimesOutOnEveryPath) {
  mproc::Lock sut;
  mproc::Event holding, release;
  auto p = ctx().Process(hold_until<mproc::Lock>, sut, holding, release);
  p.start();
  ASSERT_TRUE(holding.wait(30s));

  EXPECT_TRUE(sut.locked());
  EXPECT_FALSE(sut.acquire(false));
  EXPECT_FALSE(sut.acquire(true, 20ms));
  EXPECT_FALSE(sut.acquire(true, seconds(0)));
  EXPECT_FALSE(sut.acquire(true, seconds(-1)));
  EXPECT_FALSE(sut.try_lock());
  EXPECT_FALSE(sut.try_lock_for(10ms));
  EXPECT_FALSE(sut.try_lock_until(std::chrono::steady_clock::now() + 10ms));
  std::unique_lock<mproc::Lock> guard(sut, std::try_to_lock);
  EXPECT_FALSE(guard.owns_lock());

  release.set();
  EXPECT_TRUE(sut.acquire(true, 30s));
  EXPECT_FALSE(sut.owner_died());
  sut.release();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(SyncTest, LockReleasedByAProcessThatDoesNotHoldItThrowsRuntimeError) {
  mproc::Lock sut;
  sut.acquire();
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(release_foreign<mproc::Lock>, sut, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "RuntimeError");
  p.join();
  EXPECT_TRUE(sut.locked());  // still ours
  sut.release();
}

TEST(LockTest, ReleaseOfAnUnlockedLockThrowsRuntimeError) {
  mproc::Lock sut;
  EXPECT_THROW(sut.release(), mproc::RuntimeError);
}

TEST(LockTest, BlockingReacquireByTheHolderThrowsInsteadOfDeadlocking) {
  mproc::Lock sut;
  sut.acquire();
  EXPECT_THROW(sut.acquire(), mproc::RuntimeError);
  EXPECT_FALSE(sut.acquire(false));
  EXPECT_FALSE(sut.acquire(true, 10ms));
  sut.release();
  EXPECT_FALSE(sut.locked());
}

TEST(LockTest, CopiesShareTheLockAndAnotherThreadCannotTakeIt) {
  mproc::Lock sut;
  mproc::Lock copy = sut;
  std::scoped_lock guard(sut);
  EXPECT_TRUE(copy.locked());
  bool other = true;
  std::thread([&] { other = copy.try_lock(); }).join();
  EXPECT_FALSE(other);
}

// --------------------------------------------------------------------------- RLock

TEST_P(SyncTest, RLockIsRecursiveAndHeldUntilTheLastRelease) {
  mproc::RLock sut;
  auto [parent, child] = mproc::Pipe();
  ASSERT_TRUE(sut.acquire());
  ASSERT_TRUE(sut.acquire(false));
  ASSERT_TRUE(sut.acquire(true, 1ms));
  sut.release();
  sut.release();
  EXPECT_TRUE(sut.locked());

  auto blocked = ctx().Process(try_acquire_report<mproc::RLock>, sut, child);
  blocked.start();
  EXPECT_FALSE(parent.recv<bool>());
  blocked.join();

  sut.release();
  EXPECT_FALSE(sut.locked());
  EXPECT_THROW(sut.release(), mproc::RuntimeError);

  auto free = ctx().Process(try_acquire_report<mproc::RLock>, sut, child);
  free.start();
  EXPECT_TRUE(parent.recv<bool>());
  free.join();
}

TEST_P(SyncTest, RLockReleasedByAProcessThatDoesNotHoldItThrowsRuntimeError) {
  mproc::RLock sut;
  sut.acquire();
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(release_foreign<mproc::RLock>, sut, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "RuntimeError");
  p.join();
  sut.release();
  EXPECT_FALSE(sut.locked());
}

TEST_P(SyncTest, RLockHeldByAnotherProcessTimesOut) {
  mproc::RLock sut;
  mproc::Event holding, release;
  auto p = ctx().Process(hold_until<mproc::RLock>, sut, holding, release);
  p.start();
  ASSERT_TRUE(holding.wait(30s));
  EXPECT_FALSE(sut.acquire(false));
  EXPECT_FALSE(sut.acquire(true, 20ms));
  EXPECT_FALSE(sut.try_lock_for(5ms));
  release.set();
  p.join();
  EXPECT_TRUE(sut.acquire(false));
  sut.release();
}

// --------------------------------------------------------------------------- Semaphore

TEST_P(SyncTest, SemaphoreCountsReleasesFromAnotherProcess) {
  mproc::Semaphore sut(0);
  auto p = ctx().Process(release_n, sut, 3);
  p.start();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(sut.acquire(true, 30s));
  p.join();
  EXPECT_EQ(sut.get_value(), 0);
  EXPECT_FALSE(sut.acquire(false));
}

TEST(SemaphoreTest, TimeoutPathsReturnFalseAndValueIsCounted) {
  mproc::Semaphore sut(2);
  EXPECT_EQ(sut.get_value(), 2);
  EXPECT_TRUE(sut.acquire());
  EXPECT_TRUE(sut.try_lock());
  EXPECT_EQ(sut.get_value(), 0);
  EXPECT_FALSE(sut.acquire(false));
  EXPECT_FALSE(sut.acquire(true, 20ms));
  EXPECT_FALSE(sut.acquire(true, seconds(0)));
  EXPECT_FALSE(sut.try_lock_for(5ms));
  sut.release();
  sut.release();
  sut.release();  // a plain Semaphore has no bound
  EXPECT_EQ(sut.get_value(), 3);
}

TEST(SemaphoreTest, NegativeInitialValueThrowsValueError) {
  EXPECT_THROW(mproc::Semaphore(-1), mproc::ValueError);
  EXPECT_THROW(mproc::BoundedSemaphore(-1), mproc::ValueError);
}

TEST(SemaphoreTest, WaiterInAnotherThreadIsWokenByRelease) {
  mproc::Semaphore sut(0);
  bool got = false;
  std::thread waiter([&] { got = sut.acquire(true, 30s); });
  sut.release();
  waiter.join();
  EXPECT_TRUE(got);
}

TEST_P(SyncTest, BoundedSemaphoreOverReleaseThrowsValueErrorInEveryProcess) {
  mproc::BoundedSemaphore sut(2);
  EXPECT_THROW(sut.release(), mproc::ValueError);
  EXPECT_EQ(sut.get_value(), 2);
  ASSERT_TRUE(sut.acquire());
  sut.release();
  EXPECT_THROW(sut.release(), mproc::ValueError);

  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(over_release, sut, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "ValueError");
  p.join();
  EXPECT_EQ(sut.get_value(), 2);
}

TEST(SemaphoreTest, BoundedSemaphoreWorksAsAPlainSemaphoreHandleAndKeepsItsBound) {
  mproc::BoundedSemaphore bounded(1);
  mproc::Semaphore sut = bounded;
  EXPECT_THROW(sut.release(), mproc::ValueError);
}

// --------------------------------------------------------------------------- Condition

TEST_P(SyncTest, ConditionNotifyWakesOneWaiterAndNotifyAllTheRest) {
  mproc::Condition sut;
  mproc::RawValue<int> ready(0), woken(0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.push_back(ctx().Process(wait_on_condition, sut, ready, woken));
  for (auto& p : ps) p.start();
  // A child sets ready and registers as a waiter while holding the lock: ready == 3 under the
  // lock means all three are waiting.
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return ready.value() == 3;
  }));

  {
    std::scoped_lock g(sut);
    sut.notify();
  }
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return woken.value() == 1;
  }));
  std::this_thread::sleep_for(50ms);  // a second wake-up would show here (can only under-detect)
  {
    std::scoped_lock g(sut);
    EXPECT_EQ(woken.value(), 1);
    sut.notify_all();
  }
  join_all(ps);
  EXPECT_EQ(woken.value(), 3);
}

TEST_P(SyncTest, ConditionNotifyWithCountWakesThatMany) {
  mproc::Condition sut;
  mproc::RawValue<int> ready(0), woken(0);
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.push_back(ctx().Process(wait_on_condition, sut, ready, woken));
  for (auto& p : ps) p.start();
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return ready.value() == 3;
  }));
  {
    std::scoped_lock g(sut);
    sut.notify(2);
  }
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return woken.value() == 2;
  }));
  {
    std::scoped_lock g(sut);
    sut.notify(5);  // more than are waiting
  }
  join_all(ps);
  EXPECT_EQ(woken.value(), 3);
}

TEST_P(SyncTest, ConditionWaitForSeesThePredicateAnotherProcessMadeTrue) {
  mproc::Condition sut;
  mproc::RawValue<int> flag(0);
  std::scoped_lock g(sut);
  auto p = ctx().Process(set_and_notify, sut, flag);
  p.start();
  EXPECT_TRUE(sut.wait_for([&] { return flag.value() == 1; }, 30s));
  p.join();
}

TEST_P(SyncTest, ConditionOverAGivenLockSharesItWithTheChild) {
  mproc::Lock lock;
  mproc::Condition sut(lock);
  mproc::RawValue<int> flag(0);
  lock.acquire();
  EXPECT_TRUE(sut.locked());
  auto p = ctx().Process(set_and_notify, sut, flag);
  p.start();
  EXPECT_TRUE(sut.wait_for([&] { return flag.value() == 1; }, 30s));
  lock.release();
  p.join();
}

TEST(ConditionTest, TimeoutPathsReturnFalse) {
  mproc::Condition sut;
  std::scoped_lock g(sut);
  EXPECT_FALSE(sut.wait(10ms));
  EXPECT_FALSE(sut.wait(seconds(0)));
  EXPECT_FALSE(sut.wait_for([] { return false; }, 20ms));
  EXPECT_TRUE(sut.wait_for([] { return true; }, seconds(0)));
}

TEST(ConditionTest, WaitAndNotifyWithoutTheLockThrowRuntimeError) {
  mproc::Condition sut;
  EXPECT_THROW(sut.wait(1ms), mproc::RuntimeError);
  EXPECT_THROW(sut.notify(), mproc::RuntimeError);
  EXPECT_THROW(sut.notify_all(), mproc::RuntimeError);
}

TEST(ConditionTest, WaitReleasesEveryLevelOfTheRLockAndRestoresThem) {
  mproc::RLock lock;
  mproc::Condition sut(lock);
  lock.acquire();
  lock.acquire();
  bool other_got_it = false;
  std::thread other([&] {
    std::scoped_lock g(sut);
    other_got_it = true;
    sut.notify();
  });
  EXPECT_TRUE(sut.wait_for([&] { return other_got_it; }, 30s));
  other.join();
  lock.release();
  EXPECT_TRUE(lock.locked());  // the second level is back
  lock.release();
  EXPECT_FALSE(lock.locked());
  EXPECT_THROW(lock.release(), mproc::RuntimeError);
}

TEST(ConditionTest, NotifyWithNoWaiterIsNotKeptForALaterOne) {
  mproc::Condition sut;
  std::scoped_lock g(sut);
  sut.notify_all();
  sut.notify(3);
  EXPECT_FALSE(sut.wait(10ms));
}

// --------------------------------------------------------------------------- Event

TEST_P(SyncTest, EventSetInTheParentWakesAWaitingChild) {
  mproc::Event sut;
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(wait_event, sut, child, 60.0);
  p.start();
  sut.set();
  EXPECT_TRUE(parent.recv<bool>());
  p.join();
}

TEST_P(SyncTest, EventSetInAChildWakesTheParent) {
  mproc::Event sut;
  auto p = ctx().Process(set_event, sut);
  p.start();
  EXPECT_TRUE(sut.wait(30s));
  EXPECT_TRUE(sut.is_set());
  p.join();
}

TEST_P(SyncTest, EventWaitInAChildTimesOutWhenNeverSet) {
  mproc::Event sut;
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(wait_event, sut, child, 0.02);
  p.start();
  EXPECT_FALSE(parent.recv<bool>());
  p.join();
}

TEST(EventTest, SetClearIsSetAndTimeouts) {
  mproc::Event sut;
  EXPECT_FALSE(sut.is_set());
  EXPECT_FALSE(sut.wait(10ms));
  EXPECT_FALSE(sut.wait(seconds(0)));
  sut.set();
  sut.set();
  EXPECT_TRUE(sut.is_set());
  EXPECT_TRUE(sut.wait());
  EXPECT_TRUE(sut.wait(seconds(0)));
  sut.clear();
  EXPECT_FALSE(sut.is_set());
  EXPECT_FALSE(sut.wait(10ms));
}

TEST(EventTest, ASetFollowedAtOnceByClearStillWakesAWaiter) {
  mproc::Event sut;
  bool result = false;
  std::atomic<bool> started{false};
  std::thread waiter([&] {
    started = true;
    result = sut.wait(30s);
  });
  while (!started) std::this_thread::yield();
  std::this_thread::sleep_for(20ms);  // let it sleep (if not, it sees the counter move)
  sut.set();
  sut.clear();
  waiter.join();
  EXPECT_TRUE(result);
}

// --------------------------------------------------------------------------- Barrier

TEST_P(SyncTest, BarrierReleasesFourProcessesWithDistinctIndicesAndRunsTheActionOncePerCycle) {
  g_action_runs = 0;
  mproc::Barrier sut(4, {.action = count_action});
  EXPECT_EQ(sut.parties(), 4);
  auto [parent, child] = mproc::Pipe();
  std::vector<mproc::Process> ps;
  for (int i = 0; i < 3; ++i) ps.push_back(ctx().Process(barrier_party, sut, child));
  for (auto& p : ps) p.start();
  std::vector<std::pair<int, int>> got[2];
  for (int cycle = 0; cycle < 2; ++cycle) {
    int before = g_action_runs;
    int index = sut.wait(60s);
    got[cycle].emplace_back(index, g_action_runs - before);
  }
  for (int i = 0; i < 6; ++i) {
    auto [cycle, index, ran] = parent.recv<std::tuple<int, int, int>>();
    got[cycle & 1].emplace_back(index, ran);
  }
  join_all(ps);
  for (auto& cycle : got) {
    ASSERT_EQ(cycle.size(), 4u);
    std::set<int> indices;
    int runs = 0;
    for (auto [index, ran] : cycle) {
      indices.insert(index);
      runs += ran;
      EXPECT_EQ(ran, index == 3 ? 1 : 0) << "the last party to arrive (index 3) runs the action";
    }
    EXPECT_EQ(indices, (std::set<int>{0, 1, 2, 3}));
    EXPECT_EQ(runs, 1);
  }
  EXPECT_FALSE(sut.broken());
  EXPECT_EQ(sut.n_waiting(), 0);
}

TEST_P(SyncTest, BarrierTimeoutBreaksItForEveryPartyUntilReset) {
  mproc::Barrier sut(2);
  EXPECT_THROW(sut.wait(20ms), mproc::BrokenBarrierError);
  EXPECT_TRUE(sut.broken());
  auto [parent, child] = mproc::Pipe();
  auto late = ctx().Process(barrier_wait_report, sut, child);
  late.start();
  EXPECT_EQ(parent.recv<std::string>(), "BrokenBarrierError");
  late.join();

  sut.reset();
  EXPECT_FALSE(sut.broken());
  auto partner = ctx().Process(barrier_wait_report, sut, child);
  partner.start();
  EXPECT_NO_THROW(sut.wait(60s));
  EXPECT_EQ(parent.recv<std::string>(), "ok");
  partner.join();
}

TEST_P(SyncTest, BarrierDefaultTimeoutComesFromItsOptions) {
  mproc::Barrier sut(3, {.timeout = 20ms});
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(
      [](mproc::Barrier b, mproc::Connection out) { out.send(outcome([&] { b.wait(); })); }, sut, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "BrokenBarrierError");
  p.join();
  EXPECT_TRUE(sut.broken());
}

TEST_P(SyncTest, BarrierAbortWakesAWaitingChildWithBrokenBarrierError) {
  mproc::Barrier sut(2);
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(barrier_wait_report, sut, child);
  p.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 1; }));
  sut.abort();
  EXPECT_EQ(parent.recv<std::string>(), "BrokenBarrierError");
  p.join();
  EXPECT_TRUE(sut.broken());
  EXPECT_EQ(sut.n_waiting(), 0);
  EXPECT_THROW(sut.wait(1s), mproc::BrokenBarrierError);
}

TEST_P(SyncTest, BarrierResetWakesWaitersWithBrokenBarrierErrorAndIsUsableAfter) {
  mproc::Barrier sut(2);
  auto [parent, child] = mproc::Pipe();
  auto waiting = ctx().Process(barrier_wait_report, sut, child);
  waiting.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 1; }));
  sut.reset();
  EXPECT_EQ(parent.recv<std::string>(), "BrokenBarrierError");
  waiting.join();
  EXPECT_FALSE(sut.broken());

  auto partner = ctx().Process(barrier_wait_report, sut, child);
  partner.start();
  EXPECT_NO_THROW(sut.wait(60s));
  EXPECT_EQ(parent.recv<std::string>(), "ok");
  partner.join();
}

TEST_P(SyncTest, BarrierActionThatThrowsBreaksItAndPropagatesToTheLastParty) {
  mproc::Barrier sut(2, {.action = throwing_action});
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(barrier_wait_report, sut, child);
  p.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 1; }));
  EXPECT_THROW(sut.wait(60s), std::runtime_error);
  EXPECT_EQ(parent.recv<std::string>(), "BrokenBarrierError");
  p.join();
  EXPECT_TRUE(sut.broken());
}

TEST(BarrierTest, OnePartyPassesAtOnceAndZeroPartiesIsValueError) {
  mproc::Barrier one(1);
  EXPECT_EQ(one.wait(), 0);
  EXPECT_EQ(one.wait(), 0);
  EXPECT_THROW(mproc::Barrier(0), mproc::ValueError);
  EXPECT_THROW(mproc::Barrier(-3), mproc::ValueError);
}

TEST(BarrierTest, ThreadsOfOneProcessAreParties) {
  mproc::Barrier sut(3);
  std::vector<int> indices(3, -1);
  std::vector<std::thread> ts;
  for (int i = 0; i < 3; ++i) ts.emplace_back([&, i] { indices[static_cast<std::size_t>(i)] = sut.wait(30s); });
  for (auto& t : ts) t.join();
  std::sort(indices.begin(), indices.end());
  EXPECT_EQ(indices, (std::vector<int>{0, 1, 2}));
}

// --------------------------------------------------------------------------- garbage handles

using mproc_test::encode_handle;

template <class T>
std::string decode_handle(const std::string& bytes, const std::vector<int>& fds) {
  return mproc_test::decode_handle_with<T>(bytes, fds, [](auto f) { return outcome(f); });
}

int memfd_with_bytes(std::size_t size, unsigned char fill) {
  int fd = ::memfd_create("garbage", MFD_CLOEXEC);
  std::string bytes(size, static_cast<char>(fill));
  EXPECT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(size));
  return fd;
}

TEST(HandleGarbageTest, AValidHandleDecodesToTheSameObject) {
  mproc::Lock lock;
  auto [bytes, fds] = encode_handle(lock);
  std::vector<int> in{::fcntl(fds[0], F_DUPFD_CLOEXEC, 0)};
  mproc::detail::FdImportScope scope(in);
  mproc::detail::InArchive ar(bytes.data(), bytes.size());
  mproc::Lock copy;
  ar(copy);
  std::scoped_lock g(lock);
  EXPECT_TRUE(copy.locked());
}

TEST(HandleGarbageTest, TruncatedBytesAreProtocolError) {
  auto [bytes, fds] = encode_handle(mproc::Semaphore(1));
  for (std::size_t n = 0; n < bytes.size(); ++n)
    EXPECT_EQ(decode_handle<mproc::Semaphore>(bytes.substr(0, n), fds), "ProtocolError") << n;
}

TEST(HandleGarbageTest, ADescriptorSlotThatWasNotPassedIsProtocolError) {
  auto [bytes, fds] = encode_handle(mproc::Event());
  EXPECT_EQ(decode_handle<mproc::Event>(bytes, {}), "ProtocolError");
  bytes[0] = 7;  // slot 7 of one
  EXPECT_EQ(decode_handle<mproc::Event>(bytes, fds), "ProtocolError");
}

TEST(HandleGarbageTest, ADescriptorThatIsNotAnMprocObjectIsProtocolError) {
  auto [bytes, fds] = encode_handle(mproc::Lock());
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  EXPECT_EQ(decode_handle<mproc::Lock>(bytes, {pipe_fds[0]}), "ProtocolError");
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  for (auto [size, fill] : {std::pair<std::size_t, unsigned char>{0, 0}, {100, 0}, {4096, 0}, {4096, 0xff}, {8192, 0x5a}}) {
    int fd = memfd_with_bytes(size, fill);
    EXPECT_EQ(decode_handle<mproc::Lock>(bytes, {fd}), "ProtocolError") << size << " bytes of " << int(fill);
    ::close(fd);
  }
}

TEST(HandleGarbageTest, AnObjectOfAnotherKindIsProtocolError) {
  mproc::Lock lock;
  mproc::Semaphore sem;
  auto [lock_bytes, lock_fds] = encode_handle(lock);
  auto [sem_bytes, sem_fds] = encode_handle(sem);
  EXPECT_EQ(decode_handle<mproc::Semaphore>(lock_bytes, lock_fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::RLock>(lock_bytes, lock_fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::BoundedSemaphore>(sem_bytes, sem_fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::Barrier>(sem_bytes, sem_fds), "ProtocolError");
  // The handle claims a Semaphore, the memfd holds a Lock.
  EXPECT_EQ(decode_handle<mproc::Semaphore>(sem_bytes, lock_fds), "ProtocolError");
  EXPECT_EQ(decode_handle<mproc::Lock>(lock_bytes, sem_fds), "ProtocolError");
}

TEST(HandleGarbageTest, ABarrierActionThatIsNotAFunctionOfThisProgramIsRejected) {
  mproc::Barrier sut(2, {.action = count_action});
  auto [bytes, fds] = encode_handle(sut);
  // The function identity follows the slot (4 bytes), the kind (4) and has_action (1).
  bytes[9 + 8] = static_cast<char>(bytes[9 + 8] ^ 0x40);  // the offset
  EXPECT_EQ(decode_handle<mproc::Barrier>(bytes, fds), "ProtocolError");
}

INSTANTIATE_TEST_SUITE_P(StartMethods, SyncTest, ::testing::Values("fork", "spawn", "forkserver"));

// Python refuses a NaN timeout (ValueError); so does every wait here, even one that would not
// have to wait (a free lock), so that a NaN is found where it is made.
TEST(TimeoutTest, NaNTimeoutsAreInvalidArgumentsNamingTheCallEvenWhenNoWaitIsNeeded) {
  const auto nan = mproc::seconds(std::nan(""));
  mproc::Lock lock;
  mproc::RLock rlock;
  mproc::Semaphore sem(1);
  mproc::Condition cond;
  mproc::Event ev;
  mproc::Barrier barrier(1);
  auto check = [](const std::string& call, auto f) { support::expect_nan_refused(call, f); };
  check("Lock.acquire", [&] { lock.acquire(true, nan); });
  check("Lock.acquire", [&] { (void)lock.try_lock_for(nan); });
  check("RLock.acquire", [&] { rlock.acquire(true, nan); });
  check("Semaphore.acquire", [&] { sem.acquire(true, nan); });
  ASSERT_TRUE(cond.acquire());
  check("Condition.wait", [&] { cond.wait(nan); });
  check("Condition.wait_for", [&] { cond.wait_for([] { return true; }, nan); });
  cond.release();
  ev.set();
  check("Event.wait", [&] { ev.wait(nan); });
  check("Barrier.wait", [&] { barrier.wait(nan); });
  check("Barrier", [&] { mproc::Barrier(2, {.timeout = nan}); });
  EXPECT_FALSE(lock.locked());  // nothing was taken
  EXPECT_FALSE(rlock.locked());
  EXPECT_EQ(sem.get_value(), 1);
  EXPECT_FALSE(barrier.broken());
}

}  // namespace
