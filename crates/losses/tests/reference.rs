//! Values and gradients against PyTorch (fixtures/make_loss_fixtures.py), and a
//! finite-difference check of the comparative loss away from ties.

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use losses::comparative::Mode;
use losses::{
    ComparativeLoss, DummyTarget, Primary, cross_entropy, listwise_cross_entropy, mse,
    span_cross_entropy,
};
use serde_json::Value;

type B = Autodiff<NdArray<f64>>;

fn fixtures() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/losses.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn matrix(v: &Value) -> Tensor<B, 2> {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let (r, c) = (rows.len(), rows[0].len());
    Tensor::from_data(TensorData::new(rows.concat(), [r, c]), &Default::default())
}

fn vector(v: &Value) -> Tensor<B, 1> {
    let xs: Vec<f64> = serde_json::from_value(v.clone()).unwrap();
    let n = xs.len();
    Tensor::from_data(TensorData::new(xs, [n]), &Default::default())
}

fn ints(v: &Value) -> Tensor<B, 1, Int> {
    let xs: Vec<i64> = serde_json::from_value(v.clone()).unwrap();
    let n = xs.len();
    Tensor::from_data(TensorData::new(xs, [n]), &Default::default())
}

fn close<Bk: Backend, const D: usize>(what: &str, got: Tensor<Bk, D>, want: &Value, tol: f64) {
    let got: Vec<f64> = got.into_data().convert::<f64>().into_vec().unwrap();
    let want: Vec<f64> = match want {
        Value::Number(n) => vec![n.as_f64().unwrap()],
        Value::Array(a) if a.first().is_some_and(Value::is_array) => a
            .iter()
            .flat_map(|r| serde_json::from_value::<Vec<f64>>(r.clone()).unwrap())
            .collect(),
        other => serde_json::from_value(other.clone()).unwrap(),
    };
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: element {i}: got {g}, expected {w}"
        );
    }
}

fn loss_of(case: &Value) -> ComparativeLoss {
    let target = match case["target"].as_str().unwrap() {
        "ultra" => DummyTarget::Ultra,
        "best" => DummyTarget::Best,
        _ => DummyTarget::First,
    };
    let mode = &case["mode"];
    let loss = if mode["kind"] == "cmp" {
        ComparativeLoss::new(target)
    } else {
        let primary = match mode["primary"].as_str().unwrap() {
            "max" => Primary::Max,
            "avg" => Primary::Avg,
            "first" => Primary::First,
            _ => Primary::Last,
        };
        ComparativeLoss::weighted(primary, mode["weight"].as_f64().unwrap())
    };
    loss.with_temperature(case["temp"].as_f64().unwrap())
}

#[test]
fn comparative_loss_matches_the_official_computation() {
    let fx = fixtures();
    let cases = fx["comparative"].as_array().unwrap();
    assert_eq!(cases.len(), 80);
    for case in cases {
        let what = format!(
            "c={} target={} T={} mode={} ties={}",
            case["c"], case["target"], case["temp"], case["mode"], case["ties"]
        );
        let losses = matrix(&case["losses"]).require_grad();
        let value = loss_of(case).forward(losses.clone());
        close(
            &format!("{what} value"),
            value.clone(),
            &case["value"],
            1e-6,
        );
        let grads = value.backward();
        close(
            &format!("{what} gradient"),
            losses.grad(&grads).unwrap(),
            &case["grad"],
            1e-6,
        );
    }
}

#[test]
fn span_comparative_loss_matches_the_official_computation() {
    // CmpQA: the primary of the weighted mode is taken over the per-view mean of start and end
    // losses, so `max` is not the mean of two weighted losses; every primary is covered.
    let fx = fixtures();
    let cases = fx["comparative_span"].as_array().unwrap();
    assert_eq!(cases.len(), 36);
    for case in cases {
        let what = format!(
            "span c={} target={} mode={} ties={}",
            case["c"], case["target"], case["mode"], case["ties"]
        );
        let start = matrix(&case["start"]).require_grad();
        let end = matrix(&case["end"]).require_grad();
        let value = loss_of(case).forward_span(start.clone(), end.clone());
        close(
            &format!("{what} value"),
            value.clone(),
            &case["value"],
            1e-6,
        );
        let grads = value.backward();
        let start_grad = start.grad(&grads).unwrap();
        close(
            &format!("{what} start gradient"),
            start_grad,
            &case["start_grad"],
            1e-6,
        );
        let end_grad = end.grad(&grads).unwrap();
        close(
            &format!("{what} end gradient"),
            end_grad,
            &case["end_grad"],
            1e-6,
        );
    }
}

