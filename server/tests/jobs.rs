//! Training jobs through the real server and real replica processes: success, failure, DDP
//! rendezvous, cancel without orphans, queueing, packages, restart safety and bad input.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

async fn log_text(server: &TestServer, job: &str) -> String {
    let (_, logs) = server.get_json(&format!("/v1/projects/p/jobs/{job}/logs")).await;
    logs["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|l| format!("{} {}\n", l["replica"].as_str().unwrap_or(""), l["text"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

const HELLO: &str = r#"
import json, os, sys
config = json.loads(os.environ["TF_CONFIG"])
print("task", config["task"]["type"], config["task"]["index"], "job", os.environ["CLOUD_ML_JOB_ID"])
print("args", sys.argv[1:])
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
os.makedirs(job_dir, exist_ok=True)
open(os.path.join(job_dir, "done.txt"), "w").write("ok")
"#;

#[tokio::test]
async fn a_basic_job_runs_its_master_and_succeeds() {
    let server = TestServer::start().await;
    let package = server.trainer("hello", HELLO);
    let job_dir = server.data.path().join("outputs/hello");
    let (status, job) = server.submit_training("hello_1",
        json!({"packageUris": [package.display().to_string()], "pythonModule": "hello.task", "args": ["--epochs", "2"],
               "jobDir": format!("file://{}", job_dir.display()), "region": "us-central1", "runtimeVersion": "2.13"}),
    )
    .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["jobId"], "hello_1");
    assert_eq!(job["trainingInput"]["region"], "us-central1", "unknown fields are kept: {job}");
    let done = server.wait_job("hello_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", log_text(&server, "hello_1").await);
    assert!(done["startTime"].is_string() && done["endTime"].is_string(), "{done}");
    assert_eq!(std::fs::read_to_string(job_dir.join("done.txt")).expect("job dir written"), "ok");
    let logs = log_text(&server, "hello_1").await;
    assert!(logs.contains("master-replica-0 task master 0 job hello_1"), "{logs}");
    assert!(logs.contains("'--epochs', '2', '--job-dir="), "{logs}");
    let (_, only) = server.get_json("/v1/projects/p/jobs/hello_1/logs?replica=nobody").await;
    assert_eq!(only["lines"], json!([]));
    let (status, error) = server.post_json("/v1/projects/p/jobs/hello_1:cancel", &json!({})).await;
    assert_eq!((status, &error["error"]["status"]), (400, &json!("FAILED_PRECONDITION")), "{error}");
}

#[tokio::test]
async fn a_failing_master_fails_the_job_with_its_exit_code_and_last_lines() {
    let server = TestServer::start().await;
    let package = server.trainer("boom", "import sys\nprint('about to fail')\nsys.exit(3)\n");
    let (status, _) = server
        .submit_training("boom_1", json!({"packageUris": [package.display().to_string()], "pythonModule": "boom.task"}))
        .await;
    assert_eq!(status, 200);
    let done = server.wait_job("boom_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED");
    let message = done["errorMessage"].as_str().expect("errorMessage");
    assert!(
        message.contains("master-replica-0") && message.contains("exit code 3") && message.contains("about to fail"),
        "{message}"
    );
}

#[tokio::test]
async fn replicas_rendezvous_with_ddp_through_the_environment() {
    let server = TestServer::start().await;
    let source = r#"
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
value = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(value)
print("rank", dist.get_rank(), "of", dist.get_world_size(), "sum", value.item())
dist.destroy_process_group()
"#;
    let package = server.trainer("ddp", source);
    let (status, body) = server.submit_training("ddp_1",
        json!({"scaleTier": "CUSTOM", "masterType": "n1-standard-4", "workerType": "n1-standard-4", "workerCount": "1",
               "packageUris": [package.display().to_string()], "pythonModule": "ddp.task"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["trainingInput"]["workerCount"], "1", "int64 as a string");
    let done = server.wait_job("ddp_1", &["SUCCEEDED", "FAILED"]).await;
    let logs = log_text(&server, "ddp_1").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert!(logs.contains("master-replica-0 rank 0 of 2 sum 3.0"), "{logs}");
    assert!(logs.contains("worker-replica-0 rank 1 of 2 sum 3.0"), "{logs}");
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[tokio::test]
async fn cancel_stops_every_process_and_queued_jobs_wait_for_slots() {
    let server = TestServer::start_with(&[], &[("ANNEAL_TRAINING_SLOTS", "1")]).await;
    let source = r#"
import os, subprocess, time
child = subprocess.Popen(["sleep", "1000"])
open("pids.txt", "w").write(f"{os.getpid()} {child.pid}")
print("running", flush=True)
while True:
    time.sleep(0.1)
"#;
    let package = server.trainer("forever", source);
    let input = json!({"packageUris": [package.display().to_string()], "pythonModule": "forever.task"});
    assert_eq!(server.submit_training("first", input.clone()).await.0, 200);
    server.wait_job("first", &["RUNNING"]).await;
    let (status, second) = server.submit_training("second", input).await;
    assert_eq!(status, 200, "{second}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, second) = server.get_json("/v1/projects/p/jobs/second").await;
    assert_eq!(second["state"], "QUEUED", "no free slot: {second}");
    assert_eq!(second["jobPosition"], "1");

    let pids_file = server.data.path().join("storage/jobs/p/first/replicas/master-replica-0/pids.txt");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids_file.exists() {
        assert!(Instant::now() < deadline, "the trainer never wrote its pids");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pids: Vec<i32> = std::fs::read_to_string(&pids_file)
        .expect("pids")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    let (status, empty) = server.post_json("/v1/projects/p/jobs/first:cancel", &json!({})).await;
    assert_eq!((status, empty), (200, json!({})));
    let done = server.wait_job("first", &["CANCELLED"]).await;
    assert!(done["errorMessage"].as_str().expect("message").contains("Cancelled"), "{done}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the cancelled job");
    }
    server.wait_job("second", &["RUNNING"]).await;
    server.post_json("/v1/projects/p/jobs/second:cancel", &json!({})).await;
    server.wait_job("second", &["CANCELLED"]).await;

    assert_eq!(
        server
            .submit_training(
                "third",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "forever.task"})
            )
            .await
            .0,
        200
    );
    server.wait_job("third", &["RUNNING"]).await;
    // A job that cannot start within its maxWaitTime is cancelled in the queue.
    let impatient = json!({"packageUris": [package.display().to_string()], "pythonModule": "forever.task", "scheduling": {"maxWaitTime": "1s"}});
    assert_eq!(server.submit_training("impatient", impatient).await.0, 200);
    let impatient = server.wait_job("impatient", &["CANCELLED"]).await;
    assert!(impatient["errorMessage"].as_str().expect("message").contains("maxWaitTime"), "{impatient}");
    // A queued job cancelled before it starts never runs.
    assert_eq!(
        server
            .submit_training(
                "fourth",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "forever.task"})
            )
            .await
            .0,
        200
    );
    server.post_json("/v1/projects/p/jobs/fourth:cancel", &json!({})).await;
    let fourth = server.wait_job("fourth", &["CANCELLED"]).await;
    assert!(fourth.get("startTime").is_none(), "{fourth}");
    // Stopping the server stops the running job; after a restart nothing is left running.
    let data = server.stop_keeping_data().await;
    let server = TestServer::start_in(data, &[], &[]).await;
    let (_, third) = server.get_json("/v1/projects/p/jobs/third").await;
    assert_eq!(third["state"], "FAILED", "{third}");
    assert!(third["errorMessage"].as_str().expect("message").contains("server"), "{third}");
}

#[tokio::test]
async fn installable_packages_are_installed_once_and_cached() {
    let server = TestServer::start().await;
    let root = server.trainer("pkgd", "print('from the installed package')\n");
    std::fs::write(
        root.join("setup.py"),
        "from setuptools import setup\nsetup(name='pkgd', version='0.1', packages=['pkgd'])\n",
    )
    .expect("setup.py");
    for job in ["pkg_1", "pkg_2"] {
        let (status, body) = server
            .submit_training(job, json!({"packageUris": [root.display().to_string()], "pythonModule": "pkgd.task"}))
            .await;
        assert_eq!(status, 200, "{body}");
        let done = server.wait_job(job, &["SUCCEEDED", "FAILED"]).await;
        assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", log_text(&server, job).await);
    }
    let first = log_text(&server, "pkg_1").await;
    let second = log_text(&server, "pkg_2").await;
    assert!(
        first.contains("Installing the trainer packages") && first.contains("from the installed package"),
        "{first}"
    );
    assert!(second.contains("Using the cached environment"), "{second}");
    assert!(
        !root.join("build").exists() && !root.join("pkgd.egg-info").exists(),
        "the user's folder is left as it was"
    );
}

#[tokio::test]
async fn bad_job_requests_are_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let package = server.trainer("ok", "print('x')\n").display().to_string();
    let outside = tempfile::tempdir().expect("tempdir");
    let cases = [
        (json!({"jobId": "1bad", "trainingInput": {"packageUris": [package], "pythonModule": "ok.task"}}), "job.jobId"),
        (json!({"jobId": "j"}), "job"),
        (json!({"jobId": "j", "trainingInput": {"pythonModule": "ok.task"}}), "job.trainingInput.packageUris"),
        (json!({"jobId": "j", "trainingInput": {"packageUris": [package]}}), "job.trainingInput.pythonModule"),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "scaleTier": "HUGE"}}),
            "job.trainingInput.scaleTier",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "workerCount": "2"}}),
            "job.trainingInput.workerCount",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [outside.path().display().to_string()], "pythonModule": "m"}}),
            "job.trainingInput.packageUris[0]",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "jobDir": "/etc/anneal"}}),
            "job.trainingInput.jobDir",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "scheduling": {"priority": 5000}}}),
            "job.trainingInput.scheduling.priority",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "scaleTier": "PREMIUM_1"}}),
            "job.trainingInput.scaleTier",
        ),
        (
            json!({"jobId": "j", "trainingInput": {"packageUris": [package], "pythonModule": "m", "scheduling": {"maxWaitTime": "soon"}}}),
            "job.trainingInput.scheduling.maxWaitTime",
        ),
    ];
    for (body, field) in cases {
        let (status, error) = server.post_json("/v1/projects/p/jobs", &body).await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["error"]["details"][0]["fieldViolations"][0]["field"], field, "{body}: {error}");
    }
    let (status, error) = server.post_json("/v1/projects/p/jobs", &json!({"jobId": "j", "predictionInput": {}})).await;
    assert_eq!(
        (status, &error["error"]["status"]),
        (400, &json!("INVALID_ARGUMENT")),
        "an empty predictionInput: {error}"
    );
    assert_eq!(
        server.submit_training("dup", json!({"packageUris": [package], "pythonModule": "ok.task"})).await.0,
        200
    );
    let (status, error) =
        server.submit_training("dup", json!({"packageUris": [package], "pythonModule": "ok.task"})).await;
    assert_eq!((status, &error["error"]["status"]), (409, &json!("ALREADY_EXISTS")), "{error}");
    let (status, _) = server.get_json("/v1/projects/p/jobs/nope").await;
    assert_eq!(status, 404);
    let (status, list) = server.get_json("/v1/projects/p/jobs?filter=jobId%3Adup").await;
    assert_eq!((status, list["jobs"].as_array().map(Vec::len)), (200, Some(1)), "{list}");
}

