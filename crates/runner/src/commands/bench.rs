//! `neuronlab bench forward`: throughput of an encoder forward pass, or of a decoder's causal-LM
//! forward (logits at every position), on this build's backend.
//!
//! A benchmark, not a test: it reports numbers for `BENCHMARKS.md`, where they sit beside the
//! PyTorch script `bench/forward_pytorch.py` run on the same batch (`scripts/bench-forward.sh`
//! runs both and every CPU backend variant).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::prelude::*;
use models::{
    Checkpoint, DecoderCheckpoint, EncoderInput, ForwardContext, load_bare_encoder, token_ids,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::backend::{BackendJob, cpu_backend_name};

/// Time the forward pass of an encoder on a random batch of real (non-padding) tokens.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchForward {
    /// Checkpoint directory.
    #[arg(long, default_value = ".cache/artefacts/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 128)]
    pub seq: usize,
    /// Timed iterations (after two warm-up ones); the median is reported.
    #[arg(long, default_value_t = 10, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Longformer: global attention on each sequence's first this many tokens (as a question's
    /// tokens are in extractive QA); 0: the sliding window alone.
    #[arg(long, default_value_t = 0)]
    pub global: usize,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
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
    /// Longformer: tokens per sequence with global attention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global: Option<usize>,
    /// The process's peak resident memory (Linux `VmHWM`, MiB): weights, activations and
    /// allocator slack together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
    /// Resident memory once the model is loaded, before the first forward (MiB; `VmRSS`): the
    /// forward's own memory is at most `peak_rss_mib` minus this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loaded_rss_mib: Option<f64>,
}

impl BackendJob for BenchForward {
    type Output = BenchReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<BenchReport> {
        if models::is_decoder(&self.model) {
            return self.run_decoder::<B>(device);
        }
        let checkpoint = Checkpoint::open(&self.model)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let longformer = checkpoint.config.family == models::EncoderFamily::Longformer;
        if self.global > 0 && !longformer {
            anyhow::bail!(
                "--global {}: {} is not a Longformer (only Longformer has global attention)",
                self.global,
                self.model.display()
            );
        }
        if self.global > self.seq {
            anyhow::bail!("--global {} exceeds --seq {}", self.global, self.seq);
        }
        let (model, _) = load_bare_encoder::<B>(checkpoint, &device)?;
        let loaded = rss_mib("VmRSS:");
        let global_attention_mask = longformer.then(|| {
            let mut m = vec![0f32; self.batch * self.seq];
            for row in m.chunks_mut(self.seq) {
                row[..self.global].fill(1.0);
            }
            Tensor::<B, 2>::from_data(TensorData::new(m, [self.batch, self.seq]), &device)
        });
        let input = EncoderInput {
            input_ids: token_ids(&random_tokens(self.batch, self.seq, vocab), &device),
            attention_mask: Tensor::ones([self.batch, self.seq], &device),
            token_type_ids: Tensor::zeros([self.batch, self.seq], &device),
            global_attention_mask,
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
        let mut report = self.report(times);
        report.loaded_rss_mib = loaded;
        Ok(report)
    }
}

/// Time activation-statistics collection ([`neurons::ActivationStats::collect`]) on random
/// windows: the decoder's layers with the gate statistics counted inside the forward, read back
/// and accumulated in f64 after each batch; no LM head.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCollect {
    /// A `.gguf` file or an HF decoder directory.
    #[arg(
        long,
        default_value = ".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: PathBuf,
    /// Windows per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per window.
    #[arg(long, default_value_t = 256)]
    pub seq: usize,
    /// Timed batches (after one warm-up batch); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Also each neuron's per-batch quantiles (the percentile pass of a study: `0.75,0.9,0.95`).
    #[arg(long, value_delimiter = ',')]
    pub quantiles: Vec<f64>,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
    pub device_label: String,
}

