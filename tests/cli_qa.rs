//! Extractive-QA (SQuAD, HotpotQA) and re-ranking cells through `neuronlab grid run`, on the
//! tiny BERT of `cli_grid` and datasets written here in each real format: the run files
//! (`predictions.json`, `run.trec`), scores recomputed from those files, training that lowers
//! the loss, comparative losses with dropout and input views, and bad input.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ablation::DropoutMasks;
use burn::prelude::*;
use models::EncoderInput;
use runner::encoder::cell::TrainCell;
use runner::encoder::extractive::hotpot::{
    HotpotLayout, Markers, Occurrence, OfficialLayout, official_window, official_window_at,
};
use runner::encoder::extractive::squad::QaWindow;
use runner::encoder::extractive::{self, HotpotItem, hotpot_view_windows, read_hotpot_json};
use runner::encoder::rerank;
use runner::encoder::spec::{DatasetFormat, LossSpec, StepDropout};
use runner::harness::experiment::ExperimentFile;
use runner::metrics::squad_em_f1;
use runner::registry::expand;
use runner::retrieval::trec::{evaluate_run, read_qrels, read_run};
use serde_json::{Value, json};

use crate::cli_grid::tiny_model;
use crate::util::{csv_rows, dry_run, neuronlab, read_json, text};

/// A small deterministic generator (the tests must not depend on a crate's RNG stream).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// A SQuAD v1.1 file: each context is `len` filler words with `door wA` inside; the question
/// is "the door" and the answer `wA`.
fn squad_json(n: usize, len: usize, rng: &mut Lcg) -> Value {
    let mut paragraphs = Vec::new();
    for q in 0..n {
        let mut words: Vec<String> = (0..len).map(|_| format!("w{}", rng.below(30))).collect();
        let at = rng.below(len - 1);
        let answer = format!("w{}", 30 + rng.below(10));
        words[at] = "door".into();
        words[at + 1] = answer.clone();
        let context = words.join(" ");
        let start = words[..=at].join(" ").len() + 1;
        paragraphs.push(json!({
            "context": context,
            "qas": [{"id": format!("q{q}"), "question": "the door",
                     "answers": [{"text": answer, "answer_start": start}]}]
        }));
    }
    json!({"version": "1.1", "data": [{"title": "words", "paragraphs": paragraphs}]})
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn squad_dir(root: &Path) -> PathBuf {
    let dir = root.join("squad");
    let mut rng = Lcg(7);
    write(
        &dir.join("train-v1.1.json"),
        &squad_json(48, 20, &mut rng).to_string(),
    );
    // Long contexts: more than one window each at max_seq_len 32.
    write(
        &dir.join("dev-v1.1.json"),
        &squad_json(6, 40, &mut rng).to_string(),
    );
    dir
}

/// A HotpotQA distractor file: four paragraphs, two supporting; answers are yes, no or the word
/// after `door` in a supporting paragraph.
fn hotpot_json(n: usize, rng: &mut Lcg) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|q| {
            let answer = match q % 3 {
                0 => "yes".to_string(),
                1 => "no".to_string(),
                _ => format!("w{}", 30 + rng.below(10)),
            };
            let titles = ["table", "chair", "good", "bad"];
            let gold = [rng.below(2), 2 + rng.below(2)];
            let context: Vec<Value> = titles
                .iter()
                .enumerate()
                .map(|(p, title)| {
                    let mut s1: Vec<String> =
                        (0..4).map(|_| format!("w{}", rng.below(30))).collect();
                    if p == gold[1] && q % 3 == 2 {
                        s1.push("door".into());
                        s1.push(answer.clone());
                    }
                    let s2: Vec<String> = (0..3).map(|_| format!("w{}", rng.below(30))).collect();
                    json!([title, [s1.join(" "), format!(" {}", s2.join(" "))]])
                })
                .collect();
            json!({
                "_id": format!("h{q}"),
                "question": "the door",
                "answer": answer,
                "supporting_facts": [[titles[gold[0]], 0], [titles[gold[1]], 1]],
                "context": context,
                "type": "bridge",
                "level": "easy"
            })
        })
        .collect();
    Value::Array(items)
}

fn hotpot_dir(root: &Path) -> PathBuf {
    let dir = root.join("hotpot");
    let mut rng = Lcg(11);
    write(
        &dir.join("hotpot_train_v1.1.json"),
        &hotpot_json(12, &mut rng).to_string(),
    );
    write(
        &dir.join("hotpot_dev_distractor_v1.json"),
        &hotpot_json(6, &mut rng).to_string(),
    );
    dir
}

/// MS MARCO-style files: the relevant passage of query `q` holds its two words; candidates are
/// TREC runs; TREC DL-style graded qrels for evaluation (grade 2 relevant, 1 related).
fn ranking_dir(root: &Path) -> PathBuf {
    let dir = root.join("marco");
    let mut rng = Lcg(3);
    let topics = [
        "good", "great", "bad", "awful", "table", "chair", "door", "fine",
    ];
    let mut collection = String::new();
    let mut passage = |words: &[&str], id: usize, rng: &mut Lcg| {
        let mut text: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        text.extend((0..5).map(|_| format!("w{}", rng.below(40))));
        collection.push_str(&format!("p{id}\t{}\n", text.join(" ")));
        format!("p{id}")
    };
    let (mut queries, mut qrels_train, mut qrels_eval) =
        (String::new(), String::new(), String::new());
    let (mut run_train, mut run_eval) = (String::new(), String::new());
    let mut triples = String::new();
    let mut next = 0;
    for q in 0..20 {
        let (a, b) = (topics[q % 8], topics[(q / 8 + q + 1) % 8]);
        queries.push_str(&format!("q{q}\t{a} {b}\n"));
        let rel = passage(&[a, b], next, &mut rng);
        next += 1;
        let near = passage(&[a], next, &mut rng);
        next += 1;
        let mut cands = vec![rel.clone(), near.clone()];
        for _ in 0..5 {
            cands.push(passage(&[], next, &mut rng));
            next += 1;
        }
        let (qrels, run) = if q < 14 {
            (&mut qrels_train, &mut run_train)
        } else {
            (&mut qrels_eval, &mut run_eval)
        };
        if q < 14 {
            qrels.push_str(&format!("q{q} 0 {rel} 1\n"));
            triples.push_str(&format!("{a} {b}\t{a} {b} w1\tw{} w2\n", q));
        } else {
            qrels.push_str(&format!("q{q} 0 {rel} 2\nq{q} 0 {near} 1\n"));
        }
        // The candidates in a shuffled order with first-stage scores.
        for k in (1..cands.len()).rev() {
            cands.swap(k, rng.below(k + 1));
        }
        for (r, c) in cands.iter().enumerate() {
            run.push_str(&format!("q{q} Q0 {c} {} {} bm25\n", r + 1, 10 - r));
        }
    }
    for (name, text) in [
        ("collection.tsv", collection),
        ("queries.tsv", queries),
        ("qrels.train.txt", qrels_train),
        ("qrels.eval.txt", qrels_eval),
        ("run.train.trec", run_train),
        ("run.eval.trec", run_eval),
        ("triples.tsv", triples),
    ] {
        write(&dir.join(name), &text);
    }
    dir
}

/// `cli_grid`'s tiny BERT with the weights of the QA fixture (a span head and no
/// classification head, so a one-output relevance head is initialised).
/// The tokenizer of [`tiny_qa_model`] (written under `root`).
fn tiny_qa_tokenizer(root: &Path) -> tokenizers::Tokenizer {
    let model = tiny_qa_model(root);
    let config = models::EncoderConfig::from_file(model.join("config.json")).unwrap();
    models::TextTokenizer::from_dir(&model, &config)
        .unwrap()
        .inner()
        .clone()
}

fn tiny_qa_model(root: &Path) -> PathBuf {
    let base = tiny_model(root);
    let dir = root.join("tiny-bert-qa");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(base.join("vocab.txt"), dir.join("vocab.txt")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            crate::util::fixture("encoders/bert-qa").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    dir
}

/// A folder `root/name` with the Longformer QA fixture's config and weights (no tokenizer).
fn longformer_weights(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(
            crate::util::fixture("encoders/longformer-qa").join(f),
            dir.join(f),
        )
        .unwrap();
    }
    dir
}

