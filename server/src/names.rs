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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_typical_project_ids() {
        for id in ["demo", "default", "my-project-123", "a", "Team_A.v2"] {
            assert_eq!(ProjectId::parse("name", id).expect(id).as_str(), id);
        }
    }

    #[test]
    fn rejects_bad_project_ids_naming_the_field() {
        for id in [
            "",
            "-lead",
            "has space",
            "slash/inside",
            "colon:verb",
            &"x".repeat(64),
        ] {
            match ProjectId::parse("name", id) {
                Err(Error::InvalidArgument(v)) => {
                    assert_eq!(v.field, "name");
                    assert!(
                        v.description.contains("not a valid project id"),
                        "{}",
                        v.description
                    );
                }
                other => panic!("{id:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn project_name_renders_full_resource_name() {
        let name = ProjectName(ProjectId::parse("name", "demo").expect("valid"));
        assert_eq!(name.to_string(), "projects/demo");
    }
}
