//! Extractive-QA training cells: an encoder with a span head ([`models::SpanExtractor`]) on
//! SQuAD v1.1 or HotpotQA (distractor setting), trained with the start/end cross-entropy or the
//! comparative loss, and scored by SQuAD exact match and F1 (percent, as the official
//! `evaluate-v1.1.py` prints them) on the n-best decoded answers ([`crate::encoder::extractive::squad`]).
//!
//! **SQuAD.** Training units are the windows of [`crate::encoder::extractive::squad::squad_windows`] (`max_seq_len`
//! tokens, `doc_stride` overlap, windows without the answer labelled at CLS), as the CmpLoss
//! code's HF preprocessing makes them. The comparative loss compares dropout views (`n_drop`;
//! the paper: 2); SQuAD has no segments to crop.
//!
//! **HotpotQA.** A question has ten paragraphs, two of them supporting. The context fed to the
//! encoder is `yes no ` followed by the paragraphs as `title: text`, so yes/no answers are spans
//! over the first two words (the official reader puts the vocabulary tokens ĠYES / ĠNO at
//! positions 1 and 2, and [Q] / [T] / [P] markers before the question, each title and each
//! text; a tokenizer-agnostic layout has neither). A training question is read in a fresh random
//! paragraph order each time, and CmpCrop (`n_crop`) drops distractor paragraphs in nested views
//! that keep the supporting ones ([`ablation::crop::segment_views`], as the official
//! `MultiDocQADataset`). The paper reads the whole input at once with Longformer (2,048 tokens
//! in training); with a Longformer checkpoint so does this, with global attention on CLS, the
//! question and the yes/no words ([`global_tokens`]; the official reader also makes its markers
//! global). An input longer than `max_seq_len` (any input, for a 512-position encoder) is
//! windowed as SQuAD is: the full view **trains on the first window that holds the answer**, and
//! each cropped view on that window with the removed paragraphs' tokens taken out
//! ([`hotpot_view_windows`]): each view has one row, as the comparison needs, and the views stay
//! nested as whole inputs are (the official reader truncates instead). Evaluation
//! decodes over every window of the full input in file order. The answer span is the first
//! occurrence of the answer text in a supporting paragraph (else, in evaluation, in any
//! paragraph); training questions whose answer occurs in no supporting paragraph are left out and
//! counted in the log, as span extraction cannot learn them. Supporting facts are not
//! predicted (neither does the paper's model). Answers are scored with the SQuAD metric, as the
//! CmpLoss code scores HotpotQA; the official `hotpot_evaluate_v1.py` additionally gives F1 = 0
//! when exactly one side is `yes` / `no`, which differs only when a span answer shares a word
//! with a yes/no one.

pub mod squad;

use std::path::Path;

use ablation::DropoutMasks;
use ablation::crop::{CropMode, segment_views};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use losses::span_cross_entropy;
use models::{
    BertModel, EncodedBatch, EncoderConfig, EncoderFamily, EncoderInput, RowBatch, SpanExtractor,
    TextTokenizer,
};
use rand::rngs::StdRng;
use tokenizers::Tokenizer;

use crate::data::crosslingual::{QaExample, read_squad_json};
use crate::encoder::cell::{TrainCell, dataset_file};
use crate::encoder::extractive::squad::{
    QaWindow, predict_answers_with, predictions_json, squad_windows,
};
use crate::encoder::fit::{EvalAblation, Evaluation, Inner, Learner, fit, open_checkpoint};
use crate::encoder::objective::Objective;
use crate::encoder::spec::{DatasetFormat, QaSettings};
use crate::harness::log::{Outcome, RunLog};
use crate::metrics::{Scores, squad_em_f1};
use crate::training::seeds::{Purpose, derive_seed};

/// One HotpotQA question (distractor setting).
#[derive(Debug, Clone, PartialEq)]
pub struct HotpotItem {
    /// The question id (`_id`).
    pub id: String,
    /// The question.
    pub question: String,
    /// The answer text (`yes`, `no` or a span).
    pub answer: String,
    /// The paragraphs: title and text (the sentences joined as given).
    pub paragraphs: Vec<(String, String)>,
    /// Whether each paragraph holds a supporting fact.
    pub supporting: Vec<bool>,
}

