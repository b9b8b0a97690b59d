// worker_death: what a caller sees when a worker process dies abruptly: the twin of
// ../shared/bench/python/worker_death.py (bench "worker_death", same cases and metric names),
// and mproc's own recovery figures (bench "recovery").
//
// worker_death, for each start method and each way of dying (_exit(1), SIGKILL to itself):
//   pool_map_<how>            Pool(2).starmap_async(task, [(x, how) for x in range(8)], 1), task 3
//                             dies; get(--timeout). Outcome "ok", "hang" (TimeoutError: the lost task
//                             is never reported, Python's Pool) or "error:<type>"; the detail says
//                             how many results came back and whether the pool still serves a new task.
//   executor_map_<how>        ProcessPoolExecutor(2), the same tasks through submit(), every result
//                             collected (Python: "error:BrokenProcessPool" for all pending ones).
//   executor_map_break_on_crash_<how>   the same with ExecutorOptions::break_on_crash (Python's
//                             behaviour, on request).
//   lock_holder_death_<how>   a Process takes a Lock and dies holding it; the parent's
//                             acquire(--lock-timeout): "acquired" (and owner_died) or "timeout".
// Each case emits <case>_outcome (a string) and <case>_seconds_to_outcome. Every wait is bounded:
// a hang is reported as "hang" after the timeout, never waited out.
//
// recovery (mproc only; Python has no such thing to measure):
//   crash_to_error            Pool(1).apply of a task that SIGKILLs its worker: submit until
//                             WorkerCrashed is thrown (median/p99 us over --n)
//   crash_to_next_result      the same, until a following apply(square) has answered on the
//                             replacement worker: the whole recovery
//   task_timeout_overshoot    Pool(1, task_timeout = 100 ms).apply of a task that never ends: the
//                             time from submit to TimeoutError, minus the 100 ms
//   task_timeout_to_next_result   the same, until a following apply has answered on the replacement
//
// usage: worker_death [--run N] [--quick] [--n N] [--timeout S] [--lock-timeout S]
//                     [--how exit,sigkill] [--methods fork,spawn,forkserver]
#include <signal.h>
#include <unistd.h>

#include <mproc/executor.hpp>
#include <mproc/mproc.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <thread>
#include <tuple>
#include <typeinfo>
#include <vector>

#include "common.hpp"

namespace {

constexpr const char* kUsage =
    "usage: worker_death [--run N] [--quick] [--n N] [--timeout S] [--lock-timeout S] [--how exit,sigkill]\n"
    "                    [--methods fork,spawn,forkserver]\n"
    "  A worker dies mid-map (Pool, ProcessPoolExecutor) and a Lock holder dies: the outcome and the\n"
    "  seconds to it, each wait bounded by --timeout (default 10, --quick 2) or --lock-timeout (default 5,\n"
    "  --quick 1). Then crash recovery and per-task timeout on Pool(1): median/p99 over N (default 20,\n"
    "  --quick 3). JSON lines on stdout.\n";

constexpr int kDieAt = 3;
constexpr int kTasks = 8;
constexpr auto kTaskTimeout = std::chrono::milliseconds(100);

void die(const std::string& how) {
  if (how == "exit") ::_exit(1);
  ::kill(::getpid(), SIGKILL);
  ::pause();
}

std::int64_t task(std::int64_t x, std::string how) {
  if (x == kDieAt) die(how);
  return x * x;
}

std::int64_t square(std::int64_t x) { return x * x; }

void die_holding(mproc::Lock lock, std::string how) {
  lock.acquire();
  die(how);
}

void die_now() { ::kill(::getpid(), SIGKILL); }

void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

/// "error:<type>" for the exception in flight, as Python's classify().
std::string classify(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const mproc::WorkerCrashed&) {
    return "error:WorkerCrashed";
  } catch (const mproc::BrokenProcessPool&) {
    return "error:BrokenProcessPool";
  } catch (const mproc::RemoteError& r) {
    return "error:RemoteError(" + r.type() + ")";
  } catch (const mproc::TimeoutError&) {
    return "hang";
  } catch (const std::exception& x) {
    return std::string("error:") + typeid(x).name();
  } catch (...) {
    return "error:unknown";
  }
}

std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "a non-standard exception";
  }
}

