// Holders of locks, waiters and barrier parties SIGKILLed on purpose, under every start method:
// the next acquirer gets the lock and learns that its owner died, and nothing hangs.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

namespace {

using namespace std::chrono_literals;
using mproc::seconds;

class OwnerDiedTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }

  // Starts target(args...) and waits until it says (through `ready`) that it holds what it
  // should hold.
  template <class F, class... Args>
  mproc::Process start_holder(mproc::Event ready, F f, Args... args) {
    auto p = ctx().Process(f, ready, args...);
    p.start();
    EXPECT_TRUE(ready.wait(30s)) << "the child never reported that it holds the lock";
    return p;
  }

  static void kill_and_join(mproc::Process& p) {
    p.kill();
    p.join();
    EXPECT_EQ(p.exitcode(), -SIGKILL);
  }
};

template <class F>
bool eventually(F f) {
  for (int i = 0; i < 10000; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

void sleep_forever() {
  for (;;) ::pause();
}

void hold_lock(mproc::Event ready, mproc::Lock lock) {
  lock.acquire();
  ready.set();
  sleep_forever();
}

void hold_rlock_three_deep(mproc::Event ready, mproc::RLock lock) {
  lock.acquire();
  lock.acquire();
  lock.acquire();
  ready.set();
  sleep_forever();
}

void hold_value_lock(mproc::Event ready, mproc::Value<int> v) {
  v.get_lock().acquire();
  v.value() = -1;  // half-way through an update
  ready.set();
  sleep_forever();
}

void hold_semaphore(mproc::Event ready, mproc::Semaphore sem) {
  sem.acquire();
  ready.set();
  sleep_forever();
}

// Acquires (blocking, no timeout) and reports (acquired, owner_died).
void acquire_and_report(mproc::Event about_to_block, mproc::Lock lock, mproc::Connection out) {
  about_to_block.set();
  bool got = lock.acquire();
  out.send(std::make_pair(got, lock.owner_died()));
  lock.release();
}

void notify_then_hold(mproc::Event ready, mproc::Condition cond) {
  cond.acquire();
  cond.notify();
  ready.set();
  sleep_forever();  // dies holding the lock a waiter needs to return from wait()
}

void hold_condition(mproc::Event ready, mproc::Condition cond) {
  cond.acquire();
  ready.set();
  sleep_forever();
}

// Registers as a waiter (ready counts it, under the lock), then reports (notified, owner_died).
void wait_and_report(mproc::Condition cond, mproc::RawValue<int> ready, mproc::Connection out) {
  std::scoped_lock guard(cond);
  ++ready.value();
  bool notified = cond.wait(60s);
  out.send(std::make_pair(notified, cond.owner_died()));
}

void wait_at_barrier_forever(mproc::Barrier b) {
  try {
    b.wait();
  } catch (...) {
  }
  sleep_forever();
}

void wait_at_barrier_report(mproc::Barrier b, mproc::Connection out) {
  try {
    b.wait(60s);
    out.send(std::string("ok"));
  } catch (const mproc::BrokenBarrierError& e) {
    out.send(std::string(e.what()));
  }
}

// --------------------------------------------------------------------------- Lock / RLock

TEST_P(OwnerDiedTest, LockHolderKilledNextAcquirerGetsTheLockAndOwnerDied) {
  mproc::Lock sut;
  auto holder = start_holder(mproc::Event(), hold_lock, sut);
  EXPECT_TRUE(sut.locked());
  kill_and_join(holder);

  EXPECT_FALSE(sut.locked()) << "a dead owner's lock is free for the taking";
  ASSERT_TRUE(sut.acquire(true, 30s));
  EXPECT_TRUE(sut.owner_died());
  sut.release();
  EXPECT_FALSE(sut.locked());

  // Repaired: the next owner is an ordinary one.
  ASSERT_TRUE(sut.acquire(false));
  EXPECT_FALSE(sut.owner_died());
  sut.release();
}

TEST_P(OwnerDiedTest, ProcessBlockedOnALockIsWokenWhenTheHolderDies) {
  mproc::Lock sut;
  auto holder = start_holder(mproc::Event(), hold_lock, sut);
  mproc::Event about_to_block;
  auto [parent, child] = mproc::Pipe();
  auto waiter = ctx().Process(acquire_and_report, about_to_block, sut, child);
  waiter.start();
  ASSERT_TRUE(about_to_block.wait(30s));
  kill_and_join(holder);  // the waiter blocks without a timeout: only its check of the owner frees it

  auto [got, owner_died] = parent.recv<std::pair<bool, bool>>();
  EXPECT_TRUE(got);
  EXPECT_TRUE(owner_died);
  waiter.join();
  EXPECT_EQ(waiter.exitcode(), 0);
  EXPECT_FALSE(sut.locked());
}

TEST_P(OwnerDiedTest, RLockHolderKilledThreeLevelsDeepLeavesOneLevelToTheNextAcquirer) {
  mproc::RLock sut;
  auto holder = start_holder(mproc::Event(), hold_rlock_three_deep, sut);
  kill_and_join(holder);

  ASSERT_TRUE(sut.acquire(true, 30s));
  EXPECT_TRUE(sut.owner_died());
  sut.release();  // the dead owner's levels are gone with it
  EXPECT_FALSE(sut.locked());
  EXPECT_THROW(sut.release(), mproc::RuntimeError);
}

TEST_P(OwnerDiedTest, ValueLockHolderKilledMidUpdateIsReportedToTheNextAcquirer) {
  mproc::Value<int> sut(10);
  auto holder = start_holder(mproc::Event(), hold_value_lock, sut);
  kill_and_join(holder);

  std::scoped_lock guard(sut.get_lock());
  ASSERT_TRUE(sut.get_lock().owner_died());
  EXPECT_EQ(sut.value(), -1);  // what the dead owner left: the reason to tell the next one
}

// --------------------------------------------------------------------------- Condition

TEST_P(OwnerDiedTest, ConditionLockHolderKilledNextAcquirerGetsItAndOwnerDied) {
  mproc::Condition sut;
  auto holder = start_holder(mproc::Event(), hold_condition, sut);
  kill_and_join(holder);

  ASSERT_TRUE(sut.acquire(true, 30s));
  EXPECT_TRUE(sut.owner_died());
  EXPECT_FALSE(sut.wait(10ms));  // usable: waits and times out normally
  sut.release();
}

TEST_P(OwnerDiedTest, WaiterReacquiresTheLockOfANotifierThatDiedHoldingIt) {
  mproc::Condition sut;
  mproc::RawValue<int> ready(0);
  auto [parent, child] = mproc::Pipe();
  auto waiter = ctx().Process(wait_and_report, sut, ready, child);
  waiter.start();
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return ready.value() == 1;
  }));
  auto notifier = start_holder(mproc::Event(), notify_then_hold, sut);
  kill_and_join(notifier);

  auto [notified, owner_died] = parent.recv<std::pair<bool, bool>>();
  EXPECT_TRUE(notified);
  EXPECT_TRUE(owner_died);
  waiter.join();
  EXPECT_EQ(waiter.exitcode(), 0);
}