/// The tiny Longformer QA fixture (windows 4 and 8, RoBERTa's ids: CLS 0, padding 1, SEP 2)
/// with [`tiny_model`]'s words as a WordPiece vocabulary.
fn tiny_longformer(root: &Path) -> PathBuf {
    let base = tiny_model(root);
    let dir = longformer_weights(root, "tiny-longformer");
    let vocab = std::fs::read_to_string(base.join("vocab.txt")).unwrap();
    let words: Vec<&str> = vocab.lines().skip(5).collect();
    let specials = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"];
    let lines: Vec<&str> = specials.iter().copied().chain(words).collect();
    std::fs::write(dir.join("vocab.txt"), lines.join("\n") + "\n").unwrap();
    dir
}

/// A tiny RoBERTa-style byte-level BPE tokenizer (`<s>` 0, `<pad>` 1, `</s>` 2, `<unk>` 3) that
/// has the official HotpotQA layout's five marker tokens as ordinary vocabulary entries (ids 4
/// to 8, as RoBERTa's vocabulary has them), single characters, and merges for `Ġw<digit>`,
/// `w<digit>`, `Ġthe` and `Ġdoor`: 75 tokens, inside the Longformer fixture's 99.
fn bpe_tokenizer_json() -> String {
    let mut vocab: Vec<String> = [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "ĠYES",
        "ĠNO",
        "????????",
        "madeupword0000",
        "madeupword0001",
        "Ġ",
        ":",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    vocab.extend(('a'..='z').map(String::from));
    vocab.extend(('0'..='9').map(String::from));
    let mut merges: Vec<(String, String)> = vec![("Ġ".into(), "w".into())];
    for d in '0'..='9' {
        merges.push(("Ġw".into(), d.to_string()));
        merges.push(("w".into(), d.to_string()));
    }
    for (a, b) in [
        ("Ġ", "t"),
        ("Ġt", "h"),
        ("Ġth", "e"),
        ("Ġ", "d"),
        ("Ġd", "o"),
        ("Ġdo", "o"),
        ("Ġdoo", "r"),
    ] {
        merges.push((a.into(), b.into()));
    }
    for (a, b) in &merges {
        vocab.push(format!("{a}{b}"));
    }
    let vocab: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<s>"), special(1, "<pad>"), special(2, "</s>"), special(3, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0],
                           "trim_offsets": true, "add_prefix_space": false},
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab,
                  "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
    })
    .to_string()
}

/// The tiny Longformer QA fixture with [`bpe_tokenizer_json`]: HotpotQA cells read it in the
/// official layout.
fn tiny_longformer_bpe(root: &Path) -> PathBuf {
    let dir = longformer_weights(root, "tiny-longformer-bpe");
    std::fs::write(dir.join("tokenizer.json"), bpe_tokenizer_json()).unwrap();
    dir
}

/// An experiment over the three datasets; `grid` picks the cells.
pub(crate) fn experiment(root: &Path, grid: &str) -> PathBuf {
    let model = tiny_qa_model(root);
    let longformer = tiny_longformer(root);
    let longformer_bpe = tiny_longformer_bpe(root);
    let (squad, hotpot, marco) = (squad_dir(root), hotpot_dir(root), ranking_dir(root));
    let text = format!(
        r#"name = "qa"

[train]
max_steps = 24
batch_size = 8
learning_rate = 3e-3
eval_every = 12
max_seq_len = 32
ablation_rates = [0.5]

[models.tiny]
path = "{model}"
kind = "encoder"

[models.tiny-longformer]
path = "{longformer}"
kind = "encoder"

[models.tiny-longformer-bpe]
path = "{longformer_bpe}"
kind = "encoder"

[datasets.squad]
path = "{squad}"
format = "squad"
task = "extractive-qa"
qa = {{ doc_stride = 8, max_answer_length = 4, n_best = 5 }}

[datasets.hotpot]
path = "{hotpot}"
format = "hotpot"
task = "extractive-qa"
qa = {{ doc_stride = 8, max_answer_length = 4, n_best = 5 }}

[datasets.hotpot-whole]
path = "{hotpot}"
format = "hotpot"
task = "extractive-qa"
qa = {{ max_answer_length = 4, n_best = 5, max_p_len = 6 }}
train = {{ max_seq_len = 62 }}

[datasets.marco]
path = "{marco}"
format = "ranking"
task = "ranking"
ranking = {{ collection = "collection.tsv", train_queries = "queries.tsv", train_qrels = "qrels.train.txt", train_candidates = "run.train.trec", eval_queries = "queries.tsv", eval_qrels = "qrels.eval.txt", eval_candidates = "run.eval.trec", group_size = 4, relevance_level = 2, metric = "ndcg@10" }}

[datasets.triples]
path = "{marco}"
format = "ranking"
task = "ranking"
ranking = {{ train_triples = "triples.tsv", collection = "collection.tsv", eval_queries = "queries.tsv", eval_qrels = "qrels.eval.txt", eval_candidates = "run.eval.trec", group_size = 2 }}

[losses.drop2]
kind = "comparative"
n_drop = 2

[losses.crop-drop]
kind = "comparative"
n_drop = 1
n_crop = 1

[losses.crop2]
kind = "comparative"
n_crop = 2

[losses.crop2-ordinary]
kind = "comparative"
n_crop = 2
dropout = "ordinary"

[losses.crop2-off]
kind = "comparative"
n_crop = 2
dropout = "off"

[losses.baseline-ordinary]
kind = "baseline"
dropout = "ordinary"

{grid}"#,
        model = model.display(),
        longformer = longformer.display(),
        longformer_bpe = longformer_bpe.display(),
        squad = squad.display(),
        hotpot = hotpot.display(),
        marco = marco.display(),
    );
    let path = root.join("qa.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Run a grid; returns the results rows (header first).
fn run_grid(root: &Path, exp: &Path) -> (std::process::Output, Vec<Vec<String>>) {
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let rows = csv_rows(&root.join("runs/qa/results.csv"));
    (out, rows)
}

/// Run a grid over the datasets of [`experiment`] that must succeed; returns the folder (kept
/// alive) with the log and the results rows.
fn run_ok(grid: &str) -> (tempfile::TempDir, String, Vec<Vec<String>>) {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), grid);
    let (out, rows) = run_grid(tmp.path(), &exp);
    assert!(out.status.success(), "{}", text(&out));
    (tmp, text(&out), rows)
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]))
}

