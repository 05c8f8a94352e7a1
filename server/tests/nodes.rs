//! Several `anneal serve` nodes on one PostgreSQL database and one shared storage folder, as real
//! processes: a job runs exactly once whichever node it is sent to, queued jobs start in priority
//! order across nodes, a node killed with SIGKILL has its job ended FAILED by a survivor naming
//! it, versions deployed or deleted on one node are served (or not) by the others, and logs read
//! from any node.
//!
//! Needs `ANNEAL_TEST_POSTGRES` (a server URL whose user may create databases), which
//! `scripts/with-postgres.sh` sets for the PostgreSQL pass of `make test`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

/// The lease the nodes run with here: short, so a lost node is noticed quickly.
const LEASE_SECS: u64 = 3;

/// The nodes of one test: their database, shared storage and the first node's admin token.
struct Cluster {
    url: String,
    storage: tempfile::TempDir,
    /// Trainer packages every node may name (a storage root of each).
    shared: tempfile::TempDir,
    token: Option<String>,
}

impl Cluster {
    async fn new() -> Self {
        Self {
            url: common::fresh_postgres_database().await,
            storage: tempfile::tempdir().expect("storage"),
            shared: tempfile::tempdir().expect("shared"),
            token: None,
        }
    }

    /// Starts node `name` with `slots` training slots.
    async fn node(&mut self, name: &str, slots: &str) -> TestServer {
        self.node_with(name, slots, &[]).await
    }

    /// The environment of node `name`, with `extra` settings after (and over) the cluster's.
    fn settings(&self, name: &str, slots: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut envs: Vec<(String, String)> = [
            ("ANNEAL_DATABASE_URL", self.url.clone()),
            ("ANNEAL_STORAGE_DIR", self.storage.path().display().to_string()),
            ("ANNEAL_STORAGE_ROOTS", format!("[{}]", self.shared.path().display())),
            ("ANNEAL_NODE_ID", name.to_owned()),
            ("ANNEAL_NODE_LEASE_SECS", LEASE_SECS.to_string()),
            ("ANNEAL_TRAINING_SLOTS", slots.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        envs.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        envs
    }

    /// Starts node `name` with `slots` training slots and `extra` settings.
    async fn node_with(&mut self, name: &str, slots: &str, extra: &[(&str, &str)]) -> TestServer {
        let data = tempfile::tempdir().expect("data dir");
        if let Some(token) = &self.token {
            // The first node made the admin token; the others use it (it is in the database).
            std::fs::write(data.path().join("admin.token"), token).expect("token");
        }
        let settings = self.settings(name, slots, extra);
        let envs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let server = TestServer::start_in(data, &[], &envs).await;
        if self.token.is_none() {
            self.token = Some(server.admin_token().to_owned());
        }
        server
    }

    /// A trainer package in the shared folder (every node may name it).
    fn trainer(&self, name: &str, source: &str) -> String {
        let root = self.shared.path().join("packages").join(name);
        std::fs::create_dir_all(root.join(name)).expect("mkdir");
        std::fs::write(root.join(name).join("__init__.py"), "").expect("init");
        std::fs::write(root.join(name).join("task.py"), source).expect("task");
        root.display().to_string()
    }
}

fn input(package: &str, module: &str, priority: i64) -> Value {
    json!({"packageUris": [package], "pythonModule": module, "scheduling": {"priority": priority}})
}

async fn log_text(server: &TestServer, job: &str) -> String {
    let (_, logs) = server.get_json(&format!("/v1/projects/p/jobs/{job}/logs")).await;
    logs["lines"].as_array().into_iter().flatten().map(|l| format!("{}\n", l["text"].as_str().unwrap_or(""))).collect()
}

#[tokio::test]
async fn jobs_run_once_in_priority_order_across_nodes_and_logs_read_anywhere() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "1").await;
    let b = cluster.node("node-b", "1").await;
    let (_, nodes) = b.get_json("/v1/nodes").await;
    let names: Vec<&str> =
        nodes["nodes"].as_array().expect("nodes").iter().filter_map(|n| n["name"].as_str()).collect();
    assert_eq!(names, ["node-a", "node-b"], "{nodes}");

