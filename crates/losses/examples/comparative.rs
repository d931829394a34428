//! The comparative loss on hand-made task losses: how each dummy target ranks the views, and
//! where the gradient goes.
//!
//! ```sh
//! cargo run -p losses --example comparative
//! ```

use burn::backend::{Autodiff, NdArray};
use burn::prelude::*;
use losses::{ComparativeLoss, DummyTarget, Primary, cross_entropy};

type B = Autodiff<NdArray<f64>>;

fn main() {
    let device = Default::default();
    // Logits of one example under the full model and two nested ablations (c = 2), true class 0.
    let logits = Tensor::<B, 2>::from_data(
        TensorData::from([[2.0, 0.5], [1.2, 0.9], [0.4, 1.1]]),
        &device,
    );
    let task = cross_entropy(
        logits,
        Tensor::from_data(TensorData::from([0i64, 0, 0]), &device),
    );
    println!(
        "task losses l_0..l_2: {:?}",
        task.clone().into_data().to_vec::<f64>().unwrap()
    );
    let losses = task.reshape([1, 3]).detach().require_grad();
    for (name, loss) in [
        ("ultra (b = 0)", ComparativeLoss::new(DummyTarget::Ultra)),
        ("best", ComparativeLoss::new(DummyTarget::Best)),
        ("first", ComparativeLoss::new(DummyTarget::First)),
        (
            "weighted max + 1.0 x hinge",
            ComparativeLoss::weighted(Primary::Max, 1.0),
        ),
    ] {
        let value = loss.forward(losses.clone());
        let grad = losses.grad(&value.clone().backward()).unwrap();
        println!(
            "{name:<28} L = {:.4}   dL/dl = {:?}",
            value.into_scalar(),
            grad.into_data()
                .to_vec::<f64>()
                .unwrap()
                .iter()
                .map(|g| (g * 1e4).round() / 1e4)
                .collect::<Vec<_>>()
        );
    }
}
