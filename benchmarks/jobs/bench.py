"""Training-job benchmark (see run.sh). Standard library only.

1. submit -> RUNNING: N jobs of an installable package (setup.py) whose environment the first job
   built and cached; latency is the job's server-recorded startTime - createTime, and also what a
   client polling every 5 ms observes.
2. log-line latency: a trainer prints its wall clock every 20 ms; a follower on
   GET .../logs?follow=true (server-sent events) receives each line; latency = receipt - print.
3. queue: 50 jobs submitted at once on a server with training_slots=2; all must succeed and start
   in submission order.
"""

import json
import os
import pathlib
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "jobs"
# ANNEAL_BIN: another build to measure (e.g. the commit before a change); OUT: where the results go.
BINARY = pathlib.Path(os.environ.get("ANNEAL_BIN", ROOT / "target" / "release" / "anneal"))
OUT = pathlib.Path(os.environ.get("OUT", HERE))
SUBMITS = int(os.environ.get("SUBMITS", "30"))
QUEUED = 50


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def parse_time(text):
    # RFC 3339 with Z and up to microseconds.
    from datetime import datetime

    return datetime.strptime(text.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


class Server:
    def __init__(self, data, slots):
        env = dict(os.environ, ANNEAL_TRAINING_SLOTS=str(slots), ANNEAL_LOG="warn")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self.proc.stdout.readline()
        self.base = re.search(r"http://[0-9.:]+", line).group(0)
        # Authentication is on, as by default: the server wrote its admin token before it printed
        # its address, and every /v1 call sends it.
        token = (pathlib.Path(data) / "admin.token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {token}"}

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def submit(self, job, package, module, args=()):
        return self.call(
            "POST",
            "/v1/projects/bench/jobs",
            {"jobId": job, "trainingInput": {"packageUris": [str(package)], "pythonModule": module, "args": list(args)}},
        )

    def job(self, job):
        return self.call("GET", f"/v1/projects/bench/jobs/{job}")

    def wait(self, job, states=("SUCCEEDED", "FAILED", "CANCELLED"), poll=0.02):
        while True:
            body = self.job(job)
            if body["state"] in states:
                return body
            time.sleep(poll)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def package(root, name, source):
    folder = root / name
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text("")
    (folder / name / "task.py").write_text(source)
    (folder / "setup.py").write_text(f"from setuptools import setup\nsetup(name='{name}', version='1.0', packages=['{name}'])\n")
    return folder


def submit_to_running(server, pkg):
    first = server.submit("warm", pkg, "quick.task")
    server.wait(first["jobId"])
    recorded, observed = [], []
    for i in range(SUBMITS):
        job = f"s{i:03d}"
        sent = time.time()
        server.submit(job, pkg, "quick.task")
        while True:
            body = server.job(job)
            if body["state"] not in ("QUEUED", "PREPARING"):
                break
            time.sleep(0.005)
        observed.append(time.time() - sent)
        done = server.wait(job)
        assert done["state"] == "SUCCEEDED", done
        recorded.append(parse_time(done["startTime"]) - parse_time(done["createTime"]))
    return recorded, observed


def log_latency(server, pkg):
    job = "logs"
    server.submit(job, pkg, "ticker.task")
    latencies = []
    request = urllib.request.Request(server.base + f"/v1/projects/bench/jobs/{job}/logs?follow=true", headers=server.headers)
    with urllib.request.urlopen(request) as stream:
        event = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event == "line":
                text = json.loads(line[5:])["text"]
                if text.startswith("tick "):
                    latencies.append(time.time() - float(text.split()[1]))
            elif event == "end":
                break
    return latencies


def queue(server, pkg):
    started = time.time()
    names = [f"q{i:03d}" for i in range(QUEUED)]
    for name in names:
        server.submit(name, pkg, "quick.task")
    jobs = [server.wait(name, poll=0.1) for name in names]
    wall = time.time() - started
    states = [j["state"] for j in jobs]
    start_order = [j["jobId"] for j in sorted(jobs, key=lambda j: parse_time(j["startTime"]))]
    return {
        "jobs": QUEUED,
        "slots": 2,
        "succeeded": states.count("SUCCEEDED"),
        "started_in_submission_order": start_order == names,
        "wall_seconds": round(wall, 2),
        "jobs_per_second": round(QUEUED / wall, 2),
    }


def main():
    if not BINARY.exists():
        sys.exit("build first: make build")
    work = pathlib.Path(tempfile.mkdtemp())
    try:
        data = work / "data"
        pkgs = data / "packages"
        quick = package(pkgs, "quick", "print('done')\n")
        ticker = package(
            pkgs,
            "ticker",
            "import time\nfor _ in range(100):\n    print('tick', repr(time.time()), flush=True)\n    time.sleep(0.02)\n",
        )
        server = Server(data, slots=2)
        try:
            server.wait(server.submit("warm_ticker", ticker, "ticker.task")["jobId"])
            recorded, observed = submit_to_running(server, quick)
            logs = log_latency(server, ticker)
            queued = queue(server, quick)
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    ms = lambda values, p: round(percentile(values, p) * 1000, 1)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
        "submit_to_running_ms": {
            "jobs": SUBMITS,
            "server_recorded": {"p50": ms(recorded, 50), "p95": ms(recorded, 95), "max": ms(recorded, 100)},
            "client_observed": {"p50": ms(observed, 50), "p95": ms(observed, 95), "max": ms(observed, 100)},
        },
        "log_line_latency_ms": {
            "lines": len(logs),
            "p50": ms(logs, 50),
            "p95": ms(logs, 95),
            "max": ms(logs, 100),
        },
        "queue": queued,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    s, l, q = results["submit_to_running_ms"], results["log_line_latency_ms"], results["queue"]
    verdict = lambda ok: "met" if ok else "**missed**"
    md = f"""# Training-job benchmark

Reproduce: `make build && benchmarks/jobs/run.sh` (writes `results.json` and this file).
Machine: {results['machine']}; {results['date']}. The server runs with `training_slots=2`.
Requests carry a bearer token (auth on, as by default), so the overhead of checking it is included.

| Measure | p50 | p95 | max | Target |
|---|---|---|---|---|
| submit → RUNNING, server-recorded (`startTime − createTime`), cached environment, {s['jobs']} jobs | {s['server_recorded']['p50']} ms | {s['server_recorded']['p95']} ms | {s['server_recorded']['max']} ms | ≤ 1000 ms: {verdict(s['server_recorded']['p95'] <= 1000)} |
| submit → RUNNING as a client polling every 5 ms sees it | {s['client_observed']['p50']} ms | {s['client_observed']['p95']} ms | {s['client_observed']['max']} ms | |
| log line printed → received by a `follow=true` follower ({l['lines']} lines) | {l['p50']} ms | {l['p95']} ms | {l['max']} ms | ≤ 200 ms: {verdict(l['p95'] <= 200)} |

Queue: {q['jobs']} jobs submitted at once on {q['slots']} slots: {q['succeeded']} succeeded, started in
submission order: **{q['started_in_submission_order']}**, all done in {q['wall_seconds']} s
({q['jobs_per_second']} jobs/s; each job is one Python process that prints a line).

How: `bench.py` starts `anneal serve` on a free port with a temporary data dir. The trainer packages
have a `setup.py`, so the first job installs them with pip and every later job reuses the cached
environment. The log trainer prints `time.time()` every 20 ms and the follower compares it with
its own clock on receipt (same machine, same clock).
"""
    (OUT / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
