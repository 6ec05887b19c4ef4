#!/usr/bin/env python3
"""layering_check.py — Fails when a part includes a part that is not below it (DESIGN.md)."""
import pathlib
import re
import sys

# Each part and the parts it may include (besides itself and the public include/uffdm).
ALLOWED = {
    "uffd": set(),
    "transport": set(),
    "migration": {"uffd", "transport"},
    # api/ is the public API over migration/; host checks read uffd/ directly.
    "api": {"migration", "uffd", "transport"},
    "cli": set(),  # the public API only
    "include": set(),
}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]([a-z_]+)/')
PARTS = set(ALLOWED) | {"bench", "tests", "examples", "fuzz"}


def main(root: pathlib.Path) -> int:
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
                target = match.group(1)
                if target in PARTS and target not in allowed and target != part:
                    problems.append(f"{path.relative_to(root)}:{number}: {part}/ may not include {target}/")
    for p in problems:
        print(p)
    print(f"layering: {len(problems)} violation(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")))
