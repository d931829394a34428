//! HotpotQA (distractor setting): the official JSON ([`read_hotpot_json`]), a question's
//! context ([`HotpotItem`]), the two input layouts ([`HotpotLayout`]) and the nested windows of
//! a step's crop views ([`hotpot_view_windows`]).
//!
//! **The official layout** (`qa.layout = "official"`) is the CmpLoss reader's
//! (`MultiDocQADataset._construct_feature`, zycdev/CmpLoss `utils/data.py`), built token by
//! token ([`official_window`]):
//!
//! ```text
//! <s> ĠYES ĠNO ???????? question </s> madeupword0000 title madeupword0001 text … </s>
//! ```
//!
//! The vocabulary tokens `ĠYES` and `ĠNO` (positions 1 and 2) are the yes/no answers,
//! `????????` marks the question ([Q]), `madeupword0000` each title ([T]) and `madeupword0001`
//! each text ([P]): RoBERTa's byte-level BPE vocabulary has all five (the paper's Longformer), so
//! they are not added tokens. The question, each title and each text are tokenized alone without
//! special tokens; the question keeps its first `max_q_len` tokens and each text its first
//! `max_p_len` ([`HotpotItem::truncate`] says which paragraph keeps more in training);
//! paragraphs are added while the input is shorter than `max_seq_len`, then it is cut to
//! `max_seq_len − 1` tokens and closed by `</s>`: the official reader truncates and never
//! windows, and neither does this layout. Longformer's global attention goes on `<s>`, [YES],
//! [NO], [Q], the question, every [T] and every [P]; the answer mask admits [YES], [NO], [Q]
//! (an official quirk: the softmax of training covers it, decoding never picks it), titles and
//! texts; a decoded answer lies within one title or one text, or is [YES] / [NO] alone, as
//! `postprocess_hotpot_predictions` (`utils/qa.py`) reads it.
//!
//! **The pair layout** (`qa.layout = "pair"`) works with any tokenizer: the tokenizer's own
//! question–context pair, `[CLS] question [SEP] yes no title: text title: text … [SEP]`,
//! windowed as SQuAD when longer than `max_seq_len`; yes/no answers are the prefix's two words
//! and there are no markers (so a Longformer's global attention goes on CLS, the question and
//! the yes/no words only, [`crate::encoder::extractive::global_tokens`]).
//!
//! Unset, `qa.layout` is the official layout when the tokenizer has the five tokens and the
//! pair layout otherwise (a WordPiece BERT has none of them); the cell's log, its
//! `result.json` and the grid's `results.csv` (`resolved_qa.layout`) say which.
//!
//! Both layouts decode answers as text cut from the same context string (`yes no ` and the
//! paragraphs as `title: text`, [`HotpotItem::context`]): the official layout's tokens carry
//! their offsets into it.
//!
//! **Where a span answer is labelled.** The official data files list the answer's positions
//! (their preprocessing is not published) and the reader's training draws one of them for each
//! question at each step (`random.choice(positions)`, `MultiDocQADataset.__getitem__`), the
//! same for all of the step's crop views; evaluation labels the first. Here the positions are
//! every occurrence of the answer text ([`HotpotItem::occurrences`]) in the supporting
//! paragraphs' texts, else their titles, else any text, else any title; a training step draws
//! one ([`HotpotItem::draw_occurrence`], from the step's seeded generator, only when there are
//! several) and evaluation labels the first in the input's paragraph order.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tokenizers::Tokenizer;

use super::squad::{LayoutMarks, QaWindow, squad_windows};
use crate::data::crosslingual::QaExample;

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

/// One occurrence of a span answer in a question's paragraphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occurrence {
    /// The paragraph (index in the item).
    pub paragraph: usize,
    /// In its title (else its text).
    pub in_title: bool,
    /// Character offset in that title or text.
    pub at: usize,
}

/// The words before the paragraphs: yes/no answers are spans over them.
pub const YES_NO: &str = "yes no ";

impl HotpotItem {
    /// The context of the paragraphs `order` (see the module docs) and the answer's character
    /// offset in it, if the answer is found.
    pub fn context(&self, order: &[usize]) -> (String, Option<usize>) {
        let (context, answer, _) = self.context_spans(order);
        (context, answer)
    }

