// Managers: every proxy type in one process, then shared by several processes under every
// start method with exact final contents; references released when the last proxy goes;
// atomic updates (add, update_with) from 8 clients with nothing lost; BaseManager with a
// registered type, get_server().serve_forever(), connect(). Failures are in
// tests/fault/test_manager_faults.cpp; the remote program in tests/helpers/manager_client.cpp.
#include <gtest/gtest.h>
#include <mproc/managers.hpp>
#include <mproc/mproc.hpp>

#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <typeinfo>
#include <string>
#include <thread>
#include <vector>

#include "support/managers.hpp"
#include "support/program.hpp"

// Outside any anonymous namespace: the remote program (tests/helpers/manager_client.cpp)
// registers the same type under the same name, and the server checks that the names match.
struct Counter {
  long n = 0;
  long add(long k) { return n += k; }
  long get() const { return n; }
  void fail() { throw std::logic_error("counter says no"); }
};

// A type made from constructor arguments (a factory), and a tree whose methods hand out
// server-side objects (Python's method_to_typeid).
struct Account {
  std::string owner;
  long balance = 0;
  long deposit(long k) { return balance += k; }
  std::string who() const { return owner; }
};
struct Node {
  long value = 0;
  long add(long k) { return value += k; }
};
struct Leaf {  // registered nowhere
  int x = 0;
};
struct Tree {
  std::vector<std::shared_ptr<Node>> nodes{std::make_shared<Node>(), std::make_shared<Node>()};
  std::shared_ptr<Node> child(int i) { return i >= 0 && i < 2 ? nodes[static_cast<std::size_t>(i)] : nullptr; }
  std::unique_ptr<Node> fresh(long v) { return std::make_unique<Node>(Node{v}); }
  std::unique_ptr<Leaf> stray() { return std::make_unique<Leaf>(); }
  long sum() const { return nodes[0]->value + nodes[1]->value; }
};

std::unique_ptr<Account> open_account(std::string owner, long start) {
  if (start < 0) throw std::invalid_argument("a negative opening balance");
  return std::make_unique<Account>(Account{std::move(owner), start});
}

namespace {

using mproc::seconds;
using mproc_test::settled_objects;

class ManagerTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
  mproc::SyncManager manager() const { return mproc::Manager({.ctx = ctx()}); }
};

void join_all(std::vector<mproc::Process>& ps) {
  for (auto& p : ps) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
}

template <class F, class... A>
std::vector<mproc::Process> start_n(const mproc::Context& ctx, int n, F f, A... a) {
  std::vector<mproc::Process> ps;
  for (int i = 0; i < n; ++i) ps.push_back(ctx.Process(f, i, a...));
  for (auto& p : ps) p.start();
  return ps;
}

int twice(int v) { return v * 2; }
std::string shout(std::string s) { return s + "!"; }

// Each asserts the exact type (not only a base) and that the message names the cause.
template <class E, class F>
std::string message_of(F f) {
  try {
    f();
  } catch (const E& e) {
    EXPECT_EQ(typeid(e), typeid(E)) << e.what();
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "another exception: " << typeid(e).name() << ": " << e.what();
    return {};
  }
  ADD_FAILURE() << "no exception";
  return {};
}
bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ------------------------------------------------------------------ one process, every type

TEST(ManagerBasics, DictBehavesLikePythonsDict) {
  auto m = mproc::Manager();
  auto sut = m.dict<std::string, int>();
  sut.set("a", 1);
  sut.set("b", 2);
  EXPECT_EQ(sut.at("a"), 1);
  EXPECT_EQ(sut.get("zz"), std::nullopt);
  EXPECT_EQ(sut.get("zz", 7), 7);
  EXPECT_THROW(sut.at("zz"), mproc::KeyError);
  EXPECT_TRUE(sut.contains("b"));
  EXPECT_EQ(sut.size(), 2u);
  EXPECT_EQ(sut.setdefault("a", 100), 1);
  EXPECT_EQ(sut.setdefault("c", 3), 3);
  EXPECT_EQ(sut.pop("c"), 3);
  EXPECT_EQ(sut.pop("c", -1), -1);
  EXPECT_THROW(sut.pop("c"), mproc::KeyError);
  sut.erase("b");
  EXPECT_THROW(sut.erase("b"), mproc::KeyError);
  sut.update({{"x", 10}, {"y", 20}});
  auto many = sut.get_many({"x", "nope", "y"});
  ASSERT_EQ(many.size(), 3u);
  EXPECT_EQ(many[0], 10);
  EXPECT_EQ(many[1], std::nullopt);
  EXPECT_EQ(many[2], 20);
  auto items = sut.items();
  std::sort(items.begin(), items.end());
  EXPECT_EQ(items, (std::vector<std::pair<std::string, int>>{{"a", 1}, {"x", 10}, {"y", 20}}));
  EXPECT_EQ(sut.keys().size(), 3u);
  EXPECT_EQ(sut.values().size(), 3u);
  EXPECT_EQ(sut.add("a", 41), 42);
  EXPECT_EQ(sut.add("new", 5), 5);
  EXPECT_EQ(sut.update_with("a", twice), 84);
  EXPECT_EQ(sut.update_with("fresh", [](int v) { return v + 1; }, 10), 11);
  sut.clear();
  EXPECT_EQ(sut.size(), 0u);
}

