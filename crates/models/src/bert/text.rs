//! Tokenizers for the encoders: HF `tokenizer.json`, or a WordPiece tokenizer built from
//! `vocab.txt` (+ `tokenizer_config.json`) for checkpoints that ship only that.
//!
//! Any fixed padding stored in `tokenizer.json` is turned off (all-MiniLM-L6-v2's pads every
//! text to 128 tokens): batches are padded to their longest text, with an attention mask.
//! Texts longer than the model's positions are truncated to `max_len` tokens.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, EncodeInput, Tokenizer, TruncationParams};

use crate::bert::EncoderInput;
use crate::bert::config::EncoderConfig;
use crate::error::{ModelError, Result};

/// A tokenizer checked against a model config.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    pad_id: u32,
    positions: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .field("pad_id", &self.pad_id)
            .finish()
    }
}

/// Token ids of a batch before padding.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedBatch {
    /// Ids per text.
    pub ids: Vec<Vec<u32>>,
    /// Segment ids per text.
    pub type_ids: Vec<Vec<u32>>,
    /// The id used for padding.
    pub pad_id: u32,
}

impl TextTokenizer {
    /// Load the tokenizer of a checkpoint directory (`tokenizer.json`, else `vocab.txt`), check it
    /// against `config`, and truncate to the model's positions.
    pub fn from_dir(dir: impl AsRef<Path>, config: &EncoderConfig) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        let vocab = dir.join("vocab.txt");
        let (inner, path) = if json.is_file() {
            let tok = Tokenizer::from_file(&json).map_err(|e| tok_err(&json, e.to_string()))?;
            (tok, json)
        } else if vocab.is_file() {
            (wordpiece_from_vocab(dir, &vocab)?, vocab)
        } else {
            return Err(tok_err(
                dir,
                "neither tokenizer.json nor vocab.txt found".into(),
            ));
        };
        Self::new(inner, path, config)
    }

    fn new(mut inner: Tokenizer, path: PathBuf, config: &EncoderConfig) -> Result<Self> {
        let size = inner.get_vocab_size(true);
        if size > config.vocab_size {
            return Err(tok_err(
                &path,
                format!(
                    "the tokenizer has {size} tokens but the model's vocab_size is {}",
                    config.vocab_size
                ),
            ));
        }
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: config.max_input_len(),
                ..Default::default()
            }))
            .map_err(|e| tok_err(&path, e.to_string()))?;
        Ok(Self {
            inner,
            path,
            pad_id: config.pad_token_id as u32,
            positions: config.max_input_len(),
        })
    }

    /// Truncate to at most `max_len` tokens (special tokens included), or to the model's
    /// positions if that is smaller. Pairs are truncated longest-first, as HF does.
    pub fn with_max_len(mut self, max_len: usize) -> Result<Self> {
        if max_len < 3 {
            return Err(tok_err(
                &self.path,
                format!("max_len must be at least 3 (CLS, a token, SEP), got {max_len}"),
            ));
        }
        let max_length = max_len.min(self.positions);
        self.inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| tok_err(&self.path, e.to_string()))?;
        Ok(self)
    }

    /// The longest tokenized length this tokenizer produces.
    pub fn truncation(&self) -> usize {
        self.inner
            .get_truncation()
            .map_or(self.positions, |t| t.max_length)
    }

    /// The padding id (the model config's `pad_token_id`).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The underlying HF tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenize single texts. An empty text is an error naming its position.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<EncodedBatch> {
        self.encode(
            texts
                .iter()
                .map(|t| EncodeInput::Single((*t).into()))
                .collect(),
            |i| texts[i].trim().is_empty(),
        )
    }

    /// Tokenize text pairs (`[CLS] a [SEP] b [SEP]`).
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<EncodedBatch> {
        self.encode(
            pairs
                .iter()
                .map(|(a, b)| EncodeInput::Dual((*a).into(), (*b).into()))
                .collect(),
            |i| pairs[i].0.trim().is_empty() || pairs[i].1.trim().is_empty(),
        )
    }

    fn encode(
        &self,
        inputs: Vec<EncodeInput<'_>>,
        is_empty: impl Fn(usize) -> bool,
    ) -> Result<EncodedBatch> {
        if let Some(index) = (0..inputs.len()).find(|i| is_empty(*i)) {
            return Err(ModelError::Input {
                index,
                message: "the text is empty".into(),
            });
        }
        let mut batch = EncodedBatch {
            ids: Vec::new(),
            type_ids: Vec::new(),
            pad_id: self.pad_id,
        };
        for (index, input) in inputs.into_iter().enumerate() {
            let enc = self
                .inner
                .encode(input, true)
                .map_err(|e| ModelError::Input {
                    index,
                    message: e.to_string(),
                })?;
            batch.ids.push(enc.get_ids().to_vec());
            batch.type_ids.push(enc.get_type_ids().to_vec());
        }
        Ok(batch)
    }
}

