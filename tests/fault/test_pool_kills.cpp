// Pool and executor workers killed at random points, under every start method: by their own
// task (SIGKILL, SIGSEGV, abort, exit(3)) and from outside (SIGKILL of a busy worker). Every
// task either returns its exact result or fails with WorkerCrashed; none is lost, none runs
// twice, nothing hangs (every wait is bounded) and nothing leaks (the leak check of every test).
// The seed is printed; MPROC_TEST_SEED=<n> replays a run.
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono_literals;

enum Death : int { kNone = 0, kSigkill, kSigsegv, kAbort, kExit3, kDeaths };

struct Item {
  int index;
  int death;
};

std::int64_t expected(int index) { return static_cast<std::int64_t>(index) * 7 + 1; }

// How many times each item started, over every worker (shared memory, handed over once by the
// pool's initializer).
std::optional<mproc::RawArray<int>> g_runs;
void keep_runs(mproc::RawArray<int> runs) { g_runs = runs; }

std::int64_t work(Item it) {
  std::atomic_ref<int>((*g_runs)[static_cast<std::size_t>(it.index)]).fetch_add(1);
  switch (it.death) {
    case kSigkill: ::raise(SIGKILL); break;
    case kSigsegv: ::raise(SIGSEGV); break;
    case kAbort: std::abort();
    case kExit3: std::exit(3);
    default: break;
  }
  return expected(it.index);
}

std::int64_t slow(int index) {
  ::usleep(20000);
  return expected(index);
}

unsigned seed() {
  static const unsigned s = [] {
    const char* env = std::getenv("MPROC_TEST_SEED");
    return env ? static_cast<unsigned>(std::strtoul(env, nullptr, 10)) : std::random_device{}();
  }();
  return s;
}

class PoolKillsTest : public ::testing::TestWithParam<std::string> {
 protected:
  static constexpr int kItems = 40;

  void SetUp() override {
    rng_.seed(seed() ^ static_cast<unsigned>(std::hash<std::string>{}(GetParam() + test_name())));
    std::printf("seed %u (MPROC_TEST_SEED=%u replays it)\n", seed(), seed());
    std::uniform_int_distribution<int> roll(0, 99), how(kSigkill, kDeaths - 1);
    for (int i = 0; i < kItems; ++i) items_.push_back({i, roll(rng_) < 12 ? how(rng_) : kNone});
    items_[static_cast<std::size_t>(kItems / 2)].death = kSigkill;  // at least one death per run
  }

  static std::string test_name() { return ::testing::UnitTest::GetInstance()->current_test_info()->name(); }

  mproc::PoolOptions pool_options() const {
    return {.processes = 3, .initializer = mproc::call(keep_runs, runs_), .context = mproc::get_context(GetParam())};
  }

  // One outcome per item: its exact result when it has no death, WorkerCrashed when it has.
  void check_outcome(int index, const std::function<std::int64_t()>& get) {
    const bool dies = items_[static_cast<std::size_t>(index)].death != kNone;
    try {
      std::int64_t r = get();
      EXPECT_FALSE(dies) << "item " << index << " should have killed its worker";
      EXPECT_EQ(r, expected(index)) << "item " << index;
    } catch (const mproc::WorkerCrashed& e) {
      EXPECT_TRUE(dies) << "item " << index << " failed without dying: " << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "item " << index << ": " << e.what();
    }
  }

  // Every item started exactly once: none lost, none run twice (there are no retries).
  void expect_each_ran_once() {
    for (int i = 0; i < kItems; ++i) EXPECT_EQ(runs_[static_cast<std::size_t>(i)], 1) << "item " << i;
  }

  std::mt19937 rng_;
  std::vector<Item> items_;
  mproc::RawArray<int> runs_ = mproc::RawArray<int>(static_cast<std::size_t>(kItems));  // not {n}: a list of one
};

TEST_P(PoolKillsTest, MapFailsWithTheCrashOfADyingItemAndRunsEveryItemOnce) {
  mproc::Pool sut(pool_options());
  auto result = sut.map_async(work, items_, 1);
  ASSERT_TRUE(result.wait(60s)) << "the map hung";
  try {
    (void)result.get();
    ADD_FAILURE() << "a map with dying items succeeded";
  } catch (const mproc::WorkerCrashed& e) {
    ASSERT_EQ(e.item_count(), 1u);
    EXPECT_NE(items_[e.first_item()].death, kNone) << "item " << e.first_item() << " blamed for a crash: " << e.what();
  }
  sut.close();  // the map's other chunks still run: wait for them, then count
  sut.join();
  expect_each_ran_once();
}

TEST_P(PoolKillsTest, ImapGivesEveryItemItsResultOrItsCrashInOrder) {
  mproc::Pool sut(pool_options());
  auto it = sut.imap(work, items_, 1);
  for (int i = 0; i < kItems; ++i) check_outcome(i, [&] { return it.next(60s).value(); });
  EXPECT_FALSE(it.next(60s).has_value());
  expect_each_ran_once();
}

TEST_P(PoolKillsTest, ApplyAsyncGivesEveryTaskItsResultOrItsCrash) {
  mproc::Pool sut(pool_options());
  std::vector<mproc::AsyncResult<std::int64_t>> results;
  for (const auto& item : items_) results.push_back(sut.apply_async(work, item));
  for (int i = 0; i < kItems; ++i) check_outcome(i, [&] { return results[static_cast<std::size_t>(i)].get(60s); });
  expect_each_ran_once();
}

