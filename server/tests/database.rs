//! The metadata database's failures, as an operator sees them: a `database_url` that is not one,
//! or a database that cannot be reached at start, stops the server with one `error:` line (and
//! never shows the password); a PostgreSQL server that goes away under a running Anneal makes
//! requests answer 503 UNAVAILABLE promptly instead of hanging, writes nothing half-done, and
//! Anneal serves again by itself when the database is back.
//!
//! The outage test takes the test PostgreSQL server down and up again, so it needs the one that
//! `scripts/with-postgres.sh` starts (`make test` runs every suite inside it).

mod common;

use std::time::{Duration, Instant};

use common::{run_anneal, TestServer};
use serde_json::json;

/// The one `error:` line of a start that failed, asserting that it is the only line and the
/// exit status is 1.
async fn start_error(database_url: &str) -> String {
    let data = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let (code, stdout, stderr) = run_anneal(
        &["serve", "--addr", "127.0.0.1:0", "--log", "off", "--data-dir", data.path().to_str().expect("utf8")],
        &[("ANNEAL_DATABASE_URL", database_url)],
    )
    .await;
    assert_eq!(code, Some(1), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "never claimed to listen: {stdout}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up within the connect timeout");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn a_database_url_that_is_not_one_stops_the_start_with_one_line() {
    let line = start_error("mysql://root:hunter2@db.internal/anneal").await;
    assert!(line.contains("database_url must start with sqlite:// or postgres://"), "{line}");
    assert!(!line.contains("hunter2"), "the password is not shown: {line}");
}

#[tokio::test]
async fn an_unreachable_postgresql_stops_the_start_with_one_line_without_the_password() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let line = start_error(&format!("postgres://anneal:s3cret@127.0.0.1:{port}/anneal")).await;
    assert!(
        line.contains(&format!("cannot open the database postgres://anneal:***@127.0.0.1:{port}/anneal")),
        "{line}"
    );
    assert!(!line.contains("s3cret"), "{line}");
}

/// The outage test takes the test PostgreSQL server away from the other tests of this file (they
/// run in parallel): it holds this for writing, they hold it for reading.
static CLUSTER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The test PostgreSQL server taken down while this lives, and brought back when it is dropped
/// (also when an assertion failed, so the suites after this one run).
struct Outage;

impl Outage {
    fn begin() -> Self {
        cluster("stop");
        Self
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        cluster("start");
    }
}

/// Runs `scripts/with-postgres.sh --ctl stop|start`.
fn cluster(action: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/with-postgres.sh");
    let status = std::process::Command::new(script).args(["--ctl", action]).status().expect("with-postgres.sh");
    assert!(status.success(), "with-postgres.sh --ctl {action}");
}

#[tokio::test]
async fn requests_answer_503_while_postgresql_is_down_and_succeed_again_when_it_is_back() {
    let _alone = CLUSTER.write().await;
    let server = TestServer::start_with(&["--database-url", &common::fresh_postgres_database().await], &[]).await;
    let model = |name: &str| json!({"name": name});
    assert_eq!(server.post_json("/v1/projects/p/models", &model("before")).await.0, 200);

    {
        let _outage = Outage::begin();
        let started = Instant::now();
        let (status, body) = server.get_json("/v1/projects/p/models/before").await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
        assert!(started.elapsed() < Duration::from_secs(15), "answered within the pool's timeout");
        let (status, body) = server.post_json("/v1/projects/p/models", &model("during")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(server.get("/readyz").await.status().as_u16(), 503, "not ready without its database");
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server.get_json("/v1/projects/p/models/before").await;
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not serving 60 s after the database came back: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.post_json("/v1/projects/p/models", &model("after")).await.0, 200);
    let (status, body) = server.get_json("/v1/projects/p/models/during").await;
    assert_eq!(status, 404, "the write refused during the outage left nothing behind: {body}");
    assert_eq!(server.get("/readyz").await.status().as_u16(), 200);
}

#[tokio::test]
async fn sslmode_require_against_a_server_without_tls_stops_the_start_with_one_line() {
    let _up = CLUSTER.read().await;
    // The test server speaks no TLS, so a URL that demands it cannot connect.
    let line = start_error(&format!("{}?sslmode=require", common::postgres_server())).await;
    assert!(line.contains("cannot open the database") && line.contains("TLS"), "{line}");
}

#[tokio::test]
async fn text_postgresql_cannot_store_is_refused_or_replaced_not_an_internal_error() {
    let _up = CLUSTER.read().await;
    let server = TestServer::start_with(&["--database-url", &common::fresh_postgres_database().await], &[]).await;
    // A client's NUL character: the request is refused, naming why.
    let (status, body) =
        server.post_json("/v1/projects/p/models", &json!({"name": "m", "description": "a\u{0}b"})).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("NUL character")), "{body}");
    // A trainer's NUL in its last lines: the job still ends FAILED with them, the NUL replaced.
    let package = server.trainer("nul", "import sys\nsys.stderr.write('bad\\x00byte\\n')\nsys.exit(3)\n");
    let input = json!({"packageUris": [package.display().to_string()], "pythonModule": "nul.task"});
    let (status, body) = server.submit_training("nul", input).await;
    assert_eq!(status, 200, "{body}");
    let job = server.wait_job("nul", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(job["state"], "FAILED", "{job}");
    assert!(job["errorMessage"].as_str().is_some_and(|m| m.contains("bad\u{FFFD}byte")), "{job}");
}