/// The train losses logged at each evaluation.
fn train_losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["train_loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// Every question's prediction is a span of its context, and the reported EM / F1 (percent)
/// are the means over `predictions.json` against the gold answers.
fn check_predictions(run: &Path, gold: &BTreeMap<String, (String, String)>) {
    let predictions = read_json(&run.join("predictions.json"));
    let predictions = predictions.as_object().unwrap();
    assert_eq!(predictions.len(), gold.len(), "one prediction per question");
    let (mut em, mut f1) = (0.0, 0.0);
    for (id, (context, answer)) in gold {
        let p = predictions[id].as_str().unwrap();
        assert!(context.contains(p), "{p:?} is not in {context:?}");
        let (e, f) = squad_em_f1(p, std::slice::from_ref(answer));
        (em, f1) = (em + e, f1 + f);
    }
    let result = read_json(&run.join("result.json"));
    let n = gold.len() as f64;
    let metrics = &result["metrics"];
    assert!((metrics["exact_match"].as_f64().unwrap() - 100.0 * em / n).abs() < 1e-9);
    assert!((metrics["f1"].as_f64().unwrap() - 100.0 * f1 / n).abs() < 1e-9);
    assert_eq!(result["main_metric"], "f1");
}

#[test]
fn squad_cells_train_window_and_write_official_predictions() {
    let (tmp, log, rows) = run_ok(
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"squad\"]\nloss = [\"baseline\", \"drop2\"]\n",
    );
    let root = tmp.path();
    // 6 dev questions of 40 words each need several 32-token windows.
    assert!(log.contains("6 evaluation questions in"), "{log}");
    let windows: usize = log
        .split("6 evaluation questions in ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(windows > 6, "{windows} windows");
    let eval =
        runner::data::crosslingual::read_squad_json(&root.join("squad/dev-v1.1.json")).unwrap();
    let gold: BTreeMap<String, (String, String)> = eval
        .iter()
        .map(|e| (e.id.clone(), (e.context.clone(), e.answers[0].1.clone())))
        .collect();
    let status = column(&rows, "status");
    for row in &rows[1..] {
        assert_eq!(row[status], "finished", "{row:?}");
        let run = root.join("runs/qa").join(&row[0]);
        check_predictions(&run, &gold);
        let losses = train_losses(&run);
        assert_eq!(losses.len(), 2);
        assert!(losses.iter().all(|l| l.is_finite()));
        assert!(
            losses[1] < losses[0],
            "training lowers the loss: {losses:?}"
        );
        assert!(row[column(&rows, "ablation_0.5")].parse::<f64>().is_ok());
    }
    let out = neuronlab(&["report", "runs/qa"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(root.join("runs/qa/report.md")).unwrap();
    assert!(
        md.contains("f1") && md.contains("drop2 vs baseline"),
        "{md}"
    );
}

#[test]
fn hotpot_contexts_put_yes_no_and_answers_where_the_spans_say() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = hotpot_dir(tmp.path());
    let items = read_hotpot_json(&dir.join("hotpot_train_v1.1.json")).unwrap();
    for item in &items {
        assert_eq!(item.supporting.iter().filter(|s| **s).count(), 2);
        // Any order of the paragraphs, the full one and one without distractors.
        let all: Vec<usize> = (0..item.paragraphs.len()).rev().collect();
        let gold: Vec<usize> = (0..item.paragraphs.len())
            .filter(|&p| item.supporting[p])
            .collect();
        for order in [&all, &gold] {
            let (context, at) = item.context(order);
            let at = at.expect("the answer is found");
            let found: String = context
                .chars()
                .skip(at)
                .take(item.answer.chars().count())
                .collect();
            assert_eq!(found, item.answer, "{context:?}");
            for &p in order.iter() {
                assert!(context.contains(&item.paragraphs[p].0));
            }
        }
    }
    let yes: &HotpotItem = &items[0];
    assert_eq!(yes.answer, "yes");
    assert_eq!(yes.context(&[0, 1, 2, 3]).1, Some(0));
    assert_eq!(items[1].context(&[3, 2, 1, 0]).1, Some(4));
}

#[test]
fn hotpot_answers_found_only_in_a_title_are_located_there() {
    let item = HotpotItem {
        id: "q".into(),
        question: "Which film?".into(),
        answer: "The Big Sleep".into(),
        paragraphs: vec![
            ("Other".into(), "Nothing here.".into()),
            ("The Big Sleep".into(), "A 1946 film noir.".into()),
        ],
        supporting: vec![false, true],
    };
    assert!(item.answer_in_support(), "the answer is a supporting title");
    let (context, at) = item.context(&[0, 1]);
    let at = at.expect("located");
    let found: String = context.chars().skip(at).take(13).collect();
    assert_eq!(found, "The Big Sleep");
    assert_eq!(at, "yes no Other: Nothing here. ".chars().count());
    // A text occurrence still wins over a title.
    let mut in_text = item.clone();
    in_text.paragraphs[1].1 = "The Big Sleep is a 1946 film noir.".into();
    let (_, at) = in_text.context(&[0, 1]);
    assert_eq!(
        at,
        Some(
            "yes no Other: Nothing here. The Big Sleep: "
                .chars()
                .count()
        )
    );
}

#[test]
fn yes_and_no_are_answers_alone_never_a_span_over_the_prefix() {
    use runner::encoder::extractive::squad::{predict_answers_with, squad_windows};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tokenizer = tiny_qa_tokenizer(root);
    let item = HotpotItem {
        id: "q".into(),
        question: "Is it?".into(),
        answer: "yes".into(),
        paragraphs: vec![("A".into(), "It is so.".into())],
        supporting: vec![true],
    };
    let (example, _) = item.as_squad(&[0]);
    let windows = squad_windows(&tokenizer, std::slice::from_ref(&example), 64, 16).unwrap();
    let w = &windows[0];
    let yes = w.context_offsets.iter().position(Option::is_some).unwrap();
    // The start logit peaks at "yes", the end logit at "no" (the next token), a little less at
    // "yes": the best pair is the span "yes no" unless the prefix rule holds.
    let mut start = vec![0f32; w.ids.len()];
    let mut end = vec![0f32; w.ids.len()];
    start[yes] = 5.0;
    end[yes + 1] = 5.0;
    end[yes] = 4.0;
    let decode = |prefix: usize| {
        predict_answers_with(
            std::slice::from_ref(&example),
            &windows,
            &[start.clone()],
            &[end.clone()],
            20,
            30,
            prefix,
        )[0]
        .1
        .as_ref()
        .unwrap()
        .text
        .clone()
    };
    assert_eq!(decode(0), "yes no");
    assert_eq!(decode("yes no ".len()), "yes");
}

#[test]
fn max_q_len_and_max_p_len_truncate_as_the_official_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tokenizer = tiny_qa_tokenizer(root);
    let tokens = |t: &str| tokenizer.encode(t, false).unwrap().get_ids().len();
    let words = |n: usize| {
        (0..n)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let long = words(40);
    let item = HotpotItem {
        id: "q".into(),
        question: words(30),
        answer: "w1".into(),
        paragraphs: vec![
            ("A long title here".into(), long.clone()),
            ("B".into(), long.clone()),
        ],
        supporting: vec![false, true],
    };
    // Evaluation: every text to its first 5 tokens' worth, titles whole, the question to 4.
    let mut eval = item.clone();
    eval.truncate(&tokenizer, Some(4), Some(5), false).unwrap();
    assert_eq!(tokens(&eval.question), 4);
    assert!(item.question.starts_with(&eval.question));
    for (p, (title, text)) in eval.paragraphs.iter().enumerate() {
        assert_eq!(title, &item.paragraphs[p].0, "titles stay whole");
        assert_eq!(tokens(text), 5, "{text:?}");
        assert!(long.starts_with(text.as_str()));
    }
    // (The answer "w1" is within the first 5 tokens either way.)
    // Training: the answer's paragraph (the supporting one) keeps max(5, e + 12) tokens, e the
    // answer's end in characters, so the answer stays; the other is cut to 5.
    let mut train = item.clone();
    train.truncate(&tokenizer, None, Some(5), true).unwrap();
    assert_eq!(train.question, item.question);
    let end = long.find("w1").unwrap() + 2;
    assert!(end + 12 > 5 && end + 12 < tokens(&long));
    assert_eq!(tokens(&train.paragraphs[1].1), end + 12);
    assert!(train.answer_in_support());
    assert_eq!(tokens(&train.paragraphs[0].1), 5);
    // Limits above the lengths change nothing.
    let mut whole = item.clone();
    whole
        .truncate(&tokenizer, Some(500), Some(500), true)
        .unwrap();
    assert_eq!(
        (whole.question, whole.paragraphs),
        (item.question, item.paragraphs)
    );
}

#[test]
fn max_p_num_drops_distractors_in_file_order_as_the_official_reader() {
    let item = HotpotItem {
        id: "q".into(),
        question: "q".into(),
        answer: "yes".into(),
        paragraphs: (0..10).map(|p| (format!("p{p}"), "text".into())).collect(),
        supporting: (0..10).map(|p| p == 2 || p == 7).collect(),
    };
    // The official loop: for title in list(context): if len(context) <= n: break; if title not
    // in sp_facts: context.pop(title). Worked by hand for these ten paragraphs.
    for (n, want) in [
        (10, (0..10).collect::<Vec<usize>>()),
        (4, vec![2, 7, 8, 9]),
        (3, vec![2, 7, 9]),
        (2, vec![2, 7]),
        (1, vec![2, 7]),
    ] {
        let mut kept = item.clone();
        kept.keep_at_most(n);
        let titles: Vec<String> = kept.paragraphs.iter().map(|p| p.0.clone()).collect();
        let want_titles: Vec<String> = want.iter().map(|p| format!("p{p}")).collect();
        assert_eq!(titles, want_titles, "max_p_num = {n}");
        let supporting: Vec<bool> = want.iter().map(|&p| p == 2 || p == 7).collect();
        assert_eq!(kept.supporting, supporting, "max_p_num = {n}");
    }
}

#[test]
fn hotpot_crop_views_of_a_step_are_nested_token_for_token() {
    use ablation::crop::{CropMode, segment_views};
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tokenizer = tiny_qa_tokenizer(root);
    let items = read_hotpot_json(&hotpot_dir(root).join("hotpot_train_v1.1.json")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let counts = |w: &QaWindow| {
        let mut c = BTreeMap::new();
        for id in &w.ids {
            *c.entry(*id).or_insert(0usize) += 1;
        }
        c
    };
    let answer = |w: &QaWindow| w.ids[w.start..=w.end].to_vec();
    let (mut pairs, mut shorter) = (0, 0);
    for item in &items {
        for _ in 0..10 {
            // Four paragraphs of ~12 tokens in windows of 24: several windows per view.
            let orders = segment_views(&item.supporting, 2, CropMode::Train, &mut rng);
            let windows = hotpot_view_windows(
                &tokenizer,
                &HotpotLayout::Pair,
                item,
                &orders,
                (24, 8),
                None,
            )
            .unwrap();
            assert_eq!(windows.len(), 3);
            for k in 1..windows.len() {
                for j in 0..k {
                    let (outer, inner) = (counts(&windows[j]), counts(&windows[k]));
                    for (id, n) in &inner {
                        let m = outer.get(id).copied().unwrap_or(0);
                        assert!(
                            *n <= m,
                            "{}: view {k} holds token {id} {n} times, view {j} {m} times",
                            item.id
                        );
                    }
                    pairs += 1;
                }
                shorter += usize::from(windows[k].ids.len() < windows[0].ids.len());
                // Every view holds the answer where the full view does.
                assert_eq!(windows[k].start == 0, windows[0].start == 0, "{}", item.id);
                if windows[0].start != 0 {
                    assert_eq!(answer(&windows[k]), answer(&windows[0]), "{}", item.id);
                }
            }
        }
    }
    assert_eq!(pairs, items.len() * 10 * 3);
    assert!(shorter > 0, "the crops removed tokens");
}

#[test]
fn hotpot_answers_are_predicted_only_from_the_context_as_the_official_answer_mask() {
    use ablation::crop::{CropMode, segment_views};
    use rand::SeedableRng;
    use runner::encoder::extractive::{SpanInput, answer_mask};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let tokenizer = tiny_qa_tokenizer(root);
    let items = read_hotpot_json(&hotpot_dir(root).join("hotpot_train_v1.1.json")).unwrap();
    let item = &items[0];
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let orders = segment_views(&item.supporting, 1, CropMode::Train, &mut rng);
    let windows = hotpot_view_windows(
        &tokenizer,
        &HotpotLayout::Pair,
        item,
        &orders,
        (512, 128),
        None,
    )
    .unwrap();
    for w in &windows {
        let mask = answer_mask(w);
        let first_context = w.type_ids.iter().position(|&t| t == 1).unwrap();
        // CLS, the question and its SEP are never an answer; the context's first tokens are the
        // yes / no prefix, then the paragraphs' titles and texts; the last SEP is not.
        assert!(
            !mask[..first_context].iter().any(|&m| m),
            "{:?}",
            &mask[..first_context]
        );
        assert!(!mask[mask.len() - 1]);
        let yes_no = tokenizer.encode("yes no", false).unwrap();
        let n = yes_no.get_ids().len();
        assert_eq!(&w.ids[first_context..first_context + n], yes_no.get_ids());
        assert!(mask[first_context..mask.len() - 1].iter().all(|&m| m));
        assert!(mask[w.start] && mask[w.end]);
    }
    // The loss's softmax covers the allowed tokens only: by hand, for one row.
    type B = crate::util::B;
    let device = Default::default();
    let logits = [0.3f32, 2.0, -0.5, 1.2, 0.7, -1.1];
    let allowed = [0.0f32, 1.0, 1.0, 0.0, 1.0, 1.0];
    let row = |v: [f32; 6]| Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [1, 6]), &device);
    let span = SpanInput::<B> {
        input: EncoderInput {
            input_ids: Tensor::zeros([1, 6], &device),
            attention_mask: Tensor::ones([1, 6], &device),
            token_type_ids: Tensor::zeros([1, 6], &device),
            global_attention_mask: None,
        },
        start: Tensor::from_data(TensorData::new(vec![2i64], [1]), &device),
        end: Tensor::from_data(TensorData::new(vec![4i64], [1]), &device),
        answer_mask: Some(row(allowed)),
    };
    let (s, e) = span.masked(row(logits), row(logits));
    let (ls, le) = losses::span_cross_entropy(s, e, span.start.clone(), span.end.clone());
    let z: f64 = [1usize, 2, 4, 5]
        .iter()
        .map(|&i| f64::from(logits[i]).exp())
        .sum();
    let want = |i: usize| z.ln() - f64::from(logits[i]);
    assert!((f64::from(ls.into_scalar()) - want(2)).abs() < 1e-5);
    assert!((f64::from(le.into_scalar()) - want(4)).abs() < 1e-5);
}

/// Every HotpotQA cell of a finished grid under `root`: finished, official predictions over the
/// full context of each evaluation question, finite training losses.
fn check_hotpot_cells(root: &Path, rows: &[Vec<String>]) {
    let eval = read_hotpot_json(&root.join("hotpot/hotpot_dev_distractor_v1.json")).unwrap();
    let gold: BTreeMap<String, (String, String)> = eval
        .iter()
        .map(|q| {
            let order: Vec<usize> = (0..q.paragraphs.len()).collect();
            (q.id.clone(), (q.context(&order).0, q.answer.clone()))
        })
        .collect();
    for row in &rows[1..] {
        assert_eq!(row[column(rows, "status")], "finished", "{row:?}");
        let run = root.join("runs/qa").join(&row[0]);
        check_predictions(&run, &gold);
        let losses = train_losses(&run);
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    }
}

#[test]
fn hotpot_cells_crop_distractor_paragraphs_and_decode_over_windows() {
    let (tmp, _, rows) = run_ok(
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"hotpot\"]\nloss = [\"baseline\", \"crop-drop\", \"crop2\"]\n",
    );
    check_hotpot_cells(tmp.path(), &rows);
    // The layout the WordPiece tokenizer left the cells (qa.layout unset), in the results.
    let layout = column(&rows, "resolved_qa.layout");
    assert!(rows[1..].iter().all(|r| r[layout] == "pair"), "{rows:?}");
}

#[test]
fn longformer_hotpot_inputs_give_global_attention_to_cls_the_question_and_yes_no() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_longformer(tmp.path());
    let config = models::EncoderConfig::from_file(model.join("config.json")).unwrap();
    let tokenizer = models::TextTokenizer::from_dir(&model, &config)
        .unwrap()
        .inner()
        .clone();
    let items = read_hotpot_json(&hotpot_dir(tmp.path()).join("hotpot_train_v1.1.json")).unwrap();
    for item in &items {
        let order: Vec<usize> = (0..item.paragraphs.len()).collect();
        let windows = hotpot_view_windows(
            &tokenizer,
            &HotpotLayout::Pair,
            item,
            &[order],
            (62, 8),
            None,
        )
        .unwrap();
        let window = &windows[0];
        let tokens: Vec<String> = window
            .ids
            .iter()
            .map(|&id| tokenizer.id_to_token(id).unwrap())
            .collect();
        let global: Vec<usize> = extractive::global_tokens(window, "yes no ".len())
            .iter()
            .enumerate()
            .filter(|(_, g)| **g)
            .map(|(t, _)| t)
            .collect();
        // CLS, the question ("the door"), then the context's first two words (`yes no `, out
        // of this vocabulary); no separator, title or paragraph token.
        assert_eq!(global, [0, 1, 2, 4, 5], "{tokens:?}");
        assert_eq!(
            &tokens[..4],
            ["[CLS]", "the", "door", "[SEP]"],
            "{tokens:?}"
        );
        assert_eq!(window.context_offsets[4], Some((0, 3)), "yes");
        assert_eq!(window.context_offsets[5], Some((4, 6)), "no");
        assert_eq!(window.context_offsets[6].unwrap().0, 7, "the first title");
    }
}

#[test]
fn hotpot_cells_train_a_longformer_with_global_attention() {
    let (tmp, log, rows) = run_ok(
        "[grid]\nmodel = [\"tiny-longformer\"]\ndataset = [\"hotpot\"]\nloss = [\"baseline\", \"crop2\"]\n",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        log.matches("Longformer global attention on CLS, the question and yes/no")
            .count(),
        2,
        "{log}"
    );
    check_hotpot_cells(tmp.path(), &rows);
}

/// The tokenizer of [`tiny_longformer_bpe`] and the official layout with these limits.
fn official_layout(
    root: &Path,
    max_q_len: Option<usize>,
    max_p_len: Option<usize>,
) -> (tokenizers::Tokenizer, HotpotLayout) {
    let model = tiny_longformer_bpe(root);
    let config = models::EncoderConfig::from_file(model.join("config.json")).unwrap();
    let tokenizer = models::TextTokenizer::from_dir(&model, &config)
        .unwrap()
        .inner()
        .clone();
    let markers = Markers::of(&tokenizer).unwrap();
    let layout = HotpotLayout::Official(OfficialLayout {
        markers,
        max_q_len,
        max_p_len,
    });
    (tokenizer, layout)
}

fn official(layout: &HotpotLayout) -> &OfficialLayout {
    match layout {
        HotpotLayout::Official(o) => o,
        HotpotLayout::Pair => unreachable!(),
    }
}

#[test]
fn official_hotpot_layout_is_the_cmploss_readers_token_for_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (tokenizer, layout) = official_layout(tmp.path(), None, None);
    let m = official(&layout).markers;
    assert_eq!(
        (m.cls, m.sep, m.yes, m.no, m.question, m.title, m.text),
        (0, 2, 4, 5, 6, 7, 8)
    );
    let items = read_hotpot_json(&hotpot_dir(tmp.path()).join("hotpot_train_v1.1.json")).unwrap();
    let tok =
        |text: &str| -> Vec<u32> { tokenizer.encode(text, false).unwrap().get_ids().to_vec() };
    // The first question by hand: "the door" is t h e Ġdoor (no prefix space), its first title
    // "table" is t a b l e.
    assert_eq!(tok("the door").len(), 4);
    for item in &items {
        let order: Vec<usize> = (0..item.paragraphs.len()).rev().collect();
        let w = official_window(&tokenizer, official(&layout), item, &order, 4096, true).unwrap();
        let marks = w.marks.as_ref().unwrap();
        // <s> ĠYES ĠNO [Q] question </s> then [T] title [P] text per paragraph, then </s>.
        let mut want = vec![0, 4, 5, 6];
        want.extend(tok(&item.question));
        want.push(2);
        let mut global = vec![true; want.len() - 1];
        global.push(false);
        let mut answerable = vec![false, true, true, true];
        answerable.resize(want.len(), false);
        for &p in &order {
            let (title, text) = &item.paragraphs[p];
            for (marker, piece) in [(7, tok(title)), (8, tok(text))] {
                want.push(marker);
                global.push(true);
                answerable.push(false);
                global.extend(std::iter::repeat_n(false, piece.len()));
                answerable.extend(std::iter::repeat_n(true, piece.len()));
                want.extend(piece);
            }
        }
        want.push(2);
        global.push(false);
        answerable.push(false);
        assert_eq!(w.ids, want, "{}", item.id);
        assert_eq!(marks.global, global, "{}", item.id);
        assert_eq!(marks.answerable, answerable, "{}", item.id);
        assert_eq!(w.question, 4..4 + tok(&item.question).len());
        // Token types: 0 up to the question's </s>, 1 after (the official token_type_ids).
        let q_end = w.question.end;
        assert!(w.type_ids[..=q_end].iter().all(|&t| t == 0));
        assert!(w.type_ids[q_end + 1..].iter().all(|&t| t == 1));
        // Yes / no at [YES] / [NO]; a span answer's tokens read back as the answer.
        match item.answer.as_str() {
            "yes" => assert_eq!((w.start, w.end), (1, 1)),
            "no" => assert_eq!((w.start, w.end), (2, 2)),
            a => {
                let (context, _) = item.context(&order);
                let (s, e) = (
                    w.context_offsets[w.start].unwrap(),
                    w.context_offsets[w.end].unwrap(),
                );
                let got: String = context.chars().skip(s.0).take(e.1 - s.0).collect();
                assert_eq!(got.trim(), a, "{}", item.id);
                assert_eq!(marks.piece[w.start], marks.piece[w.end]);
                assert!(marks.piece[w.start] >= 4, "in a text");
            }
        }
    }
}

