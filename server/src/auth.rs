//! Who is calling, and what they may do: API tokens, roles, project scopes and the permission
//! each API method needs. Types and functions without state (and the one writer of token files,
//! used by the server for `admin.token` and by the CLI for its kept token); the use cases are in
//! `control/auth.rs`, the SQL in `store/auth.rs`, the HTTP middleware in `api/auth.rs`.
//!
//! A token is `ann_<id>_<secret>`: a public id (16 hex digits, shown in lists and the audit log)
//! and a 256-bit random secret. Only the SHA-256 of the whole token is stored, so the database
//! cannot be used to call the API. Each token has one [`Role`] and a [`ProjectScope`].

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The console's session cookie.
pub const SESSION_COOKIE: &str = "anneal_session";

/// The file in the data directory that holds the admin token created on first start (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including token management, IAM policies and the audit log.
    Admin,
    /// Jobs, models, versions, uploads, predictions, and reading everything in its projects.
    Developer,
    /// Reading only.
    Viewer,
    /// Predictions only.
    Predictor,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Developer, Role::Viewer, Role::Predictor];

    /// The role's name as stored and shown: `admin`, `developer`, `viewer`, `predictor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Viewer => "viewer",
            Role::Predictor => "predictor",
        }
    }

    /// Parses a role name, naming `field` in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text).ok_or_else(|| {
            Error::invalid(field, format!("'{text}' is not a role: use admin, developer, viewer or predictor"))
        })
    }

    /// The Cloud IAM role this role corresponds to (`roles/ml.admin`, ...).
    pub fn iam_role(self) -> &'static str {
        match self {
            Role::Admin => "roles/ml.admin",
            Role::Developer => "roles/ml.developer",
            Role::Viewer => "roles/ml.viewer",
            Role::Predictor => "roles/ml.modelUser",
        }
    }

    /// The role a Cloud IAM role name maps onto.
    pub fn from_iam_role(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.iam_role() == name)
    }

    /// Whether this role grants `permission`.
    pub fn grants(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => matches!(self, Role::Admin | Role::Developer | Role::Viewer),
            Permission::Predict => matches!(self, Role::Admin | Role::Developer | Role::Predictor),
            Permission::Write => matches!(self, Role::Admin | Role::Developer),
            Permission::Admin => self == Role::Admin,
            Permission::Authenticated => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an API method needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Any valid token (who-am-I, testIamPermissions).
    Authenticated,
    /// Reading resources, logs, metrics and operations.
    Read,
    /// Online predictions.
    Predict,
    /// Creating, changing, cancelling and deleting jobs, models, versions and uploads.
    Write,
    /// Tokens, IAM policies, the audit log.
    Admin,
}

/// The projects a token may reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProjectScope {
    /// Every project, present and future.
    All,
    /// Only these project ids.
    Only(Vec<String>),
}

impl ProjectScope {
    /// Whether `project` is in scope.
    pub fn contains(&self, project: &str) -> bool {
        match self {
            ProjectScope::All => true,
            ProjectScope::Only(projects) => projects.iter().any(|p| p == project),
        }
    }

    /// Whether every project of `other` is in this scope.
    pub fn covers(&self, other: &ProjectScope) -> bool {
        match (self, other) {
            (ProjectScope::All, _) => true,
            (ProjectScope::Only(_), ProjectScope::All) => false,
            (ProjectScope::Only(_), ProjectScope::Only(theirs)) => theirs.iter().all(|p| self.contains(p)),
        }
    }

    /// The scope as the API shows it: `["*"]` for every project.
    pub fn to_list(&self) -> Vec<String> {
        match self {
            ProjectScope::All => vec!["*".to_owned()],
            ProjectScope::Only(projects) => projects.clone(),
        }
    }
}

/// The caller of a request, once its token or console session was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The token's public id (`anonymous` when authentication is off).
    pub token_id: String,
    /// The token's name, as its creator gave it.
    pub name: String,
    pub role: Role,
    pub projects: ProjectScope,
}

