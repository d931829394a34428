//! Bad input through the binary, each caught before the first cell and said once: a grid name
//! that is not one folder name, `max_seq_len` past the model's positions (capped, said, and
//! recorded), a decoder declared where an encoder is needed, a dataset file that is a folder,
//! `labels = []`, missing and GGUF paths given to `embed`, `inspect` and a grid; and `inspect`
//! of a GGUF file.

use std::path::Path;

use crate::cli_grid::experiment;
use crate::util::{artefact, dry_run, neuronlab, text};

const GRID: &str = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"baseline\"]\n";

/// The tiny grid's experiment file with `from` replaced by `to`.
fn edited(root: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let exp = experiment(root, GRID);
    let text = std::fs::read_to_string(&exp).unwrap();
    assert!(text.contains(from), "{from:?} not in\n{text}");
    std::fs::write(&exp, text.replacen(from, to, 1)).unwrap();
    exp
}

/// No cause is said twice (a chain that repeats its source reads "X: X").
fn said_once(msg: &str) {
    for part in msg.split(": ") {
        if part.len() > 12 {
            assert!(
                !msg.contains(&format!("{part}: {part}")),
                "`{part}` repeats in: {msg}"
            );
        }
    }
    assert_eq!(
        msg.matches("(os error").count().min(1),
        msg.matches("(os error").count()
    );
}

/// `out` failed before any cell ran (exit status 2), with every `needles` in its message.
fn refused(out: &std::process::Output, needles: &[&str]) -> String {
    let msg = text(out);
    assert_eq!(out.status.code(), Some(2), "{msg}");
    for n in needles {
        assert!(msg.contains(n), "no `{n}` in: {msg}");
    }
    said_once(&msg);
    msg
}

#[test]
fn a_grid_name_is_one_folder_name() {
    for (name, why) in [
        ("../..", "starts with `.`"),
        ("", "is empty"),
        ("a/b", "has a character other than"),
        (".tokens", "starts with `.`"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let exp = edited(tmp.path(), "name = \"tiny\"", &format!("name = {name:?}"));
        let out = neuronlab(
            &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
            tmp.path(),
        );
        refused(&out, &["tiny.toml, line 1: name", why]);
        // Nothing was written anywhere, inside the output root or outside it.
        assert!(!tmp.path().join("runs").exists(), "{name:?}");
    }
}

#[test]
fn max_seq_len_past_the_positions_is_capped_said_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The tiny BERT has 64 positions.
    let exp = edited(root, "max_seq_len = 8", "max_seq_len = 100");
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("max_seq_len = 100 is capped at 64, and its runs record 64"),
        "{log}"
    );
    assert_eq!(log.matches("is capped at").count(), 1, "said once: {log}");
    let run = std::fs::read_dir(root.join("runs/tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("config.toml").exists())
        .unwrap();
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("max_seq_len = 64"), "{config}");
}

#[test]
fn a_decoder_declared_for_an_encoder_grid_is_refused_at_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = edited(tmp.path(), "kind = \"encoder\"", "kind = \"decoder\"");
    let out = dry_run(&exp, tmp.path());
    refused(
        &out,
        &[
            "models.tiny.kind",
            "kind = \"decoder\"",
            "fine-tunes encoders",
        ],
    );

    // An encoder grid pointed at a GGUF decoder's folder, or at nothing.
    let tmp = tempfile::tempdir().unwrap();
    let gguf = artefact("smollm2-135m-instruct");
    let exp = experiment(tmp.path(), GRID);
    let text = std::fs::read_to_string(&exp).unwrap();
    let model = tmp.path().join("tiny-bert");
    let swap = |to: &Path| {
        std::fs::write(
            &exp,
            text.replace(&model.display().to_string(), &to.display().to_string()),
        )
        .unwrap();
        dry_run(&exp, tmp.path())
    };
    refused(
        &swap(&gguf),
        &["holds a GGUF decoder", "not an encoder checkpoint"],
    );
    refused(
        &swap(Path::new("/no/such/model")),
        &["/no/such/model does not exist; expected an encoder checkpoint folder"],
    );
}

