// mproc::Progress: a bar on stderr when it is a terminal, the callback otherwise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <mproc/mproc.hpp>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "support/capture.hpp"

namespace {

// Points fd 2 at a pseudo-terminal for the scope's lifetime; what was written there is read back.
class StderrOnATerminal {
 public:
  StderrOnATerminal() {
    master_ = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master_ < 0 || ::grantpt(master_) != 0 || ::unlockpt(master_) != 0) throw std::runtime_error("no pty");
    int slave = ::open(::ptsname(master_), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) throw std::runtime_error("no pty slave");
    saved_ = ::fcntl(2, F_DUPFD_CLOEXEC, 10);
    ::dup2(slave, 2);
    ::close(slave);
  }
  ~StderrOnATerminal() {
    restore();
    ::close(master_);
  }
  void restore() {
    if (saved_ < 0) return;
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string output() {
    restore();
    std::string out;
    ::fcntl(master_, F_SETFL, O_NONBLOCK);
    char buf[4096];
    for (ssize_t n; (n = ::read(master_, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
    return out;
  }

 private:
  int master_ = -1;
  int saved_ = -1;
};

TEST(ProgressTest, AnEmptyProgressReportsNothing) {
  mproc::Progress none;
  EXPECT_FALSE(none);
  none(1, 2);  // harmless
}

TEST(ProgressTest, ACallbackGetsEveryReport) {
  std::vector<std::pair<std::size_t, std::size_t>> got;
  mproc::Progress p([&](std::size_t done, std::size_t total) { got.emplace_back(done, total); });
  p(1, 4);
  p(4, 4);
  EXPECT_EQ(got, (std::vector<std::pair<std::size_t, std::size_t>>{{1, 4}, {4, 4}}));
}

TEST(ProgressTest, OnATerminalTheBarIsDrawnOnStderrAndEndsItsLine) {
  StderrOnATerminal tty;
  bool called = false;
  auto p = mproc::Progress::bar([&](std::size_t, std::size_t) { called = true; });
  p(5, 10);
  p(10, 10);
  auto out = tty.output();
  EXPECT_FALSE(called);
  EXPECT_NE(out.find("[###############...............] 5/10  50%"), std::string::npos) << out;
  EXPECT_NE(out.find("10/10 100%"), std::string::npos) << out;
  EXPECT_EQ(out.back(), '\n') << out;
}

TEST(ProgressTest, WhenStderrIsNotATerminalTheBarFallsBackToTheCallback) {
  mproc_test::CaptureFd err(2);  // a pipe, not a terminal
  std::size_t last = 0;
  auto p = mproc::Progress::bar([&](std::size_t done, std::size_t) { last = done; });
  p(3, 10);
  EXPECT_EQ(last, 3u);
  EXPECT_EQ(err.finish(), "");
}

int square(int x) { return x * x; }

class PoolProgressTest : public ::testing::TestWithParam<std::string> {
 protected:
  using Reports = std::vector<std::pair<std::size_t, std::size_t>>;
  mproc::Pool pool_with(Reports& reports) {
    // Reports come from the pool's handler thread; this test reads them after the map returned.
    return mproc::Pool({.processes = 2,
                        .context = mproc::get_context(GetParam()),
                        .progress = mproc::Progress([&reports](std::size_t done, std::size_t total) {
                          reports.emplace_back(done, total);
                        })});
  }
};

TEST_P(PoolProgressTest, AMapReportsOncePerChunkUpToAllItems) {
  Reports reports;
  auto pool = pool_with(reports);
  std::vector<int> items(100);
  auto out = pool.map(square, items, 10);
  ASSERT_EQ(out.size(), 100u);
  ASSERT_EQ(reports.size(), 10u);
  for (std::size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].first, (i + 1) * 10);
    EXPECT_EQ(reports[i].second, 100u);
  }
}

TEST_P(PoolProgressTest, AStarmapReportsToo) {
  Reports reports;
  auto pool = pool_with(reports);
  std::vector<std::tuple<int, int>> items(7, {2, 3});
  auto out = pool.starmap([](int a, int b) { return a * b; }, items, 2);
  EXPECT_EQ(out, std::vector<int>(7, 6));
  ASSERT_FALSE(reports.empty());
  EXPECT_EQ(reports.back(), std::make_pair(std::size_t{7}, std::size_t{7}));
}

TEST_P(PoolProgressTest, AnImapCountsItemsAsTheyComeAndKnowsTheTotalOnceItsInputEnded) {
  Reports reports;
  auto pool = pool_with(reports);
  std::vector<int> items(50);
  std::size_t seen = 0;
  for (int r : pool.imap_unordered(square, items, 5)) {
    EXPECT_EQ(r, 0);
    ++seen;
  }
  pool.close();
  pool.join();  // every report has been made
  EXPECT_EQ(seen, 50u);
  ASSERT_EQ(reports.size(), 10u);
  std::size_t last = 0;
  for (auto [done, total] : reports) {
    EXPECT_GT(done, last);
    EXPECT_TRUE(total == 0 || total == 50u) << total;
    last = done;
  }
  EXPECT_EQ(last, 50u);
}

TEST_P(PoolProgressTest, ApplyDoesNotReport) {
  Reports reports;
  auto pool = pool_with(reports);
  EXPECT_EQ(pool.apply(square, 3), 9);
  EXPECT_TRUE(reports.empty());
}

INSTANTIATE_TEST_SUITE_P(StartMethods, PoolProgressTest, ::testing::Values("fork", "spawn", "forkserver"),
                         [](const auto& info) { return info.param; });

}  // namespace
