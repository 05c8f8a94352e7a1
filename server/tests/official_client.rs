//! The compatibility proof: Google's official `ml` v1 Python client (from the project's `.venv`)
//! drives a real Anneal through models, versions, operations, predictions, training jobs and
//! error shapes.

mod common;

use common::TestServer;

#[tokio::test]
async fn the_official_python_client_works_unchanged() {
    let server = TestServer::start().await;
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
