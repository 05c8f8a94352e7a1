//! What keeps a web browser from being used against Anneal: the `Host` check against DNS
//! rebinding, the refusal of cross-site state-changing requests (CSRF), JSON-only REST bodies,
//! and the security headers every answer carries.
//!
//! The rules, applied by [`guard`] to every request before routing:
//!
//! - **Host.** A request whose `Host` is not an allowed name is refused (403: the API's envelope
//!   under `/v1`, a plain message elsewhere). Allowed are `localhost`, any IP address literal
//!   (a DNS-rebinding page can only make the browser send a host *name* it controls; an address
//!   literal is what the caller typed), the host of `public_url`, and `allowed_hosts` (`*` allows
//!   any). `/healthz` and `/readyz` answer any `Host`, so load balancers may probe them by any
//!   name; they reveal nothing.
//! - **Cross-site.** A request that is not GET, HEAD or OPTIONS is refused with 403
//!   PERMISSION_DENIED when `Sec-Fetch-Site` says `cross-site`, or `same-site` from an origin
//!   that is not allowed, or when it carries an `Origin` that is not this server's own
//!   (`scheme://` + the request's `Host`, or `public_url`'s origin). Requests without either
//!   header (curl, the CLI, Python clients) are not browsers' and pass.
//! - **JSON bodies.** A `POST` or `PATCH` under `/v1` must send its body as `application/json`
//!   (or `…+json`); a form or `text/plain` body (what a cross-site `<form>` can send without a
//!   preflight) is refused with 400 INVALID_ARGUMENT. Uploads are `PUT` and take raw bytes.
//! - **Headers.** Every answer gets `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`
//!   and `Referrer-Policy: same-origin`; console pages add their own Content-Security-Policy
//!   (see [`crate::console`]).

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Error, Result};

/// Which hosts and origins this server answers browsers from (built once from the config).
#[derive(Clone, Debug)]
pub struct BrowserPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `allowed_hosts` contains `*`: the `Host` check is off.
    any_host: bool,
    /// Lower-case host names (no port) allowed besides `localhost` and IP literals.
    hosts: Vec<String>,
    /// `public_url`'s origin, `scheme://host[:port]`, lower case.
    public_origin: Option<String>,
    /// `public_url`'s host, lower case.
    public_host: Option<String>,
    /// `public_url` is `https`.
    public_https: bool,
}

impl BrowserPolicy {
    /// Builds the policy from `public_url` (an `http` or `https` URL) and `allowed_hosts`.
    pub fn new(public_url: Option<&str>, allowed_hosts: &[String]) -> Result<Self> {
        let mut hosts: Vec<String> = Vec::new();
        let mut any_host = false;
        for entry in allowed_hosts {
            let entry = entry.trim();
            if entry == "*" {
                any_host = true;
            } else if !entry.is_empty() {
                hosts.push(normalise_host(host_name(entry)));
            }
        }
        let (mut public_origin, mut public_host, mut public_https) = (None, None, false);
        if let Some(text) = public_url.map(str::trim).filter(|t| !t.is_empty()) {
            let url = reqwest::Url::parse(text)
                .map_err(|e| Error::invalid("public_url", format!("'{text}' is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::invalid("public_url", format!("'{text}' is not an http or https URL")));
            }
            let Some(host) = url.host_str() else {
                return Err(Error::invalid("public_url", format!("'{text}' names no host")));
            };
            public_origin = Some(url.origin().ascii_serialization().to_ascii_lowercase());
            let host = normalise_host(host.trim_start_matches('[').trim_end_matches(']'));
            hosts.push(host.clone());
            public_host = Some(host);
            public_https = url.scheme() == "https";
        }
        Ok(Self { inner: Arc::new(Inner { any_host, hosts, public_origin, public_host, public_https }) })
    }

    /// Builds the policy from the server's configuration.
    pub fn from_config(config: &crate::config::Config) -> Result<Self> {
        Self::new(config.public_url.as_deref(), &config.allowed_hosts)
    }

    /// Whether a `Host` header value (`name[:port]`) names this server.
    pub fn host_allowed(&self, host: &str) -> bool {
        if self.inner.any_host {
            return true;
        }
        let name = normalise_host(host_name(host));
        name == "localhost" || name.parse::<IpAddr>().is_ok() || self.inner.hosts.contains(&name)
    }

    /// Whether an `Origin` header value is this server's own: the request's scheme and `Host`, or
    /// `public_url`'s origin.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if self.inner.public_origin.as_deref() == Some(origin.as_str()) {
            return true;
        }
        let Some(authority) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else {
            return false;
        };
        host.is_some_and(|host| host.trim().eq_ignore_ascii_case(authority) && self.host_allowed(host))
    }

