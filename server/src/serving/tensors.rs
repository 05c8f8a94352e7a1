//! Conversions between [`Batch`] columns, libtorch tensors and per-instance JSON predictions.
//! Runs only on model worker threads.

use serde_json::{Map, Value};
use tch::{Device, IValue, Kind, Tensor};

use super::instances::{Batch, ColumnData};

/// Why a model's output cannot become per-row predictions.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// The model returned something other than tensors: what it returned.
    #[error("the model returned {0}, which is not a tensor, tuple or dict of tensors")]
    NotTensors(&'static str),
    /// A dict output has a key that is not a string (shown as libtorch prints it).
    #[error("the model returned a dict with a non-string key ({0})")]
    NonStringKey(String),
    /// A named output is not a tensor.
    #[error("output '{name}' is {kind}, not a tensor")]
    NotATensor { name: String, kind: &'static str },
    /// A named output's tensor cannot be split into rows.
    #[error("output '{name}': {source}")]
    Named { name: String, source: Box<OutputError> },
    /// A tensor's first dimension is not the number of rows that went in.
    #[error("output shape {shape:?} does not start with the batch size {rows}")]
    BatchSize { shape: Vec<i64>, rows: usize },
    /// libtorch could not read the tensor's values.
    #[error("{0}")]
    Values(String),
}

/// Builds one input tensor per column, shaped `[rows, row_shape...]`, on `device`.
pub fn batch_to_inputs(batch: &Batch, device: Device) -> Vec<IValue> {
    batch
        .columns
        .iter()
        .map(|column| {
            let mut shape = vec![batch.rows as i64];
            shape.extend_from_slice(&column.row_shape);
            let flat = match &column.data {
                ColumnData::F32(v) => Tensor::from_slice(v),
                ColumnData::F64(v) => Tensor::from_slice(v),
                ColumnData::I64(v) => Tensor::from_slice(v),
                ColumnData::I32(v) => Tensor::from_slice(v),
                ColumnData::U8(v) => Tensor::from_slice(v),
                ColumnData::Bool(v) => Tensor::from_slice(v),
            };
            let tensor = flat.reshape(shape.as_slice());
            IValue::Tensor(if device == Device::Cpu { tensor } else { tensor.to_device(device) })
        })
        .collect()
}

/// Splits a model's output into one JSON prediction per row: a tensor gives each row's value; a
/// tuple or list of tensors gives per-row objects keyed by `output_names` (or `output_0`, ...); a
/// dict of tensors gives per-row objects keyed by the dict's keys.
pub fn outputs_to_rows(output: IValue, rows: usize, output_names: &[String]) -> Result<Vec<Value>, OutputError> {
    match output {
        IValue::Tensor(tensor) => tensor_rows(&tensor, rows),
        IValue::Tuple(items) | IValue::GenericList(items) => {
            let named = items.into_iter().enumerate().map(|(i, item)| {
                let name = output_names.get(i).cloned().unwrap_or_else(|| format!("output_{i}"));
                (name, item)
            });
            named_rows(named.collect(), rows)
        }
        IValue::TensorList(tensors) => {
            let named = tensors.into_iter().enumerate().map(|(i, t)| {
                let name = output_names.get(i).cloned().unwrap_or_else(|| format!("output_{i}"));
                (name, IValue::Tensor(t))
            });
            named_rows(named.collect(), rows)
        }
        IValue::GenericDict(entries) => {
            let mut named = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                match key {
                    IValue::String(name) => named.push((name, value)),
                    other => return Err(OutputError::NonStringKey(format!("{other:?}"))),
                }
            }
            named_rows(named, rows)
        }
        other => Err(OutputError::NotTensors(kind_name(&other))),
    }
}

fn named_rows(outputs: Vec<(String, IValue)>, rows: usize) -> Result<Vec<Value>, OutputError> {
    let mut per_row: Vec<Map<String, Value>> = vec![Map::new(); rows];
    for (name, value) in outputs {
        let IValue::Tensor(tensor) = value else {
            return Err(OutputError::NotATensor { name, kind: kind_name(&value) });
        };
        let cells =
            tensor_rows(&tensor, rows).map_err(|e| OutputError::Named { name: name.clone(), source: Box::new(e) })?;
        for (row, cell) in cells.into_iter().enumerate() {
            per_row[row].insert(name.clone(), cell);
        }
    }
    Ok(per_row.into_iter().map(Value::Object).collect())
}

