"""Compare two callgrind dumps of `bench/callgrind.py` per request: by group and by function.

    python bench/callgrind_diff.py BEFORE.cg AFTER.cg [--requests 1500] [--top 30]

Build both sides with symbols (`maturin build --profile profiling`), measure each with
`bench/callgrind.py --out DIR` (the same requests), then compare the dumps of one endpoint.
Groups: the allocator, memcpy/memset, tokio, hyper, cello-server, the `_cello` bridge, pyo3,
CPython and the rest, by the function's file or object. Functions are keyed without the
source tree's path, so two checkouts compare; what LTO inlined differently shows up as a
function that moved rather than as a cost.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import defaultdict

LINE = re.compile(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)")
# First match wins: a cello-server function that inlined hyper code counts as cello-server.
GROUPS = [
    ("allocator", re.compile(r"\bmi_|_mi_|malloc|\bfree\b|_int_free|realloc|calloc")),
    ("memcpy/memset", re.compile(r"memcpy|memmove|memset")),
    ("cello-server", re.compile(r"/server/src/|cello_server::")),
    ("_cello bridge", re.compile(r"/python/src/|_cello::")),
    ("hyper", re.compile(r"hyper(-util)?-[\d.]+/|hyper(_util)?::")),
    ("tokio", re.compile(r"tokio-[\d.]+/|tokio::")),
    ("pyo3", re.compile(r"pyo3")),
    ("CPython", re.compile(r"Python-3|libpython")),
]


def load(path: str, requests: int) -> dict[str, float]:
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", "--threshold=100", path], capture_output=True, text=True, check=True
    ).stdout
    costs: dict[str, float] = defaultdict(float)
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r"^/work/[^/]+/", "", m.group(2))
        costs[name[:160]] += int(m.group(1).replace(",", "")) / requests
    return costs


def group(costs: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, cost in costs.items():
        out[next((g for g, rx in GROUPS if rx.search(name)), "other")] += cost
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    a, b = load(args.before, args.requests), load(args.after, args.requests)
    ga, gb = group(a), group(b)
    print(f"{'group':16} {'before':>8} {'after':>8} {'change':>8}")
    for g in sorted(set(ga) | set(gb), key=lambda g: ga.get(g, 0) - gb.get(g, 0)):
        print(f"{g:16} {ga.get(g, 0):8.0f} {gb.get(g, 0):8.0f} {gb.get(g, 0) - ga.get(g, 0):+8.0f}")
    print(f"{'total':16} {sum(a.values()):8.0f} {sum(b.values()):8.0f}\n")
    names = sorted(set(a) | set(b), key=lambda n: a.get(n, 0) - b.get(n, 0))
    print("largest increases by function:")
    for n in names[: args.top]:
        if b.get(n, 0) - a.get(n, 0) < 10:
            break
        print(f"{a.get(n, 0):8.0f} {b.get(n, 0):8.0f} {b.get(n, 0) - a.get(n, 0):+8.0f}  {n}")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # piped into head
        pass
