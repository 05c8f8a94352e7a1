"""Ray-executor benchmark (see run.sh)."""

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
import time
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "ray"
BINARY = ROOT / "target" / "release" / "anneal"
LINES = int(os.environ.get("LINES", "40000"))
REPEATS = int(os.environ.get("REPEATS", "3"))

TRIVIAL = "print('hello from the trivial job', flush=True)\n"


class Anneal:
    def __init__(self, work, name, extra_env):
        self.data = work / f"data-{name}"
        env = dict(os.environ, ANNEAL_LOG="warn", ANNEAL_STORAGE_ROOTS=json.dumps([str(work)]), ANNEAL_TRAINING_SLOTS="8", **extra_env)
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(self.data)], stdout=subprocess.PIPE, env=env, text=True
        )
        self.base = re.search(r"http://[0-9.:]+", self.process.stdout.readline()).group(0)
        # Authentication is on, as by default: every call sends the admin token.
        self.auth = {"Authorization": "Bearer " + (self.data / "admin.token").read_text().strip()}

    def call(self, method, path, body=None):
        request = urllib.request.Request(
            self.base + path, data=None if body is None else json.dumps(body).encode(), method=method,
            headers={"Content-Type": "application/json", **self.auth},
        )
        return json.loads(urllib.request.urlopen(request).read() or b"{}")

    def run_job(self, job_id, body):
        """Submits a job; returns (seconds to RUNNING, seconds to its end, the job), polled every 20 ms."""
        started = time.perf_counter()
        self.call("POST", "/v1/projects/bench/jobs", {"jobId": job_id, **body})
        running = None
        while True:
            job = self.call("GET", f"/v1/projects/bench/jobs/{job_id}")
            if running is None and job["state"] in ("RUNNING", "SUCCEEDED"):
                running = time.perf_counter() - started
            if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.02)
        assert job["state"] == "SUCCEEDED", job
        return running, time.perf_counter() - started, job

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=60)


def package(work, name, source):
    root = work / "packages" / name
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "__init__.py").write_text("")
    (root / name / "task.py").write_text(source)
    return root


def main():
    address, token, python = (os.environ[k] for k in ("ANNEAL_TEST_RAY_ADDRESS", "ANNEAL_TEST_RAY_TOKEN", "ANNEAL_TEST_RAY_PYTHON"))
    work = pathlib.Path(tempfile.mkdtemp(prefix="anneal-ray-bench-"))
    servers = {}
    try:
        servers["local"] = Anneal(work, "local", {})
        servers["ray"] = Anneal(work, "ray", {"ANNEAL_EXECUTOR": "ray", "ANNEAL_RAY_ADDRESS": address, "ANNEAL_RAY_TOKEN": token,
                                              "ANNEAL_RAY_PYTHON": python})
        trivial = package(work, "trivial", TRIVIAL)
        digits = work / "packages" / "digits"
        (digits / "trainer").mkdir(parents=True)
        for f in ("setup.py", "trainer/__init__.py", "trainer/task.py"):
            shutil.copy(ROOT / "examples" / "digits" / f, digits / f)
        jobs = []
        for i in range(REPEATS):
            for executor, anneal in servers.items():
                for kind, body in (
                    ("trivial", {"packageUris": [str(trivial)], "pythonModule": "trivial.task", "region": "us-central1"}),
                    ("ddp-2-replicas", {"packageUris": [str(digits)], "pythonModule": "trainer.task", "scaleTier": "CUSTOM",
                                        "masterType": "n1-standard-1", "workerType": "n1-standard-1", "workerCount": "1",
                                        "jobDir": str(work / f"out-{executor}-{i}"), "args": ["--epochs", "1"]}),
                ):
                    running, done, _ = anneal.run_job(f"{kind.replace('-', '_')}_{i}", {"trainingInput": body})
                    row = {"job": kind, "executor": executor, "run": i, "to_running_s": round(running, 3), "to_succeeded_s": round(done, 3)}
                    jobs.append(row)
                    print(json.dumps(row), flush=True)
        models = work / "models"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/serving/make_models.py"), str(models)], check=True)
        rng = np.random.default_rng(0)
        distinct = [json.dumps(row.tolist()) + "\n" for row in rng.random((1000, 784))]
        inputs = work / "in"
        inputs.mkdir()
        for part in range(4):
            with open(inputs / f"part-{part}.json", "w") as f:
                for start in range(0, LINES // 4, 1000):
                    f.writelines(distinct[: min(1000, LINES // 4 - start)])
        batches = []
        for i in range(REPEATS):
            for executor, workers in (("local", 1), ("ray", 1), ("ray", 2)):
                body = {"predictionInput": {"uri": str(models / "small"), "dataFormat": "JSON", "inputPaths": [f"{inputs}/part-*.json"],
                                            "outputPath": str(work / f"bout-{executor}-{workers}-{i}"), "maxWorkerCount": str(workers)}}
                _, done, job = servers[executor].run_job(f"batch_{workers}_{i}", body)
                assert job["predictionOutput"]["predictionCount"] == str(LINES), job
                row = {"executor": executor, "workers": workers, "run": i, "seconds": round(done, 3), "instances_per_second": round(LINES / done)}
                batches.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for anneal in servers.values():
            anneal.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_results(jobs, batches)


def write_results(jobs, batches):
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "ray": "ray[default] 2.60.0, single-node head on 127.0.0.1 (scripts/with-ray.sh), same machine and cores as Anneal",
        "jobs": jobs,
        "batch": batches,
        "lines": LINES,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    job_rows = []
    for kind in ("trivial", "ddp-2-replicas"):
        for executor in ("local", "ray"):
            rows = [r for r in jobs if r["job"] == kind and r["executor"] == executor]
            job_rows.append(
                f"| {kind} | {executor} | {statistics.median(r['to_running_s'] for r in rows):.2f} s | "
                f"{statistics.median(r['to_succeeded_s'] for r in rows):.2f} s | "
                f"{', '.join('%.2f/%.2f' % (r['to_running_s'], r['to_succeeded_s']) for r in rows)} |"
            )
    batch_rows = []
    for executor, workers in (("local", 1), ("ray", 1), ("ray", 2)):
        rows = [r["instances_per_second"] for r in batches if r["executor"] == executor and r["workers"] == workers]
        batch_rows.append(f"| {executor} | {workers} | {statistics.median(rows):,.0f} | {', '.join(f'{x:,}' for x in rows)} |")
    nl = "\n"
    (HERE / "results.md").write_text(f"""# Ray-executor benchmark

Reproduce: `make build && benchmarks/ray/run.sh` (writes `results.json` and this file).

Machine: {results['machine']}; {results['date']}; load after the run {results['load_after']}.
Ray: {results['ray']}. Two Anneal servers (authentication on, SQLite): one with the local
executor, one with `executor = "ray"`. Times are client-side from the POST, polled every 20 ms.

## Training jobs (median of {REPEATS}; every run as to-RUNNING/to-SUCCEEDED seconds)

| job | executor | submit -> RUNNING | submit -> SUCCEEDED | every run |
|---|---|---|---|---|
{nl.join(job_rows)}

## Batch prediction, {LINES:,} JSON lines of 784 full-precision floats in 4 files, small MLP

| executor | workers | median instances/s (submit to SUCCEEDED) | every run |
|---|---|---|---|
{nl.join(batch_rows)}

On one 2-core machine a second Ray worker competes with the first for the same cores, so the
2-worker row shows the cost of spreading, not the gain of a second machine.
""")


if __name__ == "__main__":
    main()
