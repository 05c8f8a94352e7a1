//! Training jobs on a real Ray cluster (`executor = "ray"`) through the real server: the
//! two-replica DDP example, a failing replica, cancel (no replica process or placement group
//! left), an infeasible placement request, logs followed while the job runs, a server restarted
//! while its Ray job runs, and the head going away and coming back; a tuning study's trials as
//! Ray jobs of their own (and cancelling it stops them); batch prediction spread over
//! two Ray workers running Anneal's own engine (outputs against the expected predictions, live
//! counts, cancel, a model that cannot load), and with its model, inputs and output in a bucket
//! (moto on 127.0.0.1) that the shards read and write themselves.
//!
//! The cluster is the single-node head `scripts/with-ray.sh` starts on 127.0.0.1 with token
//! authentication (`make test` runs this suite inside it); its address, token and Python come in
//! `ANNEAL_TEST_RAY_ADDRESS`, `ANNEAL_TEST_RAY_TOKEN` and `ANNEAL_TEST_RAY_PYTHON`.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

/// The test cluster: (Jobs API address, token, Python).
fn cluster() -> (String, String, String) {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| panic!("{name} is not set: run the tests through scripts/with-ray.sh (make test does)"))
    };
    (var("ANNEAL_TEST_RAY_ADDRESS"), var("ANNEAL_TEST_RAY_TOKEN"), var("ANNEAL_TEST_RAY_PYTHON"))
}

