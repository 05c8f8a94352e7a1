//! The `filter` of list methods: the subset of the Google API filter language that ML Engine
//! clients use. Terms joined by `AND`; each term `field:value` or `field=value` (equal, case
//! sensitive), `field!=value`, with `value*` matching a prefix and `"..."` quoting; fields are
//! resource fields (`state`, `framework`, `name`, ...) and `labels.<key>`.

use crate::error::{Error, Result};

/// A parsed filter; the empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    terms: Vec<Term>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Term {
    field: String,
    negated: bool,
    value: String,
    prefix: bool,
}

impl Filter {
    /// Parses `text` (absent or blank: match everything).
    pub fn parse(text: Option<&str>) -> Result<Self> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self::default());
        };
        let max = super::limits::MAX_FILTER_CHARS;
        if text.chars().count() > max {
            return Err(Error::invalid("filter", format!("The filter is longer than {max} characters.")));
        }
        let mut terms = Vec::new();
        for raw in split_and(text) {
            terms.push(parse_term(raw.trim())?);
        }
        Ok(Self { terms })
    }

    /// Whether a resource with `fields` (name, value pairs; a name may repeat, e.g. `name` as id
    /// and as full resource name) matches every term.
    pub fn matches(&self, fields: &[(String, String)]) -> bool {
        self.terms.iter().all(|term| {
            let hit = fields.iter().filter(|(name, _)| *name == term.field).any(|(_, v)| {
                if term.prefix {
                    v.starts_with(&term.value)
                } else {
                    *v == term.value
                }
            });
            hit != term.negated
        })
    }

    /// Whether the filter has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// `labels.<key>` fields of a resource's labels.
pub fn labels(labels: &std::collections::BTreeMap<String, String>) -> impl Iterator<Item = (String, String)> + '_ {
    labels.iter().map(|(k, v)| (format!("labels.{k}"), v.clone()))
}

/// Splits on ` AND ` outside quotes.
fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => quoted = !quoted,
            b' ' if !quoted && text[i..].starts_with(" AND ") => {
                parts.push(&text[start..i]);
                i += 5;
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

fn parse_term(raw: &str) -> Result<Term> {
    let bad = || {
        Error::invalid(
            "filter",
            format!("Cannot parse '{raw}': use field:value or field=value terms joined by AND, e.g. state:READY AND labels.team:vision."),
        )
    };
    let (field, negated, value) = if let Some((f, v)) = raw.split_once("!=") {
        (f, true, v)
    } else if let Some(index) = raw.find([':', '=']) {
        (&raw[..index], false, &raw[index + 1..])
    } else {
        return Err(bad());
    };
    let field = field.trim();
    let value = value.trim();
    if field.is_empty() || value.is_empty() || field.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (value, quoted) = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => (inner, true),
        None => (value, false),
    };
    let (value, prefix) = match value.strip_suffix('*') {
        Some(stem) if !quoted || value.ends_with('*') => (stem, true),
        _ => (value, false),
    };
    Ok(Term { field: field.to_owned(), negated, value: value.to_owned(), prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matches_terms_prefixes_labels_and_negation() {
        let resource = fields(&[("state", "READY"), ("name", "mnist_v2"), ("labels.team", "vision")]);
        for (filter, expected) in [
            ("state:READY", true),
            ("state=FAILED", false),
            ("name:mnist*", true),
            ("name:mnist", false),
            ("labels.team:vision AND state:READY", true),
            ("labels.team:vision AND state:FAILED", false),
            ("labels.owner:x", false),
            ("state!=FAILED", true),
            ("name:\"mnist_v2\"", true),
            ("", true),
        ] {
            let parsed = Filter::parse(Some(filter)).expect(filter);
            assert_eq!(parsed.matches(&resource), expected, "{filter}");
        }
    }

    #[test]
    fn rejects_unparseable_filters() {
        for bad in ["state", ":READY", "state:", "two words:x"] {
            let err = Filter::parse(Some(bad)).expect_err(bad);
            assert!(matches!(&err, Error::InvalidArgument(v) if v.field == "filter"), "{bad}: {err}");
        }
    }
}
