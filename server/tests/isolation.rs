//! What a trainer may touch: when the server runs as root, replicas run as an unprivileged user of
//! their project's own, so a trainer (code a user submitted) cannot write the server's Python
//! environment, its libtorch, its binary, its database or storage, nor another project's job
//! folders or package cache, while it still writes its own job dir. Not root: these tests print
//! `skipped: not root` and return (CI runs them as root).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestServer;
use serde_json::json;

/// Whether this test process runs as root (effective uid 0, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A package with a `setup.py` (so the server installs it with pip, as the replica user) whose
/// `<module>.task` runs `body`.
fn package(root: &Path, module: &str, body: &str) -> PathBuf {
    let dir = root.join("packages").join(module);
    std::fs::create_dir_all(dir.join(module)).expect("mkdir");
    std::fs::write(
        dir.join("setup.py"),
        format!("from setuptools import setup\nsetup(name='{module}', version='0.1', packages=['{module}'])\n"),
    )
    .expect("setup.py");
    std::fs::write(dir.join(module).join("__init__.py"), "").expect("init");
    std::fs::write(dir.join(module).join("task.py"), body).expect("task");
    dir
}

/// The other project's trainer: writes its job dir and its working folder, and reports its ids.
const NEIGHBOUR: &str = r#"
import os, sys
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
open(os.path.join(job_dir, "result.txt"), "w").write("mine")
open("scratch.txt", "w").write("mine")
print("ids", os.getuid(), os.getgid(), os.getgroups())
"#;

/// The attacker: tries to write every `--target=label=path` (a folder gets a new file in it, a
/// file is opened for appending) and prints `<label>: denied` for each write refused with a
/// permission error. Exits 0 only if every one was refused and its own job dir is writable.
const ATTACKER: &str = r#"
import os, sys
print("ids", os.getuid(), os.getgid(), os.getgroups(), "home", os.environ.get("HOME"))
targets = [a.split("=", 1)[1].split("=", 1) for a in sys.argv if a.startswith("--target=")]
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
targets.append(["own package cache", here])
ok = True
for label, path in targets:
    victim = os.path.join(path, "written-by-a-trainer") if os.path.isdir(path) else path
    try:
        with open(victim, "a") as f:
            f.write("a trainer was here\n")
        print(label + ": WRITTEN " + victim)
        ok = False
    except PermissionError as e:
        print(label + ": denied (" + str(e) + ")")
    except OSError as e:
        print(label + ": failed otherwise (" + str(e) + ")")
        ok = False
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")][0]
os.makedirs(os.path.join(job_dir, "checkpoints"), exist_ok=True)
open(os.path.join(job_dir, "checkpoints", "model.pt"), "w").write("weights")
print("own job dir: written")
sys.exit(0 if ok and os.getuid() != 0 else 1)
"#;

