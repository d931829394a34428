//! TensorBoard scalar logs: a run's `events.out.tfevents.*` file, which `tensorboard --logdir
//! runs/` reads (one run per cell folder, so a whole grid's learning curves side by side).
//!
//! The file is what TensorFlow's `EventFileWriter` writes: TFRecord framing (the length as a
//! little-endian u64 and its masked CRC-32C, the bytes, their masked CRC-32C) around `Event`
//! protobufs, the first one the `brain.Event:2` file version, then one `Summary` with a
//! `simple_value` per scalar. A test holds it byte for byte to the file TensorBoard's own
//! `RecordWriter` writes from the same events.
//!
//! Written by hand rather than with a crate: the two on crates.io (`tboard`, `tensorboard-rs`)
//! need `protoc` at build time or an old `image` and `protobuf` 2; the format is these few
//! fields.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

/// A TensorBoard event file being written.
pub struct EventWriter {
    out: BufWriter<File>,
    path: PathBuf,
}

impl EventWriter {
    /// A new event file in `dir`, named as TensorBoard names them
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.<n>`), starting with the file version.
    pub fn create(dir: &Path) -> Result<Self> {
        let now = wall_time();
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty() && !h.contains(['/', '\\']))
            .unwrap_or_else(|| "localhost".into());
        // A resumed run writes a second file; the counter keeps two in one second apart.
        let mut n = 0;
        let path = loop {
            let name = format!(
                "events.out.tfevents.{:010}.{host}.{}.{n}",
                now as u64,
                std::process::id()
            );
            if !dir.join(&name).exists() {
                break dir.join(name);
            }
            n += 1;
        };
        let file =
            File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        let mut writer = Self {
            out: BufWriter::new(file),
            path,
        };
        writer.write_record(&file_version_event(now))?;
        writer.flush()?;
        Ok(writer)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Scalars `(tag, value)` at `step`, stamped now.
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        self.write_record(&scalars_event(wall_time(), step, values))
    }

    /// Write what is buffered (TensorBoard shows what reached the file).
    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn write_record(&mut self, event: &[u8]) -> Result<()> {
        self.out
            .write_all(&record(event))
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// One scalar read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The step it was written at.
    pub step: u64,
    /// Its tag (`train/loss`).
    pub tag: String,
    /// Its value (TensorBoard keeps scalars as f32).
    pub value: f32,
}

/// The scalars (`simple_value`s) of an event file, in file order, every record's CRCs checked:
/// what TensorBoard would show, for tests and for scripts that want the numbers.
pub fn read_scalars(path: &Path) -> Result<Vec<Scalar>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let bad = |at: usize, what: &str| anyhow::anyhow!("{}, byte {at}: {what}", path.display());
    let mut scalars = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let header = bytes
            .get(at..at + 12)
            .ok_or_else(|| bad(at, "a cut record"))?;
        let len = u64::from_le_bytes(header[..8].try_into().expect("8 bytes")) as usize;
        if masked_crc(&header[..8]).to_le_bytes() != header[8..12] {
            return Err(bad(at, "the length's CRC does not match"));
        }
        let end = at + 12 + len;
        let data = bytes
            .get(at + 12..end)
            .ok_or_else(|| bad(at, "a cut record"))?;
        let crc = bytes
            .get(end..end + 4)
            .ok_or_else(|| bad(at, "a cut record"))?;
        if masked_crc(data).to_le_bytes() != crc {
            return Err(bad(at, "the event's CRC does not match"));
        }
        let event = fields(data).ok_or_else(|| bad(at, "not an Event protobuf"))?;
        let step = event.iter().find(|f| f.0 == 2).map_or(0, |f| f.1.varint());
        for summary in event.iter().filter(|f| f.0 == 5) {
            let values = fields(summary.1.bytes()).ok_or_else(|| bad(at, "a bad Summary"))?;
            for value in values.iter().filter(|f| f.0 == 1) {
                let v = fields(value.1.bytes()).ok_or_else(|| bad(at, "a bad Summary.Value"))?;
                let tag = v.iter().find(|f| f.0 == 1).map(|f| f.1.bytes());
                let simple = v.iter().find(|f| f.0 == 2).map(|f| f.1.fixed32());
                if let (Some(tag), Some(value)) = (tag, simple) {
                    scalars.push(Scalar {
                        step,
                        tag: String::from_utf8_lossy(tag).into_owned(),
                        value: f32::from_bits(value),
                    });
                }
            }
        }
        at = end + 4;
    }
    Ok(scalars)
}

/// A protobuf field's value, by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    fn varint(&self) -> u64 {
        if let Wire::Varint(v) = self { *v } else { 0 }
    }
    fn bytes(&self) -> &'a [u8] {
        if let Wire::Bytes(b) = self { b } else { &[] }
    }
    fn fixed32(&self) -> u32 {
        if let Wire::Fixed32(v) = self { *v } else { 0 }
    }
}

/// The top-level fields of a protobuf message (`None` when it does not parse).
fn fields(mut data: &[u8]) -> Option<Vec<(u64, Wire<'_>)>> {
    fn read_varint(data: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = data.split_first()?;
            *data = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !data.is_empty() {
        let key = read_varint(&mut data)?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(&mut data)?),
            1 => {
                data = data.get(8..)?;
                Wire::Fixed64
            }
            2 => {
                let len = read_varint(&mut data)? as usize;
                let (b, rest) = (data.get(..len)?, data.get(len..)?);
                data = rest;
                Wire::Bytes(b)
            }
            5 => {
                let v = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
                data = &data[4..];
                Wire::Fixed32(v)
            }
            _ => return None,
        };
        out.push((key >> 3, value));
    }
    Some(out)
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The first event of a file: `Event { wall_time, file_version: "brain.Event:2" }`.
fn file_version_event(wall_time: f64) -> Vec<u8> {
    let mut e = Vec::new();
    double_field(&mut e, 1, wall_time);
    bytes_field(&mut e, 3, b"brain.Event:2");
    e
}

/// `Event { wall_time, step, summary: Summary { value: [Value { tag, simple_value }...] } }`.
fn scalars_event(wall_time: f64, step: u64, values: &[(&str, f64)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, value) in values {
        let mut v = Vec::new();
        bytes_field(&mut v, 1, tag.as_bytes());
        // float simple_value = 2 (wire type 5, 32-bit).
        v.push((2 << 3) | 5);
        v.extend_from_slice(&(*value as f32).to_le_bytes());
        bytes_field(&mut summary, 1, &v);
    }
    let mut e = Vec::new();
    double_field(&mut e, 1, wall_time);
    if step != 0 {
        // int64 step = 2 (varint); proto3 leaves a zero out.
        e.push(2 << 3);
        varint(&mut e, step);
    }
    bytes_field(&mut e, 5, &summary);
    e
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2): strings, bytes, messages.
fn bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push((field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A double field (wire type 1); proto3 leaves a zero out.
fn double_field(out: &mut Vec<u8>, field: u8, v: f64) {
    if v != 0.0 {
        out.push((field << 3) | 1);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// One TFRecord: length, its masked CRC, the data, its masked CRC.
fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut r = Vec::with_capacity(data.len() + 16);
    r.extend_from_slice(&len);
    r.extend_from_slice(&masked_crc(&len).to_le_bytes());
    r.extend_from_slice(data);
    r.extend_from_slice(&masked_crc(data).to_le_bytes());
    r
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

/// CRC-32C (Castagnoli), bit-reflected, as TFRecord uses it.
fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, entry) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_has_its_check_value() {
        // The CRC catalogue's check value of CRC-32/ISCSI.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    /// The same events as `tests/fixtures/tensorboard/make_events.py` writes with TensorBoard's
    /// own `RecordWriter` and protobuf classes.
    #[test]
    fn events_match_tensorboards_own_writer_byte_for_byte() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tensorboard/events.out.tfevents.fixture");
        let want = std::fs::read(&fixture).unwrap();
        let mut got = record(&file_version_event(1_700_000_000.25));
        got.extend(record(&scalars_event(
            1_700_000_001.5,
            0,
            &[("train/loss", 0.6875), ("train/learning_rate", 2e-5)],
        )));
        got.extend(record(&scalars_event(
            1_700_000_002.75,
            300,
            &[("eval/accuracy", 0.8125), ("train/loss", -1.5)],
        )));
        assert_eq!(got, want);
    }

    #[test]
    fn the_fixtures_scalars_read_back_and_a_flipped_byte_is_named() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tensorboard/events.out.tfevents.fixture");
        let scalars = read_scalars(&fixture).unwrap();
        let got: Vec<(u64, &str, f32)> = scalars
            .iter()
            .map(|s| (s.step, s.tag.as_str(), s.value))
            .collect();
        assert_eq!(
            got,
            [
                (0, "train/loss", 0.6875),
                (0, "train/learning_rate", 2e-5),
                (300, "eval/accuracy", 0.8125),
                (300, "train/loss", -1.5),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = std::fs::read(&fixture).unwrap();
        bytes[60] ^= 1;
        let broken = dir.path().join("events.out.tfevents.broken");
        std::fs::write(&broken, bytes).unwrap();
        let err = read_scalars(&broken).unwrap_err().to_string();
        assert!(err.contains("CRC does not match"), "{err}");
    }
}
