#!/usr/bin/env python3
"""link.py — Migrations over a rate-limited link between two network namespaces, against the
raw TCP floors measured over the same link in the same run.

    bench/link.py --link 1gbit|10gbit|loopback [--repetitions 2] [--out DIR] [--build DIR]
    (also: bench/run.py --link RATE ...)

The link: a veth pair between two namespaces whose egress on each end is a token bucket (tc
tbf) at the rate with pfifo_fast's three priority bands under it, as a NIC's queue has them
(uffd-migrate demo --link RATE builds it; "loopback" runs on the unshaped loopback). Measured,
medians over the repetitions:
  floors      raw TCP 4 KiB round trip and single-stream throughput over the same link; on a
              shaped link also the wire's share of a loaded answer: paced 4 KiB round trips
              marked like the urgent connection, alone and beside a stream marked like a bulk
              one that fills the link, and both unmarked (uffdm_floors --marked-probe);
  faults      vCPU touch p50/p99 with the stream held (idle), and under a saturating stream
              with urgent-traffic marking on, off, and one shared connection
              (goal: p99 under load <= 2 x idle p99, marking on); the same idle and marked
              cases with 1 ms added to the round trip (demo --rtt: a delay relay). 2000 touches
              a vCPU (a p99 of 4000 samples); the cases run interleaved like the streams and a
              goal's ratio is the median of each repetition's loaded / idle p99;
  answers     lz4-compressed answers against raw ones (fault p50 under load, host-files guest);
  compression background transfer time of a host-files guest with --compress off, auto, lz4,
              zstd:1 (goal on a link: auto <= 0.5 x off), and with the random guest (goal on
              loopback: auto costs <= 5 % against off); the codecs run interleaved and a goal's
              ratio is the median of each repetition's auto / off.
Writes into DIR: results.json, report.md and each run's JSON and log.
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Netns, loopback_floor_client  # noqa: E402  (Netns: the namespace pair)


def log(message):
    print(f"link: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        build = os.path.abspath(args.build)
        self.cli = os.path.join(build, "cli", "uffd-migrate")
        self.floors = os.path.join(build, "bench", "uffdm_floors")
        self.out = args.out
        os.makedirs(self.out, exist_ok=True)
        self.link = [] if args.link == "loopback" else ["--link", args.link]
        self.done = 0

    def warm(self, size_bytes):
        subprocess.run([self.floors, "warm", "--bytes", str(2 * size_bytes + (512 << 20))],
                       check=True, stderr=subprocess.DEVNULL)

    def demo(self, name, size, extra):
        path = os.path.join(self.out, name + ".json")
        argv = [self.cli, "demo", "--size", size, "--json", path] + self.link + extra
        self.warm(int(size[:-1]) << (30 if size.endswith("G") else 20))
        result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        with open(os.path.join(self.out, name + ".log"), "w") as f:
            f.write(" ".join(argv) + "\n" + result.stdout + result.stderr)
        if result.returncode != 0:
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-400:]}")
        with open(path) as f:
            report = json.load(f)
        if not report["verified"]:
            raise RuntimeError(f"{name}: pages differ")
        self.done += 1
        source = report.get("source", {})
        row = {"command": " ".join(argv[1:]).replace(self.out + "/", ""),
               "seconds": report["total_seconds"],
               "touch_p50_us": report["touch_latency_us"]["p50"],
               "touch_p99_us": report["touch_latency_us"]["p99"],
               "fault_p50_us": report["fault_latency_us"]["p50"],
               "fault_p99_us": report["fault_latency_us"]["p99"],
               "faults": report["faults"],
               "wire_bytes": report["bytes_received"],
               "compression": source.get("compression", {})}
        log(f"[{self.done}] {name}: {row['seconds']:.2f} s, touch p50 {row['touch_p50_us']:.0f} us"
            f" p99 {row['touch_p99_us']:.0f} us")
        return row

    def floors_over_link(self):
        """Raw TCP over a link shaped like demo --link's (the demo's own namespaces are not
        reachable from here): bench/run.py's namespace pair with the same qdiscs."""
        netns = Netns(rate=self.args.link)
        try:
            server = subprocess.Popen(["ip", "netns", "exec", netns.a, self.floors, "serve",
                                       "--listen", f"{Netns.ADDRESS_A}:0"],
                                      stdout=subprocess.PIPE, text=True)
            endpoint = server.stdout.readline().strip()[len("listening on "):]
            client = subprocess.run(["ip", "netns", "exec", netns.b, self.floors, "client",
                                     "--connect", endpoint, "--round-trips", "5000",
                                     "--stream-mib", "512", "--marked-probe", "3000"],
                                    capture_output=True, text=True, timeout=600, check=True)
            server.wait(timeout=10)
            return json.loads(client.stdout)
        finally:
            netns.close()

    def floors_loopback(self):
        return loopback_floor_client(self.floors, 5000, 1024)


