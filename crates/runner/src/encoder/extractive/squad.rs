//! SQuAD v1.1 for an extractive-QA encoder: training windows ([`squad_windows`]) and n-best
//! span decoding into the official `predictions.json` ([`predict_answers`],
//! [`predictions_json`]).
//!
//! Training windows as transformers' `run_qa.py`
//! (`prepare_train_features`, the preprocessing of the CmpLoss QA code) builds them: the question
//! left-stripped, then `question [SEP] context` windows of at most `max_len` tokens that
//! overlap by `stride` tokens (`truncation="only_second"`, overflowing windows), and each
//! window's answer start and end token. A window that does not hold the whole answer is
//! labelled at its CLS position (index 0), as the official preprocessing does.
//!
//! The windows come from the `tokenizers` library's own overflow (the same code as HF's fast
//! tokenizers), with character offsets into the context. As in `run_qa.py`, a window whose last
//! context token is where the answer begins gets its start label on the following separator
//! (start = end + 1); the official preprocessing does this, so it is kept. Windows are not padded
//! here (as `run_qa.py --pad_to_max_length False`); with padding to `max_len` the official scan
//! would land on the last padding position instead.

use anyhow::{Result, anyhow};
use tokenizers::{
    EncodeInput, Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::data::crosslingual::QaExample;

/// One window of one question.
#[derive(Debug, Clone, PartialEq)]
pub struct QaWindow {
    /// Index of the question in the input slice.
    pub example: usize,
    /// Token ids (special tokens included).
    pub ids: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// For each token of the context, its character span in the context; `None` for the
    /// question's and the special tokens.
    pub context_offsets: Vec<Option<(usize, usize)>>,
    /// The question's tokens (those of the first sequence), as positions in the window.
    pub question: std::ops::Range<usize>,
    /// The answer's first token (0, the CLS position, when the window lacks the answer).
    pub start: usize,
    /// The answer's last token (0 as `start`).
    pub end: usize,
    /// HotpotQA's official layout: what each token is
    /// ([`crate::encoder::extractive::hotpot`]); `None` for the tokenizer's pair layout, where
    /// the offsets say it.
    pub marks: Option<LayoutMarks>,
}

/// Per-token facts of a window in HotpotQA's official layout
/// ([`crate::encoder::extractive::hotpot::official_window`]), which the offsets cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutMarks {
    /// Longformer's global attention: CLS, [YES], [NO], [Q], the question, every [T] and [P].
    pub global: Vec<bool>,
    /// The official `answer_mask`: 1 on [YES], [NO], [Q], titles and texts.
    pub answerable: Vec<bool>,
    /// The piece a token belongs to: 0 none (CLS, question, separators), 1 [YES], 2 [NO],
    /// `3 + 2p` paragraph `p`'s [T] and title, `4 + 2p` its [P] and text. A decoded answer lies in
    /// one piece, as the official `postprocess_hotpot_predictions` reads it.
    pub piece: Vec<u32>,
}

/// The training windows of `examples` (each question's first answer is the label).
///
/// # Errors
/// If `max_len` leaves no room for the context after a question (naming the question), or the
/// tokenizer fails.
pub fn squad_windows(
    tokenizer: &Tokenizer,
    examples: &[QaExample],
    max_len: usize,
    stride: usize,
) -> Result<Vec<QaWindow>> {
    let mut tok = tokenizer.clone();
    tok.with_padding(None);
    tok.with_truncation(Some(TruncationParams {
        max_length: max_len,
        stride,
        strategy: TruncationStrategy::OnlySecond,
        direction: TruncationDirection::Right,
    }))
    .map_err(|e| anyhow!("max_len {max_len}, stride {stride}: {e}"))?;
    let mut out = Vec::new();
    for (index, example) in examples.iter().enumerate() {
        let input = EncodeInput::Dual(
            example.question.trim_start().into(),
            example.context.as_str().into(),
        );
        let mut main = tok.encode_char_offsets(input, true).map_err(|e| {
            anyhow!(
                "question {}: {e} (max_len {max_len} must hold the question, the special tokens \
                 and some context)",
                example.id
            )
        })?;
        let overflow = main.take_overflowing();
        let (start_char, answer) = &example.answers[0];
        let end_char = start_char + answer.chars().count();
        for window in std::iter::once(main).chain(overflow) {
            out.push(label(index, &window, *start_char, end_char));
        }
    }
    Ok(out)
}

/// One window with its answer labels.
fn label(example: usize, window: &Encoding, start_char: usize, end_char: usize) -> QaWindow {
    let sequence = window.get_sequence_ids();
    let offsets = window.get_offsets();
    let context_offsets: Vec<Option<(usize, usize)>> = sequence
        .iter()
        .zip(offsets)
        .map(|(s, &o)| (*s == Some(1)).then_some(o))
        .collect();
    let context: Vec<usize> = (0..sequence.len())
        .filter(|&k| sequence[k] == Some(1))
        .collect();
    let (start, end) = match (context.first(), context.last()) {
        (Some(&first), Some(&last))
            if offsets[first].0 <= start_char && offsets[last].1 >= end_char =>
        {
            // run_qa.py's scans. The start scan runs on past the context into the final
            // separator, whose offsets are (0, 0): when the answer begins in the window's last
            // context token, the start lands on that separator, one past the end. That quirk of
            // the official preprocessing is kept (it affects only such windows).
            let mut start = first;
            while start < offsets.len() && offsets[start].0 <= start_char {
                start += 1;
            }
            let mut end = last;
            while offsets[end].1 >= end_char {
                end -= 1;
            }
            let (start, end) = (start - 1, end + 1);
            (start, end)
        }
        _ => (0, 0),
    };
    let question_at: Vec<usize> = (0..sequence.len())
        .filter(|&k| sequence[k] == Some(0))
        .collect();
    let question = match (question_at.first(), question_at.last()) {
        (Some(&a), Some(&b)) => a..b + 1,
        _ => 0..0,
    };
    QaWindow {
        example,
        ids: window.get_ids().to_vec(),
        question,
        type_ids: window.get_type_ids().to_vec(),
        context_offsets,
        start,
        end,
        marks: None,
    }
}

