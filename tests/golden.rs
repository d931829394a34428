//! Golden runs: one fixture grid of every kind of cell (sentence classification, SQuAD,
//! HotpotQA with crops, re-ranking from candidates and from triples, the three neuron studies,
//! LoRA classification cells with interventions, a study that feeds its fine-tuning cells,
//! generative XQuAD cells, and dense PRF cells with and without the comparative objective), run
//! through `neuronlab grid run` with paths relative to the experiment file so that run ids do
//! not depend on where the test runs.
//!
//! Each grid's fingerprint (its plan, `results.csv` without the columns that name the time, the
//! commit or the device, and per run: the file list, `result.json` without those fields, every
//! line of `metrics.jsonl` without its seconds, and the text of each small output file) is
//! compared with `tests/fixtures/golden/<grid>.txt`, written by the code before the runner's
//! redesign: behaviour is pinned across refactors. Text is compared exactly and numbers to a
//! relative 1e-4: another CPU's summation order moves the last bits of f32 sums, and training
//! carries that to 1.6e-5 in a training loss (an AMD EPYC against the machine that wrote the
//! files). TREC run files are shown as rankings, without scores (see `shown`).
//!
//! `NEURONLAB_BLESS=1 cargo test golden` rewrites the golden files; do that only for a change
//! that is meant to change results, and say so in the commit.

use std::path::Path;

use serde_json::Value;

use crate::util::{csv_rows, neuronlab, text};

/// Columns and fields that differ between two runs of the same cell.
const VOLATILE: [&str; 5] = ["seconds", "started", "commit", "device", "versions"];

/// Output files shown in full (up to a few KB each); others are listed by name.
const SHOWN: [&str; 7] = [".csv", ".json", ".jsonl", ".trec", ".md", ".txt", ".tsv"];

/// Rewrite the experiment file so that every path under `root` is relative to it.
fn relative(exp: &Path, root: &Path) {
    let text = std::fs::read_to_string(exp).unwrap();
    let prefix = format!("{}/", root.display());
    std::fs::write(exp, text.replace(&prefix, "")).unwrap();
}

fn without_volatile(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        for key in VOLATILE {
            map.remove(key);
        }
    }
    v
}

/// What an output file contributes: a TREC run file each query's top 5 passages without their
/// scores, any other its first few KB.
///
/// The scores are left out because training moves them between machines by more than any
/// tolerance that still pins behaviour: AdamW's first steps move every weight by about the
/// learning rate whatever its gradient's size, so another CPU's last-bit differences flip the
/// signs of tiny gradients (re-ranking scores of the tiny cross-encoder moved by up to 0.018,
/// PRF's MiniLM passage scores by 1e-4, on an AMD EPYC against the machine that wrote the
/// files; the rankings and rank metrics did not move).
fn shown(name: &str, body: &str) -> String {
    if !name.ends_with(".trec") {
        return body.chars().take(4000).collect();
    }
    body.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let rank: usize = f.get(3)?.parse().ok()?;
            (rank <= 5).then(|| format!("{} {} {rank}", f[0], f[2]))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run `exp` (under `root`) to the end and describe everything it wrote.
fn fingerprint(root: &Path, exp: &Path, grid: &str) -> String {
    relative(exp, root);
    let exp = exp.to_str().unwrap();
    let plan = neuronlab(&["grid", "list", exp, "--output", "runs"], root);
    assert!(plan.status.success(), "{}", text(&plan));
    let out = neuronlab(&["grid", "run", exp, "--output", "runs"], root);
    assert!(out.status.success(), "{}", text(&out));
    let dir = root.join("runs").join(grid);
    let mut s = String::from("== plan\n");
    s += &String::from_utf8_lossy(&plan.stdout).replace(&root.display().to_string(), "ROOT");
    s += "== results.csv\n";
    let rows = csv_rows(&dir.join("results.csv"));
    let keep: Vec<usize> = (0..rows[0].len())
        .filter(|&i| !VOLATILE.contains(&rows[0][i].as_str()))
        .collect();
    for r in &rows {
        s += &keep
            .iter()
            .map(|&i| r[i].as_str())
            .collect::<Vec<_>>()
            .join(",");
        s += "\n";
    }
    let id = rows[0].iter().position(|c| c == "run_id").unwrap();
    for r in &rows[1..] {
        let run = dir.join(&r[id]);
        s += &format!("== run {}\n", r[id]);
        let mut files: Vec<String> = walk(&run);
        files.sort();
        s += &format!("files: {}\n", files.join(" "));
        let result: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap())
                .unwrap();
        s += &format!("result: {}\n", without_volatile(result));
        for line in std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
        {
            let v: Value = serde_json::from_str(line).unwrap();
            s += &format!("metrics: {}\n", without_volatile(v));
        }
        for f in &files {
            // The adapter config names the base model by this test's temporary folder.
            let skip = [
                "config.toml",
                "log.txt",
                "metrics.jsonl",
                "result.json",
                "adapter/adapter_config.json",
            ];
            if skip.contains(&f.as_str()) || !SHOWN.iter().any(|e| f.ends_with(e)) {
                continue;
            }
            let body = std::fs::read_to_string(run.join(f)).unwrap();
            s += &format!("-- {f}\n{}\n", shown(f, &body));
        }
    }
    s
}

