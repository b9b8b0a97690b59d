// startup: mproc::Process start+join per start method, the peer of
// ../shared/bench/python/startup.py (process_start_join) and of the raw limits in
// ../shared/bench/limits/startup.cpp (fork_exit, posix_spawn_self).
//
//   process_start_join        ctx.Process(noop); start(); join()  (median/p99 over --n)
//   process_start_join_first  the first start of each method on its own; for forkserver it
//                             includes starting the server, so it also warms it up
//   pool_ready_one_task       Pool(2) constructed and one pool.apply(noop) answered (median/p99
//                             over --pool-n); the raw limit is map_limit's pool_ready_one_task
//   pool_terminate            then pool.terminate(); pool.join(), timed on its own
//   process_start_join_inherited_{1KiB,1MiB}   (mproc only) as process_start_join with an
//                             mproc::inherited<std::vector<std::int64_t>> of that size set in the
//                             parent and read in the child: the start-up cost of inherited state
//                             (copied with the memory under fork, serialised into the start-up
//                             message under spawn and forkserver); median/p99 over --inherited-n
//
// usage: startup [--run N] [--quick] [--n N] [--pool-n N] [--inherited-n N]
//                [--methods fork,spawn,forkserver]
#include <mproc/mproc.hpp>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

// Set in the parent only for the inherited cases; every child of those reads it.
mproc::inherited<std::vector<std::int64_t>> g_state{"bench_state"};

constexpr const char* kUsage =
    "usage: startup [--run N] [--quick] [--n N] [--pool-n N] [--methods fork,spawn,forkserver]\n"
    "  mproc::Process start+join of a function that does nothing, per start method:\n"
    "  median and p99 (us) over N starts (default 50, --quick 5, as startup.py) after one untimed-in-the-median\n"
    "  first start (reported as process_start_join_first); Pool(2) ready + one apply(noop), then its\n"
    "  terminate+join: median and p99 (us) over --pool-n pools (default 20, --quick 3). JSON lines on stdout.\n";

void noop() {}

void read_state(std::int64_t expected_size) {
  if (static_cast<std::int64_t>(g_state->size()) != expected_size || g_state->back() != expected_size - 1)
    throw std::runtime_error("the inherited state did not arrive whole");
}

/// Median/p99 of start+join of `ctx.Process(f, args...)` over n starts; exits on a child's failure.
template <class F, class... Args>
std::vector<double> start_join(const mproc::Context& ctx, const std::string& method, long n, F f, Args... args) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) {
    double t0 = bench::now();
    auto p = ctx.Process(f, args...);
    p.start();
    p.join();
    samples.push_back(bench::now() - t0);
    if (p.exitcode() != 0) {
      bench::note("startup: %s child exited with %d", method.c_str(), p.exitcode().value_or(-999));
      std::exit(1);
    }
  }
  return samples;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  long pool_n = -1, inherited_n = -1;
  auto opt = bench::parse(argc, argv, kUsage, "fork,spawn,forkserver", [&](const std::string& name, const std::string& value) {
    if (name == "--pool-n") pool_n = std::atol(value.c_str());
    else if (name == "--inherited-n") inherited_n = std::atol(value.c_str());
    else return false;
    return true;
  });
  long n = opt.n > 0 ? opt.n : opt.quick ? 5 : 50;  // startup.py's --n
  if (pool_n <= 0) pool_n = opt.quick ? 3 : 20;
  if (inherited_n <= 0) inherited_n = opt.quick ? 5 : 50;
  bench::Reporter out("startup", opt.run);

  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    out.latency(method, "process_start_join_first", start_join(ctx, method, 1, noop));
    out.latency(method, "process_start_join", start_join(ctx, method, n, noop));

    std::vector<double> ready, shutdown;
    for (long i = 0; i < pool_n; ++i) {
      double t0 = bench::now();
      mproc::Pool pool({.processes = 2, .context = ctx});
      pool.apply(noop);
      double t1 = bench::now();
      pool.terminate();
      pool.join();
      double t2 = bench::now();
      ready.push_back(t1 - t0);
      shutdown.push_back(t2 - t1);
    }
    const std::string workers = bench::field("workers", 2LL);
    out.latency(method, "pool_ready_one_task", ready, workers);
    out.latency(method, "pool_terminate", shutdown, workers);

    for (std::int64_t bytes : {std::int64_t{1} << 10, std::int64_t{1} << 20}) {
      const std::int64_t size = bytes / 8;
      std::vector<std::int64_t> state(static_cast<std::size_t>(size));
      for (std::int64_t i = 0; i < size; ++i) state[static_cast<std::size_t>(i)] = i;
      g_state.set(std::move(state));
      out.latency(method, bytes < (1 << 20) ? "process_start_join_inherited_1KiB" : "process_start_join_inherited_1MiB",
                  start_join(ctx, method, inherited_n, read_state, size), bench::field("state_bytes", static_cast<long long>(bytes)));
      g_state.reset();  // the cases above and the next method start without it
    }
    bench::note("startup: %s done", method.c_str());
  }
  return 0;
}
