"""Several-nodes benchmark (see run.sh). Standard library only; run under scripts/with-postgres.sh.

Jobs, for three set-ups with two training slots in all: (a) one node on SQLite (the default), (b)
one node on PostgreSQL, (c) two nodes on one PostgreSQL with one slot each, submissions alternating
between them. Every set-up shares the same settings otherwise (one storage folder, packages in a
storage root, the default node_lease_secs of 10 s).

1. submit -> RUNNING: SUBMITS trivial jobs one at a time on an idle cluster; the job's
   server-recorded startTime - createTime, and what a client polling every 5 ms observes.
2. queue: 50 trivial jobs submitted at once, ROUNDS times; jobs per second from the first
   createTime to the last endTime (the median round is reported); every job must succeed, and its
   log (read from the other node in (c)) must show one run.

Predictions (set-up (c)'s kind: PostgreSQL, shared storage), the small MLP of
benchmarks/serving/make_models.py with a full-precision body as json.dumps writes it:
3. GET /healthz on one node at c=64 (the HTTP floor), predictions at c=64 on one node (one wrk),
   on one node from two wrk at c=32 (the load generator shaped as below), and spread over two
   nodes (two wrk at c=32 each, one per node, at the same time; req/s summed, p99 of each). Both
   nodes are up throughout; the three prediction measures take turns ROUNDS times and the
   median round of each is reported.
"""

import json
import os
import pathlib
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "benchmarks" / "cluster"
BINARY = pathlib.Path(os.environ.get("ANNEAL_BIN", ROOT / "target" / "release" / "anneal"))
OUT = pathlib.Path(os.environ.get("OUT", HERE))
PYTHON = ROOT / ".venv" / "bin" / "python"
SUBMITS = int(os.environ.get("SUBMITS", "30"))
DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
QUEUED = 50
SLOTS = 2
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def parse_time(text):
    # RFC 3339 in UTC, with or without fractional seconds.
    text = text.replace("Z", "+0000")
    pattern = "%Y-%m-%dT%H:%M:%S.%f%z" if "." in text else "%Y-%m-%dT%H:%M:%S%z"
    return datetime.strptime(text, pattern).timestamp()


def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


class Cpu:
    """CPU time this benchmark's processes (this script, its nodes, their trainers, wrk, its
    PostgreSQL) and every other process on the machine used between start and `stop`, in cores.
    The load average cannot tell them apart: it counts this benchmark's own work too."""

    def __init__(self):
        self.at, self.busy, self.ours = time.time(), busy_ticks(), our_ticks()

    def stop(self):
        seconds = (time.time() - self.at) * os.sysconf("SC_CLK_TCK")
        busy, ours = busy_ticks() - self.busy, our_ticks() - self.ours
        return {"ours_cores": round(ours / seconds, 2), "others_cores": round(max(busy - ours, 0) / seconds, 2)}


