// mproc::inherited and mproc::per_process under every start method: the seed's global, made
// explicit, has the same value in every child; a per-process object is built once per process.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <unistd.h>

#include <atomic>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Registry {
  std::vector<std::string> plugins;
  std::string process(int i) const { return plugins[static_cast<std::size_t>(i) % plugins.size()] + ": " + std::to_string(i); }
  template <class A>
  void serialize(A& a) {
    a(plugins);
  }
};

mproc::inherited<Registry> g_registry{"test.registry"};
mproc::inherited<int> g_number;  // unnamed: found by its file and line
mproc::inherited<std::string> g_never_set{"test.never_set"};
mproc::inherited<mproc::Value<int>> g_counter{"test.counter"};

std::atomic<int> g_builds{0};
struct Built {
  int pid = ::getpid();
  int ordinal = ++g_builds;  // how many objects this process has built, this one included
};
mproc::per_process<Built> g_built{[] { return Built{}; }};

class InheritedTest : public ::testing::TestWithParam<std::string> {
 protected:
  mproc::Context ctx() const { return mproc::get_context(GetParam()); }
  void TearDown() override {
    g_registry.reset();
    g_number.reset();
    g_counter.reset();
  }
};

void send_registry_view(mproc::Connection c) { c.send(g_registry->process(0) + " " + g_registry->process(1)); }
void send_number(mproc::Connection c) { c.send(*g_number); }
void send_number_when_asked(mproc::Connection c) {
  c.recv<int>();
  c.send(*g_number);
}
void send_never_set_error(mproc::Connection c) {
  try {
    c.send(g_never_set->size());
    c.send(std::string("no error"));
  } catch (const mproc::StateError& e) {
    c.send(std::string(e.what()));
  }
}
std::string process_item(int i) { return g_registry->process(i); }
void add_to_counter(int n) {
  std::scoped_lock lock(g_counter->get_lock());
  g_counter->value() += n;
}
void start_grandchild(mproc::Connection c, std::string method) {
  auto p = mproc::get_context(method).Process(send_number, c);
  p.start();
  p.join();
}
std::pair<int, int> built_here(int) { return {g_built->pid == ::getpid() ? ::getpid() : -g_built->pid, g_built->ordinal}; }

