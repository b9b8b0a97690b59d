// Shared helpers for mproc's benchmark programs (bench/*.cpp).
//
// Every program prints one JSON object per line on stdout, in the record format of
// ../shared/bench (README.md there):
//
//   {"bench": ..., "impl": "mproc", "start_method": ..., "metric": ..., "value": ...,
//    "unit": ..., "run": ..., ...extra fields}
//
// with the same bench/metric names as the Python peers (../shared/bench/python) or, where
// Python has no such case, as the raw limits (../shared/bench/limits). Human-readable progress
// goes to stderr. Latencies are median (as Python's statistics.median) and nearest-rank p99 in
// microseconds; rates are the median of several timed repetitions, with rate_min/rate_max.
#pragma once

#include <unistd.h>

#include <mproc/pool.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

namespace bench {

inline constexpr const char* kImpl = "mproc";

/// Seconds on CLOCK_MONOTONIC (Python's time.perf_counter on Linux).
inline double now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

/// The options every program shares (those of ../shared/bench/python/common.py), plus --n.
struct Options {
  int run = 0;
  bool quick = false;
  long n = -1;  // -1: the program's default
  std::vector<std::string> methods;
};

/// A number as the peers print it: whole above 100, else up to 3 decimals.
inline std::string fmt(double v) {
  char buf[64];
  if (std::fabs(v) >= 100) std::snprintf(buf, sizeof buf, "%.0f", v);
  else std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

/// A JSON string literal (quotes and escapes) of any text.
inline std::string quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

/// Extra JSON fields: field("n", 50) + field("duplex", true) ...
inline std::string field(const char* name, long long v) { return std::string(", \"") + name + "\": " + std::to_string(v); }
inline std::string field(const char* name, double v) { return std::string(", \"") + name + "\": " + fmt(v); }
inline std::string field(const char* name, bool v) { return std::string(", \"") + name + "\": " + (v ? "true" : "false"); }
inline std::string field(const char* name, const std::string& v) { return std::string(", \"") + name + "\": " + quote(v); }

class Reporter {
 public:
  Reporter(const char* bench, int run) : bench_(bench), run_(run) {}

  void emit(const std::string& start_method, const std::string& metric, double value, const char* unit,
            const std::string& extra = "") const {
    emit_json(start_method, metric, fmt(value), unit, extra);
  }

  /// A record whose value is not a number: an outcome string (worker_death) or a boolean.
  void emit_outcome(const std::string& start_method, const std::string& metric, const std::string& outcome,
                    const std::string& extra = "") const {
    emit_json(start_method, metric, quote(outcome), "outcome", extra);
  }

  /// value_json is already JSON (a number, a quoted string, true/false).
  void emit_json(const std::string& start_method, const std::string& metric, const std::string& value_json,
                 const char* unit, const std::string& extra = "") const {
    std::printf("{\"bench\": \"%s\", \"impl\": \"%s\", \"start_method\": \"%s\", \"metric\": \"%s\", \"value\": %s, "
                "\"unit\": \"%s\", \"run\": %d%s}\n",
                bench_, kImpl, start_method.c_str(), metric.c_str(), value_json.c_str(), unit, run_, extra.c_str());
    std::fflush(stdout);
  }

  /// name_median and name_p99 in microseconds of durations in seconds (Python's emit_latency).
  void latency(const std::string& start_method, const std::string& name, std::vector<double> samples_s,
               const std::string& extra = "", const std::string& suffix = "") const {
    for (auto& s : samples_s) s *= 1e6;
    std::string n = field("n", static_cast<long long>(samples_s.size()));
    emit(start_method, name + "_median" + suffix, median(samples_s), "us", n + extra);
    emit(start_method, name + "_p99" + suffix, percentile(samples_s, 99), "us", n + extra);
  }

  /// amount/time at the median of several repetitions, with the spread (Python's emit_rate).
  void rate(const std::string& start_method, const std::string& metric, double amount, const std::vector<double>& times_s,
            const char* unit, const std::string& extra = "") const {
    std::vector<double> rates;
    for (double t : times_s) rates.push_back(amount / t);
    std::sort(rates.begin(), rates.end());
    emit(start_method, metric, median(rates), unit,
         field("amount", amount) + field("reps", static_cast<long long>(rates.size())) + field("rate_min", rates.front()) +
             field("rate_max", rates.back()) + extra);
  }

  static double median(std::vector<double> v) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    std::size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }

  /// Nearest rank, p in 0..100.
  static double percentile(std::vector<double> v, double p) {
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    auto k = static_cast<std::size_t>(std::max(1.0, std::ceil(p / 100.0 * static_cast<double>(v.size()))));
    return v[k - 1];
  }

 private:
  const char* bench_;
  int run_;
};

/// The pid of the worker that ran it, after a short sleep (Python's common._sleep_pid).
inline std::int64_t sleep_pid(double delay) {
  std::this_thread::sleep_for(std::chrono::duration<double>(delay));
  return ::getpid();
}

/// Python's common.wait_all_workers: rounds of one short sleep per worker (chunksize 1) until
/// every worker has answered one, so that pool start-up stays out of what is timed next.
inline void wait_all_workers(mproc::Pool& pool, int nworkers) {
  std::vector<std::int64_t> seen;
  double deadline = now() + 30;
  while (static_cast<int>(seen.size()) < nworkers && now() < deadline) {
    for (auto pid : pool.map(sleep_pid, std::vector<double>(static_cast<std::size_t>(nworkers), 0.02), 1))
      if (std::find(seen.begin(), seen.end(), pid) == seen.end()) seen.push_back(pid);
  }
}

template <class... Args>
void note(const char* format, Args... args) {
  std::fprintf(stderr, format, args...);
  std::fputc('\n', stderr);
}

/// Parses --run N, --quick, --n N, --methods a,b and --help; `extra(name, value)` may take
/// program-specific "--name VALUE" options (returns false for unknown ones). Exits on error.
template <class Extra>
Options parse(int argc, char** argv, const char* usage, const char* default_methods, Extra extra) {
  Options o;
  std::string methods = default_methods;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s: %s needs a value\n%s", argv[0], a.c_str(), usage);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::fputs(usage, stdout);
      std::exit(0);
    } else if (a == "--quick") {
      o.quick = true;
    } else if (a == "--run") {
      o.run = std::atoi(value().c_str());
    } else if (a == "--n") {
      o.n = std::atol(value().c_str());
    } else if (a == "--methods") {
      methods = value();
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc && extra(a, std::string(argv[i + 1]))) {
      ++i;
    } else {
      std::fprintf(stderr, "%s: unknown option %s\n%s", argv[0], a.c_str(), usage);
      std::exit(2);
    }
  }
  std::size_t pos = 0;
  while (pos <= methods.size()) {
    std::size_t comma = methods.find(',', pos);
    if (comma == std::string::npos) comma = methods.size();
    if (comma > pos) o.methods.push_back(methods.substr(pos, comma - pos));
    pos = comma + 1;
  }
  return o;
}

}  // namespace bench
