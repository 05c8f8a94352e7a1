//! Use cases of identity: checking tokens and console sessions, the admin token made on first
//! start and its one-time login link, token management, the audit log, and the `ml` v1 IAM
//! methods mapped onto Anneal's roles.
//!
//! Checked tokens are cached in memory for [`CACHE_TTL`] so a prediction does not wait on the
//! database; revoking a token on this server drops it from the cache at once. On a shared
//! PostgreSQL database every node also follows the revocations of all nodes
//! ([`Control::follow_revocations`], the store's `LISTEN anneal_auth`) and drops a revoked token
//! within milliseconds; it forgets its whole cache whenever it (re)starts listening, since
//! revocations sent while it was not may be lost. [`CACHE_TTL`] stays the bound when no
//! notification arrives (the listener cut off from the database). Console sessions are not
//! cached: each request reads its session and token from the database.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::Control;
use crate::auth::{self, Identity, Permission, ProjectScope, Role, ADMIN_TOKEN_FILE};
use crate::error::{Error, Result};
use crate::names::ProjectId;
use crate::store::{AuditRecord, AuthEvent, AuthEvents, NewAudit, NewToken, TokenRecord};

/// How long a checked token is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How long following revocations waits before connecting again after a failure.
pub const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// The most checked tokens kept; the cache is emptied when it would grow past this.
const CACHE_MAX: usize = 10_000;
/// How long a console session lasts.
pub const SESSION_TTL: chrono::Duration = chrono::Duration::hours(12);
/// How long the one-time login link printed at start stays usable.
pub const LOGIN_CODE_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest request path the audit log keeps, in bytes.
pub const MAX_AUDIT_PATH: usize = 512;
/// The most tokens a caller may list or the audit log may return in one page.
pub const MAX_PAGE: u32 = 1000;

/// The authentication state of one server.
#[derive(Debug)]
pub struct AuthState {
    enabled: bool,
    /// Checked tokens.
    cache: Mutex<TokenCache>,
    /// The one-time login code: its hash, the token it logs in as, and when it expires.
    login_code: Mutex<Option<(String, String, Instant)>>,
}

impl AuthState {
    /// Authentication on (`enabled`) or off (`--no-auth`).
    pub fn new(enabled: bool) -> Self {
        Self { enabled, cache: Mutex::default(), login_code: Mutex::new(None) }
    }

    /// The cached identity of the token with this hash, while it is fresh.
    fn cached(&self, hash: &str) -> Option<Identity> {
        let cache = self.cache.lock().ok()?;
        let (identity, at) = cache.entries.get(hash)?;
        (at.elapsed() < CACHE_TTL).then(|| identity.clone())
    }

    /// The cache's epoch now: read before a token is looked up in the database.
    fn epoch(&self) -> u64 {
        self.cache.lock().map(|c| c.epoch).unwrap_or(u64::MAX)
    }

    /// Caches a token checked in the database, unless something was forgotten since `epoch`
    /// was read (the token may have been revoked after it was read: its revocation, already
    /// handled, must not be undone).
    fn remember(&self, hash: String, identity: Identity, epoch: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.epoch != epoch {
                return;
            }
            if cache.entries.len() >= CACHE_MAX {
                cache.entries.clear();
            }
            cache.entries.insert(hash, (identity, Instant::now()));
        }
    }

    /// Drops the token with this id from the cache.
    fn forget_token(&self, token_id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.epoch = cache.epoch.wrapping_add(1);
            cache.entries.retain(|_, (identity, _)| identity.token_id != token_id);
        }
    }

    /// Empties the cache.
    fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.epoch = cache.epoch.wrapping_add(1);
            cache.entries.clear();
        }
    }

    /// Follows `events` until `shutdown`: drops each revoked token, and forgets everything each
    /// time listening (re)starts. After a failure it says so once and retries every
    /// [`LISTEN_RETRY`]; meanwhile [`CACHE_TTL`] bounds how long a revoked token still works.
    async fn follow(&self, mut events: AuthEvents, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            let event = tokio::select! {
                () = shutdown.cancelled() => return,
                event = events.next() => event,
            };
            match event {
                Ok(AuthEvent::Listening) => {
                    self.forget_all();
                    if std::mem::take(&mut failing) {
                        tracing::info!("following token revocations of other nodes again");
                    }
                }
                Ok(AuthEvent::Revoked(token_id)) => self.forget_token(&token_id),
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(
                            error = %e,
                            cache_secs = CACHE_TTL.as_secs(),
                            "cannot follow token revocations of other nodes: a token revoked elsewhere keeps working here until its cache entry expires"
                        );
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(LISTEN_RETRY) => {}
                    }
                }
            }
        }
    }
}

