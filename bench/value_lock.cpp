// value_lock: two processes each increment a shared mproc::Value<int> --n times — the mproc
// side of ../shared/bench/python/value_lock.py, with its bench / metric / unit names.
//
//   locked    { std::scoped_lock g(v.get_lock()); v.value() += 1; }  (Python: with v.get_lock():
//             v.value += 1); reports increments/s over both processes (median of --reps, spread
//             in rate_min / rate_max) and whether the final count was exactly 2 * n every time.
//   unlocked  v.value() += 1 through a volatile reference, without the lock (for contrast: a
//             non-atomic read-modify-write); reports how many increments were lost. At the
//             default n a C++ loop lasts about 0.1 ms, less than a scheduler time slice, so on a
//             busy machine the two loops often do not overlap and nothing is lost; with
//             --n 10000000 they do, and millions are.
// The workers are started first and meet at a Barrier, then at a spinning start gate (as the
// raw limit's workers do: a Barrier's wake-up takes longer than a whole unlocked run, so without
// the gate the two loops would not overlap); each records CLOCK_MONOTONIC around its loop, and
// the elapsed time is last end - first start (start-up and exit are not timed).
// The raw limit is ../shared/bench/limits/lock.cpp (sem_t_lock_increments_per_s).
//
// usage: value_lock [--run N] [--quick] [--n N] [--reps R] [--methods fork,spawn,forkserver]
// JSON lines on stdout, progress on stderr.
#include <mproc/mproc.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

namespace {

constexpr const char* kBench = "value_lock";
constexpr int kProcs = 2;
int g_run = 0;

double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Numbers as the Python peer rounds them: whole above 100, else 3 decimals.
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f" : "%.3f", v);
  return buf;
}

void emit(const std::string& method, const char* metric, const std::string& value, const char* unit,
          const std::string& extra) {
  std::printf("{\"bench\": \"%s\", \"impl\": \"mproc\", \"start_method\": \"%s\", \"metric\": \"%s\", \"value\": %s, "
              "\"unit\": \"%s\", \"run\": %d%s}\n",
              kBench, method.c_str(), metric, value.c_str(), unit, g_run, extra.c_str());
  std::fflush(stdout);
}

// Every worker through the Barrier, then all released together by spinning on a shared count.
void start_together(mproc::Barrier& go, mproc::RawValue<int>& started) {
  go.wait();
  std::atomic_ref<int> count(started.value());
  count.fetch_add(1);
  while (count.load() < kProcs) {
  }
}

void incr_locked(mproc::Value<int> v, mproc::Barrier go, mproc::RawValue<int> started, mproc::RawArray<double> spans,
                 int slot, long n) {
  const mproc::RLock& lock = v.get_lock();
  start_together(go, started);
  double t0 = now();
  for (long i = 0; i < n; ++i) {
    std::scoped_lock guard(lock);
    v.value() += 1;
  }
  spans[static_cast<std::size_t>(2 * slot)] = t0;
  spans[static_cast<std::size_t>(2 * slot + 1)] = now();
}

void incr_unlocked(mproc::Value<int> v, mproc::Barrier go, mproc::RawValue<int> started, mproc::RawArray<double> spans,
                   int slot, long n) {
  volatile int& x = v.value();  // one load and one store per increment, as Python's v.value += 1
  start_together(go, started);
  double t0 = now();
  for (long i = 0; i < n; ++i) x = x + 1;
  spans[static_cast<std::size_t>(2 * slot)] = t0;
  spans[static_cast<std::size_t>(2 * slot + 1)] = now();
}

// One measurement: elapsed seconds and the final count.
template <class Target>
std::pair<double, int> run(const std::string& method, Target target, long n) {
  mproc::Value<int> v(0);
  mproc::Barrier go(kProcs);
  mproc::RawValue<int> started(0);
  mproc::RawArray<double> spans(2 * kProcs);
  auto ctx = mproc::get_context(method);
  std::vector<mproc::Process> procs;
  for (int i = 0; i < kProcs; ++i) procs.push_back(ctx.Process(target, v, go, started, spans, i, n));
  for (auto& p : procs) p.start();
  for (auto& p : procs) {
    p.join();
    if (p.exitcode() != 0) {
      std::fprintf(stderr, "value_lock: a worker exited with %d\n", p.exitcode().value_or(-999));
      std::exit(1);
    }
  }
  double first = spans[0], last = spans[1];
  for (int i = 1; i < kProcs; ++i) {
    first = std::min(first, spans[static_cast<std::size_t>(2 * i)]);
    last = std::max(last, spans[static_cast<std::size_t>(2 * i + 1)]);
  }
  return {last - first, v.value()};
}

constexpr const char* kUsage =
    "usage: value_lock [--run N] [--quick] [--n N] [--reps R] [--methods fork,spawn,forkserver]\n"
    "  Two processes increment a Value<int> N times each (default 100000, --quick 10000), under its lock\n"
    "  (R reps, default 3, --quick 1) and without it. JSON lines on stdout. Methods default to fork.\n";

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  long n = 100000;
  int reps = 3;
  bool quick = false, n_given = false, reps_given = false;
  std::string methods = "fork";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fputs(kUsage, stderr);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--run") {
      g_run = std::atoi(value().c_str());
    } else if (a == "--n") {
      n = std::atol(value().c_str());
      n_given = true;
    } else if (a == "--reps") {
      reps = std::atoi(value().c_str());
      reps_given = true;
    } else if (a == "--methods") {
      methods = value();
    } else {
      std::fprintf(stderr, "value_lock: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  if (quick) {
    if (!n_given) n = 10000;
    if (!reps_given) reps = 1;
  }
  if (n < 1 || reps < 1) {
    std::fputs(kUsage, stderr);
    return 2;
  }

  const long expected = kProcs * n;
  std::size_t pos = 0;
  while (pos <= methods.size()) {
    std::size_t comma = std::min(methods.find(',', pos), methods.size());
    std::string method = methods.substr(pos, comma - pos);
    pos = comma + 1;
    if (method.empty()) continue;

    std::vector<double> rates;
    std::string finals;
    bool exact = true;
    for (int r = 0; r < reps; ++r) {
      auto [dt, final] = run(method, incr_locked, n);
      rates.push_back(static_cast<double>(expected) / dt);
      finals += (finals.empty() ? "" : ", ") + std::to_string(final);
      exact = exact && final == expected;
    }
    std::sort(rates.begin(), rates.end());
    double median = rates.size() % 2 ? rates[rates.size() / 2] : (rates[rates.size() / 2 - 1] + rates[rates.size() / 2]) / 2;
    emit(method, "locked_increments_per_s", num(median), "ops/s",
         ", \"amount\": " + std::to_string(expected) + ", \"reps\": " + std::to_string(reps) +
             ", \"rate_min\": " + num(rates.front()) + ", \"rate_max\": " + num(rates.back()) +
             ", \"procs\": " + std::to_string(kProcs));
    emit(method, "locked_final_count_exact", exact ? "true" : "false", "bool",
         ", \"expected\": " + std::to_string(expected) + ", \"finals\": [" + finals + "]");

    auto [dt, final] = run(method, incr_unlocked, n);
    (void)dt;
    emit(method, "unlocked_lost_updates", std::to_string(expected - final), "increments",
         ", \"expected\": " + std::to_string(expected) + ", \"final\": " + std::to_string(final));
    std::fprintf(stderr, "value_lock: %s done\n", method.c_str());
  }
  return 0;
}
