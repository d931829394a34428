//! Dense PRF against the official code (tests/fixtures/prf/make_prf_fixtures.py): the
//! reformulator's query vectors, LoL's objective on them and its gradients through the head and
//! the encoder (a tiny random BERT), and the official input layout and its nested revisions on
//! the real MiniLM tokenizer.

use burn::backend::Autodiff;
use burn::prelude::*;
use losses::ReformulationLoss;
use models::{
    Checkpoint, EncodedBatch, FeedbackInput, FeedbackLimits, ForwardContext, QueryReformulator,
    ReformulatorConfig, TextTokenizer,
};
use serde_json::Value;

use crate::util::{B, artefact, assert_close, fixture, flat, read_json};

type A = Autodiff<B>;

/// The official head (first token, dense_proj + LayerNorm) with normalisation `p`.
fn official(p: Option<f64>) -> ReformulatorConfig {
    ReformulatorConfig {
        norm_power: p,
        ..ReformulatorConfig::default()
    }
}

fn rows_u32(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn batch(case: &Value) -> EncodedBatch {
    // The fixture's padding is explicit: keep each row's unpadded prefix.
    let mask = rows_u32(&case["attention_mask"]);
    let cut = |rows: Vec<Vec<u32>>| -> Vec<Vec<u32>> {
        rows.into_iter()
            .zip(&mask)
            .map(|(r, m)| r[..m.iter().filter(|&&x| x == 1).count()].to_vec())
            .collect()
    };
    EncodedBatch {
        ids: cut(rows_u32(&case["input_ids"])),
        type_ids: cut(rows_u32(&case["token_type_ids"])),
        pad_id: 0,
    }
}

#[test]
fn the_reformulator_and_lols_objective_match_the_official_code_with_gradients() {
    let case = read_json(&fixture("prf/reformulator.json"));
    let device = Default::default();
    let dir = fixture("prf/reformulator");
    let (model, report) =
        QueryReformulator::<A>::load(Checkpoint::open(&dir).unwrap(), official(None), 0, &device)
            .unwrap();
    assert!(
        report.initialised.is_empty(),
        "the head is read from the checkpoint: {:?}",
        report.initialised
    );
    let input = batch(&case).to_input::<A>(&device);
    let vectors = model.forward(&input, &mut ForwardContext::eval());
    assert_close(
        "query vectors",
        vectors.clone().inner(),
        &case["vectors"],
        1e-5,
    );

    let (p, shape) = flat(&case["passages"]);
    let passages = Tensor::<A, 2>::from_data(TensorData::new(p, [shape[0], shape[1]]), &device);
    let positives: Vec<Vec<usize>> = serde_json::from_value(case["positives"].clone()).unwrap();
    let objective = ReformulationLoss::new(case["n_compare"].as_u64().unwrap() as usize)
        .with_lambda_pr(case["lambda_pr"].as_f64().unwrap())
        .with_lambda_qr(case["lambda_qr"].as_f64().unwrap())
        .with_lambda_cr(case["lambda_cr"].as_f64().unwrap());
    let terms = objective.forward(vectors, passages, &positives, true);
    assert_close(
        "loss",
        terms.loss.clone().inner(),
        &Value::from(vec![case["loss"].clone()]),
        1e-5,
    );
    assert_close(
        "per revision",
        terms.per_revision.clone().inner(),
        &case["per_revision"],
        1e-5,
    );
    let cr = terms.comparative.clone().expect("a comparative term");
    assert_close(
        "comparative",
        cr.inner(),
        &Value::from(vec![case["comparative"].clone()]),
        1e-5,
    );
    assert!(
        case["comparative"].as_f64().unwrap() > 0.0,
        "the fixture penalises some revision, so the hinge's gradient is exercised"
    );

    let grads = terms.loss.backward();
    // Burn stores a linear's weight as [in, out]; PyTorch as [out, in].
    let dense = model
        .dense_proj
        .as_ref()
        .unwrap()
        .weight
        .grad(&grads)
        .unwrap()
        .transpose();
    assert_close(
        "d loss / d dense_proj.weight",
        dense,
        &case["grad_dense_proj_weight"],
        1e-5,
    );
    let norm = model
        .layer_norm
        .as_ref()
        .unwrap()
        .gamma
        .grad(&grads)
        .unwrap();
    assert_close(
        "d loss / d layer_norm.weight",
        norm,
        &case["grad_layer_norm_weight"],
        1e-5,
    );
    let query = model.encoder.encoder.layer[0]
        .attention
        .self_attn
        .query
        .weight
        .grad(&grads)
        .unwrap()
        .transpose();
    assert_close(
        "d loss / d layer 0 query weight",
        query,
        &case["grad_layer0_query_weight"],
        1e-5,
    );

    let (normalized, _) = QueryReformulator::<B>::load(
        Checkpoint::open(&dir).unwrap(),
        official(Some(2.0)),
        0,
        &device,
    )
    .unwrap();
    let input = batch(&case).to_input::<B>(&device);
    let v = normalized.forward(&input, &mut ForwardContext::eval());
    assert_close("query vectors, norm_power 2", v, &case["vectors_p2"], 1e-5);
}

#[test]
fn a_fresh_head_is_initialised_and_named() {
    let device = Default::default();
    let dir = fixture("encoders/bert");
    let (model, report) =
        QueryReformulator::<B>::load(Checkpoint::open(&dir).unwrap(), official(None), 7, &device)
            .unwrap();
    assert_eq!(report.initialised, ["dense_proj", "layer_norm"]);
    // PyTorch's nn.Linear default: uniform in ±1/√32.
    let (w, _) = crate::util::values(model.dense_proj.unwrap().weight.val());
    let bound = 1.0 / 32f32.sqrt();
    assert!(w.iter().all(|x| x.abs() <= bound));
    assert!(w.iter().any(|x| x.abs() > bound / 2.0), "not all near zero");
}

#[test]
fn feedback_inputs_and_their_revisions_are_the_official_tokens() {
    let reference = read_json(&fixture("prf/feedback_tokens.json"));
    let dir = artefact("all-MiniLM-L6-v2");
    let config = models::EncoderConfig::from_file(dir.join("config.json")).unwrap();
    let tokenizer = TextTokenizer::from_dir(&dir, &config).unwrap();
    let passages: Vec<&str> = reference["passages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    let mut fewer = false;
    for case in reference["cases"].as_array().unwrap() {
        let limits = FeedbackLimits {
            max_seq_len: case["max_seq_len"].as_u64().unwrap() as usize,
            max_q_len: case["max_q_len"].as_u64().unwrap() as usize,
            max_p_len: case["max_p_len"].as_u64().unwrap() as usize,
        };
        let query = case["query"].as_str().unwrap();
        let input = FeedbackInput::new(&tokenizer, query, &passages, limits).unwrap();
        let ids: Vec<u32> = serde_json::from_value(case["input_ids"].clone()).unwrap();
        let types: Vec<u32> = serde_json::from_value(case["token_type_ids"].clone()).unwrap();
        let seps: Vec<usize> = serde_json::from_value(case["sep_indices"].clone()).unwrap();
        assert_eq!(input.ids, ids, "{query} {limits:?}: ids");
        assert_eq!(input.type_ids, types, "{query} {limits:?}: segments");
        assert_eq!(
            input.sep_indices, seps,
            "{query} {limits:?}: [SEP] positions"
        );
        fewer |= input.n_passages() < passages.len();
        for (n, want) in case["revisions"].as_object().unwrap() {
            let want: Vec<u32> = serde_json::from_value(want.clone()).unwrap();
            let n: usize = n.parse().unwrap();
            assert_eq!(
                input.first(n).ids,
                want,
                "{query}: revision with {n} passages"
            );
        }
    }
    assert!(fewer, "some case stops adding passages at max_seq_len");
}

#[test]
fn mean_pooling_without_a_head_starts_as_the_first_pass_query_encoder() {
    // MiniLM with no feedback: the normalised mean-pooled embedding transformers computes.
    let reference = read_json(&fixture("minilm_embeddings.json"));
    let sentences = crate::util::reference_sentences(&reference);
    let (want, shape) = flat(&reference["embeddings"]);
    let dir = artefact("all-MiniLM-L6-v2");
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let tokenizer = TextTokenizer::from_dir(&dir, &checkpoint.config).unwrap();
    let config = ReformulatorConfig {
        mean_pooling: true,
        projection: false,
        norm_power: Some(2.0),
    };
    let device = Default::default();
    let (model, report) = QueryReformulator::<B>::load(checkpoint, config, 0, &device).unwrap();
    assert!(report.initialised.is_empty());
    let inputs: Vec<FeedbackInput> = sentences
        .iter()
        .map(|s| FeedbackInput::new(&tokenizer, s, &[], FeedbackLimits::default()).unwrap())
        .collect();
    let input = models::feedback_batch(&inputs, &tokenizer).to_input::<B>(&device);
    let (got, _) = crate::util::values(model.forward(&input, &mut ForwardContext::eval()));
    for (r, row) in want.chunks(shape[1]).enumerate() {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (c, x) in row.iter().enumerate() {
            let g = got[r * shape[1] + c];
            assert!(
                (g - x / norm).abs() < 1e-5,
                "sentence {r}, dim {c}: {g} vs {}",
                x / norm
            );
        }
    }
}
