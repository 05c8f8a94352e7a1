"""Object-storage benchmark (see run.sh)."""

import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
import concurrent.futures
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "storage"
BINARY = ROOT / "target" / "release" / "anneal"
LINES = int(os.environ.get("LINES", "20000"))
REPEATS = int(os.environ.get("REPEATS", "3"))
BUCKET = "bench"
RANGE = 8 << 20  # the ranged reads of Anneal's ObjectReader (storage/objects.rs READ_AHEAD)


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


class Anneal:
    def __init__(self, work, endpoint):
        self.data = work / "data"
        buckets = f'[{{name="{BUCKET}", endpoint="{endpoint}", region="us-east-1", access_key_id="bench", secret_access_key="bench", allow_http=true}}]'
        env = dict(os.environ, ANNEAL_LOG="warn", ANNEAL_STORAGE_ROOTS=json.dumps([str(work)]), ANNEAL_BUCKETS=buckets)
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

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


def create_version(anneal, model, version, uri):
    started = time.perf_counter()
    op = anneal.call("POST", f"/v1/projects/bench/models/{model}/versions", {"name": version, "deploymentUri": uri})
    while not op.get("done"):
        time.sleep(0.01)
        op = anneal.call("GET", "/v1/" + op["name"])
    assert "error" not in op, op
    return time.perf_counter() - started


def batch(anneal, job_id, model_uri, inputs, output):
    body = {"jobId": job_id, "predictionInput": {"uri": model_uri, "dataFormat": "JSON", "inputPaths": [inputs], "outputPath": output}}
    anneal.call("POST", "/v1/projects/bench/jobs", body)
    while True:
        job = anneal.call("GET", f"/v1/projects/bench/jobs/{job_id}")
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.05)
    assert job["state"] == "SUCCEEDED", job
    assert job["predictionOutput"]["predictionCount"] == str(LINES), job
    seconds = parse_time(job["endTime"]) - parse_time(job["startTime"])
    return seconds


