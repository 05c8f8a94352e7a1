//! Typed resource names and ids, parsed at the edge (`projects/{project}` and, as later
//! capabilities land, jobs, models, versions and operations), so the rest of the code never
//! compares raw strings.

use std::fmt;

use crate::error::{Error, Result};

/// The id of a project: the `{project}` in `projects/{project}`.
///
/// Projects need no creating: any valid id names a project, which Anneal registers the first time
/// it is used. Valid ids are 1–63 characters of ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    /// Parses a project id, naming `field` in the error.
    pub fn parse(field: &str, id: &str) -> Result<Self> {
        let mut chars = id.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !first_ok || !rest_ok || id.len() > 63 {
            return Err(Error::invalid(
                field,
                format!(
                    "'{id}' is not a valid project id: use 1 to 63 letters, digits, '-', '_' or '.', starting with a letter or digit"
                ),
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The full name of a project: `projects/{project}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProjectName(pub ProjectId);

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}", self.0.as_str())
    }
}

/// Checks a model, version or job id: letters, digits and underscores, starting with a letter,
/// at most 128 characters (the `ml` v1 naming rule).
pub fn parse_resource_id(field: &str, kind: &str, id: &str) -> Result<String> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && id.len() <= 128 {
        Ok(id.to_owned())
    } else if id.is_empty() {
        Err(Error::invalid(field, format!("A {kind} name is required.")))
    } else {
        Err(Error::invalid(
            field,
            format!("'{id}' is not a valid {kind} name: use letters, digits and underscores, start with a letter, at most 128 characters."),
        ))
    }
}

/// `projects/{project}/models/{model}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelName {
    pub project: ProjectId,
    pub model: String,
}

impl ModelName {
    /// Builds a model name from path segments, naming `field` in errors.
    pub fn new(field: &str, project: &str, model: &str) -> Result<Self> {
        Ok(Self { project: ProjectId::parse(field, project)?, model: parse_resource_id(field, "model", model)? })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/models/{}", self.project.as_str(), self.model)
    }
}

/// `projects/{project}/models/{model}/versions/{version}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VersionName {
    pub model: ModelName,
    pub version: String,
}

impl VersionName {
    /// Builds a version name from path segments, naming `field` in errors.
    pub fn new(field: &str, project: &str, model: &str, version: &str) -> Result<Self> {
        Ok(Self {
            model: ModelName::new(field, project, model)?,
            version: parse_resource_id(field, "version", version)?,
        })
    }
}

impl fmt::Display for VersionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/versions/{}", self.model, self.version)
    }
}

/// `projects/{project}/operations/{operation}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OperationName {
    pub project: ProjectId,
    pub id: String,
}

impl OperationName {
    /// Builds an operation name from path segments; operation ids are Anneal's own, so any
    /// non-empty id is looked up (an unknown one is NOT_FOUND).
    pub fn new(field: &str, project: &str, id: &str) -> Result<Self> {
        if id.is_empty() || id.len() > 256 {
            return Err(Error::invalid(field, "An operation id is required (at most 256 characters)."));
        }
        Ok(Self { project: ProjectId::parse(field, project)?, id: id.to_owned() })
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/operations/{}", self.project.as_str(), self.id)
    }
}

/// `projects/{project}/jobs/{job}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JobName {
    pub project: ProjectId,
    pub job: String,
}

impl JobName {
    /// Builds a job name from path segments, naming `field` in errors.
    pub fn new(field: &str, project: &str, job: &str) -> Result<Self> {
        Ok(Self { project: ProjectId::parse(field, project)?, job: parse_resource_id(field, "job", job)? })
    }
}

impl fmt::Display for JobName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "projects/{}/jobs/{}", self.project.as_str(), self.job)
    }
}

/// A node's name among the nodes that share one database: 1 to 63 characters of `a-z`, `0-9`,
/// `-`, `_` and `.`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// Parses a configured node name, naming `field` in errors.
    pub fn parse(field: &str, text: &str) -> Result<Self> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(Error::invalid(
                field,
                format!("'{text}' is not a node name: 1 to 63 of a-z, 0-9, '-', '_' and '.', starting with a letter or digit."),
            ))
        }
    }

    /// A new random name, `node-` and 8 hex digits.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 4];
        // A name only has to differ from the other nodes'; the clock will do if the OS cannot.
        if getrandom::fill(&mut bytes).is_err() {
            bytes =
                (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos())
                    .to_le_bytes();
        }
        Self(format!("node-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked_and_generated_ones_pass() {
        assert!(NodeId::parse("node_id", "node-a.1").is_ok());
        for bad in ["", "-a", "Upper", "has space", &"x".repeat(64)] {
            assert!(NodeId::parse("node_id", bad).is_err(), "{bad}");
        }
        let made = NodeId::generate();
        assert!(NodeId::parse("node_id", made.as_str()).is_ok(), "{made}");
        assert_ne!(made, NodeId::generate());
    }

    #[test]
    fn accepts_typical_project_ids() {
        for id in ["demo", "default", "my-project-123", "a", "Team_A.v2"] {
            assert_eq!(ProjectId::parse("name", id).expect(id).as_str(), id);
        }
    }

    #[test]
    fn rejects_bad_project_ids_naming_the_field() {
        for id in ["", "-lead", "has space", "slash/inside", "colon:verb", &"x".repeat(64)] {
            match ProjectId::parse("name", id) {
                Err(Error::InvalidArgument(v)) => {
                    assert_eq!(v.field, "name");
                    assert!(v.description.contains("not a valid project id"), "{}", v.description);
                }
                other => panic!("{id:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn resource_ids_follow_the_ml_naming_rule() {
        for ok in ["m", "mnist_v2", "A1", &"x".repeat(128)] {
            assert_eq!(parse_resource_id("model.name", "model", ok).expect(ok), ok);
        }
        for bad in ["", "1model", "_m", "has-dash", "sp ace", &"x".repeat(129)] {
            let err = parse_resource_id("model.name", "model", bad).expect_err(bad);
            assert!(matches!(&err, Error::InvalidArgument(v) if v.field == "model.name"), "{err}");
        }
        let name = VersionName::new("name", "p", "m", "v1").expect("valid");
        assert_eq!(name.to_string(), "projects/p/models/m/versions/v1");
    }

    #[test]
    fn project_name_renders_full_resource_name() {
        let name = ProjectName(ProjectId::parse("name", "demo").expect("valid"));
        assert_eq!(name.to_string(), "projects/demo");
    }
}
