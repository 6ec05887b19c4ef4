#!/usr/bin/env python3
"""run.py — The end-to-end benchmark runner: real postcopy migrations against same-run floors.

    bench/run.py [--quick | --smoke] [--out DIR] [--netns] [--repetitions N] [--publish]
    bench/run.py --soak SECONDS [--kill-every SECONDS]
    bench/run.py --hybrid [--quick]   (bench/hybrid.py: pure postcopy vs precopy + postcopy)
    bench/run.py --link 1gbit|10gbit|loopback   (bench/link.py: a rate-limited two-host link)
    bench/run.py --firecracker [--quick]   (bench/firecracker.py: a restored Firecracker VM)

Measures the floors first (local userfaultfd fault round trip, raw 4 KiB TCP ping-pong, raw
single-stream TCP throughput, memcpy), on the connection the migrations use (loopback, or a
veth link between two network namespaces with --netns), then runs `uffd-migrate demo` through
the matrix: idle faults, faults under a saturating stream with and without the urgent
connection, background throughput on 1/2/4 bulk connections, 1..8 faulting threads,
kernel-mode faults and a 16 GiB sparse guest. Every scenario runs several times; the report
gives the median and the spread, every figure beside its floor, and says which goals are met.

Writes into DIR: results.json (every figure, the floors, the ratios, the machine, the command),
report.md (the tables), plots as PNG and SVG (latency CDFs, throughput over time, latency by
thread count) and each run's own JSON and log. --publish also copies the plots to bench/plots/
and replaces the generated section of BENCHMARKS.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK_BEGIN = "<!-- bench/run.py: generated section begins -->"
MARK_END = "<!-- bench/run.py: generated section ends -->"

GIB = 1 << 30
MIB = 1 << 20

# Each matrix: floors' sizes, the memory to warm, and each scenario's cases.
MATRICES = {
    "full": {
        "repetitions": 3,
        "warm_bytes": 12 * GIB,
        "floors": {"faults": 20000, "round_trips": 20000, "stream_mib": 2048, "memcpy_mib": 256},
        "idle": {"size": "1G", "touches": 2500},
        "load": {"size": "4G", "touches": 2500},
        "throughput": {"size": "4G", "bulk": [1, 2, 4]},
        "scaling": {"size": "1G", "touches": 1500, "vcpus": [1, 2, 4, 8]},
        "io": {"size": "1G", "touches": 2500},
        "sparse": {"size": "16G", "touches": 5000},
    },
    "quick": {
        "repetitions": 2,
        "warm_bytes": 4 * GIB,
        "floors": {"faults": 5000, "round_trips": 5000, "stream_mib": 1024, "memcpy_mib": 128},
        "idle": {"size": "512M", "touches": 1000},
        "load": {"size": "1G", "touches": 1000},
        "throughput": {"size": "1G", "bulk": [1, 2, 4]},
        "scaling": {"size": "512M", "touches": 500, "vcpus": [1, 2, 4, 8]},
        "io": {"size": "512M", "touches": 1000},
        "sparse": {"size": "4G", "touches": 2000},
    },
    # What the test suite runs: every scenario, tiny, once. Its figures mean nothing.
    "smoke": {
        "repetitions": 1,
        "warm_bytes": 256 * MIB,
        "floors": {"faults": 1000, "round_trips": 1000, "stream_mib": 64, "memcpy_mib": 16},
        "idle": {"size": "64M", "touches": 200},
        "load": {"size": "128M", "touches": 200},
        "throughput": {"size": "128M", "bulk": [1, 2]},
        "scaling": {"size": "64M", "touches": 100, "vcpus": [1, 2]},
        "io": {"size": "64M", "touches": 200},
        "sparse": {"size": "256M", "touches": 200},
    },
}

GOALS = {
    "idle_p50": 1.3,  # idle fault p50 <= 1.3 x (raw TCP 4 KiB round trip + local fault)
    "load_p99": 2.0,  # p99 under a saturating stream <= 2 x idle p99
    "throughput": 0.85,  # background stream >= 0.85 x raw single-stream TCP
    "pipeline": 0.95,  # or >= 0.95 x the pipeline floor where a machine cannot reach the first
}


class Failure(Exception):
    pass


def log(message):
    print(message, file=sys.stderr, flush=True)


def median(values):
    return statistics.median(values) if values else 0.0


def spread(values):
    """{median, min, max} of the repetitions' values."""
    return {"median": median(values), "min": min(values, default=0.0),
            "max": max(values, default=0.0)}