TEST_P(PoolKillsTest, ExecutorGivesEveryFutureItsResultOrItsCrash) {
  mproc::ProcessPoolExecutor sut(
      {.max_workers = 3, .mp_context = mproc::get_context(GetParam()), .initializer = mproc::call(keep_runs, runs_)});
  std::vector<mproc::Future<std::int64_t>> futures;
  for (const auto& item : items_) futures.push_back(sut.submit(work, item));
  for (int i = 0; i < kItems; ++i) check_outcome(i, [&] { return futures[static_cast<std::size_t>(i)].result(60s); });
  expect_each_ran_once();
}

// Kills from outside, at random moments: which task fails cannot be known in advance, so each
// task must either be exact or have failed with WorkerCrashed, and no more tasks may fail than
// workers were killed.
template <class Submit, class Get>
void run_under_a_killer(std::mt19937& rng, const std::function<std::vector<int>()>& pids, Submit submit, Get get) {
  constexpr int kTasks = 40, kKills = 4;
  auto handles = submit(kTasks);
  std::atomic<bool> stop{false};
  int killed = 0;
  std::thread killer([&] {
    std::uniform_int_distribution<int> pause_ms(20, 80);
    for (int k = 0; k < kKills && !stop; ++k) {
      std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms(rng)));
      auto p = pids();
      if (p.empty()) continue;
      if (::kill(p[std::uniform_int_distribution<std::size_t>(0, p.size() - 1)(rng)], SIGKILL) == 0) ++killed;
    }
  });
  int crashed = 0;
  for (int i = 0; i < kTasks; ++i) {
    try {
      EXPECT_EQ(get(handles, i), expected(i)) << "task " << i;
    } catch (const mproc::WorkerCrashed&) {
      ++crashed;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "task " << i << ": " << e.what();
    }
  }
  stop = true;
  killer.join();
  EXPECT_LE(crashed, killed);
}

TEST_P(PoolKillsTest, WorkersKilledFromOutsideFailOnlyWhatTheyRan) {
  mproc::Pool sut({.processes = 3, .context = mproc::get_context(GetParam())});
  run_under_a_killer(
      rng_, [&] { return sut.worker_pids(); },
      [&](int n) {
        std::vector<mproc::AsyncResult<std::int64_t>> r;
        for (int i = 0; i < n; ++i) r.push_back(sut.apply_async(slow, i));
        return r;
      },
      [](auto& r, int i) { return r[static_cast<std::size_t>(i)].get(60s); });
}

TEST_P(PoolKillsTest, ExecutorWorkersKilledFromOutsideFailOnlyWhatTheyRan) {
  mproc::ProcessPoolExecutor sut({.max_workers = 3, .mp_context = mproc::get_context(GetParam())});
  run_under_a_killer(
      rng_, [&] { return sut.worker_pids(); },
      [&](int n) {
        std::vector<mproc::Future<std::int64_t>> f;
        for (int i = 0; i < n; ++i) f.push_back(sut.submit(slow, i));
        return f;
      },
      [](auto& f, int i) { return f[static_cast<std::size_t>(i)].result(60s); });
}

// Tiny tasks travel many at a time and a worker holds their answers back while it runs the next
// ones (in shared memory, see the pool's Mailbox). A worker that dies among them must still
// hand over every answer it finished: none lost, none run twice, only the dying item blamed.
TEST_P(PoolKillsTest, AWorkerDyingAmongTinyTasksLosesNoneOfTheAnswersItHeldBack) {
  constexpr int kMany = 3000;
  mproc::RawArray<int> runs(static_cast<std::size_t>(kMany));
  std::vector<Item> items;
  for (int i = 0; i < kMany; ++i) items.push_back({i, kNone});
  const int dying[] = {700, 1900, 2600};
  items[700].death = kAbort;
  items[1900].death = kSigkill;
  items[2600].death = kExit3;
  mproc::Pool sut({.processes = 2, .initializer = mproc::call(keep_runs, runs), .context = mproc::get_context(GetParam())});
  auto it = sut.imap(work, items, 1);
  for (int i = 0; i < kMany; ++i) {
    bool dies = std::find(std::begin(dying), std::end(dying), i) != std::end(dying);
    try {
      auto r = it.next(60s);
      ASSERT_TRUE(r.has_value()) << "imap ended before item " << i;
      EXPECT_FALSE(dies) << "item " << i << " should have killed its worker";
      EXPECT_EQ(*r, expected(i)) << "item " << i;
    } catch (const mproc::WorkerCrashed& e) {
      EXPECT_TRUE(dies) << "item " << i << " blamed for a crash: " << e.what();
      EXPECT_EQ(e.first_item(), static_cast<std::size_t>(i));
    }
  }
  EXPECT_FALSE(it.next(60s).has_value());
  for (int i = 0; i < kMany; ++i) EXPECT_EQ(runs[static_cast<std::size_t>(i)], 1) << "item " << i;
}

INSTANTIATE_TEST_SUITE_P(StartMethods, PoolKillsTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

}  // namespace
