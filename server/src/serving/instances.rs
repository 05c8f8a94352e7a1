//! Turning the JSON `instances` of a predict request into typed input columns.
//!
//! This part is pure Rust (no libtorch), so it is tested without a model. A [`Batch`] holds one
//! column per model input; each column has one row per instance, all rows of the same shape.
//! Batches from several requests merge when their column layouts agree (see [`Batch::layout`]).

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

/// The element type of a model input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float64,
    Int64,
    Int32,
    Uint8,
    Bool,
}

impl DType {
    /// Parses the names a signature file may use (`float32`, `float`, `int64`, `long`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "float32" | "float" | "f32" => Self::Float32,
            "float64" | "double" | "f64" => Self::Float64,
            "int64" | "long" | "i64" => Self::Int64,
            "int32" | "int" | "i32" => Self::Int32,
            "uint8" | "byte" | "u8" => Self::Uint8,
            "bool" => Self::Bool,
            _ => return None,
        })
    }
}

/// One input a model expects, from its signature (or the default: one float32 input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    /// The shape of one instance's value; `-1` matches any size. `None`: any shape.
    pub shape: Option<Vec<i64>>,
}

impl InputSpec {
    /// The input assumed when a model has no signature: float32 of any shape.
    pub fn default_input() -> Self {
        Self { name: "input".into(), dtype: DType::Float32, shape: None }
    }
}

/// The values of one column, in row-major order over all rows.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

impl ColumnData {
    fn new(dtype: DType) -> Self {
        match dtype {
            DType::Float32 => Self::F32(Vec::new()),
            DType::Float64 => Self::F64(Vec::new()),
            DType::Int64 => Self::I64(Vec::new()),
            DType::Int32 => Self::I32(Vec::new()),
            DType::Uint8 => Self::U8(Vec::new()),
            DType::Bool => Self::Bool(Vec::new()),
        }
    }

    fn append(&mut self, other: ColumnData) {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a.extend(b),
            (Self::F64(a), Self::F64(b)) => a.extend(b),
            (Self::I64(a), Self::I64(b)) => a.extend(b),
            (Self::I32(a), Self::I32(b)) => a.extend(b),
            (Self::U8(a), Self::U8(b)) => a.extend(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend(b),
            // Batch::merge only merges batches of equal layout, so the types always agree.
            _ => unreachable!("columns of different types are never merged"),
        }
    }
}

/// One model input over all rows of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub dtype: DType,
    /// The shape of one row (the batch dimension excluded).
    pub row_shape: Vec<i64>,
    pub data: ColumnData,
}

/// The inputs of one or more requests, ready to become tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub columns: Vec<Column>,
}

/// A bad instance: its index in `instances` and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Failed to process element: {index} of 'instances' list. Error: {message}")]
pub struct InstanceError {
    pub index: usize,
    pub message: String,
}

/// What is wrong with one instance, before [`InstanceError`] adds its index.
#[derive(Debug, thiserror::Error)]
enum Problem {
    /// An object names a tensor the model does not have.
    #[error("Unexpected tensor name: {0}")]
    UnexpectedName(String),
    /// A one-input model got an object naming one other tensor.
    #[error("Expected tensor name: {expected}, got tensor name: {got}")]
    WrongName { expected: String, got: String },
    /// An object lacks one of the model's inputs.
    #[error("Input {0} was missing in at least one input instance")]
    Missing(String),
    /// A model with several inputs got a value that is not an object naming them.
    #[error("the model has {0} inputs, so each instance must be an object naming them")]
    NotAnObject(usize),
    /// An input's value is not a well-formed nested list of scalars of its type.
    #[error("input '{input}': {value}")]
    Value { input: String, value: ValueProblem },
    /// An input's shape is not the declared one.
    #[error("input '{input}' has shape {shape:?}, the model expects {expected:?}")]
    Shape { input: String, shape: Vec<i64>, expected: Vec<i64> },
    /// An input's shape differs from the first instance's.
    #[error("input '{input}' has shape {shape:?}, unlike the first instance's {first:?}; all instances must have the same shape")]
    UnlikeFirst { input: String, shape: Vec<i64>, first: Vec<i64> },
}

/// What is wrong inside one input's (nested) value.
#[derive(Debug, thiserror::Error)]
enum ValueProblem {
    /// A list's length differs from its siblings'.
    #[error("ragged list: length {len} where {expected} was expected at depth {depth}")]
    Length { len: i64, expected: i64, depth: usize },
    /// A scalar where its siblings are lists.
    #[error("ragged list: a scalar where a list was expected at depth {depth}")]
    Scalar { depth: usize },
    /// A scalar that is not a value of the input's type.
    #[error("{value} is not a valid {dtype:?} value")]
    Type { value: Value, dtype: DType },
}

