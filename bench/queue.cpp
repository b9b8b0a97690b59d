// queue: one producer process -> parent through mproc::Queue, the twin of the Queue cases of
// ../shared/bench/python/queue_throughput.py (bench "queue_throughput", same metric names):
//   queue_int_items_per_s    --small-n puts of an int64, then a sentinel; the parent gets them all
//   queue_1MiB_items_per_s   --big-n puts of a 1 MiB std::string, then a sentinel
//   queue_1MiB_MB_per_s      the same in MB/s (MB = 1e6 bytes)
// The producer is started first and meets the parent at a Barrier, so process start-up is not
// timed; the clock runs from the Barrier until the parent has received the last item. Median of
// --reps repetitions. (The Pipe cases of the same Python script are in bench/connection.cpp.)
//
// usage: queue [--run N] [--quick] [--methods fork,...] [--small-n N] [--big-n N] [--reps R]
#include <mproc/mproc.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: queue [--run N] [--quick] [--methods fork,spawn,forkserver] [--small-n N] [--big-n N] [--reps R]\n"
    "  One producer process puts N int64 (default 100000, --quick 10000) or N 1 MiB strings (default 500,\n"
    "  --quick 50) into an mproc::Queue, the parent gets them; median of R reps (default 3, --quick 1).\n"
    "  Start methods default to fork. JSON lines on stdout, progress on stderr.\n";

constexpr std::int64_t MiB = 1 << 20;

void int_producer(mproc::Queue<std::int64_t> q, mproc::Barrier go, std::int64_t n) {
  go.wait();
  for (std::int64_t i = 0; i < n; ++i) q.put(i);
  q.put(-1);  // Python puts None
  q.close();
  q.join_thread();
}

void bytes_producer(mproc::Queue<std::string> q, mproc::Barrier go, std::int64_t n) {
  const std::string item(static_cast<std::size_t>(MiB), 'x');
  go.wait();
  for (std::int64_t i = 0; i < n; ++i) q.put(item);
  q.put(std::string());  // the sentinel
  q.close();
  q.join_thread();
}

[[noreturn]] void fail(const char* what, std::int64_t count, std::int64_t n, const mproc::Process& p) {
  bench::note("queue: %s: got %lld of %lld items, child exit %d", what, static_cast<long long>(count),
              static_cast<long long>(n), p.exitcode().value_or(-999));
  std::exit(1);
}

double time_ints(const mproc::Context& ctx, std::int64_t n) {
  mproc::Queue<std::int64_t> q;
  mproc::Barrier go(2);
  auto p = ctx.Process(int_producer, q, go, n);
  p.start();
  go.wait();
  double t0 = bench::now();
  std::int64_t count = 0;
  while (q.get() >= 0) ++count;
  double dt = bench::now() - t0;
  p.join();
  if (count != n || p.exitcode() != 0) fail("ints", count, n, p);
  return dt;
}

double time_bytes(const mproc::Context& ctx, std::int64_t n) {
  mproc::Queue<std::string> q;
  mproc::Barrier go(2);
  auto p = ctx.Process(bytes_producer, q, go, n);
  p.start();
  go.wait();
  double t0 = bench::now();
  std::int64_t count = 0;
  for (;;) {
    std::string s = q.get();
    if (s.empty()) break;
    if (s.size() != static_cast<std::size_t>(MiB)) fail("1 MiB items of the wrong size", count, n, p);
    ++count;
  }
  double dt = bench::now() - t0;
  p.join();
  if (count != n || p.exitcode() != 0) fail("1 MiB items", count, n, p);
  return dt;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  std::int64_t small_n = -1, big_n = -1;
  int reps = -1;
  auto opt = bench::parse(argc, argv, kUsage, "fork", [&](const std::string& name, const std::string& value) {
    if (name == "--small-n") small_n = std::atoll(value.c_str());
    else if (name == "--big-n") big_n = std::atoll(value.c_str());
    else if (name == "--reps") reps = std::atoi(value.c_str());
    else return false;
    return true;
  });
  if (small_n <= 0) small_n = opt.n > 0 ? opt.n : opt.quick ? 10000 : 100000;
  if (big_n <= 0) big_n = opt.quick ? 50 : 500;
  if (reps <= 0) reps = opt.quick ? 1 : 3;

  bench::Reporter r("queue_throughput", opt.run);
  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) times.push_back(time_ints(ctx, small_n));
    r.rate(method, "queue_int_items_per_s", static_cast<double>(small_n), times, "items/s");

    times.clear();
    for (int i = 0; i < reps; ++i) times.push_back(time_bytes(ctx, big_n));
    const std::string item = bench::field("item_bytes", static_cast<long long>(MiB));
    r.rate(method, "queue_1MiB_items_per_s", static_cast<double>(big_n), times, "items/s", item);
    r.rate(method, "queue_1MiB_MB_per_s", static_cast<double>(big_n * MiB) / 1e6, times, "MB/s", item);
    bench::note("queue: %s done", method.c_str());
  }
  return 0;
}