/// Checked tokens by the hash of the whole token, with when each was checked, and an epoch that
/// moves whenever something is forgotten.
#[derive(Debug, Default)]
struct TokenCache {
    entries: HashMap<String, (Identity, Instant)>,
    epoch: u64,
}

/// What `create_token` returns: the stored token and, once, its secret.
pub struct CreatedToken {
    pub record: TokenRecord,
    pub token: String,
}

/// A request for a new token.
pub struct TokenRequest {
    pub name: String,
    pub role: Role,
    pub projects: ProjectScope,
}

/// A page of the audit log.
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next_page_token: Option<String>,
}

/// The admin token made on first start: where it was written.
pub struct Bootstrap {
    /// The file with the admin token, when this start created it.
    pub created: Option<PathBuf>,
    /// A one-time login code for the console, when the admin token of that file is valid.
    pub login_code: Option<String>,
}

/// An IAM policy as the `ml` v1 API writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub version: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etag: String,
}

/// Members granted a role.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<String>,
}

impl Control {
    /// Whether callers must authenticate (false only with `--no-auth`).
    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled
    }

    /// The identity a request's credentials name: its bearer token, else its console session's
    /// secret; `None` when it carries neither. The one place that decides which credential
    /// counts, for the API and the console alike.
    pub async fn identify(&self, bearer: Option<&str>, session: Option<&str>) -> Option<Result<Identity>> {
        match (bearer, session) {
            (Some(token), _) => Some(self.authenticate_token(token).await),
            (None, Some(session)) => Some(self.session_identity(session).await),
            (None, None) => None,
        }
    }

    /// On a shared database (PostgreSQL), starts following the revocations of every node in
    /// the background, so a token revoked on another node stops working here at once. Nothing
    /// on SQLite or without authentication.
    pub fn follow_revocations(&self) {
        if !self.auth.enabled {
            return;
        }
        let Some(events) = self.store.auth_events() else { return };
        let auth = self.auth.clone();
        self.tasks.spawn("auth-revocations", move |token| async move { auth.follow(events, token).await });
    }

    /// Checks an API token and returns its identity.
    pub async fn authenticate_token(&self, token: &str) -> Result<Identity> {
        if !self.auth.enabled {
            return Ok(Identity::anonymous_admin());
        }
        let hash = auth::hash_secret(token);
        if let Some(identity) = self.auth.cached(&hash) {
            return Ok(identity);
        }
        let epoch = self.auth.epoch();
        let invalid =
            || Error::Unauthenticated("The request's token is not valid (unknown, malformed or revoked).".into());
        let id = auth::token_id(token).ok_or_else(invalid)?;
        let record = self.store.token(id).await?.ok_or_else(invalid)?;
        if record.revoke_time.is_some() || !auth::hashes_equal(&record.secret_hash, &hash) {
            return Err(invalid());
        }
        let identity = identity_of(&record);
        self.auth.remember(hash, identity.clone(), epoch);
        Ok(identity)
    }

    /// Makes the admin token on first start (written to `admin.token` in the data dir, readable
    /// by the server's user only), and a one-time console login code for it when it is valid.
    pub async fn bootstrap_auth(&self) -> Result<Bootstrap> {
        let file = self.data_dir.join(ADMIN_TOKEN_FILE);
        if !self.auth.enabled {
            return Ok(Bootstrap { created: None, login_code: None });
        }
        let mut created = None;
        if self.store.count_tokens().await? == 0 {
            let secret = auth::new_token()?;
            auth::write_token_file(&file, &secret.token)
                .map_err(|e| Error::internal(format!("cannot write {}: {e}", file.display())))?;
            self.store
                .insert_token(NewToken {
                    id: &secret.id,
                    name: "admin (first start)",
                    secret_hash: &secret.hash,
                    role: Role::Admin,
                    projects: &ProjectScope::All,
                    created_by: None,
                })
                .await?;
            created = Some(file.clone());
        }
        let login_code = match std::fs::read_to_string(&file) {
            Ok(text) => match self.authenticate_token(text.trim()).await {
                Ok(identity) => Some(self.new_login_code(&identity.token_id)?),
                Err(_) => None,
            },
            Err(_) => None,
        };
        Ok(Bootstrap { created, login_code })
    }

    fn new_login_code(&self, token_id: &str) -> Result<String> {
        let code = auth::new_session_secret()?;
        let mut slot = self.auth.login_code.lock().map_err(|_| Error::internal("login code lock poisoned"))?;
        *slot = Some((auth::hash_secret(&code), token_id.to_owned(), Instant::now() + LOGIN_CODE_TTL));
        Ok(code)
    }

    /// Opens a console session for a valid token; returns the session's secret (the cookie).
    pub async fn login_with_token(&self, token: &str) -> Result<String> {
        let identity = self.authenticate_token(token.trim()).await?;
        let session = self.open_session(&identity.token_id).await?;
        self.audit_console(&identity, "LOGIN", "/console/login").await;
        Ok(session)
    }

    /// Records a console login or logout in the audit log (failed attempts are refused before
    /// any identity is known, and are not recorded, so anonymous callers cannot fill the log).
    async fn audit_console(&self, identity: &Identity, method: &str, path: &str) {
        self.record_audit(NewAudit {
            actor: &identity.actor(),
            method,
            path,
            project: None,
            status: 200,
            outcome: "ok",
        })
        .await;
    }

    /// Opens a console session with the one-time code of the login link printed at start. The
    /// code works once.
    pub async fn login_with_code(&self, code: &str) -> Result<String> {
        let taken = {
            let mut slot = self.auth.login_code.lock().map_err(|_| Error::internal("login code lock poisoned"))?;
            match slot.as_ref() {
                Some((hash, _, expires))
                    if auth::hashes_equal(hash, &auth::hash_secret(code)) && Instant::now() < *expires =>
                {
                    slot.take()
                }
                _ => None,
            }
        };
        let (_, token_id, _) =
            taken.ok_or_else(|| Error::Unauthenticated("This login link was used already or is not valid.".into()))?;
        let record = match self.store.token(&token_id).await? {
            Some(record) if record.revoke_time.is_none() => record,
            _ => return Err(Error::Unauthenticated("The token of this login link was revoked.".into())),
        };
        let session = self.open_session(&token_id).await?;
        self.audit_console(&identity_of(&record), "LOGIN", "/login?code=(one-time link)").await;
        Ok(session)
    }

    async fn open_session(&self, token_id: &str) -> Result<String> {
        let secret = auth::new_session_secret()?;
        self.store.insert_session(&auth::hash_secret(&secret), token_id, chrono::Utc::now() + SESSION_TTL).await?;
        Ok(secret)
    }

    /// The identity of a console session.
    pub async fn session_identity(&self, session: &str) -> Result<Identity> {
        if !self.auth.enabled {
            return Ok(Identity::anonymous_admin());
        }
        let expired = || Error::Unauthenticated("Log in: the console session is unknown, expired or revoked.".into());
        let (token_id, expires) = self.store.session(&auth::hash_secret(session)).await?.ok_or_else(expired)?;
        if expires < chrono::Utc::now() {
            return Err(expired());
        }
        match self.store.token(&token_id).await? {
            Some(record) if record.revoke_time.is_none() => Ok(identity_of(&record)),
            _ => Err(expired()),
        }
    }

    /// Ends a console session.
    pub async fn logout(&self, session: &str) -> Result<()> {
        if let Ok(identity) = self.session_identity(session).await {
            self.audit_console(&identity, "LOGOUT", "/console/logout").await;
        }
        self.store.delete_session(&auth::hash_secret(session)).await
    }

    /// Creates a token. Its projects must lie within the caller's.
    pub async fn create_token(&self, caller: &Identity, request: TokenRequest) -> Result<CreatedToken> {
        let name = request.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(Error::invalid("token.name", "A token needs a name of 1 to 200 characters."));
        }
        if let ProjectScope::Only(projects) = &request.projects {
            if projects.is_empty() || projects.len() > 100 {
                return Err(Error::invalid("token.projects", "Name 1 to 100 projects, or [\"*\"] for every project."));
            }
            for project in projects {
                ProjectId::parse("token.projects", project)?;
            }
        }
        if !caller.projects.covers(&request.projects) {
            return Err(Error::PermissionDenied(
                "A token can only be given projects that the caller's own token reaches.".into(),
            ));
        }
        let secret = auth::new_token()?;
        let record = self
            .store
            .insert_token(NewToken {
                id: &secret.id,
                name,
                secret_hash: &secret.hash,
                role: request.role,
                projects: &request.projects,
                created_by: Some(&caller.token_id),
            })
            .await?;
        Ok(CreatedToken { record, token: secret.token })
    }

    /// The tokens the caller manages: those whose projects lie within the caller's.
    pub async fn list_tokens(&self, caller: &Identity) -> Result<Vec<TokenRecord>> {
        let all = self.store.list_tokens().await?;
        Ok(all.into_iter().filter(|t| caller.projects.covers(&t.projects)).collect())
    }

    /// One token the caller manages (or its own).
    pub async fn get_token(&self, caller: &Identity, id: &str) -> Result<TokenRecord> {
        match self.store.token(id).await? {
            Some(record) if record.id == caller.token_id || caller.projects.covers(&record.projects) => Ok(record),
            _ => Err(Error::not_found("name", format!("Token {id} not found."))),
        }
    }

    /// Revokes a token the caller manages; its sessions end and it stops working at once here,
    /// and on the other nodes of a shared database as soon as they hear of it.
    pub async fn revoke_token(&self, caller: &Identity, id: &str) -> Result<TokenRecord> {
        let record = self.get_token(caller, id).await?;
        if !caller.projects.covers(&record.projects) {
            return Err(Error::not_found("name", format!("Token {id} not found.")));
        }
        if !self.store.revoke_token(id).await? {
            return Err(Error::FailedPrecondition(format!("Token {id} is revoked already.")));
        }
        // Other nodes drop it when the store's notification reaches them.
        self.auth.forget_token(id);
        self.get_token(caller, id).await
    }

    /// Appends one entry to the audit log. A failure is logged, not returned: the request it
    /// describes has already happened.
    pub async fn record_audit(&self, mut entry: NewAudit<'_>) {
        // A path is kept up to MAX_AUDIT_PATH bytes, so a long one cannot grow the log much.
        if entry.path.len() > MAX_AUDIT_PATH {
            let mut end = MAX_AUDIT_PATH;
            while !entry.path.is_char_boundary(end) {
                end -= 1;
            }
            let path = entry.path;
            entry.path = &path[..end];
        }
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }

    /// Audit entries newest first, of the projects the caller's token reaches.
    pub async fn list_audit(&self, caller: &Identity, page_size: Option<u32>, page_token: &str) -> Result<AuditPage> {
        let limit = match page_size {
            None | Some(0) => 100,
            Some(n) if n <= MAX_PAGE => n,
            Some(_) => return Err(Error::invalid("pageSize", format!("pageSize is at most {MAX_PAGE}."))),
        };
        let before = if page_token.is_empty() {
            None
        } else {
            Some(page_token.parse::<i64>().map_err(|_| Error::invalid("pageToken", "Not a page token of this list."))?)
        };
        let projects = match &caller.projects {
            ProjectScope::All => None,
            ProjectScope::Only(list) => Some(list.as_slice()),
        };
        let entries = self.store.list_audit(projects, before, limit).await?;
        let next_page_token =
            (entries.len() == limit as usize).then(|| entries.last().map(|e| e.seq.to_string())).flatten();
        Ok(AuditPage { entries, next_page_token })
    }

    /// `getIamPolicy`: the policy stored for the resource, else the bindings its project's
    /// tokens give (members `token:<id>`).
    pub async fn get_iam_policy(&self, resource: &str, project: &str) -> Result<Policy> {
        if let Some((text, etag)) = self.store.iam_policy(resource).await? {
            let mut policy: Policy = serde_json::from_str(&text).map_err(Error::internal)?;
            policy.etag = etag;
            return Ok(policy);
        }
        let tokens = self.store.list_tokens().await?;
        let mut bindings = Vec::new();
        for role in Role::ALL {
            let members: Vec<String> = tokens
                .iter()
                .filter(|t| t.revoke_time.is_none() && t.role == role && t.projects.contains(project))
                .map(|t| format!("token:{}", t.id))
                .collect();
            if !members.is_empty() {
                bindings.push(Binding { role: role.iam_role().to_owned(), members });
            }
        }
        let mut policy = Policy { version: 1, bindings, etag: String::new() };
        policy.etag = etag_of(&policy)?;
        Ok(policy)
    }

    /// `setIamPolicy`: stores the policy (roles must be the four ML Engine roles), checking the
    /// etag when one is sent. Access itself is decided by tokens' roles.
    pub async fn set_iam_policy(&self, resource: &str, project: &str, mut policy: Policy) -> Result<Policy> {
        if policy.bindings.len() > 100 {
            return Err(Error::invalid("policy.bindings", "A policy has at most 100 bindings."));
        }
        for (i, binding) in policy.bindings.iter().enumerate() {
            if Role::from_iam_role(&binding.role).is_none() {
                return Err(Error::invalid(
                    format!("policy.bindings[{i}].role"),
                    format!(
                        "'{}' is not a role of this service: use roles/ml.admin, roles/ml.developer, roles/ml.viewer or roles/ml.modelUser",
                        binding.role
                    ),
                ));
            }
            if binding.members.len() > 1000 {
                return Err(Error::invalid(
                    format!("policy.bindings[{i}].members"),
                    "A binding has at most 1000 members.",
                ));
            }
        }
        let sent_etag = std::mem::take(&mut policy.etag);
        let etag = etag_of(&policy)?;
        let text = serde_json::to_string(&policy).map_err(Error::internal)?;
        let stale =
            || Error::Aborted("The policy was changed since it was read (etag mismatch); read it again.".into());
        // With an etag, the policy read before must still be the current one: the stored policy
        // if there is one (checked again in the same transaction as the write), else the one
        // the project's tokens give.
        let check = if sent_etag.is_empty() {
            None
        } else {
            let stored = self.store.iam_policy(resource).await?.map(|(_, etag)| etag);
            let current = match &stored {
                Some(etag) => etag.clone(),
                None => self.get_iam_policy(resource, project).await?.etag,
            };
            if current != sent_etag {
                return Err(stale());
            }
            Some(stored)
        };
        if !self.store.put_iam_policy(resource, &text, &etag, check).await? {
            return Err(stale());
        }
        policy.etag = etag;
        Ok(policy)
    }
}

