//! The fused ops (`models::fused`) against PyTorch, values and gradients, on the fused path and
//! on Burn's composed ops (on LibTorch the two differ; on other backends both are composed).

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::{LayerNormConfig, RmsNormConfig};
use burn::tensor::{Tensor, TensorData};
use models::fused;
use serde_json::Value;

use crate::util::{B, assert_close, fixture, flat, read_json};

type AB = Autodiff<B>;

fn tensor<const D: usize>(v: &Value) -> Tensor<AB, D> {
    let (data, shape) = flat(v);
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

const TOL: f32 = 2e-5;

#[test]
fn the_test_backend_takes_the_fused_path_exactly_in_a_tch_build() {
    assert_eq!(fused::is_fused::<AB>(), cfg!(feature = "tch"));
    assert_eq!(fused::is_fused::<B>(), cfg!(feature = "tch"));
    assert!(!fused::is_fused::<burn::backend::NdArray<f32>>());
}

#[test]
fn norms_match_pytorch_with_gradients_on_both_paths() {
    let e = read_json(&fixture("fused/expected.json"));
    let eps = e["eps"].as_f64().unwrap();
    for fused_path in [true, false] {
        let what =
            |name: &str| format!("{name} ({})", if fused_path { "fused" } else { "composed" });
        // Layer norm.
        let mut norm = LayerNormConfig::new(8)
            .with_epsilon(eps)
            .init::<AB>(&Default::default());
        norm.gamma = Param::from_tensor(tensor::<1>(&e["gamma"]));
        norm.beta = Some(Param::from_tensor(tensor::<1>(&e["beta"])));
        let x = tensor::<3>(&e["x"]).require_grad();
        let out = if fused_path {
            fused::layer_norm(&norm, eps, x.clone())
        } else {
            fused::composed::layer_norm(&norm, x.clone())
        };
        let grads = (out.clone() * tensor::<3>(&e["g"])).sum().backward();
        let r = &e["layer_norm"];
        assert_close(&what("layer norm"), out.inner(), &r["out"], TOL);
        assert_close(
            &what("layer norm ∂x"),
            x.grad(&grads).unwrap(),
            &r["x"],
            TOL,
        );
        let gamma = norm.gamma.val().grad(&grads).unwrap();
        assert_close(&what("layer norm ∂γ"), gamma, &r["gamma"], TOL);
        let beta = norm.beta.as_ref().unwrap().val().grad(&grads).unwrap();
        assert_close(&what("layer norm ∂β"), beta, &r["beta"], TOL);

        // RMS norm.
        let mut norm = RmsNormConfig::new(8)
            .with_epsilon(eps)
            .init::<AB>(&Default::default());
        norm.gamma = Param::from_tensor(tensor::<1>(&e["gamma"]));
        let x = tensor::<3>(&e["x"]).require_grad();
        let out = if fused_path {
            fused::rms_norm(&norm, x.clone())
        } else {
            fused::composed::rms_norm(&norm, x.clone())
        };
        let grads = (out.clone() * tensor::<3>(&e["g"])).sum().backward();
        let r = &e["rms_norm"];
        assert_close(&what("RMS norm"), out.inner(), &r["out"], TOL);
        assert_close(&what("RMS norm ∂x"), x.grad(&grads).unwrap(), &r["x"], TOL);
        let gamma = norm.gamma.val().grad(&grads).unwrap();
        assert_close(&what("RMS norm ∂γ"), gamma, &r["gamma"], TOL);
    }
}

#[test]
fn softmaxes_match_pytorch_with_gradients_on_both_paths() {
    let e = read_json(&fixture("fused/expected.json"));
    for fused_path in [true, false] {
        for log in [false, true] {
            let name = if log { "log_softmax" } else { "softmax" };
            let what = format!("{name} ({})", if fused_path { "fused" } else { "composed" });
            let x = tensor::<4>(&e["scores"]).require_grad();
            let out = match (fused_path, log) {
                (true, false) => fused::softmax(x.clone(), 3),
                (true, true) => fused::log_softmax(x.clone(), 3),
                (false, false) => fused::composed::softmax(x.clone(), 3),
                (false, true) => fused::composed::log_softmax(x.clone(), 3),
            };
            let grads = (out.clone() * tensor::<4>(&e["g_scores"])).sum().backward();
            assert_close(&what, out.inner(), &e[name]["out"], TOL);
            assert_close(
                &format!("{what} ∂x"),
                x.grad(&grads).unwrap(),
                &e[name]["x"],
                TOL,
            );
        }
    }
}

#[test]
fn silu_matches_pytorch_with_gradients_on_both_paths() {
    let e = read_json(&fixture("fused/expected.json"));
    for fused_path in [true, false] {
        let what = format!("silu ({})", if fused_path { "fused" } else { "composed" });
        let x = tensor::<3>(&e["x"]).require_grad();
        let out = if fused_path {
            fused::silu(x.clone())
        } else {
            fused::composed::silu(x.clone())
        };
        let grads = (out.clone() * tensor::<3>(&e["g"])).sum().backward();
        assert_close(&what, out.inner(), &e["silu"]["out"], TOL);
        assert_close(
            &format!("{what} ∂x"),
            x.grad(&grads).unwrap(),
            &e["silu"]["x"],
            TOL,
        );
    }
}

#[test]
fn fused_ops_without_autodiff_and_on_untracked_tensors_match() {
    // Evaluation: the plain backend, and an autodiff tensor that requires no gradient.
    let e = read_json(&fixture("fused/expected.json"));
    let (data, shape) = flat(&e["scores"]);
    let shape: [usize; 4] = shape.try_into().unwrap();
    let plain = Tensor::<B, 4>::from_data(TensorData::new(data, shape), &Default::default());
    assert_close(
        "softmax (plain)",
        fused::softmax(plain.clone(), 3),
        &e["softmax"]["out"],
        TOL,
    );
    let (data, shape) = flat(&e["x"]);
    let shape: [usize; 3] = shape.try_into().unwrap();
    let plain_x = Tensor::<B, 3>::from_data(TensorData::new(data, shape), &Default::default());
    assert_close("silu (plain)", fused::silu(plain_x), &e["silu"]["out"], TOL);
    let untracked = tensor::<4>(&e["scores"]);
    let out = fused::log_softmax(untracked, 3);
    assert_close(
        "log_softmax (untracked)",
        out.inner(),
        &e["log_softmax"]["out"],
        TOL,
    );
}

#[test]
fn squared_sum_matches_pytorch_on_both_paths() {
    let e = read_json(&fixture("fused/expected.json"));
    let want = e["squared_sum"].as_f64().unwrap();
    let (data, shape) = flat(&e["x"]);
    let shape: [usize; 3] = shape.try_into().unwrap();
    let x = Tensor::<B, 3>::from_data(TensorData::new(data, shape), &Default::default());
    for (path, got) in [
        ("fused", fused::squared_sum(x.clone())),
        ("composed", fused::composed::squared_sum(x)),
    ] {
        let got = f64::from(got.into_scalar());
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{path}: {got} against {want}"
        );
    }
}
