// mpi_map: mproc's mpi context, the peer of ../shared/bench/python/mpi_futures_map.py
// (mpi4py.futures; same bench/metric names and parameters). Run under mpirun: rank 0 measures,
// the other ranks are the pool's workers (tests/mpi/run starts 3 ranks, as the peer's command).
//
//   items_per_s_chunk1     pool.map(square, range(N), 1)       N = 20000 (--quick 2000)
//   items_per_s_chunk256   pool.map(square, range(N), 256)
//   arg_1MiB_MB_per_s      pool.map(nbytes, [blob] * M), blob 1 MiB, M = 200 (--quick 50),
//                          chunksize 1 as the peer's default
// Each is the median of R timed maps (5, --quick 3) after one warm-up map over every worker.
//
// usage: tests/mpi/run mpi_map [--run N] [--quick] [--reps R]
#include <mproc/mpi.hpp>
#include <mproc/mproc.hpp>

#include <cstdint>
#include <ranges>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: mpirun -n 3 mpi_map [--run N] [--quick] [--reps R]\n"
    "  Pool on the mpi context (every worker rank): map of x*x over N items at chunksize 1 and 256 (N 20000,\n"
    "  --quick 2000) and of M 1 MiB arguments (M 200, --quick 50): items/s and MB/s, median of R reps (5,\n"
    "  --quick 3). JSON lines on stdout.\n";

std::int64_t square(std::int64_t x) { return x * x; }
std::size_t nbytes(const std::string& b) { return b.size(); }

template <class F>
std::vector<double> times(int reps, F&& f) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    double t0 = bench::now();
    f();
    t.push_back(bench::now() - t0);
  }
  return t;
}

void check(bool ok, const char* what) {
  if (ok) return;
  bench::note("mpi_map: wrong result of %s", what);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // ranks 1..N-1 serve the pool from here on
  int reps = 0;
  auto o = bench::parse(argc, argv, kUsage, "mpi", [&](const std::string& name, const std::string& value) {
    if (name != "--reps") return false;
    reps = std::atoi(value.c_str());
    return true;
  });
  if (reps <= 0) reps = o.quick ? 3 : 5;
  const std::int64_t n = o.quick ? 2000 : 20000;
  const std::size_t m = o.quick ? 50 : 200;
  bench::Reporter r("mpi_map", o.run);

  mproc::Pool pool({.context = mproc::get_context("mpi")});
  const long long workers = pool.processes();
  check(pool.map(square, std::views::iota(std::int64_t{0}, std::int64_t{100}), 16).size() == 100, "the warm-up");
  for (std::size_t chunk : {std::size_t{1}, std::size_t{256}}) {
    auto t = times(reps, [&] {
      auto out = pool.map(square, std::views::iota(std::int64_t{0}, n), chunk);
      check(static_cast<std::int64_t>(out.size()) == n && out.back() == (n - 1) * (n - 1), "a map of squares");
    });
    r.rate("mpi", "items_per_s_chunk" + std::to_string(chunk), static_cast<double>(n), t, "items/s",
           bench::field("n", static_cast<long long>(n)) + bench::field("chunksize", static_cast<long long>(chunk)) +
               bench::field("workers", workers));
  }
  const std::vector<std::string> blobs(m, std::string(std::size_t{1} << 20, 'x'));
  auto t = times(reps, [&] {
    auto out = pool.map(nbytes, blobs, 1);
    check(out.size() == m && out.front() == (std::size_t{1} << 20), "a map of 1 MiB arguments");
  });
  r.rate("mpi", "arg_1MiB_MB_per_s", static_cast<double>(m) * 1.048576, t, "MB/s",
         bench::field("n", static_cast<long long>(m)) + bench::field("workers", workers));
  bench::note("mpi_map: %lld workers (MPI ranks)", workers);
  return 0;
}