TEST(ManagerBasics, DictOfStructuredValues) {
  auto m = mproc::Manager();
  auto sut = m.dict<int, std::vector<std::string>>();
  sut.set(1, {"a", "b"});
  EXPECT_EQ(sut.at(1), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(sut.update_with(1, [](std::vector<std::string> v) { v.push_back("c"); return v; }).size(), 3u);
}

TEST(ManagerBasics, ListBehavesLikePythonsList) {
  auto m = mproc::Manager();
  auto sut = m.list<std::string>({"a", "b"});
  sut.append("c");
  sut.extend({"d", "e"});
  EXPECT_EQ(sut.size(), 5u);
  EXPECT_EQ(sut.at(-1), "e");
  EXPECT_THROW(sut.at(5), mproc::IndexError);
  sut.set(0, "A");
  sut.insert(1, "ins");
  EXPECT_EQ(sut.pop(), "e");
  EXPECT_EQ(sut.pop(0), "A");
  EXPECT_EQ(sut.index("b"), 1u);
  EXPECT_EQ(sut.count("zz"), 0u);
  sut.remove("ins");
  EXPECT_THROW(sut.remove("ins"), mproc::ValueError);
  EXPECT_EQ(sut.tolist(), (std::vector<std::string>{"b", "c", "d"}));
  EXPECT_EQ(sut.update_with(0, shout), "b!");
  sut.erase(0);
  EXPECT_EQ(sut.tolist(), (std::vector<std::string>{"c", "d"}));
  sut.clear();
  EXPECT_EQ(sut.size(), 0u);
}

TEST(ManagerBasics, NamespaceValueArray) {
  auto m = mproc::Manager();
  auto ns = m.Namespace();
  ns.set("x", 3);
  ns.set("name", std::string("mproc"));
  EXPECT_EQ(ns.get<int>("x"), 3);
  EXPECT_EQ(ns.get<std::string>("name"), "mproc");
  EXPECT_THROW(ns.get<double>("x"), mproc::TypeMismatchError);
  EXPECT_THROW(ns.get<int>("missing"), mproc::KeyError);
  EXPECT_TRUE(ns.has("x"));
  ns.erase("x");
  EXPECT_FALSE(ns.has("x"));
  EXPECT_EQ(ns.names(), std::vector<std::string>{"name"});

  auto v = m.Value<double>(1.5);
  EXPECT_EQ(v.get(), 1.5);
  v.set(2.5);
  EXPECT_EQ(v.add(1.0), 3.5);
  EXPECT_EQ(v.update_with([](double d) { return d * 2; }), 7.0);

  auto a = m.Array<int>({1, 2, 3});
  EXPECT_EQ(a.size(), 3u);
  a.set(-1, 30);
  EXPECT_EQ(a.at(2), 30);
  EXPECT_EQ(a.add(0, 10), 11);
  EXPECT_EQ(a.tolist(), (std::vector<int>{11, 2, 30}));
  a.assign({7, 8, 9});
  EXPECT_EQ(a.tolist(), (std::vector<int>{7, 8, 9}));
  EXPECT_THROW(a.assign({1}), mproc::ValueError);
  EXPECT_THROW(a.at(3), mproc::IndexError);
}

TEST(ManagerBasics, QueuesAndSynchronisation) {
  auto m = mproc::Manager();
  auto q = m.Queue<int>(2);
  q.put(1);
  q.put(2);
  EXPECT_TRUE(q.full());
  EXPECT_THROW(q.put_nowait(3), mproc::queue::Full);
  EXPECT_THROW(q.put(3, true, seconds(0.01)), mproc::queue::Full);
  EXPECT_EQ(q.get(), 1);
  EXPECT_EQ(q.qsize(), 1u);
  EXPECT_EQ(q.get_nowait(), 2);
  EXPECT_THROW(q.get_nowait(), mproc::queue::Empty);
  EXPECT_THROW(q.get(true, seconds(0.01)), mproc::queue::Empty);
  EXPECT_THROW(q.task_done(), mproc::Error);

  auto jq = m.JoinableQueue<int>();
  jq.put(5);
  EXPECT_EQ(jq.get(), 5);
  jq.task_done();
  jq.join();
  EXPECT_THROW(jq.task_done(), mproc::ValueError);

  auto lock = m.Lock();
  EXPECT_TRUE(lock.acquire());
  EXPECT_TRUE(lock.locked());
  EXPECT_FALSE(lock.acquire(false));
  EXPECT_THROW(lock.acquire(), mproc::RuntimeError);
  lock.release();
  EXPECT_THROW(lock.release(), mproc::RuntimeError);
  { std::lock_guard g(lock); }

  auto rlock = m.RLock();
  EXPECT_TRUE(rlock.acquire());
  EXPECT_TRUE(rlock.acquire());
  rlock.release();
  rlock.release();
  EXPECT_THROW(rlock.release(), mproc::RuntimeError);

  auto sem = m.Semaphore(2);
  EXPECT_TRUE(sem.acquire());
  EXPECT_TRUE(sem.acquire());
  EXPECT_FALSE(sem.acquire(true, seconds(0.01)));
  EXPECT_EQ(sem.get_value(), 0);
  sem.release();
  sem.release();
  sem.release();  // a plain Semaphore may go above its start
  auto bsem = m.BoundedSemaphore(1);
  EXPECT_THROW(bsem.release(), mproc::ValueError);

  auto ev = m.Event();
  EXPECT_FALSE(ev.is_set());
  EXPECT_FALSE(ev.wait(seconds(0.01)));
  ev.set();
  EXPECT_TRUE(ev.wait());
  ev.clear();
  EXPECT_FALSE(ev.is_set());

  auto cond = m.Condition();
  EXPECT_THROW(cond.wait(seconds(0.01)), mproc::RuntimeError);
  EXPECT_THROW(cond.notify(), mproc::RuntimeError);
  cond.acquire();
  EXPECT_FALSE(cond.wait(seconds(0.01)));
  cond.notify_all();
  cond.release();

  auto bar = m.Barrier(1);
  EXPECT_EQ(bar.wait(), 0);
  EXPECT_EQ(bar.parties(), 1);
  bar.abort();
  EXPECT_TRUE(bar.broken());
  EXPECT_THROW(bar.wait(), mproc::BrokenBarrierError);
  bar.reset();
  EXPECT_FALSE(bar.broken());
}

TEST(ManagerBasics, ConditionWakesAWaiterInAnotherThread) {
  auto m = mproc::Manager();
  auto cond = m.Condition(m.Lock());
  auto flag = m.Value<int>(0);
  std::thread waiter([&] {
    std::lock_guard g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return flag.get() == 1; }, seconds(60)));
  });
  {
    std::lock_guard g(cond);
    flag.set(1);
    cond.notify_all();
  }
  waiter.join();
}