    // Both slots held until the gate opens, so every job below queues first.
    let gate = cluster.shared.path().join("gate");
    let holder = cluster.trainer(
        "holder",
        &format!(
            "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.05)\n",
            gate.display().to_string()
        ),
    );
    let (status, body) = a.submit_training("hold_a", input(&holder, "holder.task", 1000)).await;
    assert_eq!(status, 200, "{body}");
    a.wait_job("hold_a", &["RUNNING"]).await;
    assert_eq!(b.submit_training("hold_b", input(&holder, "holder.task", 1000)).await.0, 200);
    b.wait_job("hold_b", &["RUNNING"]).await;

    let quick = cluster.trainer("quick", "import os\nprint('ran', os.environ['CLOUD_ML_JOB_ID'], flush=True)\n");
    let mut expected = Vec::new();
    for i in 0..50 {
        let priority = (i * 37 % 11) * 50;
        let job = format!("j{i:02}");
        let node = if i % 2 == 0 { &a } else { &b };
        let (status, body) = node.submit_training(&job, input(&quick, "quick.task", priority)).await;
        assert_eq!(status, 200, "{body}");
        expected.push((-priority, i, job));
    }
    expected.sort();
    std::fs::write(&gate, "").expect("open the gate");

    let mut started = Vec::new();
    let mut ran_on = std::collections::BTreeMap::<String, usize>::new();
    for (_, _, job) in &expected {
        let done = a.wait_job(job, &["SUCCEEDED", "FAILED", "CANCELLED"]).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}");
        started.push((done["startTime"].as_str().expect("startTime").to_owned(), job.clone()));
        *ran_on.entry(done["node"].as_str().expect("the node that ran it").to_owned()).or_default() += 1;
        // Exactly one run, and its log reads the same from either node.
        let from_b = log_text(&b, job).await;
        assert_eq!(from_b.matches(&format!("ran {job}")).count(), 1, "{job}: {from_b}");
        assert_eq!(log_text(&a, job).await, from_b);
    }
    assert_eq!(ran_on.len(), 2, "both nodes ran jobs: {ran_on:?}");
    started.sort();
    for (place, (_, job)) in started.iter().enumerate() {
        let wanted = expected.iter().position(|(_, _, j)| j == job).expect("known job");
        // Two nodes start two jobs at about the same moment: neighbours may swap.
        assert!(place.abs_diff(wanted) <= 2, "{job} started {place}th, its priority puts it {wanted}th: {started:?}");
    }
}

#[tokio::test]
async fn a_killed_nodes_job_fails_on_a_survivor_naming_it() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "1").await;
    let b = cluster.node("node-b", "1").await;
    let long = cluster.trainer(
        "long",
        "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('working', flush=True)\ntime.sleep(60)\n",
    );
    assert_eq!(a.submit_training("long", input(&long, "long.task", 0)).await.0, 200);
    let running = a.wait_job("long", &["RUNNING"]).await;
    // Either node may claim a queued job: the one that runs it is killed, the other survives.
    let (victim, survivor, lost) = match running["node"].as_str() {
        Some("node-a") => (a, b, "node-a"),
        Some("node-b") => (b, a, "node-b"),
        _ => panic!("no node runs the job: {running}"),
    };
    let pid_file = cluster.storage.path().join("jobs/p/long/replicas/master-replica-0/pid");

    let killed = Instant::now();
    let _data = victim.crash_keeping_data().await;
    let deadline = Duration::from_secs(3 * LEASE_SECS + 10);
    let failed = loop {
        let (_, job) = survivor.get_json("/v1/projects/p/jobs/long").await;
        if job["state"] != "RUNNING" {
            break job;
        }
        assert!(killed.elapsed() < deadline, "the job outlived its node by {deadline:?}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let message = failed["errorMessage"].as_str().expect("errorMessage");
    assert!(message.contains(&format!("Node {lost}")) && message.contains("lost"), "{message}");
    let (_, nodes) = survivor.get_json("/v1/nodes").await;
    assert_eq!(nodes["nodes"].as_array().expect("nodes").len(), 1, "only the survivor is live: {nodes}");
    // The replica of the killed node is an orphan of this test now: stop it.
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let _ = std::process::Command::new("kill").args(["-9", pid.trim()]).output();
    }
}