def main():
    if not BINARY.exists():
        sys.exit("build first: run.sh builds what it needs")
    work = pathlib.Path(tempfile.mkdtemp(prefix="anneal-storage-bench-"))
    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    endpoint = f"http://127.0.0.1:{port}"
    anneal = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint)
                break
            except OSError:
                time.sleep(0.1)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        models = work / "models"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/serving/make_models.py"), str(models)], check=True)
        for name in ("small", "large"):
            for path in (models / name).iterdir():
                s3.upload_file(str(path), BUCKET, f"models/{name}/{path.name}")
        anneal = Anneal(work, endpoint)
        versions = []
        for name in ("small", "large"):
            anneal.call("POST", "/v1/projects/bench/models", {"name": name})
            size = sum(p.stat().st_size for p in (models / name).iterdir())
            for source, uri in (("local", f"file://{models / name}"), ("s3", f"s3://{BUCKET}/models/{name}")):
                times = [create_version(anneal, name, f"{source}_{i}", uri) for i in range(REPEATS)]
                row = {"model": name, "model_mib": round(size / 2**20, 1), "source": source, "seconds_median": round(statistics.median(times), 3),
                       "seconds_all": [round(t, 3) for t in times]}
                versions.append(row)
                print(json.dumps(row), flush=True)
                for i in range(REPEATS):
                    if (source, i) != ("local", 0):  # the model's default version stays
                        anneal.call("DELETE", f"/v1/projects/bench/models/{name}/versions/{source}_{i}")
        rng = np.random.default_rng(0)
        distinct = [json.dumps(row.tolist()) + "\n" for row in rng.random((1000, 784))]
        inputs = work / "in"
        inputs.mkdir()
        for part in range(4):
            with open(inputs / f"part-{part}.json", "w") as f:
                for start in range(0, LINES // 4, 1000):
                    f.writelines(distinct[: min(1000, LINES // 4 - start)])
        input_bytes = sum(p.stat().st_size for p in inputs.iterdir())
        for path in sorted(inputs.iterdir()):
            s3.upload_file(str(path), BUCKET, f"in/{path.name}")
        # The store's own floor in the same run: boto3 reading the same objects whole.
        started = time.perf_counter()
        for path in sorted(inputs.iterdir()):
            s3.get_object(Bucket=BUCKET, Key=f"in/{path.name}")["Body"].read()
        store_floor = input_bytes / 2**20 / (time.perf_counter() - started)
        # And as Anneal reads them: 8 MiB ranges, three in flight.
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            ranges = [(f"in/{path.name}", offset, min(offset + RANGE, path.stat().st_size) - 1)
                      for path in sorted(inputs.iterdir()) for offset in range(0, path.stat().st_size, RANGE)]
            list(pool.map(lambda r: s3.get_object(Bucket=BUCKET, Key=r[0], Range=f"bytes={r[1]}-{r[2]}")["Body"].read(), ranges))
        range_floor = input_bytes / 2**20 / (time.perf_counter() - started)
        store_floor = {"whole": store_floor, "ranged": range_floor}
        print(json.dumps({"store_get_floor_mib_per_second": round(store_floor["whole"]), "store_ranged_floor_mib_per_second": round(range_floor)}), flush=True)
        batches = []
        for i in range(REPEATS):
            for source in ("local", "s3"):
                if source == "local":
                    seconds = batch(anneal, f"local_{i}", str(models / "small"), f"{inputs}/part-*.json", str(work / f"out-{i}"))
                    shutil.rmtree(work / f"out-{i}")
                else:
                    seconds = batch(anneal, f"s3_{i}", f"s3://{BUCKET}/models/small", f"s3://{BUCKET}/in/part-*.json", f"s3://{BUCKET}/out/{i}")
                row = {"source": source, "run": i, "instances": LINES, "seconds": round(seconds, 3), "instances_per_second": round(LINES / seconds)}
                batches.append(row)
                print(json.dumps(row), flush=True)
        peak = round(peak_rss_kib(anneal.process.pid) / 1024, 1)
    finally:
        if anneal:
            anneal.stop()
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    write_results(versions, batches, input_bytes, peak, store_floor)


def write_results(versions, batches, input_bytes, peak, store_floor):
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "store": "moto[server] 5.2.5 on 127.0.0.1 (in memory), same machine and cores as Anneal",
        "versions": versions,
        "batch": batches,
        "batch_input_mib": round(input_bytes / 2**20),
        "server_peak_rss_mib": peak,
        "store_get_floor_mib_per_second": round(store_floor["whole"]),
        "store_ranged_floor_mib_per_second": round(store_floor["ranged"]),
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    version_rows = "\n".join(
        f"| {r['model']} ({r['model_mib']} MiB) | {r['source']} | {r['seconds_median'] * 1000:.0f} ms | {', '.join(f'{t * 1000:.0f}' for t in r['seconds_all'])} |"
        for r in versions
    )
    by_source = {s: [r["instances_per_second"] for r in batches if r["source"] == s] for s in ("local", "s3")}
    batch_rows = "\n".join(
        f"| {s} | {statistics.median(v):,.0f} | {', '.join(f'{x:,}' for x in v)} |" for s, v in by_source.items()
    )
    ratio = statistics.median(by_source["s3"]) / statistics.median(by_source["local"])
    (HERE / "results.md").write_text(f"""# Object-storage benchmark

Reproduce: `make build && benchmarks/storage/run.sh` (writes `results.json` and this file).

Machine: {results['machine']}; {results['date']}; load after the run {results['load_after']}.
Store: {results['store']}. One Anneal server (authentication on, SQLite) for every row.

## Version creation (POST versions -> operation done; median of {REPEATS})

| model | source | median | every run (ms) |
|---|---|---|---|
{version_rows}

From s3:// the files are downloaded into the storage cache, then copied into the version's own
folder like a local source, then loaded; the download is the difference.

## Batch prediction, {LINES:,} JSON lines of 784 full-precision floats ({results['batch_input_mib']} MiB in 4 files), small MLP

| input and output | median instances/s | every run |
|---|---|---|
{batch_rows}

s3:// input (8 MiB ranged reads, three in flight) and output (multipart uploads of 8 MiB parts) reach
{ratio:.0%} of the local speed on the same cores, where moto (Python) competes with Anneal for the two
cores. The store's own floors, measured in the same run: boto3 reads the same input objects whole at
{store_floor["whole"]:,.0f} MiB/s ({store_floor["whole"] * 2**20 / (input_bytes / LINES):,.0f} instances/s before any parsing), and in
8 MiB ranges three at a time, as Anneal reads them, at {store_floor["ranged"]:,.0f} MiB/s; the job's input rate over s3:// was
{statistics.median(by_source["s3"]) * input_bytes / LINES / 2**20:,.0f} MiB/s. moto answers a ranged GET far slower than a whole one, so
on this store the ranged floor is the one that binds Anneal's s3:// input; whether a production
store (S3, MinIO, Ceph) shows the same gap was not measured here.
Server peak RSS over the whole run: {peak} MiB (memory stays bounded by the chunk queue and the 8 MiB
read and write buffers per stream, whatever the input size).
""")


if __name__ == "__main__":
    main()
