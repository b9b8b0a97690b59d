"""Python's peer of bench/scaling.cpp: multiprocessing Pool(W).map and apply of a task that
spins for T microseconds of its thread's CPU time, for W in --workers and T in --task-us (same metric names and
parameters, impl "python-multiprocessing", the record format of ../shared/bench).

  serial_items_per_s_t<T>us          the task called in this process (start method "none")
  map_items_per_s_w<W>_t<T>us        pool.map(work, [T] * N), default chunksize, N = --work-s / T
                                     (at least 16): items/s, median of --reps maps
  apply_rtt_{median,p99}_w<W>_t<T>us pool.apply(work, (T,)) one after another (calls:
                                     --work-s / T / 2, between 10 and 500): us
"""

import argparse
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time

IMPL = "python-multiprocessing"
BENCH = "scaling"
now = time.perf_counter  # CLOCK_MONOTONIC on Linux, as the C++ side's clock
RUN = 0


def emit(start_method, metric, value, unit, **extra):
    rec = {"bench": BENCH, "impl": IMPL, "start_method": start_method, "metric": metric,
           "value": round(value) if value >= 100 else round(value, 3), "unit": unit, "run": RUN}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def percentile(values, p):
    s = sorted(values)
    return s[max(1, math.ceil(p / 100.0 * len(s))) - 1]


def work(us):
    end = time.thread_time() + us * 1e-6  # CPU time, as the C++ task: the same work under any load
    while time.thread_time() < end:
        pass
    return us


def sleep_pid(delay):
    time.sleep(delay)
    return os.getpid()


def wait_all_workers(pool, nworkers):
    seen, deadline = set(), now() + 30
    while len(seen) < nworkers and now() < deadline:
        seen.update(pool.map(sleep_pid, [0.02] * nworkers, chunksize=1))


def suffix(workers, task_us):
    return (f"_w{workers}" if workers else "") + f"_t{task_us}us"


def main():
    global RUN
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--methods", default="fork")
    p.add_argument("--workers", default="1,2,4,8")
    p.add_argument("--task-us", default="1,100,10000")
    p.add_argument("--work-s", type=float, default=None)
    p.add_argument("--reps", type=int, default=1)
    args = p.parse_args()
    RUN = args.run
    work_s = args.work_s or (0.02 if args.quick else 0.4)
    workers = [int(w) for w in args.workers.split(",") if w]
    sizes = [int(t) for t in args.task_us.split(",") if t]

    def items_for(t):
        return max(16, int(work_s / (t * 1e-6)))

    def calls_for(t):
        return min(500, max(10, int(work_s / (t * 1e-6) / 2)))

    for t in sizes:
        n = items_for(t)
        t0 = now()
        for _ in range(n):
            work(t)
        emit("none", "serial_items_per_s" + suffix(0, t), n / (now() - t0), "items/s", n=n, task_us=t)

    for method in [m for m in args.methods.split(",") if m]:
        ctx = mp.get_context(method)
        for w in workers:
            with ctx.Pool(w) as pool:
                wait_all_workers(pool, w)
                for t in sizes:
                    n = items_for(t)
                    rates = []
                    for _ in range(args.reps):
                        t0 = now()
                        out = pool.map(work, [t] * n)
                        rates.append(n / (now() - t0))
                        assert out == [t] * n
                    rates.sort()
                    emit(method, "map_items_per_s" + suffix(w, t), statistics.median(rates), "items/s",
                         amount=n, reps=len(rates), rate_min=round(rates[0], 3), rate_max=round(rates[-1], 3),
                         workers=w, task_us=t)
                    rtt = []
                    for _ in range(calls_for(t)):
                        t0 = now()
                        assert pool.apply(work, (t,)) == t
                        rtt.append((now() - t0) * 1e6)
                    emit(method, "apply_rtt_median" + suffix(w, t), statistics.median(rtt), "us", n=len(rtt),
                         workers=w, task_us=t)
                    emit(method, "apply_rtt_p99" + suffix(w, t), percentile(rtt, 99), "us", n=len(rtt),
                         workers=w, task_us=t)
            print(f"scaling.py: {method}, {w} workers done", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
