#!/usr/bin/env python3
"""Markdown table of a benches/compare.sh run: the JSON lines bench_ctx.py wrote (one file per run).

Per workload and client count: median TPS of each target, pgsluice's TPS over PgBouncer 1.25's, and per
pooler the median CPU microseconds and context switches per transaction (pooler CPU seconds, and
voluntary + involuntary switches over all its threads, during the run, divided by the transactions pgbench
completed). A cell whose runs all failed says "fails"; a target not run says "—".

usage: results_table.py RESULTS.JSONL [--title TEXT]
"""
import argparse
import json
import os
import platform
import statistics
import subprocess

# target name in TARGETS -> column
COLUMNS = [("direct", "direct"), ("pgbouncer", "PgBouncer 1.18"), ("pgbouncer125", "PgBouncer 1.25"),
           ("pgsluice", "pgsluice")]
POOLERS = ["pgbouncer", "pgbouncer125", "pgsluice"]
SHORT = {"pgbouncer": "1.18", "pgbouncer125": "1.25", "pgsluice": "pgsluice"}
ANCHOR = "pgbouncer125"
WORKLOADS = {
    "select-simple": "select-only, simple",
    "select-simple-256": "select-only, simple",
    "select-extended": "select-only, extended",
    "select-prepared": "select-only, `-M prepared`",
    "tpcb": "tpcb-like",
    "churn-connect": "connect per transaction `-C`",
}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ok(r):
    return r.get("rc") == 0 and r.get("tps") is not None


def per_tx(r, key):
    x = r.get("xacts")
    if not x:
        return None
    if key == "cpu":
        return r["pooler_cpu_s"] * 1e6 / x if "pooler_cpu_s" in r else None
    if "pooler_vcsw" in r:
        return (r["pooler_vcsw"] + r["pooler_nvcsw"]) / x
    return None


def fmt_tps(v):
    return f"{v:,.0f}"


def fmt_cpu(v):
    return "—" if v is None else f"{v:.1f}"


def fmt_cs(v):
    return "—" if v is None else f"{v:.2f}"


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        pass
    try:
        pgbench = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        pgbench = "pgbench ?"
    return f"{os.cpu_count()} × {model}, Linux {platform.release()}, {pgbench}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results")
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    recs = []
    with open(a.results) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    if not recs:
        raise SystemExit(f"{a.results}: no runs")

    cells, order = {}, []
    for r in recs:
        key = (r["label"], r["clients"])
        if key not in cells:
            order.append(key)
        cells.setdefault(key, {}).setdefault(r["target"], []).append(r)
    present = {r["target"] for r in recs}
    cols = [(t, name) for t, name in COLUMNS if t in present or t != "pgbouncer"]
    poolers = [p for p in POOLERS if p in present or p != "pgbouncer"]

    lines = []
    if a.title:
        lines += [a.title, ""]
    hdr = ["workload", "clients"] + [name for _, name in cols] + ["pgsluice / 1.25",
           "CPU µs/tx (" + " / ".join(SHORT[p] for p in poolers) + ")",
           "ctx switches/tx (" + " / ".join(SHORT[p] for p in poolers) + ")"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    notes, foreign, reps, threads_changed = [], [], set(), []
    for label, clients in sorted(order, key=lambda k: (list(WORKLOADS).index(k[0]) if k[0] in WORKLOADS else 99, k[1])):
        cell = cells[(label, clients)]
        tps = {}
        row = [WORKLOADS.get(label, label), str(clients)]
        for t, name in cols:
            rs = cell.get(t)
            if not rs:
                row.append("—")
                continue
            good = [r for r in rs if ok(r)]
            foreign += [r["foreign_cpu_pct"] for r in good if "foreign_cpu_pct" in r]
            reps.add((len(rs), rs[0]["duration"]))
            threads_changed += [f"{name} {WORKLOADS.get(label, label)} c={clients}" for r in good if r.get("pooler_threads_changed")]
            if not good:
                err = next((r.get("error") for r in rs if r.get("error")), None) or ["?"]
                row.append("fails")
                first = err[0].replace("pgbench: error: ", "")
                notes.append(f"{name}, {WORKLOADS.get(label, label)}, {clients} clients: {first[:200]}")
                continue
            tps[t] = med([r["tps"] for r in good])
            row.append(fmt_tps(tps[t]) + ("" if len(good) == len(rs) else f" ({len(good)}/{len(rs)} ok)"))
        row.append(f"{tps['pgsluice'] / tps[ANCHOR]:.3f}" if tps.get("pgsluice") and tps.get(ANCHOR) else "—")
        for kind, fmt in (("cpu", fmt_cpu), ("cs", fmt_cs)):
            vals = []
            for p in poolers:
                good = [r for r in cell.get(p, []) if ok(r)]
                vals.append(fmt(med([per_tx(r, kind) for r in good])) if good else "—")
            row.append(" / ".join(vals))
        lines.append("| " + " | ".join(row) + " |")

    lines.append("")
    reps_s = ", ".join(f"{n} × {d} s" for n, d in sorted(reps))
    first, last = min(r["ts"] for r in recs), max(r["ts"] for r in recs)
    lines.append(f"Medians of {reps_s} per cell, targets interleaved, {first} to {last}; {machine()}.")
    if foreign:
        lines.append(f"CPU used by other tenants during a run: up to {max(foreign):.0f}% of a core "
                     f"(median {statistics.median(foreign):.0f}%).")
    if threads_changed:
        lines.append("A pooler thread started or exited during: " + "; ".join(sorted(set(threads_changed)))
                     + " (its context switches are a lower bound there).")
    for n in notes:
        lines.append(f"- {n}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
