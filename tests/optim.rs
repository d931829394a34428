//! The runner's AdamW (PyTorch conventions, no decay on biases), global-norm clipping and linear
//! warmup/decay schedule against `torch.optim.AdamW`, `clip_grad_norm_` and transformers'
//! `get_linear_schedule_with_warmup` (fixture from `tests/fixtures/optim/make_adamw_fixture.py`).

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::Linear;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use runner::training::{AdamW, clip_global_norm, global_grad_norm, linear_schedule};
use serde_json::Value;

use crate::util::{B, fixture, flat, read_json};

type Ad = Autodiff<B>;

#[derive(Module, Debug)]
struct Regression<B: Backend> {
    lin: Linear<B>,
}

fn tensor2(v: &Value, device: &Device<Ad>) -> Tensor<Ad, 2> {
    let (data, shape) = flat(v);
    Tensor::from_data(TensorData::new(data, [shape[0], shape[1]]), device)
}

fn tensor1(v: &Value, device: &Device<Ad>) -> Tensor<Ad, 1> {
    let (data, shape) = flat(v);
    Tensor::from_data(TensorData::new(data, [shape[0]]), device)
}

/// Compared on the host: on LibTorch, `view - other` can write into the viewed parameter
/// (burn-tch's storage sharing does not follow a transpose of a transposed tensor).
fn assert_close(got: Tensor<B, 2>, want: Tensor<B, 2>, what: &str) {
    let got = got.into_data().to_vec::<f32>().unwrap();
    let want = want.into_data().to_vec::<f32>().unwrap();
    assert_eq!(got.len(), want.len(), "{what}: size");
    let diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 2e-6, "{what}: max |diff| = {diff}");
}

#[test]
fn adamw_clipping_and_schedule_match_pytorch() {
    let f = read_json(&fixture("optim/adamw.json"));
    let device = Default::default();
    // torch's Linear weight is [out, in]; Burn's is [in, out].
    let mut model = Regression {
        lin: Linear {
            weight: Param::from_tensor(tensor2(&f["init"]["weight"], &device).transpose()),
            bias: Some(Param::from_tensor(tensor1(&f["init"]["bias"], &device))),
        },
    };
    let x = tensor2(&f["x"], &device);
    let y = tensor2(&f["y"], &device);
    let (peak, warmup, total) = (
        f["peak_lr"].as_f64().unwrap(),
        f["warmup"].as_u64().unwrap() as usize,
        f["total"].as_u64().unwrap() as usize,
    );
    let max_norm = f["max_norm"].as_f64().unwrap();
    let mut optimizer = AdamW::new(f["weight_decay"].as_f64().unwrap()).init();
    for (t, step) in f["steps"].as_array().unwrap().iter().enumerate() {
        let lr = linear_schedule(peak, t, warmup, total);
        assert!(
            (lr - step["lr"].as_f64().unwrap()).abs() < 1e-12,
            "lr at step {t}"
        );
        let loss = (model.lin.forward(x.clone()) - y.clone())
            .powi_scalar(2)
            .mean();
        let loss_value: f32 = loss.clone().into_scalar();
        assert!(
            (f64::from(loss_value) - step["loss"].as_f64().unwrap()).abs() < 1e-4,
            "loss at step {t}: {loss_value} vs {}",
            step["loss"]
        );
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let norm = global_grad_norm(&model, &grads);
        assert!(
            (norm - step["grad_norm"].as_f64().unwrap()).abs() < 1e-5,
            "grad norm at step {t}: {norm} vs {}",
            step["grad_norm"]
        );
        clip_global_norm(&model, &mut grads, max_norm);
        let clipped = global_grad_norm(&model, &grads);
        assert!((clipped - max_norm).abs() < 1e-5, "clipped norm {clipped}");
        model = optimizer.step(lr, model, grads);
        let weight = model.lin.weight.val().inner();
        let want = tensor2(&step["weight"], &device).inner().transpose();
        assert_close(weight, want, &format!("weight after step {t}"));
        let bias = model
            .lin
            .bias
            .as_ref()
            .unwrap()
            .val()
            .inner()
            .unsqueeze::<2>();
        let want = tensor1(&step["bias"], &device).inner().unsqueeze::<2>();
        assert_close(bias, want, &format!("bias after step {t}"));
    }
}
