//! The GGUF reader against a file written by the `gguf` package (llama.cpp's Python writer) and
//! its own dequantisation (`tests/fixtures/gguf/make_gguf_fixture.py`); corrupt, truncated and
//! unsupported input.

use models::gguf::{GgufFile, MetaValue};

use crate::util::{fixture, read_json};

#[test]
fn reads_metadata_and_dequantises_like_the_gguf_package() {
    let file = GgufFile::open(fixture("gguf/tiny.gguf")).unwrap();
    let expected = read_json(&fixture("gguf/expected.json"));
    assert_eq!(file.version, 3);
    let meta = &expected["metadata"];
    assert_eq!(file.meta("test.u32").unwrap().as_u64(), Some(7));
    assert_eq!(file.meta("test.i32"), Some(&MetaValue::Int(-3)));
    assert_eq!(file.meta("test.f32").unwrap().as_f64(), Some(0.5));
    assert_eq!(file.meta("test.bool"), Some(&MetaValue::Bool(true)));
    assert_eq!(
        file.meta("test.string").unwrap().as_str(),
        meta["test.string"].as_str()
    );
    assert_eq!(file.meta("test.u64").unwrap().as_u64(), Some(1 << 40));
    assert_eq!(file.meta("test.f64").unwrap().as_f64(), Some(0.25));
    let strings: Vec<&str> = file
        .meta("test.strings")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(strings, ["a", "bc", ""]);
    assert_eq!(
        file.meta("general.architecture").unwrap().as_str(),
        Some("llama")
    );
    assert_eq!(
        file.meta("llama.context_length").unwrap().as_u64(),
        Some(64)
    );

    for (name, want) in expected["tensors"].as_object().unwrap() {
        let t = file.tensor(name).unwrap();
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let values: Vec<f32> = want["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(t.data.len(), values.len(), "{name}");
        for (i, (a, b)) in t.data.iter().zip(&values).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name}[{i}]: {a} vs {b}"
            );
        }
        assert_eq!(
            file.info(name).unwrap().type_name(),
            want["type"].as_str().unwrap()
        );
    }
}

#[test]
fn unsupported_truncated_and_corrupt_files_are_named_errors() {
    let path = fixture("gguf/tiny.gguf");
    let file = GgufFile::open(&path).unwrap();
    let err = file.tensor("q6_k.weight").unwrap_err().to_string();
    assert!(
        err.contains("q6_k.weight") && err.contains("Q6_K") && err.contains("not supported"),
        "{err}"
    );
    let err = file.tensor("nope").unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");

    let bytes = std::fs::read(&path).unwrap();
    // Cut inside the tensor data: the tensor that no longer fits is named.
    let err = GgufFile::from_bytes(&path, bytes[..1400].to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") && err.contains("q4_1.weight"),
        "{err}"
    );
    // Cut inside the metadata.
    let err = GgufFile::from_bytes(&path, bytes[..60].to_vec())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated") || err.contains("exceeds the file"),
        "{err}"
    );
    // Not GGUF at all.
    let err = GgufFile::from_bytes(&path, b"PK\x03\x04 not a model".to_vec())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a GGUF file"), "{err}");
    // A corrupt length field (the tensor count) is caught before any allocation.
    let mut corrupt = bytes.clone();
    corrupt[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let err = GgufFile::from_bytes(&path, corrupt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("exceeds the file"), "{err}");
    // An unknown version.
    let mut v9 = bytes;
    v9[4..8].copy_from_slice(&9u32.to_le_bytes());
    let err = GgufFile::from_bytes(&path, v9).unwrap_err().to_string();
    assert!(err.contains("version 9"), "{err}");
}

