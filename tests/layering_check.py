#!/usr/bin/env python3
"""layering_check.py — Fails when a part includes a part, or a public header, not below it.

The build enforces the same through per-part include roots (layers/PART, meson.build); this
check says why in words, and fails when those roots grant more than the rules below.
"""
import os
import pathlib
import re
import sys

# Each part and the parts it may include (besides itself).
ALLOWED = {
    "uffd": set(),
    "transport": set(),
    "migration": {"uffd", "transport"},
    # api/ is the public API over migration/; host checks read uffd/ directly.
    "api": {"migration", "uffd", "transport"},
    "cli": set(),  # the public API only
    "include": set(),
}
# The public headers (include/uffdm/) each part may include. Below api/ only the vocabulary
# (errors, memory kinds, report value types): never the API's own header, which sits above them.
PUBLIC = {
    "uffd": {"error.hpp", "memory_kind.hpp"},
    "transport": {"error.hpp"},
    "migration": {"error.hpp", "memory_kind.hpp", "report.hpp"},
    "api": None,  # all
    "cli": None,
    "include": None,
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([a-z_]+)/([^>"]+)[>"]')
PARTS = set(ALLOWED) | {"bench", "tests", "examples", "fuzz"}


def check_sources(root: pathlib.Path) -> list[str]:
    problems = []
    for part, allowed in ALLOWED.items():
        folder = root / part
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix not in {".cpp", ".hpp", ".h", ".c"}:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = INCLUDE.match(line)
                if not match:
                    continue
                target, header = match.group(1), match.group(2)
                where = f"{path.relative_to(root)}:{number}"
                if target in PARTS and target not in allowed and target != part:
                    problems.append(f"{where}: {part}/ may not include {target}/")
                public = PUBLIC.get(part)
                if target == "uffdm" and public is not None and header not in public:
                    problems.append(f"{where}: {part}/ may include only <uffdm/{'>, <uffdm/'.join(sorted(public))}>, not <uffdm/{header}>")
    return problems


def check_roots(root: pathlib.Path) -> list[str]:
    """Every layers/PART grants exactly that part, the parts below it and its public headers."""
    problems = []
    for part, allowed in ALLOWED.items():
        if part == "include":
            continue
        layer = root / "layers" / part
        if not layer.is_dir():
            problems.append(f"layers/{part}: missing (meson.build compiles {part}/ against it)")
            continue
        want = {part} | allowed | {"uffdm"}
        have = {entry.name for entry in layer.iterdir()}
        for extra in sorted(have - want):
            problems.append(f"layers/{part}/{extra}: grants {part}/ more than its rules allow")
        for name in sorted(want - have):
            problems.append(f"layers/{part}/{name}: missing")
        for name in sorted(have & ({part} | allowed)):
            target = os.path.realpath(layer / name)
            if target != str((root / name).resolve()):
                problems.append(f"layers/{part}/{name}: points at {target}, not {name}/")
        uffdm = layer / "uffdm"
        public = PUBLIC[part]
        if uffdm.is_symlink():
            if public is not None:
                problems.append(f"layers/{part}/uffdm: the whole public folder; {part}/ may use only {sorted(public)}")
        elif uffdm.is_dir():
            headers = {entry.name for entry in uffdm.iterdir()}
            if public is None or headers - public:
                problems.append(f"layers/{part}/uffdm: grants {sorted(headers - (public or set()))} beyond its rules")
    return problems


def main(root: pathlib.Path) -> int:
    problems = check_sources(root) + check_roots(root)
    for p in problems:
        print(p)
    print(f"layering: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()))
