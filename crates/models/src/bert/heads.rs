//! Task heads on a BERT-family encoder, laid out as HF's task models so checkpoints load both ways.
//!
//! | head | HF class | keys |
//! |---|---|---|
//! | [`SequenceClassifier`], pooler pooling (BERT default) | `BertForSequenceClassification` | `classifier` on `tanh(pooler(h_[CLS]))` |
//! | [`SequenceClassifier`], first-token pooling (RoBERTa / ELECTRA default) | `RobertaForSequenceClassification`, `ElectraForSequenceClassification` | `classifier.dense`, `classifier.out_proj` |
//! | [`SequenceClassifier`], mean pooling | none (this crate's own) | `classifier` on the masked mean |
//! | [`SpanExtractor`] | `*ForQuestionAnswering` | `qa_outputs` (`[2, hidden]`) |
//! | [`RelevanceScorer`] | a cross-encoder: `*ForSequenceClassification` with one label | as the classifier |
//!
//! Regression (STS-B) is a classifier with one output. Dropout sites follow HF: before the
//! classifier (BERT), or before `dense` and before `out_proj` (RoBERTa: tanh, ELECTRA: GELU).

use std::path::Path;

use burn::nn::Linear;
use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::bert::config::{Activation, EncoderConfig, EncoderFamily};
use crate::bert::load::{drop_unused, encoder_prefix, load_encoder, save_encoder};
use crate::bert::{BertModel, EncoderInput, Pooler, activate, first_token, mean_pool};
use crate::context::ForwardContext;
use crate::error::{ModelError, Result};
use crate::params::{LoadReport, fresh_linear, linear, save_linear};
use crate::weights::TensorMap;

/// How a sequence is reduced to one vector before a classification head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// BERT's pooler, `tanh(W h_[CLS] + b)`, then a linear classifier.
    Pooler,
    /// The first token's hidden state through `dense → act → out_proj` (RoBERTa, ELECTRA).
    FirstToken,
    /// Mean over non-padding tokens, then a linear classifier.
    Mean,
}

impl Pooling {
    /// HF's choice for each family.
    pub fn default_for(family: EncoderFamily) -> Self {
        match family {
            EncoderFamily::Bert => Self::Pooler,
            EncoderFamily::Roberta | EncoderFamily::Electra | EncoderFamily::Longformer => {
                Self::FirstToken
            }
        }
    }
}

/// A checkpoint read from disk: its config and tensors.
#[derive(Debug)]
pub struct Checkpoint {
    /// `config.json`.
    pub config: EncoderConfig,
    /// The tensors.
    pub tensors: TensorMap,
}

/// `dir` looks like an encoder checkpoint folder: it exists, and it is not a GGUF decoder's
/// folder. (The files themselves are read and checked by [`Checkpoint::open`].)
pub fn check_encoder_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(ModelError::not_found(
            dir,
            "an encoder checkpoint folder (config.json and weights)",
        ));
    }
    if !dir.join("config.json").is_file()
        && let Ok(Some(gguf)) = crate::llama::load::gguf_file(dir)
    {
        return Err(ModelError::Format {
            path: dir.to_path_buf(),
            message: format!(
                "holds a GGUF decoder ({}), not an encoder checkpoint (config.json and weights)",
                gguf.file_name().unwrap_or_default().to_string_lossy()
            ),
        });
    }
    Ok(())
}

/// A classifier head saved in the checkpoint at `dir` (a fine-tuned model's
/// `classifier.weight` or `classifier.out_proj.weight`) has `num_labels` outputs, read from the
/// safetensors header alone ([`crate::weights::header_shapes`]); a checkpoint without one
/// passes (its head is initialised). For checks before a run, where loading would fail later.
pub fn check_classifier_head(dir: &Path, num_labels: usize) -> Result<()> {
    let Some(shapes) = crate::weights::header_shapes(dir)? else {
        return Ok(());
    };
    for key in ["classifier.out_proj.weight", "classifier.weight"] {
        if let Some(shape) = shapes.get(key)
            && shape.first() != Some(&num_labels)
        {
            return Err(ModelError::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "its saved classifier head `{key}` has shape {shape:?}, {} outputs; the task \
                     has {num_labels} (use the pretrained model, or a dataset with as many labels)",
                    shape.first().copied().unwrap_or(0)
                ),
            });
        }
    }
    Ok(())
}

