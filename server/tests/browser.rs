//! What a web browser can and cannot do with Anneal: cross-site and non-JSON posts change
//! nothing, foreign `Host` names are refused (DNS rebinding), console pages carry their security
//! headers, and the console's sessions (login with a token or the one-time link, logout,
//! revocation) work as a browser sees them.

mod common;

use common::TestServer;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;
use serde_json::json;

/// A browser: no bearer token (a page cannot add one to a cross-site request) and redirects
/// shown, not followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A minimal job body (whether it would validate does not matter: the refusals come first).
fn job(id: &str) -> serde_json::Value {
    json!({"jobId": id, "trainingInput": {"pythonModule": "trainer.task", "packageUris": ["/nowhere.tar.gz"], "region": "local"}})
}

fn location(response: &reqwest::Response) -> String {
    response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

fn set_cookie(response: &reqwest::Response) -> Option<String> {
    response.headers().get(header::SET_COOKIE).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `name=value` of a `Set-Cookie` value, for a `Cookie` header.
fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or("").trim().to_owned()
}

async fn error_status(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("an error envelope");
    (status, body["error"]["status"].as_str().unwrap_or("").to_owned())
}

/// Logs in through the console's form as a browser on this server's own origin would; returns
/// the answer (a redirect).
async fn login(server: &TestServer, token: &str, next: &str) -> reqwest::Response {
    let body = format!(
        "token={}&next={}",
        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC),
        percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC)
    );
    browser()
        .post(server.url("/console/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, &server.base)
        .header("sec-fetch-site", "same-origin")
        .body(body)
        .send()
        .await
        .expect("POST /console/login")
}

/// Logs in with `token` and returns the session's `Cookie` header value.
async fn session(server: &TestServer, token: &str) -> String {
    let response = login(server, token, "/").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    cookie_pair(&set_cookie(&response).expect("a session cookie"))
}

async fn page(server: &TestServer, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = browser().get(server.url(path));
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.send().await.expect("GET page")
}

async fn job_count(server: &TestServer) -> usize {
    let (status, body) = server.get_json("/v1/projects/p/jobs").await;
    assert_eq!(status, 200, "{body}");
    body["jobs"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn cross_site_and_non_json_posts_create_no_job() {
    let server = TestServer::start().await;
    let url = server.url("/v1/projects/p/jobs");

    // A cross-site <form> post: form-encoded, from another origin. Even with a valid token
    // (which such a form could not add) it is refused before anything else.
    let form = server
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body("jobId=evil")
        .send()
        .await
        .expect("POST");
    assert_eq!(error_status(form).await, (403, "PERMISSION_DENIED".to_owned()));

    // Sec-Fetch-Site alone, and Origin alone, are each enough.
    for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "http://evil.example"), ("origin", "null")] {
        let response = server.client.post(&url).header(name, value).json(&job("evil_json")).send().await.expect("POST");
        assert_eq!(error_status(response).await, (403, "PERMISSION_DENIED".to_owned()), "{name}: {value}");
    }

    // A `text/plain` body (what a page may send without a preflight) is refused even with JSON in
    // it and no browser headers at all.
    let plain = server
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
        .body(job("evil_plain").to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(error_status(plain).await, (400, "INVALID_ARGUMENT".to_owned()));
    let form_without_origin = server
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("jobId=evil")
        .send()
        .await
        .expect("POST");
    assert_eq!(error_status(form_without_origin).await, (400, "INVALID_ARGUMENT".to_owned()));
    assert_eq!(job_count(&server).await, 0, "no job was created");

    // The console's own origin may change things, and clients without browser headers too.
    let own = server
        .client
        .post(server.url("/v1/projects/p/models"))
        .header(header::ORIGIN, &server.base)
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"name": "from_the_console"}))
        .send()
        .await
        .expect("POST");
    assert_eq!(own.status(), StatusCode::OK, "{}", own.text().await.unwrap_or_default());
    let (status, body) = server.post_json("/v1/projects/p/models", &json!({"name": "from_a_client"})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_foreign_host_name_is_refused_and_loopback_names_are_served() {
    let server = TestServer::start().await;
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let with_host = |path: &str, host: &str| server.client.get(server.url(path)).header(header::HOST, host).send();

    let api = with_host("/v1/projects/p/models", &format!("evil.example:{port}")).await.expect("GET");
    assert_eq!(error_status(api).await, (403, "PERMISSION_DENIED".to_owned()));
    let console = with_host("/login", "evil.example").await.expect("GET");
    assert_eq!(console.status(), StatusCode::FORBIDDEN);
    assert!(console.text().await.expect("text").contains("allowed_hosts"));

    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}"), "LocalHost".to_owned()] {
        let response = with_host("/v1/projects/p/models", &host).await.expect("GET");
        assert_eq!(response.status(), StatusCode::OK, "{host}");
    }
    // Load balancers probe by any name.
    let health = with_host("/healthz", "lb.internal").await.expect("GET");
    assert_eq!(health.status(), StatusCode::OK);
}