#[test]
fn official_hotpot_layout_cuts_question_texts_and_input_as_the_official_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let (tokenizer, layout) = official_layout(tmp.path(), Some(2), Some(3));
    let tok = |text: &str| tokenizer.encode(text, false).unwrap().get_ids().len();
    let items = read_hotpot_json(&hotpot_dir(tmp.path()).join("hotpot_train_v1.1.json")).unwrap();
    let (mut spans, mut cut_off) = (0, 0);
    for item in &items {
        let order: Vec<usize> = (0..item.paragraphs.len()).collect();
        for training in [false, true] {
            let w = official_window(&tokenizer, official(&layout), item, &order, 4096, training)
                .unwrap();
            let marks = w.marks.as_ref().unwrap();
            assert_eq!(w.question, 4..6, "the question's first 2 tokens");
            for p in 0..item.paragraphs.len() {
                let text = marks
                    .piece
                    .iter()
                    .filter(|&&k| k == 4 + 2 * p as u32)
                    .count()
                    - 1;
                let title = marks
                    .piece
                    .iter()
                    .filter(|&&k| k == 3 + 2 * p as u32)
                    .count()
                    - 1;
                assert_eq!(title, tok(&item.paragraphs[p].0), "titles whole");
                let full = tok(&item.paragraphs[p].1);
                // The answer's paragraph keeps max(3, answer end in characters + 12) tokens in
                // training (the official quirk), every other text its first 3.
                let span = !matches!(item.answer.as_str(), "yes" | "no");
                let answer_here = training
                    && span
                    && item.supporting[p]
                    && item.paragraphs[p].1.contains(item.answer.as_str());
                if answer_here {
                    let end = item.paragraphs[p].1.find(item.answer.as_str()).unwrap()
                        + item.answer.len();
                    assert_eq!(
                        text,
                        full.min(3.max(end + 12)),
                        "{}: paragraph {p}",
                        item.id
                    );
                } else {
                    assert_eq!(text, full.min(3), "{}: paragraph {p}", item.id);
                }
            }
            if training && !matches!(item.answer.as_str(), "yes" | "no") {
                assert!(w.start >= 4 && marks.piece[w.start] >= 4, "{}", item.id);
                spans += 1;
            }
        }
        // max_seq_len: cut to 19 tokens and closed by </s>; an answer past the cut is at CLS.
        let whole =
            official_window(&tokenizer, official(&layout), item, &order, 4096, true).unwrap();
        let w = official_window(&tokenizer, official(&layout), item, &order, 20, true).unwrap();
        assert_eq!(w.ids.len(), 20);
        assert_eq!(w.ids[..19], whole.ids[..19]);
        assert_eq!(w.ids[19], 2);
        if whole.end >= 19 {
            assert_eq!((w.start, w.end), (0, 0), "{}", item.id);
            cut_off += 1;
        } else {
            assert_eq!((w.start, w.end), (whole.start, whole.end));
        }
    }
    assert!(
        spans > 0 && cut_off > 0,
        "{spans} span answers, {cut_off} cut off"
    );
    // A max_seq_len too short for the question is named.
    let err = official_window(&tokenizer, official(&layout), &items[0], &[0, 1], 6, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_seq_len 6") && err.contains("h0"), "{err}");
}

