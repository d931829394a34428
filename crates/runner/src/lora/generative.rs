//! One generative fine-tuning cell: extractive QA as instruction following (Mondal et al.'s
//! XQuAD protocol, `lora_instruct_finetune.py` / `xquad_eval.py` of soumenkm/LSN).
//!
//! 1. **Data.** SQuAD v1.1-format JSON ([`crate::data::crosslingual::read_squad_json`]); with
//!    `split = 0.8` the training file keeps its first 80 % of questions and each evaluation
//!    file its last 20 %. Each question becomes the Alpaca prompt of [`alpaca_prompt`], with
//!    the first gold answer and the EOS token appended for training. A text of
//!    `max_seq_len − 1` tokens or more is left out (and counted), as the official code does: a
//!    cut would lose the answer.
//! 2. **Model.** The causal LM, frozen, with the cell's adapters (Mondal et al.: q, k, v and the
//!    masked `gate_proj`; set `lora = { targets = [...] }` on the task).
//! 3. **Training.** The LM loss over the whole sequence, prompt included (the official labels
//!    mask only the padding), mean over the batch's predicted tokens ([`models::lm_loss`]);
//!    the optimiser and schedule are the classification cells' ([`crate::lora`]).
//! 4. **Evaluation.** Greedy decoding from the prompt, up to `max_new_tokens` (default 100)
//!    tokens, stopping after the EOS token, adapters merged. Scores per question:
//!    - on token ids, as Mondal et al.: EM = the generated ids (EOS included) equal the ids of
//!      `" " + answer + eos` (no special tokens); precision, recall and F1 of their multiset
//!      overlap ([`crate::metrics::token_id_scores`]);
//!    - on text, as the official SQuAD v1.1 script: the decoded generation (special tokens
//!      skipped, trimmed) against every gold answer ([`crate::metrics::squad_em_f1`]).
//!
//!    With `lora.intervention`, each language is decoded again with its neurons replaced.
//!
//! Differences from the official code: decoding uses a key/value cache (the official code
//! re-runs the whole sequence at every step, same argmax up to float rounding) and stops at
//! the model's context length instead of sliding a `max_seq_len` window; evaluation texts of
//! `max_seq_len − 1` tokens or more are left out as in training.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use models::{
    DecoderCheckpoint, DecoderTokenizer, ForwardContext, LlamaModel, PeftTask, generate_greedy,
    lm_loss,
};

use crate::data::crosslingual::{QaExample, read_squad_json};
use crate::harness::results::write_atomic;
use crate::lora::cell::LoraCell;
use crate::lora::task::{Evaluation, LoraTask};
use crate::lora::tuning::{Adapters, cell_part, pad_id};
use crate::metrics::{squad_em_f1, token_id_scores};

/// The score names of a QA cell, in table order; the first is the main metric.
pub const QA_SCORES: [&str; 4] = ["token_f1", "token_em", "squad_f1", "squad_em"];

/// Tokens generated per answer unless the task says otherwise (Mondal et al.'s 100).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 100;

/// Mondal et al.'s Alpaca prompt, verbatim: their triple-quoted template after `.strip()`, so
/// the 12-space indentation of its inner lines and the space after the context stay. Context,
/// question and answer are trimmed. With an answer (training) the text ends
/// `### Response: {answer}{eos}`; without (evaluation) it ends `### Response:`.
pub fn alpaca_prompt(context: &str, question: &str, answer: Option<(&str, &str)>) -> String {
    const INDENT: &str = "            ";
    let mut text = format!(
        "Below is an instruction that describes a task, paired with an input that provides \
         further context. Write a response that appropriately completes the request.\n\n\
         {INDENT}### Instruction:\n\
         {INDENT}Answer the question based on the given context.\n\n\
         {INDENT}### Input:\n\
         {INDENT}Context: {} \n\
         {INDENT}Question: {}\n\n\
         {INDENT}### Response:",
        context.trim(),
        question.trim()
    );
    if let Some((answer, eos)) = answer {
        let _ = write!(text, " {}{eos}", answer.trim());
    }
    text
}

