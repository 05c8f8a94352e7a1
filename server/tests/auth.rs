//! Tokens, roles and projects through the real server: every route of the OpenAPI document
//! called with every role (and with no token, and with a token of another project), revocation,
//! the audit log, the IAM methods, the admin token of the first start, and `--no-auth`.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{client_with, TestServer};
use serde_json::{json, Value};

const ROLES: [&str; 4] = ["admin", "developer", "viewer", "predictor"];

/// The roles that may call `method path` (the path as documented, `/v1/...`), written out here
/// independently of the server's own table.
fn allowed_roles(method: &str, path: &str) -> BTreeSet<&'static str> {
    let all: BTreeSet<&str> = ROLES.into_iter().collect();
    let set = |roles: &[&'static str]| roles.iter().copied().collect::<BTreeSet<_>>();
    if path == "/v1/openapi.json" {
        return all;
    }
    if path.ends_with(":predict") {
        return set(&["admin", "developer", "predictor"]);
    }
    if path.ends_with(":testIamPermissions") {
        return all;
    }
    if path.ends_with(":setIamPolicy")
        || path.starts_with("/v1/tokens")
        || path == "/v1/auditLog"
        || path == "/v1/nodes"
    {
        return set(&["admin"]);
    }
    match method {
        "get" => set(&["admin", "developer", "viewer"]),
        _ => set(&["admin", "developer"]),
    }
}

fn documented_routes() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json"))
        .expect("openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let mut routes = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("item").keys() {
            if ["get", "post", "patch", "delete", "put"].contains(&method.as_str()) {
                routes.push((method.clone(), path.clone()));
            }
        }
    }
    routes
}

fn concrete(path: &str, project: &str) -> String {
    path.replace("{project}", project)
        .replace("{model}", "m")
        .replace("{version}", "v")
        .replace("{operation}", "o")
        .replace("{job}", "j")
        .replace("{upload}", "u")
        .replace("{path}", "f")
        .replace("{token}", "0000000000000000")
}

