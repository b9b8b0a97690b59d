// Load and soak: a million tiny tasks through a Pool and an executor with none lost or
// duplicated; thousands of processes started and joined; 64 queue producers and 64 consumers
// moving every item exactly once; and repeated rounds of everything whose descriptor count and
// resident memory must stay flat. Sized to run in seconds each (no timing is asserted).
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <mutex>
#include <cstdio>
#include <numeric>
#include <ranges>
#include <string>
#include <vector>

namespace {

constexpr std::int64_t kTasks = 1'000'000;

std::int64_t tiny(std::int64_t x) { return 3 * x + 1; }

TEST(Load, AMillionTinyTasksThroughPoolMapComeBackInOrderNoneLost) {
  mproc::Pool pool({.processes = 2});
  auto out = pool.map(tiny, std::views::iota(std::int64_t{0}, kTasks));
  ASSERT_EQ(out.size(), static_cast<std::size_t>(kTasks));
  for (std::int64_t i = 0; i < kTasks; ++i) ASSERT_EQ(out[static_cast<std::size_t>(i)], tiny(i)) << "item " << i;
}

TEST(Load, AMillionTinyTasksThroughImapUnorderedArriveEachExactlyOnce) {
  mproc::Pool pool({.processes = 2});
  std::vector<std::uint8_t> seen(static_cast<std::size_t>(kTasks));
  std::int64_t count = 0;
  for (std::int64_t r : pool.imap_unordered(tiny, std::views::iota(std::int64_t{0}, kTasks), 2000)) {
    ASSERT_EQ((r - 1) % 3, 0) << r;
    auto i = static_cast<std::size_t>((r - 1) / 3);
    ASSERT_LT(i, seen.size());
    ASSERT_EQ(seen[i]++, 0) << "item " << i << " came back twice";
    ++count;
  }
  EXPECT_EQ(count, kTasks);
}

TEST(Load, AMillionTinyTasksThroughTheExecutorComeBackInOrderNoneLost) {
  mproc::ProcessPoolExecutor ex({.max_workers = 2});
  std::int64_t i = 0;
  for (std::int64_t r : ex.map(tiny, std::views::iota(std::int64_t{0}, kTasks), 2000)) {
    ASSERT_EQ(r, tiny(i)) << "item " << i;
    ++i;
  }
  EXPECT_EQ(i, kTasks);
}

TEST(Load, TenThousandProcessesStartAndJoinWithTheirExitCodes) {
  constexpr int kProcesses = 10'000, kBatch = 100;
  for (int first = 0; first < kProcesses; first += kBatch) {
    std::vector<mproc::Process> batch;
    for (int i = first; i < first + kBatch; ++i) batch.emplace_back([](int code) { ::_exit(code); }, i % 100);
    for (auto& p : batch) p.start();
    for (int k = 0; k < kBatch; ++k) {
      batch[static_cast<std::size_t>(k)].join();
      ASSERT_EQ(batch[static_cast<std::size_t>(k)].exitcode(), (first + k) % 100) << "process " << first + k;
    }
  }
}

// How many times each item was taken, over every consumer (shared memory).
void consume(mproc::Queue<std::int32_t> q, mproc::RawArray<std::int32_t> taken) {
  for (;;) {
    std::int32_t item = q.get();
    if (item < 0) return;
    std::atomic_ref<std::int32_t>(taken[static_cast<std::size_t>(item)]).fetch_add(1);
  }
}

void produce(mproc::Queue<std::int32_t> q, std::int32_t first, std::int32_t count) {
  for (std::int32_t i = first; i < first + count; ++i) q.put(i);
}

TEST(Load, SixtyFourProducersAndSixtyFourConsumersMoveEveryItemExactlyOnce) {
  constexpr std::int32_t kPeers = 64, kEach = 500;
  mproc::Queue<std::int32_t> q(256);
  mproc::RawArray<std::int32_t> taken(static_cast<std::size_t>(kPeers * kEach));
  std::vector<mproc::Process> producers, consumers;
  for (std::int32_t c = 0; c < kPeers; ++c) consumers.emplace_back(consume, q, taken);
  for (std::int32_t p = 0; p < kPeers; ++p) producers.emplace_back(produce, q, p * kEach, kEach);
  for (auto& c : consumers) c.start();
  for (auto& p : producers) p.start();
  for (auto& p : producers) {
    p.join();
    EXPECT_EQ(p.exitcode(), 0);
  }
  for (std::int32_t c = 0; c < kPeers; ++c) q.put(-1);  // one end mark per consumer
  for (auto& c : consumers) {
    c.join();
    EXPECT_EQ(c.exitcode(), 0);
  }
  for (std::size_t i = 0; i < taken.size(); ++i) ASSERT_EQ(taken[i], 1) << "item " << i;
}

std::size_t open_descriptors() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) n += e->d_name[0] != '.';
    ::closedir(d);
  }
  return n;
}

