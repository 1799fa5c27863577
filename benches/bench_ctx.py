#!/usr/bin/env python3
"""The bench kit's bench.py (same arguments, same JSON lines, same summary), with the pooler's CPU seconds
and context switches added to every run's record.

bench.py samples the pooler's CPU itself but not its context switches; this wrapper imports it and, for
every pgbench run, reads the pooler process's utime+stime (/proc/PID/stat, all threads) and its voluntary
and involuntary context switches summed over all its threads (/proc/PID/task/*/status) right after
bench.py's wait for a quiet machine and again right after bench.py's own end-of-run CPU sample, so both
cover the window bench.py's CPU figures cover. Added fields: pooler_cpu_s, pooler_vcsw, pooler_nvcsw,
pooler_threads (after the run) and pooler_threads_changed (a thread came or went during the run: the
switches of a thread that exited are lost, so the count is then a lower bound).

usage: bench_ctx.py BENCH.PY-ARGUMENTS...   (the kit is BENCH_KIT, default ../../shared/bench from here)
"""
import glob
import os
import sys

KIT = os.environ.get("BENCH_KIT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
sys.path.insert(0, KIT)
sys.dont_write_bytecode = True  # no __pycache__ in the shared kit
import bench  # noqa: E402  (the kit's bench.py)


def ctx_switches(pid):
    """(voluntary, involuntary, {tids}) summed over the live threads of PID, or None if it is gone."""
    vol = invol = 0
    tids = set()
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        v = n = None
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        v = int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        n = int(line.split()[1])
        except OSError:
            continue  # the thread exited meanwhile
        if v is not None and n is not None:
            vol += v
            invol += n
            tids.add(path.split("/")[4])
    return (vol, invol, tids) if tids else None


def sample(pid):
    return ctx_switches(pid), bench.proc_cpu_seconds(pid)


_run_pgbench = bench.run_pgbench
_wait_quiet = bench.wait_quiet


def run_pgbench(args, t, clients, pgbench_args):
    pid = bench.pooler_pid(t)
    before = {}

    def wait_then_sample(a):
        waited = _wait_quiet(a)
        if pid:
            before["s"] = sample(pid)
        return waited

    bench.wait_quiet = wait_then_sample
    try:
        rec = _run_pgbench(args, t, clients, pgbench_args)
    finally:
        bench.wait_quiet = _wait_quiet
    if pid and "s" in before:
        (c0, cpu0), (c1, cpu1) = before["s"], sample(pid)
        if cpu0 is not None and cpu1 is not None:
            rec["pooler_cpu_s"] = round(cpu1 - cpu0, 3)
        if c0 is not None and c1 is not None:
            rec["pooler_vcsw"] = c1[0] - c0[0]
            rec["pooler_nvcsw"] = c1[1] - c0[1]
            rec["pooler_threads"] = len(c1[2])
            rec["pooler_threads_changed"] = c0[2] != c1[2]
    return rec


bench.run_pgbench = run_pgbench

if __name__ == "__main__":
    bench.main()