#[test]
fn official_hotpot_answers_are_decoded_within_one_title_or_text_or_yes_no_alone() {
    use runner::encoder::extractive::squad::best_span;
    let tmp = tempfile::tempdir().unwrap();
    let (tokenizer, layout) = official_layout(tmp.path(), None, None);
    let items = read_hotpot_json(&hotpot_dir(tmp.path()).join("hotpot_train_v1.1.json")).unwrap();
    let item = &items[2];
    let order: Vec<usize> = (0..item.paragraphs.len()).collect();
    let w = official_window(&tokenizer, official(&layout), item, &order, 4096, false).unwrap();
    let (context, _) = item.context(&order);
    let piece = &w.marks.as_ref().unwrap().piece;
    // The last title token and the first text token of paragraph 0 (across its [P]).
    let last_title = piece.iter().rposition(|&k| k == 3).unwrap();
    let first_text = piece.iter().position(|&k| k == 4).unwrap() + 1;
    let decode = |s: usize, e: usize| {
        let mut start = vec![-10.0f32; w.ids.len()];
        let mut end = vec![-10.0f32; w.ids.len()];
        start[s] = 5.0;
        end[e] = 5.0;
        best_span(
            &context,
            &[(&w, &start[..], &end[..])],
            1,
            30,
            "yes no ".len(),
        )
    };
    assert!(
        decode(last_title, first_text).is_none(),
        "a span across [P]"
    );
    assert_eq!(
        decode(first_text, first_text + 1).unwrap().chars.0,
        w.context_offsets[first_text].unwrap().0
    );
    assert_eq!(decode(1, 1).unwrap().text, "yes");
    assert_eq!(decode(2, 2).unwrap().text, "no");
    assert!(decode(1, 2).is_none(), "yes no is not an answer");
    assert!(decode(3, 3).is_none(), "[Q] is never decoded");
}

