"""mproc's benchmark report: JSON lines (the format of ../shared/bench) -> Markdown, and the
scaling chart.

usage: python3 bench/report.py RESULTS.jsonl [--chart CHART.png] [--note TEXT] > RESULTS.md

Records are grouped by (bench, impl, start_method, metric); a figure is the median over the runs
(the "run" field) and its spread the min-max over them. Sections:
  * operations: per operation mproc, Python, the raw limit, mproc / Python, mproc / limit (plain
    quotients: above 1 is better for a rate, below 1 for a time), the spread of mproc's figure
    and the target of ../shared/DESIGN.md ("Performance") with whether this run met it;
  * behaviour when a worker dies (outcome strings) and mproc's recovery times;
  * scaling: map rate and apply round trip against workers and task size (and the chart);
  * every figure, bench by bench.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections import defaultdict

MPROC, PY, CF, RAW = "mproc", "python-multiprocessing", "python-concurrent.futures", "raw-limit"
MPI4PY = "mpi4py.futures"  # the peer of the mpi context (bench/mpi_map.cpp), in the Python column
METHODS = ("fork", "spawn", "forkserver")
MiB256_MB = 256 * (1 << 20) / 1e6


def rtt_to_ops(us):
    return 1e6 / us


def two_transfers_ms(mb_per_s):
    return 2 * MiB256_MB / mb_per_s * 1e3


def rows():
    """(label, better, mproc (bench, metric, method), python (bench, metric, method, impl) or None,
    limit (bench, metric, method, impl, derive) or None, target) for each operation.
    target: (kind, factor, text); kind "limit" (mproc / limit at least / at most factor), "python"
    (times better than Python) or "p99" (p99 / median of the mproc figure at most factor)."""
    out = []
    raw_rtt = ("pingpong", "socketpair_rtt_median_pinned_same", "fork", RAW, None)
    raw_chunk1 = ("map_throughput", "items_per_s_chunk1", "fork", RAW, None)
    for label, bench, metric, limit, target in (
            ("Pool.map x*x, default chunksize, items/s", "map_throughput", "items_per_s_default_chunk",
             ("map_throughput", "items_per_s_chunk125000", "fork", RAW, None), ("limit", 0.8, ">= 0.8x limit")),
            ("Pool.map x*x, chunksize=1024, items/s", "map_throughput", "items_per_s_chunk1024",
             ("map_throughput", "items_per_s_chunk1024", "fork", RAW, None), None),
            ("Pool.map x*x, chunksize=1, items/s", "map_throughput", "items_per_s_chunk1", raw_chunk1,
             ("limit", 0.5, ">= 0.5x limit")),
            ("Pool.apply_async pipelined, tasks/s", "apply_latency", "apply_async_tasks_per_s", raw_chunk1, None)):
        for m in METHODS:
            out.append((f"{label} [{m}]", "higher", (bench, metric, m), (bench, metric, m, PY), limit, target))
    for m in METHODS:
        out.append((f"Pool.apply round trip, median us [{m}]", "lower",
                    ("apply_latency", "pool_apply_rtt_median", m), ("apply_latency", "pool_apply_rtt_median", m, PY),
                    raw_rtt, ("limit", 1.5, "<= 1.5x limit")))
        out.append((f"Pool.apply round trip, p99 us [{m}]", "lower",
                    ("apply_latency", "pool_apply_rtt_p99", m), ("apply_latency", "pool_apply_rtt_p99", m, PY),
                    ("pingpong", "socketpair_rtt_p99_pinned_same", "fork", RAW, None), ("p99", 5, "p99 <= 5x median")))
    for m in METHODS:
        out.append((f"executor.submit().result(), median us [{m}]", "lower",
                    ("apply_latency", "submit_result_rtt_median", m), ("apply_latency", "submit_result_rtt_median", m, CF),
                    raw_rtt, None))
    start_limit = {"fork": (("startup", "fork_exit_median", "fork", RAW, None), 2),
                   "spawn": (("startup", "posix_spawn_self_median", "posix_spawn", RAW, None), 3),
                   "forkserver": (("startup", "fork_exit_median", "fork", RAW, None), 2)}
    for m in METHODS:
        lim, f = start_limit[m]
        out.append((f"Process start+join, median us [{m}]", "lower",
                    ("startup", "process_start_join_median", m), ("startup", "process_start_join_median", m, PY),
                    lim, ("limit", f, f"<= {f}x limit")))
    for m in METHODS:
        out.append((f"Process start+join with 1 MiB of inherited state, median us [{m}] (mproc only)", "lower",
                    ("startup", "process_start_join_inherited_1MiB_median", m), None,
                    ("startup", "process_start_join_median", m, MPROC, None), None))
    for m in METHODS:
        out.append((f"Pool(2) ready + 1 task, median us [{m}]", "lower",
                    ("startup", "pool_ready_one_task_median", m), ("startup", "pool_ready_one_task_median", m, PY),
                    ("map_throughput", "pool_ready_one_task_median", "fork", RAW, None), None))
    out += [
        ("Queue put/get of ints, items/s [fork]", "higher",
         ("queue_throughput", "queue_int_items_per_s", "fork"), ("queue_throughput", "queue_int_items_per_s", "fork", PY),
         ("bandwidth", "pipe_8B_msgs_per_s", "fork", RAW, None), ("python", 10, ">= 10x Python")),
        ("Queue of 1 MiB bytes, MB/s [fork]", "higher",
         ("queue_throughput", "queue_1MiB_MB_per_s", "fork"), ("queue_throughput", "queue_1MiB_MB_per_s", "fork", PY),
         ("bandwidth", "pipe_1MiB_MB_per_s", "fork", RAW, None), None),
    ]
    for kind, raw in (("socketpair", "socketpair"), ("pipe", "pipe")):
        for size in ("1MiB", "64MiB"):
            label = "Pipe()" if kind == "socketpair" else "Pipe(duplex=False)"
            out.append((f"{label} send_bytes {size[:-3]} MiB, MB/s [fork]", "higher",
                        ("queue_throughput", f"pipe_{kind}_{size}_MB_per_s", "fork"),
                        ("queue_throughput", f"pipe_{kind}_{size}_MB_per_s", "fork", PY),
                        ("bandwidth", f"{raw}_{size}_MB_per_s", "fork", RAW, None), None))
    for op in ("set", "get"):
        out.append((f"Manager dict {op}, 1 client, ops/s [fork]", "higher",
                    ("manager_ops", f"dict_{op}_ops_per_s_1client", "fork"), ("manager_ops", f"dict_{op}_ops_per_s_1client", "fork", PY),
                    ("pingpong", "socketpair_rtt_median_pinned_same", "fork", RAW, (rtt_to_ops, "1e6 / socketpair RTT")),
                    ("limit", 0.8, ">= 0.8x limit")))
    out += [
        ("Manager dict set+get, 2 clients, ops/s [fork]", "higher",
         ("manager_ops", "dict_setget_ops_per_s_2clients", "fork"), ("manager_ops", "dict_setget_ops_per_s_2clients", "fork", PY),
         None, None),
        ("Value += 1 under its lock, 2 processes, ops/s [fork]", "higher",
         ("value_lock", "locked_increments_per_s", "fork"), ("value_lock", "locked_increments_per_s", "fork", PY),
         ("value_lock", "sem_t_lock_increments_per_s", "fork", RAW, None), ("limit", 0.8, ">= 0.8x limit")),
        ("256 MiB to a worker and back, copied, ms [fork]", "lower",
         ("big_array", "pickle_roundtrip_bytes", "fork"), ("big_array", "pickle_roundtrip_bytes", "fork", PY),
         ("bandwidth", "vmsplice_64MiB_MB_per_s", "fork", RAW, (two_transfers_ms, "2 x 256 MiB at the vmsplice rate")),
         ("python", 10, ">= 10x Python")),
        ("256 MiB via SharedMemory, worker attach + crc32, ms [fork]", "lower",
         ("big_array", "shm_attach_crc", "fork"), ("big_array", "shm_attach_crc", "fork", PY),
         ("big_array", "local_crc", "none", MPROC, None), None),
    ]
    for label, metric in (("x*x, chunksize=1, items/s", "items_per_s_chunk1"),
                          ("x*x, chunksize=256, items/s", "items_per_s_chunk256"),
                          ("1 MiB arguments, MB/s", "arg_1MiB_MB_per_s")):
        out.append((f"MPI Pool.map {label}, mpirun -n 3 [mpi] (Python: mpi4py.futures)", "higher",
                    ("mpi_map", metric, "mpi"), ("mpi_map", metric, "mpi", MPI4PY), None,
                    ("python", 5, ">= 5x mpi4py.futures")))
    for m in METHODS:
        out.append((f"Worker killed: submit until WorkerCrashed, median us [{m}] (mproc only)", "lower",
                    ("recovery", "crash_to_error_median", m), None, None, None))
        out.append((f"Worker killed: submit until the replacement answers, median us [{m}] (mproc only)", "lower",
                    ("recovery", "crash_to_next_result_median", m), None,
                    ("startup", "process_start_join_median", m, MPROC, None), None))
        out.append((f"task_timeout 100 ms: TimeoutError later than 100 ms by, median us [{m}] (mproc only)", "lower",
                    ("recovery", "task_timeout_overshoot_median", m), None, None, None))
    return out


def load(path):
    groups = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                groups[(r["bench"], r["impl"], r["start_method"], r["metric"])].append(r)
    return groups


def numeric(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def stat(groups, bench, metric, method, impl):
    recs = groups.get((bench, impl, method, metric))
    if not recs or not all(numeric(r["value"]) for r in recs):
        return None
    vals = [r["value"] for r in recs]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": len(vals), "unit": recs[0]["unit"]}


def num(x):
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1e7:
        return f"{x / 1e6:,.1f} M"
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def ratio(a, b):
    return f"{a / b:.3g}" if a is not None and b else "-"


def operations(groups):
    lines = ["| operation | better | mproc | spread over runs | Python | raw limit | mproc / Python | mproc / limit | target | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, better, ms, ps, ls, target in rows():
        m = stat(groups, ms[0], ms[1], ms[2], MPROC)
        p = stat(groups, *ps) if ps else None
        lim_val = None
        if ls:
            lim = stat(groups, ls[0], ls[1], ls[2], ls[3])
            if lim:
                lim_val = ls[4][0](lim["median"]) if ls[4] else lim["median"]
        if not m and not p:
            continue
        mv = m["median"] if m else None
        pv = p["median"] if p else None
        spread = f"{num(m['min'])}-{num(m['max'])} ({m['runs']})" if m and m["runs"] > 1 else ""
        met = "-"
        if target and mv:
            kind, f, _ = target
            if kind == "limit" and lim_val:
                met = "yes" if (mv / lim_val >= f if better == "higher" else mv / lim_val <= f) else "no"
            elif kind == "python" and pv:
                met = "yes" if (mv / pv >= f if better == "higher" else pv / mv >= f) else "no"
            elif kind == "p99":
                med = stat(groups, ms[0], ms[1].replace("_p99", "_median"), ms[2], MPROC)
                met = ("yes" if mv / med["median"] <= f else "no") + f" ({mv / med['median']:.1f}x)" if med else "-"
        lim_txt = num(lim_val) + (f" ({ls[0]}/{ls[1]}{': ' + ls[4][1] if ls[4] else ''}{', ' + ls[3] if ls[3] != RAW else ''})" if ls and lim_val else "")
        lines.append(f"| {label} | {better} | {num(mv)} | {spread} | {num(pv)} | {lim_txt} | {ratio(mv, pv)} | {ratio(mv, lim_val)} | "
                     f"{target[2] if target else ''} | {met} |")
    return "\n".join(lines)


def behaviour(groups):
    cases = sorted({(k[3][:-len("_outcome")], k[2]) for k in groups
                    if k[0] == "worker_death" and k[3].endswith("_outcome") and not k[3].endswith("_seconds_to_outcome")})
    lines = ["| case | start method | mproc | mproc ms to it | Python | Python ms to it | mproc detail |", "|---|---|---|---|---|---|---|"]
    for case, method in cases:
        cells = []
        detail = ""
        for impls in ((MPROC,), (PY, CF)):
            out, secs = "-", "-"
            for impl in impls:
                recs = groups.get(("worker_death", impl, method, case + "_outcome"))
                if recs:
                    out = " / ".join(sorted({str(r["value"]) for r in recs}))
                    if impl == MPROC:
                        detail = recs[-1].get("detail", "")
                    s = stat(groups, "worker_death", case + "_seconds_to_outcome", method, impl)
                    secs = num(s["median"] * 1e3) if s else "-"
            cells += [out, secs]
        lines.append(f"| {case} | {method} | {' | '.join(cells)} | {detail.replace('|', '/')} |")
    return "\n".join(lines)


def scaling_points(groups, impl, method):
    """{task_us: [(workers, items/s, rtt median us, serial items/s)]} for one impl."""
    pts = defaultdict(list)
    for (b, i, sm, metric), recs in groups.items():
        if b != "scaling" or i != impl or sm != method or not metric.startswith("map_items_per_s_w"):
            continue
        w, t = recs[0]["workers"], recs[0]["task_us"]
        rate = stat(groups, b, metric, sm, i)["median"]
        rtt = stat(groups, b, f"apply_rtt_median_w{w}_t{t}us", sm, i)
        serial = stat(groups, b, f"serial_items_per_s_t{t}us", "none", i)
        pts[t].append((w, rate, rtt["median"] if rtt else None, serial["median"] if serial else None))
    for t in pts:
        pts[t].sort()
    return pts


def task_label(t):
    return f"{t // 1000} ms" if t >= 1000 else f"{t} us"


def scaling(groups, cpus, method):
    impls = [i for i in (MPROC, PY) if scaling_points(groups, i, method)]
    if not impls:
        return ""
    lines = ["| task | workers | " + " | ".join(f"{i} map items/s | {i} speed-up over serial | {i} apply RTT median us | {i} RTT - task us"
                                               for i in impls) + " |",
             "|---|---|" + "---|---|---|---|" * len(impls)]
    data = {i: scaling_points(groups, i, method) for i in impls}
    keys = sorted({(t, p[0]) for i in impls for t, ps in data[i].items() for p in ps})
    for t, w in keys:
        row = [task_label(t), str(w)]
        for i in impls:
            p = next((p for p in data[i].get(t, []) if p[0] == w), None)
            if not p:
                row += ["-"] * 4
                continue
            row += [num(p[1]), f"{p[1] / p[3]:.2f}" if p[3] else "-", num(p[2]), num(p[2] - t) if p[2] is not None else "-"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def chart(groups, cpus, method, png):
    """Two panels against the number of workers: the map's speed-up over the same tasks run in a
    loop in one process (in the same run, so under the same load; the ideal is min(W, CPUs)), and
    the apply round trip's overhead over the task's own time."""
    series = []
    for impl, dash in ((MPROC, 1), (PY, 2)):
        for t, pts in sorted(scaling_points(groups, impl, method).items()):
            rows_ = [(w, rate / serial if serial else float("nan"), max(rtt - t, 0.1) if rtt is not None else float("nan"))
                     for w, rate, rtt, serial in pts]
            series.append((f"{'mproc' if impl == MPROC else 'Python'}, task {task_label(t)}", dash, rows_))
    if not series:
        return False
    base = os.path.splitext(png)[0]
    dat = base + ".dat"
    with open(dat, "w") as f:
        for title, _, pts in series:
            f.write(f"# {title}\n")
            for w, share, over in pts:
                f.write(f"{w} {share:.6g} {over:.6g}\n")
            f.write("\n\n")
    colours = ["#1b6ca8", "#d1495b", "#2e933c"]
    plots_a, plots_b = [], []
    plots_a.append(f"(x < {cpus} ? x : {cpus}) with lines lw 1 lc rgb '#888888' dt 3 title 'ideal: min(workers, CPUs)'")
    for k, (title, dash, _) in enumerate(series):
        style = f"lw 2 dt {dash} lc rgb '{colours[k % 3]}' pt {7 if dash == 1 else 6} ps 1.2"
        plots_a.append(f"'{dat}' index {k} using 1:2 with linespoints {style} title '{title}'")
        plots_b.append(f"'{dat}' index {k} using 1:3 with linespoints {style} notitle")
    script = f"""
