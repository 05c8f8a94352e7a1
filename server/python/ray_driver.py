"""Anneal's driver for one training job on Ray (the entrypoint of the Ray job Anneal submits).

Anneal ships this file, the job's spec (`anneal_job.json`) and the job's packages as the Ray
job's `working_dir` (Ray's package upload: no shared disk is assumed). The driver

1. creates a placement group with one bundle per replica (gang scheduling, `PACK` by default)
   and waits for it up to the spec's timeout; one that cannot be placed ends the job, saying what
   was asked for and what the cluster has (Ray itself would wait forever);
2. starts one actor per replica on its bundle; each actor installs the packages that need pip on
   its own node and runs the replica as `python -m <module> <args> --job-dir=...` with the same
   TF_CONFIG, MASTER_ADDR/MASTER_PORT (rank 0's node address and a free port there), RANK,
   WORLD_SIZE, LOCAL_RANK, CUDA_VISIBLE_DEVICES and CLOUD_ML_* variables as Anneal's local
   executor;
3. forwards every replica's output lines and hypertune metric reports on its own stdout, one JSON
   message per line after the marker `ANNEAL> ` (Anneal follows the Ray job's log and keeps them);
4. ends when the master exits 0 (success), a replica fails or is lost, or Ray stops the job
   (SIGTERM: every replica's process group is stopped and the placement group removed).

A batch prediction job (spec `kind` = "prediction") has one replica per shard whose `command`
is Anneal's own batch engine (`anneal ray-batch-shard SPEC`, the anneal binary on the node); the
node's PyTorch libraries (`torch/lib` of this Python) go on LD_LIBRARY_PATH for the libtorch the
binary links. It succeeds when every shard exits 0.

Messages: {"k": "log", "r": replica, "t": text}, {"k": "metric", "r": replica, "t": report line},
{"k": "running"}, {"k": "end", "ok": bool, "message": text}.
"""

import collections
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

MARK = "ANNEAL> "
CUT_MARK = " [line cut: longer than max_log_line_bytes]"
PR_SET_PDEATHSIG = 1