/// Paths of the files under `dir`, relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        // The run folder's lock file is the harness's (tests/cli_faults.rs), not the cell's.
        if name == ".lock" {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out
}

/// Tokens of a fingerprint: runs of word and number characters, and each other visible character.
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        if c.is_alphanumeric() || "_.+-".contains(c) {
            cur.push(c);
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn same(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= 1e-4 * x.abs().max(y.abs()).max(1e-6),
        _ => false,
    }
}

/// Compare with the golden file (or write it under `NEURONLAB_BLESS=1`).
fn check(name: &str, got: &str) {
    let path = crate::util::fixture("golden").join(format!("{name}.txt"));
    if std::env::var_os("NEURONLAB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; NEURONLAB_BLESS=1 cargo test golden writes it",
            path.display()
        )
    });
    let (g, w) = (tokens(got), tokens(&want));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if !same(a, b) {
            let context = |t: &[String]| t[i.saturating_sub(12)..(i + 12).min(t.len())].join(" ");
            panic!(
                "{name}: differs from {} at token {i}: got `{a}`, golden `{b}`\n got: {}\n want: {}",
                path.display(),
                context(&g),
                context(&w)
            );
        }
    }
    assert_eq!(
        g.len(),
        w.len(),
        "{name}: {} tokens, the golden file has {}",
        g.len(),
        w.len()
    );
}

#[test]
fn golden_sentence_classification() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"baseline\", \"cmp2\"]\nseed = [1]\n";
    let exp = crate::cli_grid::experiment(tmp.path(), grid);
    check("classification", &fingerprint(tmp.path(), &exp, "tiny"));
}

#[test]
fn golden_extractive_qa_and_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = "[grid]\npairs = [\n  { model = \"tiny\", dataset = \"squad\", loss = [\"drop2\"] },\n  \
                { model = \"tiny\", dataset = \"hotpot\", loss = [\"crop-drop\"] },\n  \
                { model = \"tiny\", dataset = \"marco\", loss = [\"crop2\"] },\n  \
                { model = \"tiny\", dataset = \"triples\", loss = [\"baseline\"] },\n]\n";
    let exp = crate::cli_qa::experiment(tmp.path(), grid);
    check("qa_ranking", &fingerprint(tmp.path(), &exp, "qa"));
}

#[test]
fn golden_neuron_studies() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"lape\", \"percentile\", \"ap\"]\n";
    let exp = crate::cli_study::experiment(tmp.path(), crate::cli_study::STUDIES, grid);
    check("studies", &fingerprint(tmp.path(), &exp, "study"));
}

#[test]
fn golden_lora_classification() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\n\
                neurons = [\"none\", \"aa\", \"random:target\"]\nseed = [1]\n";
    let exp = crate::cli_adapt::experiment(tmp.path(), crate::cli_adapt::LORA, grid);
    check(
        "lora_classification",
        &fingerprint(tmp.path(), &exp, "adapt"),
    );
}

#[test]
fn golden_study_feeding_lora_cells() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let study = crate::cli_adapt::p90_study(root);
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"p90\"]\ntask = [\"topics\"]\n\
                neurons = [\"target\"]\nseed = [3]\n";
    let exp = crate::cli_adapt::experiment(root, &study, grid);
    check("study_lora", &fingerprint(root, &exp, "adapt"));
}

#[test]
fn golden_generative_qa() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    crate::cli_adapt::squad_file(&root.join("qa.aa.json"), 12, 1);
    crate::cli_adapt::squad_file(&root.join("qa.bb.json"), 10, 2);
    let tasks = r#"
[tasks.qa]
format = "xquad"
train = { aa = "qa.aa.json" }
eval = { bb = "qa.bb.json" }
split = 0.8
max_new_tokens = 3
settings = { max_seq_len = 64, batch_size = 4, epochs = 4, learning_rate = 0.05 }
lora = { targets = ["q_proj", "v_proj", "up_proj"], rank = 4 }
"#;
    let grid = format!(
        "{tasks}\n[grid]\nmodel = [\"tiny\"]\ntask = [\"qa\"]\nneurons = [\"none\", \"aa\"]\nseed = [1]\n"
    );
    let exp = crate::cli_adapt::experiment(root, crate::cli_adapt::LORA, &grid);
    check("generative_qa", &fingerprint(root, &exp, "adapt"));
}

#[test]
fn golden_prf() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    crate::cli_prf::corpus(root);
    let grid = "\n[grid]\nmodel = [\"minilm\"]\ncorpus = [\"wiki\"]\nprf = [\"plain\", \"lol\"]\n\
                train = { max_steps = [6], eval_every = [2], learning_rate = [0.0001] }\n";
    let exp = crate::cli_prf::experiment(root, grid);
    check("prf", &fingerprint(root, &exp, "prf"));
}
