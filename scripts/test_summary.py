#!/usr/bin/env python3
"""test_summary.py — Adds up the test cases of every build's JUnit log into one closing line."""
import argparse
import pathlib
import re
import sys
import xml.etree.ElementTree as ET

# Meson copies each test's output into the JUnit log verbatim, so a test that prints a control
# character (a sanitizer report quoting raw bytes, a hostile frame echoed back) leaves a log that
# no XML parser accepts. Those characters are not allowed in XML 1.0; drop them before parsing.
# Raw bytes, or character references to them (&#27; &#x1b;): 0-8, 11, 12, 14-31.
_NOT_XML = re.compile(
    rb"[\x00-\x08\x0b\x0c\x0e-\x1f]"
    rb"|&#(?:x0*[0-8bcefBCEF]|x0*1[0-9a-fA-F]|0*(?:[0-8]|1[124-9]|2[0-9]|3[01]));"
)


def count(build: pathlib.Path):
    log = build / "meson-logs" / "testlog.junit.xml"
    if not log.exists():
        return None
    passed = failed = skipped = 0
    try:
        root = ET.fromstring(_NOT_XML.sub(b"", log.read_bytes()))
    except ET.ParseError as error:
        print(f"{build}: the test log cannot be read ({error}); counted as one failure")
        return 0, 1, 0
    for case in root.iter("testcase"):
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