impl Batch {
    /// What must agree for two batches to share one forward pass: names, types, row shapes.
    pub fn layout(&self) -> Vec<(&str, DType, &[i64])> {
        self.columns.iter().map(|c| (c.name.as_str(), c.dtype, c.row_shape.as_slice())).collect()
    }

    /// Appends `other`'s rows. The caller checked that the layouts agree.
    pub fn merge(&mut self, other: Batch) {
        self.rows += other.rows;
        for (mine, theirs) in self.columns.iter_mut().zip(other.columns) {
            mine.data.append(theirs.data);
        }
    }

    /// Parses `instances` for a model with `inputs`. With one input, an instance is its value
    /// (a number, a nested list, `{"b64": ...}`) or an object holding it under the input's name;
    /// with several, an object with every input by name.
    pub fn from_instances(instances: &[Value], inputs: &[InputSpec]) -> Result<Self, InstanceError> {
        let mut columns: Vec<Column> = inputs
            .iter()
            .map(|spec| Column {
                name: spec.name.clone(),
                dtype: spec.dtype,
                row_shape: Vec::new(),
                data: ColumnData::new(spec.dtype),
            })
            .collect();
        for (index, instance) in instances.iter().enumerate() {
            let fail = |problem: Problem| InstanceError { index, message: problem.to_string() };
            if let Value::Object(map) = instance {
                if inputs.len() > 1 {
                    if let Some(unexpected) = map.keys().find(|k| !inputs.iter().any(|i| &i.name == *k)) {
                        return Err(fail(Problem::UnexpectedName(unexpected.clone())));
                    }
                }
            }
            for (spec, column) in inputs.iter().zip(columns.iter_mut()) {
                let value = input_value(instance, spec, inputs.len()).map_err(fail)?;
                let mut shape = Vec::new();
                let mut data = ColumnData::new(spec.dtype);
                flatten(decode_b64(value).as_ref(), spec.dtype, 0, &mut shape, &mut data)
                    .map_err(|value| fail(Problem::Value { input: spec.name.clone(), value }))?;
                if let Some(expected) = &spec.shape {
                    let matches =
                        expected.len() == shape.len() && expected.iter().zip(&shape).all(|(e, s)| *e == -1 || e == s);
                    if !matches {
                        return Err(fail(Problem::Shape {
                            input: spec.name.clone(),
                            shape,
                            expected: expected.clone(),
                        }));
                    }
                }
                if index == 0 {
                    column.row_shape = shape;
                } else if column.row_shape != shape {
                    let first = column.row_shape.clone();
                    return Err(fail(Problem::UnlikeFirst { input: spec.name.clone(), shape, first }));
                }
                column.data.append(data);
            }
        }
        Ok(Self { rows: instances.len(), columns })
    }
}

/// Picks the value of input `spec` out of one instance.
fn input_value<'a>(instance: &'a Value, spec: &InputSpec, input_count: usize) -> Result<&'a Value, Problem> {
    match instance {
        Value::Object(map) if !is_b64(map) => {
            if input_count == 1 && map.len() == 1 && !map.contains_key(&spec.name) {
                let got = map.keys().next().cloned().unwrap_or_default();
                return Err(Problem::WrongName { expected: spec.name.clone(), got });
            }
            map.get(&spec.name).ok_or_else(|| Problem::Missing(spec.name.clone()))
        }
        _ if input_count > 1 => Err(Problem::NotAnObject(input_count)),
        other => Ok(other),
    }
}

fn is_b64(map: &serde_json::Map<String, Value>) -> bool {
    map.len() == 1 && map.contains_key("b64")
}

/// Replaces `{"b64": "..."}` by the bytes it carries, as a list of numbers (for uint8 inputs).
fn decode_b64(value: &Value) -> std::borrow::Cow<'_, Value> {
    if let Value::Object(map) = value {
        if let (true, Some(Value::String(text))) = (is_b64(map), map.get("b64")) {
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(text) {
                return std::borrow::Cow::Owned(Value::Array(bytes.into_iter().map(Value::from).collect()));
            }
        }
    }
    std::borrow::Cow::Borrowed(value)
}

/// Appends the scalars of a (nested) JSON value to `data`, recording its shape at `depth`.
fn flatten(
    value: &Value,
    dtype: DType,
    depth: usize,
    shape: &mut Vec<i64>,
    data: &mut ColumnData,
) -> Result<(), ValueProblem> {
    match value {
        Value::Array(items) => {
            let len = items.len() as i64;
            match shape.get(depth) {
                None => shape.push(len),
                Some(&expected) if expected != len => return Err(ValueProblem::Length { len, expected, depth }),
                Some(_) => {}
            }
            for item in items {
                flatten(item, dtype, depth + 1, shape, data)?;
            }
            Ok(())
        }
        scalar => {
            if depth < shape.len() {
                return Err(ValueProblem::Scalar { depth });
            }
            push_scalar(scalar, dtype, data)
        }
    }
}

