//! The compatibility proof: Google's official `ml` v1 Python client (from the project's `.venv`)
//! drives a real Anneal through models, versions, operations, predictions (a TorchScript model and
//! one model of each Python framework, which the script builds: a Keras SavedModel, a scikit-learn
//! pipeline, an XGBoost booster and a custom prediction routine), training jobs and error shapes;
//! once with the local executor and local paths, once with `s3://` URIs, once with the jobs on a
//! Ray cluster.

mod common;

use common::TestServer;

#[tokio::test]
async fn the_official_python_client_works_unchanged() {
    run_official_client(&TestServer::start().await, &[]).await;
}

/// The same script with every URI in `s3://` (a moto server on 127.0.0.1 as the store).
#[tokio::test]
async fn the_official_python_client_works_unchanged_with_s3_uris() {
    let s3 = common::s3::S3Server::start().await;
    s3.create_bucket("compat").await;
    let buckets = common::s3::S3Server::buckets_env(&[common::s3::S3Server::with_projects(
        s3.bucket("compat", &[]),
        &["compat"],
    )]);
    let server = TestServer::start_with(&[], &[("ANNEAL_BUCKETS", buckets.as_str())]).await;
    run_official_client(&server, &[("S3_ENDPOINT", s3.endpoint.as_str()), ("S3_BUCKET", "compat")]).await;
}

/// The same script with the jobs run on a Ray cluster (`executor = "ray"`): the head that
/// `scripts/with-ray.sh` starts on 127.0.0.1 (`make test` runs every suite inside it).
#[tokio::test]
async fn the_official_python_client_works_unchanged_on_ray() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/with-ray.sh"))
    };
    let (address, token, python) =
        (var("ANNEAL_TEST_RAY_ADDRESS"), var("ANNEAL_TEST_RAY_TOKEN"), var("ANNEAL_TEST_RAY_PYTHON"));
    let settings = [
        ("ANNEAL_EXECUTOR", "ray"),
        ("ANNEAL_RAY_ADDRESS", address.as_str()),
        ("ANNEAL_RAY_TOKEN", token.as_str()),
        ("ANNEAL_RAY_PYTHON", python.as_str()),
        ("ANNEAL_KILL_GRACE_SECS", "2"),
    ];
    let server = TestServer::start_with(&[], &settings).await;
    run_official_client(&server, &[("ON_RAY", "1")]).await;
    // The training and batch jobs ran on Ray.
    for job in ["train_1", "batch_1"] {
        let (status, logs) = server.get_json(&format!("/v1/projects/compat/jobs/{job}/logs?limit=10000")).await;
        assert_eq!(status, 200, "{logs}");
        assert!(logs.to_string().contains("Submitting the job to Ray at"), "{job}: {logs}");
    }
}

async fn run_official_client(server: &TestServer, envs: &[(&str, &str)]) {
    let model_dir = server.stage_fixture("mlp_unsigned");
    let package = server.data.path().join("packages/compat");
    std::fs::create_dir_all(package.join("compat_trainer")).expect("mkdir");
    std::fs::write(package.join("compat_trainer/__init__.py"), "").expect("init");
    std::fs::write(
        package.join("compat_trainer/task.py"),
        "import argparse, time\np = argparse.ArgumentParser()\np.add_argument('--sleep', type=float)\np.add_argument('--job-dir')\ntime.sleep(p.parse_args().sleep)\n",
    )
    .expect("task");
    let viewer = server.create_token("viewer", &["compat"]).await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat/official_client.py");
    let output = tokio::process::Command::new(common::python())
        .arg(script)
        .env("ANNEAL_URL", &server.base)
        .env("ANNEAL_TOKEN", server.admin_token())
        .env("ANNEAL_VIEWER_TOKEN", &viewer)
        .env("MODEL_DIR", &model_dir)
        .env("PACKAGE_DIR", &package)
        .envs(envs.iter().copied())
        .output()
        .await
        .expect("run the official client script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "official client failed\nstdout:\n{stdout}\nstderr:\n{stderr}\nserver log:\n{}",
        server.stderr()
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