#[test]
fn official_hotpot_crop_views_are_the_official_inputs_of_their_paragraphs() {
    use ablation::crop::{CropMode, segment_views};
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    let (tokenizer, layout) = official_layout(tmp.path(), Some(160), Some(5));
    let items = read_hotpot_json(&hotpot_dir(tmp.path()).join("hotpot_train_v1.1.json")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut crops = 0;
    for item in &items {
        for _ in 0..5 {
            let orders = segment_views(&item.supporting, 2, CropMode::Train, &mut rng);
            let views =
                hotpot_view_windows(&tokenizer, &layout, item, &orders, (4096, 128), None).unwrap();
            assert_eq!(views.len(), 3);
            // Untruncated, each crop is exactly the official reader's input of its paragraphs;
            // its offsets point into the full view's context, the direct input's into its own.
            let full_context = item.context(&orders[0]).0;
            for (view, order) in views.iter().zip(&orders) {
                let mut direct =
                    official_window(&tokenizer, official(&layout), item, order, 4096, true)
                        .unwrap();
                let own_context = item.context(order).0;
                let texts = |w: &QaWindow, context: &str| -> Vec<Option<String>> {
                    w.context_offsets
                        .iter()
                        .map(|o| o.map(|(a, b)| context.chars().skip(a).take(b - a).collect()))
                        .collect()
                };
                assert_eq!(texts(view, &full_context), texts(&direct, &own_context));
                direct.context_offsets = view.context_offsets.clone();
                assert_eq!(view, &direct, "{}: order {order:?}", item.id);
                crops += 1;
            }
        }
    }
    assert_eq!(crops, items.len() * 15);
}

#[test]
fn hotpot_cells_train_a_longformer_in_the_official_layout() {
    let (tmp, log, rows) = run_ok(
        "[grid]\nmodel = [\"tiny-longformer-bpe\"]\ndataset = [\"hotpot-whole\"]\nloss = [\"baseline\", \"crop2\"]\n",
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    for said in [
        "HotpotQA in the official layout",
        "Longformer global attention on <s>, [YES], [NO], [Q], the question, [T] and [P]",
        "6 evaluation questions in 6 windows",
    ] {
        assert_eq!(log.matches(said).count(), 2, "{said}: {log}");
    }
    check_hotpot_cells(tmp.path(), &rows);
    let layout = column(&rows, "resolved_qa.layout");
    assert!(
        rows[1..].iter().all(|r| r[layout] == "official"),
        "{rows:?}"
    );
    let result = read_json(
        &tmp.path()
            .join("runs/qa")
            .join(&rows[1][0])
            .join("result.json"),
    );
    assert_eq!(result["resolved"]["qa.layout"], "official");
}

#[test]
fn the_official_hotpot_layout_asked_of_a_wordpiece_tokenizer_names_the_missing_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(
        root,
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"hotpot\"]\nloss = [\"baseline\"]\n",
    );
    let toml = std::fs::read_to_string(&exp).unwrap().replace(
        "qa = { doc_stride = 8, max_answer_length = 4, n_best = 5 }\n\n[datasets.hotpot-whole]",
        "qa = { doc_stride = 8, max_answer_length = 4, n_best = 5, layout = \"official\" }\n\n[datasets.hotpot-whole]",
    );
    assert!(toml.contains("layout = \"official\""));
    std::fs::write(&exp, toml).unwrap();
    let err = failed_cell_error(root, "hotpot", "baseline");
    assert!(
        err.contains("qa.layout = \"official\"")
            && err.contains("lacks ĠYES ĠNO ???????? madeupword0000 madeupword0001"),
        "{err}"
    );
    // On SQuAD the key is refused before any cell.
    let toml = std::fs::read_to_string(&exp).unwrap().replace(
        "format = \"squad\"\ntask = \"extractive-qa\"\nqa = { doc_stride = 8,",
        "format = \"squad\"\ntask = \"extractive-qa\"\nqa = { layout = \"pair\", doc_stride = 8,",
    ).replace("dataset = [\"hotpot\"]", "dataset = [\"squad\"]");
    std::fs::write(&exp, toml).unwrap();
    let out = neuronlab(&["grid", "run", "qa.toml", "--dry-run"], root);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("qa.layout belongs to HotpotQA"),
        "{}",
        text(&out)
    );
}

#[test]
fn ranking_cells_rerank_candidates_into_a_trec_run_scored_as_trec_eval() {
    let (tmp, _, rows) = run_ok(
        "[grid]\npairs = [{ model = \"tiny\", dataset = \"marco\", loss = [\"baseline\", \"crop-drop\"] }, { model = \"tiny\", dataset = \"triples\", loss = [\"crop2\"] }]\n",
    );
    let root = tmp.path();
    let candidates = read_run(&root.join("marco/run.eval.trec")).unwrap();
    let qrels = read_qrels(&root.join("marco/qrels.eval.txt"), None).unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for row in &rows[1..] {
        assert_eq!(row[column(&rows, "status")], "finished", "{row:?}");
        let run_dir = root.join("runs/qa").join(&row[0]);
        let run = read_run(&run_dir.join("run.trec")).unwrap();
        assert_eq!(run.len(), candidates.len(), "every evaluation query");
        for (q, ranked) in &run {
            let mut got: Vec<&String> = ranked.iter().map(|r| &r.0).collect();
            let mut want: Vec<&String> = candidates[q].iter().map(|r| &r.0).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "query {q} re-ranks its own candidates");
        }
        let result = read_json(&run_dir.join("result.json"));
        let marco = row.contains(&"marco".to_string());
        let level = if marco { 2 } else { 1 };
        let (_, means) = evaluate_run(&run, &qrels, level);
        let m = &result["metrics"];
        for (key, want) in [
            ("mrr@10", means.mrr_at_10),
            ("ndcg@10", means.ndcg_at_10),
            ("recall@1000", means.recall_at_1000),
        ] {
            let got = m[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-9, "{key}: {got} vs {want}");
        }
        // Re-ranking a fixed list cannot change recall@1000: every relevant one is listed.
        assert_eq!(means.recall_at_1000, 1.0);
        assert_eq!(
            result["main_metric"],
            if marco { "ndcg@10" } else { "mrr@10" }
        );
        let losses = train_losses(&run_dir);
        assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    }
    let out = neuronlab(&["report", "runs/qa"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(root.join("runs/qa/report.md")).unwrap();
    assert!(md.contains("ndcg@10") && md.contains("mrr@10"), "{md}");
}

/// A one-cell grid over a dataset whose files the test then breaks; returns the cell's error.
fn failed_cell_error(root: &Path, dataset: &str, loss: &str) -> String {
    let exp = root.join("qa.toml");
    let (out, rows) = run_grid(root, &exp);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(rows.len(), 2, "{dataset} × {loss}: {rows:?}");
    assert_eq!(rows[1][column(&rows, "status")], "failed");
    let result = read_json(&root.join("runs/qa").join(&rows[1][0]).join("result.json"));
    result["error"].as_str().unwrap().to_string()
}

#[test]
fn bad_qa_and_ranking_input_fails_the_cell_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let one = |dataset: &str, loss: &str| {
        format!("[grid]\nmodel = [\"tiny\"]\ndataset = [\"{dataset}\"]\nloss = [\"{loss}\"]\n")
    };

    // Append `line` to `file` of a fresh one-cell grid over `dataset`; the cell's error.
    let appended = |dataset: &str, file: &str, line: &str| {
        let _ = std::fs::remove_dir_all(root.join("runs"));
        experiment(root, &one(dataset, "baseline"));
        let path = root.join(file);
        let mut text_ = std::fs::read_to_string(&path).unwrap();
        text_.push_str(line);
        std::fs::write(&path, &text_).unwrap();
        failed_cell_error(root, dataset, "baseline")
    };

    // A qrels line naming a query the queries file does not have.
    let error = appended("marco", "marco/qrels.eval.txt", "q99 0 p1 1\n");
    assert!(
        error.contains("qrels.eval.txt, line 13")
            && error.contains("\"q99\" is not in the queries"),
        "{error}"
    );

    // A malformed run line.
    let error = appended("marco", "marco/run.eval.trec", "q14 Q0 p3 8\n");
    assert!(
        error.contains("run.eval.trec, line 43") && error.contains("expected 6 fields"),
        "{error}"
    );

    // A triples line with two fields (the file is streamed; the line is still named).
    let error = appended(
        "triples",
        "marco/triples.tsv",
        "good table\tgood table w1\n",
    );
    assert!(
        error.contains("triples.tsv, line 15") && error.contains("expected 3 non-empty"),
        "{error}"
    );

    // A SQuAD answer outside its context.
    std::fs::remove_dir_all(root.join("runs")).unwrap();
    experiment(root, &one("squad", "baseline"));
    let train = root.join("squad/train-v1.1.json");
    let mut v = read_json(&train);
    v["data"][0]["paragraphs"][2]["qas"][0]["answers"][0]["answer_start"] = json!(500);
    std::fs::write(&train, v.to_string()).unwrap();
    let error = failed_cell_error(root, "squad", "baseline");
    assert!(
        error.contains("train-v1.1.json")
            && error.contains("question q2")
            && error.contains("not at character 500"),
        "{error}"
    );
}

