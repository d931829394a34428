//! Bad input gets a clear error naming the file, key and shapes.

use models::{Checkpoint, EncoderConfig, HostTensor, SequenceClassifier, TensorMap, TextTokenizer};

use crate::util::*;

fn load_error(dir: &std::path::Path) -> String {
    let result = Checkpoint::open(dir)
        .and_then(|c| SequenceClassifier::<B>::load(c, 3, None, 0, &Default::default()));
    match result {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrite the fixture's weights through `edit`.
fn edited(edit: impl FnOnce(&mut TensorMap)) -> tempfile::TempDir {
    let tmp = copy_fixture("encoders/bert");
    let path = tmp.path().join("model.safetensors");
    let mut map = TensorMap::open(&path).unwrap();
    edit(&mut map);
    map.write_safetensors(&path).unwrap();
    tmp
}

#[test]
fn missing_checkpoint_directory() {
    let err = load_error(std::path::Path::new("/nonexistent/model"));
    assert!(err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn directory_without_weights() {
    let tmp = copy_fixture("encoders/bert");
    std::fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let err = load_error(tmp.path());
    assert!(
        err.contains("no checkpoint in") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let tmp = edited(|m| {
        m.discard_prefix("bert.encoder.layer.1.intermediate.dense.weight");
    });
    let err = load_error(tmp.path());
    assert!(
        err.contains("missing tensor \"bert.encoder.layer.1.intermediate.dense.weight\" (expected shape [37, 32])"),
        "{err}"
    );
}

#[test]
fn unexpected_tensor_is_named() {
    let tmp = edited(|m| {
        m.insert(
            "bert.encoder.layer.0.extra.weight",
            HostTensor::new(vec![2], vec![0.0, 1.0]),
        )
    });
    let err = load_error(tmp.path());
    assert!(
        err.contains("unexpected tensor") && err.contains("bert.encoder.layer.0.extra.weight [2]"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_names_both_shapes() {
    let tmp = edited(|m| {
        m.discard_prefix("bert.encoder.layer.0.attention.self.key.bias");
        m.insert(
            "bert.encoder.layer.0.attention.self.key.bias",
            HostTensor::new(vec![31], vec![0.0; 31]),
        );
    });
    let err = load_error(tmp.path());
    assert!(
        err.contains("\"bert.encoder.layer.0.attention.self.key.bias\" has shape [31], the model expects [32]"),
        "{err}"
    );
}

#[test]
fn head_of_another_size_is_an_error() {
    let result = Checkpoint::open(fixture("encoders/bert"))
        .and_then(|c| SequenceClassifier::<B>::load(c, 5, None, 0, &Default::default()));
    let err = result.unwrap_err().to_string();
    assert!(
        err.contains("\"classifier.weight\" has shape [3, 32], the model expects [5, 32]"),
        "{err}"
    );
}

#[test]
fn unknown_model_type_is_named() {
    let tmp = copy_fixture("encoders/bert");
    let path = tmp.path().join("config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"bert\"", "\"gpt-foo\"");
    std::fs::write(&path, text).unwrap();
    let err = EncoderConfig::from_file(tmp.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown model_type \"gpt-foo\"") && err.contains("config.json"),
        "{err}"
    );
}

#[test]
fn corrupt_safetensors_is_a_format_error() {
    let tmp = copy_fixture("encoders/bert");
    std::fs::write(tmp.path().join("model.safetensors"), b"not a checkpoint").unwrap();
    let err = load_error(tmp.path());
    assert!(
        err.contains("model.safetensors: not a valid safetensors file"),
        "{err}"
    );
}

#[test]
fn tokenizer_larger_than_the_vocabulary_is_an_error() {
    // The tiny BERT has 99 embedding rows; MiniLM's tokenizer has 30522 tokens.
    let tmp = copy_fixture("encoders/bert");
    std::fs::copy(
        artefact("all-MiniLM-L6-v2").join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let config = EncoderConfig::from_file(tmp.path()).unwrap();
    let err = TextTokenizer::from_dir(tmp.path(), &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has 30522 tokens but the model's vocab_size is 99"),
        "{err}"
    );
}

#[test]
fn empty_text_is_an_error_naming_its_position() {
    let dir = artefact("all-MiniLM-L6-v2");
    let config = EncoderConfig::from_file(&dir).unwrap();
    let tokenizer = TextTokenizer::from_dir(&dir, &config).unwrap();
    let err = tokenizer
        .encode_texts(&["fine", "  "])
        .unwrap_err()
        .to_string();
    assert_eq!(err, "input text #1: the text is empty");
}

#[test]
fn bad_longformer_windows_and_missing_global_projections_are_named() {
    let dir = fixture("encoders/longformer-qa");
    let config: serde_json::Value = read_json(&dir.join("config.json"));
    for (window, want) in [
        (
            serde_json::json!([4, 5]),
            "each window must be positive and even, found 5",
        ),
        (serde_json::json!([4]), "1 windows for 2 layers"),
        (
            serde_json::json!("wide"),
            "expected a positive even integer",
        ),
    ] {
        let mut c = config.clone();
        c["attention_window"] = window;
        let err = EncoderConfig::from_json(&c.to_string(), std::path::Path::new("lf/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("attention_window")
                && err.contains(want)
                && err.contains("lf/config.json"),
            "{err}"
        );
    }
    // A Longformer checkpoint without a layer's global projections is incomplete.
    let tmp = copy_fixture("encoders/longformer-qa");
    let path = tmp.path().join("model.safetensors");
    let mut map = TensorMap::open(&path).unwrap();
    let key = "longformer.encoder.layer.1.attention.self.key_global.weight";
    assert_eq!(map.discard_prefix(key).len(), 1);
    map.write_safetensors(&path).unwrap();
    let err = Checkpoint::open(tmp.path())
        .and_then(|c| models::SpanExtractor::<B>::load(c, 0, &Default::default()))
        .expect_err("loading must fail")
        .to_string();
    assert!(
        err.contains(&format!(
            "missing tensor \"{key}\" (expected shape [32, 32])"
        )),
        "{err}"
    );
}