    /// Where a span answer may be labelled: every occurrence of its text in the supporting
    /// paragraphs' texts, else in their titles, else in any text, else in any title (the first
    /// of these four that has one), in file order. Empty for `yes`, `no`, an empty answer, or
    /// one found nowhere.
    pub fn occurrences(&self) -> Vec<Occurrence> {
        let file_order: Vec<usize> = (0..self.paragraphs.len()).collect();
        self.occurrences_in(&file_order)
    }

    /// As [`Self::occurrences`], over the paragraphs `order` only, in that order.
    fn occurrences_in(&self, order: &[usize]) -> Vec<Occurrence> {
        let a = self.answer.as_str();
        if matches!(a, "yes" | "no" | "") {
            return Vec::new();
        }
        for (supporting_only, in_title) in
            [(true, false), (true, true), (false, false), (false, true)]
        {
            let found: Vec<Occurrence> = order
                .iter()
                .copied()
                .filter(|&p| !supporting_only || self.supporting[p])
                .flat_map(|p| {
                    let (title, text) = &self.paragraphs[p];
                    let within = if in_title { title } else { text };
                    within.match_indices(a).map(move |(byte, _)| Occurrence {
                        paragraph: p,
                        in_title,
                        at: within[..byte].chars().count(),
                    })
                })
                .collect();
            if !found.is_empty() {
                return found;
            }
        }
        Vec::new()
    }

    /// The occurrence a training step labels: one of [`Self::occurrences`] drawn uniformly from
    /// `rng` (which is left untouched when there are fewer than two), as the official reader's
    /// `random.choice(positions)`.
    pub fn draw_occurrence(&self, rng: &mut impl rand::Rng) -> Option<Occurrence> {
        let all = self.occurrences();
        match all.len() {
            0 | 1 => all.first().copied(),
            n => Some(all[rng.random_range(0..n)]),
        }
    }

    /// As [`Self::context`], with each paragraph's character span in the context (title to end
    /// of text), in `order`.
    fn context_spans(&self, order: &[usize]) -> (String, Option<usize>, ParagraphSpans) {
        self.context_spans_at(order, None)
    }

    /// As [`Self::context_spans`], the answer located at `occurrence` when given (`None` when
    /// its paragraph is not in `order`), else at the first of [`Self::occurrences`] in `order`.
    fn context_spans_at(
        &self,
        order: &[usize],
        occurrence: Option<Occurrence>,
    ) -> (String, Option<usize>, ParagraphSpans) {
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
            _ => occurrence
                .or_else(|| self.occurrences_in(order).first().copied())
                .and_then(|o| {
                    let at = if o.in_title { &title_starts } else { &starts };
                    at.iter()
                        .find(|&&(_, p)| p == o.paragraph)
                        .map(|&(offset, _)| offset + o.at)
                }),
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
        let answer = keep_answer.then(|| self.answer_text_end()).flatten();
        for p in 0..self.paragraphs.len() {
            if let Some(text) = cut(&self.paragraphs[p].1, text_limit(answer, p, n))? {
                self.paragraphs[p].1 = text;
            }
        }
        Ok(())
    }

    /// The paragraph whose text holds the answer (where [`Self::context`] locates it in file
    /// order) and the answer's end there, in characters of that text.
    fn answer_text_end(&self) -> Option<(usize, usize)> {
        self.text_end(*self.occurrences().first()?)
    }

    /// The paragraph of an occurrence in a text and the answer's end there, in characters of
    /// that text (`None` for one in a title).
    fn text_end(&self, o: Occurrence) -> Option<(usize, usize)> {
        (!o.in_title).then(|| (o.paragraph, o.at + self.answer.chars().count()))
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
        self.as_squad_at(order, None)
    }