/// One JSON value per row of `tensor`, whose first dimension must be `rows`.
fn tensor_rows(tensor: &Tensor, rows: usize) -> Result<Vec<Value>, OutputError> {
    let size = tensor.size();
    if size.first().copied() != Some(rows as i64) {
        return Err(OutputError::BatchSize { shape: size, rows });
    }
    let values = |e: tch::TchError| OutputError::Values(e.to_string());
    let row_shape = &size[1..];
    // A view when the tensor is already contiguous on the CPU (the usual case): each libtorch call
    // costs microseconds, as much as the rest of a small model's output handling.
    let on_cpu = if tensor.device() == Device::Cpu { tensor.shallow_clone() } else { tensor.to_device(Device::Cpu) };
    let flat = on_cpu.reshape([-1]);
    let number = |x: f64| serde_json::Number::from_f64(x).map_or_else(|| non_finite(x), Value::Number);
    let scalars: Vec<Value> = match flat.kind() {
        Kind::Bool => Vec::<bool>::try_from(&flat).map_err(values)?.into_iter().map(Value::from).collect(),
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 => {
            Vec::<i64>::try_from(&flat.to_kind(Kind::Int64)).map_err(values)?.into_iter().map(Value::from).collect()
        }
        // Widened to f64 exactly, as a conversion of the tensor to double would.
        Kind::Float => Vec::<f32>::try_from(&flat).map_err(values)?.into_iter().map(|x| number(f64::from(x))).collect(),
        _ => Vec::<f64>::try_from(&flat.to_kind(Kind::Double)).map_err(values)?.into_iter().map(number).collect(),
    };
    let per_row: usize = row_shape.iter().product::<i64>() as usize;
    Ok(scalars.chunks(per_row.max(1)).take(rows).map(|chunk| nest(chunk, row_shape)).collect())
}

/// A NaN or infinity as protobuf's JSON mapping writes it (JSON has no such numbers): the
/// string `"NaN"`, `"Infinity"` or `"-Infinity"`, as Python models' answers have them too.
fn non_finite(x: f64) -> Value {
    Value::String(
        if x.is_nan() {
            "NaN"
        } else if x > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        }
        .into(),
    )
}

/// Rebuilds nested lists of `shape` from row-major scalars.
fn nest(scalars: &[Value], shape: &[i64]) -> Value {
    match shape.split_first() {
        None => scalars.first().cloned().unwrap_or(Value::Null),
        Some((&n, rest)) => {
            let step = rest.iter().product::<i64>() as usize;
            Value::Array((0..n as usize).map(|i| nest(&scalars[i * step..(i + 1) * step], rest)).collect())
        }
    }
}

fn kind_name(value: &IValue) -> &'static str {
    match value {
        IValue::None => "None",
        IValue::Tensor(_) => "a tensor",
        IValue::Double(_) => "a float",
        IValue::Int(_) => "an int",
        IValue::Bool(_) => "a bool",
        IValue::Tuple(_) => "a tuple",
        IValue::IntList(_) | IValue::DoubleList(_) | IValue::BoolList(_) | IValue::GenericList(_) => "a list",
        IValue::String(_) | IValue::StringList(_) => "a string",
        IValue::TensorList(_) => "a list of tensors",
        IValue::GenericDict(_) => "a dict",
        IValue::Object(_) => "an object",
        IValue::Device(_) => "a device",
        _ => "an unsupported value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_outputs_are_strings_as_in_protobufs_json_mapping() {
        let tensor = Tensor::from_slice(&[1.5f32, f32::INFINITY, f32::NEG_INFINITY, f32::NAN]).reshape([2, 2]);
        let rows = tensor_rows(&tensor, 2).expect("rows");
        assert_eq!(rows, [serde_json::json!([1.5, "Infinity"]), serde_json::json!(["-Infinity", "NaN"])]);
        let doubles = Tensor::from_slice(&[f64::MAX, f64::NAN]);
        assert_eq!(
            tensor_rows(&(doubles * 2.0), 2).expect("rows"),
            [serde_json::json!("Infinity"), serde_json::json!("NaN")]
        );
    }
}
