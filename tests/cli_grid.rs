//! `neuronlab grid run | list | export` and `report` end to end, on a tiny BERT (the encoder
//! fixture, with a made-up WordPiece vocabulary) and a three-class JSONL dataset written here:
//! the results layout, skipping finished cells, `--cell`, a failing cell that does not stop the
//! grid, resumption after `kill -9`, and bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{csv_rows, files_starting_with, fixture, neuronlab, text};

const WORDS: [&str; 12] = [
    "good", "great", "fine", "bad", "awful", "poor", "table", "chair", "door", "the", "a", "very",
];

/// A tiny BERT checkpoint folder (3 outputs) with a 99-token vocabulary.
pub(crate) fn tiny_model(root: &Path) -> PathBuf {
    let dir = root.join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("encoders/bert").join(f), dir.join(f)).unwrap();
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(WORDS.iter().map(|s| s.to_string()));
    let mut i = 0;
    while vocab.len() < 99 {
        vocab.push(format!("w{i}"));
        i += 1;
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
    dir
}

/// Three classes: positive, negative, neutral words.
fn tiny_dataset(root: &Path) -> PathBuf {
    let dir = root.join("words");
    std::fs::create_dir_all(&dir).unwrap();
    let groups = [
        ["good", "great", "fine"],
        ["bad", "awful", "poor"],
        ["table", "chair", "door"],
    ];
    let lines = |n: usize, offset: usize| {
        (0..n)
            .map(|i| {
                let label = (i + offset) % 3;
                let w = groups[label][(i / 3) % 3];
                let text = if i % 2 == 0 {
                    format!("the {w}")
                } else {
                    format!("a very {w}")
                };
                format!("{{\"text\": \"{text}\", \"label\": {label}}}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(dir.join("train.jsonl"), lines(48, 0) + "\n").unwrap();
    std::fs::write(dir.join("dev.jsonl"), lines(12, 1) + "\n").unwrap();
    dir
}

/// The checkpoint in `dir` without its `classifier.*` tensors, as a pretrained model is.
pub(crate) fn strip_classifier(dir: &Path) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = file
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("classifier."))
        .collect();
    assert!(kept.len() < file.len(), "the fixture has a classifier head");
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
}

pub(crate) fn experiment(root: &Path, extra: &str) -> PathBuf {
    let model = tiny_model(root);
    let data = tiny_dataset(root);
    let text = format!(
        r#"name = "tiny"

[train]
max_steps = 4
batch_size = 8
learning_rate = 1e-3
eval_every = 2
max_seq_len = 8
ablation_rates = [0.25, 0.5]

[models.tiny]
path = "{model}"
kind = "encoder"

[datasets.words]
path = "{data}"
format = "jsonl"
task = "classification"
columns = {{ text = "text", label = "label" }}
labels = ["positive", "negative", "neutral"]
train_file = "train.jsonl"
eval_file = "dev.jsonl"

[losses.cmp2]
kind = "comparative"
n_drop = 2

{extra}"#,
        model = model.display(),
        data = data.display()
    );
    let path = root.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const GRID: &str = r#"[grid]
model = ["tiny"]
dataset = ["words"]
loss = ["baseline", "cmp2"]
seed = [1, 2]
"#;

#[test]
fn a_tiny_grid_runs_resumes_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let exp = exp.to_str().unwrap();

    let out = neuronlab(&["grid", "run", exp, "--output", "runs", "--dry-run"], root);
    assert!(out.status.success(), "{}", text(&out));
    let plan = text(&out);
    assert!(
        plan.contains("4 cells") && plan.contains("every cell is valid"),
        "{plan}"
    );
    assert!(!root.join("runs/tiny").exists(), "a dry run writes nothing");

    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/tiny");
    let rows = csv_rows(&grid.join("results.csv"));
    assert_eq!(rows.len(), 5, "header + 4 cells: {rows:?}");
    let header = &rows[0];
    for col in [
        "run_id",
        "status",
        "error",
        "param_loss",
        "param_seed",
        "accuracy",
        "ablation_0.25",
        "ablation_0.5",
        "seconds",
        "started",
        "commit",
        "device",
    ] {
        assert!(header.contains(&col.to_string()), "{col} in {header:?}");
    }
    let status = header.iter().position(|c| c == "status").unwrap();
    assert!(
        rows[1..].iter().all(|r| r[status] == "finished"),
        "{rows:?}"
    );
    assert!(grid.join("results.parquet").is_file());
    for row in &rows[1..] {
        let run = grid.join(&row[0]);
        for f in ["config.toml", "log.txt", "metrics.jsonl", "result.json"] {
            assert!(run.join(f).is_file(), "{}", run.join(f).display());
        }
        let evals = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        assert_eq!(evals.lines().count(), 2, "evaluations at steps 2 and 4");
        let result: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(result["status"], "finished");
        assert_eq!(result["steps"], 4);
        let acc = result["metrics"]["accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        // config.toml is the resolved config and parses back.
        let config: toml::Value =
            toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
        assert_eq!(config["train"]["max_steps"].as_integer(), Some(4));
    }

    // Identical results for the same seed: run cell 0 again in another output folder.
    let out = neuronlab(
        &["grid", "run", exp, "--output", "again", "--cell", "0"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let run0 = &rows[1][0];
    let read = |dir: &str| {
        std::fs::read_to_string(root.join(dir).join("tiny").join(run0).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["metrics"]["accuracy"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(read("runs"), read("again"));
    assert_eq!(
        csv_rows(&root.join("again/tiny/results.csv")).len(),
        2,
        "--cell 0 ran one cell"
    );

    // The tokenised dataset is cached on disk, one file for the grid's (dataset, tokenizer,
    // length), and a later run reads it: shown by shrinking the cached evaluation split.
    let tokens: Vec<PathBuf> = std::fs::read_dir(root.join("runs/.tokens"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let mut cached: Value =
        serde_json::from_str(&std::fs::read_to_string(&tokens[0]).unwrap()).unwrap();
    assert_eq!(cached["eval"].as_array().unwrap().len(), 12);
    cached["eval"].as_array_mut().unwrap().truncate(3);
    std::fs::write(&tokens[0], cached.to_string()).unwrap();
    std::fs::remove_dir_all(grid.join(run0)).unwrap();
    let out = neuronlab(
        &["grid", "run", exp, "--output", "runs", "--cell", "0"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("48 train / 3 eval examples"),
        "{}",
        text(&out)
    );

    // Re-running skips every finished cell.
    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("0 finished, 4 skipped"),
        "{}",
        text(&out)
    );

    let out = neuronlab(&["grid", "list", exp, "--output", "runs"], root);
    assert_eq!(text(&out).matches("finished").count(), 4, "{}", text(&out));

    let out = neuronlab(&["report", "runs/tiny"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(grid.join("report.md")).unwrap();
    assert!(
        md.contains("loss=baseline") && md.contains("cmp2 vs baseline"),
        "{md}"
    );
    for svg in ["learning_curves.svg", "ablation.svg"] {
        let s = std::fs::read_to_string(grid.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.contains("<polyline"), "{svg}");
    }
}

#[test]
fn eval_dropout_powers_score_the_best_model_with_dropout_on_as_force_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = r#"[grid]
model = ["tiny"]
dataset = ["words"]
loss = ["baseline"]
train = { eval_dropout_powers = [[1, 8]] }
"#;
    let exp = experiment(root, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let rows = csv_rows(&root.join("runs/tiny/results.csv"));
    for col in ["accuracy", "accuracy@dropout1", "accuracy@dropout8"] {
        assert!(rows[0].contains(&col.to_string()), "{col} in {:?}", rows[0]);
    }
    let run = root.join("runs/tiny").join(&rows[1][0]);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(
        log.contains("dropout power 1: accuracy") && log.contains("dropout power 8: accuracy"),
        "{log}"
    );
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    for k in [1, 8] {
        let v = result["metrics"][format!("accuracy@dropout{k}")]
            .as_f64()
            .unwrap();
        assert!((0.0..=1.0).contains(&v), "{v}");
    }
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("eval_dropout_powers = [1, 8]"), "{config}");
    // A power of 0 is no dropout at all: an error, not a silent plain evaluation.
    let exp = experiment(root, &grid.replace("[[1, 8]]", "[[0]]"));
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
        text(&out).contains("eval_dropout_powers must be at least 1"),
        "{}",
        text(&out)
    );
}

#[test]
fn cmp_in_eval_reports_each_views_loss_and_how_often_the_full_model_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let extra = r#"[losses.cmp2-eval]
kind = "comparative"
n_drop = 2
cmp_in_eval = true

[grid]
model = ["tiny"]
dataset = ["words"]
loss = ["cmp2", "cmp2-eval"]
"#;
    let exp = experiment(root, extra);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let rows = csv_rows(&root.join("runs/tiny/results.csv"));
    let loss = rows[0].iter().position(|c| c == "param_loss").unwrap();
    let evals = |row: &Vec<String>| -> Vec<Value> {
        std::fs::read_to_string(root.join("runs/tiny").join(&row[0]).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let plain = rows[1..].iter().find(|r| r[loss] == "cmp2").unwrap();
    let compared = rows[1..].iter().find(|r| r[loss] == "cmp2-eval").unwrap();
    for e in evals(plain) {
        assert!(e["metrics"].get("view_loss_0").is_none(), "{e}");
    }
    let (plain_evals, compared_evals) = (evals(plain), evals(compared));
    assert_eq!(compared_evals.len(), 2);
    for (p, e) in plain_evals.iter().zip(&compared_evals) {
        let m = &e["metrics"];
        // Reporting changes nothing: the same training and the same accuracy.
        assert_eq!(p["train_loss"], e["train_loss"]);
        assert_eq!(p["metrics"]["accuracy"], m["accuracy"]);
        let views: Vec<f64> = (0..3)
            .map(|k| m[format!("view_loss_{k}")].as_f64().unwrap())
            .collect();
        assert!(views.iter().all(|&l| l > 0.0 && l.is_finite()), "{m}");
        for k in 1..3 {
            // A fraction of the 12 evaluation examples.
            let beats = m[format!("full_beats_view_{k}")].as_f64().unwrap();
            assert!((beats * 12.0 - (beats * 12.0).round()).abs() < 1e-9, "{m}");
            assert!((0.0..=1.0).contains(&beats), "{m}");
        }
        assert!(m.get("full_beats_view_0").is_none());
    }
}

#[test]
fn a_failing_cell_is_recorded_and_the_grid_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A learning rate of 1e30 overflows the weights: the loss stops being finite.
    let grid = r#"[grid]
model = ["tiny"]
dataset = ["words"]
loss = ["baseline"]
train = { learning_rate = [1e30, 1e-3] }
"#;
    let exp = experiment(root, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("1 finished, 0 skipped (finished before), 1 failed"),
        "{}",
        text(&out)
    );
    let rows = csv_rows(&root.join("runs/tiny/results.csv"));
    let status = rows[0].iter().position(|c| c == "status").unwrap();
    let error = rows[0].iter().position(|c| c == "error").unwrap();
    assert_eq!(rows[1][status], "failed");
    assert!(rows[1][error].contains("training loss is"), "{:?}", rows[1]);
    assert_eq!(rows[2][status], "finished");
}

#[test]
fn a_killed_grid_resumes_without_losing_finished_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Longer cells than the other tests', so that the kill lands while cells are still pending.
    let grid = GRID.replace("[1, 2]", "[1, 2, 3]") + "train = { max_steps = [150] }\n";
    let exp = experiment(root, &grid);
    let exp = exp.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp, "--output", "runs"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let table = root.join("runs/tiny/results.csv");
    let started = std::time::Instant::now();
    // The table is written at the start (empty) and after each cell: wait for its first row.
    let rows = || std::fs::read_to_string(&table).map_or(0, |t| t.lines().count());
    while rows() < 2 {
        assert!(
            started.elapsed().as_secs() < 120,
            "no cell finished in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = csv_rows(&table).len() - 1;
    assert!(done_before >= 1);
    // No torn files: every result.json present parses.
    for entry in std::fs::read_dir(root.join("runs/tiny")).unwrap() {
        let f = entry.unwrap().path().join("result.json");
        if f.exists() {
            serde_json::from_str::<Value>(&std::fs::read_to_string(&f).unwrap()).unwrap();
        }
    }
    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let skipped = text(&out)
        .lines()
        .filter(|l| l.contains("finished before; skipped"))
        .count();
    assert!(
        skipped >= done_before.min(6) && skipped < 6,
        "{}",
        text(&out)
    );
    assert_eq!(csv_rows(&table).len(), 7);
}

#[test]
fn bad_experiments_are_clear_errors_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, &format!("{GRID}\n[extra]\nkey = 1\n"));
    let out = neuronlab(&["grid", "run", exp.to_str().unwrap()], root);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("tiny.toml, line"), "{}", text(&out));
    assert!(text(&out).contains("extra"), "{}", text(&out));

    // A missing dataset file: named, and nothing is run or written.
    let exp = experiment(root, GRID);
    std::fs::remove_file(root.join("words/dev.jsonl")).unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("dev.jsonl"), "{}", text(&out));
    assert!(!root.join("runs/tiny").exists());

    // A label out of range: file and line.
    std::fs::write(
        root.join("words/dev.jsonl"),
        "{\"text\": \"the good\", \"label\": 0}\n{\"text\": \"the bad\", \"label\": 7}\n",
    )
    .unwrap();
    let out = neuronlab(&["grid", "run", exp.to_str().unwrap(), "--dry-run"], root);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("dev.jsonl") && text(&out).contains("line 2"),
        "{}",
        text(&out)
    );

    // --cell out of range.
    std::fs::write(
        root.join("words/dev.jsonl"),
        "{\"text\": \"the good\", \"label\": 0}\n",
    )
    .unwrap();
    let out = neuronlab(&["grid", "run", exp.to_str().unwrap(), "--cell", "9"], root);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("--cell 9"), "{}", text(&out));
}

#[test]
fn the_shipped_experiments_on_fetched_artefacts_validate() {
    for file in [
        "quickstart.toml",
        "wiki-topics.toml",
        "lape-smollm2.toml",
        "xling-topics-smollm2.toml",
    ] {
        let exp = crate::util::root().join("experiments").join(file);
        let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
            .args(["grid", "run", exp.to_str().unwrap(), "--dry-run"])
            .current_dir(crate::util::root())
            .env(
                "NEURONLAB_CACHE",
                crate::util::artefact("rt-polarity").parent().unwrap(),
            )
            .output()
            .unwrap();
        assert!(out.status.success(), "{file}: {}", text(&out));
        assert!(
            text(&out).contains("every cell is valid"),
            "{file}: {}",
            text(&out)
        );
    }
}

#[test]
fn the_paper_glue_grid_validates_on_fixture_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = crate::util::root().join("experiments/cmploss-glue.toml");
    let exp = exp.to_str().unwrap();

    // Without the variables: every cell listed, the unset variables named.
    let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp, "--dry-run", "--output", "runs"])
        .current_dir(root)
        .env_remove("GLUE_DIR")
        .env_remove("MODELS_DIR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("48 cells"), "8 tasks x 2 losses x 3 seeds: {t}");
    assert!(
        t.contains("MODELS_DIR is not set") && t.contains("GLUE_DIR is not set"),
        "{t}"
    );

    // With the GLUE fixtures (in the distributed layout) and the tiny model as bert-base-cased.
    let models = root.join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::rename(tiny_model(root), models.join("bert-base-cased")).unwrap();
    // A pretrained checkpoint has no classifier head (the tiny BERT's has 3 outputs, which the
    // checks before the run refuse for the 2-class tasks).
    strip_classifier(&models.join("bert-base-cased"));
    let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp, "--dry-run", "--output", "runs"])
        .current_dir(root)
        .env("GLUE_DIR", fixture("glue"))
        .env("MODELS_DIR", &models)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("every cell is valid"), "{}", text(&out));
}

