//! The dense query reformulator of LoL's pseudo-relevance feedback (Zhu et al., "LoL: A
//! Comparative Regularization Loss over Query Reformulation Losses for Pseudo-Relevance
//! Feedback", SIGIR 2022, arXiv 2204.11545), as the official code builds it (zycdev/LoL,
//! `modeling.py` `DenseDqr`).
//!
//! The encoder reads `[CLS] query [SEP] feedback 1 [SEP] … [SEP] feedback k [SEP]`; the first
//! token's last hidden state goes through `dense_proj` (a linear `H → H`) and a LayerNorm, and
//! optionally a p-normalisation, giving the query vector that searches the passage vectors.
//! [`ReformulatorConfig`] can also pool the mean and leave the head out, so that a
//! sentence-transformers encoder starts as its own first-pass query encoder (the official code
//! always pools the first token and projects).
//!
//! | key | official module | initialised as |
//! |---|---|---|
//! | encoder (HF names) | `encoder` (`AutoModel`) | the checkpoint |
//! | `dense_proj.{weight,bias}` | `nn.Linear(H, H)` | PyTorch's default (uniform `±1/√H`) |
//! | `layer_norm.{weight,bias}` | `nn.LayerNorm(H)` (eps 1e-5, not the encoder's) | ones, zeros |
//!
//! Both head modules are read from the checkpoint when it has them (a reformulator saved by
//! this crate, the official `model.pt` keys converted to safetensors, or ANCE's own head,
//! `embeddingHead` and `norm`, which is the same two modules) and initialised fresh otherwise,
//! as `DenseDqr.from_pretrained` does. The official code's feedback re-ranker
//! (`psg_transform`, `reranker`) serves its `lambda_rr` loss, which the dense model of the paper
//! does not train; its keys are dropped on loading and listed in the report.

use std::path::Path;

use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::bert::load::{drop_unused, encoder_prefix, load_encoder, save_encoder};
use crate::bert::{BertModel, EncoderInput, first_token, mean_pool};
use crate::context::ForwardContext;
use crate::error::Result;
use crate::params::{
    LoadReport, layer_norm as layer_norm_of, linear, save_layer_norm, save_linear, torch_linear,
};
use crate::weights::TensorMap;
use crate::{Checkpoint, EncoderConfig};

/// `torch.nn.LayerNorm`'s default epsilon (the official head passes none).
const HEAD_LAYER_NORM_EPS: f64 = 1e-5;

/// The head's key names: ours (the official `model.pt`'s), then ANCE's (pyserini's
/// `AnceEncoder`: `embeddingHead`, `norm`, the same two modules).
const PROJECTION_KEYS: [(&str, &str); 2] =
    [("dense_proj", "layer_norm"), ("embeddingHead", "norm")];

/// How the encoder's states become the query vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReformulatorConfig {
    /// Pool the mean of the non-padding tokens instead of the first token (the official code
    /// takes the first token; mean pooling with no projection and `norm_power = 2` makes a
    /// sentence-transformers encoder such as MiniLM its own first-pass query encoder).
    pub mean_pooling: bool,
    /// The official `dense_proj` + LayerNorm head on the pooled state.
    pub projection: bool,
    /// `p` of the final `F.normalize(v, p)`; `None` for no normalisation (the official dense
    /// runs pass `--norm_power nan`).
    pub norm_power: Option<f64>,
}

impl Default for ReformulatorConfig {
    /// The official `DenseDqr` of the dense runs: first token, projection, no normalisation.
    fn default() -> Self {
        Self {
            mean_pooling: false,
            projection: true,
            norm_power: None,
        }
    }
}

/// An encoder whose pooled state, projected and normalised, is the query vector.
#[derive(Module, Debug)]
pub struct QueryReformulator<B: Backend> {
    /// The encoder.
    pub encoder: BertModel<B>,
    /// `hidden → hidden` (with `projection`).
    pub dense_proj: Option<Linear<B>>,
    /// The LayerNorm after the projection (with `projection`).
    pub layer_norm: Option<LayerNorm<B>>,
    #[module(skip)]
    mean_pooling: bool,
    #[module(skip)]
    norm_power: Option<f64>,
}

