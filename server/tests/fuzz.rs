//! A schema-driven fuzz run: schemathesis (from the project's `.venv`, see requirements.txt)
//! generates requests from `/v1/openapi.json` against the real server for a bounded time. No
//! answer may be a 5xx, and the server must still answer `/healthz` at the end.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::TestServer;

/// The fuzzing time budget, in seconds; the whole test stays under about three minutes.
const FUZZ_SECONDS: &str = "120";

#[tokio::test]
async fn fuzzing_the_api_finds_no_server_error_and_the_server_survives() {
    let server = TestServer::start().await;
    let st = common::python().with_file_name("st");
    assert!(st.is_file(), "{} is missing: install requirements.txt into .venv (make test does)", st.display());
    let work = tempfile::tempdir().expect("tempdir");
    let mut command = tokio::process::Command::new(&st);
    command
        .arg("run")
        .arg(server.url("/v1/openapi.json"))
        .args(["--url", &server.base])
        .args(["--checks", "not_a_server_error"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-time", FUZZ_SECONDS])
        // One worker: hypothesis describes its filters by parsing source, which is not thread-safe
        // on Python 3.11 (a second worker crashed the coverage phase).
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--seed", "12"])
        .args(["--suppress-health-check", "all"])
        .args(["--generation-database", "none"])
        .args(["--continue-on-failure", "--no-color"])
        // Revoking tokens at random could revoke the run's own token; the role tests cover it.
        .args(["--exclude-path", "/v1/tokens/{token}"]);
    if let Some(token) = &server.token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let run = command.current_dir(work.path()).stdin(Stdio::null()).kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("schemathesis finishes within its time budget")
        .expect("run schemathesis");
    let report = format!(
        "{}\n{}\nserver log (last part):\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        tail(&server.stderr(), 8000)
    );
    assert!(output.status.success(), "schemathesis found failures:\n{report}");
    assert!(!report.contains("Server error"), "a 5xx answer:\n{report}");
    let response = server.get("/healthz").await;
    assert_eq!(response.status(), 200, "the server is alive after fuzzing");
}

/// The last `n` bytes of `text` (at a character boundary).
fn tail(text: &str, n: usize) -> &str {
    let mut start = text.len().saturating_sub(n);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