    /// Whether the console's cookies should be `Secure`: the request came over TLS, either
    /// directly or through the proxy `public_url` names (it is `https`, and the proxy says
    /// `X-Forwarded-Proto: https` or forwards the public host).
    pub fn secure_cookies(&self, headers: &HeaderMap, scheme: Option<&str>) -> bool {
        if scheme == Some("https") {
            return true;
        }
        if !self.inner.public_https {
            return false;
        }
        let forwarded_https = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")));
        let public_host = request_host(headers).map(|h| normalise_host(host_name(h)));
        forwarded_https || (public_host.is_some() && public_host == self.inner.public_host)
    }
}

/// The middleware that applies the rules in the module docs.
pub async fn guard(State(policy): State<BrowserPolicy>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let api = path == "/v1" || path.starts_with("/v1/");
    let probe = matches!(path, "/healthz" | "/readyz");
    let host = request_host(request.headers()).or_else(|| request.uri().authority().map(|a| a.as_str()));

    if let Some(host) = host.filter(|h| !probe && !policy.host_allowed(h)) {
        tracing::warn!(host, path, "refused a request for a host name this server does not answer to");
        let message = format!(
            "Anneal does not answer to the host name '{host}'. Add it to allowed_hosts (or set public_url) in \
             the server's configuration to allow it."
        );
        return with_headers(if api {
            Error::PermissionDenied(message).into_response()
        } else {
            (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message).into_response()
        });
    }

    if !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        if let Some(reason) = cross_site(&policy, request.headers(), host) {
            tracing::warn!(path, method = %request.method(), reason, "refused a cross-site request");
            return with_headers(
                Error::PermissionDenied(format!("Cross-site requests may not change anything here ({reason})."))
                    .into_response(),
            );
        }
        if api && matches!(*request.method(), Method::POST | Method::PATCH) {
            if let Err(error) = json_body(request.headers()) {
                return with_headers(error.into_response());
            }
        }
    }
    with_headers(next.run(request).await)
}

/// Why a state-changing request is cross-site, if it is.
fn cross_site(policy: &BrowserPolicy, headers: &HeaderMap, host: Option<&str>) -> Option<&'static str> {
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("null"));
    let origin_ok = origin.map(|o| policy.origin_allowed(o, host));
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some(site) if site.eq_ignore_ascii_case("cross-site") => return Some("Sec-Fetch-Site is cross-site"),
        Some(site) if site.eq_ignore_ascii_case("same-site") && origin_ok != Some(true) => {
            return Some("Sec-Fetch-Site is same-site, from another origin")
        }
        _ => {}
    }
    (origin_ok == Some(false)).then_some("its Origin is not this server")
}

/// Checks that a REST request body is JSON: a JSON `Content-Type`, or no body at all.
fn json_body(headers: &HeaderMap) -> Result<()> {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => {
            let essence = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            let json =
                essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"));
            if json {
                Ok(())
            } else {
                Err(Error::invalid(
                    "Content-Type",
                    format!("Send the body as JSON with Content-Type: application/json, not '{essence}'."),
                ))
            }
        }
        None => {
            let empty = headers
                .get(header::CONTENT_LENGTH)
                .map_or(!headers.contains_key(header::TRANSFER_ENCODING), |v| v.as_bytes() == b"0");
            if empty {
                Ok(())
            } else {
                Err(Error::invalid("Content-Type", "Send the body as JSON with Content-Type: application/json."))
            }
        }
    }
}

/// Adds the headers every answer carries (without replacing ones a handler chose).
fn with_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    response
}