#[test]
fn the_real_smollm2_file_reads_like_the_gguf_package() {
    let dir = crate::util::artefact("smollm2-135m-instruct");
    let file = GgufFile::open(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let reference = read_json(&fixture("gguf/smollm2_reference.json"));
    assert_eq!(
        file.tensors.len() as u64,
        reference["n_tensors"].as_u64().unwrap()
    );
    for (key, want) in reference["metadata"].as_object().unwrap() {
        let got = file.meta(key).unwrap_or_else(|| panic!("{key} missing"));
        match want.as_str() {
            Some(s) => assert_eq!(got.as_str(), Some(s), "{key}"),
            None => assert!(
                (got.as_f64().unwrap() - want.as_f64().unwrap()).abs() < 1e-9,
                "{key}"
            ),
        }
    }
    let count = |key: &str| file.meta(key).unwrap().as_array().unwrap().len() as u64;
    assert_eq!(
        count("tokenizer.ggml.tokens"),
        reference["n_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        count("tokenizer.ggml.merges"),
        reference["n_merges"].as_u64().unwrap()
    );
    for (name, want) in reference["tensors"].as_object().unwrap() {
        let t = file.tensor(name).unwrap();
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(
            file.info(name).unwrap().type_name(),
            want["type"].as_str().unwrap()
        );
        for (i, v) in want["first"].as_array().unwrap().iter().enumerate() {
            assert_eq!(t.data[i], v.as_f64().unwrap() as f32, "{name}[{i}]");
        }
        let sum: f64 = t.data.iter().map(|&x| f64::from(x)).sum();
        let sum_sq: f64 = t.data.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let (ws, wq) = (
            want["sum"].as_f64().unwrap(),
            want["sum_sq"].as_f64().unwrap(),
        );
        assert!(
            (sum - ws).abs() <= 1e-6 * wq.max(1.0),
            "{name}: sum {sum} vs {ws}"
        );
        assert!(
            (sum_sq - wq).abs() <= 1e-9 * wq,
            "{name}: sum of squares {sum_sq} vs {wq}"
        );
    }
}

#[test]
fn the_smollm2_tokenizer_rebuilt_from_gguf_matches_transformers() {
    let dir = crate::util::artefact("smollm2-135m-instruct");
    let file = GgufFile::open(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tokenizer = file.tokenizer().unwrap();
    assert_eq!(tokenizer.get_vocab_size(true), 49152);
    let cases = read_json(&fixture("gguf/smollm2_tokens.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(
            tokenizer.decode(&got, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}

#[test]
fn smollm2_tensors_in_hf_layout_match_transformers_gguf_loading() {
    let dir = crate::util::artefact("smollm2-135m-instruct");
    let file = GgufFile::open(dir.join("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let reference = read_json(&fixture("gguf/smollm2_hf_reference.json"));
    let tensors: std::collections::BTreeMap<String, models::HostTensor> =
        file.hf_tensors().unwrap().into_iter().collect();
    assert_eq!(
        tensors.len() as u64,
        reference["n_tensors"].as_u64().unwrap()
    );
    for (name, want) in reference["tensors"].as_object().unwrap() {
        let t = &tensors[name];
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        let cols = *shape.last().unwrap();
        if shape.len() == 2 {
            for (r, row) in want["rows"].as_array().unwrap().iter().enumerate() {
                for (c, v) in row.as_array().unwrap().iter().enumerate() {
                    assert_eq!(
                        t.data[r * cols + c],
                        v.as_f64().unwrap() as f32,
                        "{name}[{r}, {c}]"
                    );
                }
            }
            // Row sums pin the row order (the q/k un-permutation).
            for (r, s) in want["row_sums"].as_array().unwrap().iter().enumerate() {
                let got: f64 = t.data[r * cols..(r + 1) * cols]
                    .iter()
                    .map(|&x| f64::from(x))
                    .sum();
                assert!(
                    (got - s.as_f64().unwrap()).abs() < 1e-4,
                    "{name} row {r}: {got} vs {s}"
                );
            }
        }
        let sum_sq: f64 = t.data.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let w = want["sum_sq"].as_f64().unwrap();
        assert!((sum_sq - w).abs() <= 1e-9 * w, "{name}: {sum_sq} vs {w}");
    }
}
