//! Texts to vectors with an encoder checkpoint: the encoder's last hidden states pooled over the
//! tokens (`mean`: over every non-padding token, `[CLS]` and `[SEP]` included, as
//! sentence-transformers pools MiniLM) or the first token's (`cls`), optionally through the
//! checkpoint's projection head (ANCE's `embeddingHead` + `norm`, or a PRF reformulator's
//! `dense_proj` + `layer_norm`: [`models::QueryReformulator`]), optionally L2-normalised.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use models::{Checkpoint, ForwardContext, QueryReformulator, ReformulatorConfig, TextTokenizer};
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
    model: QueryReformulator<B>,
    tokenizer: TextTokenizer,
    dim: usize,
}

impl<B: Backend> TextEncoder<B> {
    /// Load the checkpoint folder `dir` (truncating to `max_len` tokens when given); with
    /// `projection`, through its projection head.
    ///
    /// # Errors
    /// A missing or unreadable checkpoint or tokenizer (the error names the path); with
    /// `projection`, a checkpoint without a head.
    pub fn open(
        dir: &Path,
        (pooling, projection, normalize): (Pooling, bool, bool),
        max_len: Option<usize>,
        device: &B::Device,
    ) -> Result<Self> {
        let checkpoint = Checkpoint::open(dir).context("--model")?;
        let mut tokenizer = TextTokenizer::from_dir(dir, &checkpoint.config)?;
        if let Some(n) = max_len {
            tokenizer = tokenizer.with_max_len(n)?;
        }
        let dim = checkpoint.config.hidden_size;
        let config = ReformulatorConfig {
            mean_pooling: pooling == Pooling::Mean,
            projection,
            norm_power: normalize.then_some(2.0),
        };
        let (model, report) = QueryReformulator::<B>::load(checkpoint, config, 0, device)?;
        if !report.initialised.is_empty() {
            bail!(
                "{}: --projection needs the checkpoint's head (dense_proj.* and layer_norm.*, or \
                 ANCE's embeddingHead.* and norm.*), which it lacks",
                dir.display()
            );
        }
        if !report.dropped.is_empty() {
            tracing::info!("not used for embeddings: {}", report.dropped.join(", "));
        }
        Ok(Self {
            model,
            tokenizer,
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
        let pooled = self.model.forward(&input, &mut ForwardContext::eval());
        Ok(pooled
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 data"))
    }
}
