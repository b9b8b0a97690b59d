// map_throughput: mproc::Pool(2).map of x*x per start method, the peer of
// ../shared/bench/python/map_throughput.py (same bench/metric names and parameters) and of the
// hand-written fork+socketpair pool in ../shared/bench/limits/map_limit.cpp (the raw limit).
//
//   serial_inprocess_items_per_s   the same loop in this process (start method "none"): no IPC
//   items_per_s_default_chunk      pool.map(square, range(N))             N = 1e6, chunksize
//                                  ceil(N / (4 * workers)) = 125000, as Python's
//   items_per_s_chunk1             pool.map(square, range(N1), 1)         N1 = 2e4
//   items_per_s_chunk1024          pool.map(square, range(N), 1024)
// Each rate is the median of --reps timed maps (rate_min/rate_max: their spread) on a pool whose
// two workers have both answered a task first (start-up is excluded; startup measures it), after
// one untimed map of the same case, as the limit warms its pool up: the first map of a process
// meets fresh memory (the result vector, the chunk buffers and their shared memory), and
// without it the first start method measured came out at half the rate of the others.
// The input is a range (std::views::iota, as Python's range); square is a plain function, as
// Python's `def square`, called through its address in the workers. Every output is checked
// after the clock stops.
//
// usage: map_throughput [--run N] [--quick] [--n N] [--n-chunk1 N] [--reps R]
//                       [--methods fork,spawn,forkserver]
#include <unistd.h>

#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: map_throughput [--run N] [--quick] [--n N] [--n-chunk1 N] [--reps R] [--methods fork,spawn,forkserver]\n"
    "  Pool(2).map(square, range(N)) with the default chunksize and chunksize 1024 (N default 1e6, --quick 1e5),\n"
    "  and with chunksize 1 over N1 items (default 2e4, --quick 2e3): items/s, median of R reps (default 3,\n"
    "  --quick 1). A serial in-process loop gives the floor without IPC. JSON lines on stdout.\n";

constexpr const char* kBench = "map_throughput";
constexpr int kWorkers = 2;

std::int64_t square(std::int64_t x) { return x * x; }

double time_map(mproc::Pool& pool, std::int64_t n, std::optional<std::size_t> chunksize) {
  double t0 = bench::now();
  std::vector<std::int64_t> out = pool.map(square, std::views::iota(std::int64_t{0}, n), chunksize);
  double dt = bench::now() - t0;
  bool ok = static_cast<std::int64_t>(out.size()) == n;
  for (std::int64_t i = 0; ok && i < n; ++i) ok = out[static_cast<std::size_t>(i)] == i * i;
  if (!ok) {
    bench::note("map_throughput: wrong result (%zu items for %lld)", out.size(), static_cast<long long>(n));
    std::exit(1);
  }
  return dt;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  long n_chunk1 = -1;
  int reps = -1;
  auto opt = bench::parse(argc, argv, kUsage, "fork,spawn,forkserver", [&](const std::string& name, const std::string& value) {
    if (name == "--n-chunk1") n_chunk1 = std::atol(value.c_str());
    else if (name == "--reps") reps = std::atoi(value.c_str());
    else return false;
    return true;
  });
  const std::int64_t n = opt.n > 0 ? opt.n : opt.quick ? 100'000 : 1'000'000;
  if (n_chunk1 <= 0) n_chunk1 = opt.quick ? 2'000 : 20'000;
  if (reps <= 0) reps = opt.quick ? 1 : 3;
  bench::Reporter out(kBench, opt.run);

  {  // Python: [square(x) for x in range(n)]
    double t0 = bench::now();
    std::vector<std::int64_t> v;
    for (std::int64_t x = 0; x < n; ++x) v.push_back(square(x));
    double dt = bench::now() - t0;
    if (static_cast<std::int64_t>(v.size()) != n) return 1;
    out.emit("none", "serial_inprocess_items_per_s", static_cast<double>(n) / dt, "items/s", bench::field("n", static_cast<long long>(n)));
  }

  for (const auto& method : opt.methods) {
    mproc::Pool pool({.processes = kWorkers, .context = mproc::get_context(method)});
    bench::wait_all_workers(pool, kWorkers);
    struct Case {
      const char* metric;
      std::int64_t n;
      std::optional<std::size_t> chunksize;
    };
    for (const Case& c : {Case{"items_per_s_default_chunk", n, std::nullopt}, Case{"items_per_s_chunk1", n_chunk1, 1},
                          Case{"items_per_s_chunk1024", n, 1024}}) {
      std::vector<double> times;
      time_map(pool, c.n, c.chunksize);  // warm-up, untimed
      for (int r = 0; r < reps; ++r) times.push_back(time_map(pool, c.n, c.chunksize));
      std::string chunk = c.chunksize ? std::to_string(*c.chunksize) : "\"default\"";
      out.rate(method, c.metric, static_cast<double>(c.n), times, "items/s",
               bench::field("workers", static_cast<long long>(kWorkers)) + ", \"chunksize\": " + chunk);
    }
    bench::note("map_throughput: %s done", method.c_str());
  }
  return 0;
}
