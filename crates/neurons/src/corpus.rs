//! Per-language text for neuron statistics: documents read from plain-text or JSONL files,
//! tokenised, concatenated and packed into fixed windows without padding (as Tang et al. and
//! Mondal et al. pack Wikipedia), with a token budget and held-out windows kept apart for
//! perplexity.

use std::path::{Path, PathBuf};

/// Why a corpus could not be read or packed.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        cause: std::io::Error,
    },
    /// A line of a JSONL file is not what it should be.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The text is unusable for the request.
    #[error("language {language} ({path}): {message}")]
    Language {
        /// The language.
        language: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer failed.
    #[error("tokenizing {path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
}

/// How a text file holds its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextFormat {
    /// One document per non-empty line.
    Lines,
    /// The whole file is one document.
    Whole,
    /// JSON Lines; each line's `field` holds a document.
    Jsonl {
        /// The key of the text.
        field: String,
    },
}

/// The documents of a file, in order.
pub fn read_documents(path: &Path, format: &TextFormat) -> Result<Vec<String>, CorpusError> {
    let bytes = std::fs::read(path).map_err(|cause| CorpusError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let bytes = e.as_bytes();
        CorpusError::Line {
            path: path.to_path_buf(),
            line: bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1,
            message: format!(
                "byte 0x{:02x} is not UTF-8; save the file as UTF-8",
                bytes[at]
            ),
        }
    })?;
    Ok(match format {
        TextFormat::Whole => vec![text]
            .into_iter()
            .filter(|t| !t.trim().is_empty())
            .collect(),
        TextFormat::Lines => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
        TextFormat::Jsonl { field } => {
            let mut docs = Vec::new();
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let err = |message: String| CorpusError::Line {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message,
                };
                let value: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| err(format!("invalid JSON: {e}")))?;
                let doc = value
                    .get(field)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| err(format!("no string field {field:?}")))?;
                docs.push(doc.to_string());
            }
            docs
        }
    })
}

/// One language's text packed into windows.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedText {
    /// The language.
    pub language: String,
    /// Tokens per window.
    pub window: usize,
    /// Windows for statistics (neuron finding).
    pub train: Vec<Vec<u32>>,
    /// Windows kept apart (perplexity); never in `train`.
    pub held_out: Vec<Vec<u32>>,
    /// Tokens encoded in total (before the tail shorter than a window was dropped).
    pub total_tokens: usize,
}

/// How to pack a language's documents.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packing {
    /// Tokens per window.
    pub window: usize,
    /// Fraction of the windows held out (taken from the end), at least one when above 0.
    pub held_out_fraction: f64,
    /// Most windows' worth of tokens used for statistics (`None`: all).
    pub budget_tokens: Option<usize>,
}

/// Tokenise each document with `encode` (which adds whatever special tokens the tokenizer adds,
/// a BOS per document for Llama-style tokenizers), concatenate them, and cut the stream into
/// windows of `packing.window` tokens; the tail shorter than a window is dropped. The last
/// `held_out_fraction` of the windows are held out; the first ones, up to the budget, are for
/// statistics.
///
/// # Errors
/// No documents, or fewer tokens than one window (or two windows, when some are held out).
pub fn pack(
    language: &str,
    path: &Path,
    documents: &[String],
    packing: &Packing,
    mut encode: impl FnMut(&str) -> Result<Vec<u32>, String>,
) -> Result<PackedText, CorpusError> {
    let lang_err = |message: String| CorpusError::Language {
        language: language.to_string(),
        path: path.to_path_buf(),
        message,
    };
    if documents.is_empty() {
        return Err(lang_err("no text (the file is empty)".into()));
    }
    if packing.window == 0 {
        return Err(lang_err("the window must be at least 1 token".into()));
    }
    let mut stream = Vec::new();
    for doc in documents {
        stream.extend(encode(doc).map_err(|message| CorpusError::Tokenizer {
            path: path.to_path_buf(),
            message,
        })?);
    }
    let n_windows = stream.len() / packing.window;
    let held = if packing.held_out_fraction > 0.0 {
        ((n_windows as f64 * packing.held_out_fraction).round() as usize).max(1)
    } else {
        0
    };
    let needed = held + 1;
    if n_windows < needed {
        return Err(lang_err(format!(
            "{} tokens, fewer than the {needed} window(s) of {} tokens needed ({} for statistics, \
             {held} held out)",
            stream.len(),
            packing.window,
            1
        )));
    }
    let mut windows: Vec<Vec<u32>> = stream
        .chunks_exact(packing.window)
        .map(<[u32]>::to_vec)
        .collect();
    let held_out = windows.split_off(n_windows - held);
    if let Some(budget) = packing.budget_tokens {
        windows.truncate((budget / packing.window).max(1));
    }
    Ok(PackedText {
        language: language.to_string(),
        window: packing.window,
        train: windows,
        held_out,
        total_tokens: stream.len(),
    })
}
