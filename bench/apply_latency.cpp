// apply_latency: one task at a time through mproc::Pool(2) and ProcessPoolExecutor(2), and the
// pipelined apply_async rate, per start method: the peer of
// ../shared/bench/python/apply_latency.py (same bench/metric names and parameters). The raw
// limit is the socketpair ping-pong of ../shared/bench/limits/pingpong.cpp.
//
//   pool_apply_rtt_{median,p99}      pool.apply(square, i) called sequentially, --calls calls
//                                    after --warmup untimed ones
//   apply_async_tasks_per_s          --async-n pool.apply_async(square, i) back to back, then every
//                                    get(): tasks/s, median of 3
//   submit_result_rtt_{median,p99}   executor.submit(square, i).result(), as pool_apply_rtt
// The pool's workers have both answered a task before anything is timed (Python's
// wait_all_workers); the executor's have run a map of 8 items (as Python's list(ex.map(...))).
//
// usage: apply_latency [--run N] [--quick] [--calls N] [--warmup N] [--async-n N]
//                      [--methods fork,spawn,forkserver]
#include <unistd.h>

#include <mproc/executor.hpp>
#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: apply_latency [--run N] [--quick] [--calls N] [--warmup N] [--async-n N] [--methods fork,spawn,forkserver]\n"
    "  Pool(2).apply and ProcessPoolExecutor(2).submit().result() round trips: median/p99 us over N calls\n"
    "  (default 2000, --quick 200) after a warm-up (default 200, --quick 20); Pool(2).apply_async rate over\n"
    "  --async-n tasks (default 20000, --quick 2000), median of 3. JSON lines on stdout.\n";

constexpr const char* kBench = "apply_latency";
constexpr int kWorkers = 2;

std::int64_t square(std::int64_t x) { return x * x; }

[[noreturn]] void wrong(const char* what, std::int64_t i, std::int64_t r) {
  bench::note("apply_latency: %s(%lld) gave %lld", what, static_cast<long long>(i), static_cast<long long>(r));
  std::exit(1);
}

std::vector<double> pool_apply_samples(mproc::Pool& pool, long calls, long warmup) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (std::int64_t i = 0; i < warmup + calls; ++i) {
    double t0 = bench::now();
    std::int64_t r = pool.apply(square, i);
    double dt = bench::now() - t0;
    if (r != i * i) wrong("apply", i, r);
    if (i >= warmup) samples.push_back(dt);
  }
  return samples;
}

std::vector<double> executor_samples(mproc::ProcessPoolExecutor& ex, long calls, long warmup) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(calls));
  for (std::int64_t i = 0; i < warmup + calls; ++i) {
    double t0 = bench::now();
    std::int64_t r = ex.submit(square, i).result();
    double dt = bench::now() - t0;
    if (r != i * i) wrong("submit", i, r);
    if (i >= warmup) samples.push_back(dt);
  }
  return samples;
}

double time_apply_async(mproc::Pool& pool, long n) {
  double t0 = bench::now();
  std::vector<mproc::AsyncResult<std::int64_t>> handles;
  for (std::int64_t i = 0; i < n; ++i) handles.push_back(pool.apply_async(square, i));
  for (std::int64_t i = 0; i < n; ++i) {
    std::int64_t r = handles[static_cast<std::size_t>(i)].get();
    if (r != i * i) wrong("apply_async", i, r);
  }
  return bench::now() - t0;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  long calls = -1, warmup = -1, async_n = -1;
  auto opt = bench::parse(argc, argv, kUsage, "fork,spawn,forkserver", [&](const std::string& name, const std::string& value) {
    if (name == "--calls") calls = std::atol(value.c_str());
    else if (name == "--warmup") warmup = std::atol(value.c_str());
    else if (name == "--async-n") async_n = std::atol(value.c_str());
    else return false;
    return true;
  });
  if (opt.n > 0) calls = opt.n;
  if (calls <= 0) calls = opt.quick ? 200 : 2000;
  if (warmup < 0) warmup = opt.quick ? 20 : 200;
  if (async_n <= 0) async_n = opt.quick ? 2000 : 20000;
  bench::Reporter out(kBench, opt.run);
  const std::string workers = bench::field("workers", static_cast<long long>(kWorkers));

  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    {
      mproc::Pool pool({.processes = kWorkers, .context = ctx});
      bench::wait_all_workers(pool, kWorkers);
      out.latency(method, "pool_apply_rtt", pool_apply_samples(pool, calls, warmup), workers);
      std::vector<double> times;
      for (int r = 0; r < 3; ++r) times.push_back(time_apply_async(pool, async_n));
      out.rate(method, "apply_async_tasks_per_s", static_cast<double>(async_n), times, "tasks/s", workers);
    }
    {
      mproc::ProcessPoolExecutor ex({.max_workers = kWorkers, .mp_context = ctx});
      for (auto r : ex.map(square, std::views::iota(std::int64_t{0}, std::int64_t{kWorkers * 4}))) (void)r;  // make the workers exist
      out.latency(method, "submit_result_rtt", executor_samples(ex, calls, warmup), workers);
    }
    bench::note("apply_latency: %s done", method.c_str());
  }
  return 0;
}
