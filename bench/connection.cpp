// connection: mproc::Pipe / Connection between the parent and one child process.
//
// Ping-pong (bench "pingpong", names of ../shared/bench/limits/pingpong.cpp, whose
// socketpair_* figures are the raw limit: Pipe() is an AF_UNIX socketpair too):
//   socketpair_rtt          parent send_bytes(8 bytes), child recv_bytes_into + send_bytes back,
//                           parent recv_bytes_into: one round trip
//   socketpair_int64_rtt    the same with send(std::int64_t) / recv<std::int64_t>() (typed frames)
// median and p99 (us) over --n round trips after --n/10 warm-up ones, with the scheduler free
// to place the two processes, then with the parent on CPU 0 and the child on CPU 1
// (suffix _pinned_split), then both on CPU 0 (suffix _pinned_same).
//
// Bandwidth (bench "queue_throughput", names of ../shared/bench/python/queue_throughput.py):
//   pipe_socketpair_{1MiB,64MiB}_MB_per_s   Pipe(): child send_bytes, parent recv_bytes()
//   pipe_pipe_{1MiB,64MiB}_MB_per_s         the same through Pipe(false) (a socket pair too)
// and, as mproc's own cases (Python has no recv_buffer):
//   pipe_socketpair_{1MiB,64MiB}_recv_buffer_MB_per_s   the parent takes recv_buffer() (no copy)
// --pipe-bytes per measurement, median of --reps. The producer is started first and tells the
// parent it is ready (Python uses a Barrier), so start-up is not timed. MB = 1e6 bytes.
// --threshold sets the writer's shared_memory_threshold (bytes; "off" streams everything).
//
// Threshold sweep (case "threshold", bench "connection_threshold"): Pipe() send_bytes of
// 64 KiB ... 64 MiB messages, streamed (stream_<size>) and through a memfd (shm_<size>), each
// received with recv_bytes() and with recv_buffer() (suffix _recv_buffer); MB/s. It shows from
// which size the memfd pays (Connection::kSharedMemoryThreshold).
//
// usage: connection [--run N] [--quick] [--n N] [--methods fork,...] [--pipe-bytes B] [--reps R]
//                   [--cases pingpong,bandwidth,threshold] [--threshold B|off]
#include <sched.h>
#include <unistd.h>

#include <mproc/mproc.hpp>

#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: connection [--run N] [--quick] [--n N] [--methods fork,spawn,forkserver] [--pipe-bytes B]\n"
    "                  [--reps R] [--cases pingpong,bandwidth,threshold] [--threshold B|off]\n"
    "  pingpong: 8-byte round trips through Pipe() with a child, N of them (default 50000, --quick 2000),\n"
    "            free, pinned_split and pinned_same placement; median/p99 us.\n"
    "  bandwidth: send_bytes of 1 MiB and 64 MiB messages through Pipe() and Pipe(false), B bytes per\n"
    "            measurement (default 512 MiB, --quick 128 MiB), median of R reps (default 3, --quick 1); MB/s.\n"
    "            --threshold: the writer's shared_memory_threshold in bytes, or off (default: the library's).\n"
    "  threshold: 64 KiB..64 MiB messages streamed and through a memfd (not in the default cases).\n"
    "  Start methods default to fork. JSON lines on stdout, progress on stderr.\n";

constexpr std::int64_t MiB = 1 << 20;

void pin_to(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) std::perror("sched_setaffinity");
}

void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (long i = 0; i < n; ++i) CPU_SET(static_cast<int>(i), &set);
  sched_setaffinity(0, sizeof set, &set);
}

// ---------------------------------------------------------------- ping-pong

void echo_bytes(mproc::Connection conn, std::int64_t rounds, int cpu) {
  pin_to(cpu);
  std::int64_t v = 0;
  auto buf = std::as_writable_bytes(std::span(&v, 1));
  for (std::int64_t i = 0; i < rounds; ++i) {
    conn.recv_bytes_into(buf);
    ++v;
    conn.send_bytes(buf);
  }
}