#[tokio::test]
async fn configured_hosts_are_served() {
    let server = TestServer::start_with(
        &[],
        &[("ANNEAL_PUBLIC_URL", "https://anneal.example.com"), ("ANNEAL_ALLOWED_HOSTS", "[\"ml.internal\"]")],
    )
    .await;
    for host in ["anneal.example.com", "ml.internal:8080"] {
        let response = server.client.get(server.url("/v1/projects/p/models")).header(header::HOST, host).send().await;
        assert_eq!(response.expect("GET").status(), StatusCode::OK, "{host}");
    }
    let other = server.client.get(server.url("/v1/projects/p/models")).header(header::HOST, "example.com").send().await;
    assert_eq!(other.expect("GET").status(), StatusCode::FORBIDDEN);

    // Behind the https proxy that public_url names, the session cookie is Secure.
    let response = browser()
        .post(server.url("/console/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "anneal.example.com")
        .header("x-forwarded-proto", "https")
        .header(header::ORIGIN, "https://anneal.example.com")
        .body(format!("token={}", server.admin_token()))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&response).expect("cookie").contains("; Secure"));
}

#[tokio::test]
async fn console_pages_carry_security_headers() {
    let server = TestServer::start().await;
    let cookie = session(&server, server.admin_token()).await;
    for path in ["/", "/login"] {
        let response = page(&server, path, Some(&cookie)).await;
        let response = if path == "/login" { page(&server, path, None).await } else { response };
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers: HeaderMap = response.headers().clone();
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let csp = get("content-security-policy");
        for part in ["script-src 'self' 'nonce-", "'wasm-unsafe-eval'", "frame-ancestors 'none'", "object-src 'none'"] {
            assert!(csp.contains(part), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(get("x-frame-options"), "DENY");
        assert_eq!(get("x-content-type-options"), "nosniff");
        assert_eq!(get("referrer-policy"), "same-origin");
        // The inline hydration script carries the nonce the policy names.
        let nonce = csp.split("'nonce-").nth(1).and_then(|rest| rest.split('\'').next()).expect("nonce").to_owned();
        let html = response.text().await.expect("html");
        assert!(html.contains(&format!("nonce=\"{nonce}\"")), "{path}: the hydration script has the nonce");
    }
    let api = server.get("/v1/projects/p/models").await;
    assert_eq!(api.headers().get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]));
}

#[tokio::test]
async fn logging_in_with_a_token_opens_a_session_and_logging_out_ends_it() {
    let server = TestServer::start().await;

    // Without a session, pages send the browser to the login page (and back afterwards), and
    // server functions answer 401.
    let anonymous = page(&server, "/projects/p/jobs", None).await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&anonymous), "/login?next=%2Fprojects%2Fp%2Fjobs");
    let server_fn = browser()
        .post(server.url("/api/fetch_session"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("POST");
    assert_eq!(error_status(server_fn).await, (401, "UNAUTHENTICATED".to_owned()));

    // A wrong token gets no cookie and the login page with a message.
    let wrong = login(&server, "ann_0123456789abcdef_wrong", "/projects/p/jobs").await;
    assert_eq!(wrong.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&wrong).is_none());
    assert_eq!(location(&wrong), "/login?failed=token&next=%2Fprojects%2Fp%2Fjobs");
    let shown = page(&server, &location(&wrong), None).await.text().await.expect("html");
    assert!(shown.contains("That token is not valid"), "{shown}");

    // The admin token opens a session: an HttpOnly, SameSite=Strict cookie, not Secure on http.
    let right = login(&server, server.admin_token(), "/projects/p/jobs").await;
    assert_eq!(right.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&right), "/projects/p/jobs");
    let set = set_cookie(&right).expect("a session cookie");
    assert!(set.starts_with("anneal_session="), "{set}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split(';').any(|a| a.trim() == attribute), "{attribute} in {set}");
    }
    assert!(!set.contains("Secure"), "{set}");
    let cookie = cookie_pair(&set);

    // The page renders as that identity (its name in the frame).
    let jobs = page(&server, "/projects/p/jobs", Some(&cookie)).await;
    assert_eq!(jobs.status(), StatusCode::OK);
    let html = jobs.text().await.expect("html");
    assert!(html.contains("admin (first start)") && html.contains("Log out"), "{html}");
    // A script with a bearer token reads pages without a session; a bad token is not logged in.
    let scripted =
        browser().get(server.url("/projects/p/jobs")).bearer_auth(server.admin_token()).send().await.expect("GET");
    assert_eq!(scripted.status(), StatusCode::OK);
    let bad = browser().get(server.url("/projects/p/jobs")).bearer_auth("ann_0123456789abcdef_x").send().await;
    assert_eq!(bad.expect("GET").status(), StatusCode::SEE_OTHER);
    // A logged-in browser asking for the login page goes on.
    assert_eq!(location(&page(&server, "/login?next=%2Fmodels", Some(&cookie)).await), "/models");

    // Logging out ends the session on the server, not only in the browser.
    let logout = browser()
        .post(server.url("/console/logout"))
        .header(header::COOKIE, &cookie)
        .header(header::ORIGIN, &server.base)
        .send()
        .await
        .expect("POST");
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&logout), "/login");
    assert!(set_cookie(&logout).expect("cleared").contains("Max-Age=0"));
    let after = page(&server, "/projects/p/jobs", Some(&cookie)).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(location(&after).starts_with("/login"));
}

