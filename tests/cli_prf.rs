//! Dense PRF cells through `neuronlab grid run` on the real MiniLM, over a small corpus in the
//! MS MARCO layouts (collection and queries as TSV, TREC qrels, first-pass runs as TREC runs and
//! as MS MARCO's `qid<TAB>pid<TAB>rank`) made from the English Wikipedia leads: titles as
//! queries, leads as their relevant passages, the first pass by `neuronlab corpus search`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use runner::retrieval::trec::{evaluate_run, read_qrels, read_run};
use serde_json::Value;

use crate::util::{artefact, csv_rows, neuronlab, read_json, text};

/// Articles in the corpus: the first `TRAIN` are training queries, the next `DEV` dev queries.
const TRAIN: usize = 12;
const DEV: usize = 6;
const PASSAGES: usize = 40;

fn ok(args: &[&str], root: &Path) -> String {
    let out = neuronlab(args, root);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    text(&out)
}

/// Write the corpus and its first-pass runs into `root`.
pub(crate) fn corpus(root: &Path) {
    let leads = std::fs::read_to_string(artefact("wiki-leads").join("en/test.jsonl")).unwrap();
    let articles: Vec<Value> = leads
        .lines()
        .take(PASSAGES)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (mut collection, mut train, mut dev) = (String::new(), String::new(), String::new());
    let (mut train_qrels, mut dev_qrels) = (String::new(), String::new());
    for (i, a) in articles.iter().enumerate() {
        writeln!(collection, "p{i}\t{}", a["text"].as_str().unwrap()).unwrap();
        let (queries, qrels) = match i {
            i if i < TRAIN => (&mut train, &mut train_qrels),
            i if i < TRAIN + DEV => (&mut dev, &mut dev_qrels),
            _ => continue,
        };
        writeln!(queries, "q{i}\t{}", a["title"].as_str().unwrap()).unwrap();
        writeln!(qrels, "q{i} 0 p{i} 1").unwrap();
    }
    for (name, body) in [
        ("collection.tsv", collection),
        ("queries.train.tsv", train),
        ("queries.dev.tsv", dev),
        ("qrels.train.txt", train_qrels),
        ("qrels.dev.txt", dev_qrels),
    ] {
        std::fs::write(root.join(name), body).unwrap();
    }
    let minilm = artefact("all-MiniLM-L6-v2").display().to_string();
    let common = ["--model", &minilm, "--normalize", "--max-len", "128"];
    let mut embed = vec!["corpus", "embed"];
    embed.extend(common);
    embed.extend(["--collection", "collection.tsv", "--output", "matrix"]);
    ok(&embed, root);
    for split in ["train", "dev"] {
        let queries = format!("queries.{split}.tsv");
        let output = format!("run.{split}.trec");
        let mut search = vec!["corpus", "search"];
        search.extend(common);
        search.extend([
            "--matrix",
            "matrix",
            "--queries",
            &queries,
            "--output",
            &output,
            "--k",
            "20",
        ]);
        ok(&search, root);
    }
    // The dev run again in MS MARCO's layout.
    let run = read_run(&root.join("run.dev.trec")).unwrap();
    let mut tsv = String::new();
    for (q, list) in &run {
        let mut list = list.clone();
        runner::retrieval::trec::trec_order(&mut list);
        for (k, (p, _)) in list.iter().enumerate() {
            writeln!(tsv, "{q}\t{p}\t{}", k + 1).unwrap();
        }
    }
    std::fs::write(root.join("run.dev.tsv"), tsv).unwrap();
}