#[tokio::test]
async fn the_runtime_python_is_configurable_and_a_missing_one_fails_the_job_clearly() {
    let server = TestServer::start_with(&["--python", "/nonexistent/bin/python"], &[]).await;
    let package = server.trainer("nopy", "print('never runs')\n");
    assert_eq!(
        server
            .submit_training(
                "nopy_1",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "nopy.task"})
            )
            .await
            .0,
        200
    );
    let done = server.wait_job("nopy_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED");
    let message = done["errorMessage"].as_str().expect("errorMessage");
    assert!(message.contains("cannot start master-replica-0"), "{message}");
}

#[tokio::test]
async fn logs_follow_streams_lines_until_the_job_ends() {
    let server = TestServer::start().await;
    let package = server
        .trainer("ticker", "import time\nfor i in range(5):\n    print('tick', i, flush=True)\n    time.sleep(0.2)\n");
    assert_eq!(
        server
            .submit_training(
                "tick_1",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "ticker.task"})
            )
            .await
            .0,
        200
    );
    let response = server
        .client
        .get(server.url("/v1/projects/p/jobs/tick_1/logs?follow=true&replica=master-replica-0"))
        .send()
        .await
        .expect("follow");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The stream ends by itself once the job has ended and every line was sent.
    let body =
        tokio::time::timeout(Duration::from_secs(60), response.text()).await.expect("the stream ends").expect("body");
    let lines: Vec<Value> =
        body.lines().filter_map(|l| l.strip_prefix("data: ")).filter_map(|d| serde_json::from_str(d).ok()).collect();
    let ticks: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
    assert_eq!(ticks, ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4"], "{body}");
    assert!(body.trim_end().ends_with("data: the job has ended"), "{body}");
    let (status, _) = server.get_json("/v1/projects/p/jobs/nope/logs?follow=true").await;
    assert_eq!(status, 404);
}

