//! Cross-lingual LoRA fine-tuning cells through `neuronlab grid run`, on the tiny Llama with the
//! word-level tokenizer of `cli_study`: a two-class task whose classes use different blocks of
//! the vocabulary, trained on "language" `aa` and evaluated on `bb` and `cc` (their own raw
//! labels mapped to the shared classes). The run folder's files agree with each other, the
//! gate adapter changes only the chosen neurons, and bad input fails with a clear error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli_study::{documents, tiny_decoder};
use crate::util::{csv_rows, dry_run, neuronlab, text};

/// JSON lines of `(text, label)`: documents of class `x` from `w3..w9`, of class `y` from
/// `w63..w69`, alternating (few words, so that the training documents cover them all).
fn task_file(path: &Path, n: usize, labels: [&str; 2], seed: usize, extra: &[(&str, &str)]) {
    let xs = documents(n, 6, 3, 9, seed);
    let ys = documents(n, 6, 63, 69, seed + 1);
    let mut lines: Vec<String> = xs
        .into_iter()
        .zip(ys)
        .flat_map(|(x, y)| {
            [
                serde_json::json!({"body": x, "topic": labels[0]}).to_string(),
                serde_json::json!({"body": y, "topic": labels[1]}).to_string(),
            ]
        })
        .collect();
    lines.extend(
        extra
            .iter()
            .map(|(body, topic)| serde_json::json!({"body": body, "topic": topic}).to_string()),
    );
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Neuron sets: `aa` and `bb` with neurons in both layers, `cc` in layer 1 only.
const SETS: &str = r#"{"rows": [
  {"language": "aa", "layer": 0, "neuron": 3}, {"language": "aa", "layer": 0, "neuron": 17},
  {"language": "aa", "layer": 1, "neuron": 40},
  {"language": "bb", "layer": 0, "neuron": 5}, {"language": "bb", "layer": 1, "neuron": 6},
  {"language": "bb", "layer": 1, "neuron": 7},
  {"language": "cc", "layer": 1, "neuron": 11}, {"language": "cc", "layer": 1, "neuron": 12}
]}"#;