/// Read a HotpotQA JSON file (a list of questions with `_id`, `question`, `answer`,
/// `supporting_facts` and `context`). Errors name the file, the question's index and the key.
pub fn read_hotpot_json(path: &Path) -> Result<Vec<HotpotItem>> {
    let text = crate::data::read_text(path)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?;
    let items = v
        .as_array()
        .with_context(|| format!("{}: expected a list of questions", path.display()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, q) in items.iter().enumerate() {
        let at = |key: &str| format!("{}: question [{i}]: `{key}`", path.display());
        let string = |key: &str| -> Result<String> {
            q[key]
                .as_str()
                .map(str::to_string)
                .with_context(|| format!("{} is not a string", at(key)))
        };
        let context = q["context"]
            .as_array()
            .with_context(|| format!("{} is not a list of [title, sentences]", at("context")))?;
        let mut paragraphs = Vec::with_capacity(context.len());
        for p in context {
            let (Some(title), Some(sentences)) = (p[0].as_str(), p[1].as_array()) else {
                bail!("{}: expected [title, [sentences]]", at("context"));
            };
            let text: String = sentences.iter().filter_map(|s| s.as_str()).collect();
            paragraphs.push((title.to_string(), text));
        }
        let facts = q["supporting_facts"]
            .as_array()
            .with_context(|| format!("{} is not a list", at("supporting_facts")))?;
        let titles: Vec<&str> = facts.iter().filter_map(|f| f[0].as_str()).collect();
        if titles.len() != facts.len() {
            bail!(
                "{}: expected [title, sentence] pairs",
                at("supporting_facts")
            );
        }
        let supporting: Vec<bool> = paragraphs
            .iter()
            .map(|(t, _)| titles.contains(&t.as_str()))
            .collect();
        if let Some(missing) = titles
            .iter()
            .find(|t| !paragraphs.iter().any(|(p, _)| p == *t))
        {
            bail!(
                "{}: title {missing:?} is not a paragraph of `context`",
                at("supporting_facts")
            );
        }
        out.push(HotpotItem {
            id: string("_id")?,
            question: string("question")?,
            answer: string("answer")?,
            paragraphs,
            supporting,
        });
    }
    if out.is_empty() {
        bail!("{}: no questions", path.display());
    }
    Ok(out)
}

/// Each paragraph of a context (index) with its character span there.
type ParagraphSpans = Vec<(usize, std::ops::Range<usize>)>;

/// The words before the paragraphs: yes/no answers are spans over them.
const YES_NO: &str = "yes no ";

impl HotpotItem {
    /// The context of the paragraphs `order` (see the module docs) and the answer's character
    /// offset in it, if the answer is found.
    pub fn context(&self, order: &[usize]) -> (String, Option<usize>) {
        let (context, answer, _) = self.context_spans(order);
        (context, answer)
    }

    /// As [`Self::context`], with each paragraph's character span in the context (title to end
    /// of text), in `order`.
    fn context_spans(&self, order: &[usize]) -> (String, Option<usize>, ParagraphSpans) {
        let mut context = String::from(YES_NO);
        // (char offset of the paragraph text, paragraph index), and of its title
        let mut starts = Vec::with_capacity(order.len());
        let mut title_starts = Vec::with_capacity(order.len());
        let mut spans = Vec::with_capacity(order.len());
        for (k, &p) in order.iter().enumerate() {
            if k > 0 {
                context.push(' ');
            }
            let (title, text) = &self.paragraphs[p];
            let title_at = context.chars().count();
            title_starts.push((title_at, p));
            context.push_str(title);
            context.push_str(": ");
            starts.push((context.chars().count(), p));
            context.push_str(text);
            spans.push((p, title_at..context.chars().count()));
        }
        let answer = match self.answer.as_str() {
            "yes" => Some(0),
            "no" => Some(4),
            "" => None,
            a => {
                // The first occurrence in a supporting paragraph's text, else in a supporting
                // title (the official reader's answer positions include titles), else anywhere.
                let find = |supporting_only: bool, in_title: bool| {
                    let at = if in_title { &title_starts } else { &starts };
                    at.iter().find_map(|&(offset, p)| {
                        if supporting_only && !self.supporting[p] {
                            return None;
                        }
                        let (title, text) = &self.paragraphs[p];
                        let text = if in_title { title } else { text };
                        text.find(a)
                            .map(|byte| offset + text[..byte].chars().count())
                    })
                };
                find(true, false)
                    .or_else(|| find(true, true))
                    .or_else(|| find(false, false))
                    .or_else(|| find(false, true))
            }
        };
        (context, answer, spans)
    }

    /// Keep at most `n` paragraphs, as the official reader's `max_p_num` does
    /// (`MultiDocQADataset.__init__`, zycdev/CmpLoss `utils/data.py`): walk the paragraphs in
    /// file order and drop each distractor met while more than `n` remain. So the *last*
    /// distractors stay, and the supporting paragraphs always do (more than `n` of them if
    /// there are).
    pub fn keep_at_most(&mut self, n: usize) {
        let mut p = 0;
        while p < self.paragraphs.len() && self.paragraphs.len() > n {
            if self.supporting[p] {
                p += 1;
            } else {
                self.paragraphs.remove(p);
                self.supporting.remove(p);
            }
        }
    }

    /// Truncate as the official reader (`MultiDocQADataset._construct_feature`): the question to
    /// its first `max_q_len` tokens and each paragraph's text to its first `max_p_len` tokens
    /// (titles whole), each cut at the last kept token's end. With `keep_answer` (training), the
    /// paragraph whose text holds the answer (where [`Self::context`] locates it) keeps
    /// `max(max_p_len, e + 12)` tokens, `e` the answer's end as a *character* offset in the
    /// text: the official code compares that character offset with a token count, which keeps
    /// at least the answer and usually much more; so does this.
    ///
    /// # Errors
    /// If the tokenizer fails.
    pub fn truncate(
        &mut self,
        tokenizer: &Tokenizer,
        max_q_len: Option<usize>,
        max_p_len: Option<usize>,
        keep_answer: bool,
    ) -> Result<()> {
        let cut = |text: &str, n: usize| -> Result<Option<String>> {
            let enc = tokenizer
                .encode_char_offsets(text, false)
                .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
            let offsets = enc.get_offsets();
            Ok((offsets.len() > n).then(|| text.chars().take(offsets[n - 1].1).collect()))
        };
        if let Some(n) = max_q_len
            && let Some(q) = cut(&self.question, n)?
        {
            self.question = q;
        }
        let Some(n) = max_p_len else {
            return Ok(());
        };
        // The answer's paragraph and end (in characters of its text), as `context` finds it.
        let order: Vec<usize> = (0..self.paragraphs.len()).collect();
        let (_, at, spans) = self.context_spans(&order);
        let answer_end = at.filter(|_| keep_answer).and_then(|at| {
            spans.iter().find_map(|(p, span)| {
                let text_at = span.end - self.paragraphs[*p].1.chars().count();
                (at >= text_at && at < span.end)
                    .then(|| (*p, at - text_at + self.answer.chars().count()))
            })
        });
        for p in 0..self.paragraphs.len() {
            let limit = match answer_end {
                Some((q, end)) if q == p => n.max(end + 12),
                _ => n,
            };
            if let Some(text) = cut(&self.paragraphs[p].1, limit)? {
                self.paragraphs[p].1 = text;
            }
        }
        Ok(())
    }

    /// Whether the answer is `yes`, `no` or found in a supporting paragraph (its text or its
    /// title), so that every crop view (which keeps the supporting paragraphs) still holds it.
    pub fn answer_in_support(&self) -> bool {
        let a = self.answer.as_str();
        matches!(a, "yes" | "no")
            || (0..self.paragraphs.len()).any(|p| {
                let (title, text) = &self.paragraphs[p];
                self.supporting[p] && (text.contains(a) || title.contains(a))
            })
    }

    /// As a SQuAD question over the paragraphs `order` (answer offset 0 when not found).
    pub fn as_squad(&self, order: &[usize]) -> (QaExample, bool) {
        let (context, answer) = self.context(order);
        (
            QaExample {
                id: self.id.clone(),
                title: String::new(),
                context,
                question: self.question.clone(),
                answers: vec![(answer.unwrap_or(0), self.answer.clone())],
            },
            answer.is_some(),
        )
    }
}

/// A batch of windows with their answer positions; the positions travel with the rows when the
/// views of a comparative step are stacked (input views have their own positions).
#[derive(Debug, Clone)]
pub struct SpanInput<B: Backend> {
    /// The windows.
    pub input: EncoderInput<B>,
    /// Answer start tokens, `[rows]`.
    pub start: Tensor<B, 1, Int>,
    /// Answer end tokens, `[rows]`.
    pub end: Tensor<B, 1, Int>,
    /// HotpotQA: 1 where a token may start or end the answer (the context's tokens: the
    /// yes/no prefix, titles, paragraphs), 0 at the question, the special tokens and padding,
    /// `[rows, seq]`: the official `answer_mask` ([`answer_mask`]).
    pub answer_mask: Option<Tensor<B, 2>>,
}

impl<B: Backend> SpanInput<B> {
    /// Start and end logits with the answer mask applied (masked positions at −1e30, as the
    /// official `mask_where0` on f32), so the loss's softmax covers the allowed tokens only.
    pub fn masked(&self, start: Tensor<B, 2>, end: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        match &self.answer_mask {
            Some(m) => {
                let blocked = m.clone().lower_elem(0.5);
                (
                    start.mask_fill(blocked.clone(), -1e30),
                    end.mask_fill(blocked, -1e30),
                )
            }
            None => (start, end),
        }
    }
}

/// Which tokens of a window may start or end an answer: the context's (the official reader's
/// `answer_mask` is 1 on the [YES] / [NO] tokens, titles and paragraphs, 0 on CLS, the question,
/// the markers and the separators).
pub fn answer_mask(window: &QaWindow) -> Vec<bool> {
    window.context_offsets.iter().map(Option::is_some).collect()
}

impl<B: Backend> RowBatch for SpanInput<B> {
    fn rows(&self) -> usize {
        self.input.rows()
    }

    fn cat(parts: Vec<Self>) -> Self {
        let mut inputs = Vec::with_capacity(parts.len());
        let mut starts = Vec::with_capacity(parts.len());
        let mut ends = Vec::with_capacity(parts.len());
        let mut masks = Vec::with_capacity(parts.len());
        for p in parts {
            inputs.push(p.input);
            starts.push(p.start);
            ends.push(p.end);
            masks.extend(p.answer_mask);
        }
        let answer_mask = (masks.len() == starts.len()).then(|| Tensor::cat(masks, 0));
        Self {
            input: EncoderInput::cat(inputs),
            start: Tensor::cat(starts, 0),
            end: Tensor::cat(ends, 0),
            answer_mask,
        }
    }
}

/// Which tokens of a window get Longformer's global attention: CLS and the question (as HF's
/// `LongformerForQuestionAnswering` sets by default), and the context tokens that begin in its
/// first `prefix_chars` characters (HotpotQA's yes/no words, global in the official reader).
pub fn global_tokens(window: &QaWindow, prefix_chars: usize) -> Vec<bool> {
    (0..window.ids.len())
        .map(|t| {
            t == 0
                || window.question.contains(&t)
                || window.context_offsets[t].is_some_and(|(a, _)| a < prefix_chars)
        })
        .collect()
}

/// Windows padded to one length and split into `parts` equal row groups (the input views).
/// `masked`: with the HotpotQA answer mask ([`answer_mask`]); a window labelled at CLS (the
/// answer not in it) is then left out of the loss (positions −1, as the official −100), since
/// CLS is masked. `global`: a Longformer's global attention mask ([`global_tokens`] with that
/// prefix).
fn span_inputs<B: Backend>(
    windows: &[&QaWindow],
    parts: usize,
    pad_id: u32,
    masked: bool,
    global: Option<usize>,
    device: &B::Device,
) -> Vec<SpanInput<B>> {
    let batch = EncodedBatch {
        ids: windows.iter().map(|w| w.ids.clone()).collect(),
        type_ids: windows.iter().map(|w| w.type_ids.clone()).collect(),
        pad_id,
    };
    let all = batch.to_input::<B>(device);
    let positions = |f: fn(&QaWindow) -> usize| {
        let v: Vec<i64> = windows
            .iter()
            .map(|w| match (masked, w.start, w.end) {
                (true, 0, 0) => -1,
                _ => f(w) as i64,
            })
            .collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [windows.len()]), device)
    };
    let (starts, ends) = (positions(|w| w.start), positions(|w| w.end));
    let rows = windows.len() / parts;
    let seq = batch.max_len();
    let mask = masked.then(|| {
        let mut m = vec![0f32; windows.len() * seq];
        for (r, w) in windows.iter().enumerate() {
            for (t, allowed) in answer_mask(w).into_iter().enumerate() {
                m[r * seq + t] = f32::from(u8::from(allowed));
            }
        }
        Tensor::<B, 2>::from_data(TensorData::new(m, [windows.len(), seq]), device)
    });
    let global_mask = global.map(|prefix| {
        let mut m = vec![0f32; windows.len() * seq];
        for (r, w) in windows.iter().enumerate() {
            for (t, global) in global_tokens(w, prefix).into_iter().enumerate() {
                m[r * seq + t] = f32::from(u8::from(global));
            }
        }
        Tensor::<B, 2>::from_data(TensorData::new(m, [windows.len(), seq]), device)
    });
    (0..parts)
        .map(|k| {
            let r = k * rows..(k + 1) * rows;
            SpanInput {
                input: EncoderInput {
                    input_ids: all.input_ids.clone().slice([r.clone(), 0..seq]),
                    attention_mask: all.attention_mask.clone().slice([r.clone(), 0..seq]),
                    token_type_ids: all.token_type_ids.clone().slice([r.clone(), 0..seq]),
                    global_attention_mask: global_mask
                        .clone()
                        .map(|m| m.slice([r.clone(), 0..seq])),
                },
                start: starts.clone().slice([r.clone()]),
                end: ends.clone().slice([r.clone()]),
                answer_mask: mask.clone().map(|m| m.slice([r, 0..seq])),
            }
        })
        .collect()
}