struct Outcome {
  std::string outcome, detail;
  double seconds;
};

Outcome pool_case(const mproc::Context& ctx, const std::string& how, double timeout) {
  mproc::Pool pool({.processes = 2, .context = ctx});
  std::vector<std::tuple<std::int64_t, std::string>> args;
  for (std::int64_t x = 0; x < kTasks; ++x) args.emplace_back(x, how);
  double t0 = bench::now();
  auto res = pool.starmap_async(task, args, 1);
  Outcome o;
  try {
    res.get(mproc::seconds(timeout));
    o.outcome = "ok";
  } catch (...) {
    o.outcome = classify(std::current_exception());
    o.detail = o.outcome == "hang" ? "map_async(...).get(timeout=" + bench::fmt(timeout) + ") raised TimeoutError"
                                   : what_of(std::current_exception());
  }
  o.seconds = bench::now() - t0;
  bool alive = false;
  try {
    alive = pool.apply_async(task, std::int64_t{0}, how).get(mproc::seconds(timeout)) == 0;
  } catch (...) {
  }
  o.detail += std::string("; pool still serves new tasks afterwards: ") + (alive ? "True" : "False");
  pool.terminate();
  pool.join();
  return o;
}

Outcome executor_case(const mproc::Context& ctx, const std::string& how, double timeout, bool break_on_crash) {
  mproc::ProcessPoolExecutor ex({.max_workers = 2, .mp_context = ctx, .break_on_crash = break_on_crash});
  double t0 = bench::now();
  std::vector<mproc::Future<std::int64_t>> futures;
  for (std::int64_t x = 0; x < kTasks; ++x) futures.push_back(ex.submit(task, x, how));
  int ok = 0;
  std::vector<std::pair<std::string, std::string>> errors;  // kind -> first message
  auto add = [&](const std::string& kind, const std::string& msg) {
    for (auto& e : errors)
      if (e.first == kind) return;
    errors.emplace_back(kind, msg);
  };
  for (auto& f : futures) {
    try {
      f.result(mproc::seconds(timeout));
      ++ok;
    } catch (...) {
      std::string kind = classify(std::current_exception());
      add(kind, kind == "hang" ? "result(timeout) raised TimeoutError" : what_of(std::current_exception()));
      if (kind == "hang") break;
    }
  }
  Outcome o;
  o.seconds = bench::now() - t0;
  std::sort(errors.begin(), errors.end());
  o.outcome = errors.empty() ? "ok" : "";
  o.detail = std::to_string(ok) + "/" + std::to_string(kTasks) + " results";
  for (std::size_t i = 0; i < errors.size(); ++i) {
    o.outcome += (i ? "," : "") + errors[i].first;
    o.detail += "; " + errors[i].second;
  }
  ex.kill_workers();  // a hung executor must not be waited for at shutdown
  return o;
}

Outcome lock_case(const mproc::Context& ctx, const std::string& how, double timeout) {
  mproc::Lock lock;
  auto p = ctx.Process(die_holding, lock, how);
  p.start();
  p.join();
  double t0 = bench::now();
  bool got = lock.acquire(true, mproc::seconds(timeout));
  Outcome o;
  o.seconds = bench::now() - t0;
  o.outcome = got ? "acquired" : "timeout";
  o.detail = "holder exitcode " + std::to_string(p.exitcode().value_or(-999)) + "; acquire(timeout=" + bench::fmt(timeout) +
             ") returned " + (got ? "True" : "False") + (got && lock.owner_died() ? "; owner_died() is true" : "");
  if (got) lock.release();
  return o;
}

[[noreturn]] void fail(const std::string& what) {
  bench::note("worker_death: %s", what.c_str());
  std::exit(1);
}

/// Pool(1): a task that ends its worker (or outlives task_timeout), then a plain one, which must
/// run on the replacement. Returns (submit -> error, submit -> next result) in seconds.
template <class Error, class F>
std::pair<double, double> recover_once(mproc::Pool& pool, F bad) {
  double t0 = bench::now();
  try {
    pool.apply(bad);
    fail("a task that should fail returned");
  } catch (const Error&) {
  }
  double t1 = bench::now();
  // The Pool counts a replacement's start-up against its first task's task_timeout, so on a
  // loaded machine that task can time out too: retried (bounded), and said on stderr.
  for (int attempt = 1;; ++attempt) {
    try {
      if (pool.apply(square, std::int64_t{7}) != 49) fail("wrong result after recovery");
      break;
    } catch (const mproc::TimeoutError& e) {
      bench::note("worker_death: the task after a recovery timed out (%s)", e.what());
      if (attempt == 10) fail("the task after a recovery timed out 10 times");
    }
  }
  return {t1 - t0, bench::now() - t0};
}

}  // namespace

