//! What travels between the server and a TorchScript model's worker process
//! ([`super::process`] on the server's side, [`super::worker`] in the process), over the
//! process's stdin and stdout: frames of a 4-byte little-endian length and that many bytes,
//! read only up to a bound known before anything is allocated.
//!
//! - The worker's first frame: [`Ready`] as JSON, or why it cannot serve.
//! - A request: one [`Batch`], binary: rows (u32), columns (u32), then per column its dtype
//!   (u8), rank (u32), row shape (i64 each) and values (raw little-endian, as many as rows ×
//!   the row shape's product).
//! - An answer: a status byte, then `0` the predictions as one JSON list (one per row), `1` the
//!   forward pass's error text.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::instances::{Batch, Column, ColumnData, DType};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The frame announced is larger than the reader accepts.
    #[error("its answer is {size} bytes, over the limit of {max} bytes (predict_max_answer_bytes)")]
    TooLarge { size: usize, max: usize },
    /// The frame's bytes are not what the protocol says.
    #[error("it sent a frame that is not understood: {0}")]
    Malformed(String),
}

/// Writes one frame.
pub fn write_frame(stream: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let length: usize = parts.iter().map(|p| p.len()).sum();
    let length = u32::try_from(length)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a frame of 4 GiB or more"))?;
    stream.write_all(&length.to_le_bytes())?;
    for part in parts {
        stream.write_all(part)?;
    }
    stream.flush()
}

/// Reads one frame of at most `max` bytes; a larger one is refused before it is read.
pub fn read_frame(stream: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    let size = u32::from_le_bytes(head) as usize;
    if size > max {
        return Err(FrameError::TooLarge { size, max });
    }
    let mut frame = vec![0u8; size];
    stream.read_exact(&mut frame)?;
    Ok(frame)
}

/// What a worker says once its model is loaded and warmed up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    /// `cpu` or `cuda:N`.
    pub device: String,
}

impl Ready {
    /// A worker ready on `device`.
    pub fn on(device: tch::Device) -> Self {
        let device = match device {
            tch::Device::Cuda(n) => format!("cuda:{n}"),
            _ => "cpu".to_owned(),
        };
        Self { device }
    }

    /// The device it named.
    pub fn device(&self) -> tch::Device {
        match self.device.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => tch::Device::Cuda(n),
            None => tch::Device::Cpu,
        }
    }
}

/// A worker's first frame.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hello {
    Ready(Ready),
    /// The model cannot be served: the [`super::LoadError`]'s text.
    Failed {
        message: String,
    },
}

fn dtype_code(dtype: DType) -> u8 {
    match dtype {
        DType::Float32 => 0,
        DType::Float64 => 1,
        DType::Int64 => 2,
        DType::Int32 => 3,
        DType::Uint8 => 4,
        DType::Bool => 5,
    }
}

/// Appends `batch` to `out` (cleared first), in the request encoding.
pub fn encode_batch(batch: &Batch, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&(batch.rows as u32).to_le_bytes());
    out.extend_from_slice(&(batch.columns.len() as u32).to_le_bytes());
    for column in &batch.columns {
        out.push(dtype_code(column.dtype));
        out.extend_from_slice(&(column.row_shape.len() as u32).to_le_bytes());
        for d in &column.row_shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        match &column.data {
            ColumnData::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            ColumnData::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            ColumnData::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            ColumnData::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            ColumnData::U8(v) => out.extend_from_slice(v),
            ColumnData::Bool(v) => v.iter().for_each(|x| out.push(u8::from(*x))),
        }
    }
}

