//! The optional `signature.json` beside `model.pt`: names, types and shapes of the model's
//! inputs and the names of its outputs.
//!
//! ```json
//! {"inputs": [{"name": "x", "dtype": "float32", "shape": [784]}],
//!  "outputs": [{"name": "logits"}]}
//! ```
//!
//! `shape` is one instance's shape (no batch dimension); `-1` matches any size. Without the file,
//! a model takes one float32 input of any shape and its outputs are named `output_0`, ...

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::instances::{DType, InputSpec};

/// The file name of a signature in a model directory.
pub const SIGNATURE_FILE: &str = "signature.json";

/// A model's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<String>,
    /// Whether it came from a file (else it is the default).
    pub declared: bool,
}

#[derive(Deserialize, Serialize)]
struct File {
    inputs: Vec<FileInput>,
    #[serde(default)]
    outputs: Vec<FileOutput>,
}

#[derive(Deserialize, Serialize)]
struct FileInput {
    name: String,
    #[serde(default = "float32")]
    dtype: String,
    #[serde(default)]
    shape: Option<Vec<i64>>,
}

#[derive(Deserialize, Serialize)]
struct FileOutput {
    name: String,
}

/// Why a model's `signature.json` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The file exists but cannot be read.
    #[error("cannot read {file}: {0}", file = SIGNATURE_FILE)]
    Unreadable(#[source] std::io::Error),
    /// The file is larger than [`crate::control::limits::MAX_SIGNATURE_FILE_BYTES`].
    #[error("{file} has {size} bytes; at most {max} are allowed", file = SIGNATURE_FILE)]
    TooLarge { size: u64, max: u64 },
    /// The file is not JSON of the signature's form.
    #[error("{file} is not valid: {0}", file = SIGNATURE_FILE)]
    NotJson(#[source] serde_json::Error),
    /// The file is well formed but declares something Anneal cannot serve; the text says what,
    /// naming the file and the input.
    #[error("{0}")]
    Invalid(String),
}

fn float32() -> String {
    "float32".into()
}

impl Signature {
    /// The signature of a model without a signature file.
    pub fn default_signature() -> Self {
        Self { inputs: vec![InputSpec::default_input()], outputs: Vec::new(), declared: false }
    }

    /// Reads `signature.json` from `dir` if present.
    pub fn read(dir: &Path) -> Result<Self, SignatureError> {
        let path = dir.join(SIGNATURE_FILE);
        if !path.exists() {
            return Ok(Self::default_signature());
        }
        let max = crate::control::limits::MAX_SIGNATURE_FILE_BYTES;
        let size = std::fs::metadata(&path).map_err(SignatureError::Unreadable)?.len();
        if size > max {
            return Err(SignatureError::TooLarge { size, max });
        }
        let text = std::fs::read_to_string(&path).map_err(SignatureError::Unreadable)?;
        Self::parse(&text)
    }

    /// Parses a signature file's text.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let file: File = serde_json::from_str(text).map_err(SignatureError::NotJson)?;
        let invalid = |message: String| Err(SignatureError::Invalid(message));
        if file.inputs.is_empty() {
            return invalid(format!("{SIGNATURE_FILE} names no inputs"));
        }
        use crate::control::limits::{MAX_SIGNATURE_ELEMENTS, MAX_SIGNATURE_INPUTS, MAX_SIGNATURE_RANK};
        if file.inputs.len() > MAX_SIGNATURE_INPUTS {
            return invalid(format!(
                "{SIGNATURE_FILE} names {} inputs; at most {MAX_SIGNATURE_INPUTS} are allowed",
                file.inputs.len()
            ));
        }
        // Warm-up and the console's example build one instance of zeros from the declared shapes
        // (a `-1` dimension as 1), so their size is bounded before anything is built.
        let mut elements: i64 = 0;
        for input in &file.inputs {
            let Some(shape) = &input.shape else { continue };
            if shape.len() > MAX_SIGNATURE_RANK {
                return invalid(format!(
                    "{SIGNATURE_FILE}: input '{}' has {} dimensions; at most {MAX_SIGNATURE_RANK} are allowed",
                    input.name,
                    shape.len()
                ));
            }
            if let Some(d) = shape.iter().find(|d| **d < -1) {
                return invalid(format!(
                    "{SIGNATURE_FILE}: input '{}' has dimension {d}; use a size or -1",
                    input.name
                ));
            }
            let size = shape.iter().try_fold(1i64, |n, d| n.checked_mul((*d).max(1)));
            elements = match size.and_then(|s| elements.checked_add(s)) {
                Some(total) if total <= MAX_SIGNATURE_ELEMENTS => total,
                _ => {
                    return invalid(format!(
                        "{SIGNATURE_FILE}: the declared input shapes hold more than {MAX_SIGNATURE_ELEMENTS} values per instance (input '{}')",
                        input.name
                    ))
                }
            };
        }
        let mut inputs = Vec::with_capacity(file.inputs.len());
        for input in file.inputs {
            let Some(dtype) = DType::parse(&input.dtype) else {
                return invalid(format!("{SIGNATURE_FILE}: input '{}' has unknown dtype '{}' (use float32, float64, int64, int32, uint8 or bool)", input.name, input.dtype));
            };
            if inputs.iter().any(|i: &InputSpec| i.name == input.name) {
                return invalid(format!("{SIGNATURE_FILE}: input '{}' is named twice", input.name));
            }
            inputs.push(InputSpec { name: input.name, dtype, shape: input.shape });
        }
        Ok(Self { inputs, outputs: file.outputs.into_iter().map(|o| o.name).collect(), declared: true })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inputs_and_outputs() {
        let sig = Signature::parse(r#"{"inputs":[{"name":"x","dtype":"float32","shape":[4]},{"name":"ids","dtype":"int64"}],"outputs":[{"name":"y"}]}"#)
            .expect("valid");
        assert_eq!(sig.inputs.len(), 2);
        assert_eq!(sig.inputs[1].dtype, DType::Int64);
        assert_eq!(sig.inputs[0].shape, Some(vec![4]));
        assert_eq!(sig.outputs, vec!["y".to_string()]);
    }

    #[test]
    fn rejects_bad_files_with_reasons() {
        let error = |text: &str| Signature::parse(text).expect_err(text).to_string();
        assert!(error("{}").contains("not valid"));
        assert!(error(r#"{"inputs":[]}"#).contains("names no inputs"));
        assert!(error(r#"{"inputs":[{"name":"x","dtype":"complex"}]}"#).contains("unknown dtype"));
        assert!(error(r#"{"inputs":[{"name":"x"},{"name":"x"}]}"#).contains("twice"));
    }

    #[test]
    fn shapes_are_bounded_before_anything_is_built() {
        let huge = r#"{"inputs":[{"name":"x","shape":[100000,100000,100000]}]}"#;
        assert!(Signature::parse(huge).expect_err("huge").to_string().contains("more than 1048576 values"));
        let overflow = r#"{"inputs":[{"name":"x","shape":[9223372036854775807,9223372036854775807]}]}"#;
        assert!(Signature::parse(overflow).is_err());
        let deep = format!(r#"{{"inputs":[{{"name":"x","shape":{:?}}}]}}"#, vec![1; 33]);
        assert!(Signature::parse(&deep).expect_err("deep").to_string().contains("dimensions"));
        assert!(Signature::parse(r#"{"inputs":[{"name":"x","shape":[-2]}]}"#).is_err());
        Signature::parse(r#"{"inputs":[{"name":"x","shape":[1024,1024]},{"name":"y","shape":[-1]}]}"#)
            .expect_err("together over the bound");
        Signature::parse(r#"{"inputs":[{"name":"x","shape":[1024,1023]},{"name":"y","shape":[-1, 3]}]}"#)
            .expect("within the bound");
    }
}