def busy_ticks():
    """Clock ticks all CPUs spent busy since boot (/proc/stat: user, nice, system, irq, softirq, steal)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return user + nice + system + irq + softirq + steal


def our_ticks():
    """Clock ticks of this script's process tree and of its PostgreSQL's (each process's own time
    plus its reaped children's, so a trainer or wrk that ended still counts)."""
    tree, children = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        tree[int(entry)] = sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
        children.setdefault(int(fields[1]), []).append(int(entry))
    roots = [os.getpid()]
    pid_file = pathlib.Path(os.environ.get("ANNEAL_TEST_POSTGRES_DIR", "/nonexistent")) / "data" / "postmaster.pid"
    if pid_file.exists():
        roots.append(int(pid_file.read_text().split()[0]))
    total, stack = 0, roots
    while stack:
        pid = stack.pop()
        total += tree.get(pid, 0)
        stack += children.get(pid, [])
    return total


class Node:
    """One `anneal serve` process on a free port."""

    def __init__(self, name, data, env, token=None):
        self.name = name
        data.mkdir(parents=True, exist_ok=True)
        if token is not None:
            # The first node made the admin token and stored it in the shared database; a copy
            # in this node's data dir is what the CLI and the console's login link would use.
            (data / "admin.token").write_text(token)
        self.log = open(data.parent / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [str(BINARY), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=dict(os.environ, ANNEAL_LOG="warn", ANNEAL_NODE_ID=name, **env),
            text=True,
        )
        line = self.proc.stdout.readline()
        found = re.search(r"http://[0-9.:]+", line)
        if not found:
            self.proc.kill()
            sys.exit(f"{name} did not start: {line!r}; see {self.log.name}")
        self.base = found.group(0)
        self.token = (data / "admin.token").read_text().strip()
        self.headers = {"Authorization": f"Bearer {self.token}"}

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=self.headers)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def status(self, method, path, body):
        try:
            self.call(method, path, body)
            return 200
        except urllib.error.HTTPError as e:
            return e.code

    def submit(self, job, package):
        body = {"jobId": job, "trainingInput": {"packageUris": [str(package)], "pythonModule": "quick.task"}}
        return self.call("POST", "/v1/projects/bench/jobs", body)

    def job(self, job):
        return self.call("GET", f"/v1/projects/bench/jobs/{job}")

    def wait(self, job, states=FINAL, poll=0.02):
        while True:
            body = self.job(job)
            if body["state"] in states:
                return body
            time.sleep(poll)

    def log_text(self, job):
        page = self.call("GET", f"/v1/projects/bench/jobs/{job}/logs")
        return "".join(line.get("text", "") + "\n" for line in page.get("lines", []))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


class Cluster:
    """Nodes on one database and one storage folder, the trainer package in a storage root."""

    def __init__(self, work, name, database_url):
        self.work = work / name
        self.shared = self.work / "shared"
        self.env = {
            "ANNEAL_STORAGE_DIR": str(self.shared / "storage"),
            "ANNEAL_STORAGE_ROOTS": f"[{self.shared}]",
        }
        if database_url:
            self.env["ANNEAL_DATABASE_URL"] = database_url
        self.nodes = []
        self.package = self.shared / "packages" / "quick"
        (self.package / "quick").mkdir(parents=True)
        (self.package / "quick" / "__init__.py").write_text("")
        (self.package / "quick" / "task.py").write_text("import os\nprint('ran', os.environ['CLOUD_ML_JOB_ID'])\n")
        for folder in [work, self.work, self.shared, self.shared / "packages", self.package, self.package / "quick"]:
            folder.chmod(0o755)

    def start(self, name, slots):
        token = self.nodes[0].token if self.nodes else None
        env = dict(self.env, ANNEAL_TRAINING_SLOTS=str(slots))
        node = Node(name, self.work / name, env, token)
        self.nodes.append(node)
        return node

    def stop(self):
        for node in reversed(self.nodes):
            node.stop()
        self.nodes = []


def postgres_database(name):
    """A fresh database on the throwaway server; its URL."""
    server = os.environ.get("ANNEAL_TEST_POSTGRES")
    if not server:
        sys.exit("run me through benchmarks/cluster/run.sh (it starts PostgreSQL)")
    subprocess.run(["psql", server, "-qc", f"CREATE DATABASE {name}"], check=True)
    return server.rsplit("/", 1)[0] + "/" + name


def build():
    """What was measured: the binary's modification time and the checkout it was built in."""
    git = lambda *args: subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    built = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(BINARY.stat().st_mtime))
    dirty = " with uncommitted changes in the tree" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"{BINARY.name} built {built}; HEAD {git('rev-parse', '--short', 'HEAD')}{dirty}"