TEST(ManagerBasics, DictAndNamespaceKeepInsertionOrderAsPythonsDict) {
  auto m = mproc::Manager();
  auto sut = m.dict<std::string, int>();
  for (const char* k : {"zebra", "apple", "mango", "kiwi"}) sut.set(k, 1);
  sut.set("apple", 2);  // an existing key keeps its place
  sut.erase("zebra");
  sut.set("zebra", 3);  // a deleted key comes back at the end
  sut.update({{"fig", 4}, {"mango", 5}});
  EXPECT_EQ(sut.keys(), (std::vector<std::string>{"apple", "mango", "kiwi", "zebra", "fig"}));
  EXPECT_EQ(sut.values(), (std::vector<int>{2, 5, 1, 3, 4}));
  EXPECT_EQ(sut.pop("mango"), 5);
  EXPECT_EQ(sut.items(), (std::vector<std::pair<std::string, int>>{{"apple", 2}, {"kiwi", 1}, {"zebra", 3}, {"fig", 4}}));
  auto ns = m.Namespace();
  ns.set("y", 1);
  ns.set("x", 2);
  ns.set("y", 3);
  EXPECT_EQ(ns.names(), (std::vector<std::string>{"y", "x"}));
}

TEST(ManagerBasics, ObjectsAreReleasedWithTheirLastProxy) {
  auto m = mproc::Manager();
  EXPECT_EQ(m.number_of_objects(), 0u);
  {
    auto d = m.dict<int, int>();
    auto copy = d;
    auto l = m.list<int>();
    EXPECT_EQ(m.number_of_objects(), 2u);
  }
  EXPECT_EQ(m.number_of_objects(), 0u);
}

TEST(ManagerBasics, ShutdownMakesEveryCallAConnectionError) {
  auto m = mproc::Manager();
  auto d = m.dict<int, int>();
  d.set(1, 1);
  m.shutdown();
  EXPECT_THROW(d.set(1, 2), mproc::ConnectionError);
  EXPECT_THROW(d.at(1), mproc::ConnectionError);
}

// ------------------------------------------------------------------ across processes

