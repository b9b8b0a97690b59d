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
//
// usage: startup [--run N] [--quick] [--n N] [--pool-n N] [--methods fork,spawn,forkserver]
#include <mproc/mproc.hpp>

#include <string>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: startup [--run N] [--quick] [--n N] [--pool-n N] [--methods fork,spawn,forkserver]\n"
    "  mproc::Process start+join of a function that does nothing, per start method:\n"
    "  median and p99 (us) over N starts (default 200, --quick 20) after one untimed-in-the-median\n"
    "  first start (reported as process_start_join_first); Pool(2) ready + one apply(noop), then its\n"
    "  terminate+join: median and p99 (us) over --pool-n pools (default 20, --quick 3). JSON lines on stdout.\n";

void noop() {}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  long pool_n = -1;
  auto opt = bench::parse(argc, argv, kUsage, "fork,spawn,forkserver", [&](const std::string& name, const std::string& value) {
    if (name != "--pool-n") return false;
    pool_n = std::atol(value.c_str());
    return true;
  });
  long n = opt.n > 0 ? opt.n : opt.quick ? 20 : 200;
  if (pool_n <= 0) pool_n = opt.quick ? 3 : 20;
  bench::Reporter out("startup", opt.run);

  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    std::vector<double> samples;
    samples.reserve(static_cast<std::size_t>(n));
    for (long i = 0; i <= n; ++i) {
      double t0 = bench::now();
      auto p = ctx.Process(noop);
      p.start();
      p.join();
      double dt = bench::now() - t0;
      if (p.exitcode() != 0) {
        bench::note("startup: %s child exited with %d", method.c_str(), p.exitcode().value_or(-999));
        return 1;
      }
      if (i == 0)
        out.latency(method, "process_start_join_first", {dt});
      else
        samples.push_back(dt);
    }
    out.latency(method, "process_start_join", samples);

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
    bench::note("startup: %s done", method.c_str());
  }
  return 0;
}
