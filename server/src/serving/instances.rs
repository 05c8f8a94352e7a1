//! Turning the JSON `instances` of a predict request into typed input columns.
//!
//! This part is pure Rust (no libtorch), so it is tested without a model. A [`Batch`] holds one
//! column per model input; each column has one row per instance, all rows of the same shape.
//! Batches from several requests merge when their column layouts agree (see [`Batch::layout`]).
//!
//! A request body becomes [`Instances`] before the model is known. The common body, instances
//! that are equally shaped nested lists of numbers, is read in one pass straight into numbers
//! ([`Dense`], floats by `fast-float2`): no JSON tree of one value per number is built and thrown
//! away. Every other body is read by serde_json into values, as before, and gives the same
//! answers and the same error messages.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

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

    fn reserve(&mut self, additional: usize) {
        match self {
            Self::F32(v) => v.reserve(additional),
            Self::F64(v) => v.reserve(additional),
            Self::I64(v) => v.reserve(additional),
            Self::I32(v) => v.reserve(additional),
            Self::U8(v) => v.reserve(additional),
            Self::Bool(v) => v.reserve(additional),
        }
    }

    fn extend_from(&mut self, other: &ColumnData) {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a.extend_from_slice(b),
            (Self::F64(a), Self::F64(b)) => a.extend_from_slice(b),
            (Self::I64(a), Self::I64(b)) => a.extend_from_slice(b),
            (Self::I32(a), Self::I32(b)) => a.extend_from_slice(b),
            (Self::U8(a), Self::U8(b)) => a.extend_from_slice(b),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            // Batches of different layouts are never merged.
            _ => unreachable!("columns of different types are never merged"),
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

    /// Makes room for `rows` more rows of this batch's layout.
    pub fn reserve_rows(&mut self, rows: usize) {
        for column in &mut self.columns {
            let per_row = column.row_shape.iter().product::<i64>().max(0) as usize;
            column.data.reserve(rows.saturating_mul(per_row));
        }
    }

    /// Appends a copy of `other`'s rows. The caller checked that the layouts agree.
    pub fn extend_from(&mut self, other: &Batch) {
        self.rows += other.rows;
        for (mine, theirs) in self.columns.iter_mut().zip(&other.columns) {
            mine.data.extend_from(&theirs.data);
        }
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

/// Why a predict request's body holds no instances to predict.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("The request body is not valid JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("The request body must be a JSON object with an \"instances\" list.")]
    NotAnObject,
    #[error("\"instances\" has {count} instances; send at most {max} per request.")]
    TooMany { count: usize, max: usize },
    #[error("\"instances\" is empty; send at least one instance.")]
    Empty,
    #[error("\"instances\" must be a list.")]
    NotAList,
    #[error("The request body has no \"instances\" list.")]
    Missing,
}

/// The instances of one predict request, read before the model that predicts them is known,
/// and the body's other top-level keys (`signature_name`; a custom prediction routine's keyword
/// arguments).
#[derive(Clone, Debug, PartialEq)]
pub struct Instances(Read, Map<String, Value>);

#[derive(Clone, Debug, PartialEq)]
enum Read {
    /// Equally shaped nested lists of numbers, read straight into numbers.
    Dense(Dense),
    /// Anything else, as JSON values.
    Values(Vec<Value>),
}

/// The instances of a request as they were read ([`Instances::into_raw`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Raw {
    /// Equally shaped nested lists of numbers: one instance's shape and the values, row-major.
    Dense { rows: usize, row_shape: Vec<i64>, values: Vec<f64> },
    /// Anything else.
    Values(Vec<Value>),
}

/// Instances that are all nested lists of numbers of one shape, as f64 in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub rows: usize,
    /// The shape of one instance.
    pub row_shape: Vec<i64>,
    pub values: Vec<f64>,
    /// The body they came from, for a model whose inputs are not one float column: it is then
    /// read as JSON values, so every instance is checked and reported exactly as other bodies are.
    body: bytes::Bytes,
}