/// The PRF experiment file over the corpus in `root`, with `extra` (a `[grid]`) appended.
pub(crate) fn experiment(root: &Path, extra: &str) -> std::path::PathBuf {
    // The model is linked into the experiment's folder and named by a relative path: a path as
    // written is part of the run id, and the artefact cache's absolute path differs between
    // machines (the PRF golden's run ids did, between here and CI).
    let minilm = root.join("minilm");
    if !minilm.exists() {
        std::os::unix::fs::symlink(artefact("all-MiniLM-L6-v2"), &minilm).unwrap();
    }
    let text = format!(
        r#"name = "prf"

[train]
max_steps = 2
eval_every = 1
batch_size = 4
max_seq_len = 128

[models.minilm]
path = "minilm"
kind = "encoder"

[corpora.wiki]
path = "."
collection = "collection.tsv"
matrix = "matrix"
train = {{ queries = "queries.train.tsv", qrels = "qrels.train.txt", run = "run.train.trec" }}
dev = {{ queries = "queries.dev.tsv", qrels = "qrels.dev.txt", run = "run.dev.tsv" }}
test.again = {{ queries = "queries.dev.tsv", qrels = "qrels.dev.txt", run = "run.dev.trec" }}

[prf.first-pass]
pooling = "mean"
projection = false
norm_power = 2.0
max_n_prf = 3
max_p_len = 24

[prf.lol]
pooling = "mean"
projection = false
norm_power = 2.0
max_n_prf = 3
max_p_len = 24
n_compare = 1
lambda_cr = 1.0
{extra}"#
    );
    let path = root.join("prf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn column(rows: &[Vec<String>], name: &str) -> usize {
    rows[0]
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", rows[0]))
}

#[test]
fn prf_cells_train_search_the_corpus_and_score_their_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    corpus(root);
    let exp = experiment(
        root,
        "\n[grid]\nmodel = [\"minilm\"]\ncorpus = [\"wiki\"]\nprf = [\"first-pass\", \"lol\", \"plain\"]\n",
    );
    let log = ok(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let rows = csv_rows(&root.join("runs/prf/results.csv"));
    assert_eq!(rows.len(), 4, "{rows:?}");
    let status = column(&rows, "status");
    assert!(
        rows[1..].iter().all(|r| r[status] == "finished"),
        "{rows:?}"
    );
    assert!(log.contains("4 training queries × 1 revisions"), "{log}");
    assert!(
        log.contains("2 training queries × 2 revisions"),
        "lol's batch of 4 revisions is 2 queries: {log}"
    );
    assert!(
        log.contains("initialised: dense_proj, layer_norm"),
        "plain: {log}"
    );

    let qrels = read_qrels(&root.join("qrels.dev.txt"), None).unwrap();
    let first_pass = evaluate_run(&read_run(&root.join("run.dev.trec")).unwrap(), &qrels, 1).1;
    let mut mrr = BTreeMap::new();
    for row in &rows[1..] {
        let run_dir = root.join("runs/prf").join(&row[0]);
        let result = read_json(&run_dir.join("result.json"));
        let m = &result["metrics"];
        let name = row[column(&rows, "param_prf")].clone();
        // The reported scores are the written runs' scores.
        for set in ["dev", "again"] {
            let run = read_run(&run_dir.join(format!("run.{set}.trec"))).unwrap();
            assert_eq!(run.len(), DEV, "{name} {set}: one ranking per query");
            assert!(
                run.values().all(|l| l.len() == PASSAGES),
                "every passage ranked"
            );
            let (_, means) = evaluate_run(&run, &qrels, 1);
            let prefix = if set == "dev" { "" } else { "again/" };
            for (key, value) in [
                ("mrr@10", means.mrr_at_10),
                ("ndcg@10", means.ndcg_at_10),
                ("recall@100", means.recall_at_100),
            ] {
                let got = m[format!("{prefix}{key}")].as_f64().unwrap();
                assert!(
                    (got - value).abs() < 1e-9,
                    "{name} {set} {key}: {got} vs {value}"
                );
            }
            // The first pass, read in either layout, scores as corpus search's run does.
            let fp = m[format!("{prefix}first-pass mrr@10")].as_f64().unwrap();
            assert!((fp - first_pass.mrr_at_10).abs() < 1e-12, "{name}: {fp}");
        }
        assert_eq!(result["main_metric"], "mrr@10");
        let evals = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
        assert_eq!(evals.lines().count(), 2, "eval_every = 1 over 2 steps");
        mrr.insert(name, m["mrr@10"].as_f64().unwrap());
    }
    // Titles find their own leads: the first pass is strong, and MiniLM reformulating from its
    // own query encoder stays close to it, while a fresh head (plain) starts from scratch.
    assert!(first_pass.mrr_at_10 > 0.8, "{first_pass:?}");
    assert!(mrr["first-pass"] > 0.5, "{mrr:?}");

    // The report pairs each objective with the plain one, seed by seed.
    let md = ok(&["report", "runs/prf"], root);
    assert!(
        md.contains("### Against the baseline arm (paired by seed)"),
        "{md}"
    );
    let row = md
        .lines()
        .find(|l| l.contains("lol vs plain"))
        .unwrap_or_else(|| panic!("no lol vs plain row: {md}"));
    let delta = format!("{:+.4}", mrr["lol"] - mrr["plain"]);
    assert!(row.contains(&delta), "{row} (Δ {delta})");
    assert!(md.contains("first-pass vs plain"), "{md}");
}

#[test]
fn prf_input_errors_are_named_before_any_cell_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    corpus(root);
    let grid = "\n[grid]\nmodel = [\"minilm\"]\ncorpus = [\"wiki\"]\nprf = [\"lol\"]\n";
    let exp = experiment(root, grid);
    let dry = |root: &Path| {
        let out = crate::util::dry_run(&exp, root);
        (out.status.success(), text(&out))
    };
    assert!(dry(root).0, "{}", dry(root).1);

    // A positive that the matrix lacks.
    std::fs::write(root.join("qrels.train.txt"), "q0 0 p0 1\nq1 0 nowhere 1\n").unwrap();
    let (ok_, out) = dry(root);
    assert!(
        !ok_ && out.contains("passage nowhere, relevant to training query q1"),
        "{out}"
    );
    assert!(out.contains("qrels.train.txt"), "{out}");
    std::fs::write(root.join("qrels.train.txt"), "q0 0 p0 1\n").unwrap();

    // A malformed first-pass line, named by file and line.
    let run = std::fs::read_to_string(root.join("run.dev.tsv")).unwrap();
    std::fs::write(
        root.join("run.dev.tsv"),
        run.replacen("\t1\n", "\tfirst\n", 1),
    )
    .unwrap();
    let (ok_, out) = dry(root);
    assert!(
        !ok_ && out.contains("run.dev.tsv, line 1: rank \"first\""),
        "{out}"
    );
    std::fs::write(root.join("run.dev.tsv"), run).unwrap();

    // n_compare past what a training query's run gives.
    let train_run = std::fs::read_to_string(root.join("run.train.trec")).unwrap();
    let first_only: String = std::fs::read_to_string(root.join("run.train.trec"))
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(3) == Some("1"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(root.join("run.train.trec"), first_only).unwrap();
    let exp2 = experiment(
        root,
        &grid
            .replace("\"lol\"", "\"two\"")
            .replace("[grid]", "[prf.two]\nn_compare = 2\n\n[grid]"),
    );
    let out = crate::util::dry_run(&exp2, root);
    let out = text(&out);
    assert!(out.contains("n_compare = 2 needs"), "{out}");

    // An unknown key of a PRF section, named with its line.
    let exp3 = experiment(root, &format!("[prf.bad]\nn_comapre = 1\n{grid}"));
    let out = text(&crate::util::dry_run(&exp3, root));
    assert!(out.contains("n_comapre"), "{out}");

    // A test set whose name would overwrite the dev set's run file or write outside the run
    // folder, and a relevance level no judgement reaches, are refused before any training.
    std::fs::write(root.join("run.train.trec"), &train_run).unwrap();
    let exp = experiment(root, grid);
    let written = std::fs::read_to_string(&exp).unwrap();
    for (from, to, want) in [
        (
            "test.again",
            "test.dev",
            "prf.toml, line 19: corpora.wiki.test.dev: a test set's name",
        ),
        (
            "test.again",
            "test.\"../x\"",
            "corpora.wiki.test.../x: a test set's name",
        ),
        (
            "path = \".\"\ncollection",
            "path = \"nowhere\"\ncollection",
            "corpus `wiki`: no matrix folder",
        ),
        (
            "qrels = \"qrels.dev.txt\", run = \"run.dev.trec\"",
            "qrels = \"qrels.dev.txt\", run = \"run.dev.trec\", relevance_level = 3",
            "qrels.dev.txt: relevance_level = 3 is above every grade (the highest is 1)",
        ),
    ] {
        assert!(written.contains(from), "{from}");
        std::fs::write(&exp, written.replace(from, to)).unwrap();
        let out = crate::util::dry_run(&exp, root);
        let said = text(&out);
        assert!(
            !out.status.success() && said.contains(want),
            "want {want:?} in {said}"
        );
    }
}

#[test]
fn prf_cells_train_with_the_settings_adam_beta1() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    corpus(root);
    let exp = experiment(
        root,
        "\n[grid]\nmodel = [\"minilm\"]\ncorpus = [\"wiki\"]\nprf = [\"lol\"]\n\
         train = { max_steps = [3], eval_every = [3], learning_rate = [0.0001], \
         adam_beta1 = [0.9, 0.5] }\n",
    );
    ok(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let rows = csv_rows(&root.join("runs/prf/results.csv"));
    let beta = column(&rows, "param_adam_beta1");
    let loss: BTreeMap<String, String> = rows[1..]
        .iter()
        .map(|r| {
            let evals =
                std::fs::read_to_string(root.join("runs/prf").join(&r[0]).join("metrics.jsonl"))
                    .unwrap();
            let v: Value = serde_json::from_str(evals.lines().next().unwrap()).unwrap();
            (r[beta].clone(), v["train_loss"].to_string())
        })
        .collect();
    assert_eq!(loss.len(), 2, "{rows:?}");
    assert_ne!(
        loss["0.9"], loss["0.5"],
        "β₁ changes the second and third steps: {loss:?}"
    );
}