void dict_worker(int i, mproc::DictProxy<std::string, long> d, int n) {
  for (int k = 0; k < n; ++k) d.add("total", 1);
  d.set("child" + std::to_string(i), i);
}

TEST_P(ManagerTest, DictSharedByProcessesHasExactContents) {
  auto m = manager();
  auto d = m.dict<std::string, long>();
  auto ps = start_n(ctx(), 3, dict_worker, d, 200);
  join_all(ps);
  EXPECT_EQ(d.at("total"), 600);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(d.at("child" + std::to_string(i)), i);
  EXPECT_EQ(d.size(), 4u);
}

void update_worker(int, mproc::DictProxy<int, int> d, int n) {
  for (int k = 0; k < n; ++k) d.update_with(0, [](int v) { return v + 3; });
}

TEST_P(ManagerTest, UpdateWithFromChildrenLosesNothing) {
  auto m = manager();
  auto d = m.dict<int, int>();
  auto ps = start_n(ctx(), 3, update_worker, d, 100);
  join_all(ps);
  EXPECT_EQ(d.at(0), 900);
}

void counter_worker(int, mproc::ValueProxy<long> v, int n) {
  for (int k = 0; k < n; ++k) v.add(1);
}

TEST_P(ManagerTest, EightClientsTimesTenThousandUpdatesLoseNothing) {
  auto m = manager();
  auto v = m.Value<long>(0);
  auto ps = start_n(ctx(), 8, counter_worker, v, 10000);
  join_all(ps);
  EXPECT_EQ(v.get(), 80000);
}

void locked_worker(int, mproc::AcquirerProxy lock, mproc::DictProxy<int, int> d, int n) {
  for (int k = 0; k < n; ++k) {
    std::lock_guard g(lock);
    d.set(0, d.at(0) + 1);  // two steps, made safe by the lock
  }
}

TEST_P(ManagerTest, LockMakesReadModifyWriteSafe) {
  auto m = manager();
  auto d = m.dict<int, int>();
  d.set(0, 0);
  auto lock = m.Lock();
  auto ps = start_n(ctx(), 3, locked_worker, lock, d, 100);
  join_all(ps);
  EXPECT_EQ(d.at(0), 300);
}

void rlock_and_semaphore_worker(int, mproc::AcquirerProxy rlock, mproc::AcquirerProxy sem, mproc::ValueProxy<int> a,
                                mproc::ValueProxy<int> b, int n) {
  for (int k = 0; k < n; ++k) {
    {
      std::lock_guard outer(rlock);
      std::lock_guard inner(rlock);  // re-entrant
      a.set(a.get() + 1);            // two steps, made safe by the RLock
    }
    std::lock_guard g(sem);  // Semaphore(1): a mutex too
    b.set(b.get() + 1);
  }
}

TEST_P(ManagerTest, RLockAndSemaphoreSharedByProcessesLoseNothing) {
  auto m = manager();
  auto rlock = m.RLock();
  auto sem = m.Semaphore(1);
  auto a = m.Value<int>(0);
  auto b = m.Value<int>(0);
  auto ps = start_n(ctx(), 3, rlock_and_semaphore_worker, rlock, sem, a, b, 100);
  join_all(ps);
  EXPECT_EQ(a.get(), 300);
  EXPECT_EQ(b.get(), 300);
  EXPECT_FALSE(rlock.locked());
  EXPECT_EQ(sem.get_value(), 1);
}

void list_and_queue_worker(int i, mproc::ListProxy<int> l, mproc::QueueProxy<int> q, mproc::NamespaceProxy ns,
                           mproc::ArrayProxy<int> a) {
  l.append(i);
  q.put(i * 10);
  ns.set("from" + std::to_string(i), i);
  a.add(i, 5);
}

TEST_P(ManagerTest, ListQueueNamespaceArraySharedByProcesses) {
  auto m = manager();
  auto l = m.list<int>();
  auto q = m.Queue<int>();
  auto ns = m.Namespace();
  auto a = m.Array<int>({0, 0, 0});
  auto ps = start_n(ctx(), 3, list_and_queue_worker, l, q, ns, a);
  std::vector<int> got;
  for (int i = 0; i < 3; ++i) got.push_back(q.get(true, seconds(60)));
  join_all(ps);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<int>{0, 10, 20}));
  auto items = l.tolist();
  std::sort(items.begin(), items.end());
  EXPECT_EQ(items, (std::vector<int>{0, 1, 2}));
  auto names = ns.names();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"from0", "from1", "from2"}));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(ns.get<int>("from" + std::to_string(i)), i);
  EXPECT_EQ(a.tolist(), (std::vector<int>{5, 5, 5}));
}