void echo_int64(mproc::Connection conn, std::int64_t rounds, int cpu) {
  pin_to(cpu);
  for (std::int64_t i = 0; i < rounds; ++i) conn.send(conn.recv<std::int64_t>() + 1);
}

enum class Placement { free, split, same };

// Returns the round-trip times in seconds, warm-up excluded.
std::vector<double> pingpong(const mproc::Context& ctx, bool typed, long iters, Placement where) {
  const long warm = iters / 10;
  const bool pinned = where != Placement::free;
  if (pinned) pin_to(0);
  auto [mine, theirs] = mproc::Pipe();
  int child_cpu = !pinned ? -1 : where == Placement::split ? 1 : 0;
  auto p = typed ? ctx.Process(echo_int64, theirs, std::int64_t{warm + iters}, child_cpu)
                 : ctx.Process(echo_bytes, theirs, std::int64_t{warm + iters}, child_cpu);
  p.start();
  theirs.close();
  std::vector<double> rtt;
  rtt.reserve(static_cast<std::size_t>(iters));
  std::int64_t v = 0;
  auto buf = std::as_writable_bytes(std::span(&v, 1));
  for (std::int64_t i = 0; i < warm + iters; ++i) {
    double t0 = bench::now();
    std::int64_t r;
    if (typed) {
      mine.send(i);
      r = mine.recv<std::int64_t>();
    } else {
      v = i;
      mine.send_bytes(buf);
      mine.recv_bytes_into(buf);
      r = v;
    }
    double dt = bench::now() - t0;
    if (r != i + 1) {
      bench::note("pingpong: bad echo %lld for %lld", static_cast<long long>(r), static_cast<long long>(i));
      std::exit(1);
    }
    if (i >= warm) rtt.push_back(dt);
  }
  p.join();
  if (pinned) unpin();
  if (p.exitcode() != 0) {
    bench::note("pingpong: child exited with %d", p.exitcode().value_or(-999));
    std::exit(1);
  }
  return rtt;
}

// ---------------------------------------------------------------- bandwidth

void producer(mproc::Connection out, mproc::Connection ready, std::int64_t n, std::int64_t size) {
  std::vector<std::byte> msg(static_cast<std::size_t>(size), std::byte{'x'});
  ready.send_bytes(std::string_view("r"));
  for (std::int64_t i = 0; i < n; ++i) out.send_bytes(msg);
  out.close();
}

constexpr std::size_t kOff = std::numeric_limits<std::size_t>::max();

