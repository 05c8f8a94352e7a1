//! Authentication and authorisation of `/v1`, and Anneal's identity resources.
//!
//! - [`authenticate`] (on the public `/v1` nest) turns `Authorization: Bearer <token>` (or the
//!   console's session cookie) into an [`Identity`] in the request's extensions. The console's
//!   in-process calls put the logged-in identity there themselves.
//! - [`authorize`] (a route layer of the whole API router, so it also guards the console's calls)
//!   looks up the permission the matched route needs in [`required_permission`] — one table for
//!   every route — and answers 401, 404 (a project outside the token's scope, so names it may not
//!   know stay unknown) or 403 (a role that lacks the permission). It records every mutation in
//!   the audit log with its outcome.
//! - Routes: `tokens` (create, list, get, revoke; `tokens/self`), `auditLog`, and the `ml` v1 IAM
//!   verbs on models and jobs.

use axum::extract::{MatchedPath, OriginalUri, Path, RawPathParams, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::{Deserialize, Serialize};

use super::extract::{Body, Query};
use super::resources::time;
use super::Json;
use crate::auth::{self, Identity, Permission, ProjectScope, Role};
use crate::control::auth::{held_permissions, Policy, TokenRequest};
use crate::control::Control;
use crate::error::Error;
use crate::names::{JobName, ModelName};
use crate::store::{AuditRecord, NewAudit, TokenRecord};

pub fn router() -> Router<Control> {
    Router::new()
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{token}", get(get_token).delete(revoke_token))
        .route("/auditLog", get(audit_log))
        .route("/projects/{project}/models/{model}/@getIamPolicy", get(get_policy::<false>))
        .route("/projects/{project}/models/{model}/@setIamPolicy", post(set_policy::<false>))
        .route("/projects/{project}/models/{model}/@testIamPermissions", post(test_permissions::<false>))
        .route("/projects/{project}/jobs/{job}/@getIamPolicy", get(get_policy::<true>))
        .route("/projects/{project}/jobs/{job}/@setIamPolicy", post(set_policy::<true>))
        .route("/projects/{project}/jobs/{job}/@testIamPermissions", post(test_permissions::<true>))
}

/// The permission each route of the API router needs, by method and route pattern (as routed,
/// custom verbs as `/@verb`). `None`: the route is public. A route missing here needs `Admin`,
/// so a new route is closed until it is listed.
pub fn required_permission(method: &Method, route: &str) -> Option<Permission> {
    use Permission::*;
    let route = route.strip_prefix("/v1").unwrap_or(route);
    let verb = route.rsplit_once("/@").map(|(_, verb)| verb);
    Some(match (method.as_str(), route, verb) {
        ("GET", "/openapi.json", _) => return None,
        (_, _, Some("predict")) => Predict,
        (_, _, Some("testIamPermissions")) => Authenticated,
        (_, _, Some("setIamPolicy")) => Admin,
        ("GET", "/tokens/{token}", _) => Authenticated,
        ("GET", "/tokens", _) | ("POST", "/tokens", _) | ("DELETE", "/tokens/{token}", _) => Admin,
        ("GET", "/auditLog", _) => Admin,
        ("GET", r, _) if r.starts_with("/projects/") => Read,
        ("POST" | "PATCH" | "DELETE" | "PUT", r, _) if r.starts_with("/projects/") => Write,
        _ => Admin,
    })
}

/// Whether a request changes something (and so goes into the audit log).
fn is_mutation(method: &Method, route: &str) -> bool {
    let reads = route.ends_with("/@predict") || route.ends_with("/@testIamPermissions");
    matches!(*method, Method::POST | Method::PATCH | Method::DELETE | Method::PUT) && !reads
}

/// `Authorization: Bearer <token>`, else the console's session cookie (a logged-in page's own
/// calls, such as its package upload) → [`Identity`]. Without either the request goes on
/// unauthenticated ([`authorize`] decides whether the route needs an identity); with a bad one
/// it ends here with 401. With authentication off every caller is the anonymous admin.
pub async fn authenticate(State(control): State<Control>, mut request: Request, next: Next) -> Response {
    // An identity can only come from this middleware or from the console, in process.
    request.extensions_mut().remove::<Identity>();
    if !control.auth_enabled() {
        request.extensions_mut().insert(Identity::anonymous_admin());
        return next.run(request).await;
    }
    let header = request.headers().get(header::AUTHORIZATION);
    let bearer = header.and_then(|value| value.to_str().ok()).and_then(auth::bearer);
    if header.is_some() && bearer.is_none() {
        let refusal = Error::Unauthenticated("The Authorization header must be 'Bearer <token>'.".into());
        return refuse(request, refusal).await;
    }
    // Without a bearer token, a logged-in console page calling `/v1` itself (the package upload)
    // sends its session cookie. The cookie is SameSite=Strict and `http/browser.rs` refuses
    // cross-site state changes, so no other site can make use of it.
    match control.identify(bearer, crate::console::session_secret(request.headers())).await {
        Some(Ok(identity)) => {
            request.extensions_mut().insert(identity);
        }
        Some(Err(e)) => return refuse(request, e).await,
        None => {}
    }
    next.run(request).await
}

/// `/metrics`, after [`authenticate`]: its series name every project's versions, so with
/// authentication on it answers only a token that reads every project (a role with read
/// permission bound to `["*"]`), unless `metrics_public` opens it.
pub async fn metrics_reader(State(control): State<Control>, request: Request, next: Next) -> Response {
    if control.metrics_public() {
        return next.run(request).await;
    }
    let refusal = match request.extensions().get::<Identity>() {
        None => Error::Unauthenticated(
            "/metrics needs a token that reads every project (or metrics_public = true): send 'Authorization: Bearer <token>'."
                .into(),
        ),
        Some(identity) if identity.projects == ProjectScope::All && identity.role.grants(Permission::Read) => {
            return next.run(request).await;
        }
        Some(identity) => Error::PermissionDenied(format!(
            "/metrics names every project's versions: it needs a token with read permission on all projects ([\"*\"]); this one ({}) has {}.",
            identity.role,
            match &identity.projects {
                ProjectScope::All => "every project".to_owned(),
                ProjectScope::Only(projects) => format!("only {}", projects.join(", ")),
            }
        )),
    };
    refuse(request, refusal).await
}

/// Checks the caller against the matched route's permission and project, then records
/// mutations in the audit log.
pub async fn authorize(
    State(control): State<Control>,
    matched: MatchedPath,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = matched.as_str().strip_prefix("/v1").unwrap_or(matched.as_str()).to_owned();
    let Some(needed) = required_permission(&method, &route) else {
        return next.run(request).await;
    };
    // The path as the client sent it (`/v1/...:verb`), not as routed inside the nest.
    let sent = request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().clone(), |o| o.0.clone());
    let shown_path = sent.path().replace("/@", ":");
    let Some(identity) = request.extensions().get::<Identity>().cloned() else {
        let refusal = Error::Unauthenticated(
            "This method needs a token: send 'Authorization: Bearer <token>' (see README, Security).".into(),
        );
        return refuse(request, refusal).await;
    };
    let project = params.iter().find(|(key, _)| *key == "project").map(|(_, value)| value.to_owned());
    let mutation = is_mutation(&method, &route);
    let audit = |status: u16, outcome: &'static str| {
        let control = control.clone();
        let identity = identity.clone();
        let method = method.to_string();
        let path = shown_path.clone();
        let project = project.clone();
        async move {
            control
                .record_audit(NewAudit {
                    actor: &identity.actor(),
                    method: &method,
                    path: &path,
                    project: project.as_deref(),
                    status,
                    outcome,
                })
                .await;
        }
    };
    if let Some(project) = &project {
        if !identity.projects.contains(project) {
            if mutation {
                audit(404, "denied: project outside the token's scope").await;
            }
            let refusal = Error::not_found("name", format!("{} was not found.", shown_path.trim_start_matches("/v1/")));
            return refuse(request, refusal).await;
        }
    }
    if !identity.role.grants(needed) {
        if mutation {
            audit(403, "denied: role").await;
        }
        let refusal = Error::PermissionDenied(format!(
            "The token's role ({}) does not allow {method} {shown_path}; it needs {}.",
            identity.role,
            describe(needed)
        ));
        return refuse(request, refusal).await;
    }
    let response = next.run(request).await;
    if mutation {
        let status = response.status();
        audit(status.as_u16(), if status.is_success() { "ok" } else { "failed" }).await;
    }
    response
}