impl EncodedBatch {
    /// Length of the longest sequence.
    pub fn max_len(&self) -> usize {
        self.ids.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Pad to the longest sequence and build the model input.
    pub fn to_input<B: Backend>(&self, device: &B::Device) -> EncoderInput<B> {
        let (batch, seq) = (self.ids.len(), self.max_len());
        let mut ids = vec![self.pad_id as i64; batch * seq];
        let mut types = vec![0i64; batch * seq];
        let mut mask = vec![0f32; batch * seq];
        for (row, (seq_ids, seq_types)) in self.ids.iter().zip(&self.type_ids).enumerate() {
            for (col, (id, ty)) in seq_ids.iter().zip(seq_types).enumerate() {
                ids[row * seq + col] = *id as i64;
                types[row * seq + col] = *ty as i64;
                mask[row * seq + col] = 1.0;
            }
        }
        EncoderInput {
            input_ids: Tensor::from_data(TensorData::new(ids, [batch, seq]), device),
            attention_mask: Tensor::from_data(TensorData::new(mask, [batch, seq]), device),
            token_type_ids: Tensor::from_data(TensorData::new(types, [batch, seq]), device),
            global_attention_mask: None,
        }
    }
}

/// BERT's WordPiece pipeline, as `BertTokenizerFast` builds it from `vocab.txt`.
fn wordpiece_from_vocab(dir: &Path, vocab: &Path) -> Result<Tokenizer> {
    let lowercase = read_do_lower_case(dir)?;
    let vocab_str = vocab
        .to_str()
        .ok_or_else(|| tok_err(vocab, "path is not UTF-8".into()))?;
    let model = WordPiece::from_file(vocab_str)
        .unk_token("[UNK]".into())
        .build()
        .map_err(|e| tok_err(vocab, e.to_string()))?;
    let id = |t: &str| {
        tokenizers::Model::token_to_id(&model, t)
            .ok_or_else(|| tok_err(vocab, format!("{t} is not in the vocabulary")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    let mut tok = Tokenizer::new(model);
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)));
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    tok.with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    tok.add_special_tokens(&specials);
    Ok(tok)
}

fn read_do_lower_case(dir: &Path) -> Result<bool> {
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(true); // BertTokenizer's default
    }
    let text = std::fs::read_to_string(&path).map_err(crate::error::io_err(&path))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| tok_err(&path, format!("invalid JSON: {e}")))?;
    Ok(v.get("do_lower_case")
        .and_then(|b| b.as_bool())
        .unwrap_or(true))
}

fn tok_err(path: &Path, message: String) -> ModelError {
    ModelError::Tokenizer {
        path: path.to_path_buf(),
        message,
    }
}

/// Tokenizer files copied by [`copy_tokenizer_files`], when present.
pub const TOKENIZER_FILES: [&str; 6] = [
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Copy a checkpoint's tokenizer files from `src` to `dst` (to complete a saved model, so that
/// `transformers` loads tokenizer and model from one directory). Returns the files copied.
pub fn copy_tokenizer_files(src: &Path, dst: &Path) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    for name in TOKENIZER_FILES {
        let from = src.join(name);
        if from.is_file() {
            std::fs::copy(&from, dst.join(name)).map_err(crate::error::io_err(&from))?;
            copied.push(name.to_string());
        }
    }
    if copied.is_empty() {
        return Err(tok_err(src, "no tokenizer files to copy".into()));
    }
    Ok(copied)
}
