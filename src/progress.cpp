#include "mproc/progress.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>

namespace mproc {
namespace {

// Redraws one line on stderr, at most every 100 ms (a terminal is slow, a map may finish
// thousands of chunks a second), and always for the last report.
class Bar {
 public:
  void operator()(std::size_t done, std::size_t total) {
    std::lock_guard lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (!started_) {
      started_ = true;
      start_ = now;
    }
    bool last = total != 0 && done >= total;
    if (!last && now - drawn_ < std::chrono::milliseconds(100)) return;
    drawn_ = now;
    double elapsed = std::chrono::duration<double>(now - start_).count();
    char line[160];
    if (total == 0) {
      std::snprintf(line, sizeof line, "\r%zu done  %.1f s", done, elapsed);
    } else {
      constexpr int kWidth = 30;
      int filled = static_cast<int>(static_cast<double>(done) / static_cast<double>(total) * kWidth);
      char bar[kWidth + 1];
      for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
      bar[kWidth] = '\0';
      std::snprintf(line, sizeof line, "\r[%s] %zu/%zu %3d%%  %.1f s", bar, done, total,
                    static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)), elapsed);
    }
    std::fputs(line, stderr);
    if (last) {
      std::fputc('\n', stderr);
      started_ = false;  // the next map starts a new bar
      drawn_ = {};
    }
    std::fflush(stderr);
  }

 private:
  std::mutex mu_;
  bool started_ = false;
  std::chrono::steady_clock::time_point start_{}, drawn_{};
};

}  // namespace

Progress::Progress(Callback callback) : report_(std::move(callback)) {}

Progress Progress::bar(Callback otherwise) {
  if (::isatty(2)) {
    auto bar = std::make_shared<Bar>();
    return Progress([bar](std::size_t done, std::size_t total) { (*bar)(done, total); });
  }
  return Progress(std::move(otherwise));
}

}  // namespace mproc