void sync_worker(int i, mproc::BarrierProxy bar, mproc::EventProxy ev, mproc::JoinableQueueProxy<int> jq,
                 mproc::AcquirerProxy sem, mproc::ConditionProxy cond, mproc::ValueProxy<int> woken) {
  bar.wait(seconds(60));
  if (!ev.wait(seconds(60))) std::exit(2);
  int item = jq.get(true, seconds(60));
  jq.task_done();
  if (!sem.acquire(true, seconds(60))) std::exit(3);
  sem.release();
  {
    std::lock_guard g(cond);
    woken.add(1);
    cond.notify_all();
  }
  (void)i;
  (void)item;
}

TEST_P(ManagerTest, SynchronisationObjectsSharedByProcesses) {
  auto m = manager();
  auto bar = m.Barrier(4);
  auto ev = m.Event();
  auto jq = m.JoinableQueue<int>();
  auto sem = m.BoundedSemaphore(1);
  auto cond = m.Condition();
  auto woken = m.Value<int>(0);
  auto ps = start_n(ctx(), 3, sync_worker, bar, ev, jq, sem, cond, woken);
  bar.wait(seconds(60));
  for (int i = 0; i < 3; ++i) jq.put(i);
  ev.set();
  jq.join();
  {
    std::lock_guard g(cond);
    EXPECT_TRUE(cond.wait_for([&] { return woken.get() == 3; }, seconds(60)));
  }
  join_all(ps);
}

int pool_task(mproc::DictProxy<int, int> d, int i) {
  d.set(i, i * i);
  return d.add(-1, 1) > 0 ? 1 : 0;
}

TEST_P(ManagerTest, ProxiesTravelToPoolTasks) {
  auto m = manager();
  auto d = m.dict<int, int>();
  {
    mproc::Pool pool({.processes = 2, .context = ctx()});
    int sum = 0;
    for (int i = 0; i < 6; ++i) sum += pool.apply(pool_task, d, i);
    EXPECT_EQ(sum, 6);
  }
  EXPECT_EQ(d.at(-1), 6);
  EXPECT_EQ(d.at(5), 25);
}

void send_proxy_back(int, mproc::Connection out, mproc::DictProxy<int, int> d) {
  auto copy = d;
  copy.set(1, 11);
  out.send(copy);  // a proxy travels through a Connection as well
}

TEST_P(ManagerTest, ProxyTravelsThroughAConnectionAndObjectsAreReleasedAfterChildren) {
  auto m = manager();
  {
    auto [mine, theirs] = mproc::Pipe();
    auto d = m.dict<int, int>();
    auto ps = start_n(ctx(), 1, send_proxy_back, theirs, d);
    auto back = mine.recv<mproc::DictProxy<int, int>>();
    join_all(ps);
    EXPECT_EQ(back.at(1), 11);
    EXPECT_EQ(back.id(), d.id());
  }
  EXPECT_EQ(settled_objects(m, 0), 0u);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, ManagerTest, ::testing::Values("fork", "spawn", "forkserver"));

// ------------------------------------------------------------------ timeouts, read as local objects read them

TEST(ManagerTimeouts, NaNTimeoutsAreInvalidArgumentsNamingTheCallAndNothingIsSent) {
  auto m = mproc::Manager();
  const auto nan = seconds(std::nan(""));
  auto lock = m.Lock();
  auto sem = m.Semaphore(1);
  auto cond = m.Condition();
  auto ev = m.Event();
  auto barrier = m.Barrier(1);
  auto q = m.Queue<int>();
  const std::size_t objects = m.number_of_objects();
  auto check = [](const std::string& call, auto f) {
    std::string msg = message_of<std::invalid_argument>(f);
    EXPECT_TRUE(has(msg, call + "(): timeout is NaN")) << msg;
  };
  check("AcquirerProxy.acquire", [&] { lock.acquire(true, nan); });
  check("AcquirerProxy.acquire", [&] { sem.acquire(true, nan); });
  check("ConditionProxy.wait", [&] { cond.wait(nan); });
  check("ConditionProxy.wait_for", [&] { cond.wait_for([] { return true; }, nan); });
  check("EventProxy.wait", [&] { ev.wait(nan); });
  check("BarrierProxy.wait", [&] { barrier.wait(nan); });
  check("QueueProxy.put", [&] { q.put(1, true, nan); });
  check("QueueProxy.get", [&] { q.get(true, nan); });
  check("SyncManager.Barrier", [&] { m.Barrier(2, nan); });
  EXPECT_FALSE(lock.locked());  // none of them reached the server
  EXPECT_EQ(sem.get_value(), 1);
  EXPECT_EQ(q.qsize(), 0u);
  EXPECT_EQ(m.number_of_objects(), objects);
}

