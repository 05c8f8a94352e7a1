"""Turns results.jsonl into a Markdown table (results.md) and a plot (results.png)."""

import json
import platform
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1])]
names = {"floor": "(a) tch in-process", "anneal": "(b) Anneal", "anneal_nobatch": "(b') Anneal, batching off", "fastapi": "(c) FastAPI + uvicorn"}


def get(system, model, concurrency):
    return next((r for r in rows if r["system"] == system and r["model"] == model and r["concurrency"] == concurrency), None)


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    "# Online prediction benchmark results",
    "",
    f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {platform.system()}; "
    "the load generator (wrk, one thread) shares the cores with the server.",
    "Reproduce: `make build && benchmarks/serving/run.sh`.",
    "Requests to Anneal carry a bearer token (auth on, as by default), so the overhead of checking it is included; "
    "the FastAPI server, the peer compared against, has no auth.",
    "",
]
for model in ("small", "large"):
    floor = get("floor", model, 1)
    lines += [
        f"## {model} model",
        "",
        "| system | p50 µs (c=1) | p99 µs (c=1) | req/s c=1 | req/s c=8 | req/s c=64 | p99 µs (c=64) | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system in ("floor", "anneal", "anneal_nobatch", "fastapi"):
        if system == "floor":
            lines.append(f"| {names[system]} | {floor['p50_us']:.0f} | {floor['p99_us']:.0f} | {floor['rps']:.0f} | – | – | – | 0 |")
            continue
        c1, c8, c64 = (get(system, model, c) for c in (1, 8, 64))
        if not c1:
            continue
        errors = sum(r["errors"] for r in (c1, c8, c64))
        lines.append(
            f"| {names[system]} | {c1['p50_us']} | {c1['p99_us']} | {c1['rps']:.0f} | {c8['rps']:.0f} | {c64['rps']:.0f} | {c64['p99_us']} | {errors} |"
        )
    anneal, fastapi, nobatch = get("anneal", model, 64), get("fastapi", model, 64), get("anneal_nobatch", model, 64)
    a1 = get("anneal", model, 1)
    lines += [
        "",
        f"- Anneal p50 at c=1 minus the floor's p50: **{a1['p50_us'] - floor['p50_us']:.0f} µs** (target ≤ 150 µs).",
        f"- Throughput at c=64: Anneal / FastAPI = **{anneal['rps'] / fastapi['rps']:.1f}×** (target ≥ 3×); "
        f"Anneal / Anneal without batching = **{anneal['rps'] / nobatch['rps']:.1f}×** (target ≥ 3×); "
        f"p99 at c=64: Anneal {anneal['p99_us']} µs, batching off {nobatch['p99_us']} µs, FastAPI {fastapi['p99_us']} µs.",
        "",
    ]
open(sys.argv[2], "w").write("\n".join(lines))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for ax, model in zip(axes, ("small", "large")):
    for system in ("anneal", "anneal_nobatch", "fastapi"):
        points = [get(system, model, c) for c in (1, 8, 64)]
        if all(points):
            ax.plot([1, 8, 64], [p["rps"] for p in points], marker="o", label=names[system])
    ax.axhline(get("floor", model, 1)["rps"], color="grey", linestyle="--", label="(a) tch in-process, sequential")
    ax.set_xscale("log", base=2)
    ax.set_xticks([1, 8, 64], ["1", "8", "64"])
    ax.set_xlabel("concurrent connections")
    ax.set_ylabel("requests / s")
    ax.set_title(f"{model} model")
    ax.grid(alpha=0.3)
axes[0].legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[3], dpi=110)