/// Whether the dropout masks seen by the views of one training step of `cell` drop anything,
/// view by view (run one after another, as the task runs them).
fn crop_step_drops(cell: &TrainCell) -> Vec<bool> {
    type B = crate::util::B;
    let mut objective = match cell.dataset.format {
        DatasetFormat::Ranking => rerank::objective(cell),
        _ => extractive::objective(cell),
    }
    .unwrap();
    objective.execution_budget = Some(0);
    let device = Default::default();
    let input = EncoderInput::<B> {
        input_ids: Tensor::zeros([2, 6], &device),
        attention_mask: Tensor::ones([2, 6], &device),
        token_type_ids: Tensor::zeros([2, 6], &device),
        global_attention_mask: None,
    };
    let inputs = vec![input; objective.input_views()];
    let mut masks = Some(DropoutMasks::<B>::new(7));
    let mut drops = Vec::new();
    objective.run_views(&inputs, 6, &mut masks, |_, ctx, n| {
        let dropout = ctx
            .dropout
            .as_mut()
            .expect("a training step has dropout masks");
        let mask = dropout.mask::<3>(0.1, [n * 2, 6, 8], &device);
        drops.push(mask.is_some_and(|m| m.into_data().to_vec::<f32>().unwrap().contains(&0.0)));
        Tensor::zeros([n * 2, 1], &device)
    });
    drops
}

#[test]
fn steps_without_dropout_views_keep_dropout_on_ranking_and_drop_it_on_hotpotqa_as_the_official_codes()
 {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(
        root,
        "[grid]\npairs = [{ model = \"tiny\", dataset = \"marco\", loss = [\"baseline\", \"crop2\", \"crop2-off\"] }, \
         { model = \"tiny\", dataset = \"hotpot\", loss = [\"baseline\", \"baseline-ordinary\", \"crop2\", \"crop2-ordinary\"] }]\n",
    );
    let text = std::fs::read_to_string(&exp).unwrap();
    let file = ExperimentFile::parse(&exp, text, root).unwrap();
    let cells = expand(&file).unwrap();
    let drops: Vec<(String, String, Option<StepDropout>, Vec<bool>)> = cells
        .iter()
        .map(|c| {
            let cell = c.config.as_train().unwrap();
            let (LossSpec::Comparative { dropout, .. } | LossSpec::Baseline { dropout }) =
                cell.loss;
            let key = |k: &str| c.params[k].clone();
            (key("dataset"), key("loss"), dropout, crop_step_drops(cell))
        })
        .collect();
    use StepDropout::{Off, Ordinary};
    let want = [
        // LoL's trainer keeps ordinary dropout in every revision; "off" turns it off.
        ("marco", "baseline", None, vec![true]),
        ("marco", "crop2", Some(Ordinary), vec![true; 3]),
        ("marco", "crop2-off", Some(Off), vec![false; 3]),
        // CmpQA's self.eval() quirk (every step with n_drop = 0): no dropout, in the baseline
        // too; "ordinary" turns it on.
        ("hotpot", "baseline", Some(Off), vec![false]),
        ("hotpot", "baseline-ordinary", Some(Ordinary), vec![true]),
        ("hotpot", "crop2", Some(Off), vec![false; 3]),
        ("hotpot", "crop2-ordinary", Some(Ordinary), vec![true; 3]),
    ];
    assert_eq!(drops.len(), want.len());
    for ((dataset, loss, recorded, got), (d, l, r, w)) in drops.iter().zip(want) {
        assert_eq!((dataset.as_str(), loss.as_str()), (d, l));
        assert_eq!(*recorded, r, "{d} / {l}: the value the cell records");
        assert_eq!(
            got, &w,
            "{d} / {l}: do the views' dropout masks drop units?"
        );
    }
}

#[test]
fn mismatched_qa_and_ranking_settings_are_caught_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let cases = [
        // Crops on a dataset without segments.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"squad\"]\nloss = [\"crop2\"]\n",
            "",
            "has none; crops apply to HotpotQA",
        ),
        // A format that holds another task.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"bad\"]\n",
            "[datasets.bad]\npath = \"squad\"\nformat = \"squad\"\ntask = \"classification\"\n",
            "format = \"squad\" holds task = \"extractive-qa\"",
        ),
        // A ranking dataset without its files.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"bad\"]\n",
            "[datasets.bad]\npath = \"marco\"\nformat = \"ranking\"\ntask = \"ranking\"\n",
            "needs `ranking = { eval_qrels",
        ),
        // The dropout of crop-only steps on a loss that also drops.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"hotpot\"]\nloss = [\"bad\"]\n",
            "[losses.bad]\nkind = \"comparative\"\nn_drop = 1\nn_crop = 1\ndropout = \"off\"\n",
            "belongs to losses without dropout views (the baseline, or a crop-only loss with n_drop = 0)",
        ),
        // Views compared at evaluation where evaluation has no labelled losses to compare.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"squad\"]\nloss = [\"cmp-eval\"]\n",
            "[losses.cmp-eval]\nkind = \"comparative\"\nn_drop = 1\ncmp_in_eval = true\n",
            "cmp_in_eval compares the views' losses on labelled evaluation examples",
        ),
        // A paragraph count on a dataset without paragraphs.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"bad\"]\n",
            "[datasets.bad]\npath = \"squad\"\nformat = \"squad\"\ntask = \"extractive-qa\"\nqa = { max_p_num = 2 }\n",
            "qa.max_p_num belongs to HotpotQA's questions and paragraphs",
        ),
        // An unknown ranking metric.
        (
            "[grid]\nmodel = [\"tiny\"]\ndataset = [\"bad\"]\n",
            "[datasets.bad]\npath = \"marco\"\nformat = \"ranking\"\ntask = \"ranking\"\nranking = { train_triples = \"t\", eval_qrels = \"q\", eval_candidates = \"c\", metric = \"map\" }\n",
            "ranking.metric = \"map\"",
        ),
    ];
    for (grid, extra, want) in cases {
        let exp = experiment(root, &format!("{extra}\n{grid}"));
        let out = dry_run(&exp, root);
        assert!(!out.status.success(), "{grid}");
        assert!(text(&out).contains("qa.toml"), "{}", text(&out));
        assert!(text(&out).contains(want), "{want}: {}", text(&out));
    }
}

