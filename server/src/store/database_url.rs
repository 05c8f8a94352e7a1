//! The `database_url` setting, parsed once at start: which backend the store opens, and where.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the metadata store lives: `sqlite://PATH` (the embedded default, one node) or
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=…` (several nodes on one database).
///
/// It shows (`Display`, `Debug`) with the password replaced by `***`; only [`String::from`]
/// gives the URL back whole, for the connection itself.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DatabaseUrl {
    /// A SQLite database file, created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`), checked by sqlx's parser.
    Postgres(String),
}

/// Why a `database_url` was refused.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error("database_url must start with sqlite:// or postgres:// (got '{0}')")]
    Scheme(String),
    #[error("database_url sqlite:// names no file")]
    NoFile,
    #[error("database_url {url} is not a valid PostgreSQL URL: {reason}")]
    Postgres { url: String, reason: String },
}

impl DatabaseUrl {
    /// The SQLite database file, when the store is SQLite.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Some(path) = text.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DatabaseUrlError::NoFile);
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return match sqlx::postgres::PgConnectOptions::from_str(text) {
                Ok(_) => Ok(Self::Postgres(text.to_owned())),
                Err(e) => Err(DatabaseUrlError::Postgres { url: redact(text), reason: e.to_string() }),
            };
        }
        Err(DatabaseUrlError::Scheme(redact(text)))
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = DatabaseUrlError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<DatabaseUrl> for String {
    fn from(url: DatabaseUrl) -> Self {
        match url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(text) => text,
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(text) => f.write_str(&redact(text)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

/// The URL with the password of its user part (`user:password@`) and a `password=` query
/// parameter replaced by `***`, for messages and logs.
fn redact(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| if p.starts_with("password=") { "password=***".to_owned() } else { p.to_owned() })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
        None => tail.to_owned(),
    };
    if scheme.is_empty() {
        format!("{authority}{tail}")
    } else {
        format!("{scheme}://{authority}{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_and_postgres_urls_parse_and_others_are_refused() {
        let url: DatabaseUrl = "sqlite:///var/lib/anneal/anneal.db".parse().expect("sqlite");
        assert_eq!(url.sqlite_path(), Some(std::path::Path::new("/var/lib/anneal/anneal.db")));
        assert_eq!(url.to_string(), "sqlite:///var/lib/anneal/anneal.db");
        let url: DatabaseUrl = "postgres://anneal@db.internal:5432/anneal?sslmode=require".parse().expect("pg");
        assert_eq!(url.sqlite_path(), None);
        assert!("postgresql://db/anneal".parse::<DatabaseUrl>().is_ok());
        assert!(matches!("mysql://db/anneal".parse::<DatabaseUrl>(), Err(DatabaseUrlError::Scheme(_))));
        assert!(matches!("sqlite://".parse::<DatabaseUrl>(), Err(DatabaseUrlError::NoFile)));
        assert!(matches!(
            "postgres://db/anneal?sslmode=sometimes".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError::Postgres { .. })
        ));
    }

    #[test]
    fn passwords_never_show_but_the_connection_gets_them() {
        let text = "postgres://anneal:s3cret@db:5432/anneal?sslmode=require&password=other";
        let url: DatabaseUrl = text.parse().expect("pg");
        assert_eq!(url.to_string(), "postgres://anneal:***@db:5432/anneal?sslmode=require&password=***");
        assert!(!format!("{url:?}").contains("s3cret"));
        assert_eq!(String::from(url), text);
        let err = "mysql://root:hunter2@db/x".parse::<DatabaseUrl>().expect_err("scheme");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
