//! Texts to vectors with an encoder checkpoint: the encoder's last hidden states pooled over the
//! tokens (`mean`: over every non-padding token, `[CLS]` and `[SEP]` included, as
//! sentence-transformers pools MiniLM) or the first token's (`cls`), optionally L2-normalised.

use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use models::{BertModel, Checkpoint, ForwardContext, TextTokenizer, load_bare_encoder, mean_pool};
use serde::{Deserialize, Serialize};

/// How token states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean over non-padding tokens.
    Mean,
    /// The first token's state.
    Cls,
}

/// An encoder with its tokenizer and pooling.
#[derive(Debug)]
pub struct TextEncoder<B: Backend> {
    model: BertModel<B>,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    normalize: bool,
    dim: usize,
}

impl<B: Backend> TextEncoder<B> {
    /// Load the checkpoint folder `dir` (truncating to `max_len` tokens when given).
    ///
    /// # Errors
    /// A missing or unreadable checkpoint or tokenizer (the error names the path).
    pub fn open(
        dir: &Path,
        pooling: Pooling,
        normalize: bool,
        max_len: Option<usize>,
        device: &B::Device,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir).context("--model")?;
        let mut tokenizer = TextTokenizer::from_dir(dir, &checkpoint.config)?;
        if let Some(n) = max_len {
            tokenizer = tokenizer.with_max_len(n)?;
        }
        let dim = checkpoint.config.hidden_size;
        let (model, report) = load_bare_encoder::<B>(checkpoint, device)?;
        if !report.dropped.is_empty() {
            tracing::info!("not used for embeddings: {}", report.dropped.join(", "));
        }
        Ok(Self {
            model,
            tokenizer,
            pooling,
            normalize,
            dim,
        })
    }

    /// The vectors' length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vectors of `texts`, row-major `[texts.len(), dim]`.
    ///
    /// # Errors
    /// A text the tokenizer cannot encode.
    pub fn encode(&self, texts: &[&str], device: &B::Device) -> Result<Vec<f32>> {
        let input = self.tokenizer.encode_texts(texts)?.to_input::<B>(device);
        let hidden = self.model.forward(&input, &mut ForwardContext::eval());
        let mut pooled = match self.pooling {
            Pooling::Mean => mean_pool(&hidden, &input.attention_mask),
            Pooling::Cls => models::first_token(&hidden),
        };
        if self.normalize {
            let norms = pooled
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            pooled = pooled / norms;
        }
        Ok(pooled
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 data"))
    }
}