/// One question, tokenised.
#[derive(Debug, Clone)]
pub struct QaItem {
    /// The question.
    pub example: QaExample,
    /// Training: prompt, answer and EOS; evaluation: the prompt.
    pub ids: Vec<u32>,
    /// The ids of `" " + answer + eos` without special tokens (the token-level gold).
    pub gold_ids: Vec<u32>,
}

/// Tokenise questions for training (`train`: with the answer) or evaluation, leaving out the
/// texts of `max_len − 1` tokens or more (Mondal et al.'s filter). Returns the kept items and
/// how many were left out.
pub fn encode_questions(
    tokenizer: &DecoderTokenizer,
    examples: Vec<QaExample>,
    max_len: usize,
    train: bool,
) -> Result<(Vec<QaItem>, usize)> {
    let eos = tokenizer.eos_token();
    let mut kept = Vec::with_capacity(examples.len());
    let mut left_out = 0;
    for example in examples {
        let answer = example.answers[0].1.trim().to_string();
        let text = alpaca_prompt(
            &example.context,
            &example.question,
            train.then_some((answer.as_str(), eos)),
        );
        let ids = tokenizer.encode(&text)?;
        if ids.len() + 1 >= max_len {
            left_out += 1;
            continue;
        }
        let gold_ids = tokenizer.encode_plain(&format!(" {answer}{eos}"))?;
        kept.push(QaItem {
            example,
            ids,
            gold_ids,
        });
    }
    Ok((kept, left_out))
}

/// The scores of one generation, keyed by [`QA_SCORES`].
pub fn qa_scores(
    tokenizer: &DecoderTokenizer,
    item: &QaItem,
    generated: &[u32],
) -> Result<([f64; 4], String)> {
    let (token_em, _, _, token_f1) = token_id_scores(generated, &item.gold_ids);
    let text = tokenizer.decode(generated)?.trim().to_string();
    let golds: Vec<String> = item.example.answers.iter().map(|a| a.1.clone()).collect();
    let (squad_em, squad_f1) = squad_em_f1(&text, &golds);
    Ok(([token_f1, token_em, squad_f1, squad_em], text))
}

/// Quote a CSV field (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Generative QA: the decoder's LM loss over prompt, answer and EOS; greedy decoding, scored
/// by [`QA_SCORES`] per language (see the module docs).
pub struct GenerativeQa {
    tokenizer: DecoderTokenizer,
    pad: u32,
    stop: Vec<u32>,
    max_new: usize,
}

