//! `neuronlab perplexity` and `neuronlab generate`: a decoder (HF directory or GGUF) on text.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use models::{DecoderCheckpoint, DecoderTokenizer, ForwardContext, LlamaModel, Perplexity};

use crate::backend::BackendJob;

/// Load a decoder and its tokenizer, logging what loading dropped.
fn load<B: Backend>(
    path: &PathBuf,
    device: &B::Device,
) -> Result<(LlamaModel<B>, DecoderTokenizer)> {
    let checkpoint = DecoderCheckpoint::open(path)
        .with_context(|| format!("loading decoder {}", path.display()))?;
    let tokenizer = checkpoint.tokenizer.clone().ok_or_else(|| {
        anyhow!(
            "{}: no tokenizer.json beside the checkpoint; text commands need one",
            path.display()
        )
    })?;
    let (model, report) = checkpoint
        .load::<B>(device)
        .with_context(|| format!("loading decoder {}", path.display()))?;
    if !report.dropped.is_empty() {
        tracing::info!("not used: {}", report.dropped.join(", "));
    }
    Ok((model, tokenizer))
}

/// Perplexity of a text file.
#[derive(Debug, Clone, clap::Args)]
pub struct PerplexityJob {
    /// A `.gguf` file, or an HF checkpoint directory (config.json, weights, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// UTF-8 text, scored as one sequence.
    #[arg(long)]
    pub text_file: PathBuf,
    /// Window length for long texts (default: the model's context length); consecutive
    /// windows overlap by one token.
    #[arg(long)]
    pub window: Option<usize>,
}

impl BackendJob for PerplexityJob {
    type Output = Perplexity;

    /// The file is encoded whole (a BOS only if the tokenizer adds one) and scored in windows
    /// ([`models::perplexity`]).
    fn run<B: Backend>(self, device: B::Device) -> Result<Perplexity> {
        let text = std::fs::read_to_string(&self.text_file)
            .with_context(|| format!("reading {}", self.text_file.display()))?;
        let (model, tokenizer) = load::<B>(&self.model, &device)?;
        let ids = tokenizer.encode(&text)?;
        let window = self.window.unwrap_or(model.max_positions());
        if window > model.max_positions() {
            return Err(anyhow!(
                "--window {window} is longer than the model's context of {} tokens",
                model.max_positions()
            ));
        }
        models::perplexity(&model, &ids, window, &mut ForwardContext::eval(), &device)
            .map_err(|e| anyhow!("{}: {e}", self.text_file.display()))
    }
}

/// Greedy generation from a prompt.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateJob {
    /// A `.gguf` file, or an HF checkpoint directory (config.json, weights, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt, used as given (no chat template unless --chat).
    #[arg(long)]
    pub prompt: String,
    /// Most tokens to generate (generation also stops at an end-of-sequence token).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Render the prompt as one user turn with the checkpoint's chat template.
    #[arg(long)]
    pub chat: bool,
}

impl BackendJob for GenerateJob {
    type Output = String;

    fn run<B: Backend>(self, device: B::Device) -> Result<String> {
        let (model, tokenizer) = load::<B>(&self.model, &device)?;
        let prompt = if self.chat {
            tokenizer.apply_chat_template(&self.prompt)?
        } else {
            self.prompt.clone()
        };
        let ids = tokenizer.encode(&prompt)?;
        if ids.is_empty() {
            return Err(anyhow!("the prompt encodes to no tokens"));
        }
        let out = models::generate_greedy(
            &model,
            &ids,
            self.max_new_tokens,
            &tokenizer.eos_ids,
            &mut ForwardContext::eval(),
            &device,
        );
        Ok(tokenizer.decode(&out)?)
    }
}