impl BackendJob for BenchCollect {
    type Output = BenchReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<BenchReport> {
        let checkpoint = DecoderCheckpoint::open(&self.model)
            .with_context(|| format!("loading decoder {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let (model, _) = checkpoint.load::<B>(&device)?;
        let windows = random_tokens(self.batch, self.seq, vocab);
        let mut stats = neurons::ActivationStats::new(&model);
        let mut times = Vec::with_capacity(self.iters);
        for i in 0..self.iters + 1 {
            let start = Instant::now();
            let qs = self.quantiles.clone();
            if qs.is_empty() {
                stats.collect(&model, "bench", &windows, self.batch, &device, |_| {})?;
            } else {
                stats.collect_with_percentiles(
                    &model,
                    "bench",
                    &windows,
                    self.batch,
                    &qs,
                    &device,
                    |_| {},
                )?;
            }
            if i >= 1 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let forward = BenchForward {
            model: self.model.clone(),
            batch: self.batch,
            seq: self.seq,
            iters: self.iters,
            global: 0,
            device_label: self.device_label,
        };
        let mut report = forward.report(times);
        report.implementation = if self.quantiles.is_empty() {
            format!("{} (collect)", report.implementation)
        } else {
            format!(
                "{} (collect, quantiles {:?})",
                report.implementation, self.quantiles
            )
        };
        Ok(report)
    }
}

impl BenchForward {
    /// The causal-LM forward of a decoder (embeddings, every layer, logits at every position),
    /// as `AutoModelForCausalLM` computes it.
    fn run_decoder<B: Backend>(self, device: B::Device) -> Result<BenchReport> {
        let checkpoint = DecoderCheckpoint::open(&self.model)
            .with_context(|| format!("loading decoder {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let (model, _) = checkpoint.load::<B>(&device)?;
        let ids = token_ids::<B, _>(&random_tokens(self.batch, self.seq, vocab), &device);
        let mut times = Vec::with_capacity(self.iters);
        for i in 0..self.iters + 2 {
            let start = Instant::now();
            let logits = model.forward(ids.clone(), None, &mut ForwardContext::eval());
            let _ = logits.slice([0..1, 0..1, 0..1]).into_data();
            if i >= 2 {
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        Ok(self.report(times))
    }

    fn report(self, mut times: Vec<f64>) -> BenchReport {
        times.sort_by(f64::total_cmp);
        let median_ms = times[times.len() / 2];
        BenchReport {
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
            tokens_per_s: (self.batch * self.seq) as f64 / (median_ms / 1e3),
            global: (self.global > 0).then_some(self.global),
            peak_rss_mib: rss_mib("VmHWM:"),
            loaded_rss_mib: None,
        }
    }
}

/// A memory line of `/proc/self/status` (`VmHWM:` the peak resident set, `VmRSS:` the current
/// one) in MiB; `None` off Linux.
fn rss_mib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `batch` rows of `seq` random token ids from a seeded RNG. Ids from 1000 up avoid BERT's
/// special and unused tokens and a decoder's control tokens.
pub(crate) fn random_tokens(batch: usize, seq: usize, vocab: usize) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(0);
    let low = 1000.min(vocab as u32 - 1);
    (0..batch)
        .map(|_| {
            (0..seq)
                .map(|_| rng.random_range(low..vocab as u32))
                .collect()
        })
        .collect()
}

pub(crate) fn backend_label(device: &str) -> String {
    if device.starts_with("cuda") {
        "cuda".into()
    } else if cfg!(feature = "x86-v4") {
        format!("{}+x86-v4", cpu_backend_name())
    } else {
        cpu_backend_name().into()
    }
}

/// Time one training step (forward of all views, backward, global-norm clipping, AdamW) of a
/// sequence classifier with the comparative loss over `views - 1` nested dropout views
/// (`views = 1`: the baseline, ordinary dropout), batched or one view after another.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchStep {
    /// Checkpoint directory.
    #[arg(long, default_value = ".cache/artefacts/all-MiniLM-L6-v2")]
    pub model: PathBuf,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Nested dropout views c (0: the baseline).
    #[arg(long, default_value_t = 0)]
    pub n_drop: u32,
    /// Run the c + 1 views one after another instead of as one batch.
    #[arg(long)]
    pub sequential: bool,
    /// Time a span extractor (extractive QA: start/end losses) instead of a classifier.
    #[arg(long)]
    pub span: bool,
    /// Timed steps (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
    pub device_label: String,
}

/// One step-benchmark result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct StepReport {
    /// Which implementation ran.
    pub implementation: String,
    /// Device.
    pub device: String,
    /// `classification` or `span`.
    pub task: String,
    /// Examples per step.
    pub batch: usize,
    /// Tokens per example.
    pub seq: usize,
    /// c.
    pub n_drop: u32,
    /// `batched` or `sequential`.
    pub execution: String,
    /// Timed steps.
    pub iters: usize,
    /// Median milliseconds per step.
    pub median_ms: f64,
    /// Median milliseconds of the forward passes (loss included).
    pub forward_ms: f64,
    /// Median milliseconds of the backward pass.
    pub backward_ms: f64,
    /// Median milliseconds of clipping and the AdamW update.
    pub optimizer_ms: f64,
}

impl BackendJob for BenchStep {
    type Output = StepReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<StepReport> {
        use crate::encoder::extractive::SpanInput;
        use crate::encoder::objective::{Objective, Targets};
        use crate::encoder::spec::LossSpec;
        use crate::training::AdamW;
        use ablation::DropoutMasks;
        use burn::backend::Autodiff;
        use models::{SequenceClassifier, SpanExtractor};

        let checkpoint = Checkpoint::open(&self.model)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let spec = if self.n_drop == 0 {
            LossSpec::Baseline { dropout: None }
        } else {
            LossSpec::Comparative {
                n_drop: self.n_drop,
                n_crop: 0,
                p: None,
                target: crate::encoder::spec::Target::Ultra,
                mode: crate::encoder::spec::CmpMode::Comparative,
                primary: None,
                weight: None,
                temperature: 1.0,
                listwise: false,
                cr_schedule: false,
                cmp_in_eval: false,
                dropout: None,
                train: Default::default(),
            }
        };
        let mut objective = Objective::new(&spec, 0)?;
        if self.sequential {
            objective.execution_budget = Some(0);
        }
        let (batch, seq) = (self.batch, self.seq);
        let input = EncoderInput {
            input_ids: token_ids(&random_tokens(batch, seq, vocab), &device),
            attention_mask: Tensor::ones([batch, seq], &device),
            token_type_ids: Tensor::zeros([batch, seq], &device),
            global_attention_mask: None,
        };
        let mut masks = Some(DropoutMasks::new(0));
        let settings = (2e-5, 1.0);
        let [t, f, b, o] = if self.span {
            // Answer spans at varying positions inside the sequence.
            let positions = |offset: usize| {
                let v: Vec<i64> = (0..batch)
                    .map(|i| ((i * 7 + offset) % seq) as i64)
                    .collect();
                Tensor::<Autodiff<B>, 1, Int>::from_data(TensorData::new(v, [batch]), &device)
            };
            let span = SpanInput {
                input,
                start: positions(1),
                end: positions(3),
                answer_mask: None,
            };
            let (model, _) = SpanExtractor::<Autodiff<B>>::load(checkpoint, 0, &device)?;
            time_steps(
                model,
                &mut AdamW::new(0.01).init(),
                self.iters,
                settings,
                |model| {
                    let per_view =
                        objective.run_views(std::slice::from_ref(&span), seq, &mut masks, {
                            |input, ctx, _| {
                                let (s, e) = model.forward(&input.input, ctx);
                                let (ls, le) = losses::span_cross_entropy(
                                    s,
                                    e,
                                    input.start.clone(),
                                    input.end.clone(),
                                );
                                Tensor::stack(vec![ls, le], 1)
                            }
                        });
                    Ok(objective.combine(per_view))
                },
                |model| {
                    let _ = model
                        .qa_outputs
                        .weight
                        .val()
                        .slice([0..1, 0..1])
                        .into_data();
                },
            )?
        } else {
            let labels: Vec<i64> = (0..batch).map(|i| (i % 2) as i64).collect();
            let targets =
                Targets::Classes(Tensor::from_data(TensorData::new(labels, [batch]), &device));
            let (model, _) =
                SequenceClassifier::<Autodiff<B>>::load(checkpoint, 2, None, 0, &device)?;
            time_steps(
                model,
                &mut AdamW::new(0.01).init(),
                self.iters,
                settings,
                |model| Ok(objective.loss(model, &input, &targets, &mut masks)),
                |model| {
                    let _ = model
                        .head
                        .out_proj
                        .weight
                        .val()
                        .slice([0..1, 0..1])
                        .into_data();
                },
            )?
        };
        Ok(StepReport {
            implementation: format!("neuronlab burn-{}", backend_label(&self.device_label)),
            device: self.device_label,
            task: if self.span { "span" } else { "classification" }.into(),
            batch,
            seq,
            n_drop: self.n_drop,
            execution: if !self.sequential || self.n_drop == 0 {
                "batched"
            } else {
                "sequential"
            }
            .into(),
            iters: self.iters,
            median_ms: t,
            forward_ms: f,
            backward_ms: b,
            optimizer_ms: o,
        })
    }
}

/// Time one LoRA training step of a decoder classifier: forward, backward, clipping and AdamW
/// over the adapters and the head, the decoder frozen.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchLoraStep {
    /// A `.gguf` file or an HF decoder directory.
    #[arg(
        long,
        default_value = ".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    pub model: PathBuf,
    /// Examples per step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per example.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// LoRA rank (alpha = 2 rank).
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// Linears with an unmasked adapter, comma-separated.
    #[arg(
        long,
        default_value = "q_proj,k_proj,v_proj,o_proj",
        value_delimiter = ','
    )]
    pub targets: Vec<String>,
    /// Add a gate_proj adapter masked to this many random neurons per layer (the
    /// neuron-specific variant).
    #[arg(long)]
    pub gate_neurons: Option<usize>,
    /// Timed steps (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub iters: usize,
    /// Device label for the report (the `--device` value).
    #[arg(skip)]
    pub device_label: String,
}

/// A LoRA step benchmark result, printed as a JSON line.
#[derive(Debug, Serialize)]
pub struct LoraStepReport {
    /// Which implementation ran.
    pub implementation: String,
    /// Device.
    pub device: String,
    /// Examples per step.
    pub batch: usize,
    /// Tokens per example.
    pub seq: usize,
    /// The rank.
    pub rank: usize,
    /// Adapter targets (`gate_proj[k]`: masked to k neurons per layer).
    pub targets: String,
    /// Trainable parameters (adapters and head).
    pub trainable: usize,
    /// Timed steps.
    pub iters: usize,
    /// Median milliseconds per step.
    pub median_ms: f64,
    /// Median milliseconds of the forward pass (loss included).
    pub forward_ms: f64,
    /// Median milliseconds of the backward pass.
    pub backward_ms: f64,
    /// Median milliseconds of clipping and the AdamW update.
    pub optimizer_ms: f64,
}

impl BackendJob for BenchLoraStep {
    type Output = LoraStepReport;