impl<B: Backend> QueryReformulator<B> {
    /// Build from a checkpoint: the encoder from its HF keys; with `config.projection`, the
    /// head from `dense_proj.*` / `layer_norm.*` (or ANCE's `embeddingHead.*` / `norm.*`) when
    /// present and from `seed` otherwise (listed as initialised). Any other unused key is an
    /// error naming it; so is a head in the checkpoint when `projection` is off.
    pub fn load(
        checkpoint: Checkpoint,
        config: ReformulatorConfig,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        let Checkpoint {
            config: encoder_config,
            mut tensors,
        } = checkpoint;
        let mut report = LoadReport::default();
        let prefix = encoder_prefix(&tensors, encoder_config.family);
        drop_unused(&mut tensors, prefix, &mut report);
        for head in ["classifier.", "qa_outputs.", "psg_transform.", "reranker."] {
            report.dropped.extend(tensors.discard_prefix(head));
        }
        let encoder = load_encoder(&encoder_config, &mut tensors, prefix, device)?;
        let h = encoder_config.hidden_size;
        let (mut dense_proj, mut layer_norm) = (None, None);
        if config.projection {
            let found = PROJECTION_KEYS
                .iter()
                .find(|(dense, _)| tensors.contains(&format!("{dense}.weight")));
            match found {
                Some((dense, norm)) => {
                    dense_proj = Some(linear(&mut tensors, dense, h, h, device)?);
                    layer_norm = Some(layer_norm_of(
                        &mut tensors,
                        norm,
                        h,
                        HEAD_LAYER_NORM_EPS,
                        device,
                    )?);
                }
                None => {
                    let mut rng = StdRng::seed_from_u64(seed);
                    report
                        .initialised
                        .extend(["dense_proj".into(), "layer_norm".into()]);
                    dense_proj = Some(torch_linear(h, h, &mut rng, device));
                    layer_norm = Some(
                        LayerNormConfig::new(h)
                            .with_epsilon(HEAD_LAYER_NORM_EPS)
                            .init(device),
                    );
                }
            }
        }
        tensors.finish()?;
        Ok((
            Self {
                encoder,
                dense_proj,
                layer_norm,
                mean_pooling: config.mean_pooling,
                norm_power: config.norm_power,
            },
            report,
        ))
    }

    /// The query vectors.
    ///
    /// # Shapes
    /// - input: `[batch, seq]`
    /// - output: `[batch, hidden]`
    pub fn forward(&self, input: &EncoderInput<B>, ctx: &mut ForwardContext<B>) -> Tensor<B, 2> {
        let hidden = self.encoder.forward(input, ctx);
        let mut v = if self.mean_pooling {
            mean_pool(&hidden, &input.attention_mask)
        } else {
            first_token(&hidden)
        };
        if let (Some(dense), Some(norm)) = (&self.dense_proj, &self.layer_norm) {
            v = norm.forward(dense.forward(v));
        }
        match self.norm_power {
            None => v,
            Some(p) => {
                // F.normalize: v / max(‖v‖_p, 1e-12).
                let norm = v
                    .clone()
                    .abs()
                    .powf_scalar(p)
                    .sum_dim(1)
                    .powf_scalar(1.0 / p);
                v / norm.clamp_min(1e-12)
            }
        }
    }

    /// Write the reformulator into `dir`: `config.json` and `model.safetensors` with the
    /// encoder under its HF names (loadable by `transformers`' `AutoModel`, which ignores the
    /// head) and the head, if any, under `dense_proj.*` / `layer_norm.*` (read back by
    /// [`Self::load`]).
    pub fn save_pretrained(&self, config: &EncoderConfig, dir: &Path) -> Result<()> {
        let mut map = TensorMap::new(dir.join("model.safetensors"));
        save_encoder(&self.encoder, config.family.hf_prefix(), &mut map);
        if let (Some(dense), Some(norm)) = (&self.dense_proj, &self.layer_norm) {
            save_linear(dense, "dense_proj", &mut map);
            save_layer_norm(norm, "layer_norm", &mut map);
        }
        let arch = match config.family {
            crate::EncoderFamily::Roberta => "RobertaModel",
            crate::EncoderFamily::Electra => "ElectraModel",
            crate::EncoderFamily::Longformer => "LongformerModel",
            crate::EncoderFamily::Bert => "BertModel",
        };
        super::heads::write_checkpoint(config, arch, &map, dir)
    }
}

/// How long a reformulator input may grow (official `--max_seq_len`, `--max_q_len`,
/// `--max_p_len`; defaults 512, 128, 128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedbackLimits {
    /// Tokens in all, special tokens included.
    pub max_seq_len: usize,
    /// Query tokens, not counting `[CLS]` and its `[SEP]`.
    pub max_q_len: usize,
    /// Tokens per feedback passage, not counting its `[SEP]`.
    pub max_p_len: usize,
}

impl Default for FeedbackLimits {
    fn default() -> Self {
        Self {
            max_seq_len: 512,
            max_q_len: 128,
            max_p_len: 128,
        }
    }
}

/// The tokens of one reformulator input: `[CLS] query [SEP] p₁ [SEP] … pₖ [SEP]`, segment 0 for
/// the query part and 1 for the feedback (RoBERTa-family models read every token as segment 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackInput {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// The position of each `[SEP]`: the query's, then each feedback passage's.
    pub sep_indices: Vec<usize>,
}

