#!/usr/bin/env python3
"""chaos.py — Breaks running migrations on purpose and checks that nothing is lost.

    chaos.py kill-connections --cli PATH [--kills N] [--size 2G]
    chaos.py restart-source   --cli PATH [--restarts N]
    chaos.py partition        --cli PATH [--partitions N]
    chaos.py stop-peer        --cli PATH (--which source|destination)
    chaos.py slow-source      --cli PATH
    chaos.py soak             --cli PATH [--seconds 60] [--kill-every 0.3]
    chaos.py precopy-kills    --cli PATH [--kills N] [--size 1G]

Every case runs real processes over real sockets (loopback, or a veth link between two network
namespaces for partition) while "vCPU" threads fault on random pages, and passes only when the
migration completed, every page checks out (the demo compares every page with the guest's
known content; receive --verify checks each page's hash and the saved memory is compared with
the image), and the breaks really happened (the destination's report counts its pauses). Each
loop is bounded in count and time; processes and namespaces are cleaned up on every exit.
"""

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

FAST = ["--idle-timeout", "500ms", "--handshake-timeout", "1s", "--stall-timeout", "1s"]


class Failed(Exception):
    pass


def log(message):
    print(f"chaos: {message}", flush=True)


# Added to every demo's arguments (--placement-threads, --compress).
DEMO_EXTRA = []


class Demo:
    """uffd-migrate demo in the background; its source endpoint is read from its first line."""

    def __init__(self, cli, args, json_path):
        self.json_path = json_path
        self.output = []
        args = args + DEMO_EXTRA
        self.process = subprocess.Popen([cli, "demo"] + args + ["--json", json_path],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True)
        self.port = None
        deadline = time.monotonic() + 60
        while self.port is None and time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = re.search(r"source at tcp:[0-9.]+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
        if self.port is None:
            self.kill()
            raise Failed("the demo did not start: " + "".join(self.output))
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)

    def running(self):
        return self.process.poll() is None

    def source_pid(self):
        children = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                                  text=True).stdout.split()
        return int(children[0]) if children else None

    def wait(self, timeout):
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise Failed("the demo did not finish within %d s:\n%s" % (timeout, self.text()))
        self.reader.join(timeout=5)
        return status

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def text(self):
        return "".join(self.output)

    def report(self):
        with open(self.json_path) as f:
            return json.load(f)


def check_demo(demo, status, min_pauses):
    if status != 0:
        try:
            source = json.dumps(demo.report().get("source"))
        except (OSError, ValueError):
            source = "(no report)"
        raise Failed(f"the demo exited {status}:\n{demo.text()}\nthe source's report: {source}")
    report = demo.report()
    if not report["ok"] or not report["verified"] or report["wrong_pages"] != 0:
        raise Failed(f"not verified: ok={report['ok']} verified={report['verified']} "
                     f"wrong={report['wrong_pages']}: {report['error']}")
    if report["pages_checked"] != report["pages"]:
        raise Failed(f"{report['pages_checked']} of {report['pages']} pages checked")
    pauses = report["pauses"]
    if len(pauses) < min_pauses:
        raise Failed(f"{len(pauses)} pauses, wanted at least {min_pauses}:\n{demo.text()}")
    if not all(p["resumed"] for p in pauses):
        raise Failed(f"a pause did not resume: {pauses}")
    return report


def signal_process(pid, number):
    """False when the process is gone (the migration it served has ended)."""
    try:
        os.kill(pid, number)
        return True
    except ProcessLookupError:
        return False


def stop_for(pid, seconds):
    """SIGSTOP, then SIGCONT after `seconds`; False when the process was already gone."""
    if not signal_process(pid, signal.SIGSTOP):
        return False
    time.sleep(seconds)
    signal_process(pid, signal.SIGCONT)
    return True