/// A predicted answer span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanPrediction {
    /// The answer text, cut from the context.
    pub text: String,
    /// Start logit + end logit.
    pub score: f64,
    /// Character span in the context.
    pub chars: (usize, usize),
}

/// One window with its start and end logits.
pub type ScoredWindow<'a> = (&'a QaWindow, &'a [f32], &'a [f32]);

/// The `n` highest positions of `logits`, best first.
fn top_positions(logits: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    order.truncate(n);
    order
}

/// The best answer of one question over its windows, as `utils_qa.py`'s
/// `postprocess_qa_predictions` decodes SQuAD v1.1: in each window the `n_best` highest start
/// and end logits are paired; spans outside the context, ending before they start, or longer
/// than `max_answer_len` tokens are skipped; the span with the highest start + end logit wins.
/// `None` when no window has a valid span (the official code then answers ""). A span that
/// starts or ends in the context's first `single_token_prefix` characters must be one token
/// (0: no such rule; HotpotQA's `yes no ` prefix).
pub fn best_span(
    context: &str,
    windows: &[ScoredWindow<'_>],
    n_best: usize,
    max_answer_len: usize,
    single_token_prefix: usize,
) -> Option<SpanPrediction> {
    let mut best: Option<SpanPrediction> = None;
    for (window, start_logits, end_logits) in windows {
        let offsets = &window.context_offsets;
        for s in top_positions(start_logits, n_best) {
            for e in top_positions(end_logits, n_best) {
                let (Some(Some(a)), Some(Some(b))) = (offsets.get(s), offsets.get(e)) else {
                    continue;
                };
                if e < s || e - s + 1 > max_answer_len {
                    continue;
                }
                // The official layout: within one title, one text, or [YES] / [NO] alone.
                if let Some(marks) = &window.marks
                    && marks.piece[s] != marks.piece[e]
                {
                    continue;
                }
                // A span that touches the first `single_token_prefix` characters is one token.
                if (a.0 < single_token_prefix || b.0 < single_token_prefix) && s != e {
                    continue;
                }
                let score = f64::from(start_logits[s]) + f64::from(end_logits[e]);
                if best.as_ref().is_none_or(|p| score > p.score) {
                    best = Some(SpanPrediction {
                        text: context.chars().skip(a.0).take(b.1 - a.0).collect(),
                        score,
                        chars: (a.0, b.1),
                    });
                }
            }
        }
    }
    best
}

/// Every question's answer text (`""` when none is valid), from the logits of `windows`
/// (`start_logits[k]` and `end_logits[k]` belong to `windows[k]`).
pub fn predict_answers(
    examples: &[QaExample],
    windows: &[QaWindow],
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
    n_best: usize,
    max_answer_len: usize,
) -> Vec<(String, Option<SpanPrediction>)> {
    predict_answers_with(
        examples,
        windows,
        start_logits,
        end_logits,
        n_best,
        max_answer_len,
        0,
    )
}

/// As [`predict_answers`]; a span that starts or ends in the context's first
/// `single_token_prefix` characters must be a single token (HotpotQA's `yes no ` prefix: the
/// official span mask allows only the [YES] and the [NO] token alone there).
#[allow(clippy::too_many_arguments)]
pub fn predict_answers_with(
    examples: &[QaExample],
    windows: &[QaWindow],
    start_logits: &[Vec<f32>],
    end_logits: &[Vec<f32>],
    n_best: usize,
    max_answer_len: usize,
    single_token_prefix: usize,
) -> Vec<(String, Option<SpanPrediction>)> {
    let mut by_example: Vec<Vec<ScoredWindow<'_>>> = vec![Vec::new(); examples.len()];
    for ((w, s), e) in windows.iter().zip(start_logits).zip(end_logits) {
        by_example[w.example].push((w, s.as_slice(), e.as_slice()));
    }
    examples
        .iter()
        .zip(&by_example)
        .map(|(example, ws)| {
            (
                example.id.clone(),
                best_span(
                    &example.context,
                    ws,
                    n_best,
                    max_answer_len,
                    single_token_prefix,
                ),
            )
        })
        .collect()
}

/// The official `predictions.json`: question id → answer text.
pub fn predictions_json(predictions: &[(String, Option<SpanPrediction>)]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = predictions
        .iter()
        .map(|(id, p)| {
            (
                id.clone(),
                p.as_ref().map_or(String::new(), |p| p.text.clone()).into(),
            )
        })
        .collect();
    serde_json::to_string_pretty(&map).expect("strings serialise")
}