def postgres_version():
    server = os.environ["ANNEAL_TEST_POSTGRES"]
    out = subprocess.run(["psql", server, "-tAc", "SHOW server_version"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def jobs(cluster):
    """Submit -> RUNNING one at a time, then 50 queued jobs, over the cluster's nodes."""
    nodes = cluster.nodes
    for i, node in enumerate(nodes):
        node.wait(node.submit(f"warm{i}", cluster.package)["jobId"])
    recorded, observed, local = [], [], 0
    for i in range(SUBMITS):
        node = nodes[i % len(nodes)]
        job = f"s{i:03d}"
        sent = time.time()
        node.submit(job, cluster.package)
        while node.job(job)["state"] in ("QUEUED", "PREPARING"):
            time.sleep(0.005)
        observed.append(time.time() - sent)
        done = node.wait(job)
        assert done["state"] == "SUCCEEDED", done
        recorded.append(parse_time(done["startTime"]) - parse_time(done["createTime"]))
        local += done.get("node") == node.name

    ms = lambda values, p: round(percentile(values, p) * 1000, 1)
    rounds = [queue(cluster, r) for r in range(ROUNDS)]
    middle = sorted(rounds, key=lambda q: q["jobs_per_second"])[len(rounds) // 2]
    return {
        "submit_to_running_ms": {
            "jobs": SUBMITS,
            "server_recorded": {"p50": ms(recorded, 50), "p95": ms(recorded, 95), "max": ms(recorded, 100)},
            "client_observed": {"p50": ms(observed, 50), "p95": ms(observed, 95), "max": ms(observed, 100)},
            "ran_on_the_node_sent_to": local,
        },
        "queue": dict(middle, rounds_jobs_per_second=[q["jobs_per_second"] for q in rounds]),
    }


def queue(cluster, round_):
    """50 jobs submitted at once, alternating over the nodes; every one must run once."""
    nodes = cluster.nodes
    names = [f"q{round_}x{i:03d}" for i in range(QUEUED)]
    started = time.time()
    for i, name in enumerate(names):
        nodes[i % len(nodes)].submit(name, cluster.package)
    submitted = time.time() - started
    finished = [nodes[0].wait(name, poll=0.05) for name in names]
    states = [j["state"] for j in finished]
    server_wall = max(parse_time(j["endTime"]) for j in finished) - min(parse_time(j["createTime"]) for j in finished)
    reader = nodes[-1]
    runs = [reader.log_text(name).count(f"ran {name}") for name in names]
    ran_on = {}
    for j in finished:
        ran_on[j.get("node", "?")] = ran_on.get(j.get("node", "?"), 0) + 1
    waits = [parse_time(j["startTime"]) - parse_time(j["createTime"]) for j in finished]
    return {
        "jobs": QUEUED,
        "succeeded": states.count("SUCCEEDED"),
        "each_ran_once": runs == [1] * QUEUED,
        "ran_on": dict(sorted(ran_on.items())),
        "submit_seconds": round(submitted, 2),
        "server_wall_seconds": round(server_wall, 2),
        "jobs_per_second": round(QUEUED / server_wall, 1),
        "queue_wait_ms": {"p50": round(percentile(waits, 50) * 1000, 1), "p95": round(percentile(waits, 95) * 1000, 1)},
    }


def wrk(url, token, connections, body_file=None, duration=None):
    env = dict(os.environ, ANNEAL_TOKEN=token, BODY_FILE=str(body_file or ""))
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration or DURATION}s", "--timeout", "10s", "-s", str(HERE / "wrk.lua"), url],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )


def result(proc):
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])


def row(results, cpu):
    """One measurement from one or more wrk runs at the same time."""
    return {
        "cpu": cpu.stop(),
        "rps": round(sum(r["rps"] for r in results), 1),
        "p99_ms": [round(r["p99_us"] / 1000, 1) for r in results],
        "p50_ms": [round(r["p50_us"] / 1000, 1) for r in results],
        "errors": sum(r["errors"] for r in results),
    }