fn push_scalar(value: &Value, dtype: DType, data: &mut ColumnData) -> Result<(), ValueProblem> {
    let wrong = || ValueProblem::Type { value: value.clone(), dtype };
    match data {
        ColumnData::F32(v) => v.push(value.as_f64().ok_or_else(wrong)? as f32),
        ColumnData::F64(v) => v.push(value.as_f64().ok_or_else(wrong)?),
        ColumnData::I64(v) => v.push(value.as_i64().ok_or_else(wrong)?),
        ColumnData::I32(v) => v.push(value.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or_else(wrong)?),
        ColumnData::U8(v) => v.push(value.as_u64().and_then(|x| u8::try_from(x).ok()).ok_or_else(wrong)?),
        ColumnData::Bool(v) => v.push(value.as_bool().ok_or_else(wrong)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one_input() -> Vec<InputSpec> {
        vec![InputSpec::default_input()]
    }

    #[test]
    fn stacks_nested_lists_into_one_column() {
        let batch =
            Batch::from_instances(&[json!([[1, 2], [3, 4]]), json!([[5, 6], [7, 8.5]])], &one_input()).expect("valid");
        assert_eq!(batch.rows, 2);
        assert_eq!(batch.columns[0].row_shape, vec![2, 2]);
        assert_eq!(batch.columns[0].data, ColumnData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.5]));
    }

    #[test]
    fn scalars_are_rows_of_shape_empty() {
        let batch = Batch::from_instances(&[json!(1.5), json!(2)], &one_input()).expect("valid");
        assert_eq!(batch.columns[0].row_shape, Vec::<i64>::new());
        assert_eq!(batch.columns[0].data, ColumnData::F32(vec![1.5, 2.0]));
    }

    #[test]
    fn names_the_bad_instance() {
        let err = Batch::from_instances(&[json!([1, 2]), json!([1, "x"])], &one_input()).expect_err("bad");
        assert_eq!(err.index, 1);
        assert!(err.to_string().starts_with("Failed to process element: 1 of 'instances' list. Error: "), "{err}");
        assert!(err.message.contains("\"x\""), "{err}");

        let err = Batch::from_instances(&[json!([1, 2]), json!([1, 2, 3])], &one_input()).expect_err("shape");
        assert_eq!(err.index, 1);
        assert!(err.message.contains("same shape"), "{err}");

        let err = Batch::from_instances(&[json!([[1, 2], [3]])], &one_input()).expect_err("ragged");
        assert!(err.message.contains("ragged"), "{err}");
    }

    #[test]
    fn named_inputs_come_from_objects() {
        let inputs = vec![
            InputSpec { name: "a".into(), dtype: DType::Int64, shape: Some(vec![2]) },
            InputSpec { name: "b".into(), dtype: DType::Float32, shape: None },
        ];
        let batch = Batch::from_instances(&[json!({"a": [1, 2], "b": 0.5})], &inputs).expect("valid");
        assert_eq!(batch.columns[0].data, ColumnData::I64(vec![1, 2]));
        assert_eq!(batch.columns[1].data, ColumnData::F32(vec![0.5]));

        let err = Batch::from_instances(&[json!({"a": [1, 2]})], &inputs).expect_err("missing b");
        assert!(err.message.contains("Input b was missing"), "{err}");
        let err = Batch::from_instances(&[json!({"a": [1, 2, 3], "b": 1})], &inputs).expect_err("shape");
        assert!(err.message.contains("expects [2]"), "{err}");
        let err = Batch::from_instances(&[json!({"a": [1, 2], "b": 1, "c": 2})], &inputs).expect_err("extra");
        assert!(err.message.contains("Unexpected tensor name: c"), "{err}");
        let err = Batch::from_instances(&[json!({"a": [1.5, 2], "b": 1})], &inputs).expect_err("int");
        assert!(err.message.contains("Int64"), "{err}");
    }

    #[test]
    fn b64_values_become_bytes() {
        let inputs = vec![InputSpec { name: "image_bytes".into(), dtype: DType::Uint8, shape: None }];
        let batch = Batch::from_instances(&[json!({"image_bytes": {"b64": "AQID"}})], &inputs).expect("valid");
        assert_eq!(batch.columns[0].data, ColumnData::U8(vec![1, 2, 3]));
    }

    #[test]
    fn batches_with_equal_layouts_merge() {
        let mut a = Batch::from_instances(&[json!([1, 2])], &one_input()).expect("a");
        let b = Batch::from_instances(&[json!([3, 4]), json!([5, 6])], &one_input()).expect("b");
        let c = Batch::from_instances(&[json!([1, 2, 3])], &one_input()).expect("c");
        assert_eq!(a.layout(), b.layout());
        assert_ne!(a.layout(), c.layout());
        a.merge(b);
        assert_eq!(a.rows, 3);
        assert_eq!(a.columns[0].data, ColumnData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    }
}
