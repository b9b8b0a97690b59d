// The mpi context under `mpirun -n 3` (tests/mpi/run): rank 0 runs these tests, ranks 1 and 2
// are the pools' workers. Every pool here behaves as a local one does.
#include <gtest/gtest.h>
#include <mproc/mpi.hpp>
#include <mproc/mproc.hpp>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <set>
#include <string>
#include <thread>

using namespace std::chrono_literals;

namespace {

mproc::Context mpi() { return mproc::get_context("mpi"); }

int square(int x) { return x * x; }
int add(int a, int b) { return a + b; }
int my_pid(int) { return static_cast<int>(::getpid()); }
std::size_t length(const std::string& s) { return s.size(); }
std::string make_bytes(std::size_t n) { return std::string(n, 'z'); }
int throw_on_three(int x) {
  if (x == 3) throw std::invalid_argument("three is not allowed");
  return x;
}
int abort_on_two(int x) {
  if (x == 2) std::abort();
  return x;
}
int sleep_then(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  return ms;
}

// A sum that sees every byte where it is (a slab written over while read would show).
std::uint64_t checksum(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}
std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + seed * 7919 + (i >> 12)) & 0xff);
  return s;
}
// Aborts the first time any worker runs it (marker does not exist yet), answers after.
std::uint64_t checksum_crashing_once(const std::string& s, const std::string& marker) {
  int fd = ::open(marker.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0600);
  if (fd >= 0) {
    ::close(fd);
    std::abort();
  }
  return checksum(s);
}

std::size_t abort_with(const std::string&) { std::abort(); }

int g_plugin = 0;  // set by the initializer, in each worker
void set_plugin(int v) { g_plugin = v; }
int plugin_plus(int x) { return g_plugin + x; }

