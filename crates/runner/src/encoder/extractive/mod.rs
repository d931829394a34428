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
//! **HotpotQA.** A question has ten paragraphs, two of them supporting. Its input is built in
//! the official reader's layout (`<s> ĠYES ĠNO [Q] question </s> [T] title [P] text … </s>`,
//! truncated, never windowed) when the tokenizer has its marker tokens (RoBERTa's BPE, the
//! paper's Longformer), else in the tokenizer's pair layout (`[CLS] question [SEP] yes no title:
//! text … [SEP]`, windowed as SQuAD when longer than `max_seq_len`); `qa.layout` picks one
//! ([`hotpot`] says both exactly). A training question is read in a fresh random
//! paragraph order each time, and CmpCrop (`n_crop`) drops distractor paragraphs in nested views
//! that keep the supporting ones ([`ablation::crop::segment_views`], as the official
//! `MultiDocQADataset`). The paper reads the whole input at once with Longformer (2,048 tokens
//! in training); with a Longformer checkpoint so does this, with global attention where the
//! official reader puts it (pair layout: CLS, the question and the yes/no words,
//! [`global_tokens`]). Each cropped view is the full view's input with the removed paragraphs'
//! tokens taken out ([`hotpot_view_windows`]): each view has one row, as the comparison needs,
//! and the views stay nested even where the full view is cut or windowed. Evaluation decodes
//! over the official layout's one input, or every window of the pair layout's, in file order.
//! A training step labels one of the answer text's occurrences in the supporting paragraphs,
//! drawn as the official reader draws one of its positions; evaluation labels the first (else
//! an occurrence in any paragraph; [`hotpot`] says exactly); training questions whose answer
//! occurs in no supporting paragraph are left out and
//! counted in the log, as span extraction cannot learn them. Supporting facts are not
//! predicted (neither does the paper's model). Answers are scored with the SQuAD metric, as the
//! CmpLoss code scores HotpotQA; the official `hotpot_evaluate_v1.py` additionally gives F1 = 0
//! when exactly one side is `yes` / `no`, which differs only when a span answer shares a word
//! with a yes/no one.

pub mod hotpot;
pub mod squad;

use std::path::Path;