// The server reads a negative number as "no timeout": before the client mapped them, these
// waited forever where a local Lock returns at once.
TEST(ManagerTimeouts, NegativeTimeoutsWaitNotAtAllAsForLocalObjects) {
  auto m = mproc::Manager();
  auto lock = m.Lock();
  auto sem = m.Semaphore(0);
  auto cond = m.Condition();
  auto ev = m.Event();
  auto q = m.Queue<int>(1);
  ASSERT_TRUE(lock.acquire());  // held by this thread
  for (double t : {-1.0, -std::numeric_limits<double>::infinity()}) {
    std::thread other([&] { EXPECT_FALSE(lock.acquire(true, seconds(t))) << t; });
    other.join();
    EXPECT_FALSE(sem.acquire(true, seconds(t))) << t;
    EXPECT_FALSE(ev.wait(seconds(t))) << t;
    ASSERT_TRUE(cond.acquire());
    EXPECT_FALSE(cond.wait(seconds(t))) << t;
    EXPECT_FALSE(cond.wait_for([] { return false; }, seconds(t))) << t;
    cond.release();
    EXPECT_THROW(q.get(true, seconds(t)), mproc::queue::Empty) << t;
    q.put(1);
    EXPECT_THROW(q.put(2, true, seconds(t)), mproc::queue::Full) << t;
    EXPECT_EQ(q.get(), 1);
    auto barrier = m.Barrier(2);
    EXPECT_THROW(barrier.wait(seconds(t)), mproc::BrokenBarrierError) << t;
  }
  lock.release();
}

TEST(ManagerTimeouts, InfiniteOrHugeTimeoutsWaitWithoutADeadline) {
  auto m = mproc::Manager();
  auto q = m.Queue<int>();
  auto ev = m.Event();
  auto cond = m.Condition();
  for (double t : {std::numeric_limits<double>::infinity(), 1e300}) {
    std::thread other([&] {
      q.put(7);
      ev.set();
    });
    EXPECT_EQ(q.get(true, seconds(t)), 7) << t;
    EXPECT_TRUE(ev.wait(seconds(t))) << t;
    other.join();
    ev.clear();
    ASSERT_TRUE(cond.acquire());
    EXPECT_TRUE(cond.wait_for([] { return true; }, seconds(t))) << t;  // no deadline overflows the clock
    cond.release();
  }
}

// ------------------------------------------------------------------ BaseManager, register_type

TEST(BaseManagerTest, RegisteredTypeIsCreatedAndCalledOnTheServer) {
  mproc::BaseManager m;
  m.register_type<Counter, &Counter::add, &Counter::get, &Counter::fail>("Counter");
  m.start();
  auto c = m.create<Counter>("Counter");
  EXPECT_EQ(c.call<&Counter::add>(5), 5);
  EXPECT_EQ(c.call<&Counter::add>(2), 7);
  EXPECT_EQ(c.call<&Counter::get>(), 7);
  try {
    c.call<&Counter::fail>();
    ADD_FAILURE() << "no error";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::logic_error");
    EXPECT_EQ(e.message(), "counter says no");
  }
  EXPECT_THROW(m.create<Counter>("NoSuchType"), mproc::Error);
  EXPECT_THROW(m.create<int>("Counter"), mproc::TypeMismatchError);
  m.shutdown();
}

TEST(BaseManagerTest, RegisteringATypeidTwiceIsAnErrorNamingItAndTheFirstType) {
  mproc::BaseManager sut;
  sut.register_type<Counter, &Counter::add>("Counter");
  std::string msg = message_of<mproc::Error>([&] { sut.register_type<Account, &Account::deposit>("Counter"); });
  EXPECT_TRUE(has(msg, "'Counter' is registered already (for Counter)")) << msg;
  msg = message_of<mproc::Error>([&] { sut.register_type<Counter, &Counter::add>("Counter"); });  // even the same type
  EXPECT_TRUE(has(msg, "'Counter' is registered already")) << msg;
  sut.register_type<Counter, &Counter::add>("Counter2");  // one type under two names is fine
}

TEST(BaseManagerTest, RegisteringABuiltinTypeidIsAnErrorNamingIt) {
  mproc::SyncManager sut;
  std::string msg = message_of<mproc::Error>([&] { sut.register_type<Counter, &Counter::add>("dict"); });
  EXPECT_TRUE(has(msg, "'dict' is the typeid of a built-in manager type")) << msg;
}

// create<T>: checks the manager can make before a byte is sent (here the manager is neither
// started nor connected, which would be a ProcessError after the checks).
TEST(BaseManagerTest, CreateOfABuiltinTypeidIsATypeMismatchNamingBothBeforeAnythingIsSent) {
  mproc::BaseManager sut;
  std::string msg = message_of<mproc::TypeMismatchError>([&] { sut.create<Counter>("dict"); });
  EXPECT_TRUE(has(msg, "create<Counter>(\"dict\")")) << msg;
  EXPECT_TRUE(has(msg, "'dict' is a built-in manager type")) << msg;
}

