//! `neuronlab bench forward`: throughput of an encoder forward pass on this build's backend.
//!
//! A benchmark, not a test: it reports numbers for `BENCHMARKS.md`, where they sit beside the
//! PyTorch script `bench/forward_pytorch.py` run on the same batch (`scripts/bench-forward.sh`
//! runs both and every CPU backend variant).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use models::{Checkpoint, EncoderInput, ForwardContext, load_bare_encoder};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::{BackendTask, cpu_backend_name};

/// Time the forward pass of an encoder on a random batch of real (non-padding) tokens.
#[derive(Debug, Clone)]
pub struct BenchForward {
    /// Checkpoint directory.
    pub model: PathBuf,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed iterations (after two warm-up ones).
    pub iters: usize,
    /// Device label for the report.
    pub device_label: String,
}

/// One benchmark result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Which implementation ran.
    pub implementation: String,
    /// Device.
    pub device: String,
    /// Model directory name.
    pub model: String,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Timed iterations.
    pub iters: usize,
    /// Median milliseconds per batch.
    pub median_ms: f64,
    /// Tokens per second at the median.
    pub tokens_per_s: f64,
}

impl BackendTask for BenchForward {
    type Output = BenchReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<BenchReport> {
        let checkpoint = Checkpoint::open(&self.model)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let (model, _) = load_bare_encoder::<B>(checkpoint, &device)?;
        let mut rng = StdRng::seed_from_u64(0);
        let n = self.batch * self.seq;
        // Ids above 999 avoid BERT's special and unused tokens; the first is [CLS]-like.
        let ids: Vec<i64> = (0..n)
            .map(|_| rng.random_range(1000..vocab as i64))
            .collect();
        let input = EncoderInput {
            input_ids: Tensor::from_data(TensorData::new(ids, [self.batch, self.seq]), &device),
            attention_mask: Tensor::ones([self.batch, self.seq], &device),
            token_type_ids: Tensor::zeros([self.batch, self.seq], &device),
        };
        let mut times = Vec::with_capacity(self.iters);
        for i in 0..self.iters + 2 {
            let start = Instant::now();
            let out = model.forward(&input, &mut ForwardContext::eval());
            let _ = out.slice([0..1, 0..1, 0..1]).into_data(); // waits for the device
            if i >= 2 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        let median_ms = times[times.len() / 2];
        Ok(BenchReport {
            implementation: format!("neuronlab burn-{}", backend_label(&self.device_label)),
            device: self.device_label,
            model: self
                .model
                .file_name()
                .map(|s| s.to_string_lossy().into())
                .unwrap_or_default(),
            batch: self.batch,
            seq: self.seq,
            iters: self.iters,
            median_ms,
            tokens_per_s: n as f64 / (median_ms / 1e3),
        })
    }
}

fn backend_label(device: &str) -> String {
    if device.starts_with("cuda") {
        "cuda".into()
    } else if cfg!(feature = "x86-v4") {
        format!("{}+x86-v4", cpu_backend_name())
    } else {
        cpu_backend_name().into()
    }
}