#[tokio::test]
async fn a_cross_site_login_is_refused() {
    let server = TestServer::start().await;
    let response = browser()
        .post(server.url("/console/login"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ORIGIN, "http://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body(format!("token={}", server.admin_token()))
        .send()
        .await
        .expect("POST");
    assert!(set_cookie(&response).is_none());
    assert_eq!(error_status(response).await, (403, "PERMISSION_DENIED".to_owned()));
}

#[tokio::test]
async fn a_revoked_tokens_session_stops_working() {
    let server = TestServer::start().await;
    let token = server.create_token("developer", &[]).await;
    let cookie = session(&server, &token).await;
    assert_eq!(page(&server, "/projects/p/jobs", Some(&cookie)).await.status(), StatusCode::OK);

    let id = token.strip_prefix("ann_").and_then(|rest| rest.split('_').next()).expect("token id");
    let (status, body) = server.delete_json(&format!("/v1/tokens/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let after = page(&server, "/projects/p/jobs", Some(&cookie)).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert!(location(&after).starts_with("/login"));
}

#[tokio::test]
async fn a_predictor_sees_the_apis_refusal_on_list_pages() {
    let server = TestServer::start().await;
    let token = server.create_token("predictor", &[]).await;
    let cookie = session(&server, &token).await;
    let response = page(&server, "/projects/p/jobs", Some(&cookie)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("html");
    assert!(html.contains("PERMISSION_DENIED") && html.contains("predictor"), "{html}");
}

#[tokio::test]
async fn the_login_link_printed_at_start_works_once() {
    let server = TestServer::start().await;
    let lines = server.printed_lines(1).await;
    let link = lines
        .iter()
        .find_map(|line| line.split_whitespace().find(|word| word.contains("/login?code=")))
        .unwrap_or_else(|| panic!("no login link in {lines:?}"))
        .to_owned();
    let path = link.split_once("/login").map(|(_, rest)| format!("/login{rest}")).expect("path");

    let first = page(&server, &path, None).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&first), "/");
    let cookie = cookie_pair(&set_cookie(&first).expect("a session cookie"));
    assert_eq!(page(&server, "/", Some(&cookie)).await.status(), StatusCode::OK);

    let again = page(&server, &path, None).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&again).is_none());
    assert_eq!(location(&again), "/login?failed=code");
    let shown = page(&server, "/login?failed=code", None).await.text().await.expect("html");
    assert!(shown.contains("This login link was used already"), "{shown}");
}

#[tokio::test]
async fn without_authentication_the_console_needs_no_login() {
    let server = TestServer::start_with(&["--no-auth"], &[]).await;
    let response = page(&server, "/projects/p/jobs", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let html = response.text().await.expect("html");
    assert!(html.contains("authentication off"), "{html}");
    assert!(!html.contains("Log out"));
    assert_eq!(location(&page(&server, "/login", None).await), "/", "there is nothing to log in to");
}

#[tokio::test]
async fn server_functions_have_a_body_limit_and_a_time_limit() {
    let server = TestServer::start_with(&[], &[("ANNEAL_REQUEST_TIMEOUT_SECS", "2")]).await;
    // A script with a bearer token calls server functions as that token.
    use leptos::server_fn::ServerFn;
    let (fetch_session, api_get) = (app::api::FetchSession::PATH, app::api::ApiGet::PATH);
    let call = |path: &str, body: reqwest::Body| {
        browser()
            .post(server.url(path))
            .bearer_auth(server.admin_token())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let ok = call(fetch_session, reqwest::Body::from("")).await.expect("POST");
    assert_eq!(ok.status(), StatusCode::OK);
    assert!(ok.text().await.expect("body").contains("admin"));
    let ok = call(api_get, reqwest::Body::from("path=%2Fprojects%2Fp%2Fmodels")).await.expect("POST");
    assert_eq!(ok.status(), StatusCode::OK, "a body under the limit reaches the function");

    // Over 1 MiB, with its length declared or sent in chunks: 413, as the function's error.
    let big = format!("path={}", "a".repeat(1 << 20));
    let refused = call(api_get, reqwest::Body::from(big)).await.expect("POST");
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused.text().await.expect("body").contains("larger than the console accepts"));
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
        (0..3).map(|_| Ok(bytes::Bytes::from(vec![b'a'; 400 << 10]))).collect();
    let refused =
        call(api_get, reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))).await.expect("POST chunked");
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // A body that never arrives in full: 503 once the request timeout (2 s) has passed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = server.base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.expect("connect");
    let head = format!(
        "POST {fetch_session} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nx=",
        server.admin_token()
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), socket.read(&mut answer))
        .await
        .expect("an answer within 20 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("did not finish within 2 s"), "{answer}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500), "{:?}", started.elapsed());

    // The server goes on answering.
    let ok = call(fetch_session, reqwest::Body::from("")).await.expect("POST");
    assert_eq!(ok.status(), StatusCode::OK);
}
