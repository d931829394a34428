//! Transformer models for neuron-level research, generic over the Burn backend.
//!
//! - The BERT family of encoders (BERT, RoBERTa, ELECTRA discriminator, and Longformer with its
//!   sliding-window and global attention, [`bert::longformer`]) with task heads, strict
//!   loading of HF checkpoints, saving back to HF layout, tokenizers, and [`view_losses`], which
//!   runs the views of a comparative (CmpLoss) step batched or one after another.
//! - Llama-family decoders ([`llama`]: Llama 2 / 3 / 3.1, Mistral, SmolLM) loaded from HF
//!   safetensors or GGUF ([`gguf`]), with perplexity, greedy generation and a classification head.
//! - LoL's dense query reformulator for pseudo-relevance feedback ([`QueryReformulator`], with
//!   the official input layout of a query and its feedback passages, [`FeedbackInput`]).
//! - LoRA adapters ([`lora`]) for any linear, with Mondal et al.'s neuron-specific variant on a
//!   decoder's `gate_proj` ([`LlamaModel::with_lora`]), merging and PEFT-named files.
//!
//! - [`fused`]: linears over flattened rows (one matrix product for the weight's gradient, as
//!   PyTorch), and with the `tch` feature layer and RMS norm, softmax and log-softmax as one
//!   LibTorch kernel each with torch's own backward; Burn's composed ops elsewhere.
//!
//! Every forward pass takes a [`ForwardContext`] that the caller owns: it supplies dropout masks
//! (from a seeded RNG, with the nested views of CmpDrop), FFN neuron masks and head masks, and
//! records FFN activations. Burn has no forward hooks; this is how the research code reaches
//! inside the model without global state.
//!
//! ```no_run
//! use burn::backend::NdArray;
//! use models::{Checkpoint, ForwardContext, TextTokenizer, load_bare_encoder, mean_pool};
//!
//! # fn main() -> Result<(), models::ModelError> {
//! let device = Default::default();
//! let checkpoint = Checkpoint::open("path/to/all-MiniLM-L6-v2")?;
//! let tokenizer = TextTokenizer::from_dir("path/to/all-MiniLM-L6-v2", &checkpoint.config)?;
//! let (model, _report) = load_bare_encoder::<NdArray>(checkpoint, &device)?;
//! let input = tokenizer.encode_texts(&["A man is eating food."])?.to_input(&device);
//! let hidden = model.forward(&input, &mut ForwardContext::eval());
//! let embedding = mean_pool(&hidden, &input.attention_mask); // [1, 384]
//! # Ok(()) }
//! ```

pub mod bert;
pub mod context;
pub mod error;
pub mod fused;
pub mod gguf;
pub mod llama;
pub mod lora;
pub mod params;
pub mod views;
pub mod weights;

pub use bert::config::{Activation, EncoderConfig, EncoderFamily};
pub use bert::heads::{
    Checkpoint, Pooling, RelevanceScorer, SequenceClassifier, SpanExtractor, check_classifier_head,
    check_encoder_dir, load_bare_encoder,
};
pub use bert::reformulator::{
    FeedbackInput, FeedbackLimits, QueryReformulator, ReformulatorConfig, feedback_batch,
};
pub use bert::text::{EncodedBatch, TextTokenizer, copy_tokenizer_files};
pub use bert::{BertModel, EncoderInput, first_token, mean_pool};
pub use context::{
    ForwardContext, GateStatistics, HostGateStatistics, NeuronReplacement, ReplaceAt, ReplaceWith,
    quantile_from_order_statistics,
};
pub use error::{ModelError, Result};
pub use llama::load::{DecoderCheckpoint, is_decoder, load_llama, save_llama};
pub use llama::text::{
    DecoderTokenizer, Perplexity, generate_greedy, lm_loss, perplexity, token_ids, windows_nll,
};
pub use llama::{
    ADAPTER_CONFIG, ADAPTER_WEIGHTS, DecoderClassifier, DecoderConfig, DecoderFamily, KvCache,
    LORA_TARGETS, LayerLora, LlamaModel, PeftAdapter, PeftConfig, PeftTask, RopeScaling, ScoreHead,
    TokenPosition, load_lora, load_peft, save_lora, save_peft,
};
pub use lora::{LoraAdapter, LoraConfig, LoraInit};
pub use params::LoadReport;
pub use views::{RowBatch, ViewExecution, view_losses};
pub use weights::{HostTensor, TensorMap};
