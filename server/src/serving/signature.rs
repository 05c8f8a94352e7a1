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

fn float32() -> String {
    "float32".into()
}

impl Signature {
    /// The signature of a model without a signature file.
    pub fn default_signature() -> Self {
        Self { inputs: vec![InputSpec::default_input()], outputs: Vec::new(), declared: false }
    }

    /// Reads `signature.json` from `dir` if present.
    pub fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join(SIGNATURE_FILE);
        if !path.exists() {
            return Ok(Self::default_signature());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {SIGNATURE_FILE}: {e}"))?;
        Self::parse(&text)
    }

    /// Parses a signature file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(text).map_err(|e| format!("{SIGNATURE_FILE} is not valid: {e}"))?;
        if file.inputs.is_empty() {
            return Err(format!("{SIGNATURE_FILE} names no inputs"));
        }
        let mut inputs = Vec::with_capacity(file.inputs.len());
        for input in file.inputs {
            let dtype = DType::parse(&input.dtype).ok_or_else(|| {
                format!("{SIGNATURE_FILE}: input '{}' has unknown dtype '{}' (use float32, float64, int64, int32, uint8 or bool)", input.name, input.dtype)
            })?;
            if inputs.iter().any(|i: &InputSpec| i.name == input.name) {
                return Err(format!("{SIGNATURE_FILE}: input '{}' is named twice", input.name));
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
        assert!(Signature::parse("{}").expect_err("no inputs").contains("not valid"));
        assert!(Signature::parse(r#"{"inputs":[]}"#).expect_err("empty").contains("names no inputs"));
        assert!(Signature::parse(r#"{"inputs":[{"name":"x","dtype":"complex"}]}"#)
            .expect_err("dtype")
            .contains("unknown dtype"));
        assert!(Signature::parse(r#"{"inputs":[{"name":"x"},{"name":"x"}]}"#).expect_err("dup").contains("twice"));
    }
}