impl FeedbackInput {
    /// Tokenise `query` with `passages` as feedback, as the official `QryRfmDataset` does:
    /// [`Self::query_tokens`], [`Self::passage_tokens`], then [`Self::from_tokens`].
    ///
    /// # Errors
    /// A text the tokenizer cannot encode, or an empty query (the error names it).
    pub fn new(
        tokenizer: &crate::TextTokenizer,
        query: &str,
        passages: &[&str],
        limits: FeedbackLimits,
    ) -> Result<Self> {
        let query = Self::query_tokens(tokenizer, query)?;
        let passages = passages
            .iter()
            .map(|p| Self::passage_tokens(tokenizer, p))
            .collect::<Result<Vec<_>>>()?;
        let passages: Vec<&[u32]> = passages.iter().map(Vec::as_slice).collect();
        Ok(Self::from_tokens(&query, &passages, limits))
    }

    /// `[CLS] query [SEP]`'s ids (the tokenizer's own special tokens).
    ///
    /// # Errors
    /// An empty query, or one the tokenizer cannot encode.
    pub fn query_tokens(tokenizer: &crate::TextTokenizer, query: &str) -> Result<Vec<u32>> {
        if query.trim().is_empty() {
            return Err(crate::ModelError::Input {
                index: 0,
                message: "the query is empty".into(),
            });
        }
        encode(tokenizer, query, true)
    }

    /// A feedback passage's ids, without special tokens.
    ///
    /// # Errors
    /// A passage the tokenizer cannot encode.
    pub fn passage_tokens(tokenizer: &crate::TextTokenizer, passage: &str) -> Result<Vec<u32>> {
        encode(tokenizer, passage, false)
    }

    /// The input from tokens: the query ([`Self::query_tokens`]) cut to `max_q_len` tokens
    /// between its special tokens; each passage ([`Self::passage_tokens`]), in order, cut to
    /// `min(max_p_len, max_seq_len − length − 1)` tokens and closed by the query's `[SEP]`;
    /// passages stop once fewer than 10 positions are left. So fewer passages than given may
    /// fit ([`Self::n_passages`]).
    ///
    /// # Panics
    /// When `query` is empty (it holds at least its special tokens).
    pub fn from_tokens(query: &[u32], passages: &[&[u32]], limits: FeedbackLimits) -> Self {
        let sep = *query
            .last()
            .expect("a query encodes to at least its special tokens");
        let mut ids = if query.len() > limits.max_q_len + 2 {
            let mut cut = query[..limits.max_q_len + 1].to_vec();
            cut.push(sep);
            cut
        } else {
            query.to_vec()
        };
        let mut type_ids = vec![0; ids.len()];
        let mut sep_indices = vec![ids.len() - 1];
        for passage in passages {
            let start = ids.len();
            if limits.max_seq_len.saturating_sub(start) < 10 {
                break;
            }
            let room = limits.max_p_len.min(limits.max_seq_len - start - 1);
            ids.extend_from_slice(&passage[..room.min(passage.len())]);
            ids.push(sep);
            type_ids.resize(ids.len(), 1);
            sep_indices.push(ids.len() - 1);
        }
        Self {
            ids,
            type_ids,
            sep_indices,
        }
    }

    /// Feedback passages that fit.
    pub fn n_passages(&self) -> usize {
        self.sep_indices.len() - 1
    }

    /// The same input with its first `n` feedback passages only (the official collator's
    /// comparative revisions: the tokens up to and including the `n`-th passage's `[SEP]`).
    /// `n` past [`Self::n_passages`] keeps them all.
    pub fn first(&self, n: usize) -> Self {
        let n = n.min(self.n_passages());
        let end = self.sep_indices[n] + 1;
        Self {
            ids: self.ids[..end].to_vec(),
            type_ids: self.type_ids[..end].to_vec(),
            sep_indices: self.sep_indices[..=n].to_vec(),
        }
    }
}

fn encode(tokenizer: &crate::TextTokenizer, text: &str, special: bool) -> Result<Vec<u32>> {
    let enc = tokenizer
        .inner()
        .encode(text, special)
        .map_err(|e| crate::ModelError::Input {
            index: 0,
            message: format!("{e} (text `{text}`)"),
        })?;
    Ok(enc.get_ids().to_vec())
}

/// Inputs as one batch, to be padded by [`crate::EncodedBatch::to_input`].
pub fn feedback_batch(
    inputs: &[FeedbackInput],
    tokenizer: &crate::TextTokenizer,
) -> crate::EncodedBatch {
    crate::EncodedBatch {
        ids: inputs.iter().map(|i| i.ids.clone()).collect(),
        type_ids: inputs.iter().map(|i| i.type_ids.clone()).collect(),
        pad_id: tokenizer.pad_id(),
    }
}
