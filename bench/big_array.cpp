// big_array: moving a 256 MiB buffer to a Pool worker, copied vs shared memory (the cases and
// metric names of ../shared/bench/python/big_array.py).
//
// Copied, through Pool::apply (the buffer travels in the task and/or the result):
//   pickle_roundtrip_bytes    apply(echo, std::string) -> the same bytes back
//   pickle_roundtrip_array    the same with a std::vector<std::int64_t>
//   pickle_oneway_crc         apply(crc, std::string) -> the worker returns the crc32 only
// SharedMemory (the task carries only the segment's name):
//   shm_create_fill           the parent creates the segment and copies the data in
//   shm_attach_only           the worker attaches and closes
//   shm_attach_crc            the worker attaches, crc32 over the whole segment
//   shm_attach_sum            the worker attaches, sums its uint64 words (modulo 2^64)
// Reference: local_crc, the parent's own crc32 of the buffer (no IPC).
// Each figure is the median of --reps runs in ms (reps, min, max beside it); *_MB_per_s is
// size / the upper median, as the Python script computes it. MB = 1e6 bytes.
//
// usage: big_array [--run N] [--quick] [--methods fork,...] [--mib M] [--reps R]
#include <unistd.h>
#include <zlib.h>

#include <mproc/mproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common.hpp"