#[tokio::test]
async fn versions_deployed_or_deleted_on_one_node_are_served_or_not_by_the_others() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "1").await;
    let b = cluster.node("node-b", "1").await;
    a.create_model("m").await;
    for version in ["v1", "v2"] {
        let op = a.deploy("m", version, "mlp").await;
        assert!(op["error"].is_null(), "{op}");
    }
    let instances = json!({"instances": [[0.1, 0.2, 0.3, 0.4]]});
    let path = "/v1/projects/p/models/m/versions/v2:predict";
    let (status, on_a) = a.post_json(path, &instances).await;
    assert_eq!(status, 200, "{on_a}");
    let on_b = answers_within(&b, path, &instances, 200).await;
    assert_eq!(on_b["predictions"], on_a["predictions"], "the same model answers on both nodes");

    let (status, op) = b.delete_json("/v1/projects/p/models/m/versions/v2").await;
    assert_eq!(status, 200, "{op}");
    b.wait_operation(op["name"].as_str().expect("operation")).await;
    let gone = answers_within(&a, path, &instances, 404).await;
    assert!(gone.to_string().contains("v2"), "{gone}");
    assert!(Path::new(&cluster.storage.path().join("models")).exists());
}

/// Posts `body` to `path` until the answer's status is `wanted` (20 s at most); its body.
async fn answers_within(server: &TestServer, path: &str, body: &Value, wanted: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, answer) = server.post_json(path, body).await;
        if status == wanted {
            return answer;
        }
        assert!(Instant::now() < deadline, "still {status}, not {wanted}: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether this test process runs as root (effective uid 0, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Polls job `job` of `project` until it ended; returns it.
async fn wait_ended(server: &TestServer, project: &str, job: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (status, body) = server.get_json(&format!("/v1/projects/{project}/jobs/{job}")).await;
        assert_eq!(status, 200, "{body}");
        if ["SUCCEEDED", "FAILED", "CANCELLED"].iter().any(|s| body["state"] == *s) {
            return body;
        }
        assert!(Instant::now() < deadline, "{project}/{job} did not end: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// As root, a project's user code runs as a uid of its own, allocated once for the cluster: the
/// first jobs of 40 new projects, sent at once to both nodes (two per project), all run, 40
/// projects get 40 different uids, and both of a project's jobs run as the same one whichever
/// node ran each.
#[tokio::test]
async fn new_projects_started_at_once_on_two_nodes_get_one_distinct_uid_each() {
    if !running_as_root() {
        println!("skipped: not root (projects run as uids of their own only as root)");
        return;
    }
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "4").await;
    let b = cluster.node("node-b", "4").await;
    let whoami = cluster.trainer("whoami", "import os\nprint('uid', os.getuid(), flush=True)\n");
    let projects: Vec<String> = (0..40).map(|i| format!("tenant{i:02}")).collect();
    let submits = projects.iter().flat_map(|project| {
        [(&a, project, "on_a"), (&b, project, "on_b")].map(|(node, project, job)| {
            let body = json!({"jobId": job, "trainingInput": input(&whoami, "whoami.task", 0)});
            async move { (project, job, node.post_json(&format!("/v1/projects/{project}/jobs"), &body).await) }
        })
    });
    for (project, job, (status, body)) in futures_util::future::join_all(submits).await {
        assert_eq!(status, 200, "{project}/{job}: {body}");
    }
    let mut uids = std::collections::BTreeMap::<u32, String>::new();
    let mut across_nodes = 0;
    for project in &projects {
        let mut seen = Vec::new();
        for job in ["on_a", "on_b"] {
            let done = wait_ended(&a, project, job).await;
            assert_eq!(done["state"], "SUCCEEDED", "{project}/{job}: {done}");
            let (_, logs) = b.get_json(&format!("/v1/projects/{project}/jobs/{job}/logs")).await;
            let uid: u32 = logs["lines"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|l| l["text"].as_str()?.strip_prefix("uid ")?.trim().parse().ok())
                .unwrap_or_else(|| panic!("{project}/{job} printed no uid: {logs}"));
            seen.push((uid, done["node"].as_str().unwrap_or_default().to_owned()));
        }
        assert_eq!(seen[0].0, seen[1].0, "{project}'s two jobs ran as different uids: {seen:?}");
        assert_ne!(seen[0].0, 0, "{project} ran as root");
        if seen[0].1 != seen[1].1 {
            across_nodes += 1;
        }
        if let Some(other) = uids.insert(seen[0].0, project.clone()) {
            panic!("{project} and {other} both run as uid {}", seen[0].0);
        }
    }
    assert_eq!(uids.len(), 40);
    assert!(across_nodes > 0, "no project had a job on each node: the test proved nothing about agreement");
    println!("40 projects, 40 uids; {across_nodes} projects ran a job on each node");
}

/// Whether process `pid` is alive (not a zombie).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// The pid a `long` trainer wrote in its replica folder, once it has.
async fn replica_pid(cluster: &Cluster, job: &str) -> i32 {
    let file = cluster.storage.path().join(format!("jobs/p/{job}/replicas/master-replica-0/pid"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(pid) = std::fs::read_to_string(&file).ok().and_then(|t| t.trim().parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "{job} wrote no pid");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const LONG: &str =
    "import os, time\nopen('pid', 'w').write(str(os.getpid()))\nprint('working', flush=True)\ntime.sleep(120)\n";

/// A cancel sent to the node that does not run the job stops the replicas on the one that does,
/// within two lease periods, and the job ends CANCELLED.
#[tokio::test]
async fn a_cancel_sent_to_another_node_stops_the_replicas() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "1").await;
    let b = cluster.node("node-b", "1").await;
    let long = cluster.trainer("long", LONG);
    assert_eq!(a.submit_training("far", input(&long, "long.task", 0)).await.0, 200);
    let running = a.wait_job("far", &["RUNNING"]).await;
    let pid = replica_pid(&cluster, "far").await;
    // The cancel goes to the node that does not run the job.
    let other = if running["node"] == "node-a" { &b } else { &a };
    let sent = Instant::now();
    let (status, body) = other.post_json("/v1/projects/p/jobs/far:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    while alive(pid) {
        assert!(sent.elapsed() < Duration::from_secs(2 * LEASE_SECS), "the replica outlived the cancel by two leases");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped = sent.elapsed();
    let done = other.wait_job("far", &["CANCELLED", "FAILED", "SUCCEEDED"]).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    println!("the replica stopped {stopped:?} after a cancel sent to the other node (lease {LEASE_SECS} s)");
}

/// A second node started with the name of a live node refuses to start, naming it.
#[tokio::test]
async fn a_second_node_with_a_live_nodes_name_refuses_to_start() {
    let mut cluster = Cluster::new().await;
    let _a = cluster.node("node-a", "1").await;
    let data = tempfile::tempdir().expect("data dir");
    std::fs::write(data.path().join("admin.token"), cluster.token.as_deref().expect("token")).expect("token");
    let settings = cluster.settings("node-a", "1", &[]);
    let envs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = data.path().display().to_string();
    let (code, _, stderr) = common::run_anneal(&["serve", "--addr", "127.0.0.1:0", "--data-dir", &dir], &envs).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("node id 'node-a' belongs to another live node"), "{stderr}");
}

/// The lease of the node the fencing test cuts off: with no kill grace it fences after two thirds
/// of it (one missed heartbeat and more), two seconds before its claims lapse.
const FENCED_LEASE_SECS: u64 = 6;

/// A node cut off from PostgreSQL (through a proxy the test cuts) stops its replica itself
/// before the surviving node may end the job, which then ends FAILED.
#[tokio::test]
async fn a_node_cut_off_from_the_database_stops_its_replicas_before_the_survivor_ends_the_job() {
    let mut cluster = Cluster::new().await;
    let address = cluster.url.split('@').nth(1).and_then(|rest| rest.split('/').next()).expect("host:port").to_owned();
    let proxy = common::proxy::Proxy::start(&address).await;
    let through_proxy = cluster.url.replacen(&address, &proxy.address, 1);
    let cut_off = cluster
        .node_with(
            "node-a",
            "1",
            &[
                ("ANNEAL_DATABASE_URL", &through_proxy),
                ("ANNEAL_KILL_GRACE_SECS", "0"),
                ("ANNEAL_NODE_LEASE_SECS", &FENCED_LEASE_SECS.to_string()),
            ],
        )
        .await;
    let long = cluster.trainer("long", LONG);
    assert_eq!(cut_off.submit_training("fenced", input(&long, "long.task", 0)).await.0, 200);
    let running = cut_off.wait_job("fenced", &["RUNNING"]).await;
    assert_eq!(running["node"], "node-a", "{running}");
    let pid = replica_pid(&cluster, "fenced").await;
    let survivor = cluster.node("node-b", "1").await;

    proxy.cut();
    let cut = Instant::now();
    let mut stopped = None;
    let ended = loop {
        if stopped.is_none() && !alive(pid) {
            stopped = Some(cut.elapsed());
        }
        let (_, job) = survivor.get_json("/v1/projects/p/jobs/fenced").await;
        if job["state"] != "RUNNING" {
            break (cut.elapsed(), job);
        }
        assert!(cut.elapsed() < Duration::from_secs(3 * FENCED_LEASE_SECS), "the job outlived its node: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stopped = stopped.expect("the replica was still running when the survivor ended the job");
    assert_eq!(ended.1["state"], "FAILED", "{}", ended.1);
    println!(
        "cut off at 0: replica stopped by its own node after {stopped:?}, job ended by the survivor after {:?} (lease {FENCED_LEASE_SECS} s, no kill grace)",
        ended.0
    );
    proxy.restore();
}

/// A version a node was creating when it was killed (its custom routine still loading) ends
/// FAILED on a survivor naming the lost node, and so does its operation; neither stays CREATING.
#[tokio::test]
async fn a_version_a_lost_node_was_creating_ends_failed_on_a_survivor() {
    let mut cluster = Cluster::new().await;
    let a = cluster.node("node-a", "1").await;
    let b = cluster.node("node-b", "1").await;
    let package = cluster.shared.path().join("slow_routine");
    std::fs::create_dir_all(package.join("slow_routine")).expect("mkdir");
    std::fs::write(
        package.join("setup.py"),
        "from setuptools import setup\nsetup(name='slow_routine', version='1.0', packages=['slow_routine'])\n",
    )
    .expect("setup.py");
    std::fs::write(package.join("slow_routine/__init__.py"), "").expect("init");
    std::fs::write(
        package.join("slow_routine/predictor.py"),
        "import time\nclass Slow:\n    @classmethod\n    def from_path(cls, model_dir):\n        time.sleep(30)\n        return cls()\n    def predict(self, instances, **kwargs):\n        return instances\n",
    )
    .expect("predictor");
    let model_dir = cluster.shared.path().join("slow_model");
    std::fs::create_dir_all(&model_dir).expect("mkdir");
    std::fs::write(model_dir.join("weights.txt"), "none").expect("model file");
    let (status, body) = a.post_json("/v1/projects/p/models", &json!({"name": "m"})).await;
    assert_eq!(status, 200, "{body}");
    let (status, op) = a
        .post_json(
            "/v1/projects/p/models/m/versions",
            &json!({"name": "slow", "deploymentUri": model_dir.display().to_string(), "framework": "SCIKIT_LEARN",
                    "predictionClass": "slow_routine.predictor.Slow", "packageUris": [package.display().to_string()]}),
        )
        .await;
    assert_eq!(status, 200, "{op}");
    let (_, version) = b.get_json("/v1/projects/p/models/m/versions/slow").await;
    assert_eq!(version["state"], "CREATING", "{version}");

    let killed = Instant::now();
    let _data = a.crash_keeping_data().await;
    let deadline = Duration::from_secs(3 * LEASE_SECS + 10);
    let failed = loop {
        let (_, version) = b.get_json("/v1/projects/p/models/m/versions/slow").await;
        if version["state"] != "CREATING" {
            break version;
        }
        assert!(killed.elapsed() < deadline, "the version stayed CREATING after its node was lost: {version}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let message = failed["errorMessage"].as_str().unwrap_or_default();
    assert!(message.contains("node-a") && message.contains("lost"), "{message}");
    let done = b.wait_operation(op["name"].as_str().expect("operation name")).await;
    assert!(done["error"]["message"].as_str().unwrap_or_default().contains("node-a"), "{done}");
}