def kill_connections(port):
    """ss -K on every TCP socket to or from the source's port; how many were closed."""
    if not port:
        raise Failed("no port to aim ss -K at")  # never an unfiltered ss -K
    result = subprocess.run(["ss", "-K", "-t", "-n", f"( sport = :{port} or dport = :{port} )"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise Failed("ss -K failed (needs root and a kernel with SOCK_DESTROY): " + result.stderr)
    return max(0, len(result.stdout.strip().splitlines()) - 1)


def case_kill_connections(args):
    """ss -K on the source's port every 20-80 ms. Migrations run one after another (each fully
    verified) until --kills kills have landed, so the count does not depend on how fast this
    machine migrates; bounded at five migrations and five minutes."""
    rng = random.Random(args.seed)
    kills = migrations = pauses = pages = 0
    deadline = time.monotonic() + 300
    while kills < args.kills and migrations < 5 and time.monotonic() < deadline:
        with tempfile.TemporaryDirectory() as scratch:
            demo = Demo(args.cli, ["--size", args.size, "--zero-percent", "10", "--touches",
                                   "100000", "--verify"] + FAST, os.path.join(scratch, "demo.json"))
            landed = 0
            try:
                while demo.running() and time.monotonic() < deadline:
                    time.sleep(rng.uniform(0.02, 0.08))
                    if demo.running() and kill_connections(demo.port) > 0:
                        landed += 1
                status = demo.wait(120)
            finally:
                demo.kill()
            report = check_demo(demo, status, min(args.kills, landed))
        migrations += 1
        kills += landed
        pauses += len(report["pauses"])
        pages += report["pages"]
        log(f"kill-connections: migration {migrations}: {landed} kills, "
            f"{len(report['pauses'])} pauses, {report['pages']} pages verified, "
            f"{report['faults']} faults")
    if kills < args.kills:
        raise Failed(f"only {kills} kills landed in {migrations} migrations (wanted "
                     f"{args.kills})")
    log(f"kill-connections: {kills} kills with ss -K over {migrations} migrations, {pauses} "
        f"pauses, {pages} pages verified")


def case_partition(args):
    with tempfile.TemporaryDirectory() as scratch:
        demo = Demo(args.cli, ["--size", "2G", "--zero-percent", "0", "--netns", "--touches",
                               "100000"] + FAST, os.path.join(scratch, "demo.json"))
        namespace, veth = f"uffdm-demo-a-{demo.process.pid}", f"ufa{demo.process.pid}"
        partitions = 0
        try:
            for _ in range(args.partitions):
                if not demo.running():
                    break
                time.sleep(0.3)
                down = subprocess.run(["ip", "-n", namespace, "link", "set", veth, "down"],
                                      capture_output=True, text=True)
                if down.returncode != 0:
                    if not demo.running():
                        break
                    raise Failed("cannot take the link down: " + down.stderr)
                partitions += 1
                time.sleep(1.5)  # three idle timeouts: both sides notice
                subprocess.run(["ip", "-n", namespace, "link", "set", veth, "up"],
                               capture_output=True)
            status = demo.wait(180)
        finally:
            demo.kill()
        report = check_demo(demo, status, 1)
        log(f"partition: {partitions} partitions of 1.5 s, {len(report['pauses'])} pauses, "
            f"{report['pages']} pages verified")


def case_stop_peer(args):
    with tempfile.TemporaryDirectory() as scratch:
        demo = Demo(args.cli, ["--size", "2G", "--zero-percent", "0", "--touches", "100000"]
                    + FAST, os.path.join(scratch, "demo.json"))
        try:
            time.sleep(0.3)
            pid = demo.source_pid() if args.which == "source" else demo.process.pid
            if pid is None:
                raise Failed("no source process to stop")
            # A stopped peer reads nothing and answers nothing: full socket buffers on one side,
            # silence on the other.
            if not stop_for(pid, 2.0):
                raise Failed("the peer was gone before it could be stopped")
            status = demo.wait(180)
        finally:
            demo.kill()
        report = check_demo(demo, status, 1)
        log(f"stop-peer ({args.which}): stopped 2 s, {len(report['pauses'])} pauses, "
            f"{report['pages']} pages verified")


def case_slow_source(args):
    """A source that answers slowly (stopped 50 ms in every 150) within the timeouts: no pause,
    no failure, every page. Migrations run until the source has been slowed 5 times, so a
    fast machine cannot pass by finishing first; bounded at five migrations."""
    cycles = migrations = 0
    worst_p99 = 0.0
    while cycles < 5 and migrations < 5:
        with tempfile.TemporaryDirectory() as scratch:
            demo = Demo(args.cli, ["--size", "1G", "--zero-percent", "0", "--touches", "3000"],
                        os.path.join(scratch, "demo.json"))
            try:
                pid = demo.source_pid()
                deadline = time.monotonic() + 60
                while pid and demo.running() and time.monotonic() < deadline:
                    if not stop_for(pid, 0.05):
                        break
                    time.sleep(0.1)
                    cycles += 1
                status = demo.wait(120)
            finally:
                demo.kill()
            report = check_demo(demo, status, 0)
        migrations += 1
        if report["pauses"]:
            raise Failed(f"a slow source caused pauses: {report['pauses']}")
        worst_p99 = max(worst_p99, report["fault_latency_us"]["p99"])
    if cycles < 5:
        raise Failed(f"the source was slowed only {cycles} times in {migrations} migrations: "
                     "nothing was tested")
    log(f"slow-source: {cycles} stop/continue cycles over {migrations} migrations, no pause, "
        f"every page verified, worst fault p99 {worst_p99:.0f} us")


def case_precopy_kills(args):
    """A live source (demo --precopy: writer threads stamp the source's guest during precopy):
    ss -K on the source's port every 20-80 ms, and at once each time the source reports a
    round's end (so kills also land while it decides, pauses its guest and switches over).
    The demo then checks every page bit for bit against the source's pages as its writers left
    them. Bounded at three migrations and five minutes."""
    rng = random.Random(args.seed)
    kills = migrations = 0
    deadline = time.monotonic() + 300
    while kills < args.kills and migrations < 3 and time.monotonic() < deadline:
        with tempfile.TemporaryDirectory() as scratch:
            demo = Demo(args.cli, ["--size", args.size, "--precopy", "--source-writers", "2",
                                   "--write-rate", "20000", "--hot-set", "5", "--max-rounds", "6",
                                   "--touches", "20000", "--verify"] + FAST,
                        os.path.join(scratch, "demo.json"))
            landed = at_round_end = early = 0
            seen_rounds = 0
            try:
                while demo.running() and time.monotonic() < deadline:
                    if kills + landed >= args.kills:
                        time.sleep(0.05)  # enough: let it finish (a sanitizer is slow to mend)
                        continue
                    rounds = sum(1 for line in list(demo.output) if line.startswith("round "))
                    if rounds > seen_rounds:
                        seen_rounds = rounds
                        if kill_connections(demo.port) > 0:
                            landed += 1
                            at_round_end += 1
                        continue
                    time.sleep(rng.uniform(0.02, 0.08))
                    if not demo.running():
                        break
                    if seen_rounds == 0:
                        # Before round 0 has ended the first session may still be being made:
                        # a cut there is retried before the migration runs, so it is no pause
                        # and cannot count as one; a few are made (the start must survive
                        # them), not counted, and not so many that no session could form.
                        if early < 2 and kill_connections(demo.port) > 0:
                            early += 1
                    elif kill_connections(demo.port) > 0:
                        landed += 1
                status = demo.wait(120)
            finally:
                demo.kill()
            report = check_demo(demo, status, 1 if landed > 0 else 0)
        migrations += 1
        kills += landed
        live = report.get("live", {})
        source = report.get("source", {}).get("live", {})
        log(f"precopy-kills: migration {migrations}: {landed} kills ({at_round_end} at a "
            f"round's end, {early} more before round 0 ended), {len(report['pauses'])} pauses, "
            f"{live.get('precopy_rounds')} rounds, switchover {source.get('switchover_reason')}, "
            f"{live.get('pages_discarded_at_switchover')} pages discarded, {report['pages']} "
            f"pages verified bit for bit")
        if not report.get("live"):
            raise Failed("the demo's report has no live source: " + demo.text())
    if kills < args.kills:
        raise Failed(f"only {kills} kills landed in {migrations} migrations (wanted "
                     f"{args.kills})")


def make_image(path, size_mib):
    """Random data in the first half, a hole in the second (the source never reads holes)."""
    with open(path, "wb") as f:
        remaining = size_mib // 2 << 20
        while remaining:
            chunk = min(remaining, 16 << 20)
            f.write(os.urandom(chunk))
            remaining -= chunk
        f.truncate(size_mib << 20)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def case_restart_source(args):
    """The source SIGKILLed and restarted on its image while a receive --verify --save runs.
    Migrations of the same image run until --restarts restarts have landed (bounded at five),
    so a fast machine cannot pass by finishing first."""
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        image = os.path.join(scratch, "image")
        make_image(image, args.image_mib)
        restarts = migrations = 0
        while restarts < args.restarts and migrations < 5:
            migrations += 1
            landed = restart_source_once(args, rng, scratch, image, migrations,
                                         args.restarts - restarts)
            restarts += landed
        if restarts < args.restarts:
            raise Failed(f"only {restarts} restarts landed in {migrations} migrations")
        log(f"restart-source: {restarts} SIGKILLs and restarts over {migrations} migrations, "
            "saved memory identical to the image each time")


def restart_source_once(args, rng, scratch, image, number, wanted):
    """One migration of the image, its source killed and restarted up to `wanted` times; checks
    it and returns how many restarts landed."""
    saved = os.path.join(scratch, f"saved-{number}")
    json_path = os.path.join(scratch, f"receive-{number}.json")
    port = free_port()
    serve = [args.cli, "serve", "--listen", f"tcp:127.0.0.1:{port}", "--image", image] + FAST

    def start_source():
        source = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, text=True)
        line = source.stdout.readline()
        if not line.startswith("listening on"):
            source.kill()
            raise Failed("the source did not start: " + line)
        threading.Thread(target=source.stdout.read, daemon=True).start()
        return source

    source = start_source()
    receive = subprocess.Popen(
        [args.cli, "receive", "--connect", f"tcp:127.0.0.1:{port}", "--verify", "--save", saved,
         "--json", json_path, "--bulk-channels", "1"] + FAST,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    restarts = 0
    try:
        deadline = time.monotonic() + 120
        while receive.poll() is None and restarts < wanted and time.monotonic() < deadline:
            # Short runs between kills: several restarts land long before the end.
            time.sleep(rng.uniform(0.03, 0.12))
            if receive.poll() is not None:
                break
            source.kill()  # SIGKILL: no goodbye, no ERROR
            source.wait()
            restarts += 1
            time.sleep(rng.uniform(0.02, 0.08))
            source = start_source()
        output, _ = receive.communicate(timeout=180)
    finally:
        for p in (source, receive):
            if p.poll() is None:
                p.kill()
                p.wait()
    if receive.returncode != 0:
        raise Failed(f"receive exited {receive.returncode}:\n{output}")
    with open(json_path) as f:
        report = json.load(f)
    if not report["ok"] or report["hashes_verified"] == 0:
        raise Failed(f"not verified: {report}")
    if subprocess.run(["cmp", "-s", image, saved]).returncode != 0:
        raise Failed("the saved memory differs from the image")
    os.unlink(saved)
    if restarts > 0 and len(report["pauses"]) < 1:
        raise Failed(f"no pause recorded after {restarts} restarts:\n{output}")
    log(f"restart-source: migration {number}: {restarts} SIGKILLs and restarts, "
        f"{len(report['pauses'])} pauses, {report['pages']} pages, saved memory identical")
    return restarts


def case_soak(args):
    """Migrations back to back for --seconds, each broken at random: ss -K, the source stopped
    for a moment. Every one must verify."""
    rng = random.Random(args.seed)
    end = time.monotonic() + args.seconds
    migrations = kills = stops = pauses = 0
    while time.monotonic() < end:
        with tempfile.TemporaryDirectory() as scratch:
            size = rng.choice(["512M", "1G"])
            demo = Demo(args.cli, ["--size", size, "--zero-percent", str(rng.choice([0, 30, 60])),
                                   "--touches", "50000", "--workload",
                                   rng.choice(["random", "zipf", "io"])] + FAST,
                        os.path.join(scratch, "demo.json"))
            try:
                while demo.running():
                    time.sleep(rng.uniform(0.5, 1.5) * args.kill_every)
                    if not demo.running():
                        break
                    if rng.random() < 0.8:
                        kills += 1 if kill_connections(demo.port) > 0 else 0
                    else:
                        pid = demo.source_pid()
                        if pid and stop_for(pid, 0.8):
                            stops += 1
                status = demo.wait(180)
            finally:
                demo.kill()
            report = check_demo(demo, status, 0)
            migrations += 1
            pauses += len(report["pauses"])
    if migrations == 0 or pauses == 0:
        raise Failed(f"{migrations} migrations, {pauses} pauses: nothing was tested")
    log(f"soak: {migrations} migrations in {args.seconds:.0f} s, {kills} ss -K kills, {stops} "
        f"source stops, {pauses} pauses, every page of every migration verified")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=["kill-connections", "restart-source", "partition",
                                         "stop-peer", "slow-source", "soak", "precopy-kills"])
    parser.add_argument("--cli", required=True)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--size", default="2G")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--image-mib", type=int, default=1024)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--which", choices=["source", "destination"], default="source")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kill-every", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--placement-threads", type=int,
                        help="every demo's destination places the stream with this many threads")
    parser.add_argument("--compress",
                        help="every demo's source compresses its stream so (a host-files guest, "
                             "runs compressed in batches by the source's compression threads)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("chaos: needs root (ss -K, network namespaces, signals to the source)")
        return 77  # meson: skipped
    if args.placement_threads is not None:
        DEMO_EXTRA.extend(["--placement-threads", str(args.placement_threads)])
    if args.compress is not None:
        DEMO_EXTRA.extend(["--compress", args.compress, "--content", "host-files",
                           "--compress-threads", "2"])
    log(f"{args.case} (seed {args.seed})"
        + (f", {args.placement_threads} placement threads" if args.placement_threads else "")
        + (f", stream compressed {args.compress}" if args.compress else ""))
    try:
        {"kill-connections": case_kill_connections, "restart-source": case_restart_source,
         "partition": case_partition, "stop-peer": case_stop_peer,
         "slow-source": case_slow_source, "soak": case_soak,
         "precopy-kills": case_precopy_kills}[args.case](args)
    except Failed as e:
        print(f"chaos: FAILED {args.case} (seed {args.seed}): {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