impl LoraTask for GenerativeQa {
    type Example = QaItem;
    type Model<B: AutodiffBackend> = LlamaModel<B>;
    type Valid<B: Backend> = LlamaModel<B>;
    const SCORES: &'static [&'static str] = &QA_SCORES;
    const NOUN: &'static str = "questions";

    fn new(cell: &LoraCell, checkpoint: &DecoderCheckpoint, tokenizer: DecoderTokenizer) -> Self {
        let stop = match tokenizer.eos_id() {
            Some(id) => vec![id],
            None => checkpoint.config.eos_token_ids.clone(),
        };
        Self {
            tokenizer,
            pad: pad_id(&checkpoint.config),
            stop,
            max_new: cell.task.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
        }
    }

    fn predictions_header() -> String {
        format!(
            "language,id,intervened,prediction,gold,generated_ids,{}",
            QA_SCORES.join(",")
        )
    }

    fn examples(
        &self,
        cell: &LoraCell,
        language: &str,
        path: &Path,
        train: bool,
    ) -> Result<(Vec<QaItem>, String)> {
        let t = &cell.train;
        let mut questions = read_squad_json(path)?;
        cell_part(&mut questions, cell, train);
        let (items, left_out) = encode_questions(&self.tokenizer, questions, t.max_seq_len, train)?;
        if train {
            anyhow::ensure!(
                !items.is_empty(),
                "{}: no training question fits in max_seq_len = {}",
                path.display(),
                t.max_seq_len
            );
            let line = format!(
                "{} questions ({left_out} left out: {} tokens or more)",
                items.len(),
                t.max_seq_len - 1
            );
            return Ok((items, line));
        }
        anyhow::ensure!(
            !items.is_empty(),
            "language {language}: no evaluation question left in {} (split {:?}, max_seq_len {})",
            path.display(),
            cell.task.split,
            t.max_seq_len
        );
        let line = format!("{} questions ({left_out} left out)", items.len());
        Ok((items, line))
    }

    fn load<B: AutodiffBackend>(
        &self,
        checkpoint: DecoderCheckpoint,
        cell: &LoraCell,
        device: &B::Device,
    ) -> Result<LlamaModel<B>> {
        let (model, _) = checkpoint
            .load::<B>(device)
            .with_context(|| format!("model `{}`", cell.model_name))?;
        Ok(model)
    }

    fn with_decoder<B: AutodiffBackend>(
        model: LlamaModel<B>,
        attach: impl FnOnce(LlamaModel<B>) -> Result<(LlamaModel<B>, Adapters)>,
    ) -> Result<(LlamaModel<B>, Adapters)> {
        attach(model)
    }

    fn decoder<B: Backend>(model: &LlamaModel<B>) -> &LlamaModel<B> {
        model
    }

    const PEFT_TASK: PeftTask = PeftTask::CausalLm;

    fn head<B: Backend>(_: &LlamaModel<B>) -> Option<&Linear<B>> {
        None
    }

    fn loss<B: AutodiffBackend>(
        &self,
        model: &LlamaModel<B>,
        batch: &[&QaItem],
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let rows: Vec<&[u32]> = batch.iter().map(|q| q.ids.as_slice()).collect();
        let (ids, mask) = super::tuning::batch::<B>(&rows, self.pad, device);
        lm_loss(model, ids, mask, &mut ForwardContext::eval())
    }

    fn merged<B: Backend>(model: LlamaModel<B>) -> LlamaModel<B> {
        model.merge_lora()
    }

    fn evaluate<B: Backend>(
        &self,
        model: &LlamaModel<B>,
        items: &[QaItem],
        eval: Evaluation<'_, B>,
    ) -> Result<Vec<f64>> {
        let lang = eval.language;
        let mut official = serde_json::Map::new();
        let mut sums = [0.0; 4];
        for (done, item) in items.iter().enumerate() {
            (eval.progress)(done + 1, items.len());
            let generated = generate_greedy(
                model,
                &item.ids,
                self.max_new,
                &self.stop,
                eval.ctx,
                eval.device,
            );
            let (scores, text) = qa_scores(&self.tokenizer, item, &generated)?;
            for (s, v) in sums.iter_mut().zip(scores) {
                *s += v;
            }
            let ids: Vec<String> = generated.iter().map(u32::to_string).collect();
            let _ = writeln!(
                eval.predictions,
                "{lang},{},{},{},{},{},{}",
                csv_field(&item.example.id),
                eval.intervened,
                csv_field(&text),
                csv_field(&item.example.answers[0].1),
                ids.join(" "),
                scores.map(|v| v.to_string()).join(",")
            );
            if !eval.intervened {
                official.insert(item.example.id.clone(), text.into());
            }
        }
        if !eval.intervened {
            write_atomic(
                &eval.dir.join(format!("predictions.{lang}.json")),
                serde_json::to_string_pretty(&official)?.as_bytes(),
            )?;
        }
        Ok(sums.map(|s| s / items.len() as f64).to_vec())
    }

    fn describe(s: &[f64]) -> String {
        format!(
            "token F1 {:.4}, EM {:.4}; SQuAD F1 {:.4}, EM {:.4}",
            s[0], s[1], s[2], s[3]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_the_official_template_after_strip() {
        let expected = "Below is an instruction that describes a task, paired with an input \
            that provides further context. Write a response that appropriately completes the \
            request.\n\n            ### Instruction:\n            Answer the question based on \
            the given context.\n\n            ### Input:\n            Context: C c \n            \
            Question: Q?\n\n            ### Response:";
        assert_eq!(alpaca_prompt(" C c\n", "Q? ", None), expected);
        assert_eq!(
            alpaca_prompt("C c", "Q?", Some((" A ", "</s>"))),
            format!("{expected} A</s>")
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, \"b\""), "\"a, \"\"b\"\"\"");
    }
}