set terminal pngcairo size 1400,600 font 'DejaVu Sans,11'
set output '{png}'
set multiplot layout 1,2 title "Scaling on {cpus} CPUs ({method}): where per-task overhead stops mattering"
set logscale x 2
set xtics (1, 2, 4, 8)
set xrange [0.85:9.5]
set xlabel 'workers'
set grid
set samples 400
set key top left box opaque
set title 'Pool.map, default chunksize: speed-up over a serial loop'
set ylabel 'map rate / serial rate in the same run'
set yrange [0:{cpus + 0.5}]
plot {', '.join(plots_a)}
set title 'Pool.apply round trip minus the task time (overhead per call)'
set ylabel 'microseconds (log)'
set logscale y
set yrange [*:*]
set key off
plot {', '.join(plots_b)}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(dat)
    return True


def every_figure(groups):
    out = []
    for bench in sorted({k[0] for k in groups}):
        out += [f"\n#### {bench}\n", "| metric | start method | impl | median of runs | min-max over runs | unit | runs |",
                "|---|---|---|---|---|---|---|"]
        for (b, i, sm, m) in sorted((k for k in groups if k[0] == bench), key=lambda k: (k[1], k[2], k[3])):
            s = stat(groups, b, m, sm, i)
            if s:
                rng = f"{num(s['min'])}-{num(s['max'])}" if s["runs"] > 1 else ""
                out.append(f"| {m} | {sm} | {i} | {num(s['median'])} | {rng} | {s['unit']} | {s['runs']} |")
    return "\n".join(out)


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001 - a missing fact is shown as "?"
        return "?"


