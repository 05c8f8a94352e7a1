//! Jobs keep the plan they were created with: a job queued by an Anneal that stored no plan
//! still runs after an upgrade, and a plan this version cannot read fails that one job with a
//! message saying so, while the others go on.

mod common;

use common::TestServer;
use serde_json::json;

/// Changes the stopped server's database (SQLite or PostgreSQL).
fn sql(data: &std::path::Path, statement: &str) {
    common::execute_sql(data, statement);
}

#[tokio::test]
async fn queued_jobs_without_a_plan_run_and_unreadable_plans_fail_alone() {
    let slots = [("ANNEAL_TRAINING_SLOTS", "1")];
    let server = TestServer::start_with(&[], &slots).await;
    let blocker = server.trainer("blocker", "import time\nprint('holding the slot', flush=True)\ntime.sleep(600)\n");
    let quick = server.trainer("quick", "print('planned and done')\n");
    let input = |package: &std::path::Path, module: &str| json!({"packageUris": [package.display().to_string()], "pythonModule": module});
    assert_eq!(server.submit_training("blocker", input(&blocker, "blocker.task")).await.0, 200);
    server.wait_job("blocker", &["RUNNING"]).await;
    for job in ["old", "future", "current"] {
        let (status, body) = server.submit_training(job, input(&quick, "quick.task")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "QUEUED", "the slot is taken: {body}");
    }
    let data = server.stop_keeping_data().await;

    // As an Anneal before plans left them: no plan; and one written by a later Anneal.
    sql(data.path(), "UPDATE jobs SET plan = NULL WHERE job_id = 'old'");
    sql(data.path(), match common::backend() {
        common::Backend::Sqlite => "UPDATE jobs SET plan = json_set(plan, '$.version', 99) WHERE job_id = 'future'",
        common::Backend::Postgres => {
            "UPDATE jobs SET plan = CAST(jsonb_set(CAST(plan AS JSONB), '{version}', '99') AS TEXT) WHERE job_id = 'future'"
        }
    });

    let server = TestServer::start_in(data, &[], &slots).await;
    let old = server.wait_job("old", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(old["state"], "SUCCEEDED", "a job stored without a plan gets one and runs: {old}");
    let future = server.wait_job("future", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(future["state"], "FAILED", "{future}");
    let message = future["errorMessage"].as_str().expect("errorMessage");
    assert!(message.contains("plan version 99") && message.contains("Submit it again"), "{message}");
    let current = server.wait_job("current", &["SUCCEEDED", "FAILED"]).await;
    assert_eq!(current["state"], "SUCCEEDED", "the other jobs go on: {current}");
    let (_, blocker) = server.get_json("/v1/projects/p/jobs/blocker").await;
    assert_eq!(blocker["state"], "FAILED", "stopped with the first server: {blocker}");
}