impl Checkpoint {
    /// Read `config.json` and the weights of a checkpoint directory.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        check_encoder_dir(dir)?;
        Ok(Self {
            config: EncoderConfig::from_file(dir)?,
            tensors: TensorMap::open(dir)?,
        })
    }
}

/// Load a bare encoder (no task head). Task-head and pretraining-head keys in the checkpoint are
/// dropped and listed in the report; anything else unused is an error.
pub fn load_bare_encoder<B: Backend>(
    checkpoint: Checkpoint,
    device: &B::Device,
) -> Result<(BertModel<B>, LoadReport)> {
    let Checkpoint {
        config,
        mut tensors,
    } = checkpoint;
    let mut report = LoadReport::default();
    let prefix = encoder_prefix(&tensors, config.family);
    drop_unused(&mut tensors, prefix, &mut report);
    for head in ["classifier.", "qa_outputs."] {
        report.dropped.extend(tensors.discard_prefix(head));
    }
    let model = load_encoder(&config, &mut tensors, prefix, device)?;
    tensors.finish()?;
    Ok((model, report))
}

/// Pooling plus a linear (or two-layer) classifier.
#[derive(Module, Debug)]
pub struct ClassificationHead<B: Backend> {
    /// Present for first-token pooling: `hidden → hidden`.
    pub dense: Option<Linear<B>>,
    /// `hidden → num_labels`.
    pub out_proj: Linear<B>,
    #[module(skip)]
    pooling: Pooling,
    #[module(skip)]
    act: Activation,
    #[module(skip)]
    dropout: f64,
}

/// An encoder with a sequence classification (or regression) head.
#[derive(Module, Debug)]
pub struct SequenceClassifier<B: Backend> {
    /// The encoder.
    pub encoder: BertModel<B>,
    /// The head.
    pub head: ClassificationHead<B>,
}

impl<B: Backend> SequenceClassifier<B> {
    /// Build from a checkpoint. The head is loaded when the checkpoint has one of the right shape
    /// (a fine-tuned model) and initialised from `seed` when it has none (a pretrained model);
    /// a head of another shape is an error. `pooling: None` picks HF's default for the family.
    pub fn load(
        checkpoint: Checkpoint,
        num_labels: usize,
        pooling: Option<Pooling>,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        let Checkpoint {
            config,
            mut tensors,
        } = checkpoint;
        let mut report = LoadReport::default();
        let mut rng = StdRng::seed_from_u64(seed);
        let prefix = encoder_prefix(&tensors, config.family);
        drop_unused(&mut tensors, prefix, &mut report);
        report.dropped.extend(tensors.discard_prefix("qa_outputs."));
        let mut encoder = load_encoder(&config, &mut tensors, prefix, device)?;
        let pooling = pooling.unwrap_or_else(|| Pooling::default_for(config.family));
        let h = config.hidden_size;
        if pooling == Pooling::Pooler && encoder.pooler.is_none() {
            encoder.pooler = Some(Pooler {
                dense: fresh_linear(h, h, &mut rng, device),
            });
            report.initialised.push(format!("{prefix}pooler"));
        }
        let mut head_linear = |key: &str, d_in: usize, d_out: usize, report: &mut LoadReport| {
            if tensors.contains(&format!("{key}.weight")) {
                linear(&mut tensors, key, d_in, d_out, device)
            } else {
                report.initialised.push(key.to_string());
                Ok(fresh_linear(d_in, d_out, &mut rng, device))
            }
        };
        let (dense, out_proj) = match pooling {
            Pooling::FirstToken => (
                Some(head_linear("classifier.dense", h, h, &mut report)?),
                head_linear("classifier.out_proj", h, num_labels, &mut report)?,
            ),
            Pooling::Pooler | Pooling::Mean => {
                (None, head_linear("classifier", h, num_labels, &mut report)?)
            }
        };
        tensors.finish()?;
        let act = match config.family {
            EncoderFamily::Electra => Activation::Gelu,
            _ => Activation::Relu, // unused: RoBERTa's head uses tanh, handled in `forward`
        };
        let head = ClassificationHead {
            dense,
            out_proj,
            pooling,
            act,
            dropout: config.classifier_dropout,
        };
        Ok((Self { encoder, head }, report))
    }

