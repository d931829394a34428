//! `neuronlab embed`: sentence embeddings with mean pooling.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::*;

use crate::backend::BackendJob;
use crate::retrieval::encode::{Pooling, TextEncoder};

/// Embed texts with an encoder checkpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedJob {
    /// Checkpoint directory (config.json, model.safetensors or pytorch_model.bin, tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// The texts to embed.
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// L2-normalise each embedding.
    #[arg(long)]
    pub normalize: bool,
}

impl BackendJob for EmbedJob {
    type Output = Vec<Vec<f32>>;

    /// Mean pooling over all non-padding tokens, `[CLS]` and `[SEP]` included (the
    /// sentence-transformers convention); L2-normalised only when asked.
    fn run<B: Backend>(self, device: B::Device) -> Result<Vec<Vec<f32>>> {
        let encoder = TextEncoder::<B>::open(
            &self.model,
            (Pooling::Mean, false, self.normalize),
            None,
            &device,
        )?;
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let flat = encoder.encode(&texts, &device)?;
        Ok(flat.chunks(encoder.dim()).map(<[f32]>::to_vec).collect())
    }
}
