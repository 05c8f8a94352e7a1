//! The committed OpenAPI document and the REST routes stay in step: every documented method is
//! served, every route in `src/api/` is documented, and the server serves the committed file.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::TestServer;
use serde_json::Value;

const METHODS: &[&str] = &["get", "post", "patch", "delete", "put"];

fn committed() -> Value {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json"))
        .expect("openapi.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                set.insert((method.clone(), path.clone()));
            }
        }
    }
    set
}

/// `(method, /v1 path)` of every `.route(...)` in the API's source files, verbs written `:verb`.
fn routed() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("src/api").map(|e| e.expect("entry").path()).collect();
    files.push(dir.with_extension("rs"));
    let mut set = BTreeSet::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let source = std::fs::read_to_string(file).expect("source");
        // Unit tests at the end of a file may build routers of their own.
        let source = source.split("#[cfg(test)]").next().unwrap_or_default();
        let mut rest = source;
        while let Some(start) = rest.find(".route(\"") {
            let after = &rest[start + 8..];
            let path_end = after.find('"').expect("closing quote");
            let path = &after[..path_end];
            let mut depth = 1;
            let mut end = path_end;
            for (i, c) in after[path_end..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = path_end + i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let handlers = &after[path_end..end];
            // A catch-all `{*path}` segment is documented as `{path}`.
            let api_path = format!("/v1{}", path.replace("/@", ":").replace("{*", "{"));
            for method in METHODS {
                if handlers.contains(&format!("{method}(")) {
                    set.insert((method.to_string(), api_path.clone()));
                }
            }
            rest = &after[end..];
        }
    }
    set
}

#[test]
fn every_route_is_documented_and_every_documented_method_is_routed() {
    let documented = documented(&committed());
    let routed = routed();
    assert!(routed.len() >= 15, "found the routes in the source: {routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "documented but not routed: {unrouted:?}");
}

#[tokio::test]
async fn the_server_serves_the_committed_document_and_answers_each_documented_method() {
    let server = TestServer::start().await;
    let (status, served) = server.get_json("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(served, committed());
    for (method, path) in documented(&served) {
        let concrete = path
            .replace("{project}", "p")
            .replace("{model}", "m")
            .replace("{version}", "v")
            .replace("{operation}", "o")
            .replace("{upload}", "u")
            .replace("{path}", "f");
        let response = server
            .client
            .request(method.to_uppercase().parse().expect("method"), server.url(&concrete))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .expect("request");
        let body = response.text().await.expect("body");
        assert!(!body.contains("No API method answers"), "{method} {concrete} is documented but not served: {body}");
    }
}