#[test]
fn a_run_killed_mid_cell_resumes_from_its_checkpoint_with_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"cmp2\"]\n\
                train = { max_steps = [240], eval_every = [40], checkpoint_every_s = [0.0] }\n";
    let exp = experiment(root, grid);
    let exp = exp.to_str().unwrap();
    let evaluations = |out: &str| -> Vec<(u64, String, String)> {
        let grid = root.join(out).join("tiny");
        let run = std::fs::read_dir(&grid)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .unwrap();
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["step"].as_u64().unwrap(),
                    v["train_loss"].to_string(),
                    v["metrics"].to_string(),
                )
            })
            .collect()
    };

    let out = neuronlab(&["grid", "run", exp, "--output", "straight"], root);
    assert!(out.status.success(), "{}", text(&out));
    let straight = evaluations("straight");
    assert_eq!(straight.len(), 6);
    assert!(
        !root.join("straight/tiny").read_dir().unwrap().any(|e| e
            .unwrap()
            .path()
            .join("checkpoint")
            .exists()),
        "a finished run removes its checkpoint"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp, "--output", "killed"])
        .current_dir(root)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let state = loop {
        let found = std::fs::read_dir(root.join("killed/tiny"))
            .ok()
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path().join("checkpoint/state.json"))
            .find(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(state.exists());
    let out = neuronlab(&["grid", "run", exp, "--output", "killed"], root);
    assert!(out.status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("resumed from the checkpoint at step"), "{log}");
    assert_eq!(evaluations("killed"), straight);
}