TEST_P(InheritedTest, AValueSetInTheParentReachesTheChild) {
  g_registry.set(Registry{{"func0", "func1"}});
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(send_registry_view, child);
  p.start();
  EXPECT_EQ(parent.recv<std::string>(), "func0: 0 func1: 1");
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(InheritedTest, AnUnnamedVariableIsFoundByWhereItIsDefined) {
  g_number = 7;
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(send_number, child);
  p.start();
  EXPECT_EQ(parent.recv<int>(), 7);
  p.join();
}

TEST_P(InheritedTest, AChildSeesTheValueAsItWasWhenItStarted) {
  g_number = 1;
  auto [early_parent, early_child] = mproc::Pipe();
  auto early = ctx().Process(send_number_when_asked, early_child);
  early.start();
  g_number = 2;  // after the start: not the early child's business, as under fork
  auto [late_parent, late_child] = mproc::Pipe();
  auto late = ctx().Process(send_number_when_asked, late_child);
  late.start();
  early_parent.send(0);
  late_parent.send(0);
  EXPECT_EQ(early_parent.recv<int>(), 1);
  EXPECT_EQ(late_parent.recv<int>(), 2);
  early.join();
  late.join();
}

TEST_P(InheritedTest, AGrandchildSeesTheValueToo) {
  g_number = 42;
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(start_grandchild, child, GetParam());
  p.start();
  EXPECT_EQ(parent.recv<int>(), 42);
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_P(InheritedTest, ReadingAVariableTheParentNeverSetNamesItAndTheStartMethod) {
  auto [parent, child] = mproc::Pipe();
  auto p = ctx().Process(send_never_set_error, child);
  p.start();
  auto what = parent.recv<std::string>();
  p.join();
  EXPECT_NE(what.find("'test.never_set'"), std::string::npos) << what;
  EXPECT_NE(what.find("test_inherited.cpp:"), std::string::npos) << what;
  EXPECT_NE(what.find("started with " + GetParam()), std::string::npos) << what;
  EXPECT_NE(what.find("not set in MainProcess"), std::string::npos) << what;
}

TEST_P(InheritedTest, EveryPoolWorkerSeesTheValue) {
  g_registry.set(Registry{{"func0", "func1"}});
  mproc::Pool pool({.processes = 2, .context = ctx()});
  auto out = pool.map(process_item, std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, 1);
  std::vector<std::string> want;
  for (int i = 0; i < 10; ++i) want.push_back("func" + std::to_string(i % 2) + ": " + std::to_string(i));
  EXPECT_EQ(out, want);
}

TEST_P(InheritedTest, ASharedValueCarriedThisWayIsTheSameObjectInEveryProcess) {
  g_counter.emplace(0);
  std::vector<mproc::Process> procs;
  for (int i = 1; i <= 3; ++i) procs.push_back(ctx().Process(add_to_counter, i));
  for (auto& p : procs) p.start();
  for (auto& p : procs) p.join();
  EXPECT_EQ(g_counter->value(), 6);
}

TEST_P(InheritedTest, APerProcessObjectIsBuiltOnceInEachWorkerAndNeverShared) {
  int parent_pid = g_built->pid;  // built here first: a fork child must still build its own
  EXPECT_EQ(parent_pid, ::getpid());
  mproc::Pool pool({.processes = 2, .context = ctx()});
  std::vector<int> items(40);
  auto out = pool.map(built_here, items, 1);
  std::map<int, std::set<int>> ordinals;  // pid -> the ordinals its object reported
  for (auto [pid, ordinal] : out) {
    ASSERT_GT(pid, 0) << "a worker used the object of process " << -pid;
    EXPECT_NE(pid, parent_pid);
    ordinals[pid].insert(ordinal);
  }
  for (auto& [pid, seen] : ordinals) EXPECT_EQ(seen.size(), 1u) << "worker " << pid << " built more than once";
}

INSTANTIATE_TEST_SUITE_P(StartMethods, InheritedTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

TEST(InheritedMainProcessTest, ReadingBeforeSetThrowsStateErrorNamingTheVariable) {
  try {
    (void)g_never_set.get();
    FAIL() << "no error";
  } catch (const mproc::StateError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("'test.never_set'"), std::string::npos) << what;
    EXPECT_NE(what.find("MainProcess"), std::string::npos) << what;
  }
  EXPECT_FALSE(g_never_set.has_value());
}

TEST(InheritedMainProcessTest, TwoVariablesWithOneNameCannotBeSentToAChild) {
  {
    auto a = std::make_unique<mproc::inherited<int>>("test.twice");
    auto b = std::make_unique<mproc::inherited<int>>("test.twice");
    auto p = mproc::get_context("spawn").Process([] {});
    try {
      p.start();
      p.join();
      FAIL() << "started";
    } catch (const mproc::Error& e) {
      EXPECT_NE(std::string(e.what()).find("'test.twice'"), std::string::npos) << e.what();
    }
  }
  auto p = mproc::get_context("spawn").Process([] {});  // gone with them: starting works again
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 0);
}

TEST(PerProcessTest, ConcurrentFirstUsesBuildOneObject) {
  std::atomic<int> builds{0};
  mproc::per_process<int> n{[&] {
    ++builds;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    return 5;
  }};
  std::vector<std::thread> threads;
  std::vector<int*> seen(8);
  for (int i = 0; i < 8; ++i) threads.emplace_back([&, i] { seen[static_cast<std::size_t>(i)] = &n.get(); });
  for (auto& t : threads) t.join();
  EXPECT_EQ(builds.load(), 1);
  for (auto* p : seen) EXPECT_EQ(p, seen[0]);
  EXPECT_EQ(*n, 5);
}

struct Pinned {  // neither copyable nor movable: built in place
  explicit Pinned(int v) : value(v) {}
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;
  int value;
};

TEST(PerProcessTest, ATypeThatCannotMoveIsBuiltInPlace) {
  mproc::per_process<Pinned> p{[] { return Pinned(3); }};
  EXPECT_FALSE(p.built());
  EXPECT_EQ(p->value, 3);
  EXPECT_TRUE(p.built());
}

}  // namespace