/// The request's `Host` header, if it has a readable one.
fn request_host(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

/// The name part of `name[:port]` or `[v6]:port`.
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Lower case, without a trailing dot (`Example.COM.` is `example.com`).
fn normalise_host(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(public_url: Option<&str>, hosts: &[&str]) -> BrowserPolicy {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        BrowserPolicy::new(public_url, &hosts).expect("policy")
    }

    #[test]
    fn loopback_names_and_address_literals_are_allowed_and_other_names_are_not() {
        let p = policy(None, &[]);
        for host in ["localhost", "localhost:8080", "LOCALHOST.", "127.0.0.1:9", "[::1]:8080", "[::1]", "10.1.2.3"] {
            assert!(p.host_allowed(host), "{host}");
        }
        for host in ["evil.example", "evil.example:8080", "127.0.0.1.nip.io", "localhost.evil.example", ""] {
            assert!(!p.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn public_url_and_allowed_hosts_add_names() {
        let p = policy(Some("https://Anneal.Example.com/console"), &["ml.internal:8080", " box "]);
        assert!(p.host_allowed("anneal.example.com"));
        assert!(p.host_allowed("ml.internal:9000"));
        assert!(p.host_allowed("box"));
        assert!(!p.host_allowed("example.com"));
        assert!(policy(None, &["*"]).host_allowed("anything.example"));
        assert!(BrowserPolicy::new(Some("ftp://x"), &[]).is_err());
        assert!(BrowserPolicy::new(Some("not a url"), &[]).is_err());
    }

    #[test]
    fn only_this_servers_origins_are_its_own() {
        let p = policy(Some("https://anneal.example.com"), &[]);
        assert!(p.origin_allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(p.origin_allowed("https://anneal.example.com", Some("127.0.0.1:8080")));
        assert!(!p.origin_allowed("http://127.0.0.1:9999", Some("127.0.0.1:8080")));
        assert!(!p.origin_allowed("http://evil.example", Some("127.0.0.1:8080")));
        assert!(!p.origin_allowed("null", Some("127.0.0.1:8080")));
        assert!(!p.origin_allowed("http://evil.example", Some("evil.example")), "the host must be allowed too");
    }

    #[test]
    fn browsers_cross_site_requests_are_recognised() {
        let p = policy(None, &[]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(*k, HeaderValue::from_static(v));
            }
            map
        };
        let host = Some("127.0.0.1:8080");
        assert!(cross_site(&p, &headers(&[]), host).is_none(), "no browser headers: not a browser");
        assert!(cross_site(&p, &headers(&[("sec-fetch-site", "cross-site")]), host).is_some());
        assert!(cross_site(&p, &headers(&[("sec-fetch-site", "same-site")]), host).is_some());
        assert!(cross_site(&p, &headers(&[("origin", "http://evil.example")]), host).is_some());
        let own = headers(&[("sec-fetch-site", "same-origin"), ("origin", "http://127.0.0.1:8080")]);
        assert!(cross_site(&p, &own, host).is_none());
    }

    #[test]
    fn rest_bodies_must_be_json() {
        let with = |pairs: &[(header::HeaderName, &'static str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.insert(k.clone(), HeaderValue::from_static(v));
            }
            json_body(&map)
        };
        assert!(with(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]).is_ok());
        assert!(with(&[(header::CONTENT_TYPE, "application/merge-patch+json")]).is_ok());
        assert!(with(&[(header::CONTENT_LENGTH, "0")]).is_ok());
        assert!(with(&[]).is_ok());
        assert!(with(&[(header::CONTENT_TYPE, "text/plain")]).is_err());
        assert!(with(&[(header::CONTENT_TYPE, "application/x-www-form-urlencoded")]).is_err());
        assert!(with(&[(header::CONTENT_TYPE, "multipart/form-data; boundary=x")]).is_err());
        assert!(with(&[(header::CONTENT_LENGTH, "12")]).is_err());
    }

    #[test]
    fn cookies_are_secure_behind_an_https_public_url() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(!policy(None, &[]).secure_cookies(&headers, None));
        assert!(policy(None, &[]).secure_cookies(&headers, Some("https")));
        let public = policy(Some("https://anneal.example.com"), &[]);
        assert!(!public.secure_cookies(&headers, None));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(public.secure_cookies(&headers, None));
        assert!(!policy(Some("http://anneal.example.com"), &[]).secure_cookies(&headers, None));
    }
}