double time_pipe(const mproc::Context& ctx, std::int64_t n, std::int64_t size, bool duplex, std::size_t threshold,
                 bool use_buffer) {
  auto [reader, writer] = mproc::Pipe(duplex);
  writer.set_shared_memory_threshold(threshold);  // goes with the Connection to the child
  auto [ready_r, ready_w] = mproc::Pipe(false);
  auto p = ctx.Process(producer, writer, ready_w, n, size);
  p.start();
  writer.close();
  ready_w.close();
  ready_r.recv_bytes();  // the producer is up and has its message
  double t0 = bench::now();
  std::int64_t total = 0;
  for (std::int64_t i = 0; i < n; ++i)
    total += static_cast<std::int64_t>(use_buffer ? reader.recv_buffer().size() : reader.recv_bytes().size());
  double dt = bench::now() - t0;
  p.join();
  if (total != n * size || p.exitcode() != 0) {
    bench::note("bandwidth: got %lld bytes of %lld, child exit %d", static_cast<long long>(total),
                static_cast<long long>(n * size), p.exitcode().value_or(-999));
    std::exit(1);
  }
  return dt;
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  std::int64_t pipe_bytes = -1;
  int reps = -1;
  std::string cases = "pingpong,bandwidth";
  std::size_t threshold = mproc::Connection::kSharedMemoryThreshold;
  auto opt = bench::parse(argc, argv, kUsage, "fork", [&](const std::string& name, const std::string& value) {
    if (name == "--pipe-bytes") pipe_bytes = std::atoll(value.c_str());
    else if (name == "--reps") reps = std::atoi(value.c_str());
    else if (name == "--cases") cases = value;
    else if (name == "--threshold") threshold = value == "off" ? kOff : std::strtoull(value.c_str(), nullptr, 10);
    else return false;
    return true;
  });
  const long iters = opt.n > 0 ? opt.n : opt.quick ? 2000 : 50000;
  if (pipe_bytes <= 0) pipe_bytes = opt.quick ? 128 * MiB : 512 * MiB;
  if (reps <= 0) reps = opt.quick ? 1 : 3;
  const bool do_pingpong = cases.find("pingpong") != std::string::npos;
  const bool do_bandwidth = cases.find("bandwidth") != std::string::npos;
  const bool do_threshold = cases.find("threshold") != std::string::npos;

  bench::Reporter pp("pingpong", opt.run);
  bench::Reporter bw("queue_throughput", opt.run);
  bench::Reporter th("connection_threshold", opt.run);
  const std::string threshold_field =
      threshold == kOff ? std::string(", \"shm_threshold\": \"off\"") : bench::field("shm_threshold", static_cast<long long>(threshold));
  auto size_name = [](std::int64_t size) {
    return size >= MiB ? std::to_string(size / MiB) + "MiB" : std::to_string(size / 1024) + "KiB";
  };
  auto measure = [&](const mproc::Context& ctx, std::int64_t size, bool duplex, std::size_t thr, bool use_buffer) {
    std::int64_t n = std::max<std::int64_t>(1, pipe_bytes / size);
    std::vector<double> times;
    for (int r = 0; r < reps; ++r) times.push_back(time_pipe(ctx, n, size, duplex, thr, use_buffer));
    return std::make_pair(n, times);
  };
  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    if (do_pingpong) {
      const std::string extra = bench::field("msg_bytes", 8LL);
      for (Placement where : {Placement::free, Placement::split, Placement::same}) {
        const char* sfx = where == Placement::free ? "" : where == Placement::split ? "_pinned_split" : "_pinned_same";
        pp.latency(method, "socketpair_rtt", pingpong(ctx, false, iters, where), extra, sfx);
        pp.latency(method, "socketpair_int64_rtt", pingpong(ctx, true, iters, where), extra, sfx);
      }
      bench::note("connection: %s pingpong done", method.c_str());
    }
    if (do_bandwidth) {
      for (bool duplex : {true, false}) {
        for (std::int64_t size : {MiB, 64 * MiB}) {
          for (bool use_buffer : {false, true}) {
            if (use_buffer && !duplex) continue;
            auto [n, times] = measure(ctx, size, duplex, threshold, use_buffer);
            std::string metric = std::string("pipe_") + (duplex ? "socketpair" : "pipe") + "_" + size_name(size) +
                                 (use_buffer ? "_recv_buffer" : "") + "_MB_per_s";
            bw.rate(method, metric, static_cast<double>(n * size) / 1e6, times, "MB/s",
                    bench::field("msg_bytes", static_cast<long long>(size)) + bench::field("messages", static_cast<long long>(n)) +
                        bench::field("duplex", duplex) + threshold_field);
          }
        }
      }
      bench::note("connection: %s bandwidth done", method.c_str());
    }
    if (do_threshold) {
      for (std::int64_t size : {64 * MiB / 1024, 256 * MiB / 1024, MiB, 4 * MiB, 16 * MiB, 64 * MiB}) {
        for (bool shm : {false, true}) {
          for (bool use_buffer : {false, true}) {
            auto [n, times] = measure(ctx, size, true, shm ? 1 : kOff, use_buffer);
            std::string metric = std::string(shm ? "shm_" : "stream_") + size_name(size) + (use_buffer ? "_recv_buffer" : "") + "_MB_per_s";
            th.rate(method, metric, static_cast<double>(n * size) / 1e6, times, "MB/s",
                    bench::field("msg_bytes", static_cast<long long>(size)) + bench::field("messages", static_cast<long long>(n)));
          }
        }
      }
      bench::note("connection: %s threshold sweep done", method.c_str());
    }
  }
  return 0;
}
