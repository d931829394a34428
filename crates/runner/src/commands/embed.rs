//! `neuronlab embed`: sentence embeddings with mean pooling.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use models::{Checkpoint, ForwardContext, TextTokenizer, load_bare_encoder, mean_pool};

use crate::backend::BackendJob;

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
        // The error names the path.
        let checkpoint = Checkpoint::open(&self.model).context("--model")?;
        let tokenizer = TextTokenizer::from_dir(&self.model, &checkpoint.config)?;
        let (model, report) = load_bare_encoder::<B>(checkpoint, &device)?;
        if !report.dropped.is_empty() {
            tracing::info!("not used for embeddings: {}", report.dropped.join(", "));
        }
        let texts: Vec<&str> = self.texts.iter().map(String::as_str).collect();
        let input = tokenizer.encode_texts(&texts)?.to_input::<B>(&device);
        let hidden = model.forward(&input, &mut ForwardContext::eval());
        let mut pooled = mean_pool(&hidden, &input.attention_mask);
        if self.normalize {
            let norms = pooled
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            pooled = pooled / norms;
        }
        let [n, width] = pooled.dims();
        let flat: Vec<f32> = pooled
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 data");
        Ok((0..n)
            .map(|i| flat[i * width..(i + 1) * width].to_vec())
            .collect())
    }
}