/// What a span cell trains on.
enum TrainUnits {
    /// SQuAD windows.
    Windows(Vec<QaWindow>),
    /// HotpotQA questions, windowed per step in a fresh paragraph order.
    Hotpot(Vec<HotpotItem>),
}

/// A span-extraction cell's data and settings.
pub struct SpanLearner {
    tokenizer: Tokenizer,
    pad_id: u32,
    max_len: usize,
    qa: QaSettings,
    train: TrainUnits,
    eval_examples: Vec<QaExample>,
    eval_windows: Vec<QaWindow>,
    eval_batch: usize,
    config: EncoderConfig,
    /// Longformer: the global attention's prefix (see [`global_tokens`]); `None` for the
    /// encoders with full attention.
    global: Option<usize>,
}

impl SpanLearner {
    /// Read and window a cell's dataset. Returns the learner and a line for the log.
    pub fn load(cell: &TrainCell, config: &EncoderConfig) -> Result<(Self, String)> {
        let t = &cell.train;
        let qa = cell.dataset.qa.clone().unwrap_or_default();
        let text_tokenizer = TextTokenizer::from_dir(&cell.model_dir, config)?;
        let pad_id = text_tokenizer.encode_texts(&["a"])?.pad_id;
        let tokenizer = text_tokenizer.inner().clone();
        let (train_path, eval_path) =
            crate::encoder::data::split_files(&cell.dataset, &cell.dataset_dir)?;
        let cap = |n: usize, cap: usize| if cap == 0 { n } else { n.min(cap) };
        let mut note = String::new();
        let (train, eval_examples) = match cell.dataset.format {
            DatasetFormat::Hotpot => {
                let mut train = read_hotpot_json(&train_path)?;
                train.truncate(cap(train.len(), t.max_train_examples));
                // The official run_hotpot.py applies max_p_num to every split.
                if let Some(n) = qa.max_p_num {
                    train.iter_mut().for_each(|q| q.keep_at_most(n));
                }
                for q in &mut train {
                    q.truncate(&tokenizer, qa.max_q_len, qa.max_p_len, true)?;
                }
                let before = train.len();
                train.retain(|q| q.answer_in_support() && !q.answer.is_empty());
                if train.len() < before {
                    note = format!(
                        "; {} training questions left out (answer not in a supporting paragraph)",
                        before - train.len()
                    );
                }
                let mut eval = read_hotpot_json(&eval_path)?;
                eval.truncate(cap(eval.len(), t.max_eval_examples));
                if let Some(n) = qa.max_p_num {
                    eval.iter_mut().for_each(|q| q.keep_at_most(n));
                }
                for q in &mut eval {
                    q.truncate(&tokenizer, qa.max_q_len, qa.max_p_len, false)?;
                }
                let eval = eval
                    .iter()
                    .map(|q| q.as_squad(&(0..q.paragraphs.len()).collect::<Vec<_>>()).0)
                    .collect();
                (TrainUnits::Hotpot(train), eval)
            }
            _ => {
                let mut train = read_squad_json(&train_path)?;
                train.truncate(cap(train.len(), t.max_train_examples));
                let mut windows = squad_windows(&tokenizer, &train, t.max_seq_len, qa.doc_stride)
                    .with_context(|| format!("windowing {}", train_path.display()))?;
                // Training needs only the labels: drop the offsets (24 bytes a token).
                for w in &mut windows {
                    w.context_offsets = Vec::new();
                }
                let mut eval = read_squad_json(&eval_path)?;
                eval.truncate(cap(eval.len(), t.max_eval_examples));
                (TrainUnits::Windows(windows), eval)
            }
        };
        let eval_windows = squad_windows(&tokenizer, &eval_examples, t.max_seq_len, qa.doc_stride)
            .with_context(|| format!("windowing {}", eval_path.display()))?;
        let learner = Self {
            tokenizer,
            pad_id,
            max_len: t.max_seq_len,
            qa,
            train,
            eval_examples,
            eval_windows,
            eval_batch: t.batch_size * 2,
            config: config.clone(),
            global: (config.family == EncoderFamily::Longformer).then_some(
                match cell.dataset.format {
                    DatasetFormat::Hotpot => YES_NO.chars().count(),
                    _ => 0,
                },
            ),
        };
        let global = match learner.global {
            None => "",
            Some(0) => "; Longformer global attention on CLS and the question",
            Some(_) => "; Longformer global attention on CLS, the question and yes/no",
        };
        let note = format!(
            "{} evaluation questions in {} windows{note}{global}",
            learner.eval_examples.len(),
            learner.eval_windows.len()
        );
        Ok((learner, note))
    }
}