use ablation::DropoutMasks;
use ablation::crop::{CropMode, segment_views};
use anyhow::{Context, Result};
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
pub use crate::encoder::extractive::hotpot::{HotpotItem, hotpot_view_windows, read_hotpot_json};
use crate::encoder::extractive::hotpot::{
    HotpotLayout, Markers, OfficialLayout, YES_NO, official_window,
};
use crate::encoder::extractive::squad::{
    QaWindow, predict_answers_with, predictions_json, squad_windows,
};
use crate::encoder::fit::{EncoderLearner, EvalAblation, Evaluation, Inner, fit, open_checkpoint};
use crate::encoder::objective::Objective;
use crate::encoder::spec::{DatasetFormat, HotpotLayoutKind, QaSettings};
use crate::harness::log::{Outcome, RunLog};
use crate::metrics::{Scores, squad_em_f1};
use crate::training::seeds::{Purpose, derive_seed};

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
    if let Some(marks) = &window.marks {
        return marks.answerable.clone();
    }
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
/// first `prefix_chars` characters (HotpotQA's yes/no words in the pair layout). A window in
/// HotpotQA's official layout carries the official reader's own choice
/// ([`hotpot::official_window`]).
pub fn global_tokens(window: &QaWindow, prefix_chars: usize) -> Vec<bool> {
    if let Some(marks) = &window.marks {
        return marks.global.clone();
    }
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
    /// HotpotQA questions, built per step in a fresh paragraph order, in a layout.
    Hotpot(Vec<HotpotItem>, HotpotLayout),
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
        let mut layout_note = "";
        let mut eval_windows = None;
        let (train, eval_examples) = match cell.dataset.format {
            DatasetFormat::Hotpot => {
                let (layout, said) = hotpot_layout(&tokenizer, &qa)?;
                layout_note = said;
                let read = |path: &Path, n: usize, training: bool| -> Result<Vec<HotpotItem>> {
                    let mut items = read_hotpot_json(path)?;
                    items.truncate(cap(items.len(), n));
                    // The official run_hotpot.py applies max_p_num to every split.
                    if let Some(n) = qa.max_p_num {
                        items.iter_mut().for_each(|q| q.keep_at_most(n));
                    }
                    // The official layout cuts tokens as it builds the input.
                    if layout == HotpotLayout::Pair {
                        for q in &mut items {
                            q.truncate(&tokenizer, qa.max_q_len, qa.max_p_len, training)?;
                        }
                    }
                    Ok(items)
                };
                let mut train = read(&train_path, t.max_train_examples, true)?;
                let before = train.len();
                train.retain(|q| q.answer_in_support() && !q.answer.is_empty());
                if train.len() < before {
                    note = format!(
                        "; {} training questions left out (answer not in a supporting paragraph)",
                        before - train.len()
                    );
                }
                let eval = read(&eval_path, t.max_eval_examples, false)?;
                let all = |q: &HotpotItem| (0..q.paragraphs.len()).collect::<Vec<_>>();
                if let HotpotLayout::Official(official) = &layout {
                    let mut windows = Vec::with_capacity(eval.len());
                    for (k, q) in eval.iter().enumerate() {
                        let mut w =
                            official_window(&tokenizer, official, q, &all(q), t.max_seq_len, false)
                                .with_context(|| eval_path.display().to_string())?;
                        w.example = k;
                        windows.push(w);
                    }
                    eval_windows = Some(windows);
                }
                let eval: Vec<QaExample> = eval.iter().map(|q| q.as_squad(&all(q)).0).collect();
                (TrainUnits::Hotpot(train, layout), eval)
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
        let eval_windows = match eval_windows {
            Some(windows) => windows,
            None => squad_windows(&tokenizer, &eval_examples, t.max_seq_len, qa.doc_stride)
                .with_context(|| format!("windowing {}", eval_path.display()))?,
        };
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
        let official = matches!(
            learner.train,
            TrainUnits::Hotpot(_, HotpotLayout::Official(_))
        );
        let global = match learner.global {
            None => "",
            Some(0) => "; Longformer global attention on CLS and the question",
            Some(_) if official => {
                "; Longformer global attention on <s>, [YES], [NO], [Q], the question, [T] and [P]"
            }
            Some(_) => "; Longformer global attention on CLS, the question and yes/no",
        };
        let note = format!(
            "{} evaluation questions in {} windows{note}{layout_note}{global}",
            learner.eval_examples.len(),
            learner.eval_windows.len()
        );
        Ok((learner, note))
    }
}

impl<B: AutodiffBackend> EncoderLearner<B> for SpanLearner {
    type Model = SpanExtractor<B>;

    fn train_len(&self) -> usize {
        match &self.train {
            TrainUnits::Windows(w) => w.len(),
            TrainUnits::Hotpot(q, _) => q.len(),
        }
    }

    fn sizes(&self) -> String {
        match &self.train {
            TrainUnits::Windows(w) => format!(
                "{} train / {} eval windows",
                w.len(),
                self.eval_windows.len()
            ),
            TrainUnits::Hotpot(q, _) => format!(
                "{} train questions / {} eval windows",
                q.len(),
                self.eval_windows.len()
            ),
        }
    }

    fn unit_len(&self, i: usize) -> usize {
        match &self.train {
            TrainUnits::Windows(w) => w[i].ids.len(),
            TrainUnits::Hotpot(q, _) => q[i].paragraphs.iter().map(|p| p.1.len()).sum(),
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
            TrainUnits::Hotpot(items, layout) => {
                // Rows view-major: every question's view 0, then every question's view 1, …
                let mut rows = vec![Vec::with_capacity(batch.len()); views];
                for &i in batch {
                    let item = &items[i];
                    let orders = segment_views(&item.supporting, views - 1, CropMode::Train, rng);
                    // The official reader draws one of the answer's positions per question and
                    // step, for all of its views.
                    let occurrence = item.draw_occurrence(rng);
                    let windows = hotpot_view_windows(
                        &self.tokenizer,
                        layout,
                        item,
                        &orders,
                        (self.max_len, self.qa.doc_stride),
                        occurrence,
                    )?;
                    for (k, window) in windows.into_iter().enumerate() {
                        rows[k].push(window);
                    }
                }
                rows.concat()
            }
        };
        let refs: Vec<&QaWindow> = windows.iter().collect();
        let hotpot = matches!(self.train, TrainUnits::Hotpot(..));
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
        progress: &mut dyn FnMut(usize, usize),
        device: &B::Device,
    ) -> Result<Evaluation> {
        let mut starts = Vec::with_capacity(self.eval_windows.len());
        let mut ends = Vec::with_capacity(self.eval_windows.len());
        for (pass, chunk) in self.eval_windows.chunks(self.eval_batch).enumerate() {
            progress(starts.len() + chunk.len(), self.eval_windows.len());
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
            TrainUnits::Hotpot(..) => YES_NO.chars().count(),
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
        Ok(Evaluation::new(
            scores,
            vec![("predictions.json".into(), predictions_json(&predictions))],
        ))
    }

    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend> {
        &model.encoder
    }

    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()> {
        Ok(model.save_pretrained(&self.config, out)?)
    }

    /// HotpotQA: the layout the cell ran in (`qa.layout`, which the tokenizer decides when the
    /// file leaves it unset).
    fn resolved(&self) -> std::collections::BTreeMap<String, String> {
        let layout = match &self.train {
            TrainUnits::Hotpot(_, HotpotLayout::Official(_)) => "official",
            TrainUnits::Hotpot(_, HotpotLayout::Pair) => "pair",
            TrainUnits::Windows(_) => return Default::default(),
        };
        std::collections::BTreeMap::from([("qa.layout".to_string(), layout.to_string())])
    }
}

/// The HotpotQA layout of a cell (see [`hotpot`]) and a line for the log.
fn hotpot_layout(tokenizer: &Tokenizer, qa: &QaSettings) -> Result<(HotpotLayout, &'static str)> {
    let official = |markers| {
        HotpotLayout::Official(OfficialLayout {
            markers,
            max_q_len: qa.max_q_len,
            max_p_len: qa.max_p_len,
        })
    };
    const OFFICIAL: &str = "; HotpotQA in the official layout (<s> ĠYES ĠNO [Q] question </s> \
                            [T] title [P] text … </s>)";
    const PAIR: &str = "; HotpotQA in the tokenizer's pair layout (question, then yes no title: \
                        text …)";
    Ok(match qa.layout {
        Some(HotpotLayoutKind::Official) => (
            official(Markers::of(tokenizer).context("qa.layout = \"official\"")?),
            OFFICIAL,
        ),
        Some(HotpotLayoutKind::Pair) => (HotpotLayout::Pair, PAIR),
        None => match Markers::of(tokenizer) {
            Ok(markers) => (official(markers), OFFICIAL),
            Err(_) => (
                HotpotLayout::Pair,
                "; HotpotQA in the tokenizer's pair layout (question, then yes no title: text …; \
                 the tokenizer lacks the official layout's marker tokens)",
            ),
        },
    })
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