async fn call(client: &reqwest::Client, server: &TestServer, method: &str, path: &str) -> (u16, Value) {
    let response = client
        .request(method.to_uppercase().parse().expect("method"), server.url(path))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn every_route_answers_each_role_exactly_as_its_permission_says() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for role in ROLES {
        let token =
            if role == "admin" { server.admin_token().to_owned() } else { server.create_token(role, &["p"]).await };
        clients.push((role, client_with(Some(&token))));
    }
    let other_project = client_with(Some(&server.create_token("developer", &["q"]).await));
    let routes = documented_routes();
    assert!(routes.len() >= 30, "the document lists the routes: {routes:?}");
    let mut checked = 0;
    for (method, path) in &routes {
        let url = concrete(path, "p");
        let allowed = allowed_roles(method, path);
        // Without a token: 401 in the API's envelope (the document itself is public).
        let (status, body) = call(&server.anonymous, &server, method, &url).await;
        if path == "/v1/openapi.json" {
            assert_eq!(status, 200);
        } else {
            assert_eq!(status, 401, "{method} {url} without a token: {body}");
            assert_eq!(body["error"]["status"], "UNAUTHENTICATED", "{body}");
            assert_eq!(body["error"]["code"], 401);
        }
        for (role, client) in &clients {
            let (status, body) = call(client, &server, method, &url).await;
            if allowed.contains(role) {
                assert!(status != 401 && status != 403, "{role} may {method} {url}, got {status}: {body}");
            } else {
                assert_eq!(status, 403, "{role} may not {method} {url}: {body}");
                assert_eq!(body["error"]["status"], "PERMISSION_DENIED", "{body}");
            }
            checked += 1;
        }
        // A token of project q learns nothing of project p: 404, never 403.
        if path.contains("{project}") {
            let (status, body) = call(&other_project, &server, method, &url).await;
            assert_eq!(status, 404, "{method} {url} with a token of project q: {body}");
            assert_eq!(body["error"]["status"], "NOT_FOUND", "{body}");
        }
    }
    assert!(checked >= 120, "checked {checked} (route, role) pairs");
    // The other project's token works in its own project.
    let (status, body) = call(&other_project, &server, "get", "/v1/projects/q/models").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn projects_isolate_resources_uploads_operations_and_tokens() {
    let server = TestServer::start().await;
    server.create_model("secret_model").await;
    let a = client_with(Some(&server.create_token("admin", &["a"]).await));
    // The project-bound admin cannot see p's model, its operations or uploads, nor mint a token
    // for every project.
    let (status, _) = call(&a, &server, "get", "/v1/projects/p/models/secret_model").await;
    assert_eq!(status, 404);
    let (status, _) = call(&a, &server, "get", "/v1/projects/p/operations").await;
    assert_eq!(status, 404);
    let (status, _) = call(&a, &server, "post", "/v1/projects/p/uploads").await;
    assert_eq!(status, 404);
    let response = a
        .post(server.url("/v1/tokens"))
        .json(&json!({"name": "escalate", "role": "admin", "projects": ["*"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 403, "a project admin cannot make an all-projects token");
    let response = a
        .post(server.url("/v1/tokens"))
        .json(&json!({"name": "ok", "role": "viewer", "projects": ["a"]}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), 200);
    // It lists only the tokens within its projects: not the all-projects admin token.
    let listed: Value = a.get(server.url("/v1/tokens")).send().await.expect("GET").json().await.expect("JSON");
    let names: Vec<&str> =
        listed["tokens"].as_array().expect("tokens").iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"ok") && !names.iter().any(|n| n.starts_with("admin (first")), "{names:?}");
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once() {
    let server = TestServer::start().await;
    let token = server.create_token("developer", &[]).await;
    let developer = client_with(Some(&token));
    let (status, me) = call(&developer, &server, "get", "/v1/tokens/self").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["role"], "developer");
    assert_eq!(me["projects"], json!(["*"]));
    assert!(me.get("token").is_none() && !me.to_string().contains(&token), "the secret is never shown again");
    let id = me["id"].as_str().expect("id").to_owned();
    let (status, _) = call(&developer, &server, "get", "/v1/projects/p/models").await;
    assert_eq!(status, 200);

    let (status, revoked) = server.delete_json(&format!("/v1/tokens/{id}")).await;
    assert_eq!(status, 200, "{revoked}");
    assert!(revoked["revokeTime"].is_string());
    let (status, body) = call(&developer, &server, "get", "/v1/projects/p/models").await;
    assert_eq!(status, 401, "revoked: {body}");
    let (status, _) = server.delete_json(&format!("/v1/tokens/{id}")).await;
    assert_eq!(status, 400, "revoking twice is a failed precondition");
    // Nothing of the secret is in the database.
    let db = server.database_contents().await;
    let secret = token.rsplit('_').next().expect("secret");
    assert!(!db.windows(secret.len()).any(|w| w == secret.as_bytes()), "the token's secret is not stored");
    // Malformed credentials are 401 too, with a WWW-Authenticate challenge.
    let response = server
        .anonymous
        .get(server.url("/v1/projects/p/models"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("www-authenticate").is_some());
}

/// Node `name` of a cluster on the PostgreSQL database `url` with the storage folder `storage`
/// (as `tests/nodes.rs` starts them).
async fn cluster_node(url: &str, storage: &Path, name: &str) -> TestServer {
    let storage = storage.display().to_string();
    let envs = [("ANNEAL_DATABASE_URL", url), ("ANNEAL_NODE_ID", name), ("ANNEAL_STORAGE_DIR", storage.as_str())];
    TestServer::start_with(&[], &envs).await
}

/// Makes a developer token on node `a`, has node `b` check (and cache) it, revokes it through
/// `a`, and polls `b` with it every 50 ms; returns how long after `a` answered the revocation `b`
/// first refused the token (polling up to 15 s, past the cache's 10 s).
async fn revocation_delay(a: &TestServer, b: &TestServer) -> Duration {
    let token = a.create_token("developer", &[]).await;
    let developer = client_with(Some(&token));
    let (status, me) = call(&developer, a, "get", "/v1/tokens/self").await;
    assert_eq!(status, 200, "{me}");
    let id = me["id"].as_str().expect("id").to_owned();
    for _ in 0..2 {
        let (status, body) = call(&developer, b, "get", "/v1/projects/p/models").await;
        assert_eq!(status, 200, "node B accepts the token: {body}");
    }
    let (status, revoked) = a.delete_json(&format!("/v1/tokens/{id}")).await;
    assert_eq!(status, 200, "{revoked}");
    let answered = Instant::now();
    let delay = loop {
        let (status, body) = call(&developer, b, "get", "/v1/projects/p/models").await;
        let elapsed = answered.elapsed();
        if status == 401 {
            break elapsed;
        }
        assert_eq!(status, 200, "{body}");
        assert!(elapsed < Duration::from_secs(15), "node B still accepts the revoked token after 15 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, _) = call(&developer, a, "get", "/v1/projects/p/models").await;
    assert_eq!(status, 401, "node A refuses it too");
    delay
}

#[tokio::test]
async fn a_token_revoked_on_one_node_stops_working_on_every_node_within_a_second() {
    if common::backend() != common::Backend::Postgres {
        println!("skipped: several nodes share a PostgreSQL database (ANNEAL_TEST_BACKEND=postgres runs this)");
        return;
    }
    let url = common::fresh_postgres_database().await;
    let storage = tempfile::tempdir().expect("storage");
    let a = cluster_node(&url, storage.path(), "node-a").await;
    let b = cluster_node(&url, storage.path(), "node-b").await;

    let delay = revocation_delay(&a, &b).await;
    println!("revocation on node A reached node B {:.3} s after A answered", delay.as_secs_f64());
    assert!(delay < Duration::from_secs(1), "node B accepted the revoked token for {:.3} s", delay.as_secs_f64());

    // The nodes' listening connections are cut (as a network failure or a database restart
    // would): each listens again and still hears revocations.
    use sqlx::Connection;
    let mut db = sqlx::PgConnection::connect(&url).await.expect("connect");
    let listeners = "SELECT pid FROM pg_stat_activity \
                     WHERE application_name = 'anneal-auth-listener' AND datname = current_database()";
    let cut: Vec<(i32,)> = sqlx::query_as(listeners).fetch_all(&mut db).await.expect("listeners");
    assert_eq!(cut.len(), 2, "each node listens on a connection of its own");
    for (pid,) in &cut {
        sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut db).await.expect("terminate");
    }
    let cut_at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now: Vec<(i32,)> = sqlx::query_as(listeners).fetch_all(&mut db).await.expect("listeners");
        if now.len() == 2 && !now.iter().any(|pid| cut.contains(pid)) {
            break;
        }
        assert!(cut_at.elapsed() < Duration::from_secs(10), "the nodes did not listen again within 10 s: {now:?}");
    }
    println!("both nodes listened again {:.3} s after their connections were cut", cut_at.elapsed().as_secs_f64());
    let delay = revocation_delay(&a, &b).await;
    println!("after the listeners reconnected: reached node B {:.3} s after A answered", delay.as_secs_f64());
    assert!(delay < Duration::from_secs(1), "node B accepted the revoked token for {:.3} s", delay.as_secs_f64());
}

#[tokio::test]
async fn every_mutation_is_in_the_audit_log_with_its_outcome() {
    let server = TestServer::start().await;
    server.create_model("audited").await;
    let viewer = client_with(Some(&server.create_token("viewer", &["p"]).await));
    let (status, _) = call(&viewer, &server, "delete", "/v1/projects/p/models/audited").await;
    assert_eq!(status, 403);
    let (status, _) = call(&viewer, &server, "get", "/v1/auditLog").await;
    assert_eq!(status, 403, "only admins read the audit log");

    let (status, log) = server.get_json("/v1/auditLog").await;
    assert_eq!(status, 200, "{log}");
    let entries = log["entries"].as_array().expect("entries");
    let created = entries
        .iter()
        .find(|e| e["method"] == "POST" && e["path"] == "/v1/projects/p/models")
        .unwrap_or_else(|| panic!("model creation logged: {log}"));
    assert_eq!(created["status"], 200);
    assert_eq!(created["outcome"], "ok");
    assert_eq!(created["project"], "p");
    assert!(created["actor"].as_str().is_some_and(|a| a.starts_with("token:")), "{created}");
    let denied = entries
        .iter()
        .find(|e| e["method"] == "DELETE")
        .unwrap_or_else(|| panic!("the denied delete is logged: {log}"));
    assert_eq!(denied["status"], 403);
    assert!(denied["outcome"].as_str().is_some_and(|o| o.starts_with("denied")), "{denied}");
    assert!(entries.iter().any(|e| e["path"] == "/v1/tokens" && e["method"] == "POST"), "token creation is logged");
    // Reads are not mutations.
    assert!(!entries.iter().any(|e| e["method"] == "GET"), "{log}");
}

#[tokio::test]
async fn iam_methods_map_onto_the_roles() {
    let server = TestServer::start().await;
    server.create_model("m").await;
    let viewer = client_with(Some(&server.create_token("viewer", &["p"]).await));
    let (status, policy) = server.get_json("/v1/projects/p/models/m:getIamPolicy").await;
    assert_eq!(status, 200, "{policy}");
    let admin_id = server.get_json("/v1/tokens/self").await.1["id"].as_str().expect("id").to_owned();
    let admins = policy["bindings"]
        .as_array()
        .expect("bindings")
        .iter()
        .find(|b| b["role"] == "roles/ml.admin")
        .expect("an admin binding");
    assert!(admins["members"].as_array().expect("members").contains(&json!(format!("token:{admin_id}"))));

    let asked = json!({"permissions": ["ml.models.get", "ml.models.predict", "ml.models.delete", "ml.versions.list"]});
    let held: Value = viewer
        .post(server.url("/v1/projects/p/models/m:testIamPermissions"))
        .json(&asked)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(held["permissions"], json!(["ml.models.get", "ml.versions.list"]));

    let new_policy = json!({"policy": {"version": 1, "bindings": [{"role": "roles/ml.viewer", "members": ["user:ann@example.com"]}], "etag": policy["etag"]}});
    let (status, stored) = server.post_json("/v1/projects/p/models/m:setIamPolicy", &new_policy).await;
    assert_eq!(status, 200, "{stored}");
    let (_, read_back) = server.get_json("/v1/projects/p/models/m:getIamPolicy").await;
    assert_eq!(read_back["bindings"], stored["bindings"]);
    let (status, body) = server.post_json("/v1/projects/p/models/m:setIamPolicy", &new_policy).await;
    assert_eq!(status, 409, "a stale etag is refused: {body}");
    // The policy the tokens give changes when a token is made, and so does its etag.
    server.create_model("n").await;
    let (_, before) = server.get_json("/v1/projects/p/models/n:getIamPolicy").await;
    server.create_token("predictor", &["p"]).await;
    let (_, after) = server.get_json("/v1/projects/p/models/n:getIamPolicy").await;
    assert_ne!(before["etag"], after["etag"]);
    let bad = json!({"policy": {"bindings": [{"role": "roles/owner", "members": []}]}});
    let (status, body) = server.post_json("/v1/projects/p/models/m:setIamPolicy", &bad).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["fieldViolations"][0]["field"], "policy.bindings[0].role");
    let (status, _) = server.get_json("/v1/projects/p/models/nope:getIamPolicy").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_first_start_makes_a_private_admin_token_and_a_one_time_login_link() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::start().await;
    let file = server.data.path().join("admin.token");
    let mode = std::fs::metadata(&file).expect("admin.token").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "only the server's user can read the admin token");
    let first = server.admin_token().to_owned();
    let (status, me) = server.get_json("/v1/tokens/self").await;
    assert_eq!((status, me["role"].as_str()), (200, Some("admin")));
    let printed = server.printed_lines(2).await.join("\n");
    assert!(printed.contains(&format!("Admin token: {}", file.display())), "{printed}");
    assert!(printed.contains(&format!("{}/login?code=", server.base)), "{printed}");

    // A restart keeps the token and makes no second one.
    let data = server.stop_keeping_data().await;
    let server = TestServer::start_in(data, &[], &[]).await;
    assert_eq!(server.admin_token(), first);
    let (_, tokens) = server.get_json("/v1/tokens").await;
    assert_eq!(tokens["tokens"].as_array().expect("tokens").len(), 1, "{tokens}");
}

#[tokio::test]
async fn no_auth_is_allowed_on_loopback_only() {
    let (code, _, err) =
        common::run_anneal(&["serve", "--addr", "0.0.0.0:0", "--no-auth", "--data-dir", "/tmp/anneal-never"], &[])
            .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("refusing to serve 0.0.0.0:0 without authentication"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let server = TestServer::start_with(&["--no-auth"], &[("ANNEAL_LOG", "warn")]).await;
    assert!(server.token.is_none(), "no admin token without authentication");
    let (status, body) = call(&server.anonymous, &server, "get", "/v1/projects/p/models").await;
    assert_eq!(status, 200, "{body}");
    assert!(server.stderr().contains("authentication is OFF"), "{}", server.stderr());
}

#[tokio::test]
async fn console_logins_and_logouts_are_audited_and_long_paths_are_cut() {
    let server = TestServer::start().await;
    let login = server
        .anonymous
        .post(server.url("/console/login"))
        .form(&[("token", server.admin_token())])
        .send()
        .await
        .expect("login");
    assert!(login.status().is_redirection() || login.status().is_success(), "{}", login.status());
    let long = format!("/v1/projects/p/models/{}", "m".repeat(5000));
    let (status, _) = server.delete_json(&long).await;
    assert!(status >= 400);
    let (_, log) = server.get_json("/v1/auditLog").await;
    let entries = log["entries"].as_array().expect("entries");
    assert!(entries.iter().any(|e| e["method"] == "LOGIN" && e["path"] == "/console/login"), "{log}");
    assert!(entries.iter().all(|e| e["path"].as_str().is_some_and(|p| p.len() <= 512)), "{log}");
}

/// Sends one HTTP/1.1 request on `stream` and reads its answer: the status line and the body.
async fn exchange(stream: &mut tokio::io::BufStream<tokio::net::TcpStream>, request: &str) -> (String, String) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    // Headers and body in two writes, as httplib2 sends them: the server sees the headers (and
    // may answer) before the body has arrived.
    let (head, body) = request.split_at(request.find("\r\n\r\n").map_or(request.len(), |i| i + 4));
    stream.write_all(head.as_bytes()).await.expect("send");
    stream.flush().await.expect("flush");
    if !body.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stream.write_all(body.as_bytes()).await.expect("send body");
        stream.flush().await.expect("flush");
    }
    let mut status = String::new();
    stream.read_line(&mut status).await.expect("status line");
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.expect("header");
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("length");
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("body");
    (status.trim().to_owned(), String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_refused_request_leaves_its_connection_usable() {
    // Clients such as Google's (httplib2) keep connections alive: a refusal that left the body
    // unread would close the connection under them and fail their next call.
    let server = TestServer::start().await;
    let viewer = server.create_token("viewer", &["p"]).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut stream = tokio::io::BufStream::new(tcp);
    let body = r#"{"name": "refused_model", "description": "a body the refusal must read"}"#;
    for (token, expected) in [(viewer.as_str(), "403"), ("ann_0000000000000000_wrong", "401")] {
        let post = format!(
            "POST /v1/projects/p/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) = exchange(&mut stream, &post).await;
        assert!(status.contains(expected), "{status}: {answer}");
        let get =
            format!("GET /v1/projects/p/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {viewer}\r\n\r\n");
        let (status, answer) = exchange(&mut stream, &get).await;
        assert!(status.contains("200"), "the same connection answers the next request: {status}: {answer}");
    }
}

#[tokio::test]
async fn empty_request_bodies_sent_late_leave_the_connection_usable() {
    // setDefault and operations.cancel take an empty request message; httplib2 sends its `{}`
    // after the headers, so the handler must read it or the next call finds the connection closed.
    let server = TestServer::start().await;
    server.create_model("m").await;
    let op = server.deploy("m", "v1", "mlp").await;
    assert!(op.get("error").is_none(), "{op}");
    let addr = server.base.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut stream = tokio::io::BufStream::new(tcp);
    let token = server.admin_token().to_owned();
    for (path, expected) in
        [("/v1/projects/p/models/m/versions/v1:setDefault", "200"), ("/v1/projects/p/operations/nothing:cancel", "404")]
    {
        let post = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let (status, answer) = exchange(&mut stream, &post).await;
        assert!(status.contains(expected), "{path}: {status}: {answer}");
        let get =
            format!("GET /v1/projects/p/models HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n");
        let (status, answer) = exchange(&mut stream, &get).await;
        assert!(status.contains("200"), "after {path} the same connection answers: {status}: {answer}");
    }
}
