//! A reader for GGUF files (llama.cpp's model format, versions 2 and 3): the metadata, the tensor
//! directory, and tensors dequantised to f32.
//!
//! Layout (little-endian): `"GGUF"`, version `u32`, tensor count `u64`, metadata count `u64`;
//! each metadata entry a key (`u64` length + UTF-8), a value type `u32` and the value; each tensor
//! a name, `n_dims: u32`, `n_dims` × `u64` sizes (fastest-varying first), a type `u32` and an
//! offset `u64` relative to the data section, which starts at the next multiple of
//! `general.alignment` (default 32) after the directory.
//!
//! Dequantised types: F32, F16, BF16, Q8_0 (blocks of 32: f16 scale `d`, 32 × i8; `x = d·q`),
//! Q4_0 (f16 `d`, 16 bytes of nibbles; `x = d·(q − 8)`) and Q4_1 (f16 `d`, f16 `m`, 16 bytes of
//! nibbles; `x = d·q + m`); in both 4-bit types the low nibbles are elements 0–15 of the block
//! and the high nibbles elements 16–31. Any other type is an error naming the tensor and the
//! type. Checked against the `gguf` package's own dequantisation (`tests/gguf.rs`).
//!
//! Shapes are returned row-major (the reverse of GGUF's order), so a `[out, in]` matrix of a
//! PyTorch checkpoint reads back as `[out, in]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{ModelError, Result};
use crate::weights::HostTensor;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// An unsigned integer (u8, u16, u32, u64).
    Uint(u64),
    /// A signed integer (i8, i16, i32, i64).
    Int(i64),
    /// A float (f32, f64).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Float(v) => Some(v),
            Self::Uint(v) => Some(v as f64),
            Self::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's directory entry.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: String,
    /// Row-major shape (GGUF's sizes reversed).
    pub shape: Vec<usize>,
    /// The GGML type id.
    pub ggml_type: u32,
    /// Byte offset of the data in the file.
    pub offset: usize,
}

impl TensorInfo {
    /// The GGML type's name (`Q4_1`, …).
    pub fn type_name(&self) -> String {
        type_name(self.ggml_type)
    }

    fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The name of GGML type `t`.
pub fn type_name(t: u32) -> String {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
        "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
        "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES
        .get(t as usize)
        .map_or_else(|| format!("type {t}"), |s| s.to_string())
}

/// Elements per block and bytes per block of the types this reader dequantises.
fn block_layout(t: u32) -> Option<(usize, usize)> {
    match t {
        0 => Some((1, 4)),   // F32
        1 => Some((1, 2)),   // F16
        30 => Some((1, 2)),  // BF16
        2 => Some((32, 18)), // Q4_0
        3 => Some((32, 20)), // Q4_1
        8 => Some((32, 34)), // Q8_0
        _ => None,
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order of keys (sorted by key here).
    pub metadata: BTreeMap<String, MetaValue>,
    /// The tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(format_err(
                self.path,
                format!(
                    "truncated: {what} needs {n} bytes at offset {} but the file has {}",
                    self.pos,
                    self.bytes.len()
                ),
            )),
        }
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        // Every element takes at least one byte: a longer count is a corrupt file.
        if n > (self.bytes.len() - self.pos) as u64 {
            return Err(format_err(
                self.path,
                format!(
                    "{what}: length {n} at offset {} exceeds the file",
                    self.pos - 8
                ),
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let at = self.pos;
        String::from_utf8(self.take(n, what)?.to_vec())
            .map_err(|_| format_err(self.path, format!("{what} at offset {at} is not UTF-8")))
    }

    fn value(&mut self, t: u32, key: &str, depth: usize) -> Result<MetaValue> {
        let what = &format!("metadata {key:?}");
        Ok(match t {
            0 => MetaValue::Uint(u64::from(self.take(1, what)?[0])),
            1 => MetaValue::Int(i64::from(self.take(1, what)?[0] as i8)),
            2 => MetaValue::Uint(u64::from(u16::from_le_bytes(
                self.take(2, what)?.try_into().expect("2 bytes"),
            ))),
            3 => MetaValue::Int(i64::from(i16::from_le_bytes(
                self.take(2, what)?.try_into().expect("2 bytes"),
            ))),
            4 => MetaValue::Uint(u64::from(self.u32(what)?)),
            5 => MetaValue::Int(i64::from(self.u32(what)? as i32)),
            6 => MetaValue::Float(f64::from(f32::from_bits(self.u32(what)?))),
            7 => MetaValue::Bool(self.take(1, what)?[0] != 0),
            8 => MetaValue::String(self.string(what)?),
            9 if depth < 4 => {
                let inner = self.u32(what)?;
                let n = self.len(what)?;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::Uint(self.u64(what)?),
            11 => MetaValue::Int(self.u64(what)? as i64),
            12 => MetaValue::Float(f64::from_bits(self.u64(what)?)),
            _ => {
                return Err(format_err(
                    self.path,
                    format!("{what}: unknown value type {t} at offset {}", self.pos - 4),
                ));
            }
        })
    }
}

fn format_err(path: &Path, message: String) -> ModelError {
    ModelError::Format {
        path: path.to_path_buf(),
        message,
    }
}

impl GgufFile {
    /// Read and check a GGUF file: header, metadata, tensor directory, and that every tensor's
    /// data lies inside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(crate::error::io_err(path))?;
        Self::from_bytes(path, bytes)
    }

    /// Parse `bytes` as if read from `path`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor {
            bytes: &bytes,
            pos: 0,
            path,
        };
        if c.take(4, "the magic number")? != b"GGUF" {
            return Err(format_err(
                path,
                "not a GGUF file (no \"GGUF\" magic)".into(),
            ));
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(format_err(
                path,
                format!("GGUF version {version} is not supported (2 and 3 are)"),
            ));
        }
        let n_tensors = c.len("the tensor count")?;
        let n_kv = c.len("the metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("a metadata key")?;
            let t = c.u32("a metadata type")?;
            let value = c.value(t, &key, 0)?;
            metadata.insert(key, value);
        }
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("a tensor name")?;
            let what = format!("tensor {name:?}");
            let n_dims = c.u32(&what)? as usize;
            if n_dims > 8 {
                return Err(format_err(path, format!("{what}: {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64(&what)? as usize);
            }
            dims.reverse();
            let ggml_type = c.u32(&what)?;
            let offset = c.u64(&what)? as usize;
            infos.push((name, dims, ggml_type, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(MetaValue::as_u64)
            .unwrap_or(32)
            .max(1) as usize;
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, shape, ggml_type, offset) in infos {
            let info = TensorInfo {
                name,
                shape,
                ggml_type,
                offset: data_start.saturating_add(offset),
            };
            if let Some((block, size)) = block_layout(ggml_type) {
                let numel = info.numel();
                if !numel.is_multiple_of(block) {
                    return Err(format_err(
                        path,
                        format!(
                            "tensor {:?}: {numel} values are not whole {} blocks of {block}",
                            info.name,
                            info.type_name()
                        ),
                    ));
                }
                let end = info.offset.saturating_add(numel / block * size);
                if end > bytes.len() {
                    return Err(format_err(
                        path,
                        format!(
                            "truncated: tensor {:?} ({}, shape {:?}) ends at byte {end} but the \
                             file has {}",
                            info.name,
                            info.type_name(),
                            info.shape,
                            bytes.len()
                        ),
                    ));
                }
            }
            tensors.push(info);
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// The directory entry of tensor `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Tensor `name` dequantised to f32, row-major.
    pub fn tensor(&self, name: &str) -> Result<HostTensor> {
        let info = self.info(name).ok_or_else(|| ModelError::MissingTensor {
            source_file: self.path.clone(),
            key: name.to_string(),
            expected: Vec::new(),
        })?;
        let Some((block, size)) = block_layout(info.ggml_type) else {
            return Err(format_err(
                &self.path,
                format!(
                    "tensor {name:?}: quantisation type {} is not supported (F32, F16, BF16, \
                     Q8_0, Q4_0 and Q4_1 are)",
                    info.type_name()
                ),
            ));
        };
        let numel = info.numel();
        let raw = &self.bytes[info.offset..info.offset + numel / block * size];
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut out = Vec::with_capacity(numel);
        match info.ggml_type {
            0 => out.extend(
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            ),
            1 => out.extend(raw.chunks_exact(2).map(half)),
            30 => out.extend(
                raw.chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            8 => {
                for b in raw.chunks_exact(size) {
                    let d = half(&b[..2]);
                    out.extend(b[2..].iter().map(|&q| d * f32::from(q as i8)));
                }
            }
            2 | 3 => {
                let header = if info.ggml_type == 2 { 2 } else { 4 };
                for b in raw.chunks_exact(size) {
                    let d = half(&b[..2]);
                    let (m, offset) = if info.ggml_type == 2 {
                        (0.0, 8.0)
                    } else {
                        (half(&b[2..4]), 0.0)
                    };
                    let nibbles = &b[header..];
                    let value = |q: u8| d * (f32::from(q) - offset) + m;
                    out.extend(nibbles.iter().map(|&q| value(q & 0x0f)));
                    out.extend(nibbles.iter().map(|&q| value(q >> 4)));
                }
            }
            _ => unreachable!("block_layout lists the supported types"),
        }
        Ok(HostTensor::new(info.shape.clone(), out))
    }
}

impl GgufFile {
    /// The byte-level BPE tokenizer stored in the metadata (`tokenizer.ggml.model = "gpt2"`),
    /// rebuilt as a `tokenizers` pipeline: the vocabulary (`tokenizer.ggml.tokens`, ids in
    /// order), the merges (`tokenizer.ggml.merges`), a pre-tokenizer that splits digits one by
    /// one and then applies byte-level splitting without a prefix space, a byte-level decoder,
    /// and the control tokens (`tokenizer.ggml.token_type` 3) as special tokens and user-defined
    /// ones (type 4) as added tokens. No BOS is added (SmolLM2's `add_bos_token` is false; the
    /// caller adds one where a model wants it). Checked against transformers' own GGUF
    /// tokenizer conversion (`tests/gguf.rs`).
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer> {
        use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
        use tokenizers::models::bpe::{BPE, Vocab};
        use tokenizers::pre_tokenizers::PreTokenizerWrapper;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::digits::Digits;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::{AddedToken, Tokenizer};

        let err = |m: String| format_err(&self.path, m);
        let model = self
            .meta("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| err("no tokenizer.ggml.model in the metadata".into()))?;
        if model != "gpt2" {
            return Err(err(format!(
                "tokenizer.ggml.model = {model:?}: only byte-level BPE (\"gpt2\") is supported"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            self.meta(key)
                .and_then(MetaValue::as_array)
                .ok_or_else(|| err(format!("no {key} array in the metadata")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| err(format!("{key}: not all strings")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let mut vocab = Vocab::default();
        for (id, t) in tokens.iter().enumerate() {
            vocab.insert(t.to_string(), id as u32);
        }
        let mut merges = Vec::new();
        for (i, m) in strings("tokenizer.ggml.merges")?.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| err(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space")))?;
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| err(format!("cannot build the BPE model: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        if let Some(types) = self
            .meta("tokenizer.ggml.token_type")
            .and_then(MetaValue::as_array)
        {
            let mut special = Vec::new();
            let mut added = Vec::new();
            for (id, t) in types.iter().enumerate() {
                match t.as_u64() {
                    Some(3) => special.push(AddedToken::from(tokens[id].to_string(), true)),
                    Some(4) => added.push(AddedToken::from(tokens[id].to_string(), false)),
                    _ => {}
                }
            }
            tokenizer.add_special_tokens(&special);
            tokenizer.add_tokens(&added);
        }
        Ok(tokenizer)
    }
}

/// The HF name of a llama.cpp tensor name (Llama-family layout), or `None` for a name this
/// mapping does not know.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Undo llama.cpp's row permutation of a q or k projection (`[out, in]`, `n_heads` heads): the
/// converter orders each head's rows for interleaved (GPT-J) RoPE; HF's `rotate_half` RoPE needs
/// the halves order back. Row `h·d + 2i + j` (d = out / n_heads, j ∈ {0, 1}) of the GGUF tensor
/// is row `h·d + j·d/2 + i` of the HF one.
///
/// # Panics
/// If the tensor is not 2-D or its rows do not split into `n_heads` heads of even size.
pub fn unpermute_rows(t: &HostTensor, n_heads: usize) -> HostTensor {
    let (out, inp) = (t.shape[0], t.shape[1]);
    assert!(
        t.shape.len() == 2 && out % (2 * n_heads) == 0,
        "cannot un-permute {:?} for {n_heads} heads",
        t.shape
    );
    let d = out / n_heads;
    let mut data = vec![0f32; out * inp];
    for h in 0..n_heads {
        for i in 0..d / 2 {
            for j in 0..2 {
                let src = h * d + 2 * i + j;
                let dst = h * d + j * d / 2 + i;
                data[dst * inp..(dst + 1) * inp]
                    .copy_from_slice(&t.data[src * inp..(src + 1) * inp]);
            }
        }
    }
    HostTensor::new(t.shape.clone(), data)
}

impl GgufFile {
    /// A Llama-family metadata integer (`<arch>.<key>`), or an error naming the key.
    pub fn arch_u64(&self, key: &str) -> Result<u64> {
        let arch = self
            .meta("general.architecture")
            .and_then(MetaValue::as_str)
            .unwrap_or("llama");
        let full = format!("{arch}.{key}");
        self.meta(&full)
            .and_then(MetaValue::as_u64)
            .ok_or_else(|| ModelError::Config {
                path: self.path.clone(),
                key: full,
                message: "missing or not an integer".into(),
            })
    }

    /// Every tensor dequantised under its HF name, with q/k rows un-permuted
    /// ([`unpermute_rows`], heads from `<arch>.attention.head_count(_kv)`). A tensor name the
    /// mapping does not know is an error naming it.
    pub fn hf_tensors(&self) -> Result<Vec<(String, HostTensor)>> {
        let n_heads = self.arch_u64("attention.head_count")? as usize;
        let n_kv = self
            .arch_u64("attention.head_count_kv")
            .map_or(n_heads, |v| v as usize);
        let mut out = Vec::with_capacity(self.tensors.len());
        for info in &self.tensors {
            let name = hf_name(&info.name).ok_or_else(|| {
                format_err(
                    &self.path,
                    format!("tensor {:?} has no known HF name (Llama layout)", info.name),
                )
            })?;
            let mut t = self.tensor(&info.name)?;
            if info.name.ends_with("attn_q.weight") {
                t = unpermute_rows(&t, n_heads);
            } else if info.name.ends_with("attn_k.weight") {
                t = unpermute_rows(&t, n_kv);
            }
            out.push((name, t));
        }
        Ok(out)
    }
}