/// The training windows of one HotpotQA question's views `orders` (view 0 the full input, each
/// later view a subsequence of its paragraphs, as [`segment_views`] returns them), one window per
/// view, nested as the views are.
///
/// View 0 trains on its first window (`max_len` tokens, `stride` overlap) that holds the answer.
/// A cropped view's window is that window with the removed paragraphs' tokens taken out, so its
/// tokens are a subsequence of the full view's, as the official code's whole inputs are; the
/// room it frees is not refilled with later paragraphs (the full view's window did not hold
/// them either). The answer keeps its tokens when its paragraph is kept in every view (training
/// questions have it in a supporting paragraph, see [`HotpotItem::answer_in_support`]); a view
/// that lost it is labelled at CLS, as a window without the answer is.
///
/// # Errors
/// If the tokenizer fails or `max_len` leaves no room for the context.
pub fn hotpot_view_windows(
    tokenizer: &Tokenizer,
    item: &HotpotItem,
    orders: &[Vec<usize>],
    max_len: usize,
    stride: usize,
) -> Result<Vec<QaWindow>> {
    let (context, _, spans) = item.context_spans(&orders[0]);
    let (example, _) = item.as_squad(&orders[0]);
    debug_assert_eq!(example.context, context);
    let windows = squad_windows(tokenizer, std::slice::from_ref(&example), max_len, stride)?;
    let first = windows.iter().position(|w| w.start != 0).unwrap_or(0);
    let full = windows.into_iter().nth(first).expect("at least one window");
    // The paragraph of each token: None for the question, the special tokens and the prefix.
    let paragraph: Vec<Option<usize>> = full
        .context_offsets
        .iter()
        .map(|o| {
            let (at, _) = (*o)?;
            spans
                .iter()
                .find(|(_, span)| span.contains(&at))
                .map(|(p, _)| *p)
        })
        .collect();
    let mut out = Vec::with_capacity(orders.len());
    for order in &orders[1..] {
        let keep: Vec<bool> = paragraph
            .iter()
            .map(|p| p.is_none_or(|p| order.contains(&p)))
            .collect();
        let pick = |v: &[u32]| -> Vec<u32> {
            v.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| *x)
                .collect()
        };
        // The new index of a kept token: the kept tokens before it.
        let moved = |i: usize| keep[i].then(|| keep[..i].iter().filter(|k| **k).count());
        let (start, end) = match (full.start, full.end) {
            (0, 0) => (0, 0),
            (s, e) => match (moved(s), moved(e)) {
                (Some(s), Some(e)) => (s, e),
                _ => (0, 0),
            },
        };
        out.push(QaWindow {
            example: full.example,
            question: full.question.clone(),
            ids: pick(&full.ids),
            type_ids: pick(&full.type_ids),
            context_offsets: full
                .context_offsets
                .iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(o, _)| *o)
                .collect(),
            start,
            end,
        });
    }
    out.insert(0, full);
    Ok(out)
}