/// Prints its `CUDA_VISIBLE_DEVICES`, then holds its devices until `<job dir>/release` exists.
const HOLD_DEVICES: &str = r#"
import os, sys, time
print("devices [" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset") + "]", flush=True)
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
while not os.path.exists(os.path.join(job_dir, "release")):
    time.sleep(0.05)
"#;

#[tokio::test]
async fn gpu_jobs_get_their_own_devices_and_wait_for_free_ones() {
    let server = TestServer::start_with(&[], &[("ANNEAL_GPU_DEVICES", "2"), ("ANNEAL_TRAINING_SLOTS", "4")]).await;
    let package = server.trainer("gpus", HOLD_DEVICES);
    let job_dir = |job: &str| server.data.path().join("outputs").join(job);
    let input = |job: &str, extra: Value| {
        let mut input = json!({"packageUris": [package.display().to_string()], "pythonModule": "gpus.task",
                               "jobDir": job_dir(job).display().to_string()});
        input.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        input
    };
    let devices = |logs: String| {
        logs.lines().find_map(|l| l.split_once("devices [")).map(|(_, d)| d.trim_end_matches(']').to_owned())
    };
    let (status, error) =
        server.submit_training("too_many", input("too_many", json!({"scaleTier": "CUSTOM", "masterConfig": {"acceleratorConfig": {"count": "3", "type": "NVIDIA_TESLA_T4"}}}))).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        error["error"]["details"][0]["fieldViolations"][0]["field"],
        "job.trainingInput.masterConfig.acceleratorConfig.count",
        "{error}"
    );

    assert_eq!(server.submit_training("g1", input("g1", json!({"scaleTier": "BASIC_GPU"}))).await.0, 200);
    assert_eq!(
        server.submit_training("g2", input("g2", json!({"scaleTier": "CUSTOM", "masterType": "complex_model_m", "masterConfig": {"acceleratorConfig": {"count": "1", "type": "NVIDIA_TESLA_T4"}}}))).await.0,
        200
    );
    assert_eq!(server.submit_training("cpu", input("cpu", json!({}))).await.0, 200);
    let mut seen = Vec::new();
    for job in ["g1", "g2", "cpu"] {
        server.wait_job(job, &["RUNNING"]).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let found = loop {
            if let Some(found) = devices(log_text(&server, job).await) {
                break found;
            }
            assert!(Instant::now() < deadline, "{job} printed no devices");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        seen.push(found);
    }
    seen[..2].sort();
    assert_eq!(seen, ["0", "1", ""], "each GPU job has one device of its own; a CPU job sees none");
    // Both devices are held: the next GPU job waits though slots are free.
    assert_eq!(server.submit_training("g3", input("g3", json!({"scaleTier": "BASIC_GPU"}))).await.0, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, g3) = server.get_json("/v1/projects/p/jobs/g3").await;
    assert_eq!((g3["state"].as_str(), g3["jobPosition"].as_str()), (Some("QUEUED"), Some("1")), "{g3}");
    let (_, g1) = server.get_json("/v1/projects/p/jobs/g1/logs").await;
    let g1_device = g1["lines"]
        .as_array()
        .and_then(|l| l.iter().find_map(|l| l["text"].as_str()?.strip_prefix("devices [")))
        .expect("g1 devices")
        .trim_end_matches(']')
        .to_owned();
    std::fs::write(job_dir("g1").join("release"), "").expect("release");
    assert_eq!(server.wait_job("g1", &["SUCCEEDED", "FAILED"]).await["state"], "SUCCEEDED");
    server.wait_job("g3", &["RUNNING"]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while devices(log_text(&server, "g3").await).is_none() {
        assert!(Instant::now() < deadline, "g3 printed no devices");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        devices(log_text(&server, "g3").await).as_deref(),
        Some(g1_device.as_str()),
        "g3 gets the device g1 gave back"
    );
    for job in ["g2", "g3", "cpu"] {
        std::fs::write(job_dir(job).join("release"), "").expect("release");
        assert_eq!(server.wait_job(job, &["SUCCEEDED", "FAILED"]).await["state"], "SUCCEEDED");
    }
}

#[tokio::test]
async fn after_a_crash_the_restarted_server_stops_leftover_replicas() {
    let server = TestServer::start().await;
    let package = server.trainer("stay", "import os, time\nprint('pid', os.getpid(), flush=True)\ntime.sleep(600)\n");
    assert_eq!(
        server
            .submit_training(
                "stay_1",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "stay.task"})
            )
            .await
            .0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid: i32 = loop {
        let logs = log_text(&server, "stay_1").await;
        if let Some(pid) = logs.lines().find_map(|l| l.strip_prefix("master-replica-0 pid ")) {
            break pid.trim().parse().expect("pid");
        }
        assert!(Instant::now() < deadline, "the replica never started: {logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let data = server.crash_keeping_data().await;
    assert!(alive(pid), "a SIGKILLed server cannot stop its replicas itself");
    let server = TestServer::start_in(data, &[], &[]).await;
    let (_, job) = server.get_json("/v1/projects/p/jobs/stay_1").await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(job["errorMessage"].as_str().expect("message").contains("restarted"), "{job}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "replica {pid} outlived the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_are_kept_as_series_and_the_final_metric_goes_to_training_output() {
    let server = TestServer::start().await;
    let source = r#"
import json, os, time
path = os.environ["CLOUD_ML_HP_METRIC_FILE"]
lines = []
for step, (loss, score) in enumerate([(0.9, 0.5), (0.5, 0.7), (0.3, 0.8)], start=1):
    lines.append(json.dumps({"global_step": str(step), "loss": str(loss), "training/hptuning/metric": str(score), "timestamp": time.time(), "trial": "0"}))
    open(path, "w").write("\n".join(lines) + "\n")
    time.sleep(0.6)
"#;
    let package = server.trainer("reports", source);
    assert_eq!(
        server
            .submit_training(
                "rep_1",
                json!({"packageUris": [package.display().to_string()], "pythonModule": "reports.task"})
            )
            .await
            .0,
        200
    );
    let done = server.wait_job("rep_1", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let output = &done["trainingOutput"];
    assert_eq!(output["hyperparameterMetricTag"], "training/hptuning/metric", "{done}");
    assert_eq!(output["finalMetric"], json!({"trainingStep": "3", "objectiveValue": 0.8}), "{done}");
    assert!(output["consumedMLUnits"].as_f64().is_some_and(|u| u > 0.0), "{done}");
    let (status, metrics) = server.get_json("/v1/projects/p/jobs/rep_1/metrics").await;
    assert_eq!(status, 200);
    let series = metrics["series"].as_array().expect("series");
    let loss = series.iter().find(|s| s["tag"] == "loss").expect("loss series");
    assert_eq!(loss["replica"], "master-replica-0");
    let points: Vec<(String, f64)> = loss["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| (p["step"].as_str().expect("step").to_owned(), p["value"].as_f64().expect("value")))
        .collect();
    assert_eq!(
        points,
        [("1".to_owned(), 0.9), ("2".to_owned(), 0.5), ("3".to_owned(), 0.3)],
        "each report once, in order"
    );
}

#[tokio::test]
async fn trainers_do_not_inherit_the_servers_settings_or_credentials() {
    let server = TestServer::start_with(
        &[],
        &[("AWS_SECRET_ACCESS_KEY", "server-secret"), ("PGPASSWORD", "server-password"), ("ANNEAL_LOG", "info")],
    )
    .await;
    let source = r#"
import os
names = sorted(k for k in os.environ if k.startswith(("ANNEAL_", "AWS_")) or k in ("PGPASSWORD", "DATABASE_URL"))
print("inherited", names, flush=True)
"#;
    let package = server.trainer("envspy", source);
    let (status, body) = server
        .submit_training(
            "env_1",
            json!({"packageUris": [package.display().to_string()], "pythonModule": "envspy.task"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("env_1", &["SUCCEEDED", "FAILED"]).await;
    let (_, logs) = server.get_json("/v1/projects/p/jobs/env_1/logs").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{logs}");
    assert!(logs.to_string().contains("inherited ['ANNEAL_JOB']"), "only the job's own tag: {logs}");
}