    /// As [`Self::as_squad`], the answer at `occurrence` when given ([`Self::draw_occurrence`]).
    pub fn as_squad_at(
        &self,
        order: &[usize],
        occurrence: Option<Occurrence>,
    ) -> (QaExample, bool) {
        let (context, answer, _) = self.context_spans_at(order, occurrence);
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

/// How many of paragraph `p`'s text tokens the official reader keeps: `max_p_len`, or for the
/// answer's paragraph in training (`answer`: its index and the answer's end in characters of
/// its text) `max(max_p_len, end + 12)`.
fn text_limit(answer: Option<(usize, usize)>, p: usize, max_p_len: usize) -> usize {
    match answer {
        Some((q, end)) if q == p => max_p_len.max(end + 12),
        _ => max_p_len,
    }
}

/// The layout of HotpotQA inputs (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotpotLayout {
    /// The official reader's token layout, with its limits.
    Official(OfficialLayout),
    /// The tokenizer's question–context pair, windowed.
    Pair,
}

/// The official layout's marker tokens and truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfficialLayout {
    /// The marker ids.
    pub markers: Markers,
    /// The question's first this many tokens (the official `--max_q_len`); `None`: all.
    pub max_q_len: Option<usize>,
    /// Each text's first this many tokens (the official `--max_p_len`); `None`: all.
    pub max_p_len: Option<usize>,
}

/// The vocabulary tokens of the official layout, in the order of [`Markers`]' fields
/// `yes`, `no`, `question`, `title`, `text`.
pub const MARKER_TOKENS: [&str; 5] = [
    "ĠYES",
    "ĠNO",
    "????????",
    "madeupword0000",
    "madeupword0001",
];

/// The ids of the official layout's special and marker tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Markers {
    /// The tokenizer's first special token (`<s>`).
    pub cls: u32,
    /// The tokenizer's separator (`</s>`).
    pub sep: u32,
    /// `ĠYES`.
    pub yes: u32,
    /// `ĠNO`.
    pub no: u32,
    /// [Q], `????????`.
    pub question: u32,
    /// [T], `madeupword0000`.
    pub title: u32,
    /// [P], `madeupword0001`.
    pub text: u32,
}

impl Markers {
    /// The markers of `tokenizer`: its CLS and SEP are the first and last token it adds to a
    /// text (`<s>` and `</s>` for RoBERTa).
    ///
    /// # Errors
    /// Naming the marker tokens the vocabulary lacks, or when the tokenizer adds no CLS and SEP.
    pub fn of(tokenizer: &Tokenizer) -> Result<Self> {
        let ids: Vec<Option<u32>> = MARKER_TOKENS
            .iter()
            .map(|t| tokenizer.token_to_id(t))
            .collect();
        let missing: Vec<&str> = MARKER_TOKENS
            .iter()
            .zip(&ids)
            .filter(|(_, id)| id.is_none())
            .map(|(t, _)| *t)
            .collect();
        if !missing.is_empty() {
            bail!(
                "the official HotpotQA layout needs the vocabulary tokens {} (RoBERTa's byte-level \
                 BPE has them); this tokenizer lacks {}: set qa.layout = \"pair\"",
                MARKER_TOKENS.join(" "),
                missing.join(" ")
            );
        }
        let special = tokenizer
            .encode("", true)
            .map_err(|e| anyhow::anyhow!("tokenizing an empty text: {e}"))?;
        let special = special.get_ids();
        if special.len() < 2 {
            bail!(
                "the official HotpotQA layout needs the tokenizer's CLS and SEP tokens; this \
                 tokenizer adds {} special tokens to a text",
                special.len()
            );
        }
        let id = |k: usize| ids[k].expect("checked above");
        Ok(Self {
            cls: special[0],
            sep: special[special.len() - 1],
            yes: id(0),
            no: id(1),
            question: id(2),
            title: id(3),
            text: id(4),
        })
    }
}

/// A text's token ids and their character spans.
type Piece = (Vec<u32>, Vec<(usize, usize)>);

/// Token ids and character spans of a text tokenized alone, the spans shifted by `at`.
fn piece(tokenizer: &Tokenizer, text: &str, at: usize) -> Result<Piece> {
    let enc = tokenizer
        .encode_char_offsets(text, false)
        .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
    let offsets = enc
        .get_offsets()
        .iter()
        .map(|&(a, b)| (a + at, b + at))
        .collect();
    Ok((enc.get_ids().to_vec(), offsets))
}

/// One HotpotQA question over the paragraphs `order` in the official layout (see the module
/// docs), at most `max_len` tokens, labelled with the answer's tokens; `keep_answer` (training)
/// keeps the answer's text paragraph to `max(max_p_len, end + 12)` tokens as the official
/// reader does ([`HotpotItem::truncate`]). A span answer cut off by the truncation (or not
/// found) is labelled at CLS, 0, as the official −100; `yes` / `no` at [YES] / [NO].
///
/// # Errors
/// If the tokenizer fails or `max_len` cannot hold the prefix, the question and `</s>`.
pub fn official_window(
    tokenizer: &Tokenizer,
    layout: &OfficialLayout,
    item: &HotpotItem,
    order: &[usize],
    max_len: usize,
    keep_answer: bool,
) -> Result<QaWindow> {
    official_window_at(tokenizer, layout, item, order, max_len, keep_answer, None)
}

