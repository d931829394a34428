//! Neuron-specific LoRA fine-tuning of a decoder, trained on one language and evaluated on others
//! (Mondal et al.'s zero-shot cross-lingual protocol): its TOML sections ([`spec`]), the cell
//! ([`cell`]), the one cell loop ([`task::run`]) with the adapters, training loop and
//! interventions every task shares ([`tuning`]), and two task families implementing
//! [`task::LoraTask`]: classification ([`classify`]: XNLI and JSONL topic tasks, described
//! below) and generative QA ([`generative`]: XQuAD).
//!
//! 1. **Data.** The task's training file and this cell's evaluation files are read
//!    ([`classify::read_task`]); each input is `text` or `text <eos> text_pair` (the tokenizer's EOS token
//!    as text, as Mondal et al.'s `premise {eos} hypothesis`), tokenised and cut to
//!    `max_seq_len` tokens. Mondal et al. drop the examples of 256 tokens or more instead of
//!    cutting them; cutting keeps every example of a small evaluation set.
//! 2. **Model.** The decoder with a fresh linear head (`score`, no bias, `N(0, 0.02²)`) on the
//!    last non-padding token (or, with `position = "last"`, the padded batch's last position
//!    as Mondal et al.'s XNLI code; the padding is the EOS token there too). The decoder is frozen;
//!    every `targets` linear of every layer gets an adapter, and a neuron set adds a `gate_proj`
//!    adapter whose update is masked to the set's neurons ([`models::LlamaModel::with_lora`]).
//!    The head and the adapters train.
//! 3. **Neuron sets** come from a study of the grid (its `neurons.json`) or a file. The cell's
//!    `neurons` value names one language, a union, `target` (the cell's evaluation language),
//!    or `random:` any of these: random neurons with the same per-layer counts.
//! 4. **Training.** AdamW ([`crate::training::AdamW`], β₁ = `adam_beta1`) under the linear
//!    warmup/decay schedule, global-norm clipping, `grad_accum_steps`, a seeded shuffle per
//!    epoch. There is no model selection: the zero-shot protocol has no target-language
//!    development set, so the model after the last step is evaluated.
//! 5. **Evaluation.** Accuracy per evaluation language, with the adapters merged into the
//!    weights. With `intervention`, each language is evaluated again with its own neurons set
//!    to zero, a constant or their mean (Mondal et al.'s test-time intervention, on the
//!    fine-tuned model). Accuracy is over all examples (Mondal et al. average per-batch
//!    accuracies with the last partial batch dropped).
//!
//! A killed cell starts again from its first step (the grid skips finished cells).

pub mod cell;
pub mod classify;
pub mod generative;
pub mod kind;
pub mod spec;
pub mod task;
pub mod tuning;