/// Reads a request's bytes back into a [`Batch`] (column names are not sent: the worker's
/// signature has them).
pub fn decode_batch(bytes: &[u8], names: &[String]) -> Result<Batch, FrameError> {
    let mut reader = Cursor { bytes, at: 0 };
    let rows = reader.u32()? as usize;
    let count = reader.u32()? as usize;
    let mut columns = Vec::with_capacity(count.min(64));
    for index in 0..count {
        let dtype = match reader.take(1)?[0] {
            0 => DType::Float32,
            1 => DType::Float64,
            2 => DType::Int64,
            3 => DType::Int32,
            4 => DType::Uint8,
            5 => DType::Bool,
            other => return Err(FrameError::Malformed(format!("dtype {other}"))),
        };
        let rank = reader.u32()? as usize;
        let mut row_shape = Vec::with_capacity(rank.min(16));
        for _ in 0..rank {
            row_shape.push(i64::from_le_bytes(reader.take(8)?.try_into().map_err(bad)?));
        }
        let per_row = row_shape.iter().try_fold(1usize, |n, d| usize::try_from(*d).ok().and_then(|d| n.checked_mul(d)));
        let values = per_row.and_then(|n| n.checked_mul(rows)).ok_or_else(|| bad("shape"))?;
        let data = match dtype {
            DType::Float32 => ColumnData::F32(chunks(reader.take(values * 4)?, f32::from_le_bytes)),
            DType::Float64 => ColumnData::F64(chunks(reader.take(values * 8)?, f64::from_le_bytes)),
            DType::Int64 => ColumnData::I64(chunks(reader.take(values * 8)?, i64::from_le_bytes)),
            DType::Int32 => ColumnData::I32(chunks(reader.take(values * 4)?, i32::from_le_bytes)),
            DType::Uint8 => ColumnData::U8(reader.take(values)?.to_vec()),
            DType::Bool => ColumnData::Bool(reader.take(values)?.iter().map(|b| *b != 0).collect()),
        };
        let name = names.get(index).cloned().unwrap_or_else(|| format!("input_{index}"));
        columns.push(Column { name, dtype, row_shape, data });
    }
    Ok(Batch { rows, columns })
}

fn bad(what: impl std::fmt::Debug) -> FrameError {
    FrameError::Malformed(format!("{what:?}"))
}

fn chunks<const N: usize, T>(bytes: &[u8], read: fn([u8; N]) -> T) -> Vec<T> {
    bytes.chunks_exact(N).map(|c| read(c.try_into().unwrap_or([0; N]))).collect()
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len()).ok_or_else(|| bad("short frame"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(bad)?))
    }
}

/// An answer frame's bytes: the predictions, or the pass's error.
pub fn encode_answer(result: &Result<Vec<Value>, String>, out: &mut Vec<u8>) {
    out.clear();
    match result {
        Ok(predictions) => {
            out.push(0);
            // Writing JSON values into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, predictions);
        }
        Err(message) => {
            out.push(1);
            out.extend_from_slice(message.as_bytes());
        }
    }
}

/// Reads an answer frame: `Ok(predictions)` or `Err(the pass's error)`; `FrameError` when the
/// frame is not an answer.
pub fn decode_answer(frame: &[u8]) -> Result<Result<Vec<Value>, String>, FrameError> {
    match frame.split_first() {
        Some((0, json)) => serde_json::from_slice(json).map(Ok).map_err(|e| FrameError::Malformed(e.to_string())),
        Some((1, text)) => Ok(Err(String::from_utf8_lossy(text).into_owned())),
        _ => Err(bad("answer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip() {
        let batch = Batch {
            rows: 2,
            columns: vec![
                Column {
                    name: "x".into(),
                    dtype: DType::Float32,
                    row_shape: vec![3],
                    data: ColumnData::F32(vec![1.0, 2.5, -3.0, 4.0, 5.0, 6.0]),
                },
                Column {
                    name: "ids".into(),
                    dtype: DType::Int64,
                    row_shape: vec![],
                    data: ColumnData::I64(vec![7, -8]),
                },
                Column {
                    name: "mask".into(),
                    dtype: DType::Bool,
                    row_shape: vec![1],
                    data: ColumnData::Bool(vec![true, false]),
                },
            ],
        };
        let mut bytes = Vec::new();
        encode_batch(&batch, &mut bytes);
        let names = vec!["x".to_owned(), "ids".to_owned(), "mask".to_owned()];
        assert_eq!(decode_batch(&bytes, &names).expect("decodes"), batch);
        assert!(decode_batch(&bytes[..bytes.len() - 1], &names).is_err(), "a short frame is refused");
    }

    #[test]
    fn frames_are_bounded_before_they_are_read() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &[b"hello", b" world"]).expect("write");
        assert_eq!(read_frame(&mut std::io::Cursor::new(&buffer), 64).expect("frame"), b"hello world");
        let huge = 0xFFFF_FFF0u32.to_le_bytes();
        match read_frame(&mut std::io::Cursor::new(&huge), 1 << 20) {
            Err(FrameError::TooLarge { size, max }) => assert_eq!((size, max), (0xFFFF_FFF0, 1 << 20)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_round_trip() {
        let mut bytes = Vec::new();
        encode_answer(&Ok(vec![serde_json::json!([1.5, "NaN"])]), &mut bytes);
        assert_eq!(decode_answer(&bytes).expect("answer"), Ok(vec![serde_json::json!([1.5, "NaN"])]));
        encode_answer(&Err("shapes differ".into()), &mut bytes);
        assert_eq!(decode_answer(&bytes).expect("answer"), Err("shapes differ".into()));
        assert!(decode_answer(b"").is_err());
    }
}
