//! `neuronlab bench prf-step` and `bench search`: the dense PRF training step and exact
//! inner-product search, each beside its PyTorch twin in `bench/` (`scripts/bench-prf.sh` runs
//! both sides and prints the table for `BENCHMARKS.md`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use models::{Checkpoint, EncoderInput, ForwardContext, QueryReformulator, token_ids};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::bench::{backend_label, random_tokens, time_steps};
use crate::backend::BackendJob;
use crate::retrieval::matrix::{Matrix, MatrixWriter, VectorDtype};
use crate::retrieval::search::{SearchPlan, search};

/// Time one PRF training step of LoL's dense reformulator: the forward of every revision
/// (ordinary dropout), [`losses::ReformulationLoss`] over a fixed passage matrix, backward,
/// global-norm clipping and AdamW.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchPrfStep {
    /// Checkpoint directory.
    #[arg(long, default_value = ".cache/artefacts/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Training queries per step (each `1 + n_compare` revisions).
    #[arg(long, default_value_t = 8)]
    pub queries: usize,
    /// Revisions with less feedback per query.
    #[arg(long, default_value_t = 1)]
    pub n_compare: usize,
    /// Tokens per revision (random ids, no padding).
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Rows of the training passage matrix.
    #[arg(long, default_value_t = 4096)]
    pub passages: usize,
    /// Timed steps (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
    pub device_label: String,
}

/// One PRF step result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct PrfStepReport {
    /// Which implementation ran.
    pub implementation: String,
    /// Device.
    pub device: String,
    /// Training queries per step.
    pub queries: usize,
    /// Revisions per query minus one.
    pub n_compare: usize,
    /// Tokens per revision.
    pub seq: usize,
    /// Passage matrix rows.
    pub passages: usize,
    /// Timed steps.
    pub iters: usize,
    /// Median milliseconds per step.
    pub median_ms: f64,
    /// Median milliseconds of the forward pass and the loss.
    pub forward_ms: f64,
    /// Median milliseconds of the backward pass.
    pub backward_ms: f64,
    /// Median milliseconds of clipping and the AdamW update.
    pub optimizer_ms: f64,
}

impl BackendJob for BenchPrfStep {
    type Output = PrfStepReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<PrfStepReport> {
        use burn::backend::Autodiff;
        let checkpoint = Checkpoint::open(&self.model)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let (vocab, hidden) = (checkpoint.config.vocab_size, checkpoint.config.hidden_size);
        let objective = losses::ReformulationLoss::new(self.n_compare).with_lambda_cr(1.0);
        let rows = self.queries * objective.group();
        let input = EncoderInput {
            input_ids: token_ids(&random_tokens(rows, self.seq, vocab), &device),
            attention_mask: Tensor::ones([rows, self.seq], &device),
            token_type_ids: Tensor::zeros([rows, self.seq], &device),
            global_attention_mask: None,
        };
        let mut rng = StdRng::seed_from_u64(1);
        let values: Vec<f32> = (0..self.passages * hidden)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let passages = Tensor::<Autodiff<B>, 2>::from_data(
            TensorData::new(values, [self.passages, hidden]),
            &device,
        );
        // Each query's positive: its own row of the matrix.
        let positives: Vec<Vec<usize>> = (0..rows)
            .map(|r| vec![(r / objective.group()) % self.passages])
            .collect();
        let (model, _) = QueryReformulator::<Autodiff<B>>::load(
            checkpoint,
            models::ReformulatorConfig::default(),
            0,
            &device,
        )?;
        let mut step = 0u64;
        let [t, f, b, o] = time_steps(
            model,
            &mut crate::training::AdamW::new(0.0).init(),
            self.iters,
            (1e-5, 1.0),
            |model| {
                step += 1;
                let masks = ablation::DropoutMasks::new(step);
                let vectors = model.forward(&input, &mut ForwardContext::with_dropout(masks));
                Ok(objective
                    .forward(vectors, passages.clone(), &positives, true)
                    .loss)
            },
            |model| {
                let _ = model
                    .dense_proj
                    .as_ref()
                    .expect("the official head")
                    .weight
                    .val()
                    .slice([0..1, 0..1])
                    .into_data();
            },
        )?;
        Ok(PrfStepReport {
            implementation: format!("neuronlab burn-{}", backend_label(&self.device_label)),
            device: self.device_label,
            queries: self.queries,
            n_compare: self.n_compare,
            seq: self.seq,
            passages: self.passages,
            iters: self.iters,
            median_ms: t,
            forward_ms: f,
            backward_ms: b,
            optimizer_ms: o,
        })
    }
}

/// Time exact inner-product search ([`crate::retrieval::search`]) of random queries over a
/// random matrix written to a temporary folder: queries per second, reading the shards
/// included.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchSearch {
    /// Passages in the matrix.
    #[arg(long, default_value_t = 200_000)]
    pub passages: usize,
    /// Vector length.
    #[arg(long, default_value_t = 768)]
    pub dim: usize,
    /// Queries searched.
    #[arg(long, default_value_t = 256)]
    pub queries: usize,
    /// Passages kept per query.
    #[arg(long, default_value_t = 1000)]
    pub k: usize,
    /// Timed searches (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
    pub device_label: String,
}

/// One search result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct SearchReport {
    /// Which implementation ran.
    pub implementation: String,
    /// Device.
    pub device: String,
    /// Passages.
    pub passages: usize,
    /// Vector length.
    pub dim: usize,
    /// Queries.
    pub queries: usize,
    /// Kept per query.
    pub k: usize,
    /// Timed searches.
    pub iters: usize,
    /// Median milliseconds per search of all queries.
    pub median_ms: f64,
    /// Queries per second at the median.
    pub queries_per_s: f64,
}

impl BackendJob for BenchSearch {
    type Output = SearchReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<SearchReport> {
        let tmp =
            std::env::temp_dir().join(format!("neuronlab-bench-search-{}", std::process::id()));
        let result = self.timed::<B>(&tmp, &device);
        let _ = std::fs::remove_dir_all(&tmp);
        let times = result?;
        let median = times[times.len() / 2];
        Ok(SearchReport {
            implementation: format!("neuronlab burn-{}", backend_label(&self.device_label)),
            device: self.device_label,
            passages: self.passages,
            dim: self.dim,
            queries: self.queries,
            k: self.k,
            iters: self.iters,
            median_ms: median,
            queries_per_s: self.queries as f64 / (median / 1e3),
        })
    }
}

impl BenchSearch {
    fn timed<B: Backend>(&self, dir: &std::path::Path, device: &B::Device) -> Result<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(0);
        let shard_rows = 65_536;
        let mut writer = MatrixWriter::open(dir, self.dim, VectorDtype::F32, shard_rows, "bench")?;
        let mut start = 0;
        while start < self.passages {
            let n = shard_rows.min(self.passages - start);
            let ids: Vec<String> = (start..start + n).map(|i| format!("p{i}")).collect();
            let vectors: Vec<f32> = (0..n * self.dim)
                .map(|_| rng.random::<f32>() - 0.5)
                .collect();
            writer.write_shard(&ids, &vectors)?;
            start += n;
        }
        let matrix = Matrix::open(dir)?;
        let queries: Vec<f32> = (0..self.queries * self.dim)
            .map(|_| rng.random::<f32>() - 0.5)
            .collect();
        let mut times = Vec::new();
        for i in 0..=self.iters {
            let start = Instant::now();
            let found = search::<B>(&matrix, &queries, self.k, SearchPlan::default(), device)?;
            assert_eq!(found.len(), self.queries);
            if i > 0 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        Ok(times)
    }
}