/// As [`official_window`], the answer labelled at `occurrence` when given (a training step's
/// draw, [`HotpotItem::draw_occurrence`]); with `keep_answer`, its text paragraph is the one
/// kept to `max(max_p_len, end + 12)` tokens, as the official reader keeps the drawn position's.
///
/// # Errors
/// As [`official_window`].
pub fn official_window_at(
    tokenizer: &Tokenizer,
    layout: &OfficialLayout,
    item: &HotpotItem,
    order: &[usize],
    max_len: usize,
    keep_answer: bool,
    occurrence: Option<Occurrence>,
) -> Result<QaWindow> {
    let m = &layout.markers;
    let (_, answer_at, spans) = item.context_spans_at(order, occurrence);
    let (mut ids, mut offsets, mut global, mut answerable, mut pieces, mut types) = (
        vec![m.cls, m.yes, m.no, m.question],
        vec![None, Some((0, 3)), Some((4, 6)), None],
        vec![true; 4],
        vec![false, true, true, true],
        vec![0u32, 1, 2, 0],
        vec![0u32; 4],
    );
    let (q_ids, _) = piece(tokenizer, &item.question, 0)?;
    let q_ids = &q_ids[..layout.max_q_len.map_or(q_ids.len(), |n| n.min(q_ids.len()))];
    let question = ids.len()..ids.len() + q_ids.len();
    if question.end + 1 > max_len {
        bail!(
            "question {}: max_seq_len {max_len} cannot hold the official layout's 4 prefix \
             tokens, the question's {} tokens and </s>",
            item.id,
            q_ids.len()
        );
    }
    for &id in q_ids {
        ids.push(id);
        offsets.push(None);
        global.push(true);
        answerable.push(false);
        pieces.push(0);
        types.push(0);
    }
    ids.push(m.sep);
    offsets.push(None);
    global.push(false);
    answerable.push(false);
    pieces.push(0);
    types.push(0);
    let kept = match occurrence {
        Some(o) => item.text_end(o),
        None => item.answer_text_end(),
    };
    let answer = kept.filter(|_| keep_answer);
    for (&p, (_, span)) in order.iter().zip(&spans) {
        if ids.len() >= max_len {
            break;
        }
        let (title, text) = &item.paragraphs[p];
        let text_at = span.end - text.chars().count();
        let (title_ids, title_offsets) = piece(tokenizer, title, span.start)?;
        let (mut text_ids, mut text_offsets) = piece(tokenizer, text, text_at)?;
        if let Some(n) = layout.max_p_len {
            let n = text_limit(answer, p, n).min(text_ids.len());
            text_ids.truncate(n);
            text_offsets.truncate(n);
        }
        let p = u32::try_from(p).expect("ten paragraphs");
        for (marker, piece_ids, piece_offsets, id) in [
            (m.title, title_ids, title_offsets, 3 + 2 * p),
            (m.text, text_ids, text_offsets, 4 + 2 * p),
        ] {
            ids.push(marker);
            offsets.push(None);
            global.push(true);
            answerable.push(false);
            pieces.push(id);
            types.push(1);
            for (t, o) in piece_ids.into_iter().zip(piece_offsets) {
                ids.push(t);
                offsets.push(Some(o));
                global.push(false);
                answerable.push(true);
                pieces.push(id);
                types.push(1);
            }
        }
    }
    // The answer's tokens before the cut, as the official char2token_span: the first and last
    // answer characters that some token covers.
    let (start, end) = answer_at
        .and_then(|at| {
            let chars = item.answer.chars().count().max(1);
            let token_at = |c: usize| {
                offsets
                    .iter()
                    .position(|o| o.is_some_and(|(a, b)| a <= c && c < b))
            };
            let first = (at..at + chars).find_map(token_at)?;
            let last = (at..at + chars).rev().find_map(token_at)?;
            Some((first, last))
        })
        .unwrap_or((0, 0));
    let (start, end) = if ids.len() >= max_len && end >= max_len - 1 {
        (0, 0)
    } else {
        (start, end)
    };
    if ids.len() >= max_len {
        for v in [&mut ids, &mut pieces, &mut types] {
            v.truncate(max_len - 1);
        }
        offsets.truncate(max_len - 1);
        global.truncate(max_len - 1);
        answerable.truncate(max_len - 1);
    }
    ids.push(m.sep);
    offsets.push(None);
    global.push(false);
    answerable.push(false);
    pieces.push(0);
    types.push(1);
    Ok(QaWindow {
        example: 0,
        ids,
        type_ids: types,
        context_offsets: offsets,
        question,
        start,
        end,
        marks: Some(LayoutMarks {
            global,
            answerable,
            piece: pieces,
        }),
    })
}