#[test]
fn listwise_and_scheduled_losses_match_the_official_computation() {
    // --listwise (ListMLE over the effects, in both modes) and --cr_schedule (the weighted
    // regulariser only on batches whose mean primary is at most 1.1), on plain and span losses.
    let fx = fixtures();
    let cases = fx["comparative_variants"].as_array().unwrap();
    assert_eq!(cases.len(), 120);
    let skipped = cases
        .iter()
        .filter(|c| c["skips_regulariser"].as_bool().unwrap())
        .count();
    assert!(
        skipped > 0 && skipped < 48,
        "{skipped} scheduled cases skip"
    );
    for case in cases {
        let what = format!(
            "c={} target={} T={} mode={} listwise={} schedule={} span={} ties={}",
            case["c"],
            case["target"],
            case["temp"],
            case["mode"],
            case["listwise"],
            case["schedule"],
            case["span"],
            case["ties"]
        );
        let mut loss = loss_of(case);
        if case["listwise"].as_bool().unwrap() {
            loss = loss.listwise();
        }
        if case["schedule"].as_bool().unwrap() {
            loss = loss.with_schedule();
        }
        let inputs: Vec<(&str, &str)> = if case["span"].as_bool().unwrap() {
            vec![("start", "start_grad"), ("end", "end_grad")]
        } else {
            vec![("losses", "grad")]
        };
        let tensors: Vec<Tensor<B, 2>> = inputs
            .iter()
            .map(|(k, _)| matrix(&case[*k]).require_grad())
            .collect();
        let value = match tensors.as_slice() {
            [l] => loss.forward(l.clone()),
            [s, e] => loss.forward_span(s.clone(), e.clone()),
            _ => unreachable!(),
        };
        close(
            &format!("{what} value"),
            value.clone(),
            &case["value"],
            1e-6,
        );
        let grads = value.backward();
        for ((_, g), t) in inputs.iter().zip(&tensors) {
            close(
                &format!("{what} {g}"),
                t.grad(&grads).unwrap(),
                &case[*g],
                1e-6,
            );
        }
    }
}

#[test]
fn worked_examples_from_the_notes() {
    let device = Default::default();
    let ultra = ComparativeLoss::new(DummyTarget::Ultra);
    let l = |a: f64, b: f64| Tensor::<B, 2>::from_data(TensorData::from([[a, b]]), &device);
    assert!((ultra.forward(l(0.5, 0.8)).into_scalar() - 1.3 / 3.0).abs() < 1e-12);
    assert!((ultra.forward(l(0.8, 0.5)).into_scalar() - 1.6 / 3.0).abs() < 1e-12);
}

#[test]
fn ties_keep_their_gradient_like_clamp_min() {
    // With `best`, the best view ties the dummy: (l_best - b) = 0 must still pass gradient 1/P
    // to l_best through that pair, as PyTorch's clamp_min does (a ReLU mask would give 0).
    let device = Default::default();
    let losses = Tensor::<B, 2>::from_data(TensorData::from([[0.3, 0.9]]), &device).require_grad();
    let value = ComparativeLoss::new(DummyTarget::Best).forward(losses.clone());
    // Pairs: (l0,l1): 0; (l0,b): 0 (tie); (l1,b): 0.6. P = 3.
    assert!((value.clone().into_scalar() - 0.2).abs() < 1e-12);
    let grad: Vec<f64> = losses
        .grad(&value.backward())
        .unwrap()
        .into_data()
        .to_vec()
        .unwrap();
    // l0: pair (l0,l1) is a hinge at -0.6 (no grad), pair (l0,b) ties (grad 1/3).
    assert!((grad[0] - 1.0 / 3.0).abs() < 1e-7, "{grad:?}");
    assert!((grad[1] - 1.0 / 3.0).abs() < 1e-7, "{grad:?}");
}