    /// Number of outputs.
    pub fn num_labels(&self) -> usize {
        self.head.out_proj.weight.dims()[1]
    }

    /// Logits (or regression outputs). A Longformer input without a global attention mask gets
    /// global attention on its first token, as HF's `LongformerForSequenceClassification` sets.
    ///
    /// # Shapes
    /// - input: `[batch, seq]`
    /// - output: `[batch, num_labels]`
    pub fn forward(&self, input: &EncoderInput<B>, ctx: &mut ForwardContext<B>) -> Tensor<B, 2> {
        let hidden = if self.encoder.family() == EncoderFamily::Longformer
            && input.global_attention_mask.is_none()
        {
            self.encoder
                .forward(&input.clone().with_global_first_token(), ctx)
        } else {
            self.encoder.forward(input, ctx)
        };
        let head = &self.head;
        match head.pooling {
            Pooling::Pooler => {
                let pooled = self
                    .encoder
                    .pool(&hidden)
                    .expect("a pooler is set at load time");
                head.out_proj.forward(ctx.dropout(pooled, head.dropout))
            }
            Pooling::Mean => {
                let pooled = mean_pool(&hidden, &input.attention_mask);
                head.out_proj.forward(ctx.dropout(pooled, head.dropout))
            }
            Pooling::FirstToken => {
                let dense = head
                    .dense
                    .as_ref()
                    .expect("first-token pooling has a dense layer");
                let x = dense.forward(ctx.dropout(first_token(&hidden), head.dropout));
                let x = match self.encoder.family() {
                    EncoderFamily::Electra => activate(head.act, x),
                    _ => x.tanh(),
                };
                head.out_proj.forward(ctx.dropout(x, head.dropout))
            }
        }
    }

    /// Write the model as an HF checkpoint (`config.json`, `model.safetensors`) into `dir`,
    /// loadable by `transformers` as `*ForSequenceClassification` (pooler and first-token
    /// pooling). `config` is the encoder's config; `labels` name the outputs.
    pub fn save_pretrained(
        &self,
        config: &EncoderConfig,
        labels: &[String],
        dir: &Path,
    ) -> Result<()> {
        let mut map = TensorMap::new(dir.join("model.safetensors"));
        save_encoder(&self.encoder, config.family.hf_prefix(), &mut map);
        match &self.head.dense {
            Some(dense) => {
                save_linear(dense, "classifier.dense", &mut map);
                save_linear(&self.head.out_proj, "classifier.out_proj", &mut map);
            }
            None => save_linear(&self.head.out_proj, "classifier", &mut map),
        }
        let mut config = config.clone();
        config.labels = labels.to_vec();
        let arch = match config.family {
            EncoderFamily::Bert => "BertForSequenceClassification",
            EncoderFamily::Roberta => "RobertaForSequenceClassification",
            EncoderFamily::Electra => "ElectraForSequenceClassification",
            EncoderFamily::Longformer => "LongformerForSequenceClassification",
        };
        write_checkpoint(&config, arch, &map, dir)
    }
}

/// An encoder with start/end logits for extractive QA.
#[derive(Module, Debug)]
pub struct SpanExtractor<B: Backend> {
    /// The encoder.
    pub encoder: BertModel<B>,
    /// `hidden → 2` (start, end).
    pub qa_outputs: Linear<B>,
}