int main(int argc, char** argv) {
  mproc::init(argc, argv);  // spawn and forkserver children re-run this binary and stop here
  double timeout = -1, lock_timeout = -1;
  std::string hows = "exit,sigkill";
  auto opt = bench::parse(argc, argv, kUsage, "fork,spawn,forkserver", [&](const std::string& name, const std::string& value) {
    if (name == "--timeout") timeout = std::atof(value.c_str());
    else if (name == "--lock-timeout") lock_timeout = std::atof(value.c_str());
    else if (name == "--how") hows = value;
    else return false;
    return true;
  });
  if (timeout <= 0) timeout = opt.quick ? 2 : 10;
  if (lock_timeout <= 0) lock_timeout = opt.quick ? 1 : 5;
  const long n = opt.n > 0 ? opt.n : opt.quick ? 3 : 20;
  std::vector<std::string> how_list;
  for (std::size_t pos = 0; pos <= hows.size();) {
    std::size_t comma = std::min(hows.find(',', pos), hows.size());
    if (comma > pos) how_list.push_back(hows.substr(pos, comma - pos));
    pos = comma + 1;
  }
  for (const auto& how : how_list)
    if (how != "exit" && how != "sigkill") fail("--how takes exit and sigkill, not " + how);

  bench::Reporter death("worker_death", opt.run);
  bench::Reporter recovery("recovery", opt.run);
  for (const auto& method : opt.methods) {
    auto ctx = mproc::get_context(method);
    for (const auto& how : how_list) {
      struct Case {
        std::string name;
        Outcome o;
      };
      std::vector<Case> cases;
      cases.push_back({"pool_map", pool_case(ctx, how, timeout)});
      cases.push_back({"executor_map", executor_case(ctx, how, timeout, false)});
      cases.push_back({"executor_map_break_on_crash", executor_case(ctx, how, timeout, true)});
      cases.push_back({"lock_holder_death", lock_case(ctx, how, lock_timeout)});
      for (const auto& c : cases) {
        death.emit_outcome(method, c.name + "_" + how + "_outcome", c.o.outcome, bench::field("detail", c.o.detail));
        char secs[32];  // microsecond resolution: mproc's outcomes come in about a millisecond
        std::snprintf(secs, sizeof secs, "%.6f", c.o.seconds);
        death.emit_json(method, c.name + "_" + how + "_seconds_to_outcome", secs, "s");
      }
    }

    std::vector<double> to_error, to_next;
    {
      mproc::Pool pool({.processes = 1, .context = ctx});
      pool.apply(square, std::int64_t{1});  // the first worker is up
      for (long i = 0; i < n; ++i) {
        auto [e, r] = recover_once<mproc::WorkerCrashed>(pool, die_now);
        to_error.push_back(e);
        to_next.push_back(r);
      }
    }
    const std::string workers = bench::field("workers", 1LL);
    recovery.latency(method, "crash_to_error", to_error, workers);
    recovery.latency(method, "crash_to_next_result", to_next, workers);

    to_error.clear();
    to_next.clear();
    {
      mproc::Pool pool({.processes = 1, .context = ctx, .task_timeout = kTaskTimeout});
      pool.apply(square, std::int64_t{1});
      for (long i = 0; i < n; ++i) {
        auto [e, r] = recover_once<mproc::TimeoutError>(pool, sleep_forever);
        to_error.push_back(e - std::chrono::duration<double>(kTaskTimeout).count());
        to_next.push_back(r);
      }
    }
    const std::string limit = workers + bench::field("task_timeout_ms", static_cast<long long>(kTaskTimeout.count()));
    recovery.latency(method, "task_timeout_overshoot", to_error, limit);
    recovery.latency(method, "task_timeout_to_next_result", to_next, limit);
    bench::note("worker_death: %s done", method.c_str());
  }
  return 0;
}
