"""Turns results.jsonl into a Markdown table (results.md) and a plot (results.png)."""

import json
import platform
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = [json.loads(line) for line in open(sys.argv[1])]
names = {
    "floor": "(a) tch in-process (forward floor)",
    "floor_idle": "(a') the same, 200 µs idle before each call",
    "healthz": "(h) Anneal `GET /healthz` (HTTP floor)",
    "anneal": "(b) Anneal `:predict` (passes in sandboxed worker processes)",
    "anneal_inprocess": "(b'') the same, passes in the server's process (comparison build)",
    "anneal_nobatch": "(b') Anneal, batching off",
    "fastapi": "(c) FastAPI + uvicorn + PyTorch, 2 workers",
}


def get(system, model, concurrency):
    return next((r for r in rows if r["system"] == system and r["model"] == model and r["concurrency"] == concurrency), None)


def paired_verdicts(floor):
    """The c=1 and c=64 targets, judged on each round of pairs (a /healthz run, then :predict right
    after it), so both sides of a comparison saw the same machine; the median round decides."""
    rounds = sorted({r["round"] for r in rows if r["system"] == "pair_anneal"})
    if not rounds:
        return []
    pair = lambda system, c, n: next(r for r in rows if r["system"] == system and r["concurrency"] == c and r.get("round") == n)
    overheads, shares, kept, cells1, cells64, cells_kept = [], [], [], [], [], []
    for n in rounds:
        h1, a1, h64, a64 = pair("pair_healthz", 1, n), pair("pair_anneal", 1, n), pair("pair_healthz", 64, n), pair("pair_anneal", 64, n)
        overhead = a1["p50_us"] - h1["p50_us"] - floor["p50_us"]
        share = a64["rps"] / h64["rps"]
        overheads.append(overhead)
        shares.append(share)
        cells1.append(f"{a1['p50_us']} vs {h1['p50_us']} + {floor['p50_us']:.0f} ({overhead:+.0f} µs)")
        cells64.append(f"{a64['rps']:.0f} / {h64['rps']:.0f} = {share:.0%}")
        inproc = next((r for r in rows if r["system"] == "pair_inprocess" and r.get("round") == n), None)
        if inproc:
            kept.append(a64["rps"] / inproc["rps"])
            cells_kept.append(f"{a64['rps']:.0f} / {inproc['rps']:.0f} = {kept[-1]:.0%}")
    median = lambda xs: sorted(xs)[len(xs) // 2]
    o, sh = median(overheads), median(shares)
    return [
        f"- Targets, judged on {len(rounds)} rounds of pairs (`/healthz`, then `:predict` right after it, "
        f"{pair('pair_anneal', 1, rounds[0])['seconds']:.0f} s each):",
        f"  - c=1: Anneal p50 vs HTTP floor + forward floor, µs, each round: {'; '.join(cells1)}. Median overhead beyond "
        f"both floors **{o:+.0f} µs** (target ≤ +60 µs: {'met' if o <= 60 else 'missed'}).",
        f"  - c=64: Anneal req/s / HTTP floor req/s, each round: {'; '.join(cells64)}. Median **{sh:.0%}** "
        f"(target ≥ 20 %: {'met' if sh >= 0.2 else 'missed'}).",
    ] + ([
        f"  - c=64: sandboxed worker processes / passes in the server's process (the comparison build, measured in each round "
        f"right before), req/s: {'; '.join(cells_kept)}. Median **{median(kept):.0%}** (target ≥ 90 %: "
        f"{'met' if median(kept) >= 0.9 else 'missed'}).",
    ] if kept else [])


cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
lines = [
    "# Online prediction benchmark results",
    "",
    f"Machine: {cpu}, {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores, {platform.system()}; "
    "the load generator (wrk, one thread) shares the cores with the server.",
    "Reproduce: `make build && benchmarks/serving/run.sh`. Every row comes from the same run; request bodies hold one instance "
    "of full-precision floats (as Python's json.dumps writes them). "
    f"Load average after the run: {', '.join(f'{x:.2f}' for x in __import__('os').getloadavg())}.",
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
    for system in ("floor", "floor_idle", "healthz", "anneal", "anneal_inprocess", "anneal_nobatch", "fastapi"):
        if system in ("healthz", "floor_idle") and model != "small":
            continue
        if system in ("floor", "floor_idle"):
            row = get(system, model, 1)
            if row:
                # The idle row's calls per second count the sleeps; only its latency is the call's.
                rps = f"{row['rps']:.0f}" if system == "floor" else "–"
                lines.append(f"| {names[system]} | {row['p50_us']:.0f} | {row['p99_us']:.0f} | {rps} | – | – | – | 0 |")
            continue
        c1, c8, c64 = (get(system, model, c) for c in (1, 8, 64))
        if not c1:
            continue
        errors = sum(r["errors"] for r in (c1, c8, c64))
        lines.append(
            f"| {names[system]} | {c1['p50_us']} | {c1['p99_us']} | {c1['rps']:.0f} | {c8['rps']:.0f} | {c64['rps']:.0f} | {c64['p99_us']} | {errors} |"
        )
    anneal, fastapi, nobatch = get("anneal", model, 64), get("fastapi", model, 64), get("anneal_nobatch", model, 64)
    lines += [""]
    if model == "small":
        lines += paired_verdicts(floor)
    lines += [
        f"- c=64: Anneal / FastAPI = **{anneal['rps'] / fastapi['rps']:.1f}×** (target ≥ 3×), p99 Anneal {anneal['p99_us']} µs vs FastAPI "
        f"{fastapi['p99_us']} µs; Anneal / Anneal without batching = **{anneal['rps'] / nobatch['rps']:.1f}×** "
        f"(batching off: {nobatch['p99_us']} µs p99).",
    ]
    crowd = get("anneal_crowd", model, 1000)
    if crowd:
        lines += [
            f"- 1,000 connections: {crowd['rps']:.0f} req/s, {crowd['ok']} answers, {crowd['too_many']} refused with 429, "
            f"{crowd['other_status']} other statuses, {crowd['socket_errors']} socket errors; server peak RSS "
            f"{crowd['server_peak_rss_kib'] / 1024:.0f} MiB.",
        ]
    ready, ready_in = get("anneal_ready", model, 1), get("anneal_inprocess_ready", model, 1)
    if ready and ready_in:
        lines += [
            f"- Version create → READY: {ready['seconds'] * 1000:.0f} ms with worker processes "
            f"(sandbox launcher, `anneal model-worker` start, load and warm-up), {ready_in['seconds'] * 1000:.0f} ms in process.",
        ]
    lines += [""]
idle, idle_in = get("anneal_idle_rss", "both", 0), get("anneal_inprocess_idle_rss", "both", 0)
if idle and idle_in:
    total = (idle["server_kib"] + idle["workers_kib"]) / 1024
    total_in = (idle_in["server_kib"] + idle_in["workers_kib"]) / 1024
    lines += [
        "## Memory, both versions loaded and idle",
        "",
        f"- Worker processes: server {idle['server_kib'] / 1024:.0f} MiB + workers {idle['workers_kib'] / 1024:.0f} MiB "
        f"(one `anneal model-worker` and its launcher per version, each worker with its own libtorch) = **{total:.0f} MiB**; "
        f"each idle version adds {idle['workers_kib'] / 1024 / 2:.0f} MiB of worker.",
        f"- In process (comparison build): server {idle_in['server_kib'] / 1024:.0f} MiB = **{total_in:.0f} MiB**.",
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