TEST(BaseManagerTest, CreateOfAnotherTypeThanRegisteredIsATypeMismatchNamingBothBeforeAnythingIsSent) {
  mproc::BaseManager sut;
  sut.register_type<Counter, &Counter::add>("Counter");
  std::string msg = message_of<mproc::TypeMismatchError>([&] { sut.create<Account>("Counter"); });
  EXPECT_TRUE(has(msg, "create<Account>(\"Counter\")")) << msg;
  EXPECT_TRUE(has(msg, "registered for Counter, not for Account")) << msg;
  sut.start();
  msg = message_of<mproc::TypeMismatchError>([&] { sut.create<Account>("Counter"); });
  EXPECT_TRUE(has(msg, "registered for Counter, not for Account")) << msg;
  EXPECT_EQ(sut.number_of_objects(), 0u);
}

TEST(BaseManagerTest, CreateOfAnUnknownTypeidIsAKeyErrorNamingIt) {
  mproc::BaseManager sut;
  sut.register_type<Counter, &Counter::add>("Counter");
  sut.start();
  std::string msg = message_of<mproc::KeyError>([&] { sut.create<Counter>("Nope"); });
  EXPECT_TRUE(has(msg, "create<Counter>(\"Nope\")")) << msg;
  EXPECT_TRUE(has(msg, "no type is registered as 'Nope'")) << msg;
  EXPECT_EQ(sut.number_of_objects(), 0u);
}

// A connected client need not register anything, so the server is the one that knows: its
// answers name the typeid, the type registered there and the type the client asked for.
TEST(BaseManagerTest, CreateThroughAConnectedManagerGetsTheServersAnswerNamingTheTypes) {
  mproc::BaseManager owner({.address = mproc::connection::Address("127.0.0.1", 0), .authkey = std::string("key")});
  owner.register_type<Counter, &Counter::add, &Counter::get>("Counter");
  auto server = owner.get_server();
  std::thread t([&] { server.serve_forever(); });
  {
    mproc::BaseManager sut({.address = server.address(), .authkey = std::string("key")});
    sut.connect();
    std::string msg = message_of<mproc::TypeMismatchError>([&] { sut.create<Account>("Counter"); });
    EXPECT_TRUE(has(msg, "create<Account>(\"Counter\")")) << msg;
    EXPECT_TRUE(has(msg, "registered for Counter on the manager server")) << msg;
    msg = message_of<mproc::KeyError>([&] { sut.create<Counter>("Nope"); });
    EXPECT_TRUE(has(msg, "create<Counter>(\"Nope\")")) << msg;
    EXPECT_TRUE(has(msg, "no typeid 'Nope'")) << msg;
    EXPECT_EQ(sut.number_of_objects(), 0u);
  }
  server.stop();
  t.join();
}

class RegisteredTypes : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::BaseManager started() const {
    mproc::BaseManager m({.ctx = mproc::get_context(GetParam())});
    m.register_type<Account, &Account::deposit, &Account::who>("Account", open_account);
    m.register_type<Account, &Account::deposit, &Account::who>("Joint", [](std::string a, std::string b) {
      return Account{a + "&" + b, 0};
    });
    m.register_type<Node, &Node::add>("Node", [](long v) { return Node{v}; });
    m.register_type<Tree, &Tree::child, &Tree::fresh, &Tree::stray, &Tree::sum>("Tree");
    m.start();
    return m;
  }
};

TEST_P(RegisteredTypes, AFactoryMakesObjectsFromCreatesArguments) {
  auto m = started();
  auto sut = m.create<Account>("Account", "ann", 10L);
  EXPECT_EQ(sut.call<&Account::who>(), "ann");
  EXPECT_EQ(sut.call<&Account::deposit>(5), 15);
  auto joint = m.create<Account>("Joint", std::string("bo"), "cy");
  EXPECT_EQ(joint.call<&Account::who>(), "bo&cy");
  EXPECT_EQ(m.create<Node>("Node", 4L).call<&Node::add>(1), 5);
}

