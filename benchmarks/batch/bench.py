"""Batch prediction benchmark (see run.sh)."""

import datetime
import gzip
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "batch"
BINARY = ROOT / "target" / "release" / "anneal"
# The same build with forward passes in the server's own process (the `in-process` feature, built by
# run.sh for this comparison only): what Anneal did before its sandbox.
IN_PROCESS = ROOT / "target" / "release" / "anneal-in-process"
FLOOR = ROOT / "target" / "release" / "examples" / "batch_floor"
PARSE_FLOOR = ROOT / "target" / "release" / "examples" / "parse_floor"
SIZES = [int(s) for s in os.environ.get("SIZES", "100000 400000").split()]
TFRECORDS = int(os.environ.get("TFRECORDS", "100000"))
INPUT = 784
sys.path.insert(0, str(ROOT / "server" / "tests" / "fixtures"))
import write_tfrecords  # noqa: E402  (the tests' pure-Python TFRecord writer)


def parse_time(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rows():
    return np.random.default_rng(0).random((1000, INPUT))


def make_input(path, lines):
    """`lines` JSON lines of 784 full-precision floats (as Python's json.dumps writes them, what a
    client sends), cycling through 1,000 distinct instances."""
    distinct = [json.dumps(row.tolist()) + "\n" for row in rows()]
    with open(path, "w") as f:
        for start in range(0, lines, 1000):
            f.writelines(distinct[: min(1000, lines - start)])


def make_tfrecords(path, records, gzipped):
    """`records` TFRecords of Examples with one float feature `x` of 784 values, cycling through
    1,000 distinct ones (framed and checksummed once each, by the tests' writer)."""
    distinct = [write_tfrecords.record(write_tfrecords.example("x", row.tolist())) for row in rows()]
    opener = (lambda p: gzip.open(p, "wb", compresslevel=6)) if gzipped else (lambda p: open(p, "wb"))
    with opener(path) as f:
        for start in range(0, records, 1000):
            f.write(b"".join(distinct[: min(1000, records - start)]))


def peak_rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid):
    """The resident memory of every process under `pid` (its sandboxed model workers)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        todo.extend(children.get(child, []))
        try:
            total += rss_kib(child)
        except OSError:
            pass
    return total


def run_job(work, model_dir, input_path, lines, data_format="JSON", binary=BINARY):
    """A fresh server runs one batch job; returns throughput and memory."""
    data = work / f"data-{lines}-{data_format}-{binary.name}"
    env = dict(os.environ, ANNEAL_LOG="warn", ANNEAL_STORAGE_ROOTS=json.dumps([str(work)]))
    server = subprocess.Popen(
        [str(binary), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        base = re.search(r"http://[0-9.:]+", server.stdout.readline()).group(0)
        # Authentication is on, as by default: the server wrote its admin token before it printed
        # its address, and every /v1 call sends it.
        token = (data / "admin.token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        idle_rss = rss_kib(server.pid)
        output = work / f"out-{lines}"
        job_id = f"bench_{lines}"
        body = {
            "jobId": job_id,
            "predictionInput": {"uri": str(model_dir), "dataFormat": data_format, "inputPaths": [str(input_path)],
                                "outputPath": str(output)},
        }
        request = urllib.request.Request(
            base + "/v1/projects/bench/jobs", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", **auth},
        )
        urllib.request.urlopen(request).read()
        peak = workers_peak = 0
        while True:
            status = urllib.request.Request(f"{base}/v1/projects/bench/jobs/{job_id}", headers=auth)
            job = json.loads(urllib.request.urlopen(status).read())
            peak = max(peak, rss_kib(server.pid))
            workers_peak = max(workers_peak, tree_rss_kib(server.pid))
            if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            time.sleep(0.05)
        assert job["state"] == "SUCCEEDED", job
        assert job["predictionOutput"]["predictionCount"] == str(lines), job
        seconds = parse_time(job["endTime"]) - parse_time(job["startTime"])
        written = sum(1 for p in output.glob("prediction.results-*") for _ in open(p))
        assert written == lines, (written, lines)
        shutil.rmtree(output)
        return {
            "format": data_format,
            "instances": lines,
            "seconds": round(seconds, 3),
            "instances_per_second": round(lines / seconds),
            "server_rss_idle_mib": round(idle_rss / 1024, 1),
            "server_rss_peak_mib": round(max(peak_rss_kib(server.pid), peak) / 1024, 1),
            "workers_rss_peak_mib": round(workers_peak / 1024, 1),
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def floors(model_dir, input_path, lines):
    forward = json.loads(
        subprocess.run([str(FLOOR), str(model_dir), str(INPUT), str(lines), "64"], check=True, capture_output=True, text=True).stdout
    )["instances_per_second"]
    parse = None
    if input_path is not None:
        parse = json.loads(subprocess.run([str(PARSE_FLOOR), str(input_path)], check=True, capture_output=True, text=True).stdout)[
            "lines_per_second"
        ]
    return forward, parse


def main():
    if not BINARY.exists() or not FLOOR.exists() or not PARSE_FLOOR.exists():
        sys.exit("build first: run.sh builds what it needs")
    work = pathlib.Path(tempfile.mkdtemp(prefix="anneal-batch-bench-"))
    try:
        models = work / "models"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/serving/make_models.py"), str(models)], check=True)
        model_dir = models / "small"
        rows_out = []
        for lines in SIZES:
            input_path = work / f"in-{lines}.json"
            make_input(input_path, lines)
            forward, parse = floors(model_dir, input_path, lines)
            job = run_job(work, model_dir, input_path, lines)
            if IN_PROCESS.exists():
                inproc = run_job(work, model_dir, input_path, lines, binary=IN_PROCESS)
                job["in_process_instances_per_second"] = inproc["instances_per_second"]
                job["share_of_in_process"] = round(job["instances_per_second"] / inproc["instances_per_second"], 3)
            job["input_mib"] = round(input_path.stat().st_size / 2**20)
            job["floor_instances_per_second"] = forward
            job["parse_floor_lines_per_second"] = parse
            job["binding_floor"] = min(forward, parse)
            job["share_of_binding_floor"] = round(job["instances_per_second"] / job["binding_floor"], 3)
            rows_out.append(job)
            input_path.unlink()
            print(json.dumps(job), flush=True)
        for data_format, name in (("TF_RECORD", "in.tfrecord"), ("TF_RECORD_GZIP", "in.tfrecord.gz")) if TFRECORDS else ():
            input_path = work / name
            make_tfrecords(input_path, TFRECORDS, data_format == "TF_RECORD_GZIP")
            forward, _ = floors(model_dir, None, TFRECORDS)
            job = run_job(work, model_dir, input_path, TFRECORDS, data_format)
            if IN_PROCESS.exists():
                inproc = run_job(work, model_dir, input_path, TFRECORDS, data_format, binary=IN_PROCESS)
                job["in_process_instances_per_second"] = inproc["instances_per_second"]
                job["share_of_in_process"] = round(job["instances_per_second"] / inproc["instances_per_second"], 3)
            job["input_mib"] = round(input_path.stat().st_size / 2**20)
            job["floor_instances_per_second"] = forward
            job["share_of_floor"] = round(job["instances_per_second"] / forward, 3)
            rows_out.append(job)
            input_path.unlink()
            print(json.dumps(job), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(rows_out)


def write_results(rows):
    load = os.getloadavg()
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_after": [round(x, 2) for x in load],
        "model": "small MLP 784 -> 256 -> 10 (benchmarks/serving/make_models.py), float32, CPU",
        "runs": rows,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    json_rows = [r for r in rows if r["format"] == "JSON"]
    tfr_rows = [r for r in rows if r["format"] != "JSON"]
    table = "\n".join(
        f"| {r['instances']:,} | {r['input_mib']:,} MiB | {r['floor_instances_per_second']:,} | {r['parse_floor_lines_per_second']:,} "
        f"| {r['instances_per_second']:,} | {r.get('in_process_instances_per_second', '–'):,} | {r.get('share_of_in_process', 0):.0%} "
        f"| {r['share_of_binding_floor']:.0%} | {r['instances_per_second'] / r['floor_instances_per_second']:.0%} "
        f"| {r['server_rss_idle_mib']} MiB | {r['server_rss_peak_mib']} MiB | {r['workers_rss_peak_mib']} MiB |"
        for r in json_rows
    )
    tfr_table = "\n".join(
        f"| {r['format']} | {r['instances']:,} | {r['input_mib']:,} MiB | {r['floor_instances_per_second']:,} | {r['instances_per_second']:,} "
        f"| {r.get('in_process_instances_per_second', '–'):,} | {r.get('share_of_in_process', 0):.0%} "
        f"| {r['share_of_floor']:.0%} | {r['server_rss_peak_mib']} MiB |"
        for r in tfr_rows
    )
    (HERE / "results.md").write_text(f"""# Batch prediction benchmark