#[test]
fn dataset_files_and_labels_are_named_at_their_key() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = edited(
        tmp.path(),
        "train_file = \"train.jsonl\"",
        "train_file = \".\"",
    );
    refused(
        &dry_run(&exp, tmp.path()),
        &["is a folder; expected a file"],
    );

    for (labels, needle) in [
        ("[]", "labels = [] names 0 class(es)"),
        ("[\"a\"]", "needs at least 2"),
        ("[\"a\", \"b\", \"a\"]", "names class \"a\" twice"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let exp = edited(
            tmp.path(),
            "labels = [\"positive\", \"negative\", \"neutral\"]",
            &format!("labels = {labels}"),
        );
        let msg = refused(&dry_run(&exp, tmp.path()), &[needle]);
        assert!(msg.contains("datasets.words.labels"), "{msg}");
        assert!(
            !msg.contains("line 1:"),
            "blames the key, not a data line: {msg}"
        );
    }
}

#[test]
fn missing_and_gguf_paths_are_said_once_by_embed_and_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let gguf = artefact("smollm2-135m-instruct");
    let out = neuronlab(&["embed", "--model", "/no/such/model", "hello"], root);
    refused(
        &out,
        &["/no/such/model does not exist; expected an encoder checkpoint folder"],
    );
    let out = neuronlab(&["embed", "--model", gguf.to_str().unwrap(), "hello"], root);
    refused(
        &out,
        &["holds a GGUF decoder (SmolLM2-135M-Instruct.Q4_1.gguf)"],
    );
    let out = neuronlab(&["inspect", "/no/such/model"], root);
    refused(
        &out,
        &["/no/such/model does not exist; expected a checkpoint folder"],
    );
}

#[test]
fn inspect_reads_a_gguf_file_metadata_architecture_and_quantised_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = artefact("smollm2-135m-instruct");
    for path in [dir.clone(), dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")] {
        let out = neuronlab(&["inspect", path.to_str().unwrap()], tmp.path());
        let report = text(&out);
        assert!(out.status.success(), "{report}");
        // SmolLM2-135M: 30 layers of width 576, 9 query and 3 key/value heads, FFN 1536.
        assert!(report.contains("(GGUF version 3)"), "{report}");
        assert!(
            report.contains(
                "architecture: llama (30 layers, hidden 576, 9 heads (3 key/value), FFN 1536, \
                 context 8192, vocab 49152)"
            ),
            "{report}"
        );
        assert!(report.contains("general.architecture"), "{report}");
        assert!(report.contains("(49152 items)"), "{report}");
        assert!(report.contains("in 272 tensors"), "{report}");
        let q = report
            .lines()
            .find(|l| l.trim_start().starts_with("blk.0.attn_q.weight"))
            .unwrap_or_else(|| panic!("{report}"));
        assert!(q.contains("Q4_1") && q.contains("[576, 576]"), "{q}");
        let k = report
            .lines()
            .find(|l| l.trim_start().starts_with("blk.0.attn_k.weight"))
            .unwrap();
        assert!(k.contains("[192, 576]"), "{k}");
    }
}

#[test]
fn a_corrupt_checkpoint_or_a_head_that_does_not_fit_stops_the_grid_before_any_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    // A truncated download: half of the weights file.
    let weights = root.join("tiny-bert/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    refused(
        &out,
        &[
            "before any cell ran",
            "model.safetensors",
            "truncated or corrupt",
        ],
    );
    assert!(!root.join("runs/tiny").exists(), "nothing started");

    // The tiny BERT's saved head has 3 outputs; a dataset of 4 classes cannot load it.
    std::fs::write(&weights, &bytes).unwrap();
    let text = std::fs::read_to_string(&exp).unwrap();
    std::fs::write(
        &exp,
        text.replace(
            "labels = [\"positive\", \"negative\", \"neutral\"]",
            "labels = [\"positive\", \"negative\", \"neutral\", \"other\"]",
        ),
    )
    .unwrap();
    let out = dry_run(&exp, root);
    refused(
        &out,
        &[
            "saved classifier head `classifier.weight` has shape [3,",
            "the task has 4",
        ],
    );
}