impl Instances {
    /// Reads the `instances` of a request body `{"instances": [...], ...}`; at most `max` of them.
    pub fn from_body(body: bytes::Bytes, max: usize) -> Result<Self, RequestError> {
        if let Some(dense) = Dense::scan(&body, max) {
            // A dense body has no other key.
            return Ok(Self(Read::Dense(dense), Map::new()));
        }
        let (values, rest) = values_of(&body, max)?;
        Ok(Self(Read::Values(values), rest))
    }

    /// Instances already read as JSON values.
    pub fn from_values(values: Vec<Value>) -> Self {
        Self(Read::Values(values), Map::new())
    }

    /// The request body's top-level keys other than `instances`.
    pub fn rest(&self) -> &Map<String, Value> {
        &self.1
    }

    /// Takes the body's other keys out ([`Instances::rest`]), leaving none.
    pub fn take_rest(&mut self) -> Map<String, Value> {
        std::mem::take(&mut self.1)
    }

    /// How many instances there are.
    pub fn len(&self) -> usize {
        match &self.0 {
            Read::Dense(dense) => dense.rows,
            Read::Values(values) => values.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the body was read straight into numbers.
    pub fn is_dense(&self) -> bool {
        matches!(self.0, Read::Dense(_))
    }

    /// The instances as read: dense numbers (for a Python model, which takes them as one array)
    /// or JSON values.
    pub fn into_raw(self) -> Raw {
        match self.0 {
            Read::Dense(Dense { rows, row_shape, values, .. }) => Raw::Dense { rows, row_shape, values },
            Read::Values(values) => Raw::Values(values),
        }
    }

    /// The instances as JSON values, as the client sent them.
    pub fn into_values(self) -> Vec<Value> {
        match self.0 {
            Read::Values(values) => values,
            // The body was read once already, so it is valid and within the limit.
            Read::Dense(dense) => values_of(&dense.body, usize::MAX).map(|(values, _)| values).unwrap_or_default(),
        }
    }

    /// The instances as a batch for a model with `inputs`: dense numbers become the column of a
    /// one-input float model directly; anything else goes through [`Batch::from_instances`].
    pub fn into_batch(self, inputs: &[InputSpec]) -> Result<Batch, InstanceError> {
        let dense = match self.0 {
            Read::Values(values) => return Batch::from_instances(&values, inputs),
            Read::Dense(dense) => dense,
        };
        if let [spec] = inputs {
            let fits = spec.shape.as_ref().is_none_or(|expected| {
                expected.len() == dense.row_shape.len()
                    && expected.iter().zip(&dense.row_shape).all(|(e, s)| *e == -1 || e == s)
            });
            let data = match spec.dtype {
                DType::Float32 => Some(ColumnData::F32(dense.values.iter().map(|v| *v as f32).collect())),
                DType::Float64 => Some(ColumnData::F64(dense.values)),
                _ => None,
            };
            if let (true, Some(data)) = (fits, data) {
                let column = Column { name: spec.name.clone(), dtype: spec.dtype, row_shape: dense.row_shape, data };
                return Ok(Batch { rows: dense.rows, columns: vec![column] });
            }
        }
        // Another model: the instances as values, checked and reported as any other body's.
        let (values, _) =
            values_of(&dense.body, usize::MAX).map_err(|e| InstanceError { index: 0, message: e.to_string() })?;
        Batch::from_instances(&values, inputs)
    }
}

/// The `instances` of a body read as JSON values, and the body's other keys.
fn values_of(body: &[u8], max: usize) -> Result<(Vec<Value>, Map<String, Value>), RequestError> {
    let Value::Object(mut object) = serde_json::from_slice(body).map_err(RequestError::NotJson)? else {
        return Err(RequestError::NotAnObject);
    };
    match object.remove("instances") {
        Some(Value::Array(instances)) if instances.len() > max => {
            Err(RequestError::TooMany { count: instances.len(), max })
        }
        Some(Value::Array(instances)) if !instances.is_empty() => Ok((instances, object)),
        Some(Value::Array(_)) => Err(RequestError::Empty),
        Some(_) => Err(RequestError::NotAList),
        None => Err(RequestError::Missing),
    }
}

impl Dense {
    /// Reads a body of exactly `{"instances": [I, ...]}` where every instance `I` is a number or
    /// a nested list of numbers of the first instance's shape, with no empty list, at most `max`
    /// of them. `None` for any other body (which is then read as JSON values).
    fn scan(body: &bytes::Bytes, max: usize) -> Option<Self> {
        let mut scanner = Scanner { text: body, at: 0 };
        scanner.expect(b'{')?;
        scanner.expect(b'"')?;
        if !scanner.text[scanner.at..].starts_with(b"instances\"") {
            return None;
        }
        scanner.at += b"instances\"".len();
        scanner.expect(b':')?;
        scanner.expect(b'[')?;
        let mut dense = Dense { rows: 0, row_shape: Vec::new(), values: Vec::new(), body: body.clone() };
        loop {
            if dense.rows == max {
                return None;
            }
            let began = scanner.at;
            if dense.rows == 0 {
                // The first instance's depth is its run of opening brackets; every list length is
                // set by the first list at its depth, and every later list must agree.
                dense.row_shape = vec![-1; scanner.depth()];
            }
            scanner.instance(0, &mut dense.row_shape, &mut dense.values)?;
            if dense.rows == 0 {
                // Room for as many more rows as the rest of the body can hold at this size.
                let rows = (body.len() / (scanner.at - began).max(1)).min(max);
                dense.values.reserve(rows.saturating_sub(1) * dense.values.len());
            }
            dense.rows += 1;
            match scanner.next()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
        scanner.expect(b'}')?;
        scanner.skip_spaces();
        (scanner.at == body.len()).then_some(dense)
    }
}

/// A cursor over JSON text for [`Dense::scan`].
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn skip_spaces(&mut self) {
        while self.text.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// The next byte after white space, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_spaces();
        let byte = *self.text.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// How many lists open here, one inside the other (white space allowed between them).
    fn depth(&self) -> usize {
        let mut depth = 0;
        for byte in &self.text[self.at..] {
            match byte {
                b'[' => depth += 1,
                b' ' | b'\n' | b'\r' | b'\t' => {}
                _ => break,
            }
        }
        depth
    }

    /// One value at `depth` of an instance of `shape`: a list at every depth above the shape's
    /// length, a number at it. A length still -1 is set by the first list at its depth.
    fn instance(&mut self, depth: usize, shape: &mut [i64], values: &mut Vec<f64>) -> Option<()> {
        if depth == shape.len() {
            self.skip_spaces();
            values.push(self.number()?);
            return Some(());
        }
        self.expect(b'[')?;
        let mut len: i64 = 0;
        loop {
            self.instance(depth + 1, shape, values)?;
            len += 1;
            match self.next()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
        if shape[depth] < 0 {
            shape[depth] = len;
        }
        (shape[depth] == len).then_some(())
    }

    /// A JSON number, finite as f64: read by fast-float2 (correctly rounded), then held to JSON's
    /// grammar, which is stricter (no `+`, `.5`, `1.`, leading zeros, `inf` or `nan`).
    fn number(&mut self) -> Option<f64> {
        let rest = &self.text[self.at..];
        let (value, len): (f64, usize) = fast_float2::parse_partial(rest).ok()?;
        let text = &rest[..len];
        let unsigned = text.strip_prefix(b"-").unwrap_or(text);
        let digit = |i: usize| unsigned.get(i).is_some_and(u8::is_ascii_digit);
        let leading_zero = unsigned.first() == Some(&b'0') && digit(1);
        let bare_point = unsigned.iter().position(|b| *b == b'.').is_some_and(|at| !digit(at + 1));
        if !digit(0) || leading_zero || bare_point || !value.is_finite() {
            return None;
        }
        self.at += len;
        Some(value)
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

    fn body(text: &str) -> bytes::Bytes {
        bytes::Bytes::from(text.to_owned())
    }

    #[test]
    fn number_lists_are_read_straight_into_the_batch_the_json_path_makes() {
        let inputs = vec![InputSpec { name: "x".into(), dtype: DType::Float32, shape: Some(vec![2, 2]) }];
        let text = r#" { "instances" : [ [[0.46844369173049927, -1e-3], [3, 4.5E2]], [[5,6],[7,-0]] ] } "#;
        let instances = Instances::from_body(body(text), 10).expect("read");
        assert!(instances.is_dense());
        assert_eq!(instances.len(), 2);
        let values: Value = serde_json::from_str(text).expect("json");
        let expected = Batch::from_instances(values["instances"].as_array().expect("list"), &inputs).expect("valid");
        assert_eq!(instances.into_batch(&inputs).expect("valid"), expected);

        let scalars = Instances::from_body(body(r#"{"instances": [1.5, 2]}"#), 10).expect("read");
        assert!(scalars.is_dense());
        let batch = scalars.into_batch(&[InputSpec::default_input()]).expect("valid");
        assert_eq!((batch.rows, batch.columns[0].row_shape.clone()), (2, vec![]));
    }

    #[test]
    fn other_bodies_are_read_as_json_values_with_the_same_answers() {
        let read = |text: &str| Instances::from_body(body(text), 3);
        for text in [
            r#"{"instances": [[1, 2], [3]]}"#,
            r#"{"instances": [[1, 2], 3]}"#,
            r#"{"instances": [[]]}"#,
            r#"{"instances": [{"x": [1]}]}"#,
            r#"{"instances": [[1, 2]], "signature_name": "serving_default"}"#,
            r#"{"instances": [[1e400]]}"#,
            r#"{"instances": [[01]]}"#,
            r#"{"instances": [[+1]]}"#,
            r#"{"instances": [[.5]]}"#,
            r#"{"instances": [[1.]]}"#,
            r#"{"instances": [[1.e5]]}"#,
            r#"{"instances": [[-inf]]}"#,
            r#"{"instances": [[NaN]]}"#,
            r#"{"instances": [[1e]]}"#,
        ] {
            assert!(!read(text).is_ok_and(|i| i.is_dense()), "{text} is not read as dense");
        }
        assert!(read(r#"{"instances": [[1, 2], [3]]}"#)
            .expect("json")
            .into_batch(&[InputSpec::default_input()])
            .is_err());
        let keyed = read(r#"{"instances": [[1, 2]], "signature_name": "s", "top_k": 2}"#).expect("json");
        assert_eq!(serde_json::Value::Object(keyed.rest().clone()), json!({"signature_name": "s", "top_k": 2}));
        assert!(read(r#"{"instances": [[1, 2]]}"#).expect("dense").rest().is_empty());
        let message = |text: &str| read(text).expect_err("refused").to_string();
        assert!(message("[1]").contains("must be a JSON object"));
        assert!(message("{").starts_with("The request body is not valid JSON"));
        assert_eq!(
            message(r#"{"instances": [1, 2, 3, 4]}"#),
            "\"instances\" has 4 instances; send at most 3 per request."
        );
        assert!(message(r#"{"instances": []}"#).contains("is empty"));
        assert!(message(r#"{"instances": 1}"#).contains("must be a list"));
        assert!(message(r#"{"other": 1}"#).contains("no \"instances\""));
    }

    #[test]
    fn dense_numbers_for_a_model_of_other_inputs_are_checked_as_json_values() {
        let ints = vec![InputSpec { name: "x".into(), dtype: DType::Int64, shape: None }];
        let batch = Instances::from_body(body(r#"{"instances": [[1, 2]]}"#), 10).expect("read").into_batch(&ints);
        assert_eq!(batch.expect("valid").columns[0].data, ColumnData::I64(vec![1, 2]));
        let wrong = vec![InputSpec { name: "x".into(), dtype: DType::Float32, shape: Some(vec![3]) }];
        let err = Instances::from_body(body(r#"{"instances": [[1, 2]]}"#), 10).expect("read").into_batch(&wrong);
        assert!(err.expect_err("shape").message.contains("expects [3]"));
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
