#!/usr/bin/env python3
"""test_summary.py — Adds up the test cases of every build's JUnit log into one closing line."""
import argparse
import pathlib
import sys
import xml.etree.ElementTree as ET


def count(build: pathlib.Path):
    log = build / "meson-logs" / "testlog.junit.xml"
    if not log.exists():
        return None
    passed = failed = skipped = 0
    for case in ET.parse(log).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None or case.get("result") == "skipped":
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("builds", nargs="+")
    parser.add_argument("--extra-failure", action="append", default=[])
    parser.add_argument("--extra-pass", action="append", default=[])
    args = parser.parse_args()
    total = [0, 0, 0]
    for build in args.builds:
        result = count(pathlib.Path(build))
        if result is None:
            print(f"{build}: no test log (build failed?)")
            total[1] += 1
            continue
        print(f"{build}: {result[0]} passed, {result[1]} failed, {result[2]} skipped")
        total = [t + r for t, r in zip(total, result)]
    for name in args.extra_pass:
        print(f"{name}: passed")
        total[0] += 1
    for name in args.extra_failure:
        print(f"{name}: failed")
        total[1] += 1
    print(f"{total[0]} passed, {total[1]} failed, {total[2]} skipped")
    return 1 if total[1] else 0


if __name__ == "__main__":
    sys.exit(main())