#[test]
fn the_paper_grid_of_14_datasets_validates_on_fixture_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = crate::util::root().join("experiments/cmploss-paper.toml");
    let exp = exp.to_str().unwrap();
    let vars = [
        "GLUE_DIR",
        "SQUAD_DIR",
        "HOTPOT_DIR",
        "MSMARCO_DIR",
        "TREC_DL_DIR",
        "DLHARD_DIR",
        "MODELS_DIR",
    ];
    let mut bare = std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"));
    bare.args(["grid", "run", exp, "--dry-run", "--output", "runs"])
        .current_dir(root);
    for v in vars {
        bare.env_remove(v);
    }
    let out = bare.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    // GLUE 8 × 2, SQuAD 8 models × 2, HotpotQA 4 losses, the cross-encoder 4 × 2, PRF 2
    // objectives; 3 seeds each.
    assert!(t.contains("138 cells"), "{t}");
    for v in vars {
        assert!(t.contains(&format!("{v} is not set")), "{v}: {t}");
    }

    // Every dataset in its real layout, every model a tiny BERT (HotpotQA's a tiny Longformer).
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    let tiny = tiny_qa_model(root);
    for name in [
        "bert-base-cased",
        "bert_uncased_L-2_H-128_A-2",
        "bert_uncased_L-12_H-256_A-4",
        "electra-small-discriminator",
        "bert_uncased_L-8_H-512_A-8",
        "bert-base-uncased",
        "electra-base-discriminator",
        "bert-large-uncased",
        "electra-large-discriminator",
    ] {
        std::os::unix::fs::symlink(&tiny, models.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(tiny_longformer(root), models.join("longformer-base-4096")).unwrap();
    std::os::unix::fs::symlink(&tiny, models.join("ance-msmarco-passage")).unwrap();
    let marco = ranking_dir(root);
    let (msmarco, dl, hard) = (
        root.join("msmarco"),
        root.join("trec-dl"),
        root.join("dl-hard"),
    );
    let copy = |from: &str, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(marco.join(from), to).unwrap();
    };
    copy("collection.tsv", &msmarco.join("collection.tsv"));
    copy("triples.tsv", &msmarco.join("triples.train.small.tsv"));
    copy("queries.tsv", &msmarco.join("queries.dev.small.tsv"));
    copy("qrels.eval.txt", &msmarco.join("qrels.dev.small.tsv"));
    copy("run.eval.trec", &msmarco.join("top1000.dev.tsv"));
    for year in ["2019", "2020"] {
        copy(
            "queries.tsv",
            &dl.join(format!("msmarco-test{year}-queries.tsv")),
        );
        copy("qrels.eval.txt", &dl.join(format!("{year}qrels-pass.txt")));
        copy(
            "run.eval.trec",
            &dl.join(format!("msmarco-passagetest{year}-top1000.tsv")),
        );
    }
    copy("queries.tsv", &hard.join("topics.tsv"));
    copy("qrels.eval.txt", &hard.join("dl_hard-passage.qrels"));
    copy("run.eval.trec", &hard.join("baselines/passage/bm25.run"));
    // PRF: training queries, the first-pass runs (MS MARCO's qid<TAB>pid<TAB>rank) and the
    // passage matrix at the tiny model's width.
    copy("queries.tsv", &msmarco.join("queries.train.tsv"));
    copy("qrels.train.txt", &msmarco.join("qrels.train.tsv"));
    let as_tsv = |trec: &str, to: &str| {
        let tsv: String = std::fs::read_to_string(marco.join(trec))
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{}\t{}\t{}\n", f[0], f[2], f[3])
            })
            .collect();
        write(&msmarco.join("run").join(to), &tsv);
    };
    as_tsv("run.train.trec", "ance.train.tsv");
    for split in ["dev.small", "dl19", "dl20", "dl-hard"] {
        as_tsv("run.eval.trec", &format!("ance.{split}.tsv"));
    }
    let pids: Vec<String> = std::fs::read_to_string(marco.join("collection.tsv"))
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let mut matrix = runner::retrieval::matrix::MatrixWriter::open(
        &msmarco.join("matrix/ance"),
        32,
        runner::retrieval::matrix::VectorDtype::F32,
        64,
        "test",
    )
    .unwrap();
    for chunk in pids.chunks(64) {
        let vectors: Vec<f32> = (0..chunk.len() * 32).map(|i| (i % 7) as f32).collect();
        matrix.write_shard(chunk, &vectors).unwrap();
    }
    let (squad, hotpot) = (squad_dir(root), hotpot_dir(root));
    let with_data = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"))
            .args(["grid", "run", exp, "--dry-run", "--output", "runs"])
            .current_dir(root)
            .env("GLUE_DIR", crate::util::fixture("glue"))
            .env("SQUAD_DIR", &squad)
            .env("HOTPOT_DIR", &hotpot)
            .env("MSMARCO_DIR", &msmarco)
            .env("TREC_DL_DIR", &dl)
            .env("DLHARD_DIR", &hard)
            .env("MODELS_DIR", &models)
            .output()
            .unwrap()
    };
    let out = with_data();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("every cell is valid"), "{}", text(&out));

    // A PRF first-pass run that misses a dev query is named.
    let run = msmarco.join("run/ance.dev.small.tsv");
    let full = std::fs::read_to_string(&run).unwrap();
    std::fs::write(
        &run,
        full.lines()
            .skip(7)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = with_data();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("ance.dev.small.tsv: query q14 of")
            && text(&out).contains("has no first-pass"),
        "{}",
        text(&out)
    );
    std::fs::write(&run, full).unwrap();

    // A missing ranking file is named.
    std::fs::remove_file(hard.join("baselines/passage/bm25.run")).unwrap();
    let out = with_data();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("dl-hard/baselines/passage/bm25.run does not exist"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_hotpot_files_are_errors_naming_the_question_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = hotpot_dir(tmp.path());
    let path = dir.join("hotpot_train_v1.1.json");
    let good = read_json(&path);
    type Case = (&'static str, fn(&mut Value), &'static str);
    let cases: [Case; 3] = [
        (
            "a supporting title outside the paragraphs",
            |v| v[3]["supporting_facts"][0][0] = json!("nowhere"),
            "question [3]: `supporting_facts`: title \"nowhere\" is not a paragraph",
        ),
        (
            "a paragraph that is not [title, sentences]",
            |v| v[1]["context"][2] = json!("just text"),
            "question [1]: `context`: expected [title, [sentences]]",
        ),
        (
            "a missing answer",
            |v| {
                v[0].as_object_mut().unwrap().remove("answer");
            },
            "question [0]: `answer` is not a string",
        ),
    ];
    for (what, break_it, want) in cases {
        let mut v = good.clone();
        break_it(&mut v);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = format!("{:#}", read_hotpot_json(&path).unwrap_err());
        assert!(
            err.contains("hotpot_train_v1.1.json") && err.contains(want),
            "{what}: {err}"
        );
    }
}

/// The official reader draws one of the answer's positions per question and step
/// (`random.choice(positions)`): every occurrence gets drawn, the window labels the drawn one,
/// and its text paragraph is the one kept to `max(max_p_len, end + 12)` tokens.
#[test]
fn training_draws_one_of_the_answers_occurrences_as_the_official_reader() {
    use rand::SeedableRng;
    let tmp = tempfile::tempdir().unwrap();
    let (tokenizer, layout) = official_layout(tmp.path(), None, Some(3));
    let item = HotpotItem {
        id: "q".into(),
        question: "which door".into(),
        answer: "door".into(),
        paragraphs: vec![
            ("table".into(), "the door and a door".into()),
            ("chair".into(), "a very good door".into()),
            ("door".into(), "a poor door".into()),
        ],
        supporting: vec![true, true, false],
    };
    // The supporting paragraphs' texts hold three; the distractor's are not positions.
    let all = item.occurrences();
    let at = |paragraph, at| Occurrence {
        paragraph,
        in_title: false,
        at,
    };
    assert_eq!(all, [at(0, 4), at(0, 15), at(1, 12)]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut drawn = [0usize; 3];
    for _ in 0..300 {
        let o = item.draw_occurrence(&mut rng).unwrap();
        drawn[all.iter().position(|x| *x == o).unwrap()] += 1;
    }
    assert!(drawn.iter().all(|&n| n > 60), "about uniform: {drawn:?}");
    // One position: nothing drawn, the generator untouched.
    let mut once = item.clone();
    once.paragraphs[0].1 = "the table".into();
    let (mut a, mut b) = (
        rand::rngs::StdRng::seed_from_u64(2),
        rand::rngs::StdRng::seed_from_u64(2),
    );
    assert_eq!(once.draw_occurrence(&mut a), Some(at(1, 12)));
    assert_eq!(
        rand::Rng::random::<u64>(&mut a),
        rand::Rng::random::<u64>(&mut b)
    );

    let order = [2, 0, 1];
    let (context, _) = item.context(&order);
    let text_at = |p: usize| {
        let (title, _) = &item.paragraphs[p];
        context.find(&format!("{title}: ")).unwrap() + title.len() + 2
    };
    let mut starts = Vec::new();
    for o in &all {
        let w = official_window_at(
            &tokenizer,
            official(&layout),
            &item,
            &order,
            4096,
            true,
            Some(*o),
        )
        .unwrap();
        let (a, b) = w.context_offsets[w.start].unwrap();
        let want = text_at(o.paragraph) + o.at;
        assert!(
            a <= want && want < b,
            "{o:?}: token {a}..{b}, answer at {want}"
        );
        let (_, e) = w.context_offsets[w.end].unwrap();
        assert_eq!(&context[want..e], "door", "{o:?}");
        starts.push(w.start);
        // The drawn position's text keeps its answer; the other supporting text its first 3.
        let marks = w.marks.as_ref().unwrap();
        let text_tokens = |p: u32| marks.piece.iter().filter(|&&k| k == 4 + 2 * p).count() - 1;
        let other = 1 - o.paragraph as u32;
        assert_eq!(text_tokens(other), 3, "{o:?}");
        assert!(text_tokens(o.paragraph as u32) > 3, "{o:?}");
    }
    starts.dedup();
    assert_eq!(starts.len(), 3, "three different labels: {starts:?}");
    // Evaluation (no draw) labels the first supporting text's occurrence in the input's order.
    assert_eq!(item.context(&order).1, Some(text_at(0) + 4));
    assert_eq!(
        item.context(&[1, 0]).1,
        Some(item.context(&[1, 0]).0.find("good door").unwrap() + 5)
    );
}