    fn run<B: Backend>(self, device: B::Device) -> Result<LoraStepReport> {
        use crate::training::AdamW;
        use burn::backend::Autodiff;
        use models::{LoraConfig, ScoreHead, TokenPosition};

        let checkpoint = DecoderCheckpoint::open(&self.model)
            .with_context(|| format!("loading model {}", self.model.display()))?;
        let vocab = checkpoint.config.vocab_size;
        let (mut model, _) = checkpoint.load_classifier::<Autodiff<B>>(
            2,
            TokenPosition::LastNonPadding,
            ScoreHead::Hf,
            0,
            &device,
        )?;
        let (layers, width) = (model.model.num_layers(), model.model.intermediate_size());
        let mut targets: Vec<&str> = self.targets.iter().map(String::as_str).collect();
        let set = self.gate_neurons.map(|k| {
            let mut rng = StdRng::seed_from_u64(0);
            ablation::NeuronSet::from_pairs((0..layers).flat_map(|l| {
                rand::seq::index::sample(&mut rng, width, k.min(width))
                    .into_iter()
                    .map(move |j| (l, j))
                    .collect::<Vec<_>>()
            }))
        });
        if set.is_some() && !targets.contains(&"gate_proj") {
            targets.push("gate_proj");
        }
        let config = LoraConfig {
            rank: self.rank,
            alpha: 2.0 * self.rank as f64,
            ..Default::default()
        };
        model.model = model
            .model
            .with_lora(&targets, &config, set.as_ref(), 0, &device)?;
        let trainable = {
            let mut count = Trainable(0);
            model.visit(&mut count);
            count.0
        };
        let ids = token_ids::<Autodiff<B>, _>(&random_tokens(self.batch, self.seq, vocab), &device);
        let mask = Tensor::ones([self.batch, self.seq], &device);
        let labels: Vec<i64> = (0..self.batch).map(|i| (i % 2) as i64).collect();
        let labels = Tensor::<Autodiff<B>, 1, Int>::from_ints(labels.as_slice(), &device);
        let mut optimizer = AdamW::with_beta1(0.1, 0.95).init();
        let [t, f, b, o] = time_steps(
            model,
            &mut optimizer,
            self.iters,
            (1e-4, 10.0),
            |model| {
                let logits = model.forward(ids.clone(), mask.clone(), &mut ForwardContext::eval());
                Ok(losses::cross_entropy(logits, labels.clone()).mean())
            },
            |model| {
                let _ = model.score.weight.val().slice([0..1, 0..1]).into_data();
            },
        )?;
        let mut names: Vec<String> = self.targets.clone();
        if let Some(k) = self.gate_neurons {
            names.retain(|n| n != "gate_proj");
            names.push(format!("gate_proj[{k}]"));
        }
        Ok(LoraStepReport {
            implementation: format!("neuronlab burn-{}", backend_label(&self.device_label)),
            device: self.device_label,
            batch: self.batch,
            seq: self.seq,
            rank: self.rank,
            targets: names.join(","),
            trainable,
            iters: self.iters,
            median_ms: t,
            forward_ms: f,
            backward_ms: b,
            optimizer_ms: o,
        })
    }
}

/// Median milliseconds (total, forward, backward, clipping + AdamW) of `iters` training steps
/// after one warm-up step: `loss` runs the forward (its value is read, forcing the computation),
/// then backward, global-norm clipping at `max_norm` and an AdamW step at `lr`; `probe` reads a
/// parameter so that the update has run before the clock stops.
pub(crate) fn time_steps<B, M, O>(
    mut model: M,
    optimizer: &mut O,
    iters: usize,
    (lr, max_norm): (f64, f64),
    mut loss: impl FnMut(&M) -> Result<Tensor<B, 1>>,
    probe: impl Fn(&M),
) -> Result<[f64; 4]>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: burn::module::AutodiffModule<B>,
    O: burn::optim::Optimizer<M, B>,
{
    use burn::optim::GradientsParams;
    let mut phases = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for i in 0..iters + 1 {
        let start = Instant::now();
        let value = loss(&model)?;
        let _ = value.clone().into_data();
        let forward = start.elapsed();
        let mut grads = GradientsParams::from_grads(value.backward(), &model);
        let backward = start.elapsed();
        crate::training::clip_global_norm(&model, &mut grads, max_norm);
        model = optimizer.step(lr, model, grads);
        probe(&model);
        let total = start.elapsed();
        if i >= 1 {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            phases[0].push(ms(total));
            phases[1].push(ms(forward));
            phases[2].push(ms(backward - forward));
            phases[3].push(ms(total - backward));
        }
    }
    Ok(phases.map(|mut v| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }))
}

/// Counts the elements of the parameters that require gradients.
struct Trainable(usize);

impl<B: Backend> burn::module::ModuleVisitor<B> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let t = param.val();
        if t.is_require_grad() {
            self.0 += t.shape().num_elements();
        }
    }
}
