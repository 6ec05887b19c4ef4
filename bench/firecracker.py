#!/usr/bin/env python3
"""firecracker.py — uffd-migrate firecracker-handler against Firecracker's own file backend,
same run: fault latency and time to full residency of a restored VM's snapshot memory.

    bench/firecracker.py [--size 1G] [--repetitions 3] [--touches 2000] [--out DIR] [--build DIR]
    (also: bench/run.py --firecracker ...)

No KVM here, so no Firecracker: tests/firecracker/fc_standin.c does what Firecracker does on
restore (its docs' handshake) and stands in for the guest with one vCPU thread touching random
pages, each touch timed. Cases, medians over the repetitions:
  file backend   the floor: the memory file mapped private, faulted in by the kernel from its
                 page cache (warm: the file was just read), as Firecracker does without a handler;
                 full residency = every page touched by 2 threads;
  handler local  firecracker-handler --image FILE: faults first, the rest streamed;
  handler remote firecracker-handler --connect to `uffd-migrate serve --image FILE` on loopback.
Floors measured in the same run: the local userfaultfd fault round trip and the raw 4 KiB TCP
round trip on loopback (bench/floors.cpp). Writes results.json, report.md, samples and a CDF plot.
"""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Plots, cdf_script, loopback_floor_client  # noqa: E402