/// The most of a refused request's body read before answering.
const DRAINED_BODY: usize = 64 * 1024;

/// Answers a refused request, first reading what it sent (up to [`DRAINED_BODY`]): a body left
/// unread makes the server close the connection, and a client that keeps connections alive (the
/// official Python client does) then fails its next call with a broken pipe.
async fn refuse(request: Request, error: Error) -> Response {
    let _ = axum::body::to_bytes(request.into_body(), DRAINED_BODY).await;
    error.into_response()
}

fn describe(permission: Permission) -> &'static str {
    match permission {
        Permission::Authenticated => "any valid token",
        Permission::Read => "the viewer, developer or admin role",
        Permission::Predict => "the predictor, developer or admin role",
        Permission::Write => "the developer or admin role",
        Permission::Admin => "the admin role",
    }
}

/// A token as the API shows it (never its secret, except once in [`CreatedToken`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Token {
    id: String,
    name: String,
    role: Role,
    /// Project ids, or `["*"]` for every project.
    projects: Vec<String>,
    create_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revoke_time: Option<String>,
}

impl From<TokenRecord> for Token {
    fn from(record: TokenRecord) -> Self {
        Self {
            id: record.id,
            name: record.name,
            role: record.role,
            projects: record.projects.to_list(),
            create_time: time(&record.create_time),
            created_by: record.created_by,
            revoke_time: record.revoke_time.as_ref().map(time),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedToken {
    /// The whole token: shown this once, stored only as a hash.
    token: String,
    #[serde(flatten)]
    info: Token,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenBody {
    #[serde(default)]
    name: String,
    role: String,
    /// Project ids, or `["*"]` (the default) for every project.
    #[serde(default)]
    projects: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenList {
    tokens: Vec<Token>,
}

async fn create_token(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Body(body): Body<TokenBody>,
) -> crate::Result<Json<CreatedToken>> {
    let role = Role::parse("token.role", &body.role)?;
    let projects = if body.projects.is_empty() || body.projects.iter().any(|p| p == "*") {
        ProjectScope::All
    } else {
        ProjectScope::Only(body.projects)
    };
    let created = control.create_token(&caller, TokenRequest { name: body.name, role, projects }).await?;
    Ok(Json(CreatedToken { token: created.token, info: created.record.into() }))
}

async fn list_tokens(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
) -> crate::Result<Json<TokenList>> {
    let tokens = control.list_tokens(&caller).await?;
    Ok(Json(TokenList { tokens: tokens.into_iter().map(Token::from).collect() }))
}

/// `GET /v1/tokens/{id}`: any token may read itself (`tokens/self`); others need the admin role.
async fn get_token(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Path(id): Path<String>,
) -> crate::Result<Json<Token>> {
    if id == "self" || id == caller.token_id {
        if caller.token_id == "anonymous" {
            return Ok(Json(Token {
                id: caller.token_id.clone(),
                name: caller.name.clone(),
                role: caller.role,
                projects: caller.projects.to_list(),
                create_time: String::new(),
                created_by: None,
                revoke_time: None,
            }));
        }
        return Ok(Json(control.get_token(&caller, &caller.token_id).await?.into()));
    }
    if !caller.role.grants(Permission::Admin) {
        return Err(Error::PermissionDenied(format!(
            "The token's role ({}) can read only itself (tokens/self).",
            caller.role
        )));
    }
    Ok(Json(control.get_token(&caller, &id).await?.into()))
}

async fn revoke_token(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Path(id): Path<String>,
) -> crate::Result<Json<Token>> {
    Ok(Json(control.revoke_token(&caller, &id).await?.into()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditQuery {
    page_size: Option<u32>,
    #[serde(default)]
    page_token: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditEntry {
    time: String,
    actor: String,
    method: String,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<String>,
    status: u16,
    outcome: String,
}

impl From<AuditRecord> for AuditEntry {
    fn from(record: AuditRecord) -> Self {
        Self {
            time: time(&record.time),
            actor: record.actor,
            method: record.method,
            path: record.path,
            project: record.project,
            status: record.status,
            outcome: record.outcome,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuditList {
    entries: Vec<AuditEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn audit_log(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Query(query): Query<AuditQuery>,
) -> crate::Result<Json<AuditList>> {
    let page = control.list_audit(&caller, query.page_size, &query.page_token).await?;
    Ok(Json(AuditList {
        entries: page.entries.into_iter().map(AuditEntry::from).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SetPolicyBody {
    policy: Policy,
    #[serde(default)]
    #[allow(dead_code)]
    update_mask: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TestPermissionsBody {
    #[serde(default)]
    permissions: Vec<String>,
}

#[derive(Serialize)]
struct HeldPermissions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    permissions: Vec<String>,
}

/// The most permissions one `testIamPermissions` call may ask about.
const MAX_TESTED_PERMISSIONS: usize = 100;

fn held(caller: &Identity, project: &str, body: TestPermissionsBody) -> crate::Result<Json<HeldPermissions>> {
    if body.permissions.len() > MAX_TESTED_PERMISSIONS {
        return Err(Error::invalid(
            "permissions",
            format!("Ask about at most {MAX_TESTED_PERMISSIONS} permissions at once."),
        ));
    }
    Ok(Json(HeldPermissions { permissions: held_permissions(caller, project, &body.permissions) }))
}

/// Checks that the model (`JOB` false) or job (`JOB` true) an IAM verb names exists; returns its
/// resource name.
async fn iam_resource<const JOB: bool>(control: &Control, project: &str, id: &str) -> crate::Result<String> {
    if JOB {
        control.get_job(&JobName::new("resource", project, id)?).await?;
        Ok(format!("projects/{project}/jobs/{id}"))
    } else {
        control.get_model(&ModelName::new("resource", project, id)?).await?;
        Ok(format!("projects/{project}/models/{id}"))
    }
}

async fn get_policy<const JOB: bool>(
    State(control): State<Control>,
    Path((project, id)): Path<(String, String)>,
) -> crate::Result<Json<Policy>> {
    let resource = iam_resource::<JOB>(&control, &project, &id).await?;
    Ok(Json(control.get_iam_policy(&resource, &project).await?))
}

async fn set_policy<const JOB: bool>(
    State(control): State<Control>,
    Path((project, id)): Path<(String, String)>,
    Body(body): Body<SetPolicyBody>,
) -> crate::Result<Json<Policy>> {
    let resource = iam_resource::<JOB>(&control, &project, &id).await?;
    Ok(Json(control.set_iam_policy(&resource, &project, body.policy).await?))
}

async fn test_permissions<const JOB: bool>(
    State(control): State<Control>,
    Extension(caller): Extension<Identity>,
    Path((project, id)): Path<(String, String)>,
    Body(body): Body<TestPermissionsBody>,
) -> crate::Result<Json<HeldPermissions>> {
    iam_resource::<JOB>(&control, &project, &id).await?;
    held(&caller, &project, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_pattern_has_the_permission_its_kind_needs() {
        let p = |m: &str, r: &str| required_permission(&Method::from_bytes(m.as_bytes()).expect("method"), r);
        assert_eq!(p("GET", "/v1/openapi.json"), None);
        assert_eq!(p("GET", "/v1/projects/{project}/models"), Some(Permission::Read));
        assert_eq!(p("POST", "/projects/{project}/models/{model}/@predict"), Some(Permission::Predict));
        assert_eq!(p("POST", "/projects/{project}/jobs"), Some(Permission::Write));
        assert_eq!(p("PUT", "/projects/{project}/uploads/{upload}/{*path}"), Some(Permission::Write));
        assert_eq!(p("POST", "/projects/{project}/jobs/{job}/@setIamPolicy"), Some(Permission::Admin));
        assert_eq!(p("GET", "/projects/{project}/jobs/{job}/@getIamPolicy"), Some(Permission::Read));
        assert_eq!(p("GET", "/tokens"), Some(Permission::Admin));
        assert_eq!(p("GET", "/tokens/{token}"), Some(Permission::Authenticated));
        assert_eq!(p("GET", "/somethingNew"), Some(Permission::Admin), "unlisted routes are closed");
        assert!(!is_mutation(&Method::POST, "/projects/{project}/models/{model}/@predict"));
        assert!(is_mutation(&Method::DELETE, "/projects/{project}/models/{model}"));
    }
}