#[test]
fn a_regression_cell_trains_and_reports_pearson_and_spearman() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The QA fixture has no classification head, so a fresh 1-output regression head is made.
    let model = tiny_model(root);
    std::fs::copy(
        fixture("encoders/bert-qa/model.safetensors"),
        model.join("model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        fixture("encoders/bert-qa/config.json"),
        model.join("config.json"),
    )
    .unwrap();
    let data = root.join("scores");
    std::fs::create_dir_all(&data).unwrap();
    let rows = |n: usize| {
        (0..n)
            .map(|i| {
                let (w, score) = [("good", 4.5), ("fine", 2.5), ("awful", 0.5)][i % 3];
                format!("the {w} {},{score}", WORDS[6 + i % 3])
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    std::fs::write(
        data.join("train.csv"),
        format!("sentence,score\n{}\n", rows(30)),
    )
    .unwrap();
    std::fs::write(
        data.join("dev.csv"),
        format!("sentence,score\n{}\n", rows(9)),
    )
    .unwrap();
    let exp = root.join("sts.toml");
    std::fs::write(
        &exp,
        format!(
            r#"name = "sts"
[train]
max_steps = 6
batch_size = 10
learning_rate = 1e-3
eval_every = 3

[models.tiny]
path = "{}"
kind = "encoder"

[datasets.scores]
path = "{}"
format = "csv"
task = "regression"
columns = {{ text = "sentence", label = "score" }}
train_file = "train.csv"
eval_file = "dev.csv"

[losses.cmp-first]
kind = "comparative"
n_drop = 2
target = "first"

[grid]
model = ["tiny"]
dataset = ["scores"]
loss = ["baseline", "cmp-first"]
"#,
            model.display(),
            data.display()
        ),
    )
    .unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let rows = csv_rows(&root.join("runs/sts/results.csv"));
    assert_eq!(rows.len(), 3);
    for col in ["pearson", "spearman"] {
        let i = rows[0]
            .iter()
            .position(|c| c == col)
            .unwrap_or_else(|| panic!("{col}: {rows:?}"));
        for r in &rows[1..] {
            let v: f64 = r[i].parse().unwrap();
            assert!((-1.0..=1.0).contains(&v), "{col} = {v}");
        }
    }
    let out = neuronlab(&["report", "runs/sts"], root);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("pearson"), "{}", text(&out));
}

#[test]
fn gradient_accumulation_matches_the_larger_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Two axis values: 1 batch of 16 per step, or 2 accumulated batches of 8. Without dropout
    // (set to 0 in the config) both steps see the same 16 examples and the same mean gradient.
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\n\
                train = { batch_size = [16, 8], grad_accum_steps = [1, 2] }\n";
    let exp = experiment(root, grid);
    let config = root.join("tiny-bert/config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    c["hidden_dropout_prob"] = 0.0.into();
    c["attention_probs_dropout_prob"] = 0.0.into();
    std::fs::write(&config, c.to_string()).unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let grid_dir = root.join("runs/tiny");
    let curve = |bs: &str, acc: &str| -> Vec<(f64, f64)> {
        let run = std::fs::read_dir(&grid_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                std::fs::read_to_string(p.join("result.json")).is_ok_and(|t| {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    v["params"]["batch_size"] == bs && v["params"]["grad_accum_steps"] == acc
                })
            })
            .unwrap();
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["train_loss"].as_f64().unwrap(),
                    v["metrics"]["accuracy"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    let (big, accumulated) = (curve("16", "1"), curve("8", "2"));
    assert_eq!(big.len(), 2);
    for ((l1, a1), (l2, a2)) in big.iter().zip(&accumulated) {
        assert!((l1 - l2).abs() < 1e-5, "train loss {l1} vs {l2}");
        assert_eq!(a1, a2);
    }
    // And accumulation is not a no-op: 1 batch of 8 per step differs.
    assert_ne!(curve("8", "1"), big);
}

/// A run seen from outside: plain progress lines on a stderr that is not a terminal (a pipe, as
/// under CI or Slurm), `tensorboard = true`'s event file, and `save_model = true`'s folder that
/// our strict loader (and, checked by hand with `check_grid_model.py`, transformers) opens.
#[test]
fn a_run_shows_progress_writes_tensorboard_scalars_and_saves_its_best_model() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"baseline\"]\n";
    let exp = experiment(root, grid);
    // A pretrained model has no head: the saved one must carry the trained classifier.
    strip_classifier(&root.join("tiny-bert"));
    let text_of = std::fs::read_to_string(&exp).unwrap();
    let text_of = text_of.replace(
        "[train]\n",
        "[train]\ntensorboard = true\nsave_model = true\n",
    );
    std::fs::write(&exp, text_of).unwrap();
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains("\x1b["),
        "no bar drawn off a terminal: {stderr:?}"
    );
    let steps: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[1/1] steps "))
        .collect();
    assert_eq!(steps.len(), 4, "a line at each tenth crossed: {stderr}");
    assert!(
        steps[0].starts_with("[1/1] steps 1/4 (25%) loss "),
        "{stderr}"
    );
    assert!(
        steps[2].contains(" · accuracy ") && steps[3].starts_with("[1/1] steps 4/4 (100%)"),
        "the last evaluation is shown beside the loss: {stderr}"
    );
    assert!(
        steps.iter().all(|l| l.contains(" steps/s")),
        "the rate: {stderr}"
    );
    assert!(steps[0].contains(" left"), "the time left: {stderr}");

    let rows = csv_rows(&root.join("runs/tiny/results.csv"));
    let run = root.join("runs/tiny").join(&rows[1][0]);
    assert!(
        !run.join("progress.json").exists(),
        "progress.json goes when the run ends"
    );

    // TensorBoard: a loss and learning rate per step, the evaluations' metrics at their steps.
    let events = files_starting_with(&run, "events.out.tfevents.");
    assert_eq!(events.len(), 1, "{events:?}");
    let scalars = runner::harness::tensorboard::read_scalars(&events[0]).unwrap();
    let of = |tag: &str| -> Vec<(u64, f32)> {
        scalars
            .iter()
            .filter(|s| s.tag == tag)
            .map(|s| (s.step, s.value))
            .collect()
    };
    let loss_steps: Vec<u64> = of("train/loss").iter().map(|s| s.0).collect();
    assert_eq!(loss_steps, [1, 2, 3, 4]);
    assert_eq!(of("train/learning_rate").len(), 4);
    let evaluations: Vec<(u64, f32)> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["metrics"]["accuracy"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert_eq!(of("eval/accuracy"), evaluations);

    // The best model: an HF folder with the tokenizer, whose classifier our strict loader reads
    // (nothing initialised, nothing dropped).
    let model = run.join("model");
    for f in ["config.json", "model.safetensors", "vocab.txt"] {
        assert!(model.join(f).is_file(), "{}", model.join(f).display());
    }
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    let checkpoint = models::Checkpoint::open(&model).unwrap();
    let (_, report) = models::SequenceClassifier::<crate::util::B>::load(
        checkpoint,
        3,
        None,
        0,
        &Default::default(),
    )
    .unwrap();
    assert!(
        report.initialised.is_empty() && report.dropped.is_empty(),
        "{report:?}"
    );
}

/// `grid list` on a grid under way: a cell whose run folder is locked is running, with how far
/// its `progress.json` says it is, and the time left comes from the finished cells' durations
/// and the running cell's own estimate.
#[test]
fn grid_list_shows_the_running_cell_and_the_time_left() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let exp = exp.to_str().unwrap();
    let list = || {
        let out = neuronlab(&["grid", "list", exp, "--output", "runs"], root);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        list().ends_with("0 done, 0 failed, 0 running, 4 pending\n"),
        "no time left before a cell has finished: {}",
        list()
    );
    for cell in ["0", "1"] {
        let out = neuronlab(
            &["grid", "run", exp, "--output", "runs", "--cell", cell],
            root,
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    // Cell 2 "runs": its folder is locked (as a running process holds it) and its progress file
    // says half of its steps are done.
    let plan = list();
    let id = plan
        .lines()
        .find(|l| l.trim_start().starts_with("2 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{plan}"))
        .to_string();
    let run = root.join("runs/tiny").join(&id);
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        run.join("progress.json"),
        r#"{"unit":"steps","done":2,"total":4,"seconds_left":3.0,"message":"loss 1.0"}"#,
    )
    .unwrap();
    let lock = std::fs::File::create(run.join(".lock")).unwrap();
    lock.lock().unwrap();
    let plan = list();
    let line = plan.lines().find(|l| l.contains(&id)).unwrap();
    assert!(
        line.contains("running   [steps 2/4 (50%), about 3 s left]"),
        "{plan}"
    );
    let summary = plan.lines().last().unwrap();
    assert!(
        summary.starts_with("2 done, 0 failed, 1 running, 1 pending; about ")
            && summary.contains(" left in one process (a cell took "),
        "{plan}"
    );
    drop(lock);
    assert!(list().contains(&format!("{id}  pending")), "{}", list());
}