impl<B: AutodiffBackend> Learner<B> for SpanLearner {
    type Model = SpanExtractor<B>;

    fn train_len(&self) -> usize {
        match &self.train {
            TrainUnits::Windows(w) => w.len(),
            TrainUnits::Hotpot(q) => q.len(),
        }
    }

    fn sizes(&self) -> String {
        match &self.train {
            TrainUnits::Windows(w) => format!(
                "{} train / {} eval windows",
                w.len(),
                self.eval_windows.len()
            ),
            TrainUnits::Hotpot(q) => format!(
                "{} train questions / {} eval windows",
                q.len(),
                self.eval_windows.len()
            ),
        }
    }

    fn unit_len(&self, i: usize) -> usize {
        match &self.train {
            TrainUnits::Windows(w) => w[i].ids.len(),
            TrainUnits::Hotpot(q) => q[i].paragraphs.iter().map(|p| p.1.len()).sum(),
        }
    }

    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        objective: &Objective,
        masks: &mut Option<DropoutMasks<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let views = objective.input_views();
        let windows: Vec<QaWindow> = match &self.train {
            TrainUnits::Windows(w) => batch.iter().map(|&i| w[i].clone()).collect(),
            TrainUnits::Hotpot(items) => {
                // Rows view-major: every question's view 0, then every question's view 1, …
                let mut rows = vec![Vec::with_capacity(batch.len()); views];
                for &i in batch {
                    let item = &items[i];
                    let orders = segment_views(&item.supporting, views - 1, CropMode::Train, rng);
                    let windows = hotpot_view_windows(
                        &self.tokenizer,
                        item,
                        &orders,
                        self.max_len,
                        self.qa.doc_stride,
                    )?;
                    for (k, window) in windows.into_iter().enumerate() {
                        rows[k].push(window);
                    }
                }
                rows.concat()
            }
        };
        let refs: Vec<&QaWindow> = windows.iter().collect();
        let hotpot = matches!(self.train, TrainUnits::Hotpot(_));
        let parts = if hotpot { views } else { 1 };
        let inputs = span_inputs::<B>(&refs, parts, self.pad_id, hotpot, self.global, device);
        let seq = inputs[0].input.input_ids.dims()[1];
        let per_view = objective.run_views(&inputs, seq, masks, |input, ctx, _| {
            let (start, end) = model.forward(&input.input, ctx);
            let (start, end) = input.masked(start, end);
            let (ls, le) = span_cross_entropy(start, end, input.start.clone(), input.end.clone());
            Tensor::stack(vec![ls, le], 1)
        });
        Ok(objective.combine(per_view))
    }

    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        ablation: &EvalAblation<B::InnerBackend>,
        device: &B::Device,
    ) -> Result<Evaluation> {
        let mut starts = Vec::with_capacity(self.eval_windows.len());
        let mut ends = Vec::with_capacity(self.eval_windows.len());
        for (pass, chunk) in self.eval_windows.chunks(self.eval_batch).enumerate() {
            let refs: Vec<&QaWindow> = chunk.iter().collect();
            // Decoding reads context tokens only, so the answer mask would change nothing here.
            let input =
                span_inputs::<B::InnerBackend>(&refs, 1, self.pad_id, false, self.global, device)
                    .remove(0)
                    .input;
            let (s, e) = model.forward(&input, &mut ablation.context(pass));
            let seq = s.dims()[1];
            let (s, e) = (s.into_data(), e.into_data());
            let (s, e) = (s.as_slice::<f32>().unwrap(), e.as_slice::<f32>().unwrap());
            for (row, w) in chunk.iter().enumerate() {
                let n = w.ids.len();
                starts.push(s[row * seq..row * seq + n].to_vec());
                ends.push(e[row * seq..row * seq + n].to_vec());
            }
        }
        // HotpotQA: "yes" and "no" are answers alone, never a span over the prefix.
        let prefix = match self.train {
            TrainUnits::Hotpot(_) => YES_NO.chars().count(),
            TrainUnits::Windows(_) => 0,
        };
        let predictions = predict_answers_with(
            &self.eval_examples,
            &self.eval_windows,
            &starts,
            &ends,
            self.qa.n_best,
            self.qa.max_answer_length,
            prefix,
        );
        let (mut em, mut f1) = (0.0, 0.0);
        for (example, (_, p)) in self.eval_examples.iter().zip(&predictions) {
            let golds: Vec<String> = example.answers.iter().map(|a| a.1.clone()).collect();
            let text = p.as_ref().map_or("", |p| p.text.as_str());
            let (e, f) = squad_em_f1(text, &golds);
            (em, f1) = (em + e, f1 + f);
        }
        let n = self.eval_examples.len().max(1) as f64;
        let scores = Scores {
            main: "f1",
            values: [("exact_match", 100.0 * em / n), ("f1", 100.0 * f1 / n)].into(),
        };
        Ok(Evaluation {
            scores,
            files: vec![("predictions.json".into(), predictions_json(&predictions))],
        })
    }

    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend> {
        &model.encoder
    }

    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()> {
        Ok(model.save_pretrained(&self.config, out)?)
    }
}