Reproduce: `make build && benchmarks/batch/run.sh` (writes `results.json` and this file).
Machine: {results['machine']}; {results['date']}, load average after the run {results['load_after']}.
Model: {results['model']}. Requests carry a bearer token (auth on, as by default).

## JSON lines of full-precision floats

| Instances | JSON input | Forward floor, instances/s | Parse floor, lines/s | Anneal job, instances/s | Passes in the server's process (comparison build), instances/s | Share of that | Share of the binding floor | Share of the forward floor | Server RSS idle | Server RSS peak | Model workers' RSS peak |
|---|---|---|---|---|---|---|---|---|---|---|---|
{table}

- Input: each line is 784 floats as Python's `json.dumps` writes them (full precision, about 16 KB
  a line: what a client sends), 1,000 distinct lines repeated.
- Forward floor: `target/release/examples/batch_floor` runs the model's batched forward (batch 64,
  one libtorch thread per core) over a float tensor already in memory: no reading, parsing or writing.
- Parse floor: `target/release/examples/parse_floor` reads the same file on every core and parses
  each line into f32s with fast-float2, a well-kept float parsing crate: no model, no output. Parsing
  is the binding floor here (the smaller of the two), so the job is held to it.
- Anneal: its forward passes run in sandboxed `anneal model-worker` processes, one per job worker
  (as shipped); the comparison build runs them in the server's own process (the `in-process`
  feature, what Anneal did before its sandbox; target: the shipped build at ≥ 90 % of it).
- Anneal: a fresh `anneal serve` runs one batch prediction job (`dataFormat: JSON`, default
  `batchSize` 64 and `maxWorkerCount`, so as many workers as `training_slots`) and writes one JSON
  prediction per line. Throughput is the job's `predictionCount / (endTime - startTime)`; every output
  line is counted afterwards. Memory is the whole server process's resident set (libtorch included),
  idle before the job and at its peak (`VmHWM` and samples every 50 ms).

## TFRecords of tf.train.Example

| Format | Instances | Input | Forward floor, instances/s | Anneal job, instances/s | Passes in the server's process, instances/s | Share of that | Share of the forward floor | Server RSS peak |
|---|---|---|---|---|---|---|---|---|
{tfr_table}

- Input: one Example per record with one float feature `x` of the 784 values (packed), framed with
  both masked CRC32Cs by the tests' pure-Python writer (`server/tests/fixtures/write_tfrecords.py`);
  `TF_RECORD_GZIP` is the same file gzipped (level 6). Anneal checks every CRC and inflates on the
  job's reader thread.
""")
    print((HERE / "results.md").read_text())


if __name__ == "__main__":
    main()
