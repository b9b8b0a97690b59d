// micro: the in-process building blocks under every cross-process operation, with Google
// Benchmark (bench "micro", mproc only; no Python peer: these are the costs mproc adds on top of
// the system calls that ../shared/bench/limits measures).
//
//   lock_acquire_release            an uncontended mproc::Lock: acquire() + release()
//   value_locked_increment          { scoped_lock(v.get_lock()); v.value() += 1 } uncontended
//   encode_decode_int64             serialise + deserialise one std::int64_t (a task argument)
//   encode_decode_string_1KiB       the same for a 1 KiB std::string
//   pipe_send_recv_bytes_8B         Pipe(): send_bytes(8 bytes) + recv_bytes_into in one thread
//   pipe_send_recv_int64            Pipe(): send(std::int64_t) + recv<std::int64_t>() in one thread
// Each is reported as <name>_ns (median of Google Benchmark's repetitions, nanoseconds per
// operation) with the spread over the repetitions in ns_min/ns_max, in the JSON-line format of
// ../shared/bench. --quick runs each case for a short minimum time.
//
// usage: micro [--run N] [--quick] [--methods none] [Google Benchmark flags, e.g. --benchmark_filter=lock]
#include <benchmark/benchmark.h>

#include <mproc/mproc.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

void lock_acquire_release(benchmark::State& state) {
  mproc::Lock lock;
  for (auto _ : state) {
    lock.acquire();
    lock.release();
  }
}

void value_locked_increment(benchmark::State& state) {
  mproc::Value<int> v(0);
  for (auto _ : state) {
    std::scoped_lock guard(v.get_lock());
    v.value() += 1;
  }
  benchmark::DoNotOptimize(v.value());
}

template <class T>
void encode_decode(benchmark::State& state, T value) {
  std::string buf;
  for (auto _ : state) {
    buf.clear();
    mproc::detail::encode(buf, value);
    T back = mproc::detail::decode<T>(buf.data(), buf.size());
    benchmark::DoNotOptimize(back);
  }
}

void pipe_send_recv_bytes(benchmark::State& state) {
  auto [a, b] = mproc::Pipe();
  std::int64_t v = 1;
  auto buf = std::as_writable_bytes(std::span(&v, 1));
  for (auto _ : state) {
    a.send_bytes(buf);
    b.recv_bytes_into(buf);
  }
}

void pipe_send_recv_int64(benchmark::State& state) {
  auto [a, b] = mproc::Pipe();
  std::int64_t v = 1;
  for (auto _ : state) {
    a.send(v);
    v = b.recv<std::int64_t>();
  }
}

/// Prints each case's median over the repetitions as one JSON line (ns per operation).
class JsonLines : public benchmark::BenchmarkReporter {
 public:
  explicit JsonLines(int run) : out_("micro", run) {}
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) {
        bench::note("micro: %s failed: %s", r.benchmark_name().c_str(), r.error_message.c_str());
        failed_ = true;
        continue;
      }
      if (r.run_type != Run::RT_Iteration) continue;
      std::string name = r.run_name.function_name;
      auto& s = samples_[name];
      s.push_back(r.GetAdjustedRealTime());  // ns per iteration (the unit is the default, ns)
    }
  }
  void Finalize() override {
    for (auto& [name, ns] : samples_) {
      std::sort(ns.begin(), ns.end());
      out_.emit("none", name + "_ns", bench::Reporter::median(ns), "ns",
                bench::field("reps", static_cast<long long>(ns.size())) + bench::field("ns_min", ns.front()) +
                    bench::field("ns_max", ns.back()));
    }
  }
  bool failed() const { return failed_; }

 private:
  bench::Reporter out_;
  std::map<std::string, std::vector<double>> samples_;
  bool failed_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  // Our options first; the rest (--benchmark_*) go to Google Benchmark.
  int run = 0;
  bool quick = false;
  std::vector<char*> rest{argv[0]};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--run" && i + 1 < argc) run = std::atoi(argv[++i]);
    else if (a == "--quick") quick = true;
    else if (a == "--methods" && i + 1 < argc) ++i;  // accepted for bench/run's uniformity; nothing to choose
    else if (a == "--help" || a == "-h") {
      std::fputs("usage: micro [--run N] [--quick] [--benchmark_filter=REGEX ...]\n"
                 "  In-process costs under mproc's operations (Google Benchmark), as JSON lines in ns/op.\n",
                 stdout);
      return 0;
    } else rest.push_back(argv[i]);
  }
  benchmark::RegisterBenchmark("lock_acquire_release", lock_acquire_release);
  benchmark::RegisterBenchmark("value_locked_increment", value_locked_increment);
  benchmark::RegisterBenchmark("encode_decode_int64", [](benchmark::State& s) { encode_decode<std::int64_t>(s, 42); });
  benchmark::RegisterBenchmark("encode_decode_string_1KiB", [](benchmark::State& s) { encode_decode(s, std::string(1024, 'x')); });
  benchmark::RegisterBenchmark("pipe_send_recv_bytes_8B", pipe_send_recv_bytes);
  benchmark::RegisterBenchmark("pipe_send_recv_int64", pipe_send_recv_int64);
  std::string min_time = quick ? "--benchmark_min_time=0.01" : "--benchmark_min_time=0.1";
  std::string reps = quick ? "--benchmark_repetitions=2" : "--benchmark_repetitions=5";
  rest.insert(rest.begin() + 1, reps.data());
  rest.insert(rest.begin() + 1, min_time.data());
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 2;
  JsonLines reporter(run);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return reporter.failed() ? 1 : 0;
}
