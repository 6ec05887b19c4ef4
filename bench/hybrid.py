#!/usr/bin/env python3
"""hybrid.py — Pure postcopy against hybrid migration (precopy rounds from a running guest,
then the switchover and postcopy), same guest, same vCPU workload, same run.

    bench/hybrid.py [--size 1G] [--repetitions 2] [--out DIR] [--build DIR] [--quick]
    (also: bench/run.py --hybrid ...)

The source's guest is the demo's synthetic guest; in the hybrid runs writer threads stamp a
hot set of its pages (--hot-set percent, --write-rate pages/s) during precopy and are paused at
the switchover. The destination's vCPUs run the random workload over the whole guest from the
moment the guest may run. Reported, each as a ratio of hybrid to pure postcopy measured in the
same run (medians over the repetitions):
  faults after the switchover (goal <= 0.1 on a 5 % hot set),
  vCPU time blocked in faults after it (faults x mean latency; goal <= 0.2),
  bytes on the wire per guest byte (goal <= 1.3 for hybrid),
and the downtime (the source's guest paused until the destination said RUNNING; goal <= 50 ms
on a 1 GiB guest with a 5 % hot set). Then the same for other hot-set sizes and write rates,
with a plot. Every run's every page is verified bit for bit by the demo.

Writes into DIR: results.json, report.md, hybrid.png/.svg and each run's JSON.
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOALS = {"faults": 0.1, "blocked": 0.2, "downtime_ms": 50.0, "bytes_per_guest_byte": 1.3}


def log(message):
    print(f"hybrid: {message}", flush=True)


def run_demo(cli, out, name, size, touches, extra):
    path = os.path.join(out, name + ".json")
    argv = [cli, "demo", "--size", size, "--vcpus", "2", "--workload", "random", "--touches",
            str(touches), "--json", path] + extra
    result = subprocess.run(argv, capture_output=True, text=True)
    with open(os.path.join(out, name + ".log"), "w") as f:
        f.write(" ".join(argv) + "\n" + result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    with open(path) as f:
        report = json.load(f)
    if not report["verified"]:
        raise RuntimeError(f"{name}: pages differ")
    latency = report["fault_latency_us"]
    live = report.get("live", {})
    source = report.get("source", {}).get("live", {})
    faults = live.get("faults_after_switchover", report["faults"])
    return {
        "command": " ".join(argv),
        "faults_after_switchover": faults,
        "blocked_ms": faults * latency["mean"] / 1000.0,
        "fault_p50_us": latency["p50"],
        "bytes_per_guest_byte": report["bytes_per_guest_byte"],
        "downtime_ms": source.get("downtime_seconds", 0.0) * 1000.0,
        "switchover_ms": live.get("switchover_seconds", 0.0) * 1000.0,
        "rounds": live.get("precopy_rounds", 0),
        "discarded": live.get("pages_discarded_at_switchover", 0),
        "reason": source.get("switchover_reason", ""),
        "seconds": report["total_seconds"],
    }


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def ratio(a, b):
    return a / b if b > 0 else float("inf")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--touches", type=int, default=20000, help="per vCPU")
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="one repetition, fewer variants")
    parser.add_argument("--out")
    parser.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    args = parser.parse_args()
    cli = os.path.join(os.path.abspath(args.build), "cli", "uffd-migrate")
    out = args.out or os.path.join(ROOT, "bench-results", "hybrid-" +
                                   datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    reps = 1 if args.quick else args.repetitions
    variants = [(5, 20000), (1, 20000), (20, 20000), (5, 5000), (5, 80000)]
    if args.quick:
        variants = variants[:3]
    total = reps * (1 + len(variants))
    done = 0

    def step(name, extra):
        nonlocal done
        done += 1
        log(f"[{done}/{total}] {name}")
        return run_demo(cli, out, name, args.size, args.touches, extra)

    pure = [step(f"pure-{i}", []) for i in range(reps)]
    results = {"size": args.size, "touches_per_vcpu": args.touches, "repetitions": reps,
               "pure": pure, "hybrid": []}
    base_faults = median_of(pure, "faults_after_switchover")
    base_blocked = median_of(pure, "blocked_ms")
    rows = []
    for hot, rate in variants:
        runs = [step(f"hybrid-hot{hot}-rate{rate}-{i}",
                     ["--precopy", "--source-writers", "2", "--hot-set", str(hot), "--write-rate",
                      str(rate), "--max-rounds", "10"]) for i in range(reps)]
        row = {
            "hot_set_percent": hot, "write_rate": rate, "runs": runs,
            "faults_ratio": ratio(median_of(runs, "faults_after_switchover"), base_faults),
            "blocked_ratio": ratio(median_of(runs, "blocked_ms"), base_blocked),
            "downtime_ms": median_of(runs, "downtime_ms"),
            "switchover_ms": median_of(runs, "switchover_ms"),
            "bytes_per_guest_byte": median_of(runs, "bytes_per_guest_byte"),
            "rounds": median_of(runs, "rounds"),
            "discarded": median_of(runs, "discarded"),
        }
        results["hybrid"].append(row)
        rows.append(row)
    headline = next(r for r in rows if r["hot_set_percent"] == 5 and r["write_rate"] == 20000)
    results["goals"] = {
        "faults": {"ratio": headline["faults_ratio"], "goal": GOALS["faults"],
                   "met": headline["faults_ratio"] <= GOALS["faults"]},
        "blocked": {"ratio": headline["blocked_ratio"], "goal": GOALS["blocked"],
                    "met": headline["blocked_ratio"] <= GOALS["blocked"]},
        "downtime_ms": {"value": headline["downtime_ms"], "goal": GOALS["downtime_ms"],
                        "met": headline["downtime_ms"] <= GOALS["downtime_ms"]},
        "bytes_per_guest_byte": {"value": headline["bytes_per_guest_byte"],
                                 "goal": GOALS["bytes_per_guest_byte"],
                                 "met": headline["bytes_per_guest_byte"] <=
                                 GOALS["bytes_per_guest_byte"]},
    }
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    lines = [f"Guest {args.size}, 2 vCPUs x {args.touches} random touches, {reps} repetition(s); "
             f"pure postcopy: {base_faults:.0f} faults, {base_blocked:.1f} ms blocked, "
             f"{median_of(pure, 'bytes_per_guest_byte'):.3f} bytes per guest byte (medians).",
             "",
             "| hot set | write rate (pages/s) | rounds | discarded | faults after / pure | "
             "blocked after / pure | downtime (ms) | discard (ms) | bytes / guest |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['hot_set_percent']} % | {r['write_rate']} | {r['rounds']:.0f} | "
                     f"{r['discarded']:.0f} | {r['faults_ratio']:.3f} | {r['blocked_ratio']:.3f} | "
                     f"{r['downtime_ms']:.1f} | {r['switchover_ms']:.1f} | "
                     f"{r['bytes_per_guest_byte']:.3f} |")
    lines.append("")
    for name, goal in results["goals"].items():
        value = goal.get("ratio", goal.get("value"))
        lines.append(f"- {name}: {value:.3f} (goal <= {goal['goal']}): "
                     f"{'met' if goal['met'] else 'NOT met'}")
    report = "\n".join(lines) + "\n"
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report)
    print(report)

    if shutil.which("gnuplot"):
        data = os.path.join(out, "hybrid.dat")
        with open(data, "w") as f:
            for r in sorted(rows, key=lambda r: r["hot_set_percent"]):
                if r["write_rate"] == 20000:
                    f.write(f"{r['hot_set_percent']} {r['faults_ratio']} {r['blocked_ratio']} "
                            f"{r['bytes_per_guest_byte']} {r['downtime_ms']}\n")
        for terminal, ext in (("pngcairo size 900,560", "png"), ("svg size 900,560", "svg")):
            script = f"""set terminal {terminal}
set output '{os.path.join(out, 'hybrid.' + ext)}'
set title 'Hybrid vs pure postcopy by hot-set size ({args.size}, 20000 pages/s written)'
set xlabel 'hot set (% of the guest)'
set ylabel 'hybrid / pure postcopy'
set y2label 'downtime (ms)'
set ytics nomirror
set y2tics
set key below
plot '{data}' using 1:2 with linespoints title 'faults after the switchover', \\
     '' using 1:3 with linespoints title 'vCPU time blocked after it', \\
     '' using 1:4 with linespoints title 'bytes / guest size (hybrid)', \\
     '' using 1:5 axes x1y2 with linespoints title 'downtime (ms, right)'
"""
            subprocess.run(["gnuplot"], input=script, text=True, check=False)
    log(f"results in {out}")
    return 0 if all(g["met"] for g in results["goals"].values()) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as e:
        print(f"hybrid: {e}", file=sys.stderr)
        sys.exit(2)