std::vector<int> iota(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

TEST(MpiPool, TakesEveryWorkerRankByDefault) {
  mproc::Pool pool({.context = mpi()});
  EXPECT_EQ(pool.processes(), 2);
  // Each rank runs its tasks in a process of its own, so the map sees exactly two pids... or
  // more, never the caller's.
  auto pids = pool.map(my_pid, iota(200), 1);
  std::set<int> distinct(pids.begin(), pids.end());
  EXPECT_FALSE(distinct.contains(static_cast<int>(::getpid())));
  EXPECT_EQ(distinct.size(), 2u);
}

TEST(MpiPool, MapKeepsOrderAtEveryChunksize) {
  mproc::Pool pool({.context = mpi()});
  auto in = iota(20000);
  std::vector<int> expected(in.size());
  std::transform(in.begin(), in.end(), expected.begin(), square);
  for (std::size_t chunk : {1, 7, 256}) EXPECT_EQ(pool.map(square, in, chunk), expected) << "chunksize " << chunk;
  EXPECT_EQ(pool.map(square, in), expected);
}

TEST(MpiPool, ImapImapUnorderedStarmapAndApplyAsync) {
  mproc::Pool pool({.context = mpi()});
  std::vector<int> got;
  for (int v : pool.imap(square, iota(100), 3)) got.push_back(v);
  EXPECT_EQ(got, pool.map(square, iota(100)));
  std::multiset<int> unordered;
  for (int v : pool.imap_unordered(square, iota(100))) unordered.insert(v);
  EXPECT_EQ(unordered, std::multiset<int>(got.begin(), got.end()));
  std::vector<std::tuple<int, int>> pairs{{1, 2}, {3, 4}, {5, 6}};
  EXPECT_EQ(pool.starmap(add, pairs), (std::vector<int>{3, 7, 11}));
  std::vector<mproc::AsyncResult<int>> results;
  for (int i = 0; i < 50; ++i) results.push_back(pool.apply_async(add, i, 1000));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(results[static_cast<std::size_t>(i)].get(), i + 1000);
  EXPECT_EQ(pool.apply(square, 12), 144);
}

TEST(MpiPool, ARemoteErrorNamesTheRankAndHostAndCarriesTheStack) {
  mproc::Pool pool({.context = mpi()});
  try {
    pool.map(throw_on_three, iota(10), 1);
    FAIL() << "no error";
  } catch (const mproc::RemoteError& e) {
    EXPECT_EQ(e.type(), "std::invalid_argument");
    EXPECT_EQ(e.message(), "three is not allowed");
    EXPECT_NE(e.worker().find("on MPI rank "), std::string::npos) << e.worker();
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    EXPECT_NE(e.worker().find(host), std::string::npos) << e.worker();
    EXPECT_NE(e.stack().find("throw_on_three"), std::string::npos) << e.stack();
  }
  EXPECT_EQ(pool.apply(square, 3), 9) << "the pool stays usable";
}

TEST(MpiPool, ACrashingTaskFailsAloneAndTheRankGoesOn) {
  mproc::Pool pool({.context = mpi()});
  std::vector<mproc::AsyncResult<int>> results;
  for (int i = 0; i < 6; ++i) results.push_back(pool.apply_async(abort_on_two, i));
  for (int i = 0; i < 6; ++i) {
    if (i == 2) {
      try {
        results[2].get();
        FAIL() << "no error";
      } catch (const mproc::WorkerCrashed& e) {
        EXPECT_EQ(e.signal(), SIGABRT);
        EXPECT_EQ(e.first_item(), 0u);
        EXPECT_NE(std::string(e.what()).find("on MPI rank "), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("killed by signal 6"), std::string::npos) << e.what();
      }
    } else {
      EXPECT_EQ(results[static_cast<std::size_t>(i)].get(), i);
    }
  }
  // Both ranks still serve: a map that needs them both completes.
  EXPECT_EQ(pool.map(square, iota(100), 1), pool.map(square, iota(100), 50));
  try {
    pool.map(abort_on_two, iota(5), 1);
    FAIL() << "no error";
  } catch (const mproc::WorkerCrashed& e) {
    EXPECT_EQ(e.first_item(), 2u) << "map names the item whose task crashed";
  }
}

TEST(MpiPool, LargeArgumentsAndResultsRoundTrip) {
  mproc::Pool pool({.context = mpi()});
  std::vector<std::string> blobs;
  for (std::size_t n : {0, 1, 65535, 65536, 1 << 20, 24 << 20}) blobs.push_back(std::string(n, 'a'));
  auto sizes = pool.map(length, blobs, 1);
  for (std::size_t i = 0; i < blobs.size(); ++i) EXPECT_EQ(sizes[i], blobs[i].size());
  auto big = pool.apply(make_bytes, std::size_t{16} << 20);
  EXPECT_EQ(big.size(), std::size_t{16} << 20);
  EXPECT_EQ(std::count(big.begin(), big.end(), 'z'), static_cast<std::ptrdiff_t>(big.size()));
}

TEST(MpiPool, ManyLargeArgumentsArriveIntactThroughTheRanksReusedSlabs) {
  // More large tasks than a rank has slabs to receive them into (the rest wait in MPI), of sizes
  // that make it reuse a slab for a smaller task and replace one for a larger.
  mproc::Pool pool({.context = mpi()});
  std::vector<std::string> blobs;
  for (unsigned i = 0; i < 40; ++i) blobs.push_back(pattern((std::size_t{256} << 10) + (i % 7) * (std::size_t{300} << 10), i));
  std::vector<std::uint64_t> want;
  for (const auto& b : blobs) want.push_back(checksum(b));
  for (int round = 0; round < 3; ++round) EXPECT_EQ(pool.map(checksum, blobs, 1), want) << "round " << round;
  EXPECT_EQ(pool.map(checksum, blobs, 4), want) << "chunks of 4 arguments";
}

TEST(MpiPool, ALargeTaskWhoseWorkerCrashedRunsAgainFromTheSameBytes) {
  const std::string marker = "/tmp/mproc_test_mpi_crash_" + std::to_string(::getpid());
  ::unlink(marker.c_str());
  {
    mproc::Pool pool({.processes = 1, .context = mpi(), .max_retries = 1});
    std::string blob = pattern(std::size_t{3} << 20, 7);
    EXPECT_EQ(pool.apply(checksum_crashing_once, blob, marker), checksum(blob));
    // The slab it ran from is taken again by the next tasks.
    std::vector<std::string> more;
    for (unsigned i = 0; i < 8; ++i) more.push_back(pattern(std::size_t{1} << 20, 100 + i));
    auto sums = pool.map(checksum, more, 1);
    for (std::size_t i = 0; i < more.size(); ++i) EXPECT_EQ(sums[i], checksum(more[i]));
  }
  EXPECT_EQ(::unlink(marker.c_str()), 0) << "the first run did not crash";
}

TEST(MpiPool, LargeTasksThatCrashLeaveNoSlabBehindAndTheNextOnesRun) {
  // More crashing large tasks than the rank has slabs: a slab its dead task process never
  // released must be taken again, or the tasks after them would wait in MPI for good.
  mproc::Pool pool({.processes = 1, .context = mpi()});
  const std::string blob = pattern(std::size_t{1} << 20, 3);
  for (int i = 0; i < 6; ++i) EXPECT_THROW(pool.apply(abort_with, blob), mproc::WorkerCrashed) << "task " << i;
  std::vector<std::string> more;
  for (unsigned i = 0; i < 8; ++i) more.push_back(pattern(std::size_t{1} << 20, 200 + i));
  auto sums = pool.map_async(checksum, more, 1).get(60s);
  for (std::size_t i = 0; i < more.size(); ++i) EXPECT_EQ(sums[i], checksum(more[i]));
}

TEST(MpiPool, TheInitializerRunsInEveryWorkerWithItsArguments) {
  mproc::Pool pool({.initializer = mproc::call(set_plugin, 1000), .context = mpi()});
  auto out = pool.map(plugin_plus, iota(50), 1);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(out[static_cast<std::size_t>(i)], 1000 + i);
}

void failing_init() { throw std::runtime_error("no plugins here"); }

TEST(MpiPool, AFailingInitializerFailsEveryTaskWithItsErrorAndNothingHangs) {
  mproc::Pool pool({.initializer = mproc::call(failing_init), .context = mpi()});
  for (int round = 0; round < 2; ++round) {  // before and after the ranks learnt it failed
    try {
      pool.map(square, iota(20), 1);
      FAIL() << "no error";
    } catch (const mproc::RemoteError& e) {
      EXPECT_EQ(e.message(), "no plugins here");
      EXPECT_NE(e.worker().find("on MPI rank "), std::string::npos) << e.worker();
    }
  }
}

TEST(MpiPool, AnInitializerArgumentThatIsADescriptorIsRefused) {
  mproc::Value<int> shared(0);
  try {
    mproc::Pool pool({.initializer = mproc::call([](mproc::Value<int>) {}, shared), .context = mpi()});
    FAIL() << "no error";
  } catch (const mproc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach an MPI rank"), std::string::npos) << e.what();
  }
  mproc::Pool pool({.context = mpi()});  // the ranks were given back
  EXPECT_EQ(pool.processes(), 2);
}

TEST(MpiPool, APoolCannotTakeMoreRanksThanAreFree) {
  mproc::Pool one({.processes = 1, .context = mpi()});
  EXPECT_EQ(one.processes(), 1);
  try {
    mproc::Pool two({.processes = 2, .context = mpi()});
    FAIL() << "no error";
  } catch (const mproc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("has 1 free worker rank(s) of the 2"), std::string::npos) << e.what();
  }
  mproc::Pool other({.context = mpi()});  // takes the one that is free
  EXPECT_EQ(other.processes(), 1);
  EXPECT_EQ(one.apply(square, 5), 25);
  EXPECT_EQ(other.apply(square, 6), 36);
}