std::size_t resident_bytes() {
  long pages = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return static_cast<std::size_t>(resident) * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

std::int64_t add(std::int64_t a, std::int64_t b) { return a + b; }

// One round of what a long-running program does: pools and an executor made and dropped, maps,
// single tasks, a queue, a pipe, shared values, processes.
void one_round(const mproc::Context& ctx) {
  {
    mproc::Pool pool({.processes = 2, .context = ctx});
    auto out = pool.map(tiny, std::views::iota(std::int64_t{0}, std::int64_t{20'000}));
    ASSERT_EQ(out.back(), tiny(19'999));
    ASSERT_EQ(pool.apply(add, std::int64_t{2}, std::int64_t{3}), 5);
  }
  {
    mproc::ProcessPoolExecutor ex({.max_workers = 2, .mp_context = ctx});
    ASSERT_EQ(ex.submit(add, std::int64_t{4}, std::int64_t{5}).result(), 9);
  }
  mproc::Queue<std::string> q;
  auto [a, b] = mproc::Pipe();
  mproc::Value<std::int64_t> v(0);
  auto p = ctx.Process(
      [](mproc::Queue<std::string> q, mproc::Connection c, mproc::Value<std::int64_t> v) {
        q.put(std::string(100'000, 'x'));
        c.send(std::string(2'000'000, 'y'));  // over the shared-memory threshold
        std::scoped_lock guard(v.get_lock());
        v.value() += 1;
      },
      q, b, v);
  p.start();
  ASSERT_EQ(q.get().size(), 100'000u);
  ASSERT_EQ(a.recv<std::string>().size(), 2'000'000u);
  p.join();
  ASSERT_EQ(p.exitcode(), 0);
  ASSERT_EQ(v.value(), 1);
}

class Soak : public ::testing::TestWithParam<std::string> {};

// After two warm-up rounds (caches, the fork server, the resource tracker, malloc's arenas), more
// rounds must not grow the descriptor count at all, nor resident memory by more than a bound
// that a leak of one pool's or message's worth per round would pass.
TEST_P(Soak, RepeatedRoundsKeepDescriptorsAndMemoryFlat) {
  auto ctx = mproc::get_context(GetParam());
  // MPROC_SOAK_ROUNDS=n soaks longer (the default keeps each start method to seconds).
  const char* env = std::getenv("MPROC_SOAK_ROUNDS");
  const int kRounds = env ? std::max(1, std::atoi(env)) : 100;
  one_round(ctx);
  one_round(ctx);
  const std::size_t fds = open_descriptors(), rss = resident_bytes();
  for (int i = 0; i < kRounds; ++i) {
    one_round(ctx);
    if (HasFatalFailure()) return;
    ASSERT_EQ(open_descriptors(), fds) << "round " << i;
  }
  std::printf("%d rounds: %zu descriptors throughout, resident %zu KiB -> %zu KiB\n", kRounds, fds, rss >> 10,
              resident_bytes() >> 10);
#if !defined(__SANITIZE_ADDRESS__)  // ASan's quarantine holds freed memory on purpose
  const std::size_t grown = resident_bytes() > rss ? resident_bytes() - rss : 0;
  EXPECT_LT(grown, std::size_t{8} << 20) << "resident memory grew by " << grown << " bytes over " << kRounds
                                         << " rounds (from " << rss << ")";
#else
  (void)rss;
#endif
}

INSTANTIATE_TEST_SUITE_P(StartMethods, Soak, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

}  // namespace