def predictions(work):
    """Predictions through one node and through two, and the HTTP floor."""
    cluster = Cluster(work, "serving", postgres_database("bench_serving"))
    exports = cluster.shared / "exports"
    subprocess.run([str(PYTHON), str(ROOT / "benchmarks" / "serving" / "make_models.py"), str(exports)], check=True)
    # The body is made here, as a client's json.dumps writes 784 floats (every digit), so this
    # benchmark's request stays the same whatever make_models.py writes for its own.
    rng = random.Random(0)
    body = exports / "small.full.json"
    body.write_text(json.dumps({"instances": [[rng.random() for _ in range(784)]]}))
    for folder in exports.rglob("*"):
        folder.chmod(0o755 if folder.is_dir() else 0o644)
    try:
        a = cluster.start("node-a", 1)
        a.call("POST", "/v1/projects/bench/models", {"name": "small"})
        op = a.call("POST", "/v1/projects/bench/models/small/versions", {"name": "v1", "deploymentUri": str(exports / "small")})
        while not a.call("GET", f"/v1/{op['name']}").get("done"):
            time.sleep(0.1)
        a.call("POST", "/v1/projects/bench/models/small/versions/v1:setDefault", {})
        path = "/v1/projects/bench/models/small:predict"
        instances = json.loads(body.read_text())
        assert a.status("POST", path, instances) == 200
        b = cluster.start("node-b", 1)
        # B loads every READY version it finds in the shared database (within about 2 s).
        deadline = time.time() + 60
        while b.status("POST", path, instances) != 200:
            assert time.time() < deadline, "node-b never served the version"
            time.sleep(0.2)
        for node in (a, b):
            result(wrk(node.base + path, node.token, 64, body, duration=2))  # warm-up
        cpu = Cpu()
        out = {"healthz_one_node_c64": row([result(wrk(a.base + "/healthz", a.token, 64))], cpu)}
        # The measures take turns, ROUNDS times, so a change in the machine's load spreads over all.
        measures = {
            "predict_one_node_c64": lambda: [wrk(a.base + path, a.token, 64, body)],
            "predict_one_node_2x_c32": lambda: [wrk(a.base + path, a.token, 32, body) for _ in range(2)],
            "predict_two_nodes_2x_c32": lambda: [wrk(node.base + path, node.token, 32, body) for node in (a, b)],
        }
        runs = {name: [] for name in measures}
        for _ in range(ROUNDS):
            for name, start in measures.items():
                cpu = Cpu()
                runs[name].append(row([result(p) for p in start()], cpu))
        for name, rows in runs.items():
            middle = sorted(rows, key=lambda r: r["rps"])[len(rows) // 2]
            out[name] = dict(middle, rounds_rps=[r["rps"] for r in rows])
        return out
    finally:
        cluster.stop()


def main():
    if sys.argv[1:] == ["--report"]:
        # Writes results.md again from results.json (after a change to the report's wording).
        results = json.loads((OUT / "results.json").read_text())
        (OUT / "results.md").write_text(report(results))
        return
    if not BINARY.exists():
        sys.exit("build first: cargo build --release -p server --bin anneal")
    work = pathlib.Path(tempfile.mkdtemp(prefix="anneal-cluster-"))
    started_load = load()
    results = {
        "machine": {
            "nproc": os.cpu_count(),
            "uname": f"{platform.system()} {platform.release()}",
            "arch": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "postgresql": postgres_version(),
            "load_at_start": started_load,
        },
        "build": build(),
        "command": "benchmarks/cluster/run.sh",
        "settings": {"submits": SUBMITS, "queued": QUEUED, "rounds": ROUNDS, "slots_in_all": SLOTS, "wrk_seconds": DURATION},
        "jobs": {},
    }
    try:
        setups = [
            ("sqlite_one_node", None, [("node-a", SLOTS)]),
            ("postgres_one_node", postgres_database("bench_one"), [("node-a", SLOTS)]),
            ("postgres_two_nodes", postgres_database("bench_two"), [("node-a", 1), ("node-b", 1)]),
        ]
        for name, url, nodes in setups:
            cluster = Cluster(work, name, url)
            cpu = Cpu()
            try:
                for node, slots in nodes:
                    cluster.start(node, slots)
                measured = jobs(cluster)
            finally:
                cluster.stop()
            measured["cpu"] = cpu.stop()
            results["jobs"][name] = measured
            print(name, json.dumps(measured), flush=True)
        results["predictions"] = predictions(work)
        print(json.dumps(results["predictions"]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["machine"]["load_at_end"] = load()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "results.md").write_text(report(results))
    print(report(results))


def report(r):
    m, j, p = r["machine"], r["jobs"], r["predictions"]
    labels = {
        "sqlite_one_node": "(a) one node, SQLite, 2 slots",
        "postgres_one_node": "(b) one node, PostgreSQL, 2 slots",
        "postgres_two_nodes": "(c) two nodes, one PostgreSQL, 1 + 1 slots",
    }
    latency = "\n".join(
        f"| {labels[k]} | {v['submit_to_running_ms']['server_recorded']['p50']} | {v['submit_to_running_ms']['server_recorded']['p95']} "
        f"| {v['submit_to_running_ms']['client_observed']['p50']} | {v['submit_to_running_ms']['client_observed']['p95']} "
        f"| {v['submit_to_running_ms']['ran_on_the_node_sent_to']}/{v['submit_to_running_ms']['jobs']} | {v['cpu']['others_cores']} |"
        for k, v in j.items()
    )
    queue = "\n".join(
        f"| {labels[k]} | {v['queue']['jobs_per_second']} | {v['queue']['server_wall_seconds']} s | {v['queue']['submit_seconds']} s "
        f"| {v['queue']['queue_wait_ms']['p50']} / {v['queue']['queue_wait_ms']['p95']} "
        f"| {v['queue']['succeeded']}/{v['queue']['jobs']}, once each: {v['queue']['each_ran_once']} "
        f"| {', '.join(f'{n} {c}' for n, c in v['queue']['ran_on'].items())} | {', '.join(map(str, v['queue']['rounds_jobs_per_second']))} |"
        for k, v in j.items()
    )
    serving_labels = {
        "healthz_one_node_c64": "GET /healthz, one node, 1 wrk at c=64 (HTTP floor)",
        "predict_one_node_c64": "predict, one node, 1 wrk at c=64",
        "predict_one_node_2x_c32": "predict, one node, 2 wrk at c=32 each",
        "predict_two_nodes_2x_c32": "predict, two nodes, 2 wrk at c=32 each (one per node)",
    }
    serving = "\n".join(
        f"| {serving_labels[k]} | {v['rps']} | {' / '.join(map(str, v['p50_ms']))} | {' / '.join(map(str, v['p99_ms']))} | {v['errors']} | {v['cpu']['others_cores']} | {', '.join(map(str, v.get('rounds_rps', [v['rps']])))} |"
        for k, v in p.items()
    )
    return f"""# Several nodes on one PostgreSQL: jobs and predictions

Reproduce from the repository root: `cargo build --release -p server --bin anneal && {r['command']}`
(writes `results.json` and this file; it starts its own PostgreSQL through `scripts/with-postgres.sh`
and its own nodes on free ports).

Machine: `nproc` {m['nproc']}, `uname -sr` {m['uname']} ({m['arch']}); {m['date']}; PostgreSQL
{m['postgresql']} (the throwaway server of `scripts/with-postgres.sh`: local, `fsync=off`).
Build: {r.get('build', 'not recorded')}.
Load average (1, 5, 15 min) at the start: {m['load_at_start']}; at the end: {m['load_at_end']} (it counts this
benchmark's own work too). The machine is shared with other engineers' builds and tests, so every
row gives "others' CPU": the cores that processes outside this benchmark (its script, nodes,
trainers, wrk and PostgreSQL) kept busy while that measure ran, out of {m['nproc']}. Authentication is on:
every request carries the admin token.

## Jobs: submit → RUNNING

{r['settings']['submits']} trivial jobs (a bare package folder whose module prints one line), submitted
one at a time on an idle cluster; in (c) they alternate between the nodes. Server-recorded is the
job's `startTime − createTime`; client-observed is what a client polling the node it submitted to
every 5 ms sees.

| Set-up | server p50 (ms) | server p95 (ms) | client p50 (ms) | client p95 (ms) | ran on the node sent to | others' CPU (cores) |
|---|---|---|---|---|---|---|
{latency}

## Jobs: 50 queued

{r['settings']['queued']} trivial jobs submitted at once (in (c) alternating between the nodes), {r['settings']['rounds']} rounds per
set-up; jobs per second from the first `createTime` to the last `endTime`, the median round in
the columns and every round in the last one; the wait is each job's `startTime − createTime`
(mostly its place in the queue). Each job's log, read through the last node started, must show
exactly one run.

| Set-up | jobs/s | wall | of it submitting | wait p50 / p95 (ms) | succeeded | ran on | jobs/s of each round |
|---|---|---|---|---|---|---|---|
{queue}

## Predictions

The small MLP (784 → 256 → 10) of `benchmarks/serving/make_models.py`, one instance per request as
`json.dumps` writes 784 random floats (full precision), POSTed to `models/small:predict` (the default
version) with the bearer token; wrk with one thread per wrk process, {r['settings']['wrk_seconds']} s per
run after a 2 s warm-up of each node. Both nodes run on PostgreSQL with one shared storage folder
throughout (node B loads the version node A deployed, from the shared database); "one node" sends
every request to node A. The three prediction measures take turns, {r['settings']['rounds']} rounds; the columns
give the median round, the last column every round. With two wrk at once, req/s is their sum and
the latencies are given per wrk.

| Measure | req/s | p50 (ms) | p99 (ms) | errors | others' CPU (cores) | req/s of each round |
|---|---|---|---|---|---|---|
{serving}

## Reading

{reading(r)}
"""


def spread(values):
    """How far the rounds of one measure lie apart, as a fraction of their median."""
    return (max(values) - min(values)) / statistics.median(values)


def compare(new, old):
    """`new` against `old` (medians of rounds), read against how far their own rounds lie apart."""
    ratio = new["value"] / old["value"] - 1
    noise = max(spread(new["rounds"]), spread(old["rounds"]), 0.10)
    if max(new["rounds"]) < min(old["rounds"]) or min(new["rounds"]) > max(old["rounds"]):
        side = "above" if ratio > 0 else "below"
        verdict = f"{'a gain' if ratio > 0 else 'a loss'}: every round lies {side} every round it is compared with"
    elif abs(ratio) <= noise:
        verdict = f"within the rounds' spread ({noise * 100:.0f} %): no difference this run can show"
    else:
        verdict = f"{'a gain' if ratio > 0 else 'a loss'} beyond the rounds' spread ({noise * 100:.0f} %)"
    return f"{ratio * 100:+.0f} %, {verdict}"


def reading(r):
    j, p, m = r["jobs"], r["predictions"], r["machine"]
    s = {k: v["submit_to_running_ms"]["server_recorded"] for k, v in j.items()}
    q = {k: {"value": v["queue"]["jobs_per_second"], "rounds": v["queue"]["rounds_jobs_per_second"]} for k, v in j.items()}
    w = {k: {"value": v["rps"], "rounds": v["rounds_rps"]} for k, v in p.items() if "rounds_rps" in v}
    one, same, two = w["predict_one_node_c64"], w["predict_one_node_2x_c32"], w["predict_two_nodes_2x_c32"]
    sent_to = j["postgres_two_nodes"]["submit_to_running_ms"]
    others = [v["cpu"]["others_cores"] for v in list(j.values()) + list(p.values())]
    worst = max(v["p95"] for v in s.values())
    if max(others) < 0.1:
        machine = f"The machine was otherwise idle (other processes used at most {max(others)} cores)."
    else:
        machine = f"Other processes kept {min(others)}–{max(others)} of the {m['nproc']} cores busy during the measures."
    return f"""This machine has {m['nproc']} cores. Both nodes, PostgreSQL, the trainers' Python processes and wrk all
run on them, so a second node adds no CPU here and no gain is expected; what follows says what was
measured. On one machine two nodes buy availability (either answers, either runs jobs, a lost
node's jobs end on the other); more throughput from a second node needs a second machine, which
this benchmark does not have. {machine} A difference is read
against how far the rounds of the same measure lie apart.

- Submit → RUNNING, server-recorded p50 / p95: SQLite {s['sqlite_one_node']['p50']} / {s['sqlite_one_node']['p95']} ms, PostgreSQL
  {s['postgres_one_node']['p50']} / {s['postgres_one_node']['p95']} ms, two nodes {s['postgres_two_nodes']['p50']} / {s['postgres_two_nodes']['p95']} ms; in (c) {sent_to['ran_on_the_node_sent_to']} of {sent_to['jobs']} jobs ran on the node
  they were sent to (it wakes its own scheduler; the other node would find the job at its next
  poll, within 1 s). PostgreSQL answers each statement over a TCP round trip where SQLite writes
  a local file. The worst p95, {worst} ms, is {'within' if worst <= 1000 else '**past**'} the 1 s target of `benchmarks/jobs`.
- 50 queued jobs: SQLite {q['sqlite_one_node']['value']}, PostgreSQL {q['postgres_one_node']['value']}, two nodes {q['postgres_two_nodes']['value']} jobs/s. PostgreSQL
  against SQLite: {compare(q['postgres_one_node'], q['sqlite_one_node'])}; two nodes against one on
  PostgreSQL: {compare(q['postgres_two_nodes'], q['postgres_one_node'])}. Every set-up runs two
  trainer processes at a time, each a Python process started and reaped on the shared cores.
- Predictions: one node {one['value']} req/s at c=64 (p99 {p['predict_one_node_c64']['p99_ms'][0]} ms), two nodes {two['value']} req/s at 2 × c=32
  (p99 {' / '.join(map(str, p['predict_two_nodes_2x_c32']['p99_ms']))} ms): {compare(two, one)}.
  Against the same two wrk on one node ({same['value']} req/s), the second node alone: {compare(two, same)}.
  Each node has its own model worker (`predict_workers` = 1 by default), so two nodes can run two
  forward passes at a time, but they share the two cores with each other and with wrk: a second
  process on the same cores is a cost here, not capacity. The HTTP
  floor of one node (GET /healthz) is {p['healthz_one_node_c64']['rps']} req/s, so the prediction's own work (reading 784
  full-precision numbers, the forward pass), not HTTP, sets the rate.
"""


if __name__ == "__main__":
    main()