def med(rows, key):
    return statistics.median(r[key] for r in rows)


def p99_ratio(runs, loaded, idle):
    """The median over the repetitions of one repetition's loaded / idle touch p99 (the cases of
    a repetition ran minutes apart at most, the repetitions up to half an hour)."""
    each = [a["touch_p99_us"] / b["touch_p99_us"] for a, b in zip(runs[loaded], runs[idle])]
    return statistics.median(each), each


def fault_goals(runs):
    """The fault cases' goals: touch p99 under a saturating stream at most twice the idle one."""
    goals = []
    for n in ("load-marked", "load-unmarked", "load-shared", "load-marked-placed"):
        ratio, each = p99_ratio(runs, n, "idle")
        goals.append({"goal": f"touch p99 under load <= 2 x idle p99 ({n}), median of the "
                              "repetitions' ratios",
                      "ratio": ratio, "each": each, "limit": 2.0, "met": ratio <= 2.0,
                      "informative": n != "load-marked"})
    ratio, each = p99_ratio(runs, "load-marked-rtt-1ms", "idle-rtt-1ms")
    goals.append({"goal": "touch p99 under load <= 2 x idle p99, 1 ms added round trip",
                  "ratio": ratio, "each": each, "limit": 2.0, "met": ratio <= 2.0,
                  "informative": False})
    return goals


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--link", default="1gbit", help="1gbit, 10gbit (any tc rate) or loopback")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--build", default=os.path.join(ROOT, "build", "release"))
    parser.add_argument("--out")
    parser.add_argument("--faults-only", action="store_true",
                        help="the fault cases only (no compression streams)")
    parser.add_argument("--streams-only", action="store_true",
                        help="the compression streams only (no fault cases)")
    args = parser.parse_args()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out = os.path.abspath(args.out or os.path.join(ROOT, "bench-results",
                                                        f"link-{args.link}-{stamp}"))
    bench = Bench(args)
    shaped = args.link != "loopback"
    doc = {"command": " ".join(["bench/link.py"] + sys.argv[1:]), "link": args.link,
           "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "repetitions": args.repetitions}
    floors = [bench.floors_over_link() if shaped else bench.floors_loopback()
              for _ in range(args.repetitions)]
    doc["floors"] = {"tcp_rtt_p50_us": statistics.median(f["tcp_rtt_us"]["p50"] for f in floors),
                     "tcp_throughput_bytes_per_s": statistics.median(
                         f["tcp_throughput_bytes_per_s"] for f in floors)}
    for probe in ("marked_rtt_us", "marked_rtt_beside_stream_us", "unmarked_rtt_beside_stream_us"):
        if shaped:
            for q in ("p50", "p99"):
                doc["floors"][f"{probe[:-3]}_{q}_us"] = statistics.median(f[probe][q]
                                                                         for f in floors)
    log(f"floors: rtt p50 {doc['floors']['tcp_rtt_p50_us']:.0f} us, "
        f"{doc['floors']['tcp_throughput_bytes_per_s'] / 1e6:.0f} MB/s")
    reps = range(args.repetitions)
    faults = ["--vcpus", "2", "--touches", "2000", "--zero-percent", "0", "--seed", "7"]
    size = "512M"
    cases = {
        "idle": (size, faults + ["--hold-stream"]),
        "load-marked": (size, faults),
        "load-unmarked": (size, faults + ["--no-marking"]),
        "load-shared": (size, faults + ["--bulk-channels", "0"]),
        # The stream placed by a placement thread from the receive ring (issue 16).
        "load-marked-placed": (size, faults + ["--placement-threads", "1"]),
        "idle-rtt-1ms": (size, faults + ["--hold-stream", "--rtt", "1ms"]),
        "load-marked-rtt-1ms": (size, faults + ["--rtt", "1ms"]),
        "answers-raw": (size, faults + ["--content", "host-files", "--compress", "lz4"]),
        "answers-lz4": (size, faults + ["--content", "host-files", "--compress", "lz4",
                                        "--compress-answers"]),
    }
    if args.streams_only:
        cases = {}
    # Every run of a kind interleaved, a repetition of every case after the other (in turn
    # forwards and backwards), and each goal is the median of the ratios of one repetition's
    # runs: on a shared VM the same run drifts by a third over minutes, which medians of whole
    # blocks of runs took for the cost of a codec or of a loaded link.
    runs = {}
    for i in reps:
        for name in (list(cases) if i % 2 == 0 else list(cases)[::-1]):
            guest, extra = cases[name]
            runs.setdefault(name, []).append(bench.demo(f"{name}-{i + 1}", guest, extra))
    stream = ["--vcpus", "0", "--seed", "7"]
    codecs = ("off", "auto", "lz4", "zstd:1")
    for content in (() if args.faults_only else ("host-files", "random")):
        for i in reps:
            for codec in (codecs if i % 2 == 0 else codecs[::-1]):
                name = f"stream-{content}-{codec}"
                runs.setdefault(name, []).append(bench.demo(
                    f"{name}-{i + 1}", "1G", stream + ["--content", content, "--compress", codec]))
    results = {}
    for name, rows in runs.items():
        results[name] = {"command": rows[0]["command"], "runs": rows,
                         **{k: med(rows, k) for k in ("seconds", "touch_p50_us", "touch_p99_us",
                                                      "fault_p50_us", "fault_p99_us",
                                                      "wire_bytes")}}
    doc["results"] = results
    goals = [] if args.streams_only else fault_goals(runs)
    for content in (() if args.faults_only else ("host-files", "random")):
        pairs = zip(runs[f"stream-{content}-auto"], runs[f"stream-{content}-off"])
        r = statistics.median(a["seconds"] / o["seconds"] for a, o in pairs)
        if shaped:  # the link is the bottleneck: auto should make the stream faster
            goal, limit, info = "on a link, host-files guest: <= 0.5", 0.5, content == "random"
        else:  # the CPU is: auto should cost (almost) nothing
            goal, limit, info = "on loopback: <= 1.05", 1.05, False
        goals.append({"goal": f"stream time auto / off, {content} guest, median of the "
                              f"repetitions' ratios (goal {goal})",
                      "ratio": r, "limit": limit, "met": r <= limit, "informative": info})
    doc["goals"] = goals
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(doc, f, indent=1)
    lines = [f"Link **{args.link}**, {doc['date']}, `{doc['command']}`, medians of "
             f"{args.repetitions}. Floors over the same link: raw TCP 4 KiB round trip p50 "
             f"{doc['floors']['tcp_rtt_p50_us']:.0f} us, single stream "
             f"{doc['floors']['tcp_throughput_bytes_per_s'] / 1e6:.0f} MB/s."
             + (" Paced 4 KiB round trips, p50 / p99: marked, alone "
                f"{doc['floors']['marked_rtt_p50_us']:.0f} / "
                f"{doc['floors']['marked_rtt_p99_us']:.0f} us; marked, beside a marked "
                f"stream filling the link {doc['floors']['marked_rtt_beside_stream_p50_us']:.0f}"
                f" / {doc['floors']['marked_rtt_beside_stream_p99_us']:.0f} us; unmarked, "
                "beside an unmarked stream "
                f"{doc['floors']['unmarked_rtt_beside_stream_p50_us']:.0f} / "
                f"{doc['floors']['unmarked_rtt_beside_stream_p99_us']:.0f} us." if shaped
                else ""), "",
             "| case | seconds | touch p50 us | touch p99 us | wire MB | MB/s / raw TCP |",
             "|---|---|---|---|---|---|"]
    raw = doc["floors"]["tcp_throughput_bytes_per_s"]
    for name, r in results.items():
        rate = r["wire_bytes"] / r["seconds"] / raw
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['touch_p50_us']:.0f} | "
                     f"{r['touch_p99_us']:.0f} | {r['wire_bytes'] / 1e6:.0f} | {rate:.2f} |")
    lines += ["", "| goal | ratio | met |", "|---|---|---|"]
    for g in goals:
        each = " (" + ", ".join(f"{r:.2f}" for r in g["each"]) + ")" if "each" in g else ""
        lines.append(f"| {g['goal']} | {g['ratio']:.2f}{each} | "
                     f"{'yes' if g['met'] else ('no' if not g['informative'] else '(info)')} |")
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
