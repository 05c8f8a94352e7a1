//! TFRecord files of `tf.train.Example` protos, the `TF_RECORD` (and, gzipped, `TF_RECORD_GZIP`)
//! input of ML Engine's batch prediction.
//!
//! A TFRecord file is a sequence of records, each `length: u64 LE`, `masked CRC32C of the length
//! bytes: u32 LE`, `data[length]`, `masked CRC32C of the data: u32 LE`. A header whose CRC fails
//! leaves no way to find the next record, so it ends the file with an error; a record whose data
//! CRC fails is skipped and counted like a bad line. An Example is parsed from the protobuf wire
//! format by hand (three nested messages and a map; no generated code): its features, each a
//! list of floats, int64s or byte strings.

use std::io::{self, BufRead, Read};

/// The CRC-32C (Castagnoli) lookup tables for slicing by 8, built at compile time.
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut t = 1;
    while t < 8 {
        let mut i = 0;
        while i < 256 {
            let previous = tables[t - 1][i];
            tables[t][i] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            i += 1;
        }
        t += 1;
    }
    tables
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let low = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(low & 0xFF) as usize]
            ^ t[6][((low >> 8) & 0xFF) as usize]
            ^ t[5][((low >> 16) & 0xFF) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][c[4] as usize]
            ^ t[2][c[5] as usize]
            ^ t[1][c[6] as usize]
            ^ t[0][c[7] as usize];
    }
    for byte in chunks.remainder() {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(*byte)) & 0xFF) as usize];
    }
    !crc
}

/// The CRC TFRecord stores: CRC-32C rotated right by 15 bits plus a constant.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    crc32c(data).rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// Whether `header` (at least 12 bytes) is a TFRecord header: a length and its masked CRC.
pub fn is_header(header: &[u8]) -> bool {
    header.len() >= 12
        && masked_crc32c(&header[..8]) == u32::from_le_bytes([header[8], header[9], header[10], header[11]])
}

/// The most one record may hold; a longer one is taken for a corrupt header.
pub const MAX_RECORD: u64 = 1 << 30;

/// Reads the records of one TFRecord stream.
pub struct Records<R> {
    reader: R,
}

/// One record read by [`Records::next_into`].
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Its data was appended, and its CRC matched.
    Intact,
    /// Its data was appended, but its CRC did not match.
    Corrupt,
}

impl<R: BufRead> Records<R> {
    pub fn new(reader: R) -> Self {
        Self { reader }
    }

    /// Appends the next record's data to `out`. `None` at the end of the stream; an error for a
    /// stream cut inside a record, a header whose CRC fails or an unreadable stream.
    pub fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<Option<Record>> {
        let mut header = [0u8; 12];
        if self.reader.fill_buf()?.is_empty() {
            return Ok(None);
        }
        self.reader.read_exact(&mut header).map_err(cut)?;
        if !is_header(&header) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a TFRecord header's CRC does not match its length",
            ));
        }
        let length = u64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        if length > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a TFRecord of {length} bytes is too long"),
            ));
        }
        let start = out.len();
        let taken = (&mut self.reader).take(length).read_to_end(out)?;
        let mut crc = [0u8; 4];
        if taken as u64 != length {
            return Err(cut(io::ErrorKind::UnexpectedEof.into()));
        }
        self.reader.read_exact(&mut crc).map_err(cut)?;
        Ok(Some(if masked_crc32c(&out[start..]) == u32::from_le_bytes(crc) { Record::Intact } else { Record::Corrupt }))
    }
}

fn cut(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "the file ends inside a TFRecord")
    } else {
        error
    }
}

/// The values of one feature of an Example.
#[derive(Clone, Debug, PartialEq)]
pub enum Feature<'a> {
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Bytes(Vec<&'a [u8]>),
}

/// Why a record is not a `tf.train.Example`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("The record is not a tf.train.Example: {0}")]
pub struct ExampleError(&'static str);

/// The features of a serialized `tf.train.Example`, in the order they are stored.
pub fn parse_example(data: &[u8]) -> Result<Vec<(&str, Feature<'_>)>, ExampleError> {
    let mut features = Vec::new();
    // Example { Features features = 1; }
    for field in Fields(data) {
        let (number, value) = field?;
        let Value::Bytes(message) = value else { continue };
        if number != 1 {
            continue;
        }
        // Features { map<string, Feature> feature = 1; }
        for entry in Fields(message) {
            let (number, value) = entry?;
            let Value::Bytes(entry) = value else { continue };
            if number == 1 {
                features.push(map_entry(entry)?);
            }
        }
    }
    Ok(features)
}

/// One `feature` map entry: `key = 1` (string), `value = 2` (Feature).
fn map_entry(entry: &[u8]) -> Result<(&str, Feature<'_>), ExampleError> {
    let mut name = "";
    let mut feature = Feature::Floats(Vec::new());
    for field in Fields(entry) {
        match field? {
            (1, Value::Bytes(key)) => {
                name = std::str::from_utf8(key).map_err(|_| ExampleError("a feature name is not UTF-8"))?
            }
            (2, Value::Bytes(value)) => feature = feature_of(value)?,
            _ => {}
        }
    }
    Ok((name, feature))
}

/// `Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }`,
/// each list `value = 1`, packed or not.
fn feature_of(message: &[u8]) -> Result<Feature<'_>, ExampleError> {
    let mut feature = Feature::Floats(Vec::new());
    for field in Fields(message) {
        let (kind, Value::Bytes(list)) = field? else { continue };
        feature = match kind {
            1 => {
                let mut values = Vec::new();
                for item in Fields(list) {
                    if let (1, Value::Bytes(bytes)) = item? {
                        values.push(bytes);
                    }
                }
                Feature::Bytes(values)
            }
            2 => {
                let mut values = Vec::new();
                for item in Fields(list) {
                    match item? {
                        (1, Value::Bytes(packed)) => {
                            if packed.len() % 4 != 0 {
                                return Err(ExampleError("a packed float list is not a whole number of floats"));
                            }
                            values.reserve(packed.len() / 4);
                            values.extend(packed.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
                        }
                        (1, Value::Fixed32(bits)) => values.push(f32::from_bits(bits)),
                        _ => {}
                    }
                }
                Feature::Floats(values)
            }
            3 => {
                let mut values = Vec::new();
                for item in Fields(list) {
                    match item? {
                        (1, Value::Bytes(mut packed)) => {
                            while !packed.is_empty() {
                                values.push(varint(&mut packed)? as i64);
                            }
                        }
                        (1, Value::Varint(v)) => values.push(v as i64),
                        _ => {}
                    }
                }
                Feature::Ints(values)
            }
            _ => continue,
        };
    }
    Ok(feature)
}

/// A field's value by wire type.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one protobuf message, in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), ExampleError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(self.field())
    }
}