async fn wait_done(server: &TestServer, project: &str, job: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, body) = server.get_json(&format!("/v1/projects/{project}/jobs/{job}")).await;
        assert_eq!(status, 200, "{body}");
        if ["SUCCEEDED", "FAILED", "CANCELLED"].iter().any(|s| body["state"] == *s) {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "job {job} did not end: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_lines(server: &TestServer, project: &str, job: &str) -> Vec<String> {
    let (_, logs) = server.get_json(&format!("/v1/projects/{project}/jobs/{job}/logs")).await;
    logs["lines"]
        .as_array()
        .map(|lines| lines.iter().map(|l| l["text"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_trainer_cannot_write_the_server_or_another_project() {
    if !running_as_root() {
        println!("skipped: not root");
        return;
    }
    // A storage root as an operator would make one: root's, readable by all.
    let shared = tempfile::tempdir().expect("storage root");
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let roots = format!("[{}]", shared.path().display());
    let server = TestServer::start_with(&[], &[("ANNEAL_STORAGE_ROOTS", &roots)]).await;
    let data = server.data.path().to_path_buf();

    // The other project's job: its job dir in the storage root, its package installed by pip.
    let neighbour = package(&data, "neighbour", NEIGHBOUR);
    let neighbour_dir = shared.path().join("outputs/neighbour_1");
    let (status, body) = server
        .post_json(
            "/v1/projects/other/jobs",
            &json!({"jobId": "neighbour_1", "trainingInput": {"packageUris": [neighbour.display().to_string()],
                    "pythonModule": "neighbour.task", "jobDir": neighbour_dir.display().to_string(), "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_done(&server, "other", "neighbour_1").await;
    let neighbour_logs = log_lines(&server, "other", "neighbour_1").await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{}", neighbour_logs.join("\n"));
    assert_eq!(std::fs::read_to_string(neighbour_dir.join("result.txt")).expect("job dir written"), "mine");
    let neighbour_work = data.join("storage/jobs/other/neighbour_1/replicas/master-replica-0");
    assert!(neighbour_work.join("scratch.txt").is_file(), "the replica wrote its working folder");
    let envs = data.join("storage/envs/other");
    let neighbour_env = std::fs::read_dir(&envs)
        .expect("the other project's package cache")
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap_or_default().to_string_lossy().starts_with('.'))
        .expect("an installed environment");
    let env_meta = std::fs::metadata(&neighbour_env).expect("env");
    assert_eq!((env_meta.uid(), env_meta.mode() & 0o777), (0, 0o755), "a finished package cache is root's, read-only");

    // The attacker's project tries to write everything the server loads or keeps.
    let venv = common::python().parent().and_then(Path::parent).expect("venv").to_path_buf();
    let python = common::python().canonicalize().expect("python");
    let output = std::process::Command::new(common::python())
        .args(["-c", "import sysconfig, importlib.util, os; print(sysconfig.get_paths()['purelib']); print(os.path.join(os.path.dirname(importlib.util.find_spec('torch').origin), 'lib'))"])
        .output()
        .expect("python");
    let paths = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut paths = paths.lines();
    let site_packages = paths.next().expect("site-packages").to_owned();
    let libtorch = paths.next().expect("libtorch").to_owned();
    let binary = Path::new(common::anneal_bin()).canonicalize().expect("binary");
    let targets = [
        ("venv", venv.display().to_string()),
        ("site-packages", site_packages),
        ("libtorch", libtorch),
        ("python", python.display().to_string()),
        ("binary dir", binary.parent().expect("bin dir").display().to_string()),
        ("binary", binary.display().to_string()),
        ("database", data.join("anneal.db").display().to_string()),
        ("data dir", data.display().to_string()),
        ("storage", data.join("storage").display().to_string()),
        ("other job dir", neighbour_dir.display().to_string()),
        ("other job file", neighbour_dir.join("result.txt").display().to_string()),
        ("other working folder", neighbour_work.display().to_string()),
        ("other job log", data.join("storage/jobs/other/neighbour_1/job.log").display().to_string()),
        ("other package cache", neighbour_env.display().to_string()),
    ];
    let attacker = package(&data, "attacker", ATTACKER);
    let job_dir = data.join("outputs/attacker_1");
    let args: Vec<String> = targets.iter().map(|(label, path)| format!("--target={label}={path}")).collect();
    let (status, body) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "attacker_1", "trainingInput": {"packageUris": [attacker.display().to_string()],
                    "pythonModule": "attacker.task", "jobDir": job_dir.display().to_string(), "args": args, "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = wait_done(&server, "p", "attacker_1").await;
    let lines = log_lines(&server, "p", "attacker_1").await;
    let text = lines.join("\n");
    println!("what the trainer tried:\n{text}");
    assert_eq!(done["state"], "SUCCEEDED", "{done}\n{text}");
    for (label, _) in targets.iter().map(|(l, p)| (*l, p)).chain([("own package cache", &String::new())]) {
        assert!(lines.iter().any(|l| l.starts_with(&format!("{label}: denied"))), "{label} was not denied:\n{text}");
    }
    assert!(text.contains("own job dir: written"), "{text}");
    assert_eq!(std::fs::read_to_string(job_dir.join("checkpoints/model.pt")).expect("own job dir"), "weights");

    // Each project runs as a uid of its own, without root's groups.
    let ids = |lines: &[String]| -> (u32, u32, String) {
        let line = lines.iter().find(|l| l.starts_with("ids ")).expect("ids line").clone();
        let mut words = line.split_whitespace().skip(1);
        let uid = words.next().and_then(|w| w.parse().ok()).expect("uid");
        let gid = words.next().and_then(|w| w.parse().ok()).expect("gid");
        (uid, gid, words.next().unwrap_or_default().to_owned())
    };
    let (uid_a, gid_a, groups_a) = ids(&lines);
    let (uid_b, _, groups_b) = ids(&neighbour_logs);
    assert!(uid_a != 0 && gid_a != 0 && uid_b != 0, "{text}");
    assert_ne!(uid_a, uid_b, "projects share a uid");
    assert_eq!((groups_a.as_str(), groups_b.as_str()), ("[]", "[]"), "no supplementary groups");
    let job_dir_meta = std::fs::metadata(&job_dir).expect("job dir");
    assert_eq!((job_dir_meta.uid(), job_dir_meta.mode() & 0o777), (uid_a, 0o700), "the job dir is the replica's");
    let log_meta = std::fs::metadata(data.join("storage/jobs/p/attacker_1/job.log")).expect("job.log");
    assert_eq!((log_meta.uid(), log_meta.mode() & 0o777), (0, 0o600), "the job log is the server's");

    // The other project's job dir named as a package is refused at once, as a place outside the
    // roots (tests/confinement.rs has every field); the replica's user could not read it anyway.
    std::fs::write(neighbour_dir.join("setup.py"), "from setuptools import setup\nsetup(name='loot')\n")
        .expect("setup.py");
    let (status, body) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "thief_1", "trainingInput": {"packageUris": [neighbour_dir.display().to_string()],
                    "pythonModule": "loot", "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("is outside the storage roots"), "{body}");
}

#[tokio::test]
async fn a_job_dir_in_storage_or_inside_another_job_is_refused() {
    if !running_as_root() {
        println!("skipped: not root");
        return;
    }
    let server = TestServer::start().await;
    let data = server.data.path().to_path_buf();
    let trainer = data.join("packages/plain/plain");
    std::fs::create_dir_all(&trainer).expect("mkdir");
    std::fs::write(trainer.join("__init__.py"), "").expect("init");
    std::fs::write(trainer.join("task.py"), "print('ran')\n").expect("task");
    let package = data.join("packages/plain").display().to_string();
    let first = data.join("outputs/first");
    let cases = [
        ("first", first.clone(), "SUCCEEDED"),
        // Its own project's folder: another project's is refused at once (tests/confinement.rs).
        ("in_storage", data.join("storage/envs/p"), "FAILED"),
        ("inside_first", first.join("nested"), "FAILED"),
    ];
    for (job, dir, expected) in cases {
        let (status, body) = server
            .post_json(
                "/v1/projects/p/jobs",
                &json!({"jobId": job, "trainingInput": {"packageUris": [&package], "pythonModule": "plain.task",
                        "jobDir": dir.display().to_string(), "region": "us-central1"}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let done = wait_done(&server, "p", job).await;
        assert_eq!(done["state"], expected, "{job}: {done}");
        if expected == "FAILED" {
            assert!(done["errorMessage"].as_str().unwrap_or_default().contains("job dir"), "{done}");
            assert!(!dir.exists(), "{job}: nothing was created at {}", dir.display());
        }
    }
}

/// Nothing in the server's Python environment may be writable by others (pip can leave such
/// folders behind, and a replica user could then change what every job imports).
#[test]
fn the_server_python_environment_is_not_writable_by_others() {
    if !running_as_root() {
        println!("skipped: not root");
        return;
    }
    let venv = common::python().parent().and_then(Path::parent).expect("venv").to_path_buf();
    let mut writable = Vec::new();
    let mut stack = vec![venv];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if meta.file_type().is_symlink() {
            continue;
        }
        if meta.mode() & 0o002 != 0 {
            writable.push(path.clone());
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).into_iter().flatten().flatten().map(|e| e.path()));
        }
    }
    assert!(writable.is_empty(), "writable by others: {writable:?}");
}

/// Root writes a batch job's shards: their folder must be one no replica can change, checked when
/// the job is created and again when it runs, so a trainer cannot plant a symlink (in a folder it
/// owns, as a job dir is) that makes the server overwrite another file.
#[tokio::test]
async fn a_batch_job_never_writes_in_a_folder_a_replica_can_change() {
    if !running_as_root() {
        println!("skipped: not root");
        return;
    }
    let server = TestServer::start_with(&[], &[("ANNEAL_TRAINING_SLOTS", "1")]).await;
    let data = server.data.path().to_path_buf();
    server.create_model("sums").await;
    server.deploy("sums", "v1", "tuple_out").await;
    std::fs::create_dir_all(data.join("batch")).expect("mkdir");
    std::fs::write(data.join("batch/in.json"), "[1, 2, 3]\n").expect("input");
    let victim = data.join("victim.txt");
    std::fs::write(&victim, "precious").expect("victim");
    // A folder of a replica's uid, as a job dir is, with links planted in it.
    let replica = 0x7000_0000 + 4242;
    let plant = |dir: &Path| {
        std::fs::create_dir_all(dir).expect("mkdir");
        for shard in ["prediction.results-00000-of-00001", "prediction.errors_stats-00000-of-00001"] {
            std::os::unix::fs::symlink(&victim, dir.join(shard)).expect("symlink");
        }
        std::os::unix::fs::chown(dir, Some(replica), Some(replica)).expect("chown");
    };
    let job_dir = data.join("outputs/trainer_1");
    plant(&job_dir.join("p"));
    std::os::unix::fs::symlink(data.join("batch"), job_dir.join("link")).expect("symlink");
    std::os::unix::fs::chown(&job_dir, Some(replica), Some(replica)).expect("chown");
    let predict = |job: &str, output: &Path| {
        json!({"jobId": job, "predictionInput": {"modelName": "sums", "dataFormat": "JSON",
               "inputPaths": [data.join("batch/in.json").display().to_string()],
               "outputPath": output.display().to_string(), "maxWorkerCount": "1"}})
    };
    for (i, output) in
        [job_dir.join("p"), job_dir.join("new"), job_dir.join("link"), job_dir.join("link/deeper")].iter().enumerate()
    {
        let (status, body) = server.post_json("/v1/projects/p/jobs", &predict(&format!("refused_{i}"), output)).await;
        assert_eq!(status, 400, "{}: {body}", output.display());
        assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
        let field = &body["error"]["details"][0]["fieldViolations"][0]["field"];
        assert_eq!(field, "job.predictionInput.outputPath", "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("output path"), "{body}");
    }
    assert!(!job_dir.join("new").exists(), "nothing was created in the replica's folder");

    // Checked again when the job runs: a folder given to a replica after the job was queued.
    let plain = data.join("packages/plain/plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    std::fs::write(plain.join("__init__.py"), "").expect("init");
    std::fs::write(plain.join("task.py"), "import time\nwhile True:\n    time.sleep(0.1)\n").expect("task");
    let package = data.join("packages/plain").display().to_string();
    let (status, body) = server
        .post_json(
            "/v1/projects/p/jobs",
            &json!({"jobId": "blocker", "trainingInput": {"packageUris": [package], "pythonModule": "plain.task",
                    "region": "us-central1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.wait_job("blocker", &["RUNNING"]).await;
    let later = data.join("later");
    std::fs::create_dir_all(&later).expect("mkdir");
    let (status, body) = server.post_json("/v1/projects/p/jobs", &predict("late", &later.join("out"))).await;
    assert_eq!(status, 200, "a folder of root's is accepted: {body}");
    assert_eq!(server.get_json("/v1/projects/p/jobs/late").await.1["state"], "QUEUED");
    plant(&later.join("out"));
    std::os::unix::fs::chown(&later, Some(replica), Some(replica)).expect("chown");
    let (status, body) = server.post_json("/v1/projects/p/jobs/blocker:cancel", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("late", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(done["errorMessage"].as_str().unwrap_or_default().contains("output path"), "{done}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), "precious", "the victim is unchanged");

    // A folder of root's, missing or not, still works.
    let output = data.join("predictions/ok");
    let (status, body) = server.post_json("/v1/projects/p/jobs", &predict("allowed", &output)).await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_job("allowed", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(done["state"], "SUCCEEDED", "{done}");
    let meta = std::fs::metadata(&output).expect("created");
    assert_eq!(meta.uid(), 0, "root created the missing folder");
    assert!(output.join("prediction.results-00000-of-00001").is_file());
}
