"""Print a pytest-benchmark JSON file as the Markdown table the README shows.

    pytest benchmarks --benchmark-json=bench.json && python benchmarks/report.py bench.json
"""
import json
import sys


def main(path: str) -> None:
    with open(path) as f:
        data = json.load(f)
    print("| group | benchmark | median | mean | derived |")
    print("|---|---|---|---|---|")
    for b in sorted(data["benchmarks"], key=lambda b: (b["group"] or "", b["name"])):
        st = b["stats"]
        extra = {k: v for k, v in b.get("extra_info", {}).items() if k != "checksum_kernel"}
        derived = ", ".join(f"{v} {k}" for k, v in extra.items())
        print(f"| {b['group']} | {b['name']} | {_t(st['median'])} | {_t(st['mean'])} | {derived} |")


def _t(seconds: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench.json")