/// `testIamPermissions`: the subset of `permissions` the caller holds in `project`.
pub fn held_permissions(caller: &Identity, project: &str, permissions: &[String]) -> Vec<String> {
    permissions.iter().filter(|p| permission_of(p).is_some_and(|needed| caller.can(needed, project))).cloned().collect()
}

/// The Anneal permission an `ml.*` IAM permission corresponds to.
fn permission_of(iam: &str) -> Option<Permission> {
    let (service, rest) = iam.split_once('.')?;
    let (resource, verb) = rest.split_once('.')?;
    if service != "ml" || !matches!(resource, "models" | "versions" | "jobs" | "operations" | "projects") {
        return None;
    }
    Some(match verb {
        "get" | "list" | "getIamPolicy" | "getConfig" => Permission::Read,
        "predict" => Permission::Predict,
        "create" | "update" | "delete" | "cancel" => Permission::Write,
        "setIamPolicy" => Permission::Admin,
        _ => return None,
    })
}

fn etag_of(policy: &Policy) -> Result<String> {
    let text = serde_json::to_string(&policy.bindings).map_err(Error::internal)?;
    let hash = auth::hash_secret(&format!("{}:{text}", policy.version));
    Ok(base64::engine::general_purpose::STANDARD.encode(&hash.as_bytes()[..12]))
}

