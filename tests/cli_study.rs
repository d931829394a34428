//! Neuron studies through `neuronlab grid run`, on the tiny Llama fixture with a word-level
//! tokenizer written here and three made-up "languages" (each its own block of the vocabulary,
//! in lines, JSONL and Parquet files): the run folder's files agree with each other and with
//! brute force, the statistics are shared between studies, and bad input fails the cell with a
//! clear error while the grid goes on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{csv_rows, fixture, neuronlab, text};

/// The tiny Llama (2 layers × 48 FFN neurons, vocabulary 96) with a word-level tokenizer: token
/// `i` is the word `w{i}`; id 1 is BOS, added before every document.
pub(crate) fn tiny_decoder(root: &Path) -> PathBuf {
    let dir = root.join("tiny-llama");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("decoders/tiny-llama").join(f), dir.join(f)).unwrap();
    }
    let vocab: serde_json::Map<String, Value> = (0..96)
        .map(|i| {
            let word = match i {
                0 => "<unk>".to_string(),
                1 => "<s>".to_string(),
                2 => "</s>".to_string(),
                _ => format!("w{i}"),
            };
            (word, Value::from(i))
        })
        .collect();
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [
            {"id": 1, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true},
            {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir
}

/// `n` documents of `len` words drawn (deterministically) from `w{lo}..w{hi}`.
pub(crate) fn documents(n: usize, len: usize, lo: usize, hi: usize, seed: usize) -> Vec<String> {
    (0..n)
        .map(|d| {
            (0..len)
                .map(|t| format!("w{}", lo + (d * 7 + t * 13 + seed * 5 + t * t) % (hi - lo)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// Three languages: `aa` (lines), `bb` (JSONL), `cc` (Parquet).
pub(crate) fn texts(root: &Path) -> [PathBuf; 3] {
    let aa = root.join("aa.txt");
    std::fs::write(&aa, documents(12, 15, 3, 33, 1).join("\n") + "\n").unwrap();
    let bb = root.join("bb.jsonl");
    let lines: Vec<String> = documents(12, 15, 33, 63, 2)
        .into_iter()
        .map(|d| serde_json::json!({ "body": d }).to_string())
        .collect();
    std::fs::write(&bb, lines.join("\n") + "\n").unwrap();
    let cc = root.join("cc.parquet");
    {
        use polars::prelude::*;
        let docs = documents(12, 15, 63, 96, 3);
        let mut frame = DataFrame::new(docs.len(), vec![Column::new("body".into(), docs)]).unwrap();
        ParquetWriter::new(std::fs::File::create(&cc).unwrap())
            .finish(&mut frame)
            .unwrap();
    }
    [aa, bb, cc]
}

/// The `[texts.*]` sections over the files of [`texts`]: `plain` (aa), `json` (bb), `columns` (cc).
pub(crate) fn text_sections(root: &Path) -> String {
    let [aa, bb, cc] = texts(root);
    format!(
        r#"[texts.plain]
format = "lines"
files = {{ aa = "{aa}" }}

[texts.json]
format = "jsonl"
field = "body"
files = {{ bb = "{bb}" }}

[texts.columns]
format = "parquet"
field = "body"
files = {{ cc = "{cc}" }}
"#,
        aa = aa.display(),
        bb = bb.display(),
        cc = cc.display(),
    )
}

pub(crate) fn experiment(root: &Path, studies: &str, grid: &str) -> PathBuf {
    let model = tiny_decoder(root);
    let text = format!(
        r#"name = "study"

[models.tiny]
path = "{model}"
kind = "decoder"

{texts}
{studies}
{grid}"#,
        model = model.display(),
        texts = text_sections(root),
    );
    let path = root.join("study.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) const STUDIES: &str = r#"
[studies.lape]
texts = ["plain", "json", "columns"]
method = "lape"
top_rate = 0.1
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "zero"

[studies.percentile]
texts = ["plain", "json", "columns"]
method = "percentile"
rate = 0.05
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "mean"
random_control = false

[studies.ap]
texts = ["plain", "json", "columns"]
method = "average-precision"
top_n = 4
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "none"
"#;

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The run folders of a grid by study name, from `results.csv`.
fn runs(grid: &Path) -> BTreeMap<String, (PathBuf, Value)> {
    let rows = csv_rows(&grid.join("results.csv"));
    let id = rows[0].iter().position(|c| c == "run_id").unwrap();
    rows[1..]
        .iter()
        .map(|r| {
            let dir = grid.join(&r[id]);
            let result = json(&dir.join("result.json"));
            let study = result["params"]["study"].as_str().unwrap().to_string();
            (study, (dir, result))
        })
        .collect()
}

#[test]
fn studies_write_sets_tables_plots_and_matrices() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"lape\", \"percentile\", \"ap\"]\n";
    let exp = experiment(root, STUDIES, grid);
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "runs", "--dry-run"], root);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 cells"), "{}", text(&out));

    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/study");
    let runs = runs(&grid);
    assert_eq!(runs.len(), 3);
    for (study, (_, result)) in &runs {
        assert_eq!(result["status"], "finished", "{study}: {result}");
    }
    // One statistics file serves the studies; the percentile study added its pass to it.
    let stats: Vec<_> = std::fs::read_dir(grid.join("statistics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let saved = neurons::ActivationStats::load(&stats[0]).unwrap();
    assert!(saved.languages["bb"].exceedance.is_some());
    // One pass holds the selection's percentile and Mondal's intervention percentiles.
    for lang in saved.languages.values() {
        let qs: Vec<f64> = lang.percentiles.iter().map(|p| p.q).collect();
        assert_eq!(qs, [0.75, 0.9, 0.95]);
    }
    let logs: String = runs
        .values()
        .map(|(dir, _)| std::fs::read_to_string(dir.join("log.txt")).unwrap())
        .collect();
    // The average-precision study needs no statistics; the percentile study reads the lape one's.
    assert_eq!(logs.matches("statistics from").count(), 1, "{logs}");

    // Each language: 12 documents of 16 tokens = 192 tokens = 12 windows, 3 held out.
    let (lape_dir, lape_result) = &runs["lape"];
    let log = std::fs::read_to_string(lape_dir.join("log.txt")).unwrap();
    assert!(
        log.contains("cc: 192 tokens (columns) -> 9 windows of 16 for statistics, 3 held out"),
        "{log}"
    );

    // neurons.json and neurons.parquet hold the same rows, and LAPE agrees with the library on
    // the saved statistics.
    let sets = ablation::LanguageSets::from_json(
        &std::fs::read_to_string(lape_dir.join("neurons.json")).unwrap(),
    )
    .unwrap();
    let from_parquet =
        ablation::LanguageSets::read_parquet(&lape_dir.join("neurons.parquet")).unwrap();
    // The same rows (JSON keeps the scores to the last digit or so).
    let rows = |s: &ablation::LanguageSets| -> Vec<(String, usize, usize, f64)> {
        s.rows()
            .map(|r| {
                let lang = r.language.clone().unwrap();
                (lang, r.layer, r.neuron, r.score.unwrap())
            })
            .collect()
    };
    let (a, b) = (rows(&sets), rows(&from_parquet));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((&x.0, x.1, x.2), (&y.0, y.1, y.2));
        assert!((x.3 - y.3).abs() < 1e-12, "{x:?} vs {y:?}");
    }
    let langs: Vec<String> = ["aa", "bb", "cc"].map(String::from).to_vec();
    let config = neurons::LapeConfig {
        top_rate: 0.1,
        ..Default::default()
    };
    let want = neurons::lape(&saved.probabilities(&langs).unwrap(), &config).unwrap();
    for lang in &langs {
        let got: Vec<(usize, usize)> = sets.sets.get(lang).map_or(vec![], |s| {
            s.rows().iter().map(|r| (r.layer, r.neuron)).collect()
        });
        let expected: Vec<(usize, usize)> = want.sets.get(lang).map_or(vec![], |s| {
            s.rows().iter().map(|r| (r.layer, r.neuron)).collect()
        });
        assert_eq!(got, expected, "{lang}");
    }
    let selection = json(&lape_dir.join("selection.json"));
    assert_eq!(selection["method"], "lape");
    assert_eq!(selection["m"], 10); // round(0.1 · 2 · 48)
    assert!((selection["threshold"].as_f64().unwrap() - want.threshold).abs() < 1e-12);

    // counts.csv: per language and layer, totals that add up; overlap.csv: the diagonal is the
    // language's count.
    let counts = csv_rows(&lape_dir.join("counts.csv"));
    assert_eq!(counts[0], ["language", "total", "layer_0", "layer_1"]);
    let overlap = csv_rows(&lape_dir.join("overlap.csv"));
    for (i, row) in counts[1..].iter().enumerate() {
        let n = sets.sets.get(&row[0]).map_or(0, |s| s.len());
        let layers: usize = row[2..].iter().map(|c| c.parse::<usize>().unwrap()).sum();
        assert_eq!(
            (row[1].parse::<usize>().unwrap(), layers),
            (n, n),
            "{row:?}"
        );
        assert_eq!(overlap[i + 1][i + 1].parse::<usize>().unwrap(), n);
    }
    assert_eq!(
        lape_result["metrics"]["neurons_total"].as_f64().unwrap() as usize,
        sets.rows().count()
    );

    // The matrices: 3 × 3, rows ablated, columns evaluated; random control beside them.
    for name in [
        "nll_change",
        "ppl_change",
        "random_nll_change",
        "random_ppl_change",
    ] {
        let m = csv_rows(&lape_dir.join(format!("{name}.csv")));
        assert_eq!(m[0], ["ablated", "aa", "bb", "cc"], "{name}");
        assert_eq!(m.len(), 4, "{name}");
        let svg = std::fs::read_to_string(lape_dir.join(format!("{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("ablated language"));
    }
    for name in ["counts.svg", "overlap.svg", "counts.png", "overlap.png"] {
        assert!(lape_dir.join(name).is_file(), "{name}");
    }
    // A language with neurons changes its own NLL; the metric is the diagonal's mean.
    let nll = csv_rows(&lape_dir.join("nll_change.csv"));
    let diag: f64 = (1..4)
        .map(|i| nll[i][i].parse::<f64>().unwrap())
        .sum::<f64>()
        / 3.0;
    let metric = lape_result["metrics"]["nll_change_diagonal"]
        .as_f64()
        .unwrap();
    assert!((diag - metric).abs() < 1e-5, "{diag} vs {metric}");
    assert_eq!(lape_result["main_metric"], "nll_change_diagonal");

    // Percentile: exactly round(0.05 · 96) = 5 neurons per language, scored by the exceedance
    // probability of the saved statistics; a mean intervention, no control.
    let (pct_dir, _) = &runs["percentile"];
    let pct = ablation::LanguageSets::read_parquet(&pct_dir.join("neurons.parquet")).unwrap();
    let probs = saved.exceedance_probabilities(&langs).unwrap();
    for (k, lang) in langs.iter().enumerate() {
        let set = &pct.sets[lang];
        assert_eq!(set.len(), 5, "{lang}");
        for r in set.rows() {
            let p = probs.values[k][r.layer * 48 + r.neuron] as f64;
            assert!((r.score.unwrap() - p).abs() < 1e-6);
        }
    }
    assert!(pct_dir.join("nll_change.csv").is_file());
    assert!(!pct_dir.join("random_nll_change.csv").exists());

    // Average precision: top 4 and bottom 4 per language, no matrices.
    let (ap_dir, _) = &runs["ap"];
    let ap = ablation::LanguageSets::read_parquet(&ap_dir.join("neurons.parquet")).unwrap();
    assert!(ap.sets.values().all(|s| s.len() == 8));
    assert!(!ap_dir.join("nll_change.csv").exists());

    // The report lists the studies.
    let out = neuronlab(&["report", "runs/study"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = text(&out);
    assert!(
        md.contains("neuron studies") && md.contains("| lape (tang) |"),
        "{md}"
    );
    let run = lape_result["run_id"].as_str().unwrap();
    assert!(md.contains(&format!("{run}/nll_change.png")), "{md}");
    for name in ["nll_change.png", "nll_change.svg"] {
        assert!(
            root.join("runs/study").join(run).join(name).is_file(),
            "{name}"
        );
    }
}

#[test]
fn mondals_percentile_interventions_write_their_statistic() {
    // The same neurons (the percentile method), intervened on with the mean and with the mean
    // per-batch 95th percentile: the two change matrices differ. (That the value written is the
    // statistic is the neurons crate's test `several_percentiles_in_one_pass_…`.)
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let studies = STUDIES.to_string()
        + r#"
[studies.percentile-p95]
texts = ["plain", "json", "columns"]
method = "percentile"
rate = 0.05
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "mean_p95"
random_control = false
"#;
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"percentile\", \"percentile-p95\"]\n";
    let exp = experiment(root, &studies, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let runs = runs(&root.join("runs/study"));
    let read = |study: &str| {
        let dir = &runs[study].0;
        (
            std::fs::read_to_string(dir.join("neurons.json")).unwrap(),
            csv_rows(&dir.join("nll_change.csv")),
        )
    };
    let (mean_sets, mean_nll) = read("percentile");
    let (p95_sets, p95_nll) = read("percentile-p95");
    assert_eq!(mean_sets, p95_sets, "the same neurons");
    assert_eq!(mean_nll[0], p95_nll[0], "the same languages");
    assert_ne!(mean_nll[1..], p95_nll[1..], "the value written differs");
    let config = std::fs::read_to_string(runs["percentile-p95"].0.join("config.toml")).unwrap();
    assert!(config.contains("intervention = \"mean_p95\""), "{config}");

    // A percentile that is not a percent is a clear error before anything runs.
    let bad = studies.replace("\"mean_p95\"", "\"mean_p100\"");
    let exp = experiment(root, &bad, grid);
    let out = neuronlab(
        &[
            "grid",
            "run",
            exp.to_str().unwrap(),
            "--output",
            "bad",
            "--dry-run",
        ],
        root,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("\"mean_p<NN>\" (NN in 1..=99") && text(&out).contains("mean_p100"),
        "{}",
        text(&out)
    );
}

#[test]
fn kojimas_on_p50_forces_the_median_response_at_the_gate() {
    // Kojima et al.'s intervention: the median response over the language's own windows, forced
    // at the gate's linear output; the same value after SiLU is another intervention.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let studies = r#"
[studies.kojima]
texts = ["plain", "json", "columns"]
method = "average-precision"
top_n = 4
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "on_p50"
intervention_point = "gate"
random_control = false

[studies.kojima-after]
texts = ["plain", "json", "columns"]
method = "average-precision"
top_n = 4
window = 16
batch_size = 3
held_out_fraction = 0.25
intervention = "on_p50"
random_control = false
"#;
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"kojima\", \"kojima-after\"]\n";
    let exp = experiment(root, studies, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let grid_dir = root.join("runs/study");
    let runs = runs(&grid_dir);
    let nll = |study: &str| csv_rows(&runs[study].0.join("nll_change.csv"));
    assert_eq!(nll("kojima")[0], nll("kojima-after")[0]);
    assert_ne!(
        nll("kojima")[1..],
        nll("kojima-after")[1..],
        "gate vs activation"
    );
    let config = std::fs::read_to_string(runs["kojima"].0.join("config.toml")).unwrap();
    assert!(config.contains("intervention_point = \"gate\""), "{config}");
    // The medians went into the grid's statistics file, once for both studies.
    let stats: Vec<_> = std::fs::read_dir(grid_dir.join("statistics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stats.len(), 1, "{stats:?}");
    let saved = neurons::ActivationStats::load(&stats[0]).unwrap();
    assert!(
        saved
            .languages
            .values()
            .all(|l| l.response_median.is_some())
    );
    let logs: String = runs
        .values()
        .map(|(dir, _)| std::fs::read_to_string(dir.join("log.txt")).unwrap())
        .collect();
    assert_eq!(logs.matches("median responses aa").count(), 1, "{logs}");
}

#[test]
fn bad_study_input_fails_the_cell_and_the_grid_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let empty = root.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let short = root.join("short.txt");
    std::fs::write(&short, "w5 w6 w7\n").unwrap();
    let sets = root.join("sets.json");
    std::fs::write(
        &sets,
        r#"{"rows": [{"layer": 1, "neuron": 3, "language": "aa"}, {"layer": 1, "neuron": 48, "language": "bb"}]}"#,
    )
    .unwrap();
    let studies = format!(
        r#"
[texts.broken]
format = "lines"
files = {{ dd = "{empty}", ee = "{short}" }}

[studies.empty]
texts = ["plain", "broken"]
languages = ["aa", "dd"]
method = "lape"
window = 16

[studies.short]
texts = ["plain", "broken"]
languages = ["aa", "ee"]
method = "lape"
window = 16

[studies.outside]
texts = ["plain", "json"]
method = "file"
neurons = "{sets}"
window = 16

[studies.fine]
texts = ["plain", "json"]
method = "lape"
window = 16
intervention = "none"
"#,
        empty = empty.display(),
        short = short.display(),
        sets = sets.display()
    );
    // A neuron-set file that does not fit the model is refused before any cell runs.
    let exp = experiment(
        root,
        &studies,
        "[grid]\nmodel = [\"tiny\"]\nstudy = [\"outside\", \"fine\"]\n",
    );
    let out = crate::util::dry_run(&exp, root);
    let e = text(&out);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("study `outside`")
            && e.contains("sets.json: the neuron sets do not fit model `tiny`")
            && e.contains("neuron (1, 48) is outside a model with 2 layers of 48 neurons"),
        "{e}"
    );

    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"empty\", \"short\", \"fine\"]\n";
    let exp = experiment(root, &studies, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(!out.status.success(), "failed cells make a failing exit");
    let all = text(&out);
    let runs = runs(&root.join("runs/study"));
    let error = |study: &str| runs[study].1["error"].as_str().unwrap_or("").to_string();
    assert_eq!(runs["fine"].1["status"], "finished", "{all}");
    let e = error("empty");
    assert!(
        e.contains("language dd") && e.contains("empty.txt") && e.contains("no text"),
        "{e}"
    );
    let e = error("short");
    assert!(
        e.contains("language ee")
            && e.contains("short.txt")
            && e.contains("4 tokens, fewer than the 2 window(s) of 16"),
        "{e}"
    );

    // Statistics of another model are refused by name.
    let other = root.join("other.json");
    let mistral = models::DecoderCheckpoint::open(fixture("decoders/tiny-mistral"))
        .unwrap()
        .load::<crate::util::B>(&Default::default())
        .unwrap()
        .0;
    neurons::ActivationStats::new(&mistral)
        .save(&other)
        .unwrap();
    let studies = format!(
        r#"
[studies.given]
texts = ["plain", "json"]
method = "lape"
window = 16
statistics = ["{other}"]
"#,
        other = other.display()
    );
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"given\"]\n";
    let exp = experiment(root, &studies, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs2"],
        root,
    );
    assert!(!out.status.success());
    let runs = self::runs(&root.join("runs2/study"));
    let e = runs["given"].1["error"].as_str().unwrap().to_string();
    assert!(
        e.contains("other.json") && e.contains("statistics from another model"),
        "{e}"
    );

    // A key that belongs to another method, and an unknown text, name the line.
    let studies = r#"
[studies.wrong]
texts = ["plain", "json"]
method = "lape"
rate = 0.1
"#;
    let exp = experiment(
        root,
        studies,
        "[grid]\nmodel = [\"tiny\"]\nstudy = [\"wrong\"]\n",
    );
    let out = neuronlab(&["grid", "run", exp.to_str().unwrap(), "--dry-run"], root);
    assert!(!out.status.success());
    let e = text(&out);
    assert!(
        e.contains("study.toml, line") && e.contains("`rate` does not apply to method = \"lape\""),
        "{e}"
    );
    let studies = r#"
[studies.wrong]
texts = ["plain", "nope"]
method = "lape"
"#;
    let exp = experiment(
        root,
        studies,
        "[grid]\nmodel = [\"tiny\"]\nstudy = [\"wrong\"]\n",
    );
    let out = neuronlab(&["grid", "run", exp.to_str().unwrap(), "--dry-run"], root);
    let e = text(&out);
    assert!(e.contains("unknown text `nope`"), "{e}");
}

#[test]
fn neurons_compare_prints_the_overlap_per_language_and_layer() {
    use ablation::{LanguageSets, NeuronSet};
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let sets = |langs: &[(&str, &[(usize, usize)])]| {
        LanguageSets::new(
            langs
                .iter()
                .map(|(l, pairs)| (l.to_string(), NeuronSet::from_pairs(pairs.iter().copied())))
                .collect(),
        )
    };
    // en: A {(0,1),(0,2),(2,5)}, B {(0,2),(2,5),(2,6),(1,0)}: both 2, union 5.
    // fr: only in A, 1 neuron; zh: only in B, empty in both after all (no neurons).
    let a = sets(&[("en", &[(0, 1), (0, 2), (2, 5)]), ("fr", &[(1, 3)])]);
    let b = sets(&[("en", &[(0, 2), (2, 5), (2, 6), (1, 0)]), ("zh", &[])]);
    std::fs::write(root.join("a.json"), a.to_json()).unwrap();
    b.write_parquet(&root.join("b.parquet")).unwrap();
    let out = neuronlab(&["neurons", "compare", "a.json", "b.parquet"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = String::from_utf8(out.stdout).unwrap();
    for row in [
        "| en | 3 | 4 | 2 | 0.400 |",
        "| fr | 1 | 0 | 0 | 0.000 |",
        // en per layer: layer 0 A 2, B 1, both 1; layer 1 A 0, B 1; layer 2 A 1, B 2, both 1.
        "| 0 | 2 | 1 | 1 |\n| 1 | 0 | 1 | 0 |\n| 2 | 1 | 2 | 1 |",
    ] {
        assert!(md.contains(row), "no {row:?} in:\n{md}");
    }
    assert!(
        !md.contains("| zh"),
        "a language with no rows is not in a file:\n{md}"
    );
    let out = neuronlab(&["neurons", "compare", "a.json", "missing.json"], root);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("missing.json"), "{}", text(&out));
}

/// `language -> [(layer, neuron)]` of a file of ours, and of the fixtures' `expected.json`.
fn pairs_of(path: &Path) -> BTreeMap<String, Vec<(usize, usize)>> {
    let sets = ablation::LanguageSets::read(path).unwrap();
    let mut out: BTreeMap<String, Vec<(usize, usize)>> = BTreeMap::new();
    for row in sets.rows() {
        let lang = row.language.clone().expect("a language on every row");
        out.entry(lang).or_default().push((row.layer, row.neuron));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn expected_pairs(entry: &str) -> BTreeMap<String, Vec<(usize, usize)>> {
    let dir = fixture("official_neurons");
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let langs = all[entry]["languages"].as_object().unwrap();
    langs
        .iter()
        .filter(|(_, rows)| !rows.as_array().unwrap().is_empty())
        .map(|(lang, rows)| {
            let mut pairs: Vec<(usize, usize)> = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r[0].as_u64().unwrap() as usize,
                        r[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            pairs.sort();
            (lang.clone(), pairs)
        })
        .collect()
}

#[test]
fn neurons_convert_reads_and_writes_the_official_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = fixture("official_neurons");
    let f = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let mut all = vec!["neurons", "convert"];
        all.extend_from_slice(args);
        let out = neuronlab(&all, root);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };

    // Tang: .pth -> ours, as torch saved it; ours -> .pth -> ours is the identity.
    let report = run(&[&f("tang_7.pth"), "tang.json"]);
    assert!(report.contains("7 languages"), "{report}");
    assert_eq!(
        pairs_of(&root.join("tang.json")),
        expected_pairs("tang_7.pth")
    );
    run(&["tang.json", "back.pth", "--layers", "4"]);
    run(&["back.pth", "back.json"]);
    assert_eq!(
        pairs_of(&root.join("back.json")),
        expected_pairs("tang_7.pth")
    );
    assert!(
        !root.join(".back.pth.partial").exists(),
        "the scratch folder is gone"
    );

    // Mondal: the file's own facts (model, L, int_d) carry over to a Mondal file written from it.
    run(&[&f("mondal.pkl"), "mondal.json"]);
    assert_eq!(
        pairs_of(&root.join("mondal.json")),
        expected_pairs("mondal.pkl")
    );
    let report = run(&[&f("mondal.pkl"), "again.pkl"]);
    assert!(report.contains("L 3, int_d 16"), "{report}");
    run(&["again.pkl", "again.parquet"]);
    assert_eq!(
        pairs_of(&root.join("again.parquet")),
        expected_pairs("mondal.pkl")
    );

    // Kojima: two per-language tables in; non-FFN rows are counted and named, not silently kept.
    let report = run(&[&f("kojima_de.csv"), &f("kojima_fr.csv"), "kojima.json"]);
    assert!(report.contains("left out 3 rows"), "{report}");
    assert!(report.contains("self_attn.q_proj 1"), "{report}");
    let sets = ablation::LanguageSets::read(&root.join("kojima.json")).unwrap();
    let de_scores: Vec<f64> = sets
        .rows()
        .filter(|r| r.language.as_deref() == Some("de"))
        .map(|r| r.score.unwrap())
        .collect();
    assert_eq!(de_scores, vec![0.12, 0.98, 0.95]);
}

#[test]
fn neurons_convert_refuses_what_it_cannot_do_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = fixture("official_neurons");
    let f = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let fails = |args: &[&str], want: &[&str]| {
        let mut all = vec!["neurons", "convert"];
        all.extend_from_slice(args);
        let out = neuronlab(&all, root);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let e = text(&out);
        for w in want {
            assert!(e.contains(w), "{args:?}: no {w:?} in {e}");
        }
    };
    fails(&[&f("tang_7.pth"), "out.txt"], &["out.txt", "--to"]);
    fails(&[&f("kojima_de.csv"), "out.csv"], &["read only"]);
    fails(&[&f("tang_6.pth"), "six.json"], &["--languages"]);
    std::fs::write(root.join("ours.json"), "{\"rows\": []}").unwrap();
    fails(&["ours.json", "m.pkl"], &["m.pkl", "--width"]);
    fails(&["ours.json", "m.pkl", "--width", "16"], &["--layers"]);
    std::fs::write(root.join("broken.pth"), b"not a zip").unwrap();
    fails(&["broken.pth", "x.json"], &["broken.pth"]);
    assert!(
        !root.join("x.json").exists() && !root.join("m.pkl").exists(),
        "a failed conversion writes nothing"
    );
}
