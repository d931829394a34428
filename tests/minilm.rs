//! The real all-MiniLM-L6-v2 checkpoint against `transformers` (make_minilm_reference.py).

use std::process::Command;

use models::TextTokenizer;

use crate::util::*;

#[test]
fn embeddings_match_transformers() {
    let (embeddings, batch, report, reference) = minilm_reference_run::<B>(&Default::default());
    assert_eq!(report.dropped, ["embeddings.position_ids"]);
    let want_ids: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    assert_eq!(
        batch.ids, want_ids,
        "token ids differ from the HF tokenizer"
    );
    assert_close(
        "MiniLM embeddings",
        embeddings,
        &reference["embeddings"],
        1e-4,
    );
}

#[test]
fn vocab_txt_tokenizer_matches_tokenizer_json() {
    let dir = artefact("all-MiniLM-L6-v2");
    let only_vocab = tempfile::tempdir().unwrap();
    for name in ["config.json", "vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(dir.join(name), only_vocab.path().join(name)).unwrap();
    }
    let config = models::EncoderConfig::from_file(&dir).unwrap();
    let from_json = TextTokenizer::from_dir(&dir, &config).unwrap();
    let from_vocab = TextTokenizer::from_dir(only_vocab.path(), &config).unwrap();
    let texts = [
        "Héllo, WORLD! naïve café [SEP] 12,345 tokens…",
        "unbelievably tokenizable",
    ];
    assert_eq!(
        from_json.encode_texts(&texts).unwrap(),
        from_vocab.encode_texts(&texts).unwrap()
    );
    let pairs = [("who wrote it?", "It was written by someone.")];
    assert_eq!(
        from_json.encode_pairs(&pairs).unwrap(),
        from_vocab.encode_pairs(&pairs).unwrap()
    );
}

#[test]
fn cli_embed_prints_the_reference_embedding() {
    let reference = read_json(&fixture("minilm_embeddings.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["embed", "--model"])
        .arg(artefact("all-MiniLM-L6-v2"))
        .arg(reference["sentences"][2].as_str().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (got, shape) = flat(&printed);
    let (want, _) = flat(&reference["embeddings"][2]);
    assert_eq!(shape, [1, 384]);
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "max difference {diff}");

    let normalized = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["embed", "--normalize", "--model"])
        .arg(artefact("all-MiniLM-L6-v2"))
        .arg("hello")
        .output()
        .unwrap();
    let (v, _) = flat(&serde_json::from_slice(&normalized.stdout).unwrap());
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
}

#[test]
fn cli_errors_are_clear_and_exit_2() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_neuronlab"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["embed", "--model", "/nonexistent", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("error: --model: /nonexistent does not exist")
    );
    let out = run(&[
        "embed",
        "--device",
        "cuda:0",
        "--model",
        "/nonexistent",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CUDA"), "{stderr}");
    let out = run(&["embed", "--device", "tpu", "--model", "x", "y"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown device \"tpu\""));
}

#[test]
fn cli_inspect_lists_tensors() {
    let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .arg("inspect")
        .arg(artefact("all-MiniLM-L6-v2"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("architecture: Bert (6 layers, hidden 384"),
        "{text}"
    );
    assert!(text.contains("parameters: 22713216"), "{text}");
    assert!(
        text.contains("encoder.layer.5.output.dense.weight"),
        "{text}"
    );
    assert!(text.contains("embeddings.position_ids"), "{text}");
}