impl<'a> Fields<'a> {
    fn field(&mut self) -> Result<(u64, Value<'a>), ExampleError> {
        let key = varint(&mut self.0)?;
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.0)?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let len = usize::try_from(varint(&mut self.0)?).map_err(|_| ExampleError("a length is too large"))?;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return Err(ExampleError("an unknown wire type")),
        };
        Ok((key >> 3, value))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ExampleError> {
        if len > self.0.len() {
            return Err(ExampleError("a field runs past the end of its message"));
        }
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(taken)
    }
}

fn varint(bytes: &mut &[u8]) -> Result<u64, ExampleError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(ExampleError("a number runs past the end of its message"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(ExampleError("a number is longer than ten bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_value_and_tfrecord_masks_it() {
        // The standard check value of CRC-32C, and a 1-byte remainder past the 8-byte slices.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        assert_eq!(masked_crc32c(b""), 0xA282_EAD8);
    }

    /// A record as TensorFlow's writer frames it.
    fn frame(data: &[u8]) -> Vec<u8> {
        let mut out = (data.len() as u64).to_le_bytes().to_vec();
        out.extend(masked_crc32c(&out[..8]).to_le_bytes());
        out.extend(data);
        out.extend(masked_crc32c(data).to_le_bytes());
        out
    }

    #[test]
    fn records_are_read_checked_and_a_bad_header_ends_the_file() {
        let mut file = frame(b"first");
        let mut corrupt = frame(b"second");
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        file.extend(corrupt);
        let mut records = Records::new(&file[..]);
        let mut out = Vec::new();
        assert_eq!(records.next_into(&mut out).expect("read"), Some(Record::Intact));
        assert_eq!(records.next_into(&mut out).expect("read"), Some(Record::Corrupt));
        assert_eq!(out, b"firstsecond");
        assert_eq!(records.next_into(&mut out).expect("end"), None);

        let mut bad = frame(b"x");
        bad[0] ^= 1;
        assert!(Records::new(&bad[..]).next_into(&mut Vec::new()).is_err());
        let cut = &frame(b"abcdef")[..15];
        assert!(Records::new(cut).next_into(&mut Vec::new()).is_err());
    }

    #[test]
    fn examples_give_their_float_int_and_bytes_features() {
        // Example{features{feature{"x": float_list{1.5, -2}}, feature{"n": int64_list{3, 300}},
        // feature{"b": bytes_list{"hi"}}}}, as protobuf writes it (packed lists).
        let floats: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|f| f.to_le_bytes()).collect();
        let float_list = [&[0x0A, 8][..], &floats].concat();
        let x = entry(b"x", &[&[0x12, float_list.len() as u8][..], &float_list].concat());
        let int_list = [0x0A, 3, 3, 0xAC, 0x02];
        let n = entry(b"n", &[&[0x1A, int_list.len() as u8][..], &int_list].concat());
        let bytes_list = [0x0A, 2, b'h', b'i'];
        let b = entry(b"b", &[&[0x0A, bytes_list.len() as u8][..], &bytes_list].concat());
        let features: Vec<u8> = [x, n, b].concat();
        let example = [&[0x0A, features.len() as u8][..], &features].concat();
        let parsed = parse_example(&example).expect("an Example");
        assert_eq!(
            parsed,
            vec![
                ("x", Feature::Floats(vec![1.5, -2.0])),
                ("n", Feature::Ints(vec![3, 300])),
                ("b", Feature::Bytes(vec![&b"hi"[..]])),
            ]
        );
        assert!(parse_example(&[0x0A, 9, 1]).is_err());
    }

    fn entry(name: &[u8], feature: &[u8]) -> Vec<u8> {
        let body = [&[0x0A, name.len() as u8][..], name, &[0x12, feature.len() as u8], feature].concat();
        [&[0x0A, body.len() as u8][..], &body].concat()
    }
}
