//! Wire conventions of the `/v1` REST API shared by every method: custom verbs, standard query
//! parameters, JSON content type and the error envelope.

mod common;

use common::TestServer;

#[tokio::test]
async fn get_config_answers_with_int64_as_string_and_a_stable_project_number() {
    let server = TestServer::start().await;
    let response = server.get("/v1/projects/demo:getConfig?alt=json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json; charset=UTF-8", "the API's content type");
    let body: serde_json::Value = response.json().await.expect("json");
    let number = body["serviceAccountProject"].as_str().expect("int64 is a JSON string");
    assert!(number.parse::<i64>().expect("numeric") > 0);
    assert!(body["serviceAccount"].as_str().expect("string").contains('@'), "{body}");

    let (_, again) = server.get_json("/v1/projects/demo:getConfig").await;
    assert_eq!(again, body, "same project, same answer");
    let (_, other) = server.get_json("/v1/projects/other:getConfig").await;
    assert_ne!(other["serviceAccountProject"], body["serviceAccountProject"], "projects get their own numbers");
}

#[tokio::test]
async fn standard_query_parameters_are_accepted() {
    let server = TestServer::start().await;
    let (status, body) = server
        .get_json("/v1/projects/demo:getConfig?alt=json&%24.xgafv=2&prettyPrint=false&fields=serviceAccount&quotaUser=x&key=k")
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn invalid_project_id_is_invalid_argument_naming_the_field() {
    let server = TestServer::start().await;
    let (status, body) = server.get_json("/v1/projects/bad%20id:getConfig").await;
    assert_eq!(status, 400, "{body}");
    let error = &body["error"];
    assert_eq!(error["code"], 400);
    assert_eq!(error["status"], "INVALID_ARGUMENT");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .starts_with("Field: name Error: 'bad id' is not a valid project id"),
        "{body}"
    );
    let detail = &error["details"][0];
    assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.BadRequest");
    assert_eq!(detail["fieldViolations"][0]["field"], "name");
}

#[tokio::test]
async fn unknown_methods_and_paths_answer_not_found_in_the_envelope() {
    let server = TestServer::start().await;
    for (method, path) in [
        ("GET", "/v1/projects/demo/nothing-here"),
        ("GET", "/v1/projects/demo:noSuchVerb"),
        ("POST", "/v1/projects/demo:getConfig"),
        ("DELETE", "/v1"),
    ] {
        let response =
            server.client.request(method.parse().expect("method"), server.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(response.headers()["content-type"], "application/json; charset=UTF-8");
        let body: serde_json::Value = response.json().await.expect("json envelope");
        assert_eq!(body["error"]["status"], "NOT_FOUND", "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], 404);
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(method), "{message}");
        let shown_path = path.split('?').next().expect("path");
        assert!(message.contains(shown_path), "names the path as sent: {message}");
    }
}

#[tokio::test]
async fn the_console_is_served_at_the_root() {
    let server = TestServer::start().await;
    let response = server.get("/").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.expect("html");
    assert!(
        html.contains("<nav") && html.contains("Jobs") && html.contains("Models") && html.contains("Operations"),
        "{html}"
    );
    assert!(html.contains("/pkg/anneal.js"), "loads the hydration script: {html}");
    // `make build` puts the assets where the binary finds them, whatever the working directory.
    for asset in ["/pkg/anneal.js", "/pkg/anneal.wasm", "/pkg/anneal.css"] {
        let response = server.get(asset).await;
        assert_eq!(response.status(), 200, "{asset}: run `make build` first so the console assets exist");
    }
}