def parse_size(text):
    units = {"K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def loopback_floor_client(floors_bin, round_trips, stream_mib):
    """Raw TCP floors on loopback: uffdm_floors serve, then its client (round trips and a
    stream), the client's JSON."""
    server = subprocess.Popen([floors_bin, "serve", "--listen", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    endpoint = server.stdout.readline().strip()[len("listening on "):]
    client = subprocess.run([floors_bin, "client", "--connect", endpoint, "--round-trips",
                             str(round_trips), "--stream-mib", str(stream_mib)],
                            capture_output=True, text=True, timeout=600, check=True)
    server.wait(timeout=10)
    return json.loads(client.stdout)


class Netns:
    """Two network namespaces joined by a veth pair, for the floors across a link (--netns)."""

    ADDRESS_A = "10.79.0.1"
    ADDRESS_B = "10.79.0.2"

    def __init__(self, rate=None):
        """rate: a tc rate ("1gbit") shapes each end's egress as `demo --link` does: a token
        bucket with pfifo_fast's three priority bands under it."""
        pid = os.getpid()
        self.a, self.b = f"uffdm-bench-a-{pid}", f"uffdm-bench-b-{pid}"
        va, vb = f"ubva{pid % 100000}", f"ubvb{pid % 100000}"
        steps = [
            ["ip", "netns", "add", self.a], ["ip", "netns", "add", self.b],
            ["ip", "link", "add", va, "type", "veth", "peer", "name", vb],
            ["ip", "link", "set", va, "netns", self.a], ["ip", "link", "set", vb, "netns", self.b],
            ["ip", "-n", self.a, "addr", "add", self.ADDRESS_A + "/24", "dev", va],
            ["ip", "-n", self.b, "addr", "add", self.ADDRESS_B + "/24", "dev", vb],
            ["ip", "-n", self.a, "link", "set", va, "up"], ["ip", "-n", self.b, "link", "set", vb, "up"],
            ["ip", "-n", self.a, "link", "set", "lo", "up"], ["ip", "-n", self.b, "link", "set", "lo", "up"],
        ]
        for ns, dev in ((self.a, va), (self.b, vb)) if rate else ():
            steps.append(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
                          "rate", rate, "burst", "256kb", "latency", "20ms"])
            steps.append(["tc", "-n", ns, "qdisc", "add", "dev", dev, "parent", "1:1",
                          "pfifo_fast"])
        for step in steps:
            if subprocess.run(step, capture_output=True).returncode != 0:
                self.close()
                raise Failure("--netns: cannot build the veth pair (" + " ".join(step) + ")")

    def close(self):
        for name in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class Runner:
    def __init__(self, args):
        self.args = args
        self.matrix = MATRICES[args.matrix]
        self.repetitions = args.repetitions or self.matrix["repetitions"]
        self.build = os.path.abspath(args.build)
        self.cli = os.path.join(self.build, "cli", "uffd-migrate")
        self.floors_bin = os.path.join(self.build, "bench", "uffdm_floors")
        for program in (self.cli, self.floors_bin):
            if not os.access(program, os.X_OK):
                raise Failure(f"{program} is missing: build first (bash scripts/build.sh release)")
        self.out = os.path.abspath(args.out)
        self.runs_dir = os.path.join(self.out, "runs")
        os.makedirs(self.runs_dir, exist_ok=True)
        self.hugepages_before = None
        self.cases = self.plan()
        self.total_runs = len(self.cases) * self.repetitions + 2 * self.repetitions
        self.done_runs = 0
        self.started = time.monotonic()

    # ---- the matrix ---------------------------------------------------------------------

    def plan(self):
        m = self.matrix
        fault = ["--zero-percent", "0", "--seed", "7"]
        cases = []

        def case(scenario, name, label, argv):
            cases.append({"scenario": scenario, "name": name, "label": label, "argv": argv})

        case("idle", "idle", f"idle: {m['idle']['size']}, stream held, 2 vCPUs random",
             ["--size", m["idle"]["size"], "--vcpus", "2", "--touches", str(m["idle"]["touches"]),
              "--hold-stream"] + fault)
        for bulk, name in ((1, "load-urgent"), (0, "load-shared")):
            how = "urgent connection" if bulk else "one shared connection"
            case("load", name, f"under load: {m['load']['size']} streaming, 2 vCPUs, {how}",
                 ["--size", m["load"]["size"], "--vcpus", "2", "--touches",
                  str(m["load"]["touches"]), "--bulk-channels", str(bulk)] + fault)
        # Placement in the bulk loop, then by a placement thread from the ring (issue 16): the
        # same run both ways, with the faults' figures beside.
        case("load", "load-urgent-placed",
             f"under load: {m['load']['size']} streaming, 2 vCPUs, urgent connection, "
             "1 placement thread",
             ["--size", m["load"]["size"], "--vcpus", "2", "--touches", str(m["load"]["touches"]),
              "--bulk-channels", "1", "--placement-threads", "1"] + fault)
        for bulk in m["throughput"]["bulk"]:
            case("throughput", f"throughput-{bulk}",
                 f"throughput: {m['throughput']['size']}, no faults, {bulk} bulk",
                 ["--size", m["throughput"]["size"], "--vcpus", "0", "--bulk-channels", str(bulk),
                  "--placement-threads", "0"] + fault)
        case("throughput", "throughput-1-placed",
             f"throughput: {m['throughput']['size']}, no faults, 1 bulk, 1 placement thread",
             ["--size", m["throughput"]["size"], "--vcpus", "0", "--bulk-channels", "1",
              "--placement-threads", "1"] + fault)
        # The same into hugetlbfs (2 MiB pages from a reserved pool): pages that never go back
        # to the host, so the figure shows the data path without the hypervisor's first-touch
        # cost (see warm_for). Skipped where huge pages cannot be reserved.
        if self.huge_pages_for(parse_size(m["throughput"]["size"])):
            case("throughput", "throughput-hugetlb-1",
                 f"throughput: {m['throughput']['size']} into hugetlbfs, no faults, 1 bulk",
                 ["--size", m["throughput"]["size"], "--vcpus", "0", "--bulk-channels", "1",
                  "--memory", "hugetlb"] + fault)
        for vcpus in m["scaling"]["vcpus"]:
            case("scaling", f"scaling-{vcpus}",
                 f"scaling: {vcpus} faulting threads, stream held",
                 ["--size", m["scaling"]["size"], "--vcpus", str(vcpus), "--touches",
                  str(m["scaling"]["touches"]), "--hold-stream"] + fault)
        case("io", "io", f"kernel-mode faults: {m['io']['size']}, write(2) from guest memory",
             ["--size", m["io"]["size"], "--vcpus", "2", "--touches", str(m["io"]["touches"]),
              "--workload", "io", "--hold-stream"] + fault)
        case("sparse", "sparse", f"sparse: {m['sparse']['size']}, 99 % zero pages",
             ["--size", m["sparse"]["size"], "--vcpus", "2", "--touches",
              str(m["sparse"]["touches"]), "--zero-percent", "99", "--seed", "7"])
        if self.args.netns:
            for c in cases:
                c["argv"].append("--netns")
        if self.args.placement_threads is not None:
            for c in cases:
                if "--placement-threads" not in c["argv"]:
                    c["argv"] += ["--placement-threads", str(self.args.placement_threads)]
        return cases

    def huge_pages_for(self, size):
        """Reserves enough free 2 MiB pages for a guest of size (root only); restored by close()."""
        need = size // (2 * MIB) + 8
        path = "/proc/sys/vm/nr_hugepages"
        with open("/proc/meminfo") as f:
            free = int(re.search(r"HugePages_Free:\s+(\d+)", f.read()).group(1))
        if free >= need:
            return True
        if not os.access(path, os.W_OK):
            log(f"bench: hugetlbfs throughput skipped: {need} free 2 MiB pages needed, {free} "
                "free, and vm.nr_hugepages is not writable here")
            return False
        with open(path) as f:
            total = int(f.read())
        if self.hugepages_before is None:
            self.hugepages_before = total
        with open(path, "w") as f:
            f.write(str(total + need - free))
        with open("/proc/meminfo") as f:
            free = int(re.search(r"HugePages_Free:\s+(\d+)", f.read()).group(1))
        if free < need:
            log(f"bench: hugetlbfs throughput skipped: only {free} of {need} huge pages reserved")
            return False
        return True

    def close(self):
        if self.hugepages_before is not None:
            with open("/proc/sys/vm/nr_hugepages", "w") as f:
                f.write(str(self.hugepages_before))

    # ---- progress ---------------------------------------------------------------------------

    def progress(self, what, result=""):
        self.done_runs += 1
        elapsed = time.monotonic() - self.started
        eta = elapsed / self.done_runs * (self.total_runs - self.done_runs)
        log(f"[{self.done_runs:3}/{self.total_runs}] {what:<62} {result}"
            f"  (elapsed {elapsed:5.0f} s, ~{eta:4.0f} s left)")

    # ---- floors -------------------------------------------------------------------------------

    def run_floor_pair(self, netns, f):
        prefix_a = ["ip", "netns", "exec", netns.a] if netns else []
        prefix_b = ["ip", "netns", "exec", netns.b] if netns else []
        host = Netns.ADDRESS_A if netns else "127.0.0.1"
        server = subprocess.Popen(prefix_a + [self.floors_bin, "serve", "--listen", f"{host}:0"],
                                  stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline().strip()
            if not line.startswith("listening on "):
                raise Failure(f"the floor server did not start: {line!r}")
            endpoint = line[len("listening on "):]
            client = subprocess.run(
                prefix_b + [self.floors_bin, "client", "--connect", endpoint, "--round-trips",
                            str(f["round_trips"]), "--stream-mib", str(f["stream_mib"]),
                            "--place-mib", str(min(f["stream_mib"], 1024))],
                capture_output=True, text=True, timeout=600)
            if client.returncode != 0:
                raise Failure("floor client: " + client.stderr.strip())
            return json.loads(client.stdout)
        finally:
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    def measure_floors(self):
        f = self.matrix["floors"]
        log(f"warming {self.matrix['warm_bytes'] >> 20} MiB of memory (a VM's host backs RAM "
            "on first touch; no figure should carry that)")
        subprocess.run([self.floors_bin, "warm", "--bytes", str(self.matrix["warm_bytes"])],
                       check=True)
        netns = Netns() if self.args.netns else None
        samples = {"local_fault_rtt_us": [], "tcp_rtt_us": [], "tcp_throughput_bytes_per_s": [],
                   "memcpy_bytes_per_s": [], "placement_bytes_per_s": [],
                   "receive_place_serial_bytes_per_s": [], "receive_place_pipeline_bytes_per_s": [],
                   "receive_place_move_bytes_per_s": [],
                   "receive_place_shmem_copy_bytes_per_s": [],
                   "receive_place_shmem_continue_bytes_per_s": [],
                   "receive_place_shmem_splice_bytes_per_s": [], "first_touch_bytes_per_s": []}
        size = parse_size(self.matrix["throughput"]["size"])
        try:
            for rep in range(self.repetitions):
                local = subprocess.run(
                    [self.floors_bin, "local", "--faults", str(f["faults"]), "--memcpy-mib",
                     str(f["memcpy_mib"])], capture_output=True, text=True, timeout=600)
                if local.returncode != 0:
                    raise Failure("local floors: " + local.stderr.strip())
                local = json.loads(local.stdout)
                samples["local_fault_rtt_us"].append(local["local_fault_rtt_us"])
                samples["memcpy_bytes_per_s"].append(local["memcpy_bytes_per_s"])
                samples["placement_bytes_per_s"].append(local["placement_bytes_per_s"])
                self.progress(f"floors: local fault round trip, memcpy (rep {rep + 1})",
                              f"fault p50 {local['local_fault_rtt_us']['p50']:.1f} us")
                tcp = self.run_floor_pair(netns, f)
                samples["tcp_rtt_us"].append(tcp["tcp_rtt_us"])
                samples["tcp_throughput_bytes_per_s"].append(tcp["tcp_throughput_bytes_per_s"])
                for way in ("serial", "pipeline", "move", "shmem_copy", "shmem_continue",
                            "shmem_splice"):
                    key = f"receive_place_{way}_bytes_per_s"
                    samples[key].append(tcp[key])
                # Fresh memory at the throughput cases' size, with as much again held (the
                # source's copy): what placing such a guest costs before any network.
                touch = subprocess.run(
                    [self.floors_bin, "touch", "--bytes", str(size), "--held", str(size)],
                    capture_output=True, text=True, timeout=600)
                if touch.returncode != 0:
                    raise Failure("first-touch floor: " + touch.stderr.strip())
                samples["first_touch_bytes_per_s"].append(
                    json.loads(touch.stdout)["first_touch_bytes_per_s"])
                self.progress(f"floors: raw TCP ping-pong and stream (rep {rep + 1})",
                              f"rtt p50 {tcp['tcp_rtt_us']['p50']:.1f} us, "
                              f"{tcp['tcp_throughput_bytes_per_s'] / 1e9:.2f} GB/s")
        finally:
            if netns:
                netns.close()
        floors = {"connection": "veth between two network namespaces" if self.args.netns
                  else "loopback", "samples": samples}
        for key in ("local_fault_rtt_us", "tcp_rtt_us"):
            floors[key] = {q: spread([s[q] for s in samples[key]])
                           for q in ("p50", "p90", "p99", "p99.9", "max")}
        for key in ("tcp_throughput_bytes_per_s", "memcpy_bytes_per_s", "placement_bytes_per_s",
                    "receive_place_serial_bytes_per_s", "receive_place_pipeline_bytes_per_s",
                    "receive_place_move_bytes_per_s", "receive_place_shmem_copy_bytes_per_s",
                    "receive_place_shmem_continue_bytes_per_s",
                    "receive_place_shmem_splice_bytes_per_s", "first_touch_bytes_per_s"):
            floors[key] = spread(samples[key])
        floors["first_touch_size"] = self.matrix["throughput"]["size"]
        # One receiving thread that reads the socket and then places what it read does both
        # in turn: the bound it can reach is the harmonic sum of the two rates.
        tcp, place = floors["tcp_throughput_bytes_per_s"]["median"], floors["placement_bytes_per_s"]["median"]
        floors["serial_receive_and_place_bytes_per_s"] = 1 / (1 / tcp + 1 / place)
        return floors

    # ---- migrations ---------------------------------------------------------------------------

    def warm_for(self, case):
        """Writes, right before a run, as much fresh memory as both sides will use: this VM hands
        freed memory back to its host within seconds (free page reporting), and a page the host
        no longer backs costs a hypervisor fault on first touch, which no figure should carry."""
        argv = case["argv"]
        size = parse_size(argv[argv.index("--size") + 1])
        zero = int(argv[argv.index("--zero-percent") + 1])
        # A hugetlbfs destination draws on its pool; only the source's memory is fresh.
        sides = 1 if "hugetlb" in argv else 2
        warm = min(sides * size * (100 - zero) // 100 + 512 * MIB, self.matrix["warm_bytes"])
        subprocess.run([self.floors_bin, "warm", "--bytes", str(warm)], check=True,
                       stderr=subprocess.DEVNULL)
        if "hugetlb" in argv:
            subprocess.run([self.floors_bin, "warm-huge", "--bytes", str(size)], check=True,
                           stderr=subprocess.DEVNULL)

    def run_case(self, case, rep):
        stem = os.path.join(self.runs_dir, f"{case['name']}-{rep + 1}")
        self.warm_for(case)
        command = [self.cli, "demo"] + case["argv"] + ["--json", stem + ".json"]
        with open(stem + ".log", "w") as output:
            started = time.monotonic()
            status = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=900).returncode
            wall = time.monotonic() - started
        if status != 0:
            with open(stem + ".log") as f:
                tail = f.read().strip().splitlines()[-3:]
            raise Failure(f"{case['label']} (rep {rep + 1}) exited {status}: " + " / ".join(tail)
                          + f" (log: {stem}.log)")
        with open(stem + ".json") as f:
            report = json.load(f)
        if not report.get("ok") or not report.get("verified"):
            raise Failure(f"{case['label']} (rep {rep + 1}): not verified: {report.get('error')}")
        report["_command"] = " ".join(command)
        report["_wall_seconds"] = wall
        return report

    @staticmethod
    def figures(report):
        """The figures of one run that the tables and goals use."""
        seconds = report["total_seconds"] or 1e-9
        fault = report["fault_latency_us"]
        touch = report["touch_latency_us"]
        return {
            "fault_p50_us": fault["p50"], "fault_p90_us": fault["p90"],
            "fault_p99_us": fault["p99"], "fault_p999_us": fault["p99.9"],
            "fault_max_us": fault["max"], "faults": report["faults"],
            "touch_p50_us": touch["p50"], "touch_p90_us": touch["p90"],
            "touch_p99_us": touch["p99"], "touch_p999_us": touch["p99.9"],
            "touch_max_us": touch["max"],
            "faults_per_second": report["faults_per_second"],
            "total_seconds": report["total_seconds"],
            "wire_bytes_per_s": report["bytes_received"] / seconds,
            "guest_bytes_per_s": report["guest_bytes"] / seconds,
            "rss_bytes": report["rss_bytes"], "rss_overhead_bytes": report["rss_overhead_bytes"],
            "pages_urgent": report["pages_by_path"]["urgent"],
        }

    def run_matrix(self):
        results = []
        for case in self.cases:
            reports = []
            for rep in range(self.repetitions):
                report = self.run_case(case, rep)
                reports.append(report)
                f = self.figures(report)
                self.progress(f"{case['label']} (rep {rep + 1})",
                              f"{f['total_seconds']:.2f} s, fault p50 {f['fault_p50_us']:.0f} us")
            per_run = [self.figures(r) for r in reports]
            aggregate = {k: spread([p[k] for p in per_run]) for k in per_run[0]}
            # The run whose fault p50 is the median stands for the case in the plots.
            ordered = sorted(range(len(reports)), key=lambda i: per_run[i]["fault_p50_us"])
            typical = reports[ordered[len(ordered) // 2]]
            results.append({
                "scenario": case["scenario"], "name": case["name"], "label": case["label"],
                "command": typical["_command"].replace(self.runs_dir + "/", ""),
                "figures": aggregate, "runs": per_run,
                "fault_latency_histogram_us": typical["fault_latency_histogram_us"],
                "touch_latency_cdf_us": typical["touch_latency_cdf_us"],
                "timeline": typical["timeline"],
                "guest_bytes": typical["guest_bytes"],
            })
        return results

    # ---- goals --------------------------------------------------------------------------------

    @staticmethod
    def goals(floors, results):
        by_name = {r["name"]: r["figures"] for r in results}
        med = lambda name, key: by_name[name][key]["median"]
        out = []
        floor_p50 = floors["tcp_rtt_us"]["p50"]["median"] + floors["local_fault_rtt_us"]["p50"]["median"]
        ratio = med("idle", "touch_p50_us") / floor_p50
        out.append({"goal": "idle remote fault p50 <= 1.3 x (raw 4 KiB TCP round trip + local "
                            "fault round trip)",
                    "value_us": med("idle", "touch_p50_us"), "floor_us": floor_p50,
                    "ratio": ratio, "limit": GOALS["idle_p50"], "met": ratio <= GOALS["idle_p50"]})
        idle_p99 = max(med("idle", "fault_p99_us"), 1e-9)
        for name in ("load-urgent", "load-shared", "load-urgent-placed"):
            if name not in by_name:
                continue
            ratio = med(name, "fault_p99_us") / idle_p99
            out.append({"goal": f"fault p99 under a saturating stream <= 2 x idle p99 ({name})",
                        "value_us": med(name, "fault_p99_us"), "floor_us": idle_p99,
                        "ratio": ratio, "limit": GOALS["load_p99"],
                        "met": ratio <= GOALS["load_p99"],
                        "informative": name != "load-urgent"})
        raw = floors["tcp_throughput_bytes_per_s"]["median"]
        pipeline = floors.get("receive_place_pipeline_bytes_per_s", {}).get("median", 0)
        best = None
        for r in results:
            if r["scenario"] == "throughput":
                rate = r["figures"]["wire_bytes_per_s"]["median"]
                ratio = rate / raw
                out.append({"goal": f"background throughput >= 0.85 x raw single-stream TCP "
                                    f"({r['name']})",
                            "value_bytes_per_s": rate,
                            "floor_bytes_per_s": raw, "ratio": ratio, "limit": GOALS["throughput"],
                            "met": ratio >= GOALS["throughput"], "informative": True})
                if pipeline and "hugetlb" not in r["name"]:
                    out.append({"goal": f"background throughput >= 0.95 x the pipeline floor "
                                        f"({r['name']})",
                                "value_bytes_per_s": rate, "floor_bytes_per_s": pipeline,
                                "ratio": rate / pipeline, "limit": GOALS["pipeline"],
                                "met": rate / pipeline >= GOALS["pipeline"],
                                "informative": True})
                if r["name"] in ("throughput-1", "throughput-1-placed"):
                    best = max(best or (0, ""), (rate, r["name"]))
        if best:
            rate, name = best
            by_raw, by_pipe = rate / raw, (rate / pipeline if pipeline else 0)
            out.append({"goal": "anonymous background throughput (1 bulk, the faster placement) "
                                ">= 0.85 x raw TCP, or >= 0.95 x the pipeline floor where the "
                                f"machine cannot reach the first ({name})",
                        "value_bytes_per_s": rate, "floor_bytes_per_s": raw,
                        "ratio": by_raw if by_raw >= GOALS["throughput"] else by_pipe,
                        "limit": GOALS["throughput"] if by_raw >= GOALS["throughput"]
                        else GOALS["pipeline"],
                        "met": by_raw >= GOALS["throughput"] or by_pipe >= GOALS["pipeline"]})
        cores = os.cpu_count() or 1
        scaling = sorted((int(r["name"].split("-")[1]), r["figures"]["faults_per_second"]["median"])
                         for r in results if r["scenario"] == "scaling")
        within = [(n, fps) for n, fps in scaling if n <= cores]
        grows = all(b[1] > a[1] for a, b in zip(within, within[1:]))
        out.append({"goal": f"faults per second grow with faulting threads up to the core count "
                            f"({cores})",
                    "faults_per_second": {str(n): fps for n, fps in scaling},
                    "ratio": (within[-1][1] / within[0][1]) if within and within[0][1] else 0,
                    "met": grows and len(within) > 1})
        return out

    # ---- machine ------------------------------------------------------------------------------

    def machine(self):
        model = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
        check = subprocess.run([self.cli, "check", "--json"], capture_output=True, text=True)
        try:
            check = json.loads(check.stdout)
        except json.JSONDecodeError:
            check = {}
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        return {"cpu": model, "cores": os.cpu_count(), "memory_bytes": mem_kib * 1024,
                "kernel": platform.release(), "machine": platform.machine(),
                "userfaultfd_features": check.get("userfaultfd", {}).get("feature_names", []),
                "userfaultfd_grant": check.get("grant", ""),
                "io_uring": check.get("io_uring", {}).get("detail", ""),
                "commit": commit}

    # ---- the whole run -------------------------------------------------------------------------

    def run(self):
        started = datetime.datetime.now(datetime.timezone.utc)
        log(f"bench: {self.args.matrix} matrix, {len(self.cases)} cases x {self.repetitions} "
            f"repetitions, results in {self.out}")
        floors = self.measure_floors()
        results = self.run_matrix()
        goals = self.goals(floors, results)
        document = {
            "command": " ".join(["bench/run.py"] + sys.argv[1:]),
            "matrix": self.args.matrix, "repetitions": self.repetitions,
            "date": started.strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": time.monotonic() - self.started,
            "machine": self.machine(), "floors": floors, "scenarios": results, "goals": goals,
        }
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(document, f, indent=1)
        plots = Plots(self.out).draw(document)
        document["plots"] = plots
        with open(os.path.join(self.out, "results.json"), "w") as f:
            json.dump(document, f, indent=1)
        markdown = report_markdown(document, "bench/plots" if self.args.publish else ".")
        with open(os.path.join(self.out, "report.md"), "w") as f:
            f.write(markdown)
        if self.args.publish:
            publish(self.out, plots, markdown)
        for g in goals:
            mark = "met   " if g["met"] else ("missed" if not g.get("informative") else "  (info)")
            log(f"goal {mark} {g['goal']}: {g['ratio']:.2f}x")
        log(f"bench: done in {document['seconds']:.0f} s; {os.path.join(self.out, 'report.md')}")
        return document


# ---- plots ------------------------------------------------------------------------------------

class Plots:
    def __init__(self, out):
        self.out = out

    def gnuplot(self, name, script):
        paths = []
        for terminal, extension in (("pngcairo size 900,560 font 'sans,10'", "png"),
                                    ("svg size 900,560 dynamic font 'sans,10'", "svg")):
            path = os.path.join(self.out, f"{name}.{extension}")
            text = f"set terminal {terminal}\nset output '{path}'\n{script}"
            with open(os.path.join(self.out, f"{name}.gp"), "w") as f:
                f.write(text)
            result = subprocess.run(["gnuplot", os.path.join(self.out, f"{name}.gp")],
                                    capture_output=True, text=True)
            if result.returncode != 0 or not os.path.getsize(path):
                raise Failure(f"gnuplot {name}.{extension}: {result.stderr.strip()}")
            paths.append(os.path.basename(path))
        return paths

    def data(self, name, rows):
        path = os.path.join(self.out, name)
        with open(path, "w") as f:
            for row in rows:
                f.write(" ".join(f"{v:.6g}" for v in row) + "\n")
        return path

    def draw(self, document):
        plots = {}
        scenarios = document["scenarios"]
        # Fault latency CDF per scenario, from the fault server's histogram (fault read -> placed).
        series = []
        for r in scenarios:
            if r["scenario"] in ("throughput",) or not r["fault_latency_histogram_us"]:
                continue
            total = sum(n for _, n in r["fault_latency_histogram_us"])
            seen, rows = 0, []
            for upper, n in r["fault_latency_histogram_us"]:
                seen += n
                rows.append((upper, seen / total))
            series.append((self.data(f"cdf-{r['name']}.dat", rows), r["name"]))
        plots["fault_latency_cdf"] = self.gnuplot("fault_latency_cdf", cdf_script(
            series, "Fault latency (fault read to page placed), CDF per scenario"))
        # The same as the vCPUs saw it (every touch, wake-ups included) where every touch faults.
        series = [(self.data(f"touch-{r['name']}.dat",
                             [(max(us, 0.01), q) for us, q in r["touch_latency_cdf_us"]]), r["name"])
                  for r in scenarios
                  if r["scenario"] in ("idle", "io", "load") and r["touch_latency_cdf_us"]]
        floors = document["floors"]
        marks = [(floors["tcp_rtt_us"]["p50"]["median"] +
                  floors["local_fault_rtt_us"]["p50"]["median"], "floor p50: TCP RTT + local fault")]
        plots["touch_latency_cdf"] = self.gnuplot("touch_latency_cdf", cdf_script(
            series, "Touch latency as the vCPU sees it, CDF", marks))
        # Throughput over time of the background stream, 100 ms windows.
        series = []
        for r in scenarios:
            if r["scenario"] != "throughput":
                continue
            t = r["timeline"]
            # About 40 windows over the transfer, none shorter than two samples (40 ms).
            window = max(0.04, (t[-1][0] - t[0][0]) / 40) if t else 0.1
            rows, i = [], 0
            for j in range(1, len(t)):
                if t[j][0] - t[i][0] >= window or j == len(t) - 1:
                    dt = t[j][0] - t[i][0]
                    if dt > 0:
                        rows.append((t[j][0], (t[j][2] - t[i][2]) / dt / 1e9))
                    i = j
            series.append((self.data(f"rate-{r['name']}.dat", rows), r["name"]))
        raw = floors["tcp_throughput_bytes_per_s"]["median"] / 1e9
        lines = ", ".join(f"'{p}' using 1:2 with linespoints title '{t}'" for p, t in series)
        plots["throughput_timeline"] = self.gnuplot("throughput_timeline", f"""
set title 'Background stream, no faults: wire throughput over time'
set xlabel 'seconds since the destination started'
set ylabel 'GB/s'
set yrange [0:*]
set grid
set key bottom right
plot {lines}, {raw:.4g} with lines dashtype 2 title 'raw single-stream TCP floor'
""")
        # Latency and faults/s by thread count.
        rows = []
        for r in scenarios:
            if r["scenario"] == "scaling":
                f = r["figures"]
                rows.append((int(r["name"].split("-")[1]), f["touch_p50_us"]["median"],
                             f["touch_p99_us"]["median"], f["faults_per_second"]["median"]))
        path = self.data("scaling.dat", sorted(rows))
        plots["scaling"] = self.gnuplot("scaling", f"""
set title 'Faulting threads (stream held): latency as the vCPUs see it, and faults per second'
set xlabel 'faulting threads'
set ylabel 'touch latency (us)'
set y2label 'faults per second'
set logscale x 2
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set grid
set key top left
plot '{path}' using 1:2 with linespoints title 'p50', \\
     '{path}' using 1:3 with linespoints title 'p99', \\
     '{path}' using 1:4 axes x1y2 with linespoints title 'faults/s (right axis)'
""")
        return plots


# Distinct colours for up to 12 series (gnuplot's default cycle repeats after 8).
PALETTE = ["#9400d3", "#009e73", "#56b4e9", "#e69f00", "#f0e442", "#0072b2", "#e51e10",
           "#000000", "#a0522d", "#808080", "#ff69b4", "#2e8b57"]


def cdf_script(series, title, marks=()):
    lines = [f"'{p}' using 1:2 with lines linewidth 2 linecolor rgb '{PALETTE[i % len(PALETTE)]}'"
             f" title '{t}'" for i, (p, t) in enumerate(series)]
    script = f"""
set title '{title}'
set xlabel 'microseconds (log scale)'
set ylabel 'fraction of faults at or below'
set logscale x
set yrange [0:1]
set grid
set key bottom right
"""
    for i, (x, label) in enumerate(marks):
        script += f"set arrow {i + 1} from {x:.4g}, graph 0 to {x:.4g}, graph 1 nohead dashtype 2\n"
        script += f"set label {i + 1} '{label}' at {x:.4g}, graph 0.95 left offset 0.5,0\n"
    return script + "plot " + ", \\\n     ".join(lines) + "\n"


# ---- the report -------------------------------------------------------------------------------

def fmt_us(s):
    return f"{s['median']:.1f} [{s['min']:.1f}–{s['max']:.1f}]"


def fmt_rate(s):
    return f"{s['median'] / 1e9:.2f} [{s['min'] / 1e9:.2f}–{s['max'] / 1e9:.2f}]"


def report_markdown(doc, plot_dir):
    m, fl = doc["machine"], doc["floors"]
    out = []
    w = out.append
    w(f"Generated by `{doc['command']}` on {doc['date']} (commit {m['commit']}), "
      f"{doc['repetitions']} repetitions of every case, in {doc['seconds']:.0f} s. "
      f"Figures are medians with [min–max] over the repetitions.\n")
    w(f"Machine: {m['cores']} × {m['cpu']}, {m['memory_bytes'] / GIB:.0f} GiB, kernel "
      f"{m['kernel']} ({m['machine']}), userfaultfd via {m['userfaultfd_grant'] or '?'}, "
      f"{m['io_uring'] or 'io_uring: ?'}. Connection: {fl['connection']}.\n")
    w("### Floors (measured first, same run)\n")
    w("| floor | p50 | p99 | throughput |")
    w("|---|---|---|---|")
    w(f"| local userfaultfd fault round trip (anonymous 4 KiB, µs) | "
      f"{fmt_us(fl['local_fault_rtt_us']['p50'])} | {fmt_us(fl['local_fault_rtt_us']['p99'])} | — |")
    w(f"| raw TCP ping-pong, 24 B request → 4 KiB answer (µs) | {fmt_us(fl['tcp_rtt_us']['p50'])} | "
      f"{fmt_us(fl['tcp_rtt_us']['p99'])} | — |")
    w(f"| raw single-stream TCP (GB/s) | — | — | {fmt_rate(fl['tcp_throughput_bytes_per_s'])} |")
    w(f"| memcpy (GB/s) | — | — | {fmt_rate(fl['memcpy_bytes_per_s'])} |")
    w(f"| UFFDIO_COPY of 256 KiB runs into fresh memory (GB/s) | — | — | "
      f"{fmt_rate(fl['placement_bytes_per_s'])} |")
    w(f"| derived: one thread receiving then placing, 1 / (1/TCP + 1/COPY) (GB/s) | — | — | "
      f"{fl['serial_receive_and_place_bytes_per_s'] / 1e9:.2f} |")
    if "receive_place_pipeline_bytes_per_s" in fl:
        w(f"| measured: one thread receiving then placing 256 KiB runs (GB/s) | — | — | "
          f"{fmt_rate(fl['receive_place_serial_bytes_per_s'])} |")
        w(f"| measured: two bare threads, receive into a ring / UFFDIO_COPY from it: the "
          f"pipeline floor (GB/s) | — | — | {fmt_rate(fl['receive_place_pipeline_bytes_per_s'])} |")
        w(f"| measured: the same with UFFDIO_MOVE of received pages, refills counted (GB/s) | — "
          f"| — | {fmt_rate(fl['receive_place_move_bytes_per_s'])} |")
    if "receive_place_shmem_copy_bytes_per_s" in fl:
        w(f"| measured, shmem: one thread, receive into a ring, UFFDIO_COPY (GB/s) | — | — | "
          f"{fmt_rate(fl['receive_place_shmem_copy_bytes_per_s'])} |")
        w(f"| measured, shmem: receive into an unregistered second mapping (the page cache), "
          f"UFFDIO_CONTINUE (GB/s) | — | — | "
          f"{fmt_rate(fl['receive_place_shmem_continue_bytes_per_s'])} |")
        w(f"| measured, shmem: splice socket → pipe → memfd (one kernel copy), UFFDIO_CONTINUE "
          f"(GB/s) | — | — | {fmt_rate(fl['receive_place_shmem_splice_bytes_per_s'])} |")
        w(f"| first touch of {fl['first_touch_size']} of fresh memory, as much again held "
          f"(GB/s) | — | — | {fmt_rate(fl['first_touch_bytes_per_s'])} |")
    w("")
    floor_p50 = fl["tcp_rtt_us"]["p50"]["median"] + fl["local_fault_rtt_us"]["p50"]["median"]
    by = {}
    for r in doc["scenarios"]:
        by.setdefault(r["scenario"], []).append(r)

    def latency_table(title, rows, note):
        w(f"### {title}\n")
        if note:
            w(note + "\n")
        w("| case | faults | fault p50 | p90 | p99 | p99.9 | max | vCPU touch p50 | touch p99 | "
          "touch p50 / floor |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            f = r["figures"]
            w(f"| {r['label']} | {f['faults']['median']:.0f} | {fmt_us(f['fault_p50_us'])} | "
              f"{f['fault_p90_us']['median']:.1f} | {fmt_us(f['fault_p99_us'])} | "
              f"{f['fault_p999_us']['median']:.1f} | {f['fault_max_us']['median']:.0f} | "
              f"{fmt_us(f['touch_p50_us'])} | {f['touch_p99_us']['median']:.1f} | "
              f"{f['touch_p50_us']['median'] / floor_p50:.2f}x |")
        w("")

    latency_table("Idle faults (background stream held)", by.get("idle", []),
                  f"Floor for the ratio: raw TCP round trip p50 + local fault round trip p50 = "
                  f"{floor_p50:.1f} µs. Latencies in µs; *fault* is the fault server's view "
                  f"(fault read → page placed), *touch* the vCPU's (the whole round trip).")
    latency_table("Faults under a saturating background stream", by.get("load", []), "")
    latency_table("Kernel-mode faults (write(2) from guest memory, stream held)", by.get("io", []), "")
    w("### Background throughput (no faults)\n")
    w("| case | total s | wire GB/s | / raw TCP | / receive-then-place bound | / pipeline floor "
      "| / first touch | guest GB/s |")
    w("|---|---|---|---|---|---|---|---|")
    raw = fl["tcp_throughput_bytes_per_s"]["median"]
    serial = fl["serial_receive_and_place_bytes_per_s"]
    pipe = fl.get("receive_place_pipeline_bytes_per_s", {}).get("median", 0)
    touch = fl.get("first_touch_bytes_per_s", {}).get("median", 0)
    ratio = lambda a, b: f"{a / b:.2f}x" if b else "—"
    for r in by.get("throughput", []):
        f = r["figures"]
        rate = f["wire_bytes_per_s"]["median"]
        w(f"| {r['label']} | {fmt_us(f['total_seconds'])} | {fmt_rate(f['wire_bytes_per_s'])} | "
          f"{rate / raw:.2f}x | {rate / serial:.2f}x | {ratio(rate, pipe)} | "
          f"{ratio(rate, touch)} | {fmt_rate(f['guest_bytes_per_s'])} |")
    w("")
    w("### Scaling with faulting threads (stream held)\n")
    w("| threads | faults | faults/s | / 1 thread | touch p50 | touch p99 | fault p50 |")
    w("|---|---|---|---|---|---|---|")
    scaling = sorted(by.get("scaling", []), key=lambda r: int(r["name"].split("-")[1]))
    base = scaling[0]["figures"]["faults_per_second"]["median"] if scaling else 1
    for r in scaling:
        f = r["figures"]
        w(f"| {r['name'].split('-')[1]} | {f['faults']['median']:.0f} | "
          f"{f['faults_per_second']['median']:.0f} | "
          f"{f['faults_per_second']['median'] / base:.2f}x | {fmt_us(f['touch_p50_us'])} | "
          f"{f['touch_p99_us']['median']:.1f} | {f['fault_p50_us']['median']:.1f} |")
    w("")
    w("### Sparse guest\n")
    w("| case | total s | destination RSS | RSS beyond guest pages | faults | fault p50 |")
    w("|---|---|---|---|---|---|")
    for r in by.get("sparse", []):
        f = r["figures"]
        w(f"| {r['label']} | {fmt_us(f['total_seconds'])} | "
          f"{f['rss_bytes']['median'] / MIB:.1f} MiB | {f['rss_overhead_bytes']['median'] / MIB:.1f} MiB"
          f" | {f['faults']['median']:.0f} | {f['fault_p50_us']['median']:.1f} µs |")
    w("")
    w("### Goals\n")
    w("| goal | ratio | limit | |")
    w("|---|---|---|---|")
    for g in doc["goals"]:
        state = "met" if g["met"] else ("for comparison" if g.get("informative") else "**missed**")
        limit = g.get("limit", "")
        w(f"| {g['goal']} | {g['ratio']:.2f}x | {limit if limit != '' else '—'} | {state} |")
    w("")
    w("### Plots\n")
    for name, title in (("fault_latency_cdf", "Fault latency CDF per scenario"),
                        ("touch_latency_cdf", "Touch latency CDF as the vCPUs see it"),
                        ("throughput_timeline", "Throughput over time"),
                        ("scaling", "Latency and faults/s by thread count")):
        if name in doc.get("plots", {}):
            w(f"![{title}]({plot_dir}/{name}.svg)\n")
    w("### Commands\n")
    w("Each case is `uffd-migrate demo` with these arguments (plus `--json FILE`):\n")
    w("```")
    for r in doc["scenarios"]:
        w(r["command"].split(" demo ", 1)[1].split(" --json")[0] + f"    # {r['name']}")
    w("```\n")
    return "\n".join(out)


def publish(out, plots, markdown):
    destination = os.path.join(ROOT, "bench", "plots")
    os.makedirs(destination, exist_ok=True)
    for files in plots.values():
        for name in files:
            shutil.copy(os.path.join(out, name), os.path.join(destination, name))
    path = os.path.join(ROOT, "BENCHMARKS.md")
    with open(path) as f:
        text = f.read()
    section = f"{MARK_BEGIN}\n{markdown}\n{MARK_END}"
    if MARK_BEGIN in text and MARK_END in text:
        text = text[:text.index(MARK_BEGIN)] + section + text[text.index(MARK_END) + len(MARK_END):]
    else:
        text += "\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    log(f"bench: plots copied to {destination}; BENCHMARKS.md section replaced")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="matrix", action="store_const", const="quick",
                      help="a smaller matrix, under two minutes on 2 cores")
    size.add_argument("--smoke", dest="matrix", action="store_const", const="smoke",
                      help="every scenario, tiny and once: checks the runner (the test suite's)")
    parser.set_defaults(matrix="full")
    parser.add_argument("--out", help="results directory (default bench-results/DATE-TIME)")
    parser.add_argument("--build", default=os.path.join(ROOT, "build", "release"),
                        help="the release build directory")
    parser.add_argument("--netns", action="store_true",
                        help="floors and migrations across a veth link between two namespaces")
    parser.add_argument("--repetitions", type=int, default=0, help="override the matrix's count")
    parser.add_argument("--placement-threads", type=int, metavar="N",
                        help="every migration with this many placement threads (default: "
                             "the destination's own choice)")
    parser.add_argument("--publish", action="store_true",
                        help="copy the plots to bench/plots/ and update BENCHMARKS.md")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead of the matrix: migrations back to back for this long, each "
                             "broken at random (ss -K, the source stopped), every page verified")
    parser.add_argument("--kill-every", type=float, default=3.0, metavar="SECONDS",
                        help="with --soak: the mean time between breaks")
    parser.add_argument("--hybrid", action="store_true",
                        help="instead of the matrix: pure postcopy against a live source's "
                             "precopy rounds then postcopy (bench/hybrid.py), same run")
    parser.add_argument("--link", metavar="RATE",
                        help="faults, marking and compression over a rate-limited link between "
                             "two namespaces (1gbit, 10gbit) or loopback (bench/link.py)")
    parser.add_argument("--firecracker", action="store_true",
                        help="instead of the matrix: firecracker-handler against Firecracker's "
                             "file backend, local and remote (bench/firecracker.py)")
    args = parser.parse_args()
    if args.firecracker:
        fc = [sys.executable, os.path.join(ROOT, "bench", "firecracker.py"), "--build", args.build]
        fc += ["--size", "256M", "--repetitions", "1"] if args.matrix in ("quick", "smoke") else []
        fc += ["--out", args.out] if args.out else []
        return subprocess.run(fc).returncode
    if args.link:
        link = [sys.executable, os.path.join(ROOT, "bench", "link.py"), "--build", args.build,
                "--link", args.link]
        link += ["--out", args.out] if args.out else []
        link += ["--repetitions", str(args.repetitions)] if args.repetitions else []
        return subprocess.run(link).returncode
    if args.hybrid:
        hybrid = [sys.executable, os.path.join(ROOT, "bench", "hybrid.py"), "--build", args.build]
        hybrid += ["--quick"] if args.matrix == "quick" else []
        hybrid += ["--out", args.out] if args.out else []
        return subprocess.run(hybrid).returncode
    if args.repetitions < 0:
        parser.error("--repetitions must be positive")
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join(ROOT, "bench-results", f"{args.matrix}-{stamp}")
    if args.soak is not None:
        cli = os.path.join(os.path.abspath(args.build), "cli", "uffd-migrate")
        chaos = os.path.join(ROOT, "tests", "chaos", "chaos.py")
        return subprocess.run([sys.executable, chaos, "soak", "--cli", cli, "--seconds",
                               str(args.soak), "--kill-every", str(args.kill_every)]).returncode
    if shutil.which("gnuplot") is None:
        print("bench/run.py: gnuplot is missing (apt-get install gnuplot-nox)", file=sys.stderr)
        return 2
    runner = None
    try:
        runner = Runner(args)
        runner.run()
    except Failure as e:
        print(f"bench/run.py: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/run.py: interrupted; partial results stay in " + args.out, file=sys.stderr)
        return 130
    finally:
        if runner is not None:
            runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
