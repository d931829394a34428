//! Helpers shared by the tests of every crate (fixtures, artefacts, JSON arrays, tolerances):
//! the workspace's `tests/` use it through `util`, and `crates/models/tests` and
//! `crates/neurons/tests` include it by path.

// Each test target uses its own part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde_json::Value;

/// The backend the parity tests run on: ndarray, or LibTorch in a crate's `tch` test build
/// (`bash scripts/libtorch.sh cargo test -p models --features tch`), or burn-cuda in the models
/// crate's `cuda-parity` build (`scripts/gpu-check.sh`, on a machine with a GPU).
#[cfg(not(any(feature = "tch", feature = "cuda-parity")))]
pub type B = burn::backend::NdArray<f32>;
/// LibTorch, in a crate's `tch` test build.
#[cfg(feature = "tch")]
pub type B = burn::backend::LibTorch<f32>;
/// burn-cuda, in the models crate's `cuda-parity` test build.
#[cfg(all(feature = "cuda-parity", not(feature = "tch")))]
pub type B = burn::backend::Cuda;

/// The workspace root: where this file was compiled, unless `NEURONLAB_ROOT` names another
/// checkout (a test binary built here and run on another machine, as `scripts/gpu-check.sh`
/// does).
pub fn root() -> PathBuf {
    match std::env::var_os("NEURONLAB_ROOT") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A fetched artefact; a missing one fails the test with what to run (never a skip).
pub fn artefact(name: &str) -> PathBuf {
    let dir = std::env::var_os("NEURONLAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache/artefacts"))
        .join(name);
    assert!(
        dir.is_dir(),
        "artefact {name} is missing at {}: run `bash scripts/fetch-artefacts.sh` first \
         (the README's test command does)",
        dir.display()
    );
    dir
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Flatten a nested JSON array of numbers, returning the values and the shape.
pub fn flat(v: &Value) -> (Vec<f32>, Vec<usize>) {
    fn walk(v: &Value, depth: usize, out: &mut Vec<f32>, shape: &mut Vec<usize>) {
        match v {
            Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len());
                }
                for item in items {
                    walk(item, depth + 1, out, shape);
                }
            }
            Value::Number(n) => out.push(n.as_f64().unwrap() as f32),
            other => panic!("not a number: {other}"),
        }
    }
    let (mut out, mut shape) = (Vec::new(), Vec::new());
    walk(v, 0, &mut out, &mut shape);
    (out, shape)
}

pub fn int_tensor(v: &Value, device: &Device<B>) -> Tensor<B, 2, Int> {
    let (data, shape) = flat(v);
    let data: Vec<i64> = data.iter().map(|x| *x as i64).collect();
    Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device)
}

pub fn values<const D: usize>(t: Tensor<B, D>) -> (Vec<f32>, Vec<usize>) {
    let shape = t.dims().to_vec();
    (t.into_data().convert::<f32>().into_vec().unwrap(), shape)
}

/// Assert `actual` equals the JSON array `expected` within `tol`, naming the worst element.
pub fn assert_close<const D: usize>(what: &str, actual: Tensor<B, D>, expected: &Value, tol: f32) {
    let (want, want_shape) = flat(expected);
    let (got, got_shape) = values(actual);
    assert_eq!(got_shape, want_shape, "{what}: shape");
    let (worst, diff) = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |acc, (i, d)| if d > acc.1 { (i, d) } else { acc },
        );
    assert!(
        diff <= tol,
        "{what}: element {worst} differs by {diff:e} (got {}, expected {}), tolerance {tol:e}",
        got[worst],
        want[worst]
    );
}

/// Copy a fixture folder into a fresh temporary folder, to corrupt it there.
pub fn copy_fixture(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name())).unwrap();
    }
    tmp
}

/// The sentences of `minilm_embeddings.json`.
pub fn reference_sentences(reference: &Value) -> Vec<&str> {
    reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// MiniLM's mean-pooled embeddings of the reference sentences on backend `Bk`, with the token
/// batch and the load report, for comparison with `minilm_embeddings.json`.
pub fn minilm_reference_run<Bk: Backend>(
    device: &Device<Bk>,
) -> (
    Tensor<Bk, 2>,
    models::EncodedBatch,
    models::LoadReport,
    Value,
) {
    let dir = artefact("all-MiniLM-L6-v2");
    let reference = read_json(&fixture("minilm_embeddings.json"));
    let sentences = reference_sentences(&reference);
    let checkpoint = models::Checkpoint::open(&dir).unwrap();
    let tokenizer = models::TextTokenizer::from_dir(&dir, &checkpoint.config).unwrap();
    let (model, report) = models::load_bare_encoder::<Bk>(checkpoint, device).unwrap();
    let batch = tokenizer.encode_texts(&sentences).unwrap();
    let input = batch.to_input::<Bk>(device);
    let hidden = model.forward(&input, &mut models::ForwardContext::eval());
    (
        models::mean_pool(&hidden, &input.attention_mask),
        batch,
        report,
        reference,
    )
}