/// The dataset's training and evaluation files exist (before any cell runs).
pub(crate) fn check_inputs(cell: &TrainCell) -> Result<()> {
    let (train, eval) = crate::encoder::data::split_files(&cell.dataset, &cell.dataset_dir)?;
    dataset_file(cell, &train)?;
    dataset_file(cell, &eval)
}

/// The loss of an extractive-QA cell's steps. HotpotQA's baseline and crop-only steps run
/// without dropout unless the loss says `dropout = "ordinary"`, as the official CmpQA's do (see
/// [`crate::encoder::spec::StepDropout`]).
pub fn objective(cell: &TrainCell) -> Result<Objective> {
    match cell.dataset.format {
        DatasetFormat::Hotpot => Objective::with_crops(
            &cell.loss,
            cell.train.view_budget_tokens,
            "HotpotQA crops distractor paragraphs",
        ),
        _ => Objective::new(&cell.loss, cell.train.view_budget_tokens)
            .context("SQuAD has no paragraphs to crop"),
    }
}

/// Train and evaluate one extractive-QA cell (see the module docs).
pub fn train_span_cell<B: AutodiffBackend>(
    cell: &TrainCell,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let checkpoint = open_checkpoint(cell)?;
    let config = checkpoint.config.clone();
    let (learner, note) = SpanLearner::load(cell, &config)?;
    log.line(&note);
    let objective = objective(cell)?;
    let (model, report) =
        SpanExtractor::<B>::load(checkpoint, derive_seed(cell.seed, Purpose::Head, 0), device)?;
    log.initialised(&report);
    fit(cell, &learner, model, &objective, dir, log, device)
}
