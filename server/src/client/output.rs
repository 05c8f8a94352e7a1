//! How the CLI prints: readable tables by default, `--format json|yaml` for scripts.

use serde_json::Value;

/// The output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Tables and short summaries.
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints a resource: YAML for humans (as `gcloud ... describe` does) or the chosen format.
pub fn resource(format: Format, value: &Value) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).unwrap_or_default()),
        Format::Yaml | Format::Table => print!("{}", yaml(value)),
    }
}

/// Prints a list as a table with `columns` (header, JSON pointer or key), or the whole list in the
/// chosen format.
pub fn table(format: Format, items: &[Value], columns: &[(&str, &str)]) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(items).unwrap_or_default()),
        Format::Yaml => print!("{}", yaml(&Value::Array(items.to_vec()))),
        Format::Table => {
            let cells: Vec<Vec<String>> =
                items.iter().map(|item| columns.iter().map(|(_, key)| cell(item, key)).collect()).collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, (header, _))| {
                    cells.iter().map(|row| row[i].chars().count()).chain([header.len()]).max().unwrap_or(0)
                })
                .collect();
            let line = |row: Vec<String>| {
                let padded: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                println!("{}", padded.join("  ").trim_end());
            };
            line(columns.iter().map(|(h, _)| h.to_string()).collect());
            for row in cells {
                line(row);
            }
        }
    }
}

/// One table cell: a string as is, a resource name as its last segment, labels as `k=v,...`.
fn cell(item: &Value, key: &str) -> String {
    let value = if key.starts_with('/') { item.pointer(key) } else { item.get(key) };
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if key == "name" || key.ends_with("/name") => {
            s.rsplit('/').next().unwrap_or(s).to_owned()
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(&v.to_string())))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// JSON as YAML.
pub fn yaml(value: &Value) -> String {
    yaml_serde::to_string(value).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_round_trips_strings_that_look_like_other_types() {
        let value = serde_json::json!({"name": "projects/p/jobs/j", "count": "12", "ok": true, "labels": {"a": "yes"},
                                      "args": ["--epochs", "3"], "empty": {}, "trials": [{"id": "1", "v": 0.5}]});
        let text = yaml(&value);
        let back: Value = yaml_serde::from_str(&text).expect("valid YAML");
        assert_eq!(back, value, "{text}");
    }
}
