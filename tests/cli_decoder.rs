//! `neuronlab perplexity` and `neuronlab generate` on the real SmolLM2-135M-Instruct, against
//! the numbers transformers gives (the model itself is checked in `crates/models/tests`).

use serde_json::Value;

use crate::util::{artefact, fixture, read_json};

fn reference() -> Value {
    read_json(&fixture("decoders/smollm2_reference.json"))
}

fn neuronlab(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn perplexity_and_generate_commands_on_smollm2() {
    let r = reference();
    let model = artefact("smollm2-135m-instruct");
    let model = model.to_str().unwrap();
    let text = fixture("decoders/english_paragraph.txt");
    let out = neuronlab(&[
        "perplexity",
        "--model",
        model,
        "--text-file",
        text.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["n_tokens"], r["n_tokens"]);
    let (got, want) = (
        json["perplexity"].as_f64().unwrap(),
        r["perplexity"].as_f64().unwrap(),
    );
    assert!((got - want).abs() / want < 1e-3, "{got} vs {want}");
    let mean_nll = json["mean_nll"].as_f64().unwrap();
    assert!((mean_nll.exp() - got).abs() < 1e-9 * got);

    let out = neuronlab(&[
        "generate",
        "--model",
        model,
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--max-new-tokens",
        "20",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "The capital of France is Paris."
    );

    // Bad input: a text of one token, a missing file, a window longer than the context.
    let tmp = tempfile::tempdir().unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "H").unwrap();
    let out = neuronlab(&[
        "perplexity",
        "--model",
        model,
        "--text-file",
        short.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("short.txt") && err.contains("1 token(s)") && err.contains("at least 2"),
        "{err}"
    );
    let missing = tmp.path().join("missing.txt");
    let out = neuronlab(&[
        "perplexity",
        "--model",
        model,
        "--text-file",
        missing.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.txt"), "{err}");
    let out = neuronlab(&[
        "perplexity",
        "--model",
        model,
        "--text-file",
        text.to_str().unwrap(),
        "--window",
        "100000",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--window 100000") && err.contains("8192"),
        "{err}"
    );
}
