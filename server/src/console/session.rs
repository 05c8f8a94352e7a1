//! Console sessions: logging in with a token (`POST /console/login`) or the one-time link printed
//! at start (`GET /login?code=…`), logging out (`POST /console/logout`), and [`require_session`],
//! the middleware that lets only a logged-in browser see the console.
//!
//! The session lives in one cookie, [`SESSION_COOKIE`]: `HttpOnly` (scripts cannot read it),
//! `SameSite=Strict` (no other site's page can make the browser send it) and `Secure` when the
//! console is served over TLS. Without a session, pages answer 303 to `/login?next=<path>`, and
//! server functions 401, before anything renders. A request with `Authorization: Bearer <token>`
//! acts as that token instead (no browser sends one by itself). With authentication off, every request acts as
//! [`Identity::anonymous_admin`].

use std::path::{Path, PathBuf};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::auth::{Identity, SESSION_COOKIE};
use crate::control::Control;
use crate::error::Error;
use crate::http::browser::BrowserPolicy;

/// What the session routes and middleware need.
#[derive(Clone)]
pub(super) struct Sessions {
    pub control: Control,
    pub browser: BrowserPolicy,
    /// The console's site root: its files are served to anyone (the bundle is public).
    pub site_root: PathBuf,
}

/// The login form's fields.
#[derive(serde::Deserialize)]
pub(super) struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /console/login`: a valid token sets the session cookie and goes on to `next`; anything
/// else goes back to the login page saying so.
pub(super) async fn login(
    State(sessions): State<Sessions>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(&form.next);
    match sessions.control.login_with_token(&form.token).await {
        Ok(secret) => with_cookie(Redirect::to(next), &session_cookie(&secret, &sessions.browser, &headers)),
        Err(Error::Unauthenticated(_)) => Redirect::to(&login_page(Some("token"), next)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /console/logout`: ends the session (if any), clears the cookie, shows the login page.
pub(super) async fn logout(State(sessions): State<Sessions>, headers: HeaderMap) -> Response {
    if let Some(secret) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = sessions.control.logout(secret).await {
            return e.into_response();
        }
    }
    let cleared = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    with_cookie(Redirect::to("/login"), &cleared)
}

/// Puts the caller's [`Identity`] into the request's extensions, or turns the request away (see
/// the module docs). Also consumes the one-time login link.
pub(super) async fn require_session(State(sessions): State<Sessions>, mut request: Request, next: Next) -> Response {
    // An identity comes from this middleware only.
    request.extensions_mut().remove::<Identity>();
    let control = &sessions.control;
    let path = request.uri().path().to_owned();
    if !control.auth_enabled() {
        // There is nothing to log in to.
        if path == "/login" {
            return Redirect::to("/").into_response();
        }
        request.extensions_mut().insert(Identity::anonymous_admin());
        return next.run(request).await;
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    if path == "/login" && request.method() == Method::GET {
        if let Some(code) = query_value(&query, "code") {
            return match control.login_with_code(&code).await {
                Ok(secret) => {
                    let cookie = session_cookie(&secret, &sessions.browser, request.headers());
                    with_cookie(Redirect::to(safe_next(&query_value(&query, "next").unwrap_or_default())), &cookie)
                }
                Err(Error::Unauthenticated(_)) => Redirect::to(&login_page(Some("code"), "/")).into_response(),
                Err(e) => e.into_response(),
            };
        }
    }

    // A bearer token works too (scripts reading a page): unlike a cookie, no browser sends one
    // by itself, so it needs no cross-site protection.
    let bearer =
        request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(crate::auth::bearer);
    let identity = match control.identify(bearer, cookie(request.headers(), SESSION_COOKIE)).await {
        Some(Ok(identity)) => Some(identity),
        Some(Err(Error::Unauthenticated(_))) | None => None,
        Some(Err(e)) => return e.into_response(),
    };
    if let Some(identity) = identity {
        if path == "/login" && query_value(&query, "failed").is_none() {
            return Redirect::to(safe_next(&query_value(&query, "next").unwrap_or_default())).into_response();
        }
        request.extensions_mut().insert(identity);
        return next.run(request).await;
    }

    if is_public(&path, &sessions.site_root) {
        return next.run(request).await;
    }
    let page_read = matches!(*request.method(), Method::GET | Method::HEAD) && !path.starts_with("/api/");
    if page_read {
        let here = if query.is_empty() { path } else { format!("{path}?{query}") };
        return Redirect::to(&login_page(None, &here)).into_response();
    }
    Error::Unauthenticated("Log in to the console first (the session is missing, expired or revoked).".into())
        .into_response()
}

/// Paths anyone may fetch: the login page and its form, and the console's static files.
fn is_public(path: &str, site_root: &Path) -> bool {
    if matches!(path, "/login" | "/console/login" | "/console/logout") || path.starts_with("/pkg/") {
        return true;
    }
    let relative = path.trim_start_matches('/');
    !relative.is_empty()
        && !relative.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && site_root.join(relative).is_file()
}

/// `/login`, with what failed and where to go after logging in.
fn login_page(failed: Option<&str>, next: &str) -> String {
    let mut url = String::from("/login");
    let mut sep = '?';
    if let Some(failed) = failed {
        url.push_str(&format!("{sep}failed={failed}"));
        sep = '&';
    }
    let next = safe_next(next);
    if next != "/" {
        url.push_str(&format!("{sep}next={}", utf8_percent_encode(next, NON_ALPHANUMERIC)));
    }
    url
}

/// A `next` that stays on this server: a path (not `//host`), else `/`.
fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control)
        && !next.starts_with("/login");
    if local {
        next
    } else {
        "/"
    }
}

/// The session cookie's `Set-Cookie` value.
fn session_cookie(secret: &str, browser: &BrowserPolicy, headers: &HeaderMap) -> String {
    let secure = if browser.secure_cookies(headers, None) { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

fn with_cookie(response: impl IntoResponse, cookie: &str) -> Response {
    let mut response = response.into_response();
    match HeaderValue::from_str(cookie) {
        Ok(value) => {
            response.headers_mut().append(header::SET_COOKIE, value);
            response
        }
        Err(e) => Error::internal(format!("the session cookie is not a header value: {e}")).into_response(),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The decoded value of `key` in a query string.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_server() {
        assert_eq!(safe_next("/projects/p/jobs?x=1"), "/projects/p/jobs?x=1");
        for bad in ["", "https://evil.example", "//evil.example", "/\\evil.example", "/login?next=/", "jobs"] {
            assert_eq!(safe_next(bad), "/", "{bad}");
        }
    }

    #[test]
    fn the_login_page_url_carries_what_failed_and_where_to_go() {
        assert_eq!(login_page(None, "/"), "/login");
        assert_eq!(login_page(Some("token"), "/"), "/login?failed=token");
        assert_eq!(login_page(None, "/projects/p/jobs?a=1"), "/login?next=%2Fprojects%2Fp%2Fjobs%3Fa%3D1");
        assert_eq!(
            query_value("next=%2Fprojects%2Fp%2Fjobs%3Fa%3D1&x=2", "next").as_deref(),
            Some("/projects/p/jobs?a=1")
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; anneal_session=s3cret ; b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("s3cret"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
