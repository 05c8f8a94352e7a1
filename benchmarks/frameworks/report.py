"""Turns results.jsonl into results.md: one table per model and the issue's target stated.

Usage: python report.py results.jsonl results.md
"""

import json
import platform
import os
import sys


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    get = {(r["system"], r["model"], r["concurrency"]): r for r in rows}
    out = ["# Python-framework serving: Anneal vs FastAPI + uvicorn", ""]
    out.append(
        f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}. "
        "Anneal: one version per model with `manualScaling.nodes: 2` (two Python worker processes "
        "behind its queue and dynamic batcher), authentication on. FastAPI: uvicorn with 2 worker "
        "processes, no auth. wrk with one thread; one-instance bodies of full-precision floats; "
        "`benchmarks/frameworks/run.sh` reproduces this."
    )
    out.append("")
    verdicts = []
    for model in ("sklearn", "tensorflow"):
        out += [f"## {model}", "", "| system | concurrency | req/s | p50 µs | p99 µs | errors |", "|---|---|---|---|---|---|"]
        for system in ("anneal", "fastapi"):
            for c in (1, 8, 64):
                r = get.get((system, model, c))
                if r:
                    out.append(f"| {system} | {c} | {r['rps']:.0f} | {r['p50_us']} | {r['p99_us']} | {r['errors']} |")
        out.append("")
        a, f = get.get(("anneal", model, 64)), get.get(("fastapi", model, 64))
        a1, f1 = get.get(("anneal", model, 1)), get.get(("fastapi", model, 1))
        if a and f:
            ratio = a["rps"] / f["rps"] if f["rps"] else float("inf")
            met = ratio >= 2 and a["p99_us"] <= f["p99_us"]
            verdicts.append(
                f"- {model}: at c=64 Anneal {a['rps']:.0f} req/s vs FastAPI {f['rps']:.0f} req/s = "
                f"**{ratio:.1f}x**, p99 {a['p99_us']} µs vs {f['p99_us']} µs: target (≥ 2x at no worse p99) "
                f"**{'met' if met else 'missed'}**."
                + (f" At c=1: p50 {a1['p50_us']} vs {f1['p50_us']} µs, p99 {a1['p99_us']} vs {f1['p99_us']} µs." if a1 and f1 else "")
            )
    out += ["## Against the target", ""] + verdicts + [""]
    open(sys.argv[2], "w").write("\n".join(out))


if __name__ == "__main__":
    main()