/// Logical CPUs of the test cluster (scripts/with-ray.sh).
fn cluster_cpus() -> usize {
    std::env::var("ANNEAL_TEST_RAY_CPUS").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

/// The settings of a server on the test cluster, at `address` (the head's, or a proxy's).
fn ray_settings(address: &str, placement_timeout: u64) -> Vec<(String, String)> {
    let (_, token, python) = cluster();
    vec![
        ("ANNEAL_EXECUTOR".into(), "ray".into()),
        ("ANNEAL_RAY_ADDRESS".into(), address.into()),
        ("ANNEAL_RAY_TOKEN".into(), token),
        ("ANNEAL_RAY_PYTHON".into(), python),
        ("ANNEAL_RAY_PLACEMENT_TIMEOUT_SECS".into(), placement_timeout.to_string()),
        ("ANNEAL_TRAINING_SLOTS".into(), "64".into()),
        ("ANNEAL_KILL_GRACE_SECS".into(), "2".into()),
    ]
}

async fn start_on(address: &str, placement_timeout: u64) -> TestServer {
    let settings = ray_settings(address, placement_timeout);
    let envs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestServer::start_with(&[], &envs).await
}

async fn ray_server() -> TestServer {
    start_on(&cluster().0, 180).await
}

/// A client of the test cluster's head.
fn ray_client() -> reqwest::Client {
    common::client_with(Some(&cluster().1))
}

/// The Ray jobs Anneal submitted for `job` (by their metadata): one, or a study's trials.
async fn ray_jobs_of(job: &str) -> Vec<Value> {
    let address = cluster().0;
    let jobs: Value =
        ray_client().get(format!("{address}/api/jobs/")).send().await.expect("Ray jobs").json().await.expect("json");
    let name = format!("projects/p/jobs/{job}");
    jobs.as_array().expect("a list").iter().filter(|j| j["metadata"]["anneal_job"] == name.as_str()).cloned().collect()
}

/// The Ray job Anneal submitted for `job`, if any.
async fn ray_job_of(job: &str) -> Option<Value> {
    ray_jobs_of(job).await.into_iter().next()
}

/// The states of the placement groups named `name`.
async fn placement_groups(name: &str) -> Vec<String> {
    let address = cluster().0;
    let groups: Value = ray_client()
        .get(format!("{address}/api/v0/placement_groups?limit=10000"))
        .send()
        .await
        .expect("placement groups")
        .json()
        .await
        .expect("json");
    groups["data"]["result"]["result"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|g| g["name"] == name)
        .map(|g| g["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Processes of this machine whose environment tags them as replicas of `job` of `server`.
fn replica_processes(server: &TestServer, job: &str) -> Vec<i32> {
    let tag = format!("{}|projects/p/jobs/{job}", server.data.path().join("storage").display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        let tagged = environ
            .split(|b| *b == 0)
            .filter_map(|var| var.strip_prefix(b"ANNEAL_JOB="))
            .any(|value| value == tag.as_bytes());
        if tagged {
            found.push(pid);
        }
    }
    found
}

async fn log_text(server: &TestServer, job: &str) -> String {
    let (_, logs) = server.get_json(&format!("/v1/projects/p/jobs/{job}/logs?limit=10000")).await;
    logs["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| format!("{} {}\n", l["replica"].as_str().unwrap_or(""), l["text"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls `job` until it is in one of `states`, at most `limit`.
async fn wait_job(server: &TestServer, job: &str, states: &[&str], limit: Duration) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (status, body) = server.get_json(&format!("/v1/projects/p/jobs/{job}")).await;
        assert_eq!(status, 200, "{body}");
        if states.iter().any(|s| body["state"] == *s) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} never reached {states:?}: {body}\n{}",
            log_text(server, job).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the job's log holds `text`.
async fn wait_log(server: &TestServer, job: &str, text: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let logs = log_text(server, job).await;
        if logs.contains(text) {
            return logs;
        }
        assert!(Instant::now() < deadline, "the log of {job} never showed {text:?}:\n{logs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_two_replica_ddp_example_trains_on_ray() {
    let server = ray_server().await;
    let package = server.stage_example("digits");
    let job_dir = server.data.path().join("outputs/digits_ray");
    let (status, job) = server
        .submit_training(
            "digits_ray",
            json!({"scaleTier": "CUSTOM", "masterType": "n1-standard-2", "workerType": "n1-standard-2", "workerCount": "1",
                   "packageUris": [package.display().to_string()], "pythonModule": "trainer.task",
                   "jobDir": job_dir.display().to_string(), "args": ["--epochs", "5"], "region": "us-central1"}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "digits_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(400)).await;
    let logs = log_text(&server, "digits_ray").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    // Both replicas trained (DDP over gloo, rendezvous through MASTER_ADDR/MASTER_PORT on Ray).
    assert!(logs.contains("master-replica-0 epoch 5 "), "{logs}");
    assert!(logs.contains("Placed 2 replicas on 1 node: 127.0.0.1."), "{logs}");
    // Each bundle holds its machine type's vCPUs and memory.
    assert!(logs.contains("2 bundles (PACK: 2 x 2 CPU, 7.5 GB memory)"), "{logs}");
    assert!(logs.contains("Submitting the job to Ray at"), "{logs}");
    assert!(job_dir.join("checkpoints/epoch-5.pt").is_file(), "checkpoints written to the job dir");
    assert!(job_dir.join("model/model.pt").is_file(), "the model exported");
    assert!(done["trainingOutput"]["consumedMLUnits"].as_f64().is_some(), "{done}");
    // The metric reports of both replicas came back into Anneal's series.
    let (status, metrics) = server.get_json("/v1/projects/p/jobs/digits_ray/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    let text = metrics.to_string();
    assert!(
        text.contains("master-replica-0") && text.contains("worker-replica-0") && text.contains("accuracy"),
        "{text}"
    );
    // One Ray job under the submission id, and its placement group removed.
    let ray_job = ray_job_of("digits_ray").await.expect("the Ray job");
    assert_eq!(ray_job["status"], "SUCCEEDED", "{ray_job}");
    let id = ray_job["submission_id"].as_str().expect("submission id");
    assert!(id.starts_with("anneal-") && id.ends_with("-p-digits_ray"), "{id}");
    assert_eq!(placement_groups(id).await, ["REMOVED"]);
}

/// Reports `score` = `--a` for steps 1..=3 through the hypertune file, printing its trial
/// environment.
const TUNED: &str = r#"
import json, os, sys, time
args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:] if "=" in a)
config = json.loads(os.environ["TF_CONFIG"])
print("trial", os.environ["CLOUD_ML_TRIAL_ID"], config["task"]["trial"], "a", args["a"], "dir", args["job-dir"], flush=True)
lines = []
for step in (1, 2, 3):
    lines.append(json.dumps({"global_step": str(step), "score": args["a"], "timestamp": time.time()}))
    open(os.environ["CLOUD_ML_HP_METRIC_FILE"], "w").write("\n".join(lines) + "\n")
    time.sleep(0.2)
"#;

#[tokio::test]
async fn a_tuning_study_runs_each_trial_as_a_ray_job() {
    let server = ray_server().await;
    let package = server.trainer("tuned", TUNED);
    let job_dir = server.data.path().join("outputs/study_ray");
    let (status, job) = server
        .submit_training(
            "study_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "tuned.task",
                   "jobDir": job_dir.display().to_string(),
                   "hyperparameters": {"goal": "MAXIMIZE", "hyperparameterMetricTag": "score", "algorithm": "GRID_SEARCH",
                       "maxTrials": 3, "maxParallelTrials": 2,
                       "params": [{"parameterName": "a", "type": "INTEGER", "minValue": 1, "maxValue": 3}]}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "study_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(300)).await;
    let logs = log_text(&server, "study_ray").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    let output = &done["trainingOutput"];
    assert_eq!(output["completedTrialCount"], "3", "{output}");
    let trials = output["trials"].as_array().expect("trials");
    let objectives: Vec<f64> =
        trials.iter().map(|t| t["finalMetric"]["objectiveValue"].as_f64().expect("objective")).collect();
    assert_eq!(objectives, [3.0, 2.0, 1.0], "best first, from each trial's reports: {output}");
    // Each trial ran as its own Ray job, with the trial's environment and job-dir subfolder, and
    // its lines came back under its label.
    let best = trials[0]["trialId"].as_str().expect("id");
    let expected = format!("trial-{best}/master-replica-0 trial {best} {best} a 3 dir {}/{best}", job_dir.display());
    assert!(logs.lines().any(|l| l == expected), "{expected} in\n{logs}");
    let mut ids: Vec<String> = ray_jobs_of("study_ray")
        .await
        .iter()
        .map(|j| {
            assert_eq!(j["status"], "SUCCEEDED", "{j}");
            j["submission_id"].as_str().expect("id").to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for (n, id) in ids.iter().enumerate() {
        assert!(id.starts_with("anneal-") && id.ends_with(&format!("-p-study_ray-trial-{}", n + 1)), "{id}");
        assert_eq!(placement_groups(id).await, ["REMOVED"]);
    }
    // The metric reports of every trial are in the job's series, per trial.
    let (_, metrics) = server.get_json("/v1/projects/p/jobs/study_ray/metrics").await;
    assert_eq!(metrics["series"].as_array().map(Vec::len), Some(3), "{metrics}");
}

#[tokio::test]
async fn cancelling_a_study_on_ray_stops_its_running_trials() {
    let server = ray_server().await;
    let package = server.trainer("sleeper", SLEEPER);
    let (status, job) = server
        .submit_training(
            "study_cancel",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "sleeper.task",
                   "hyperparameters": {"hyperparameterMetricTag": "score", "maxTrials": 4, "maxParallelTrials": 2,
                       "params": [{"parameterName": "a", "type": "DOUBLE", "minValue": 0, "maxValue": 1}]}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    wait_log(&server, "study_cancel", "trial-1/master-replica-0 started master", Duration::from_secs(180)).await;
    wait_log(&server, "study_cancel", "trial-2/master-replica-0 started master", Duration::from_secs(60)).await;
    let (status, body) = server.post_json("/v1/projects/p/jobs/study_cancel:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = wait_job(&server, "study_cancel", &["CANCELLED", "FAILED", "SUCCEEDED"], Duration::from_secs(60)).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert_eq!(replica_processes(&server, "study_cancel"), Vec::<i32>::new(), "no replica process is left");
    let jobs = ray_jobs_of("study_cancel").await;
    let statuses: Vec<&str> = jobs.iter().map(|j| j["status"].as_str().unwrap_or_default()).collect();
    assert_eq!(statuses, ["STOPPED", "STOPPED"], "two trials ran, both stopped, no third started");
}

const FAILING_WORKER: &str = r#"
import json, os, sys, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
if task["type"] == "worker":
    print("worker: the data shard is missing", flush=True)
    sys.exit(3)
print("master waiting", flush=True)
time.sleep(120)
"#;

#[tokio::test]
async fn a_failing_replica_fails_the_job_with_its_cause_and_stops_the_others() {
    let server = ray_server().await;
    let package = server.trainer("failing", FAILING_WORKER);
    let (status, job) = server
        .submit_training(
            "fail_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "failing.task", "scaleTier": "CUSTOM", "masterType": "n1-standard-1", "workerType": "n1-standard-1", "workerCount": "1"}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "fail_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(240)).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().expect("errorMessage");
    assert!(message.contains("Replica worker-replica-0 exited with exit code 3"), "{message}");
    assert!(message.contains("worker: the data shard is missing"), "{message}");
    let logs = log_text(&server, "fail_ray").await;
    assert!(logs.contains("worker-replica-0 worker: the data shard is missing"), "{logs}");
    let id = ray_job_of("fail_ray").await.expect("the Ray job")["submission_id"].as_str().expect("id").to_owned();
    assert_eq!(placement_groups(&id).await, ["REMOVED"]);
    assert_eq!(replica_processes(&server, "fail_ray"), Vec::<i32>::new(), "the master was stopped too");
}

const SLEEPER: &str = r#"
import json, os, time
task = json.loads(os.environ["TF_CONFIG"])["task"]
print("started", task["type"], flush=True)
time.sleep(300)
"#;

#[tokio::test]
async fn cancel_stops_every_replica_and_removes_the_placement_group() {
    let server = ray_server().await;
    let package = server.trainer("sleeper", SLEEPER);
    let (status, job) = server
        .submit_training(
            "cancel_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "sleeper.task", "scaleTier": "CUSTOM", "masterType": "n1-standard-1", "workerType": "n1-standard-1", "workerCount": "1"}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    wait_job(&server, "cancel_ray", &["RUNNING"], Duration::from_secs(180)).await;
    wait_log(&server, "cancel_ray", "worker-replica-0 started worker", Duration::from_secs(120)).await;
    wait_log(&server, "cancel_ray", "master-replica-0 started master", Duration::from_secs(60)).await;
    assert_eq!(replica_processes(&server, "cancel_ray").len(), 2, "both replicas run on this machine");
    let id = ray_job_of("cancel_ray").await.expect("the Ray job")["submission_id"].as_str().expect("id").to_owned();
    // The state API can lag behind; the group shows as created within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    while placement_groups(&id).await != ["CREATED"] {
        assert!(Instant::now() < deadline, "no created placement group: {:?}", placement_groups(&id).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let (status, body) = server.post_json("/v1/projects/p/jobs/cancel_ray:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = wait_job(&server, "cancel_ray", &["CANCELLED", "FAILED", "SUCCEEDED"], Duration::from_secs(60)).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert_eq!(replica_processes(&server, "cancel_ray"), Vec::<i32>::new(), "no replica process is left");
    assert_eq!(placement_groups(&id).await, ["REMOVED"]);
    assert_eq!(ray_job_of("cancel_ray").await.expect("the Ray job")["status"], "STOPPED");
}

#[tokio::test]
async fn an_infeasible_request_fails_saying_what_was_asked_and_what_the_cluster_has() {
    let server = start_on(&cluster().0, 3).await;
    let package = server.trainer("wide", SLEEPER);
    // n1-standard-4 replicas: 4 CPUs and 15 GB each, one more replica than the CPUs allow.
    let replicas = cluster_cpus() / 4 + 1;
    let (status, job) = server
        .submit_training(
            "wide_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "wide.task",
                   "scaleTier": "CUSTOM", "masterType": "n1-standard-4", "workerType": "n1-standard-4",
                   "workerCount": (replicas - 1).to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "wide_ray", &["FAILED", "SUCCEEDED", "CANCELLED"], Duration::from_secs(120)).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let message = done["errorMessage"].as_str().expect("errorMessage");
    assert!(message.contains(&format!("could not place the job's {replicas} replicas within 3 s")), "{message}");
    assert!(message.contains("the cluster does not have that much"), "{message}");
    let asked = format!("{} CPU, {:.1} GB memory in all", 4 * replicas, 15.0 * replicas as f64);
    assert!(message.contains(&asked), "asked: {message}");
    assert!(message.contains(&format!("the cluster has {} CPU", cluster_cpus())), "has: {message}");
    let id = ray_job_of("wide_ray").await.expect("the Ray job")["submission_id"].as_str().expect("id").to_owned();
    assert_eq!(placement_groups(&id).await, ["REMOVED"]);
}

const TICKER: &str = r#"
import os, sys, time
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
with open(os.path.join(job_dir, "runs.txt"), "a") as runs:
    runs.write("run\n")
ticks = int(([a.split("=", 1)[1] for a in sys.argv if a.startswith("--ticks=")] or ["12"])[0])
for i in range(ticks):
    print("tick", i, flush=True)
    time.sleep(0.5)
"#;

#[tokio::test]
async fn logs_follow_a_ray_job_while_it_runs() {
    let server = ray_server().await;
    let package = server.trainer("ticker", TICKER);
    let job_dir = server.data.path().join("outputs/tick");
    let (status, job) = server
        .submit_training(
            "tick_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "ticker.task",
                   "jobDir": job_dir.display().to_string()}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let response = server
        .client
        .get(server.url("/v1/projects/p/jobs/tick_ray/logs?follow=true&replica=master-replica-0"))
        .send()
        .await
        .expect("follow");
    assert_eq!(response.status(), 200);
    let body =
        tokio::time::timeout(Duration::from_secs(240), response.text()).await.expect("the stream ends").expect("body");
    let ticks: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|l| l["text"].as_str().map(str::to_owned))
        .collect();
    let expected: Vec<String> = (0..12).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, expected, "{body}");
    let done = wait_job(&server, "tick_ray", &["SUCCEEDED", "FAILED"], Duration::from_secs(30)).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
}

#[tokio::test]
async fn a_restarted_server_follows_its_ray_job_again_and_it_runs_once() {
    let server = ray_server().await;
    let package = server.trainer("ticker", TICKER);
    let job_dir = server.data.path().join("outputs/restart");
    let (status, job) = server
        .submit_training(
            "restart_ray",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "ticker.task",
                   "jobDir": job_dir.display().to_string(), "args": []}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    wait_job(&server, "restart_ray", &["RUNNING"], Duration::from_secs(180)).await;
    wait_log(&server, "restart_ray", "master-replica-0 tick 2", Duration::from_secs(60)).await;
    // A crash: nothing of the server runs after; the Ray job goes on without it.
    let data = server.crash_keeping_data().await;
    let settings = ray_settings(&cluster().0, 180);
    let envs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_in(data, &[], &envs).await;
    let done = wait_job(&server, "restart_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(120)).await;
    let logs = log_text(&server, "restart_ray").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert!(logs.contains("following the Ray job"), "{logs}");
    for i in 0..12 {
        assert_eq!(logs.matches(&format!("master-replica-0 tick {i}\n")).count(), 1, "tick {i} once:\n{logs}");
    }
    assert_eq!(std::fs::read_to_string(job_dir.join("runs.txt")).expect("runs"), "run\n", "the job ran once");
}

#[tokio::test]
async fn while_the_head_is_unreachable_jobs_keep_their_state_and_new_ones_wait() {
    let proxy = common::proxy::Proxy::start(cluster().0.trim_start_matches("http://")).await;
    let server = start_on(&format!("http://{}", proxy.address), 180).await;
    let package = server.trainer("ticker", TICKER);
    let job_dir = server.data.path().join("outputs/away");
    let input = |ticks: &str| {
        json!({"packageUris": [package.display().to_string()], "pythonModule": "ticker.task",
               "jobDir": job_dir.display().to_string(), "args": [format!("--ticks={ticks}")]})
    };
    assert_eq!(server.submit_training("away_ray", input("12")).await.0, 200);
    wait_job(&server, "away_ray", &["RUNNING"], Duration::from_secs(180)).await;
    wait_log(&server, "away_ray", "master-replica-0 tick 1", Duration::from_secs(60)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(server.submit_training("later_ray", input("1")).await.0, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, job) = server.get_json("/v1/projects/p/jobs/away_ray").await;
    assert_eq!(job["state"], "RUNNING", "the job keeps its state: {job}");
    let (_, later) = server.get_json("/v1/projects/p/jobs/later_ray").await;
    assert_eq!(later["state"], "QUEUED", "a new job waits for the head: {later}");
    let logs = log_text(&server, "away_ray").await;
    assert!(logs.contains("cannot reach the Ray head") && logs.contains("keeps trying"), "{logs}");
    proxy.restore();
    let done = wait_job(&server, "away_ray", &["SUCCEEDED", "FAILED"], Duration::from_secs(120)).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", log_text(&server, "away_ray").await);
    let logs = log_text(&server, "away_ray").await;
    assert!(logs.contains("The Ray head answers again."), "{logs}");
    assert!(logs.contains("master-replica-0 tick 11"), "every line came back: {logs}");
    let later = wait_job(&server, "later_ray", &["SUCCEEDED", "FAILED"], Duration::from_secs(180)).await;
    assert_eq!(later["state"], "SUCCEEDED", "{later}");
}

/// The shards `prefix-0000i-of-0000n` under `dir` (sorted by name), each as its lines.
fn shards(dir: &std::path::Path, prefix: &str) -> Vec<(String, Vec<String>)> {
    let mut found: Vec<(String, Vec<String>)> = std::fs::read_dir(dir)
        .expect("output dir")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(prefix).then(|| {
                let text = std::fs::read_to_string(e.path()).expect("shard");
                (name, text.lines().map(str::to_owned).collect())
            })
        })
        .collect();
    found.sort();
    found
}

fn count(job: &Value, field: &str) -> u64 {
    job["predictionOutput"][field].as_str().and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_batch_job_spreads_its_files_over_two_ray_workers_running_anneals_engine() {
    let server = ray_server().await;
    let model = server.stage_fixture("mlp");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("expected"),
    )
    .expect("json");
    let instances = expected["mlp"]["instances"].as_array().expect("instances");
    let wanted: Vec<Vec<f64>> = serde_json::from_value(expected["mlp"]["predictions"].clone()).expect("predictions");
    // Four files, file i holding the instances i + 1 times (the last also a bad line): files 0
    // and 2 go to the first worker, 1 and 3 to the second.
    let input = server.data.path().join("batch/in");
    std::fs::create_dir_all(&input).expect("mkdir");
    let copies = |file: usize| instances.iter().cycle().take(instances.len() * (file + 1));
    for i in 0..4 {
        let mut text: String = copies(i).map(|v| format!("{v}\n")).collect();
        if i == 3 {
            text.push_str("[1, 2]\n");
        }
        std::fs::write(input.join(format!("part-{i}.json")), text).expect("write");
    }
    let total = instances.len() * (1 + 2 + 3 + 4);
    let output = server.data.path().join("batch/out");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "batch_ray", "predictionInput": {
                "uri": model.display().to_string(), "dataFormat": "JSON", "maxWorkerCount": "2", "batchSize": "4",
                "inputPaths": [format!("{}/part-*.json", input.display())], "outputPath": output.display().to_string()}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "batch_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(240)).await;
    let logs = log_text(&server, "batch_ray").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert_eq!((count(&done, "predictionCount"), count(&done, "errorCount")), (total as u64, 1), "{done}");
    assert!(logs.contains("Spreading 4 input files over 2 Ray workers"), "{logs}");
    assert!(logs.contains("Placed 2 replicas on 1 node: 127.0.0.1."), "{logs}");
    let results = shards(&output, "prediction.results-");
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["prediction.results-00000-of-00002", "prediction.results-00001-of-00002"]);
    let stats = shards(&output, "prediction.errors_stats-");
    assert_eq!(stats.len(), 2, "{stats:?}");
    assert!(stats[1].1.concat().contains("shape"), "the bad line counted by the second worker: {stats:?}");
    // Each worker's predictions are its files' in order, and they are the model's.
    let expected_order: Vec<&Vec<f64>> =
        [0, 2, 1, 3].iter().flat_map(|&file| wanted.iter().cycle().take(wanted.len() * (file + 1))).collect();
    let got: Vec<Vec<f64>> = results
        .iter()
        .flat_map(|(_, lines)| lines.iter().map(|l| serde_json::from_str::<Vec<f64>>(l).expect("a prediction")))
        .collect();
    assert_eq!(got.len(), expected_order.len());
    for (g, w) in got.iter().zip(&expected_order) {
        assert_eq!(g.len(), w.len());
        assert!(g.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() < 1e-5), "{g:?} vs {w:?}");
    }
    let id = ray_job_of("batch_ray").await.expect("the Ray job")["submission_id"].as_str().expect("id").to_owned();
    assert_eq!(placement_groups(&id).await, ["REMOVED"]);

    // A model that cannot load fails the job with the engine's own message.
    let broken = server.stage_fixture("not_torchscript");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "broken_ray", "predictionInput": {
                "uri": broken.display().to_string(), "dataFormat": "JSON", "maxWorkerCount": "2",
                "inputPaths": [format!("{}/part-*.json", input.display())],
                "outputPath": server.data.path().join("batch/broken").display().to_string()}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "broken_ray", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(240)).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(done["errorMessage"].as_str().expect("message").contains("not a loadable TorchScript model"), "{done}");
}

#[tokio::test]
async fn a_batch_job_on_ray_reports_counts_live_and_cancel_keeps_what_was_written() {
    let server = ray_server().await;
    let model = server.stage_fixture("mlp");
    let input = server.data.path().join("big");
    std::fs::create_dir_all(&input).expect("mkdir");
    for i in 0..2 {
        std::fs::write(input.join(format!("in-{i}.json")), "[0.1, 0.2, 0.3, 0.4]\n".repeat(1_000_000)).expect("write");
    }
    let output = server.data.path().join("big-out");
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "big_ray", "predictionInput": {
                "uri": model.display().to_string(), "dataFormat": "JSON", "maxWorkerCount": "2", "batchSize": "1",
                "inputPaths": [format!("{}/in-*.json", input.display())], "outputPath": output.display().to_string()}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let (_, job) = server.get_json("/v1/projects/p/jobs/big_ray").await;
        if job["state"] == "RUNNING" && count(&job, "predictionCount") > 0 {
            break;
        }
        assert_ne!(job["state"], "SUCCEEDED", "the job finished before it could be cancelled: {job}");
        assert_ne!(job["state"], "FAILED", "{job}\n{}", log_text(&server, "big_ray").await);
        assert!(Instant::now() < deadline, "no progress reported: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = server.post_json("/v1/projects/p/jobs/big_ray:cancel", &json!({})).await;
    assert_eq!(status, 200);
    let done = wait_job(&server, "big_ray", &["CANCELLED", "SUCCEEDED", "FAILED"], Duration::from_secs(60)).await;
    assert_eq!(done["state"], "CANCELLED", "{done}");
    assert_eq!(replica_processes(&server, "big_ray"), Vec::<i32>::new(), "no worker process is left");
    let results = shards(&output, "prediction.results-");
    assert_eq!(results.len(), 2, "both workers wrote their shard");
    let written: usize = results.iter().map(|(_, lines)| lines.len()).sum();
    assert!(written > 0 && written < 2_000_000, "{written} predictions kept");
    assert_eq!(
        count(&done, "predictionCount") as usize,
        written,
        "the final count matches the files: {done}\n{}",
        log_text(&server, "big_ray").await
    );
}

#[tokio::test]
async fn a_batch_job_on_ray_reads_its_model_and_inputs_from_a_bucket_and_writes_its_shards_there() {
    let s3 = common::s3::S3Server::start().await;
    s3.create_bucket("data").await;
    // Project p's own keys travel to the shards in their environment (never the server's), and
    // neither secret appears in a log.
    let mut bucket = common::s3::S3Server::with_projects(s3.bucket("data", &[]), &["p"]);
    bucket.secret_access_key = Some("server-secret-91c2".into());
    if let Some(keys) = bucket.projects.get_mut("p") {
        keys.secret_access_key = "shard-secret-7f3a".into();
    }
    let mut settings = ray_settings(&cluster().0, 180);
    settings.push(("ANNEAL_BUCKETS".into(), common::s3::S3Server::buckets_env(&[bucket])));
    let envs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_with(&[], &envs).await;

    s3.upload_tree("data", &common::fixture_models().join("mlp"), "models/mlp").await;
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture_models().join("expected.json")).expect("expected"),
    )
    .expect("json");
    let instances = expected["mlp"]["instances"].as_array().expect("instances");
    let wanted: Vec<Vec<f64>> = serde_json::from_value(expected["mlp"]["predictions"].clone()).expect("predictions");
    // Three files, file i holding the instances i + 1 times: files 0 and 2 go to the first worker.
    for i in 0..3 {
        let text: String = instances.iter().cycle().take(instances.len() * (i + 1)).map(|v| format!("{v}\n")).collect();
        s3.put("data", &format!("in/part-{i}.json"), text.as_bytes()).await;
    }
    s3.put("data", "in/other.txt", b"[1, 2]\n").await;
    let (status, job) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "batch_ray_s3", "predictionInput": {
                "uri": "s3://data/models/mlp", "dataFormat": "JSON", "maxWorkerCount": "2", "batchSize": "4",
                "inputPaths": ["s3://data/in/part-*.json"], "outputPath": "s3://data/out"}}),
        )
        .await;
    assert_eq!(status, 200, "{job}");
    let done = wait_job(&server, "batch_ray_s3", &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(240)).await;
    let logs = log_text(&server, "batch_ray_s3").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    let total = instances.len() * (1 + 2 + 3);
    assert_eq!((count(&done, "predictionCount"), count(&done, "errorCount")), (total as u64, 0), "{done}");
    assert!(logs.contains("Spreading 3 input files over 2 Ray workers"), "it ran on Ray: {logs}");
    assert!(!logs.contains("shard-secret-7f3a") && !logs.contains("server-secret-91c2"), "{logs}");
    assert!(ray_job_of("batch_ray_s3").await.is_some(), "a Ray job ran it");
    let keys = s3.keys("data", "out").await;
    assert_eq!(
        keys,
        [
            "out/prediction.errors_stats-00000-of-00002",
            "out/prediction.errors_stats-00001-of-00002",
            "out/prediction.results-00000-of-00002",
            "out/prediction.results-00001-of-00002",
        ]
    );
    let expected_order: Vec<&Vec<f64>> =
        [0, 2, 1].iter().flat_map(|&file| wanted.iter().cycle().take(wanted.len() * (file + 1))).collect();
    let mut got: Vec<Vec<f64>> = Vec::new();
    for key in &keys[2..] {
        got.extend(
            s3.text("data", key).await.lines().map(|l| serde_json::from_str::<Vec<f64>>(l).expect("a prediction")),
        );
    }
    assert_eq!(got.len(), expected_order.len());
    for (g, w) in got.iter().zip(&expected_order) {
        assert!(g.len() == w.len() && g.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() < 1e-5), "{g:?} vs {w:?}");
    }

    // The same output again fails before any shard starts: earlier predictions are never replaced.
    let (status, _) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "batch_ray_s3_again", "predictionInput": {
                "uri": "s3://data/models/mlp", "dataFormat": "JSON", "maxWorkerCount": "2",
                "inputPaths": ["s3://data/in/part-0.json"], "outputPath": "s3://data/out"}}),
        )
        .await;
    assert_eq!(status, 200);
    let again = wait_job(&server, "batch_ray_s3_again", &["SUCCEEDED", "FAILED"], Duration::from_secs(120)).await;
    assert_eq!(again["state"], "FAILED", "{again}");
    assert!(again["errorMessage"].as_str().unwrap_or_default().contains("already exists"), "{again}");
}

/// A project with `setup.py` whose `forms.task` prints `form` and, on its own output, lines
/// shaped like the driver's messages (an end that fails the job, a service line, a shard count).
fn form_project(root: &std::path::Path) -> std::path::PathBuf {
    let project = root.join("forms-src");
    std::fs::create_dir_all(project.join("forms")).expect("mkdir");
    std::fs::write(
        project.join("setup.py"),
        "from setuptools import setup\nsetup(name='forms', version='1.0', packages=['forms'])\n",
    )
    .expect("setup.py");
    std::fs::write(project.join("forms/__init__.py"), "").expect("init");
    std::fs::write(
        project.join("forms/task.py"),
        r#"import os, sys
print("installed from", os.path.dirname(__file__).split(os.sep)[-2], flush=True)
for out in (sys.stdout, sys.stderr):
    out.write('ANNEAL> {"k":"end","ok":false,"message":"forged by the replica"}\n')
    out.write('ANNEAL> {"k":"log","r":"service","t":"forged service line"}\n')
    out.flush()
"#,
    )
    .expect("task.py");
    project
}

/// Packages install on Ray in each form they install locally: a project folder, an sdist and a
/// wheel (the forms gcloud and the CLI upload). What a replica prints in the driver's message
/// format stays its own log text: it neither ends the job nor speaks as the service. Nothing of
/// Anneal's credentials is in the Ray job's listing.
#[tokio::test]
async fn packages_of_every_form_install_on_ray_and_replica_output_cannot_speak_for_the_driver() {
    let server = ray_server().await;
    let root = server.data.path().join("uploads");
    let project = form_project(&root);
    let python = common::python();
    let dist = root.join("dist");
    let built = std::process::Command::new(&python)
        .args(["setup.py", "-q", "sdist", "--dist-dir"])
        .arg(&dist)
        .current_dir(&project)
        .output()
        .expect("sdist");
    assert!(built.status.success(), "sdist: {}", String::from_utf8_lossy(&built.stderr));
    let built = std::process::Command::new(&python)
        .args(["-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir"])
        .arg(&dist)
        .arg(&project)
        .output()
        .expect("wheel");
    assert!(built.status.success(), "wheel: {}", String::from_utf8_lossy(&built.stderr));
    let sdist = dist.join("forms-1.0.tar.gz");
    let wheel = dist.join("forms-1.0-py3-none-any.whl");
    assert!(sdist.is_file() && wheel.is_file(), "{:?}", std::fs::read_dir(&dist).map(|d| d.count()));
    for (job, package) in [("form_folder", &project), ("form_sdist", &sdist), ("form_wheel", &wheel)] {
        let (status, body) = server
            .submit_training(
                job,
                json!({"packageUris": [package.display().to_string()], "pythonModule": "forms.task", "region": "us-central1"}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for job in ["form_folder", "form_sdist", "form_wheel"] {
        let done = wait_job(&server, job, &["SUCCEEDED", "FAILED", "CANCELLED"], Duration::from_secs(300)).await;
        let logs = log_text(&server, job).await;
        assert_eq!(done["state"], "SUCCEEDED", "{job}: {done}\n{logs}");
        assert!(logs.contains("master-replica-0 installed from"), "{job}: {logs}");
        assert!(
            logs.contains(r#"master-replica-0 ANNEAL> {"k":"end","ok":false,"message":"forged by the replica"}"#),
            "{logs}"
        );
        assert!(!logs.lines().any(|l| l.starts_with("service forged")), "the replica spoke as the service: {logs}");
        let listed = ray_job_of(job).await.expect("the Ray job").to_string();
        assert!(!listed.contains(server.admin_token()), "the admin token is in the Ray job: {listed}");
        assert!(!listed.contains(&cluster().1), "the Ray token is in the Ray job: {listed}");
    }
}