fn identity_of(record: &TokenRecord) -> Identity {
    Identity {
        token_id: record.id.clone(),
        name: record.name.clone(),
        role: record.role,
        projects: record.projects.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_permissions_map_onto_roles() {
        let viewer =
            Identity { token_id: "t".into(), name: "v".into(), role: Role::Viewer, projects: ProjectScope::All };
        let asked: Vec<String> = [
            "ml.models.get",
            "ml.models.create",
            "ml.models.predict",
            "ml.jobs.list",
            "ml.models.setIamPolicy",
            "x.y.z",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(held_permissions(&viewer, "p", &asked), vec!["ml.models.get", "ml.jobs.list"]);
        let predictor = Identity { role: Role::Predictor, ..viewer.clone() };
        assert_eq!(held_permissions(&predictor, "p", &asked), vec!["ml.models.predict"]);
        let other = Identity { projects: ProjectScope::Only(vec!["q".into()]), ..viewer };
        assert!(held_permissions(&other, "p", &asked).is_empty());
    }

    #[test]
    fn a_token_read_before_its_revocation_is_not_cached_after_it() {
        let state = AuthState::new(true);
        let identity =
            Identity { token_id: "t".into(), name: "d".into(), role: Role::Developer, projects: ProjectScope::All };
        let epoch = state.epoch();
        state.remember("h".into(), identity.clone(), epoch);
        assert_eq!(state.cached("h"), Some(identity.clone()));
        state.forget_token("t");
        assert_eq!(state.cached("h"), None);
        // A lookup that began before the revocation was handled must not cache the token.
        let before = epoch;
        state.remember("h".into(), identity.clone(), before);
        assert_eq!(state.cached("h"), None);
        let epoch = state.epoch();
        state.remember("h".into(), identity.clone(), epoch);
        state.forget_all();
        assert_eq!(state.cached("h"), None);
    }
}