def machine():
    facts = [("CPUs", str(os.cpu_count())), ("CPU", sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")),
             ("memory", f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / (1 << 30):.1f} GiB"),
             ("kernel", platform.release()), ("OS", sh(". /etc/os-release && echo $PRETTY_NAME")),
             ("python", sys.version.split()[0]), ("compiler", sh("c++ --version | head -1"))]
    return "\n".join(["| fact | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in facts])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results")
    p.add_argument("--chart", help="write the scaling chart to this PNG (needs gnuplot)")
    p.add_argument("--note", default="", help="a line on how the run was made, printed first")
    p.add_argument("--scaling-method", default="fork")
    args = p.parse_args()
    groups = load(args.results)
    cpus = os.cpu_count() or 1
    if args.note:
        print(args.note + "\n")
    print("### Machine\n\n" + machine() + "\n")
    print("### Operations\n")
    print("mproc / Python and mproc / limit are plain quotients of the medians: above 1 is better for a rate, "
          "below 1 for a time. Spread: min-max of mproc's figure over the runs (number of runs).\n")
    print(operations(groups))
    print("\n### When a worker dies\n")
    print("Every wait is bounded: \"hang\" means the bounded wait ran out (Python's Pool loses the task).\n")
    print(behaviour(groups))
    table = scaling(groups, cpus, args.scaling_method)
    if table:
        print(f"\n### Scaling ({args.scaling_method}, {cpus} CPUs)\n")
        if args.chart and chart(groups, cpus, args.scaling_method, args.chart):
            print(f"![scaling]({os.path.basename(args.chart)})\n")
        print("Speed-up over serial: the map's rate over the rate of the same tasks in a loop in one process, measured in "
              "the same run (so under the same load); the ideal is min(workers, CPUs). RTT - task: the apply round trip "
              "minus the task's own CPU time.\n")
        print(table)
    print("\n### Every figure")
    print(every_figure(groups))


if __name__ == "__main__":
    main()