#[test]
fn empty_texts_and_bytes_that_are_not_utf8_are_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let train = root.join("words/train.jsonl");
    let good = std::fs::read(&train).unwrap();
    let lines: Vec<&[u8]> = good.split(|&b| b == b'\n').collect();

    let mut empty = lines.clone();
    empty[2] = br#"{"text": "", "label": 0}"#;
    std::fs::write(&train, empty.join(&b'\n')).unwrap();
    refused(
        &dry_run(&exp, root),
        &["train.jsonl, line 3: field `text` is empty"],
    );

    let mut latin1 = lines[3].to_vec();
    latin1.splice(10..10, [0xe9]);
    let mut bad = lines.clone();
    bad[3] = &latin1;
    std::fs::write(&train, bad.join(&b'\n')).unwrap();
    refused(
        &dry_run(&exp, root),
        &["train.jsonl, line 4: byte 0xe9 (byte 11 of the line) is not UTF-8"],
    );
    std::fs::write(&train, &good).unwrap();

    // The experiment file itself.
    let mut toml = std::fs::read(&exp).unwrap();
    toml.extend_from_slice(b"# caf\xe9\n");
    std::fs::write(&exp, &toml).unwrap();
    let lines = toml.iter().filter(|&&b| b == b'\n').count();
    refused(
        &dry_run(&exp, root),
        &[&format!(
            "tiny.toml, line {lines}: byte 0xe9 (byte 6 of the line)"
        )],
    );
}

#[test]
fn a_study_text_that_is_not_utf8_is_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // (The experiment writes the texts and their sections.)
    let studies = "[studies.p90]\ntexts = [\"plain\", \"json\", \"columns\"]\n\
                   method = \"percentile\"\nrate = 0.05\nwindow = 16\nbatch_size = 3\n\
                   intervention = \"none\"\n";
    let exp = crate::cli_study::experiment(
        root,
        studies,
        "[grid]\nmodel = [\"tiny\"]\nstudy = [\"p90\"]\n",
    );
    let aa = root.join("aa.txt");
    let good = std::fs::read(&aa).unwrap();
    let mut lines: Vec<Vec<u8>> = good.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    lines[4].insert(3, 0xe9);
    std::fs::write(&aa, lines.join(&b'\n')).unwrap();
    let out = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let msg = text(&out);
    assert_ne!(out.status.code(), Some(0), "{msg}");
    assert!(msg.contains("aa.txt:5: byte 0xe9 is not UTF-8"), "{msg}");
}

#[test]
fn bench_global_tokens_are_refused_off_a_longformer_and_past_the_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = |name: &str| crate::util::fixture("encoders").join(name);
    let bert = model("bert");
    let out = neuronlab(
        &[
            "bench",
            "forward",
            "--model",
            bert.to_str().unwrap(),
            "--global",
            "4",
            "--iters",
            "1",
        ],
        root,
    );
    refused(&out, &["--global 4", "is not a Longformer"]);
    let longformer = model("longformer-qa");
    let args = |global: &str| {
        let l = longformer.to_str().unwrap().to_string();
        [
            "bench", "forward", "--model", &l, "--seq", "8", "--global", global, "--iters", "1",
        ]
        .map(String::from)
    };
    let run = |global: &str| {
        let a = args(global);
        neuronlab(&a.iter().map(String::as_str).collect::<Vec<_>>(), root)
    };
    refused(&run("9"), &["--global 9 exceeds --seq 8"]);
    let out = run("3");
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["global"], 3);
    assert!(report["peak_rss_mib"].as_f64().unwrap() >= report["loaded_rss_mib"].as_f64().unwrap());
}
