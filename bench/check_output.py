"""Runs one benchmark program (in QUICK mode, as ctest's "bench" tests do) and checks what it
printed, so that the benchmarks cannot rot: no timing is judged, only the shape.

usage: python3 bench/check_output.py --impl IMPL -- PROGRAM ARGS...

Fails (exit 1, saying why) when the program exits non-zero or by a signal, prints no record,
prints a stdout line that is not a JSON object in the record format of ../shared/bench (bench,
impl, start_method, metric, value, unit, run; a numeric value except for outcomes and booleans),
leaves a child process behind (this script is a child subreaper, so orphans come back to it) or
leaves a /dev/shm entry named after the program's pid (mproc's "mproc_<pid>_..." names).
"""

import argparse
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
REQUIRED = {"bench": str, "impl": str, "start_method": str, "metric": str, "unit": str, "run": int}


def problems_in(line, impl):
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        return [f"not JSON ({e})"]
    if not isinstance(rec, dict):
        return ["not a JSON object"]
    out = [f"field '{k}' missing or not {t.__name__}" for k, t in REQUIRED.items()
           if not isinstance(rec.get(k), t) or isinstance(rec.get(k), bool)]
    if "value" not in rec:
        out.append("field 'value' missing")
    else:
        v = rec["value"]
        if isinstance(v, bool):
            if rec.get("unit") != "bool":
                out.append("a boolean value whose unit is not 'bool'")
        elif isinstance(v, str):
            if rec.get("unit") != "outcome" or not v:
                out.append("a string value that is not an outcome")
        elif not isinstance(v, (int, float)) or not math.isfinite(v):
            out.append(f"value {v!r} is not a finite number")
    if rec.get("impl") != impl:
        out.append(f"impl is {rec.get('impl')!r}, expected {impl!r}")
    return out


def my_children():
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid():
                        kids.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return kids


def leftover_children(grace=5.0):
    """Children still alive `grace` seconds after the program ended (its orphans come back here:
    a fork server or tracker that ends because its parent did is reaped, not counted); they are
    killed and their pids returned."""
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return []
        time.sleep(0.05)
    left = my_children()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    try:
        while os.waitpid(-1, 0):
            pass
    except ChildProcessError:
        pass
    return left


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default="mproc")
    p.add_argument("--timeout", type=float, default=240)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("no program to run")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("check_output: prctl(PR_SET_CHILD_SUBREAPER) failed; orphans cannot be checked", file=sys.stderr)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, _ = proc.communicate()
        print(f"check_output: {cmd[0]} ran longer than {args.timeout} s", file=sys.stderr)
        leftover_children()
        return 1
    failures = []
    if proc.returncode != 0:
        failures.append(f"exit status {proc.returncode}")
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        failures.append("no record on stdout")
    for n, line in enumerate(lines, 1):
        failures += [f"stdout line {n}: {why}: {line[:200]}" for why in problems_in(line, args.impl)]
    left = leftover_children()
    if left:
        failures.append(f"child processes left behind: {sorted(left)}")
    pid = str(proc.pid)
    shm = [e for e in os.listdir("/dev/shm") if f"_{pid}_" in e or e.endswith(f"_{pid}")]
    if shm:
        failures.append(f"/dev/shm entries left behind: {shm}")
    for f in failures:
        print(f"check_output: {os.path.basename(cmd[0])}: {f}", file=sys.stderr)
    if not failures:
        print(f"check_output: {os.path.basename(cmd[0])}: {len(lines)} valid records in {time.monotonic() - t0:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