def log(message):
    print(f"firecracker: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build)
        self.cli = os.path.join(build, "cli", "uffd-migrate")
        self.standin = os.path.join(build, "tests", "fc_standin")
        self.floors_exe = os.path.join(build, "bench", "uffdm_floors")
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.memory = os.path.join(self.out, "memory.img")
        self.socket = os.path.join(self.out, "fc.sock")

    def make_memory(self):
        """Random pages with every fourth MiB left a hole (zeros), as sparse snapshots are."""
        size = self.args.size_bytes
        with open("/dev/urandom", "rb") as rnd, open(self.memory, "wb") as f:
            mib = 1 << 20
            for i in range(size // mib):
                if i % 4 == 3:
                    f.seek(mib, os.SEEK_CUR)
                else:
                    f.write(rnd.read(mib))
            f.truncate(size)
        os.sync()  # no writeback of it during the measurements

    def warm_cache(self):
        with open(self.memory, "rb") as f:
            while f.read(8 << 20):
                pass

    def run_standin(self, name, extra, handler=None):
        samples = os.path.join(self.out, f"{name}.samples")
        argv = [self.standin, "--socket", self.socket, "--memory", self.memory, "--regions", "2",
                "--latency", str(self.args.touches), "--samples", samples] + extra
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        if handler is not None:
            handler.wait(timeout=120)
        text = result.stdout
        if result.returncode != 0:
            raise RuntimeError(f"{name}: {argv} exited {result.returncode}: {text}{result.stderr}")
        row = {"name": name, "command": " ".join(argv)}
        m = re.search(r"latency us p50 ([\d.]+) p90 ([\d.]+) p99 ([\d.]+) max ([\d.]+)", text)
        row.update(p50_us=float(m[1]), p90_us=float(m[2]), p99_us=float(m[3]), max_us=float(m[4]))
        m = re.search(r"(resident|every page touched) after ([\d.]+) ms", text)
        row["resident_ms"] = float(m[2])
        row["samples"] = samples
        return row

    def handler_case(self, name, source_args):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        handler = subprocess.Popen([self.cli, "firecracker-handler", "--socket", self.socket,
                                    "--max-vms", "1", "--json",
                                    os.path.join(self.out, f"{name}.jsonl")] + source_args,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(self.socket):
                break
            time.sleep(0.01)
        row = self.run_standin(name, ["--no-touch-all", "--kernel-reads", "0",
                                      "--wait-unregistered", "600"], handler)
        with open(os.path.join(self.out, f"{name}.jsonl")) as f:
            vm = json.loads(f.readline())
        if vm["end"] != "complete":
            raise RuntimeError(f"{name}: the handler says {vm['end']}")
        # The handler's own view: only touches that faulted, fault read to page placed.
        row["fault_p50_us"] = vm["stats"]["fault_latency_us"]["p50"]
        row["fault_p99_us"] = vm["stats"]["fault_latency_us"]["p99"]
        row["faults"] = vm["stats"]["faults"]
        return row

    def floors(self):
        local = json.loads(subprocess.run([self.floors_exe, "local", "--faults", "20000"],
                                          capture_output=True, text=True, check=True).stdout)
        client = loopback_floor_client(self.floors_exe, 5000, 256)
        return {"uffd_fault_p50_us": local["local_fault_rtt_us"]["p50"],
                "tcp_rtt_p50_us": client["tcp_rtt_us"]["p50"]}

    def repetition(self, i):
        rows = {}
        self.warm_cache()
        rows["floors"] = self.floors()
        log(f"repetition {i + 1}: file backend")
        rows["file backend"] = self.run_standin(f"file-{i}", ["--file-backend", "--threads", "2",
                                                              "--kernel-reads", "0"])
        self.warm_cache()
        log(f"repetition {i + 1}: handler, local memory file")
        rows["handler local"] = self.handler_case(f"local-{i}", ["--image", self.memory])
        self.warm_cache()
        log(f"repetition {i + 1}: handler, remote source on loopback")
        source = subprocess.Popen([self.cli, "serve", "--listen", "tcp:127.0.0.1:0", "--image",
                                   self.memory], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        endpoint = source.stdout.readline().strip()[len("listening on "):]
        rows["handler remote"] = self.handler_case(f"remote-{i}", ["--connect", endpoint])
        source.wait(timeout=120)
        return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--touches", type=int, default=2000)
    parser.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    parser.add_argument("--out")
    args = parser.parse_args()
    args.size_bytes = int(args.size[:-1]) << {"M": 20, "G": 30}[args.size[-1]]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out = os.path.abspath(args.out or os.path.join(ROOT, "bench-results",
                                                        f"firecracker-{stamp}"))
    bench = Bench(args)
    log(f"a {args.size} memory file in {args.out}")
    bench.make_memory()
    reps = [bench.repetition(i) for i in range(args.repetitions)]
    floors = {k: statistics.median(r["floors"][k] for r in reps) for k in reps[0]["floors"]}
    cases = {}
    for name in [n for n in reps[0] if n != "floors"]:
        runs = [r[name] for r in reps]
        keys = [k for k in ("p50_us", "p90_us", "p99_us", "max_us", "resident_ms",
                            "fault_p50_us", "fault_p99_us", "faults") if k in runs[0]]
        cases[name] = {k: statistics.median(r[k] for r in runs) for k in keys}
        cases[name]["runs"] = runs
    base = cases["file backend"]
    doc = {"command": " ".join(["bench/firecracker.py"] + sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "size": args.size, "touches": args.touches, "repetitions": args.repetitions,
           "floors": floors, "cases": cases}
    lines = [f"{doc['date']}, `{doc['command']}`, {args.size} memory file, medians of "
             f"{args.repetitions}. Floors, same run (medians, measured in each repetition): local userfaultfd fault round trip p50 "
             f"{floors['uffd_fault_p50_us']:.1f} us, raw 4 KiB TCP round trip on loopback p50 "
             f"{floors['tcp_rtt_p50_us']:.1f} us.", "",
             "| case | touch p50 us | p90 | p99 | p50 / file backend | time to full residency "
             "ms | / file backend |", "|---|---|---|---|---|---|---|"]
    for name, c in cases.items():
        lines.append(f"| {name} | {c['p50_us']:.1f} | {c['p90_us']:.1f} | {c['p99_us']:.1f} | "
                     f"{c['p50_us'] / base['p50_us']:.1f}x | {c['resident_ms']:.0f} | "
                     f"{c['resident_ms'] / base['resident_ms']:.2f}x |")
    lines += ["", "The handler's own view, touches that faulted only (fault read to page placed):",
              "", "| case | faults | fault p50 us | p99 | p50 / floor |", "|---|---|---|---|---|"]
    for name, floor, label in (("handler local", floors["uffd_fault_p50_us"],
                                "local userfaultfd fault round trip"),
                               ("handler remote", floors["tcp_rtt_p50_us"],
                                "loopback TCP round trip")):
        c = cases[name]
        lines.append(f"| {name} | {c['faults']:.0f} | {c['fault_p50_us']:.1f} | "
                     f"{c['fault_p99_us']:.1f} | {c['fault_p50_us'] / floor:.2f}x the {label} |")
    plots = Plots(args.out)
    series = []
    for name, c in cases.items():
        values = sorted(float(v) for v in open(c["runs"][0]["samples"]))
        rows = [(max(v, 0.01), (i + 1) / len(values)) for i, v in enumerate(values)]
        series.append((plots.data(f"cdf-{name.replace(' ', '-')}.dat", rows), name))
    doc["plots"] = plots.gnuplot("firecracker_touch_cdf", cdf_script(
        series, f"Restored VM, touch latency of random pages ({args.size} snapshot), CDF"))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    os.unlink(bench.memory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