pub(crate) fn experiment(root: &Path, lora: &str, grid: &str) -> PathBuf {
    let model = tiny_decoder(root);
    task_file(&root.join("aa.jsonl"), 16, ["ex", "why"], 1, &[]);
    task_file(
        &root.join("bb.jsonl"),
        6,
        ["bx", "by"],
        5,
        &[("w4 w5", "skip")],
    );
    task_file(&root.join("cc.jsonl"), 5, ["x", "y"], 9, &[]);
    std::fs::write(root.join("sets.json"), SETS).unwrap();
    let text = format!(
        r#"name = "adapt"

[train]
max_seq_len = 8
batch_size = 4
learning_rate = 0.02
epochs = 6
save_model = true

[models.tiny]
path = "{model}"
kind = "decoder"

[tasks.topics]
format = "jsonl"
text = "body"
label = "topic"
classes = ["x", "y"]
train = {{ aa = "aa.jsonl" }}
eval = {{ bb = "bb.jsonl", cc = "cc.jsonl" }}
label_map = {{ aa = {{ ex = "x", why = "y" }}, bb = {{ bx = "x", by = "y" }} }}
drop_labels = {{ bb = ["skip"] }}

{lora}
{grid}"#,
        model = model.display(),
    );
    let path = root.join("adapt.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) const LORA: &str = r#"
[lora]
targets = ["q_proj", "v_proj"]
rank = 2
neurons_file = "sets.json"
intervention = "zero"
"#;

/// Every run of a grid: (params without the seed, run folder, result.json).
fn runs(grid: &Path) -> Vec<(BTreeMap<String, String>, PathBuf, Value)> {
    let rows = csv_rows(&grid.join("results.csv"));
    let id = rows[0].iter().position(|c| c == "run_id").unwrap();
    rows[1..]
        .iter()
        .map(|r| {
            let dir = grid.join(&r[id]);
            let result: Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("result.json")).unwrap())
                    .unwrap();
            let params = result["params"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            (params, dir, result)
        })
        .collect()
}

/// `[layer][neuron]`: whether the saved `gate_proj` `lora_B` of that layer has a non-zero entry
/// in the neuron's column.
fn changed_gate_neurons(adapter: &Path) -> Vec<Vec<bool>> {
    let bytes = std::fs::read(adapter).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    (0..2)
        .map(|l| {
            let t = file
                .tensor(&format!(
                    "base_model.model.model.layers.{l}.mlp.gate_proj.lora_B.weight"
                ))
                .unwrap();
            let [out, rank] = [t.shape()[0], t.shape()[1]];
            let values: Vec<f32> = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (0..out)
                .map(|j| (0..rank).any(|k| values[j * rank + k] != 0.0))
                .collect()
        })
        .collect()
}

#[test]
fn lora_cells_train_on_one_language_and_evaluate_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\n\
                neurons = [\"none\", \"aa\", \"target\", \"random:target\"]\nseed = [1, 2]\n";
    let exp = experiment(root, LORA, grid);
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "runs", "--dry-run"], root);
    assert!(out.status.success(), "{}", text(&out));
    // none, aa: one cell each; target and random:target: one per evaluation language; × 2 seeds.
    assert!(text(&out).contains("12 cells"), "{}", text(&out));

    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let runs = runs(&root.join("runs/adapt"));
    assert_eq!(runs.len(), 12);
    let sets = ablation::LanguageSets::from_json(SETS).unwrap();
    for (params, dir, result) in &runs {
        assert_eq!(result["status"], "finished", "{params:?}: {result}");
        let metrics = &result["metrics"];
        // Evaluated languages: both, or the target's one.
        let langs: Vec<&str> = match params["eval"].as_str() {
            "all" => vec!["bb", "cc"],
            one => vec![one],
        };
        let table = csv_rows(&dir.join("per_language.csv"));
        assert_eq!(
            table[0],
            ["language", "examples", "accuracy", "accuracy_intervened"]
        );
        assert_eq!(table.len(), 1 + langs.len());
        let predictions = csv_rows(&dir.join("predictions.csv"));
        let mut mean = 0.0;
        for (row, lang) in table[1..].iter().zip(&langs) {
            assert_eq!(row[0], *lang);
            // bb: 12 examples, the "skip" one left out; cc: 10.
            let n = if *lang == "bb" { 12 } else { 10 };
            assert_eq!(row[1], n.to_string());
            for (column, intervened) in [(2, "false"), (3, "true")] {
                let preds: Vec<&Vec<String>> = predictions[1..]
                    .iter()
                    .filter(|p| p[0] == *lang && p[4] == intervened)
                    .collect();
                assert_eq!(preds.len(), n);
                // Labels alternate x, y.
                for p in &preds {
                    let i: usize = p[1].parse().unwrap();
                    assert_eq!(p[2], (i % 2).to_string(), "{p:?}");
                }
                let correct = preds.iter().filter(|p| p[2] == p[3]).count();
                let acc: f64 = row[column].parse().unwrap();
                assert!((acc - correct as f64 / n as f64).abs() < 1e-6, "{row:?}");
                let key = if intervened == "true" {
                    format!("accuracy_intervened/{lang}")
                } else {
                    format!("accuracy/{lang}")
                };
                assert!((metrics[&key].as_f64().unwrap() - acc).abs() < 1e-6);
            }
            mean += metrics[&format!("accuracy/{lang}")].as_f64().unwrap() / langs.len() as f64;
        }
        assert!((metrics["accuracy"].as_f64().unwrap() - mean).abs() < 1e-12);
        // The classes use disjoint words: every model learns them.
        assert!(mean >= 0.8, "{params:?}: accuracy {mean}");

        // The adapters as a PEFT folder, read back onto the decoder with the head.
        let folder = dir.join("adapter");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(folder.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["task_type"], "SEQ_CLS");
        assert_eq!(config["modules_to_save"], serde_json::json!(["score"]));
        assert_eq!(
            config["base_model_name_or_path"],
            root.join("tiny-llama").display().to_string()
        );
        let base = models::DecoderCheckpoint::open(root.join("tiny-llama"))
            .unwrap()
            .load::<crate::util::B>(&Default::default())
            .unwrap()
            .0;
        let loaded = models::load_peft(base, &folder, None, &Default::default()).unwrap();
        assert_eq!(loaded.head.unwrap().weight.dims(), [32, 2]);
        // `inspect` on the folder says what it is (it said "no checkpoint").
        let shown = neuronlab(&["inspect", folder.to_str().unwrap()], root);
        let said = text(&shown);
        assert!(shown.status.success(), "{said}");
        assert!(
            said.contains("PEFT LoRA adapter: task SEQ_CLS, r 2")
                && said.contains("modules_to_save [score]")
                && said.contains("lora_A"),
            "{said}"
        );

        // The gate adapter: absent for plain LoRA; otherwise only the set's neurons changed.
        let adapter = folder.join("adapter_model.safetensors");
        let bytes = std::fs::read(&adapter).unwrap();
        let keys: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        let neurons = params["neurons"].as_str();
        if neurons == "none" {
            assert!(!keys.iter().any(|k| k.contains("gate_proj")), "{keys:?}");
            assert!(!dir.join("trained_neurons.json").exists());
            assert_eq!(metrics["trained_neurons"], 0.0);
            continue;
        }
        let trained = ablation::NeuronSet::from_json(
            &std::fs::read_to_string(dir.join("trained_neurons.json")).unwrap(),
        )
        .unwrap();
        let wanted = match (neurons, params["eval"].as_str()) {
            ("aa", _) => sets.sets["aa"].clone(),
            (_, lang) => sets.sets[lang].clone(),
        };
        let pairs = |s: &ablation::NeuronSet| -> Vec<(usize, usize)> {
            s.rows().iter().map(|r| (r.layer, r.neuron)).collect()
        };
        if neurons.starts_with("random:") {
            assert_eq!(trained.counts_per_layer(2), wanted.counts_per_layer(2));
            assert_ne!(pairs(&trained), pairs(&wanted));
        } else {
            assert_eq!(pairs(&trained), pairs(&wanted));
        }
        let changed = changed_gate_neurons(&adapter);
        for (l, layer) in changed.iter().enumerate() {
            for (j, &c) in layer.iter().enumerate() {
                assert_eq!(
                    c,
                    trained.contains(l, j),
                    "{params:?}: layer {l} neuron {j} changed = {c}"
                );
            }
        }
    }
    // The two seeds of a setting differ (head, adapters and order are seeded).
    let plain: Vec<&Value> = runs
        .iter()
        .filter(|(p, _, _)| p["neurons"] == "none")
        .map(|(_, _, r)| &r["metrics"]["train_loss"])
        .collect();
    assert_eq!(plain.len(), 2);
    assert_ne!(plain[0], plain[1]);

    // The report: a row per setting, per language, with the delta to plain LoRA.
    let out = neuronlab(&["report", "runs/adapt"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(root.join("runs/adapt/report.md")).unwrap();
    assert!(
        md.contains("| settings | bb acc. (%) | cc acc. (%) | Δ to none"),
        "{md}"
    );
    for setting in [
        "neurons=none",
        "neurons=aa",
        "neurons=target",
        "neurons=random:target",
    ] {
        assert!(md.contains(setting), "{setting}: {md}");
    }
    assert!(md.contains("With the test-time intervention"), "{md}");
    for svg in ["accuracy.svg", "accuracy_delta.svg"] {
        let s = std::fs::read_to_string(root.join("runs/adapt").join(svg)).unwrap();
        assert!(s.starts_with("<svg"), "{svg}");
    }
}

#[test]
fn bad_lora_settings_and_missing_evaluation_data_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\n";
    let cases = [
        (
            LORA.replace("\"v_proj\"", "\"value\""),
            grid.to_string(),
            "lora.targets.1: \"value\" names no linear of a Llama layer",
        ),
        (
            LORA.replace("rank = 2", "rank = 0"),
            grid.to_string(),
            "lora.rank: the rank must be at least 1",
        ),
        (
            "[lora]\n".to_string(),
            format!("{grid}neurons = [\"aa\"]\n"),
            "grid.neurons.0: \"aa\" needs neuron sets",
        ),
        (
            LORA.to_string(),
            format!("{grid}neurons = [\"aa+\"]\n"),
            "grid.neurons: \"aa+\": expected none, a language",
        ),
        (
            LORA.replace("intervention = \"zero\"", "intervention = \"mean\""),
            grid.to_string(),
            "lora.intervention: a mean or mean_p<NN> intervention needs the study's statistics",
        ),
    ];
    for (lora, grid, want) in &cases {
        let exp = experiment(root, lora, grid);
        let out = dry_run(&exp, root);
        assert!(!out.status.success(), "{want}");
        let msg = text(&out);
        assert!(msg.contains(want), "want {want:?} in {msg}");
        assert!(msg.contains("adapt.toml, line "), "{msg}");
    }

    // Neuron sets that cannot apply are refused by the dry run, before any cell trains: a
    // neuron past the FFN's width (it panicked after training, at the intervention), a layer
    // past the model's, a language the sets do not have.
    let exp = experiment(root, LORA, &format!("{grid}neurons = [\"none\", \"zz\"]\n"));
    let out = dry_run(&exp, root);
    let msg = text(&out);
    assert!(!out.status.success(), "{msg}");
    assert!(
        msg.contains(
            "sets.json: no neuron set for zz (neurons = \"zz\", and an intervention on \
                      every evaluation language); it has aa, bb, cc"
        ),
        "{msg}"
    );
    for (row, want) in [
        (
            r#"{"language": "aa", "layer": 0, "neuron": 999}"#,
            "neuron (0, 999) is outside a model with 2 layers of 48 neurons",
        ),
        (
            r#"{"language": "aa", "layer": 9, "neuron": 1}"#,
            "neuron (9, 1) is outside a model with 2 layers of 48 neurons",
        ),
    ] {
        let exp = experiment(root, LORA, grid);
        let sets = SETS.replacen('[', &format!("[{row}, "), 1);
        std::fs::write(root.join("sets.json"), sets).unwrap();
        let out = dry_run(&exp, root);
        let msg = text(&out);
        assert!(!out.status.success(), "{msg}");
        assert!(
            msg.contains("sets.json: the neuron set of language aa does not fit the model")
                && msg.contains(want),
            "want {want:?} in {msg}"
        );
    }

    // At run time: an evaluation language whose file has no example left fails the cells; once
    // the file is fixed, a second run trains them.
    let exp = experiment(root, LORA, &format!("{grid}neurons = [\"none\", \"aa\"]\n"));
    std::fs::write(
        root.join("cc.jsonl"),
        "{\"body\": \"w3 w4\", \"topic\": \"gone\"}\n",
    )
    .unwrap();
    let text_ = std::fs::read_to_string(&exp).unwrap().replace(
        "drop_labels = { bb = [\"skip\"] }",
        "drop_labels = { bb = [\"skip\"], cc = [\"gone\"] }",
    );
    std::fs::write(&exp, text_).unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("language cc: no examples in") && msg.contains("(1 left out by drop_labels)"),
        "{msg}"
    );
    let failed = runs(&root.join("runs/adapt"));
    assert!(failed.iter().all(|(_, _, r)| r["status"] == "failed"));
    task_file(&root.join("cc.jsonl"), 5, ["x", "y"], 9, &[]);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let runs = runs(&root.join("runs/adapt"));
    let status: BTreeMap<String, String> = runs
        .iter()
        .map(|(p, _, r)| {
            (
                p["neurons"].clone(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(status["none"], "finished");
    assert_eq!(status["aa"], "finished");
}

#[test]
fn the_lsn_paper_grid_validates_on_fixture_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = crate::util::root().join("experiments/lsn-paper.toml");
    let exp = exp.to_str().unwrap();
    let dry_run = |vars: &[(&str, PathBuf)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"));
        cmd.args(["grid", "run", exp, "--dry-run", "--output", "runs"])
            .current_dir(root);
        for v in ["MODELS_DIR", "XNLI_DIR", "XQUAD_DIR", "LSN_NEURONS"] {
            cmd.env_remove(v);
        }
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    // Without the variables: every cell listed, the unset variables named.
    let out = dry_run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    // Per model and task: none, en, and target / en+target for each of three languages.
    assert!(t.contains("32 cells"), "{t}");
    for var in ["MODELS_DIR", "XNLI_DIR", "XQUAD_DIR", "LSN_NEURONS"] {
        assert!(t.contains(&format!("{var} is not set")), "{var}: {t}");
    }
    assert!(
        t.contains("neurons=en+target") && t.contains("eval=ur"),
        "{t}"
    );

    // With the tiny Llama as both models and the XNLI fixtures in the distributed layout.
    let models = root.join("models");
    std::fs::create_dir_all(models.join("Mistral-Nemo-Base-2407")).unwrap();
    let tiny = tiny_decoder(root);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny.join(f), models.join("Mistral-Nemo-Base-2407").join(f)).unwrap();
    }
    std::fs::rename(&tiny, models.join("Meta-Llama-3.1-8B")).unwrap();
    let xnli = root.join("xnli");
    std::fs::create_dir_all(&xnli).unwrap();
    let fixtures = crate::util::fixture("xnli");
    std::fs::copy(fixtures.join("xnli.test.tsv"), xnli.join("xnli.test.tsv")).unwrap();
    std::fs::copy(
        fixtures.join("multinli.train.vi.tsv"),
        xnli.join("multinli.train.en.tsv"),
    )
    .unwrap();
    let xquad = root.join("xquad");
    std::fs::create_dir_all(&xquad).unwrap();
    for lang in ["en", "hi", "vi", "zh"] {
        std::fs::copy(
            crate::util::fixture("xquad/xquad.es.json"),
            xquad.join(format!("xquad.{lang}.json")),
        )
        .unwrap();
    }
    // Sets of the grid's languages (the dry run checks each cell's against the model).
    let rows: Vec<String> = ["en", "hi", "ur", "vi", "zh"]
        .iter()
        .enumerate()
        .map(|(i, l)| format!(r#"{{"language": "{l}", "layer": 1, "neuron": {i}}}"#))
        .collect();
    std::fs::write(
        root.join("sets.json"),
        format!(r#"{{"rows": [{}]}}"#, rows.join(", ")),
    )
    .unwrap();
    let out = dry_run(&[
        ("MODELS_DIR", models),
        ("XNLI_DIR", xnli.clone()),
        ("XQUAD_DIR", xquad.clone()),
        ("LSN_NEURONS", root.join("sets.json")),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("every cell is valid"), "{t}");
    assert!(t.contains("task=xquad") && t.contains("eval=zh"), "{t}");
    // A missing XQuAD file is named.
    std::fs::remove_file(xquad.join("xquad.zh.json")).unwrap();
    let out = dry_run(&[
        ("MODELS_DIR", root.join("models")),
        ("XNLI_DIR", xnli),
        ("XQUAD_DIR", xquad),
        ("LSN_NEURONS", root.join("sets.json")),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no evaluation file for language zh"),
        "{}",
        text(&out)
    );
}

/// The texts, a percentile study `p90` of them, and `[lora]` taking its sets and statistics
/// (`neurons_from`, a mean intervention).
pub(crate) fn p90_study(root: &Path) -> String {
    format!(
        r#"
{texts}
[studies.p90]
texts = ["plain", "json", "columns"]
method = "percentile"
rate = 0.05
window = 16
batch_size = 3
intervention = "none"

[lora]
targets = ["q_proj"]
rank = 2
neurons_from = "p90"
intervention = "mean"
"#,
        texts = crate::cli_study::text_sections(root),
    )
}

#[test]
fn a_study_of_the_grid_feeds_the_fine_tuning_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The study runs first, once (the first seed); its sets and statistics serve the cells.
    let study = p90_study(root);
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"p90\"]\ntask = [\"topics\"]\n\
                neurons = [\"target\"]\nseed = [3, 4]\n";
    let exp = experiment(root, &study, grid);
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let runs = runs(&root.join("runs/adapt"));
    // 1 study (seed 3) + target × {bb, cc} × 2 seeds.
    assert_eq!(runs.len(), 5);
    let (_, study_dir, study_result) = runs
        .iter()
        .find(|(p, _, _)| p.contains_key("study"))
        .unwrap();
    assert_eq!(study_result["params"]["seed"], "3");
    let sets = ablation::LanguageSets::from_json(
        &std::fs::read_to_string(study_dir.join("neurons.json")).unwrap(),
    )
    .unwrap();
    for (params, dir, result) in runs.iter().filter(|(p, _, _)| p.contains_key("task")) {
        assert_eq!(result["status"], "finished", "{params:?}: {result}");
        let lang = params["eval"].as_str();
        let trained = ablation::NeuronSet::from_json(
            &std::fs::read_to_string(dir.join("trained_neurons.json")).unwrap(),
        )
        .unwrap();
        let pairs = |s: &ablation::NeuronSet| -> Vec<(usize, usize)> {
            s.rows().iter().map(|r| (r.layer, r.neuron)).collect()
        };
        // round(0.05 · 2 · 48) = 5 neurons per language.
        assert_eq!(pairs(&trained).len(), 5);
        assert_eq!(pairs(&trained), pairs(&sets.sets[lang]), "{lang}");
        let m = &result["metrics"];
        assert!(m[&format!("accuracy_intervened/{lang}")].is_number(), "{m}");
        assert!(m[&format!("accuracy/{lang}")].is_number(), "{m}");
    }

    // A fine-tuning cell run on its own (`--cell`, as an array task) while another process
    // holds the study says what it waits for, and goes on once the study is released.
    let (_, dir, result) = runs
        .iter()
        .find(|(p, _, _)| p.contains_key("task"))
        .unwrap();
    let cell = result["cell"].to_string();
    std::fs::remove_file(dir.join("result.json")).unwrap();
    let held = std::fs::File::create(study_dir.join(".lock")).unwrap();
    held.lock().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp.to_str().unwrap(), "--output", "runs"])
        .args(["--cell", &cell])
        .current_dir(root)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(dir.join("log.txt"))
        .unwrap_or_default()
        .contains("waiting for study `p90`")
    {
        assert!(started.elapsed().as_secs() < 60, "no waiting message");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(held);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("result.json").exists());
}

/// A SQuAD-format file of `n` questions: a context of words from `w10..w13` with the answer
/// word `w7` at its end, and a question `w3 w4`.
pub(crate) fn squad_file(path: &Path, n: usize, seed: usize) {
    let paragraphs: Vec<Value> = documents(n, 3, 10, 13, seed)
        .into_iter()
        .enumerate()
        .map(|(i, words)| {
            let context = format!("{words} w7");
            let start = words.len() + 1;
            serde_json::json!({"context": context, "qas": [{
                "id": format!("{seed}-{i}"),
                "question": "w3 w4",
                "answers": [{"answer_start": start, "text": "w7"}]
            }]})
        })
        .collect();
    let data =
        serde_json::json!({"version": "1.0", "data": [{"title": "t", "paragraphs": paragraphs}]});
    std::fs::write(path, data.to_string()).unwrap();
}

/// Scale the tiny model's LM head by 100: its random head (std 0.02, after a 0.25 RMSNorm)
/// gives logits too flat for any next token to reach a high probability, and the frozen head
/// of a LoRA run cannot sharpen them.
fn sharpen_head(model_dir: &Path) {
    let path = model_dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in file.tensors() {
        let mut data = view.data().to_vec();
        if name == "lm_head.weight" {
            for c in data.chunks_exact_mut(4) {
                let v = 100.0 * f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        tensors.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap();
            (n.clone(), view)
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn generative_qa_cells_decode_and_score_each_language() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    squad_file(&root.join("qa.aa.json"), 20, 1);
    squad_file(&root.join("qa.bb.json"), 10, 2);
    squad_file(&root.join("qa.cc.json"), 5, 3);
    let tasks = r#"
[tasks.qa]
format = "xquad"
train = { aa = "qa.aa.json" }
eval = { bb = "qa.bb.json", cc = "qa.cc.json" }
split = 0.8
max_new_tokens = 3
settings = { max_seq_len = 64, batch_size = 4, epochs = 150, learning_rate = 0.05 }
lora = { targets = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"], rank = 8 }
"#;
    let grid = format!(
        "{tasks}\n[grid]\nmodel = [\"tiny\"]\ntask = [\"qa\"]\nneurons = [\"none\", \"aa\"]\nseed = [1]\n"
    );
    let lora = LORA.replace("rank = 2", "rank = 2\ninit = \"kaiming\"");
    let exp = experiment(root, &lora, &grid);
    sharpen_head(&root.join("tiny-llama"));
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let runs = runs(&root.join("runs/adapt"));
    assert_eq!(runs.len(), 2);
    let scores = ["token_f1", "token_em", "squad_f1", "squad_em"];
    for (params, dir, result) in &runs {
        assert_eq!(result["status"], "finished", "{params:?}: {result}");
        assert_eq!(result["main_metric"], "token_f1");
        let metrics = &result["metrics"];
        let table = csv_rows(&dir.join("per_language.csv"));
        let mut header = vec!["language".to_string(), "questions".to_string()];
        header.extend(scores.iter().map(|s| s.to_string()));
        header.extend(scores.iter().map(|s| format!("{s}_intervened")));
        assert_eq!(table[0], header);
        // split = 0.8: the last 20 % of each evaluation file (bb: 2 of 10, cc: 1 of 5).
        assert_eq!(table[1][..2], ["bb", "2"]);
        assert_eq!(table[2][..2], ["cc", "1"]);
        let official: serde_json::Map<String, Value> = serde_json::from_str(
            &std::fs::read_to_string(dir.join("predictions.bb.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(official.keys().cloned().collect::<Vec<_>>(), ["2-8", "2-9"]);
        let predictions = csv_rows(&dir.join("predictions.csv"));
        assert_eq!(predictions.len(), 1 + 2 * 3);
        for (row, lang) in table[1..].iter().zip(["bb", "cc"]) {
            for (k, s) in scores.iter().enumerate() {
                let v: f64 = row[2 + k].parse().unwrap();
                assert!((metrics[&format!("{s}/{lang}")].as_f64().unwrap() - v).abs() < 1e-6);
                let mine: Vec<f64> = predictions[1..]
                    .iter()
                    .filter(|p| p[0] == lang && p[2] == "false")
                    .map(|p| p[6 + k].parse().unwrap())
                    .collect();
                let mean = mine.iter().sum::<f64>() / mine.len() as f64;
                assert!((mean - v).abs() < 1e-6, "{lang} {s}: {mine:?} vs {v}");
            }
        }
        // Every answer is `w7`: training teaches it as the first token (whether EOS follows
        // varies). The scores are recomputed here from the generated ids against the ids of
        // ` w7</s>` = [7, 2], and from the text against `w7`.
        let f1 = |common: f64, pred: f64, gold: f64| {
            if common == 0.0 {
                0.0
            } else {
                2.0 * (common / pred) * (common / gold) / (common / pred + common / gold)
            }
        };
        for p in predictions[1..].iter().filter(|p| p[2] == "false") {
            let ids: Vec<&str> = p[5].split(' ').collect();
            assert_eq!(ids[0], "7", "{params:?}: {p:?}");
            let common = ["7", "2"].iter().filter(|g| ids.contains(g)).count() as f64;
            let words: Vec<&str> = p[3].split_whitespace().collect();
            let want = [
                f1(common, ids.len() as f64, 2.0),
                f64::from(u8::from(ids == ["7", "2"])),
                f1(
                    words.iter().filter(|w| **w == "w7").count().min(1) as f64,
                    words.len() as f64,
                    1.0,
                ),
                f64::from(u8::from(p[3] == "w7")),
            ];
            for (k, w) in want.iter().enumerate() {
                let got: f64 = p[6 + k].parse().unwrap();
                assert!(
                    (got - w).abs() < 1e-9,
                    "{}: {got} vs {w} in {p:?}",
                    scores[k]
                );
            }
        }
        // The task's LoRA targets replace [lora]'s.
        let folder = dir.join("adapter");
        let config: Value = serde_json::from_str(
            &std::fs::read_to_string(folder.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(config["task_type"], "CAUSAL_LM");
        assert_eq!(config["modules_to_save"], Value::Null);
        let bytes = std::fs::read(folder.join("adapter_model.safetensors")).unwrap();
        let names: Vec<String> = safetensors::SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        assert!(
            names.iter().any(|k| k.contains("o_proj.lora_A")),
            "{names:?}"
        );
        assert_eq!(
            names.iter().any(|k| k.contains("gate_proj")),
            params["neurons"] == "aa"
        );
    }
    let out = neuronlab(&["report", "runs/adapt"], root);
    assert!(out.status.success(), "{}", text(&out));
    let md = std::fs::read_to_string(root.join("runs/adapt/report.md")).unwrap();
    assert!(md.contains("## Token-id F1"), "{md}");
    assert!(
        md.contains("| settings | bb token F1 (%) | cc token F1 (%) |"),
        "{md}"
    );
    assert!(!md.contains("## Accuracy"), "{md}");
    for svg in ["token_f1.svg", "token_f1_delta.svg", "squad_f1.svg"] {
        let s = std::fs::read_to_string(root.join("runs/adapt").join(svg)).unwrap();
        assert!(s.starts_with("<svg"), "{svg}");
    }
}

#[test]
fn bad_qa_task_settings_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let qa = "[tasks.qa]\nformat = \"xquad\"\ntrain = { aa = \"qa.aa.json\" }\n\
              eval = { bb = \"qa.bb.json\" }\n";
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"qa\"]\n";
    let cases = [
        (
            "split = 1.0\n",
            "tasks.qa.split: expected a fraction strictly between 0 and 1",
        ),
        (
            "max_new_tokens = 0\n",
            "tasks.qa.max_new_tokens: generate at least 1 token",
        ),
        (
            "classes = [\"a\", \"b\"]\n",
            "tasks.qa.classes: `classes` does not apply to format = \"xquad\"",
        ),
        (
            "lora = { targets = [\"q_proj\", \"qkv\"] }\n",
            "tasks.qa.lora.targets.1: \"qkv\" names no linear of a Llama layer",
        ),
        ("settings = { epochs = 0.0 }\n", "cell tiny × qa"),
    ];
    for (extra, want) in cases {
        let exp = experiment(root, LORA, &format!("{qa}{extra}{grid}"));
        let out = dry_run(&exp, root);
        assert_eq!(out.status.code(), Some(2), "{extra}: {}", text(&out));
        assert!(
            text(&out).contains(want),
            "{extra}: want {want:?} in {}",
            text(&out)
        );
    }
    // max_new_tokens on a classification task.
    let exp = experiment(
        root,
        LORA,
        "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\n",
    );
    let toml = std::fs::read_to_string(&exp).unwrap().replace(
        "format = \"jsonl\"",
        "format = \"jsonl\"\nmax_new_tokens = 5",
    );
    std::fs::write(&exp, toml).unwrap();
    let out = dry_run(&exp, root);
    assert!(
        text(&out).contains(
            "tasks.topics.max_new_tokens: `max_new_tokens` applies to format = \"xquad\" only"
        ),
        "{}",
        text(&out)
    );
}