TEST_P(RegisteredTypes, CreateWithWrongArgumentsOrAFailingFactoryIsAnErrorNamingTheCause) {
  auto m = started();
  try {
    m.create<Account>("Account", "ann", 10);  // int, where the factory takes long
    ADD_FAILURE() << "no error";
  } catch (const mproc::TypeMismatchError& e) {
    EXPECT_NE(std::string(e.what()).find("long"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m.create<Account>("Account"), mproc::TypeMismatchError);
  try {
    m.create<Account>("Account", "ann", -1L);
    ADD_FAILURE() << "no error";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "a negative opening balance");
  }
  EXPECT_EQ(m.number_of_objects(), 0u);  // nothing half-made stays behind
}

void add_to_node(int, mproc::Proxy<Node> node, long k) { node.call<&Node::add>(k); }

TEST_P(RegisteredTypes, MethodsReturningObjectsGiveProxiesOfThemOnTheServer) {
  auto m = started();
  auto tree = m.create<Tree>("Tree");
  {
    mproc::Proxy<Node> first = tree.call<&Tree::child>(0);
    ASSERT_TRUE(first);
    EXPECT_EQ(first.call<&Node::add>(3), 3);
    auto ps = start_n(mproc::get_context(GetParam()), 2, add_to_node, first, 10L);  // it travels like any proxy
    join_all(ps);
    EXPECT_EQ(tree.call<&Tree::sum>(), 23);  // the tree's own node changed: the same object
    auto fresh = tree.call<&Tree::fresh>(7L);
    EXPECT_EQ(fresh.call<&Node::add>(1), 8);
    EXPECT_EQ(m.number_of_objects(), 3u);
    EXPECT_FALSE(tree.call<&Tree::child>(5));  // nullptr: an empty proxy
  }
  EXPECT_EQ(settled_objects(m, 1), 1u);  // the returned objects went with their last proxies
  EXPECT_EQ(tree.call<&Tree::sum>(), 23);  // the tree still holds its nodes
}

TEST_P(RegisteredTypes, AMethodReturningAnUnregisteredTypeIsAnError) {
  auto m = started();
  auto tree = m.create<Tree>("Tree");
  try {
    (void)tree.call<&Tree::stray>();
    ADD_FAILURE() << "no error";
  } catch (const mproc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("Leaf"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not registered"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(StartMethods, RegisteredTypes, ::testing::Values("fork", "spawn", "forkserver"));

void counter_client(int, mproc::Proxy<Counter> c, int n) {
  for (int k = 0; k < n; ++k) c.call<&Counter::add>(1);
}

TEST(BaseManagerTest, GetServerServeForeverAndConnect) {
  mproc::BaseManager owner({.address = mproc::connection::Address("127.0.0.1", 0), .authkey = std::string("key")});
  owner.register_type<Counter, &Counter::add, &Counter::get>("Counter");
  auto server = owner.get_server();
  std::thread t([&] { server.serve_forever(); });
  {
    mproc::BaseManager client({.address = server.address(), .authkey = std::string("key")});
    client.register_type<Counter, &Counter::add, &Counter::get>("Counter");
    client.connect();
    auto c = client.create<Counter>("Counter");
    auto ps = start_n(mproc::get_context("spawn"), 2, counter_client, c, 50);
    join_all(ps);
    EXPECT_EQ(c.call<&Counter::get>(), 100);
    mproc::BaseManager wrong({.address = server.address(), .authkey = std::string("nope")});
    EXPECT_THROW(wrong.connect(), mproc::AuthenticationError);
  }
  server.stop();
  t.join();
}

// ------------------------------------------------------------------ a separate program

mproc_test::ProgramResult run_helper(const mproc::connection::Address& a, const std::string& key) {
  return mproc_test::run_program(std::string(MPROC_TEST_HELPER_manager_client) + " " + a.host + " " +
                                 std::to_string(a.port) + " " + key);
}

class RemoteManager : public ::testing::TestWithParam<std::string> {};

TEST_P(RemoteManager, SeparateProgramWithTheRightKeyUsesTheServerOverTcp) {
  mproc::SyncManager m({.address = mproc::connection::Address(GetParam(), 0), .authkey = std::string("remote-key")});
  m.register_type<Counter, &Counter::add, &Counter::get, &Counter::fail>("Counter");
  m.register_type<Account, &Account::deposit, &Account::who>("Account", open_account);
  m.start();
  auto r = run_helper(m.address(), "remote-key");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, "add 42\nupdate_with refused\ncounter 11\naccount remote 6\nlist 1\n");
  EXPECT_EQ(settled_objects(m, 0), 0u);  // the program ended: its objects went with it
}

TEST_P(RemoteManager, SeparateProgramWithAWrongKeyIsRefusedAndTheServerGoesOn) {
  mproc::SyncManager m({.address = mproc::connection::Address(GetParam(), 0), .authkey = std::string("remote-key")});
  m.register_type<Counter, &Counter::add, &Counter::get, &Counter::fail>("Counter");
  m.register_type<Account, &Account::deposit, &Account::who>("Account", open_account);
  m.start();
  auto r = run_helper(m.address(), "not-the-key");
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("AuthenticationError"), std::string::npos) << r.out;
  auto d = m.dict<int, int>();  // still serving
  d.set(1, 2);
  EXPECT_EQ(d.at(1), 2);
  r = run_helper(m.address(), "remote-key");
  EXPECT_EQ(r.exit_code, 0) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Loopback, RemoteManager, ::testing::Values("127.0.0.1", "::1"));

}  // namespace
