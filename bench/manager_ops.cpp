// The mproc side of ../shared/bench/python/manager_ops.py: Manager().dict() operations per second.
//
//   * one client (the parent): --n d[k] = v, then --n d[k] reads (keys cycle over 1000 distinct
//     keys, "p0".."p999"); each op is one round trip to the manager process.
//   * two client processes at once, each doing --n sets then --n gets on its own keys;
//     aggregate ops/s = total ops / (last finish - first start), on the monotonic clock that
//     all processes share.
//   * mproc only: the round trip of one get (median, p99), and the same sets and gets in batches of 100 keys per round trip (set_many /
//     get_many), in keys per second: what the bulk operations buy.
//
// Same bench/metric names as the Python peer; its raw limit is one socketpair round trip
// (limits/pingpong, 131 k round trips/s on the baseline machine).
#include <mproc/mproc.hpp>

#include <string>
#include <tuple>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kBench = "manager_ops";
constexpr int kKeys = 1000;
constexpr int kBatch = 100;

using Dict = mproc::DictProxy<std::string, long>;
using Span = std::tuple<double, double, double>;

std::vector<std::string> key_names(const std::string& prefix) {
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back(prefix + std::to_string(i));
  return keys;
}

Span set_get(Dict d, long n, const std::string& prefix) {
  auto keys = key_names(prefix);
  double t0 = bench::now();
  for (long i = 0; i < n; ++i) d.set(keys[static_cast<std::size_t>(i % kKeys)], i);
  double t1 = bench::now();
  long sink = 0;
  for (long i = 0; i < n; ++i) sink += d.at(keys[static_cast<std::size_t>(i % kKeys)]);
  double t2 = bench::now();
  if (sink < 0) std::fprintf(stderr, "%ld\n", sink);
  return {t0, t1, t2};
}

Span set_get_bulk(Dict d, long n, const std::string& prefix) {
  auto keys = key_names(prefix);
  double t0 = bench::now();
  for (long i = 0; i < n; i += kBatch) {
    std::vector<std::pair<std::string, long>> items;
    for (long j = i; j < i + kBatch && j < n; ++j) items.emplace_back(keys[static_cast<std::size_t>(j % kKeys)], j);
    d.set_many(items);
  }
  double t1 = bench::now();
  for (long i = 0; i < n; i += kBatch) {
    std::vector<std::string> ks;
    for (long j = i; j < i + kBatch && j < n; ++j) ks.push_back(keys[static_cast<std::size_t>(j % kKeys)]);
    if (d.get_many(ks).size() != ks.size()) std::exit(3);
  }
  double t2 = bench::now();
  return {t0, t1, t2};
}

// Each get timed alone: the round trip's median and p99, to set beside the raw socketpair
// round trip (limits/pingpong's socketpair_rtt_median).
std::vector<double> get_latencies(Dict d, long n) {
  auto keys = key_names("p");
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) {
    double t0 = bench::now();
    (void)d.at(keys[static_cast<std::size_t>(i % kKeys)]);
    out.push_back(bench::now() - t0);
  }
  return out;
}

void client(Dict d, mproc::Barrier go, mproc::Queue<Span> results, long n, std::string prefix) {
  go.wait();  // both clients start together
  results.put(set_get(d, n, prefix));
}

constexpr const char* kUsage =
    "usage: manager_ops [--run N] [--quick] [--n N] [--reps R] [--methods fork,spawn,forkserver]\n"
    "  Manager().dict() set/get rates, 1 and 2 clients (N ops each, default 20000, --quick 2000;\n"
    "  R reps, default 3, --quick 1). JSON lines on stdout. Methods default to fork.\n";

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);
  int reps = 3;
  auto o = bench::parse(argc, argv, kUsage, "fork", [&](const std::string& name, const std::string& v) {
    if (name != "--reps") return false;
    reps = std::atoi(v.c_str());
    return true;
  });
  long n = o.n > 0 ? o.n : o.quick ? 2000 : 20000;
  if (o.quick) reps = 1;
  bench::Reporter out(kBench, o.run);
  for (const auto& method : o.methods) {
    auto ctx = mproc::get_context(method);
    auto manager = mproc::Manager({.ctx = ctx});
    auto d = manager.dict<std::string, long>();
    std::vector<double> set_times, get_times, bulk_set, bulk_get;
    for (int r = 0; r < reps; ++r) {
      auto [t0, t1, t2] = set_get(d, n, "p");
      set_times.push_back(t1 - t0);
      get_times.push_back(t2 - t1);
    }
    out.rate(method, "dict_set_ops_per_s_1client", static_cast<double>(n), set_times, "ops/s");
    out.rate(method, "dict_get_ops_per_s_1client", static_cast<double>(n), get_times, "ops/s");
    out.latency(method, "dict_get_rtt", get_latencies(d, n));

    std::vector<double> both;
    for (int r = 0; r < reps; ++r) {
      mproc::Barrier go(2);
      mproc::Queue<Span> results;
      std::vector<mproc::Process> procs;
      for (int k = 0; k < 2; ++k) {
        std::string prefix = "c";
        prefix += std::to_string(k);
        prefix += "-";
        procs.push_back(ctx.Process(client, d, go, results, n, prefix));
      }
      for (auto& p : procs) p.start();
      std::vector<Span> spans{results.get(), results.get()};
      for (auto& p : procs) {
        p.join();
        if (p.exitcode() != 0) {
          std::fprintf(stderr, "manager_ops: a client exited with %d\n", p.exitcode().value_or(-999));
          return 1;
        }
      }
      double first = std::min(std::get<0>(spans[0]), std::get<0>(spans[1]));
      double last = std::max(std::get<2>(spans[0]), std::get<2>(spans[1]));
      both.push_back(last - first);
    }
    out.rate(method, "dict_setget_ops_per_s_2clients", 2.0 * 2 * static_cast<double>(n), both, "ops/s",
             bench::field("clients", 2LL));
    out.emit(method, "dict_final_len", static_cast<double>(d.size()), "keys");

    for (int r = 0; r < reps; ++r) {
      auto [t0, t1, t2] = set_get_bulk(d, n, "b");
      bulk_set.push_back(t1 - t0);
      bulk_get.push_back(t2 - t1);
    }
    out.rate(method, "dict_set_many_keys_per_s_1client", static_cast<double>(n), bulk_set, "keys/s",
             bench::field("batch", static_cast<long long>(kBatch)));
    out.rate(method, "dict_get_many_keys_per_s_1client", static_cast<double>(n), bulk_get, "keys/s",
             bench::field("batch", static_cast<long long>(kBatch)));
    bench::note("%s: %s done", kBench, method.c_str());
  }
}