namespace {

// ---------------------------------------------------------------- JSON lines (../shared/bench format)

double now() {  // CLOCK_MONOTONIC, as Python's time.perf_counter
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

std::string number(double v) {  // as the peers round: whole above 100, else 3 decimals
  char buf[64];
  std::snprintf(buf, sizeof buf, std::fabs(v) >= 100 ? "%.0f" : "%.3f", v);
  return buf;
}

int g_run = 0;

void emit(const std::string& method, const std::string& metric, double value, const char* unit, const std::string& extra) {
  std::printf("{\"bench\": \"big_array\", \"impl\": \"mproc\", \"start_method\": \"%s\", \"metric\": \"%s\", "
              "\"value\": %s, \"unit\": \"%s\", \"run\": %d%s}\n",
              method.c_str(), metric.c_str(), number(value).c_str(), unit, g_run, extra.c_str());
  std::fflush(stdout);
}

double median(std::vector<double> v) {  // Python's statistics.median
  std::sort(v.begin(), v.end());
  std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

constexpr const char* kUsage =
    "usage: big_array [--run N] [--quick] [--methods fork,spawn,forkserver] [--mib M] [--reps R]\n"
    "  M MiB (default 256, --quick 32) to a Pool(2) worker: copied through apply() and through\n"
    "  SharedMemory; median of R reps (default 3, --quick 1) in ms and MB/s. Start methods default\n"
    "  to fork, as the Python peer's. JSON lines on stdout, progress on stderr.\n";

constexpr std::size_t MiB = std::size_t{1} << 20;

std::uint32_t crc32_of(const void* p, std::size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  auto* b = static_cast<const Bytef*>(p);
  while (n > 0) {  // zlib takes uInt lengths
    auto chunk = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
    c = crc32(c, b, chunk);
    b += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(c);
}

std::uint64_t sum_words(const std::byte* p, std::size_t n) {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    total += w;
  }
  return total;
}

// ---------------------------------------------------------------- worker functions

std::string echo_bytes(std::string x) { return x; }
std::vector<std::int64_t> echo_array(std::vector<std::int64_t> x) { return x; }
std::uint32_t crc_bytes(std::string x) { return crc32_of(x.data(), x.size()); }

int shm_attach_only(std::string name) {
  mproc::SharedMemory shm({.name = name});
  shm.close();
  return 0;
}

std::uint32_t shm_crc(std::string name, std::size_t size) {
  mproc::SharedMemory shm({.name = name, .size = size});
  auto c = crc32_of(shm.buf().data(), size);
  shm.close();
  return c;
}

std::uint64_t shm_sum(std::string name, std::size_t size) {
  mproc::SharedMemory shm({.name = name, .size = size});
  auto s = sum_words(shm.buf().data(), size);
  shm.close();
  return s;
}

// ---------------------------------------------------------------- measuring

template <class F>
std::vector<double> timed(F&& fn, int reps) {
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    double t0 = now();
    fn();
    times.push_back(now() - t0);
  }
  return times;
}

[[noreturn]] void wrong(const char* what) {
  std::fprintf(stderr, "big_array: %s: wrong result\n", what);
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver workers re-run this binary and stop here
  long mib = -1;
  int reps = -1;
  bool quick = false;
  std::string methods_arg = "fork";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--quick") {
      quick = true;
    } else if (a == "--run" && has_value) {
      g_run = std::atoi(argv[++i]);
    } else if (a == "--methods" && has_value) {
      methods_arg = argv[++i];
    } else if (a == "--mib" && has_value) {
      mib = std::atol(argv[++i]);
    } else if (a == "--reps" && has_value) {
      reps = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "big_array: bad option %s\n%s", a.c_str(), kUsage);
      return 2;
    }
  }
  std::vector<std::string> methods;
  for (std::size_t pos = 0; pos <= methods_arg.size();) {
    std::size_t comma = std::min(methods_arg.find(',', pos), methods_arg.size());
    if (comma > pos) methods.push_back(methods_arg.substr(pos, comma - pos));
    pos = comma + 1;
  }
  if (mib <= 0) mib = quick ? 32 : 256;
  if (reps <= 0) reps = quick ? 1 : 3;
  const std::size_t size = static_cast<std::size_t>(mib) * MiB;

  std::string data(size, '\0');
  for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<char>(i & 0xff);  // bytes(range(256)) * ...
  std::vector<std::int64_t> arr(size / 8);
  std::memcpy(arr.data(), data.data(), size);
  const std::uint32_t expect_crc = crc32_of(data.data(), size);
  const std::uint64_t expect_sum = sum_words(reinterpret_cast<const std::byte*>(data.data()), size);

  const std::string bytes_field = ", \"bytes\": " + std::to_string(size);
  // Python's emit_time (median ms, reps, min, max) and size / upper median as MB/s.
  auto report = [&](const std::string& method, const std::string& metric, std::vector<double> times, bool mb_per_s = true) {
    std::vector<double> ms;
    for (double t : times) ms.push_back(t * 1e3);
    std::sort(ms.begin(), ms.end());
    emit(method, metric, median(ms), "ms",
         ", \"reps\": " + std::to_string(ms.size()) + ", \"min\": " + number(ms.front()) + ", \"max\": " +
             number(ms.back()) + bytes_field);
    if (mb_per_s) {
      std::sort(times.begin(), times.end());
      emit(method, metric + "_MB_per_s", static_cast<double>(size) / times[times.size() / 2] / 1e6, "MB/s", bytes_field);
    }
  };

  report("none", "local_crc", timed([&] { (void)crc32_of(data.data(), size); }, reps));

  for (const auto& method : methods) {
    mproc::Pool pool({.processes = 2, .context = mproc::get_context(method)});
    bench::wait_all_workers(pool, 2);

    report(method, "pickle_roundtrip_bytes", timed([&] {
             if (pool.apply(echo_bytes, data) != data) wrong("pickle_roundtrip_bytes");
           }, reps));
    report(method, "pickle_roundtrip_array", timed([&] {
             if (pool.apply(echo_array, arr) != arr) wrong("pickle_roundtrip_array");
           }, reps));
    report(method, "pickle_oneway_crc", timed([&] {
             if (pool.apply(crc_bytes, data) != expect_crc) wrong("pickle_oneway_crc");
           }, reps));

    std::vector<double> create_times;
    mproc::SharedMemory shm;
    for (int rep = 0; rep < reps; ++rep) {
      double t0 = now();
      shm = mproc::SharedMemory({.create = true, .size = size});
      std::memcpy(shm.buf().data(), data.data(), size);
      create_times.push_back(now() - t0);
      if (rep + 1 < reps) {
        shm.close();
        shm.unlink();
      }
    }
    report(method, "shm_create_fill", create_times);
    const std::string name = shm.name();
    report(method, "shm_attach_only", timed([&] { pool.apply(shm_attach_only, name); }, reps), false);
    report(method, "shm_attach_crc", timed([&] {
             if (pool.apply(shm_crc, name, size) != expect_crc) wrong("shm_attach_crc");
           }, reps));
    report(method, "shm_attach_sum", timed([&] {
             if (pool.apply(shm_sum, name, size) != expect_sum) wrong("shm_attach_sum");
           }, reps));
    shm.close();
    shm.unlink();
    pool.close();
    pool.join();
    std::fprintf(stderr, "big_array: %s done\n", method.c_str());
  }
  return 0;
}