impl<B: Backend> SpanExtractor<B> {
    /// Build from a checkpoint; `qa_outputs` is loaded if present, else initialised from `seed`.
    pub fn load(
        checkpoint: Checkpoint,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        let Checkpoint {
            config,
            mut tensors,
        } = checkpoint;
        let mut report = LoadReport::default();
        let prefix = encoder_prefix(&tensors, config.family);
        drop_unused(&mut tensors, prefix, &mut report);
        report.dropped.extend(tensors.discard_prefix("classifier."));
        let encoder = load_encoder(&config, &mut tensors, prefix, device)?;
        let h = config.hidden_size;
        let qa_outputs = if tensors.contains("qa_outputs.weight") {
            linear(&mut tensors, "qa_outputs", h, 2, device)?
        } else {
            report.initialised.push("qa_outputs".into());
            fresh_linear(h, 2, &mut StdRng::seed_from_u64(seed), device)
        };
        tensors.finish()?;
        Ok((
            Self {
                encoder,
                qa_outputs,
            },
            report,
        ))
    }

    /// Start and end logits.
    ///
    /// # Shapes
    /// - input: `[batch, seq]`
    /// - output: (`[batch, seq]`, `[batch, seq]`)
    pub fn forward(
        &self,
        input: &EncoderInput<B>,
        ctx: &mut ForwardContext<B>,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let hidden = self.encoder.forward(input, ctx);
        let [batch, seq, _] = hidden.dims();
        let logits = crate::fused::linear(&self.qa_outputs, hidden); // [batch, seq, 2]
        let start = logits
            .clone()
            .slice([0..batch, 0..seq, 0..1])
            .reshape([batch, seq]);
        let end = logits.slice([0..batch, 0..seq, 1..2]).reshape([batch, seq]);
        (start, end)
    }
}

impl<B: Backend> SpanExtractor<B> {
    /// Write the model as an HF checkpoint (`config.json`, `model.safetensors`) into `dir`,
    /// loadable by `transformers` as `*ForQuestionAnswering`.
    pub fn save_pretrained(&self, config: &EncoderConfig, dir: &Path) -> Result<()> {
        let mut map = TensorMap::new(dir.join("model.safetensors"));
        save_encoder(&self.encoder, config.family.hf_prefix(), &mut map);
        save_linear(&self.qa_outputs, "qa_outputs", &mut map);
        let arch = match config.family {
            EncoderFamily::Bert => "BertForQuestionAnswering",
            EncoderFamily::Roberta => "RobertaForQuestionAnswering",
            EncoderFamily::Electra => "ElectraForQuestionAnswering",
            EncoderFamily::Longformer => "LongformerForQuestionAnswering",
        };
        write_checkpoint(config, arch, &map, dir)
    }
}

/// A pointwise relevance scorer (cross-encoder): a one-output sequence classifier over
/// `[CLS] query [SEP] passage [SEP]`.
#[derive(Module, Debug)]
pub struct RelevanceScorer<B: Backend> {
    /// The one-output classifier.
    pub classifier: SequenceClassifier<B>,
}

impl<B: Backend> RelevanceScorer<B> {
    /// Build from a checkpoint (see [`SequenceClassifier::load`]).
    pub fn load(
        checkpoint: Checkpoint,
        pooling: Option<Pooling>,
        seed: u64,
        device: &B::Device,
    ) -> Result<(Self, LoadReport)> {
        let (classifier, report) = SequenceClassifier::load(checkpoint, 1, pooling, seed, device)?;
        Ok((Self { classifier }, report))
    }

    /// One score per query–passage pair.
    ///
    /// # Shapes
    /// - input: `[batch, seq]`
    /// - output: `[batch]`
    pub fn forward(&self, input: &EncoderInput<B>, ctx: &mut ForwardContext<B>) -> Tensor<B, 1> {
        let logits = self.classifier.forward(input, ctx);
        let batch = logits.dims()[0];
        logits.reshape([batch])
    }
}

pub(crate) fn write_checkpoint(
    config: &EncoderConfig,
    arch: &str,
    map: &TensorMap,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    let mut json: serde_json::Value =
        serde_json::from_str(&config.to_json()).expect("to_json writes valid JSON");
    json["architectures"] = serde_json::json!([arch]);
    let path = dir.join("config.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).expect("valid JSON"),
    )
    .map_err(crate::error::io_err(&path))?;
    map.write_safetensors(&dir.join("model.safetensors"))
}