TEST(MpiPool, ATaskOverItsTimeLimitFailsWithTimeoutError) {
  mproc::Pool pool({.processes = 1, .context = mpi(), .task_timeout = 200ms});
  auto slow = pool.apply_async(sleep_then, 5000);
  auto fast = pool.apply_async(sleep_then, 1);
  EXPECT_THROW(slow.get(30s), mproc::TimeoutError);
  EXPECT_EQ(fast.get(30s), 1);
}

TEST(MpiPool, TerminateWithTasksInFlightFailsThemAndReturns) {
  mproc::Pool pool({.context = mpi()});
  std::vector<mproc::AsyncResult<int>> results;
  for (int i = 0; i < 4; ++i) results.push_back(pool.apply_async(sleep_then, 3000));
  std::this_thread::sleep_for(100ms);
  auto t0 = std::chrono::steady_clock::now();
  pool.terminate();
  pool.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s) << "terminate waited for the tasks";
  for (auto& r : results) EXPECT_THROW(r.get(), mproc::Error);
  mproc::Pool again({.context = mpi()});
  EXPECT_EQ(again.apply(square, 4), 16) << "the ranks serve the next pool";
}

TEST(MpiExecutor, SubmitMapAsCompletedAndShutdown) {
  mproc::ProcessPoolExecutor ex({.mp_context = mpi()});
  std::vector<mproc::Future<int>> futures;
  for (int i = 0; i < 20; ++i) futures.push_back(ex.submit(square, i));
  int sum = 0;
  for (auto& f : mproc::as_completed(futures)) sum += f.result();
  EXPECT_EQ(sum, 2470);
  std::vector<int> mapped;
  for (int v : ex.map(square, iota(10))) mapped.push_back(v);
  EXPECT_EQ(mapped, (std::vector<int>{0, 1, 4, 9, 16, 25, 36, 49, 64, 81}));
  ex.shutdown(true);
  EXPECT_THROW(ex.submit(square, 1), mproc::Error);
}

TEST(MpiExecutor, PythonsCompatibilityModeBreaksThePoolOnACrash) {
  mproc::ProcessPoolExecutor ex({.max_workers = 1, .mp_context = mpi(), .break_on_crash = true});
  auto f = ex.submit(abort_on_two, 2);
  EXPECT_THROW(f.result(), mproc::BrokenProcessPool);
  std::this_thread::sleep_for(50ms);
  EXPECT_THROW(ex.submit(square, 1).result(), mproc::BrokenProcessPool);
}

TEST(MpiContext, AProcessCannotStartUnderTheMpiContext) {
  try {
    auto p = mpi().Process([] {});
    p.start();
    FAIL() << "no error";
  } catch (const mproc::Error& e) {
    EXPECT_NE(std::string(e.what()).find("a Process needs the 'fork', 'spawn' or 'forkserver' start method"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(mpi().get_start_method(), "mpi");
}

}  // namespace