/// The training windows of one HotpotQA question's views `orders` (view 0 the full input, each
/// later view a subsequence of its paragraphs, as [`ablation::crop::segment_views`] returns
/// them), one window per view, nested as the views are, the answer labelled at `occurrence`
/// when given (the step's draw, [`HotpotItem::draw_occurrence`]; all views share it).
///
/// View 0 is, in the official layout, the whole (truncated) input ([`official_window`]); in the
/// pair layout, its first window (`max_len` tokens, `stride` overlap) that holds the answer. A
/// cropped view's window is view 0's with the removed paragraphs' tokens (and, in the official
/// layout, their [T] / [P] markers) taken out, so its tokens are a subsequence of the full
/// view's. When view 0 is not cut this is exactly the official reader's cropped input; when it
/// is, the room a crop frees is not refilled with later paragraphs (the official reader would
/// refill it, and then a crop could hold a paragraph the full view lacks). The answer keeps its
/// tokens when its paragraph is kept in every view (training questions have it in a supporting
/// paragraph, see [`HotpotItem::answer_in_support`]); a view that lost it is labelled at CLS, as
/// a window without the answer is.
///
/// # Errors
/// If the tokenizer fails or `max_len` leaves no room for the context.
pub fn hotpot_view_windows(
    tokenizer: &Tokenizer,
    layout: &HotpotLayout,
    item: &HotpotItem,
    orders: &[Vec<usize>],
    (max_len, stride): (usize, usize),
    occurrence: Option<Occurrence>,
) -> Result<Vec<QaWindow>> {
    let (full, paragraph): (QaWindow, Vec<Option<usize>>) = match layout {
        HotpotLayout::Official(official) => {
            let full = official_window_at(
                tokenizer, official, item, &orders[0], max_len, true, occurrence,
            )?;
            let marks = full.marks.as_ref().expect("official windows have marks");
            let paragraph = marks
                .piece
                .iter()
                .map(|&k| (k >= 3).then(|| (k as usize - 3) / 2))
                .collect();
            (full, paragraph)
        }
        HotpotLayout::Pair => {
            let (_, _, spans) = item.context_spans(&orders[0]);
            let (example, _) = item.as_squad_at(&orders[0], occurrence);
            let windows =
                squad_windows(tokenizer, std::slice::from_ref(&example), max_len, stride)?;
            let first = windows.iter().position(|w| w.start != 0).unwrap_or(0);
            let full = windows.into_iter().nth(first).expect("at least one window");
            // The paragraph of each token: None for the question, the special tokens and the
            // prefix.
            let paragraph = full
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
            (full, paragraph)
        }
    };
    let mut out = Vec::with_capacity(orders.len());
    for order in &orders[1..] {
        let keep: Vec<bool> = paragraph
            .iter()
            .map(|p| p.is_none_or(|p| order.contains(&p)))
            .collect();
        fn pick<T: Clone>(v: &[T], keep: &[bool]) -> Vec<T> {
            v.iter()
                .zip(keep)
                .filter(|(_, k)| **k)
                .map(|(x, _)| x.clone())
                .collect()
        }
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
            ids: pick(&full.ids, &keep),
            type_ids: pick(&full.type_ids, &keep),
            context_offsets: pick(&full.context_offsets, &keep),
            start,
            end,
            marks: full.marks.as_ref().map(|m| LayoutMarks {
                global: pick(&m.global, &keep),
                answerable: pick(&m.answerable, &keep),
                piece: pick(&m.piece, &keep),
            }),
        });
    }
    out.insert(0, full);
    Ok(out)
}