impl Identity {
    /// The identity of every caller when authentication is off (`--no-auth`, loopback only).
    pub fn anonymous_admin() -> Self {
        Self {
            token_id: "anonymous".into(),
            name: "anonymous (authentication off)".into(),
            role: Role::Admin,
            projects: ProjectScope::All,
        }
    }

    /// Whether the caller may do what `permission` covers in `project`.
    pub fn can(&self, permission: Permission, project: &str) -> bool {
        self.projects.contains(project) && self.role.grants(permission)
    }

    /// How the audit log names this caller: `token:<id> (<name>)`.
    pub fn actor(&self) -> String {
        format!("token:{} ({})", self.token_id, self.name)
    }
}

/// A freshly made secret: the whole token (shown once) and what is stored of it.
pub struct NewSecret {
    /// The token's public id.
    pub id: String,
    /// The whole token, `ann_<id>_<secret>`, to show its owner once.
    pub token: String,
    /// The SHA-256 of the whole token, hex.
    pub hash: String,
}

/// Makes a new random token.
pub fn new_token() -> Result<NewSecret> {
    let id = hex(&random_bytes::<8>()?);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
    let token = format!("ann_{id}_{secret}");
    let hash = hash_secret(&token);
    Ok(NewSecret { id, token, hash })
}

/// Makes a random secret for a console session or a one-time login code (256 bits, URL-safe).
pub fn new_session_secret() -> Result<String> {
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// The public id in a token, if it has the token's shape.
pub fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("ann_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !secret.is_empty()).then_some(id)
}

/// The SHA-256 of a secret, hex. Secrets are 256-bit random values, so a plain hash suffices (no
/// password-hashing function is needed against guessing).
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Compares two hashes in constant time.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Writes `token` (and a newline) to `path`, a file only its owner can read and write (0600),
/// creating its folder if needed. It goes through a temporary file renamed into place, so a
/// reader never sees half a token and an older file's looser mode is not kept.
pub fn write_token_file(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal(format!("the system's random source failed: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_their_names_say() {
        use Permission::*;
        let table = [
            (Role::Admin, [true, true, true, true]),
            (Role::Developer, [true, true, true, false]),
            (Role::Viewer, [true, false, false, false]),
            (Role::Predictor, [false, true, false, false]),
        ];
        for (role, expected) in table {
            let got = [Read, Predict, Write, Admin].map(|p| role.grants(p));
            assert_eq!(got, expected, "{role}");
            assert!(role.grants(Authenticated));
            assert_eq!(Role::from_iam_role(role.iam_role()), Some(role));
            assert_eq!(Role::parse("role", role.as_str()).expect("parses"), role);
        }
        assert!(Role::parse("role", "root").is_err());
    }

    #[test]
    fn tokens_are_random_and_carry_their_id() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a.token, b.token);
        assert_eq!(token_id(&a.token), Some(a.id.as_str()));
        assert_eq!(hash_secret(&a.token), a.hash);
        assert!(hashes_equal(&a.hash, &hash_secret(&a.token)));
        assert!(!hashes_equal(&a.hash, &b.hash));
        assert_eq!(token_id("ann_zz_x"), None);
        assert_eq!(token_id("Bearer x"), None);
    }

    #[test]
    fn bearer_headers_parse_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn scopes_contain_and_cover() {
        let ab = ProjectScope::Only(vec!["a".into(), "b".into()]);
        assert!(ab.contains("a") && !ab.contains("c"));
        assert!(ProjectScope::All.covers(&ab));
        assert!(!ab.covers(&ProjectScope::All));
        assert!(ab.covers(&ProjectScope::Only(vec!["b".into()])));
        assert!(!ab.covers(&ProjectScope::Only(vec!["c".into()])));
        let viewer = Identity { token_id: "t".into(), name: "n".into(), role: Role::Viewer, projects: ab };
        assert!(viewer.can(Permission::Read, "a"));
        assert!(!viewer.can(Permission::Read, "c"));
        assert!(!viewer.can(Permission::Write, "a"));
    }
}
