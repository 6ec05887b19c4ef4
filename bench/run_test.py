#!/usr/bin/env python3
"""run_test.py — Runs bench/run.py on its smoke matrix and checks what it wrote.

No timing is asserted: a figure only has to be there, positive where it must be, and consistent
with the scenario that produced it (no faults where no vCPU ran, faults where one did).
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = {"idle", "load", "throughput", "scaling", "io", "sparse"}
PLOTS = ("fault_latency_cdf", "touch_latency_cdf", "throughput_timeline", "scaling")

failures = []


def check(condition, what):
    if not condition:
        failures.append(what)


def run(args, **kw):
    return subprocess.run([sys.executable, os.path.join(HERE, "run.py")] + args,
                          capture_output=True, text=True, **kw)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--build", required=True)
    parser.add_argument("--netns", action="store_true")
    args = parser.parse_args()

    # Refusals first: they must say what is wrong and exit non-zero.
    missing = run(["--smoke", "--build", "/nonexistent", "--out", tempfile.mkdtemp()])
    check(missing.returncode == 1 and "build first" in missing.stderr,
          f"a missing build is refused by name: {missing.returncode} {missing.stderr!r}")
    negative = run(["--smoke", "--repetitions", "-1"])
    check(negative.returncode == 2, f"--repetitions -1 is refused: {negative.returncode}")
    both = run(["--smoke", "--quick"])
    check(both.returncode == 2, "--smoke with --quick is refused")

    out = tempfile.mkdtemp(prefix="uffdm-bench-test-")
    extra = ["--netns"] if args.netns else []
    result = run(["--smoke", "--build", args.build, "--out", out] + extra, timeout=540)
    if result.returncode != 0:
        print(result.stdout, result.stderr, sep="\n")
        print("FAIL: bench/run.py --smoke exited", result.returncode)
        return 1
    check(re.search(r"\[\s*1/\d+\]", result.stderr), "progress lines on stderr")
    check("goal " in result.stderr, "the goals are summarised on stderr")

    with open(os.path.join(out, "results.json")) as f:
        doc = json.load(f)
    check(doc["command"].startswith("bench/run.py") and "--smoke" in doc["command"],
          "the exact command is recorded")
    m = doc["machine"]
    check(m["cores"] >= 1 and m["kernel"] and m["cpu"], f"machine described: {m}")
    check("MISSING_SHMEM" in m["userfaultfd_features"], "userfaultfd features by name")

    fl = doc["floors"]
    check(fl["connection"] == ("veth between two network namespaces" if args.netns else "loopback"),
          f"floor connection: {fl['connection']}")
    for key in ("local_fault_rtt_us", "tcp_rtt_us"):
        check(0 < fl[key]["p50"]["median"] <= fl[key]["p99"]["median"], f"{key} p50 <= p99 > 0")
    for key in ("tcp_throughput_bytes_per_s", "memcpy_bytes_per_s", "placement_bytes_per_s"):
        check(fl[key]["median"] > 0, f"{key} > 0")
    check(0 < fl["serial_receive_and_place_bytes_per_s"] < fl["tcp_throughput_bytes_per_s"]["median"],
          "the receive-then-place bound lies below raw TCP")

    scenarios = doc["scenarios"]
    check({r["scenario"] for r in scenarios} == SCENARIOS, "every scenario ran")
    for r in scenarios:
        f = r["figures"]
        check(len(r["runs"]) == doc["repetitions"], f"{r['name']}: one entry per repetition")
        check(f["total_seconds"]["median"] > 0, f"{r['name']}: a total time")
        check(f["total_seconds"]["min"] <= f["total_seconds"]["median"]
              <= f["total_seconds"]["max"], f"{r['name']}: spread ordered")
        check("uffd-migrate" in r["command"] and " demo " in r["command"],
              f"{r['name']}: its command is recorded")
        if r["scenario"] == "throughput":
            check(f["faults"]["median"] == 0, f"{r['name']}: no vCPU, no fault")
            check(f["wire_bytes_per_s"]["median"] > 0, f"{r['name']}: a throughput")
            check(len(r["timeline"]) >= 2, f"{r['name']}: a timeline")
        elif r["scenario"] != "sparse":
            check(f["faults"]["median"] > 0 and f["fault_p50_us"]["median"] > 0,
                  f"{r['name']}: faults and their latency")
        if r["scenario"] in ("idle", "scaling", "io"):
            # The stream is held: every first touch faults, so urgent pages abound.
            check(f["pages_urgent"]["median"] > 0, f"{r['name']}: pages came as answers")
    names = {r["name"] for r in scenarios}
    check({"load-urgent", "load-shared"} <= names, "under load, with and without the urgent link")

    goals = doc["goals"]
    check(len(goals) >= 4, "four kinds of goal")
    for g in goals:
        check(math.isfinite(g["ratio"]) and g["ratio"] > 0, f"goal ratio: {g}")
        check(isinstance(g["met"], bool), "each goal says met or not")

    for name in PLOTS:
        png = os.path.join(out, name + ".png")
        svg = os.path.join(out, name + ".svg")
        with open(png, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{name}.png is a PNG")
        with open(svg) as f:
            text = f.read()
            check("<svg" in text and "</svg>" in text and "<path" in text, f"{name}.svg drawn")
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    for heading in ("Floors", "Idle faults", "under a saturating", "Background throughput",
                    "Scaling", "Kernel-mode", "Sparse", "Goals", "Plots", "Commands"):
        check(heading in report, f"report.md has '{heading}'")
    for r in scenarios:
        check(f"# {r['name']}\n" in report, f"report.md gives the command of {r['name']}")

    for r in scenarios:
        check(os.path.exists(os.path.join(out, "runs", r["name"] + "-1.json")),
              f"{r['name']}: the run's own JSON is kept")

    if failures:
        for f in failures:
            print("FAIL:", f)
        print(f"results kept in {out}")
        return 1
    print(f"bench runner: {len(scenarios)} cases, {len(PLOTS) * 2} plots, report and JSON checked")
    subprocess.run(["rm", "-rf", out])
    return 0


if __name__ == "__main__":
    sys.exit(main())
