// scaling: where per-task overhead stops mattering. mproc::Pool(W).map and apply of a task that
// computes for T microseconds, for W workers in --workers (1, 2, 4, 8) and T in --task-us (1, 100,
// 10000) of CPU time. The peer with the same names and parameters is bench/scaling.py (Python's Pool).
//
//   serial_items_per_s_t<T>us         the task called in this process (start method "none"): the
//                                     ideal one worker can reach
//   map_items_per_s_w<W>_t<T>us       pool.map(work, [T] * N), default chunksize; N = --work-s / T
//                                     (at least 16): items/s, median of --reps maps
//   apply_rtt_{median,p99}_w<W>_t<T>us   pool.apply(work, T) called one after another (calls:
//                                     --work-s / T / 2, between 10 and 500): us
// The task spins until its thread has used T us of CPU (CLOCK_THREAD_CPUTIME_ID), so it is the same
// work on any machine and under any load: with more workers than CPUs they share the CPUs, and the
// ideal map rate is min(W, CPUs) / T. (A wait on the wall clock would let preempted workers finish
// "work" they never did.) The pool's workers have all answered a task before anything is timed.
// bench/report.py draws the chart from these lines.
//
// usage: scaling [--run N] [--quick] [--workers 1,2,4,8] [--task-us 1,100,10000] [--work-s S]
//                [--reps R] [--methods fork]
#include <time.h>

#include <mproc/mproc.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: scaling [--run N] [--quick] [--workers 1,2,4,8] [--task-us 1,100,10000] [--work-s S] [--reps R]\n"
    "               [--methods fork]\n"
    "  Pool(W).map and Pool(W).apply of a task that uses T us of CPU, for each W and T: items/s and round\n"
    "  trip median/p99 us. S seconds of task time per map (default 0.4, --quick 0.02); R maps (default 1).\n"
    "  JSON lines on stdout.\n";

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// Spins until this thread has used `us` microseconds of CPU; returns them, so the result can be checked.
std::int64_t work(std::int64_t us) {
  const double end = thread_cpu_seconds() + static_cast<double>(us) * 1e-6;
  while (thread_cpu_seconds() < end) {
  }
  return us;
}

std::vector<long> numbers(const std::string& list) {
  std::vector<long> out;
  for (std::size_t pos = 0; pos <= list.size();) {
    std::size_t comma = std::min(list.find(',', pos), list.size());
    if (comma > pos) out.push_back(std::atol(list.substr(pos, comma - pos).c_str()));
    pos = comma + 1;
  }
  return out;
}

[[noreturn]] void fail(const char* what) {
  bench::note("scaling: %s", what);
  std::exit(1);
}

std::string suffix(long workers, long task_us) {
  return (workers > 0 ? "_w" + std::to_string(workers) : std::string()) + "_t" + std::to_string(task_us) + "us";
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  std::string workers_arg = "1,2,4,8", task_arg = "1,100,10000";
  double work_s = -1;
  int reps = 1;
  auto opt = bench::parse(argc, argv, kUsage, "fork", [&](const std::string& name, const std::string& value) {
    if (name == "--workers") workers_arg = value;
    else if (name == "--task-us") task_arg = value;
    else if (name == "--work-s") work_s = std::atof(value.c_str());
    else if (name == "--reps") reps = std::atoi(value.c_str());
    else return false;
    return true;
  });
  if (work_s <= 0) work_s = opt.quick ? 0.02 : 0.4;
  const auto worker_counts = numbers(workers_arg), task_sizes = numbers(task_arg);
  if (worker_counts.empty() || task_sizes.empty() || reps < 1) fail("--workers, --task-us and --reps need positive numbers");
  for (long w : worker_counts)
    if (w < 1) fail("--workers needs counts of at least 1");
  for (long t : task_sizes)
    if (t < 1) fail("--task-us needs sizes of at least 1 us");
  auto items_for = [&](long t) { return std::max<std::int64_t>(16, static_cast<std::int64_t>(work_s / (static_cast<double>(t) * 1e-6))); };
  auto calls_for = [&](long t) { return std::clamp<long>(static_cast<long>(work_s / (static_cast<double>(t) * 1e-6) / 2), 10, 500); };
  bench::Reporter out("scaling", opt.run);

  for (long t : task_sizes) {  // the in-process ideal
    const std::int64_t n = items_for(t);
    double t0 = bench::now();
    for (std::int64_t i = 0; i < n; ++i) work(t);
    out.emit("none", "serial_items_per_s" + suffix(0, t), static_cast<double>(n) / (bench::now() - t0), "items/s",
             bench::field("n", static_cast<long long>(n)) + bench::field("task_us", static_cast<long long>(t)));
  }

  for (const auto& method : opt.methods) {
    for (long w : worker_counts) {
      mproc::Pool pool({.processes = static_cast<int>(w), .context = mproc::get_context(method)});
      bench::wait_all_workers(pool, static_cast<int>(w));
      for (long t : task_sizes) {
        const std::string params = bench::field("workers", static_cast<long long>(w)) + bench::field("task_us", static_cast<long long>(t));
        const std::int64_t n = items_for(t);
        const std::vector<std::int64_t> input(static_cast<std::size_t>(n), t);
        std::vector<double> times;
        for (int r = 0; r < reps; ++r) {
          double t0 = bench::now();
          auto res = pool.map(work, input);
          times.push_back(bench::now() - t0);
          if (res != input) fail("map gave a wrong result");
        }
        out.rate(method, "map_items_per_s" + suffix(w, t), static_cast<double>(n), times, "items/s", params);

        std::vector<double> rtt;
        const long calls = calls_for(t);
        for (long i = 0; i < calls; ++i) {
          double t0 = bench::now();
          std::int64_t r = pool.apply(work, static_cast<std::int64_t>(t));
          rtt.push_back(bench::now() - t0);
          if (r != t) fail("apply gave a wrong result");
        }
        out.latency(method, "apply_rtt", rtt, params, suffix(w, t));
      }
      bench::note("scaling: %s, %ld workers done", method.c_str(), w);
    }
  }
  return 0;
}
