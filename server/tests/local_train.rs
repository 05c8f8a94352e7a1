//! `anneal local train`: the real binary runs a trainer package's replicas without a server and
//! streams their output.

mod common;

use common::run_anneal;

fn package(dir: &std::path::Path, source: &str) -> String {
    let package = dir.join("ltrain");
    std::fs::create_dir_all(&package).expect("mkdir");
    std::fs::write(package.join("__init__.py"), "").expect("init");
    std::fs::write(package.join("task.py"), source).expect("task");
    package.display().to_string()
}

const TASK: &str = r#"
import json, os, sys
config = json.loads(os.environ["TF_CONFIG"])
print("task", config["task"]["type"], config["task"]["index"], "rank", os.environ.get("RANK"), "of", os.environ["WORLD_SIZE"])
print("args", sys.argv[1:])
job_dir = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--job-dir=")]
if job_dir:
    open(os.path.join(job_dir[0], "out.txt"), "w").write("written")
if "--fail" in sys.argv:
    print("failing now")
    sys.exit(4)
# The master's exit ends the job and stops the others: with --wait-for-workers=N it waits until N
# workers have printed (each leaves a file in the job dir).
waits = [int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--wait-for-workers=")]
if job_dir and config["task"]["type"] == "worker":
    open(os.path.join(job_dir[0], "worker-%d" % config["task"]["index"]), "w").write("printed")
if waits:
    import time
    deadline = time.time() + 30
    while sum(n.startswith("worker-") for n in os.listdir(job_dir[0])) < waits[0] and time.time() < deadline:
        time.sleep(0.02)
"#;

#[tokio::test]
async fn runs_the_master_with_args_and_a_job_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = package(dir.path(), TASK);
    let job_dir = dir.path().join("out");
    let python = common::python().display().to_string();
    let (code, stdout, stderr) = run_anneal(
        &[
            "local",
            "train",
            "--module-name",
            "ltrain.task",
            "--package-path",
            &path,
            "--job-dir",
            &job_dir.display().to_string(),
            "--python",
            &python,
            "--",
            "--epochs",
            "3",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("task master 0 rank 0 of 1"), "{stdout}");
    assert!(stdout.contains("'--epochs', '3', '--job-dir="), "{stdout}");
    assert_eq!(std::fs::read_to_string(job_dir.join("out.txt")).expect("job dir"), "written");
}

#[tokio::test]
async fn distributed_runs_a_master_and_workers_with_their_ranks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = package(dir.path(), TASK);
    let python = common::python().display().to_string();
    let job_dir = dir.path().join("out").display().to_string();
    let (code, stdout, stderr) = run_anneal(
        &[
            "local",
            "train",
            "--module-name",
            "ltrain.task",
            "--package-path",
            &path,
            "--distributed",
            "--worker-count",
            "2",
            "--job-dir",
            &job_dir,
            "--python",
            &python,
            "--",
            "--wait-for-workers=2",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    for line in [
        "[master-replica-0] task master 0 rank 0 of 3",
        "[worker-replica-0] task worker 0 rank 1 of 3",
        "[worker-replica-1] task worker 1 rank 2 of 3",
    ] {
        assert!(stdout.contains(line), "missing {line}: {stdout}");
    }
}

#[tokio::test]
async fn a_failing_trainer_exits_non_zero_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = package(dir.path(), TASK);
    let python = common::python().display().to_string();
    let (code, stdout, stderr) = run_anneal(
        &[
            "local",
            "train",
            "--module-name",
            "ltrain.task",
            "--package-path",
            &path,
            "--python",
            &python,
            "--",
            "--fail",
        ],
        &[],
    )
    .await;
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("failing now"), "{stdout}");
    assert_eq!(stderr.trim(), "error: Replica master-replica-0 exited with exit code 4.", "{stderr}");
    let (code, _, stderr) =
        run_anneal(&["local", "train", "--module-name", "x", "--package-path", "/no/such/dir"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.starts_with("error: --package-path /no/such/dir"), "{stderr}");
}