def emit(message):
    sys.stdout.write(MARK + json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def service(text):
    emit({"k": "log", "r": "service", "t": text})


def _die_with_parent():
    """In the replica, before exec: its own process group, and SIGKILL when its actor dies."""
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


@ray.remote(max_restarts=0)
class Replica:
    """One replica: its process on this actor's node, the lines it printed, its metric reports."""

    def __init__(self, task, max_line):
        self.task = task
        self.max_line = max_line
        self.lines = collections.deque()
        self.lock = threading.Lock()
        self.proc = None
        self.pumps = []
        self.metrics_file = None
        self.metrics_seen = set()

    def address(self):
        ip = ray.util.get_node_ip_address()
        with socket.socket() as s:
            s.bind((ip, 0))
            return ip, s.getsockname()[1]

    def _pump(self, stream):
        for raw in iter(lambda: stream.readline(self.max_line + 1), b""):
            cut = len(raw) > self.max_line and not raw.endswith(b"\n")
            if cut:
                # Skip the rest of the long line.
                while True:
                    rest = stream.readline(1 << 16)
                    if not rest or rest.endswith(b"\n"):
                        break
            text = raw.rstrip(b"\n").rstrip(b"\r").decode("utf-8", "replace")
            if cut:
                text = text[: self.max_line] + CUT_MARK
            with self.lock:
                self.lines.append(text)

    def start(self, module, args, env, packages, gpus, command=None):
        """Installs what needs pip (into this replica's own folder), then starts the replica
        (`python -m module args`, or `command` as it is)."""
        base = os.getcwd()
        own = os.path.join(base, "replicas", self.task)
        os.makedirs(own, exist_ok=True)
        path = []
        for i, package in enumerate(packages):
            where = os.path.join(base, package["path"])
            if not package["install"]:
                path.append(where)
                continue
            target = os.path.join(own, "env-%d" % i)
            if package.get("file"):
                # An sdist or a wheel (the form gcloud and the CLI upload), in its own folder.
                source = os.path.join(where, package["file"])
            else:
                # A project folder: pip builds it in place, and several replicas may share this
                # node's copy.
                source = os.path.join(own, "src-%d" % i)
                shutil.copytree(where, source, dirs_exist_ok=True)
            done = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "--no-cache-dir", "--no-deps", "--no-build-isolation", "--target", target, source],
                stdin=subprocess.DEVNULL, capture_output=True, text=True,
            )
            if done.returncode != 0:
                last = "\n".join(done.stderr.strip().splitlines()[-8:])
                return "Installing the packages failed on %s (pip exit %d): %s" % (
                    ray.util.get_node_ip_address(), done.returncode, last)
            path.append(target)
        full = dict(os.environ)
        full.update(env)
        full["PYTHONPATH"] = os.pathsep.join(path)
        full["PYTHONUNBUFFERED"] = "1"
        full["CLOUD_ML_HP_METRIC_FILE"] = os.path.join(own, "hypertune.metrics")
        # A replica sees the GPUs Ray gave its bundle and no others.
        full["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "") if gpus else ""
        self.metrics_file = full["CLOUD_ML_HP_METRIC_FILE"]
        if command:
            torch_lib = _torch_lib()
            if torch_lib:
                full["LD_LIBRARY_PATH"] = os.pathsep.join(
                    p for p in (torch_lib, os.environ.get("LD_LIBRARY_PATH", "")) if p)
        if env.get("ANNEAL_JOB_DIR"):
            os.makedirs(env["ANNEAL_JOB_DIR"], exist_ok=True)
        try:
            argv = list(command) if command else [sys.executable, "-m", module] + list(args)
            self.proc = subprocess.Popen(
                argv, cwd=own, env=full,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,
            )
        except OSError as e:
            return "cannot start %s: %s" % (self.task, e)
        for stream in (self.proc.stdout, self.proc.stderr):
            pump = threading.Thread(target=self._pump, args=(stream,), daemon=True)
            pump.start()
            self.pumps.append(pump)
        return None

    def _new_metrics(self):
        if not self.metrics_file:
            return []
        try:
            with open(self.metrics_file, encoding="utf-8", errors="replace") as f:
                lines = f.read(4 << 20).splitlines()
        except OSError:
            return []
        fresh = [line for line in lines if line.strip() and line not in self.metrics_seen]
        self.metrics_seen.update(fresh)
        return fresh

    def poll(self):
        """What is new: output lines, metric reports, and the exit status once all is read."""
        code = None
        if self.proc is not None and self.proc.poll() is not None:
            deadline = time.monotonic() + 2
            for pump in self.pumps:
                pump.join(max(0.0, deadline - time.monotonic()))
            code = self.proc.returncode
        with self.lock:
            lines = list(self.lines)
            self.lines.clear()
        return {"lines": lines, "metrics": self._new_metrics(), "exit": code}

    def stop(self, grace):
        """SIGTERM to the replica's process group, SIGKILL after `grace` seconds."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()


def _torch_lib():
    """This Python's PyTorch library folder (without importing torch), or None."""
    import importlib.util
    try:
        found = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    lib = os.path.join(list(found.submodule_search_locations)[0], "lib")
    return lib if os.path.isdir(lib) else None


def describe(code):
    return "exit code %d" % code if code >= 0 else "signal %d" % -code


def resources_text(resources):
    shown = []
    for key in ("CPU", "GPU", "memory"):
        if key in resources:
            value = resources[key]
            if key == "memory":
                shown.append("%.1f GB memory" % (value / 1e9))
            else:
                shown.append("%g %s" % (value, key))
    return ", ".join(shown) or "nothing"


class Job:
    def __init__(self, spec):
        self.spec = spec
        self.stopping = False
        self.pg = None
        self.actors = []
        self.tail = collections.deque(maxlen=10)
        # Replicas whose exit was seen (a worker that finished before the master).
        self.done = set()

    def on_stop(self, *_):
        self.stopping = True

    def finish(self, ok, message):
        grace = float(self.spec.get("killGrace", 2))
        for actor in self.actors:
            try:
                ray.get(actor.stop.remote(grace), timeout=grace + 10)
            except RayError:
                pass
        # What the replicas printed while they stopped.
        self.forward(final=True)
        for actor in self.actors:
            ray.kill(actor)
        if self.pg is not None:
            remove_placement_group(self.pg)
        emit({"k": "end", "ok": ok, "message": message})
        sys.exit(0 if ok else 1)

    def forward(self, final=False):
        """Polls every replica; returns (index, exit code) of those that ended, or raises Lost."""
        ended = []
        refs = [(i, actor.poll.remote()) for i, actor in enumerate(self.actors) if final or i not in self.done]
        for i, ref in refs:
            task = self.spec["replicas"][i]["task"]
            try:
                result = ray.get(ref, timeout=60)
            except (RayActorError, GetTimeoutError) as e:
                if final:
                    continue
                raise Lost(task, e)
            for line in result["lines"]:
                self.tail.append("%s: %s" % (task, line))
                emit({"k": "log", "r": task, "t": line})
            for line in result["metrics"]:
                emit({"k": "metric", "r": task, "t": line})
            if result["exit"] is not None and i not in self.done:
                self.done.add(i)
                ended.append((i, result["exit"]))
        return ended

    def place(self):
        replicas = self.spec["replicas"]
        bundles = []
        for replica in replicas:
            bundle = {"CPU": float(replica["cpus"])}
            if replica["gpus"]:
                bundle["GPU"] = float(replica["gpus"])
            if replica.get("memory"):
                bundle["memory"] = float(replica["memory"])
            bundles.append(bundle)
        strategy = self.spec.get("strategy", "PACK")
        timeout = float(self.spec["placementTimeout"])
        shown = collections.Counter(resources_text(b) for b in bundles)
        service("Waiting up to %g s for a placement group of %d bundles (%s: %s) on Ray." % (
            timeout, len(bundles), strategy, "; ".join("%d x %s" % (n, b) for b, n in shown.items())))
        self.pg = placement_group(bundles, strategy=strategy, name=self.spec["submissionId"])
        deadline = time.monotonic() + timeout
        while not self.pg.wait(1):
            if self.stopping:
                self.finish(False, "Stopped before its replicas were placed.")
            if time.monotonic() > deadline:
                asked = collections.Counter()
                for bundle in bundles:
                    asked.update(bundle)
                total, free = ray.cluster_resources(), ray.available_resources()
                nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
                fits = all(total.get(k, 0) >= v for k, v in asked.items())
                why = ("the cluster is busy" if fits else "the cluster does not have that much")
                shapes = sorted({json.dumps(b, sort_keys=True) for b in bundles})
                self.finish(False, (
                    "The Ray cluster could not place the job's %d replicas within %g s (%s): asked for "
                    "%d bundles of %s (%s), %s in all; the cluster has %s in all (%s free) on %d node%s."
                ) % (len(bundles), timeout, why, len(bundles), " or ".join(shapes), strategy,
                     resources_text(asked), resources_text(total), resources_text(free), nodes,
                     "" if nodes == 1 else "s"))
        return bundles

    def run(self):
        spec = self.spec
        bundles = self.place()
        max_line = int(spec.get("maxLogLine", 65536))
        # A Ray worker process can die while it starts (before it runs anything of the job): the
        # actors are created again once before the job fails.
        for attempt in (1, 2):
            for i, (replica, bundle) in enumerate(zip(spec["replicas"], bundles)):
                strategy = PlacementGroupSchedulingStrategy(placement_group=self.pg, placement_group_bundle_index=i)
                self.actors.append(Replica.options(
                    num_cpus=bundle["CPU"], num_gpus=bundle.get("GPU", 0), memory=bundle.get("memory"),
                    scheduling_strategy=strategy,
                    name=None,
                ).remote(replica["task"], max_line))
            try:
                addresses = ray.get([a.address.remote() for a in self.actors], timeout=300)
                break
            except RayActorError as e:
                if attempt == 2 or self.stopping:
                    self.finish(False, "The replicas' Ray workers did not start: %s" % e)
                service("A Ray worker died while it started (%s); starting the replicas' workers again." % (
                    str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
                for actor in self.actors:
                    ray.kill(actor)
                self.actors = []
            except GetTimeoutError as e:
                self.finish(False, "The replicas' Ray workers did not start: %s" % e)
        cluster = collections.OrderedDict()
        for replica, (ip, port) in zip(spec["replicas"], addresses):
            cluster.setdefault(replica["type"], []).append("%s:%d" % (ip, port))
        cluster.setdefault("master", [])
        master_ip, master_port = addresses[0]
        world = sum(1 for r in spec["replicas"] if r["rank"] is not None)
        nodes = sorted({ip for ip, _ in addresses})
        service("Placed %d replicas on %d node%s: %s." % (
            len(addresses), len(nodes), "" if len(nodes) == 1 else "s", ", ".join(nodes)))
        starts = []
        for replica, actor in zip(spec["replicas"], self.actors):
            task = {"type": replica["type"], "index": replica["index"]}
            if spec.get("trial"):
                task["trial"] = spec["trial"]
            env = {
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": task, "job": spec["tfConfigJob"],
                                         "environment": "cloud"}),
                "CLOUD_ML_JOB_ID": spec["jobId"],
                "MASTER_ADDR": master_ip,
                "MASTER_PORT": str(master_port),
                "WORLD_SIZE": str(world),
                "LOCAL_RANK": "0",
                "ANNEAL_JOB": spec["tag"],
            }
            if replica["rank"] is not None:
                env["RANK"] = str(replica["rank"])
            if spec.get("trial"):
                env["CLOUD_ML_TRIAL_ID"] = spec["trial"]
            env.update(spec.get("env") or {})
            args = list(spec["args"])
            if spec.get("jobDir"):
                if spec.get("jobDirLocal"):
                    env["ANNEAL_JOB_DIR"] = spec["jobDir"]
                args.append("--job-dir=%s" % spec["jobDir"])
            starts.append(actor.start.remote(spec["module"], args, env, spec["packages"], replica["gpus"],
                                             replica.get("command")))
        for replica, ref in zip(spec["replicas"], starts):
            try:
                failed = ray.get(ref)
            except RayError as e:
                failed = "Replica %s was lost while it started: %s" % (replica["task"], e)
            if failed:
                self.finish(False, failed)
        emit({"k": "running"})
        alive = len(self.actors)
        # A prediction job's shards all have to finish; a training job ends with its master.
        every = spec.get("kind") == "prediction"
        while True:
            if self.stopping:
                self.finish(False, "Stopped by Ray (the job was cancelled).")
            try:
                ended = self.forward()
            except Lost as lost:
                self.finish(False, str(lost))
            for i, code in ended:
                task = spec["replicas"][i]["task"]
                alive -= 1
                if code == 0:
                    if every and alive == 0:
                        self.finish(True, "")
                    if every:
                        continue
                    if i == 0:
                        self.finish(True, "")
                    if alive == 0:
                        self.finish(False, "the master replica did not finish")
                    continue
                last = "\n".join(self.tail)
                self.finish(False, "Replica %s exited with %s. Last log lines:\n%s" % (task, describe(code), last))
            time.sleep(0.2)


class Lost(Exception):
    def __init__(self, task, error):
        super().__init__("Replica %s was lost: its Ray worker or node died (%s)." % (
            task, str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__))


def main():
    with open("anneal_job.json", encoding="utf-8") as f:
        spec = json.load(f)
    job = Job(spec)
    ray.init(log_to_driver=False)
    # After ray.init: Ray's core worker installs its own SIGTERM handler (it prints a stack and
    # exits), which would end the driver before it stops the replicas and forwards their last
    # lines.
    signal.signal(signal.SIGTERM, job.on_stop)
    signal.signal(signal.SIGINT, job.on_stop)
    job.run()


if __name__ == "__main__":
    main()
