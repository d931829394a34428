//! LoL's objective against PyTorch (fixtures/make_reformulation_fixtures.py): every term and
//! the gradient with respect to the query vectors, with shared positives across groups (the
//! query-ranking mask), several positives per query (the passage-ranking label and mask), 0, 1
//! and 2 comparisons, and evaluation (no comparative term).

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use losses::ReformulationLoss;
use serde_json::Value;

type B = Autodiff<NdArray<f64>>;

fn matrix(v: &Value) -> Tensor<B, 2> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), &Default::default())
}

fn values<const D: usize>(t: Tensor<NdArray<f64>, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().unwrap()
}

fn close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // f64 throughout, but a weight like λ = 0.7 reaches the backward pass rounded to about
        // f32 precision (relative 1e-8 seen, only where a λ is not a binary fraction).
        assert!(
            (g - w).abs() <= 1e-8,
            "{what}: element {i}: got {g}, expected {w}"
        );
    }
}

fn flat(v: &Value) -> Vec<f64> {
    match v {
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Array(a) if a.first().is_some_and(Value::is_array) => {
            a.iter().flat_map(flat).collect()
        }
        other => serde_json::from_value(other.clone()).unwrap(),
    }
}

#[test]
fn every_term_and_the_query_gradient_match_pytorch() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/reformulation.json"
    );
    let fixtures: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for case in fixtures["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let loss = ReformulationLoss::new(case["n_compare"].as_u64().unwrap() as usize)
            .with_lambda_pr(case["lambda_pr"].as_f64().unwrap())
            .with_lambda_qr(case["lambda_qr"].as_f64().unwrap())
            .with_lambda_cr(case["lambda_cr"].as_f64().unwrap());
        let queries = matrix(&case["queries"]).require_grad();
        let passages = matrix(&case["passages"]);
        let positives: Vec<Vec<usize>> = serde_json::from_value(case["positives"].clone()).unwrap();
        let training = case["training"].as_bool().unwrap();
        let terms = loss.forward(queries.clone(), passages, &positives, training);

        let scalar = |t: &Tensor<B, 1>| values(t.clone().inner());
        close(
            &format!("{name}: loss"),
            &scalar(&terms.loss),
            &flat(&case["loss"]),
        );
        close(
            &format!("{name}: per revision"),
            &scalar(&terms.per_revision),
            &flat(&case["per_revision"]),
        );
        close(
            &format!("{name}: passage ranking"),
            &scalar(&terms.passage_ranking),
            &flat(&case["passage_ranking"]),
        );
        close(
            &format!("{name}: query ranking"),
            &scalar(&terms.query_ranking),
            &flat(&case["query_ranking"]),
        );
        match (&terms.comparative, case["comparative"].as_f64()) {
            (Some(got), Some(want)) => {
                close(&format!("{name}: comparative"), &scalar(got), &[want])
            }
            (None, None) => {}
            (got, want) => panic!("{name}: comparative term {got:?}, expected {want:?}"),
        }
        let grads = terms.loss.backward();
        let grad = queries.grad(&grads).expect("the queries have a gradient");
        close(
            &format!("{name}: d loss / d queries"),
            &values(grad),
            &flat(&case["grad_queries"]),
        );
    }
}

#[test]
fn more_feedback_that_ranks_worse_is_penalised_and_better_is_not() {
    let device = Default::default();
    let passages = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &device);
    let positives = vec![vec![0], vec![0]];
    let loss = ReformulationLoss::new(1).with_lambda_cr(1.0);
    let cr = |queries: [[f64; 2]; 2]| {
        let q = Tensor::<B, 2>::from_floats(queries, &device);
        let terms = loss.forward(q, passages.clone(), &positives, true);
        let per: Vec<f64> = values(terms.per_revision.inner());
        let cr = values(terms.comparative.unwrap().inner())[0];
        (per, cr)
    };
    // First revision (more feedback) closer to the positive: no penalty.
    let (_, better) = cr([[2.0, 0.0], [0.5, 0.5]]);
    assert_eq!(better, 0.0);
    // Swapped: the penalty is the difference of the two revisions' losses.
    let (per, worse) = cr([[0.5, 0.5], [2.0, 0.0]]);
    assert!(
        (worse - (per[0] - per[1])).abs() < 1e-12 && worse > 0.0,
        "{worse} {per:?}"
    );
}

#[test]
#[should_panic(expected = "not whole groups")]
fn a_batch_that_is_not_whole_groups_is_refused() {
    let device = Default::default();
    let q = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device);
    let p = Tensor::<B, 2>::from_floats([[1.0, 0.0]], &device);
    ReformulationLoss::new(1).forward(q, p, &[vec![0], vec![0], vec![0]], true);
}