TEST_P(OwnerDiedTest, AWaiterKilledWhileWaitingDoesNotSwallowANotifyMeantForALiveOne) {
  mproc::Condition sut;
  mproc::RawValue<int> ready(0);
  auto [parent, child] = mproc::Pipe();
  auto doomed = ctx().Process(wait_and_report, sut, ready, child);
  doomed.start();
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return ready.value() == 1;
  }));
  auto live = ctx().Process(wait_and_report, sut, ready, child);
  live.start();
  ASSERT_TRUE(eventually([&] {
    std::scoped_lock g(sut);
    return ready.value() == 2;
  }));
  kill_and_join(doomed);

  {
    std::scoped_lock g(sut);
    sut.notify();  // one notify, two registered waiters, one of them dead
  }
  auto [notified, owner_died] = parent.recv<std::pair<bool, bool>>();
  EXPECT_TRUE(notified);
  EXPECT_FALSE(owner_died);
  live.join();
  EXPECT_EQ(live.exitcode(), 0);
}

// --------------------------------------------------------------------------- Barrier

TEST_P(OwnerDiedTest, BarrierPartyKilledWhileWaitingBreaksTheBarrierForTheOthers) {
  mproc::Barrier sut(3);
  auto doomed = ctx().Process(wait_at_barrier_forever, sut);
  doomed.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 1; }));
  auto [parent, child] = mproc::Pipe();
  auto survivor = ctx().Process(wait_at_barrier_report, sut, child);
  survivor.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 2; }));
  const int doomed_pid = *doomed.pid();
  kill_and_join(doomed);

  // The survivor waits with no deadline in sight (60 s): the dead party's slot tells it.
  std::string what = parent.recv<std::string>();
  EXPECT_NE(what.find("party pid " + std::to_string(doomed_pid) + " died"), std::string::npos) << what;
  survivor.join();
  EXPECT_TRUE(sut.broken());
  EXPECT_EQ(sut.n_waiting(), 0);
  EXPECT_THROW(sut.wait(30s), mproc::BrokenBarrierError);

  sut.reset();  // and it can be used again with live parties
  EXPECT_FALSE(sut.broken());
  auto a = ctx().Process(wait_at_barrier_report, sut, child);
  auto b = ctx().Process(wait_at_barrier_report, sut, child);
  a.start();
  b.start();
  EXPECT_NO_THROW(sut.wait(60s));
  EXPECT_EQ(parent.recv<std::string>(), "ok");
  EXPECT_EQ(parent.recv<std::string>(), "ok");
  a.join();
  b.join();
}

TEST_P(OwnerDiedTest, BarrierSeesADeadPartyAtOnceWhenAskedAfterItWasReaped) {
  mproc::Barrier sut(2);
  auto doomed = ctx().Process(wait_at_barrier_forever, sut);
  doomed.start();
  ASSERT_TRUE(eventually([&] { return sut.n_waiting() == 1; }));
  kill_and_join(doomed);
  EXPECT_TRUE(sut.broken());  // no poll interval involved: the query itself looks
  EXPECT_THROW(sut.wait(30s), mproc::BrokenBarrierError);
}

// --------------------------------------------------------------------------- Semaphore

TEST_P(OwnerDiedTest, SemaphoreUnitsOfAKilledHolderAreLostButTimedWaitersReturn) {
  // Documented behaviour: a Semaphore has no owner, so the unit is not given back; a waiter
  // with a timeout returns false instead of hanging, and a release() by anyone restores it.
  mproc::Semaphore sut(1);
  auto holder = start_holder(mproc::Event(), hold_semaphore, sut);
  kill_and_join(holder);

  EXPECT_EQ(sut.get_value(), 0);
  EXPECT_FALSE(sut.acquire(true, 20ms));
  sut.release();
  EXPECT_TRUE(sut.acquire(false));
}

INSTANTIATE_TEST_SUITE_P(StartMethods, OwnerDiedTest, ::testing::Values("fork", "spawn", "forkserver"));

}  // namespace