#[test]
fn finite_differences_agree_away_from_ties() {
    let device = Default::default();
    let base = [[0.31, 0.92, 0.47, 1.33], [1.21, 0.18, 0.66, 0.74]];
    for loss in [
        ComparativeLoss::new(DummyTarget::Ultra),
        // `best` and `first` detach a dummy that depends on the losses, so their gradient is by
        // design not the derivative of the value; the PyTorch reference covers them.
        ComparativeLoss::new(DummyTarget::Ultra).with_temperature(0.7),
        ComparativeLoss::weighted(Primary::Avg, 0.3),
        // ListMLE is smooth everywhere.
        ComparativeLoss::new(DummyTarget::Ultra).listwise(),
        ComparativeLoss::weighted(Primary::Max, 0.3)
            .listwise()
            .with_temperature(0.7),
    ] {
        let x = Tensor::<B, 2>::from_data(TensorData::from(base), &device).require_grad();
        let analytic: Vec<f64> = x
            .grad(&loss.forward(x.clone()).backward())
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let eps = 1e-6;
        for k in 0..8 {
            let eval = |delta: f64| {
                let mut v = base;
                v[k / 4][k % 4] += delta;
                loss.forward(Tensor::<B, 2>::from_data(TensorData::from(v), &device))
                    .into_scalar()
            };
            let numeric = (eval(eps) - eval(-eps)) / (2.0 * eps);
            assert!(
                (numeric - analytic[k]).abs() < 1e-6,
                "{loss:?} element {k}: fd {numeric} vs {}",
                analytic[k]
            );
        }
    }
}

#[test]
fn span_loss_averages_start_and_end() {
    let device = Default::default();
    let loss = ComparativeLoss::new(DummyTarget::Ultra);
    let start = Tensor::<B, 2>::from_data(TensorData::from([[0.5, 0.8]]), &device);
    let end = Tensor::<B, 2>::from_data(TensorData::from([[0.8, 0.5]]), &device);
    let value = loss.forward_span(start, end).into_scalar();
    assert!((value - (1.3 / 3.0 + 1.6 / 3.0) / 2.0).abs() < 1e-12);
    assert!(matches!(loss.mode, Mode::ComparativeOnly));
}

#[test]
#[should_panic(expected = "at least one ablation")]
fn a_single_view_is_rejected() {
    ComparativeLoss::new(DummyTarget::Ultra)
        .forward(Tensor::<B, 2>::from_floats([[0.5]], &Default::default()));
}

#[test]
fn task_losses_match_pytorch() {
    let fx = fixtures();
    let ce = &fx["cross_entropy"];
    let logits = matrix(&ce["logits"]).require_grad();
    let value = cross_entropy(logits.clone(), ints(&ce["labels"]));
    close("cross entropy", value.clone(), &ce["loss"], 1e-9);
    close(
        "cross entropy grad",
        logits.grad(&value.sum().backward()).unwrap(),
        &ce["grad"],
        1e-9,
    );

    let sp = &fx["span"];
    let (start, end) = (
        matrix(&sp["start_logits"]).require_grad(),
        matrix(&sp["end_logits"]).require_grad(),
    );
    let (s, e) = span_cross_entropy(
        start.clone(),
        end.clone(),
        ints(&sp["start_positions"]),
        ints(&sp["end_positions"]),
    );
    close("start loss", s.clone(), &sp["start_loss"], 1e-9);
    close("end loss", e.clone(), &sp["end_loss"], 1e-9);
    let grads = (s.sum() + e.sum().mul_scalar(2.0)).backward();
    close(
        "start grad",
        start.grad(&grads).unwrap(),
        &sp["start_grad"],
        1e-9,
    );
    close("end grad", end.grad(&grads).unwrap(), &sp["end_grad"], 1e-9);

    let lw = &fx["listwise"];
    let scores = matrix(&lw["scores"]).require_grad();
    let value = listwise_cross_entropy(scores.clone(), matrix(&lw["labels"]));
    close("listwise", value.clone(), &lw["loss"], 1e-9);
    close(
        "listwise grad",
        scores.grad(&value.sum().backward()).unwrap(),
        &lw["grad"],
        1e-9,
    );

    let m = &fx["mse"];
    let pred = vector(&m["predictions"]).require_grad();
    let value = mse(pred.clone(), vector(&m["targets"]));
    close("mse", value.clone(), &m["loss"], 1e-9);
    close(
        "mse grad",
        pred.grad(&value.sum().backward()).unwrap(),
        &m["grad"],
        1e-9,
    );
}
