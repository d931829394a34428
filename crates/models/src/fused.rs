//! Ops that PyTorch runs in one kernel and Burn composes, shaped or fused as PyTorch has them:
//!
//! - [`linear`] flattens the leading dimensions (every backend): the weight's gradient is one
//!   matrix product, as in `torch.nn.functional.linear`.
//! - [`layer_norm`], [`rms_norm`], [`softmax`], [`log_softmax`], [`silu`]: with the `tch`
//!   feature, one LibTorch kernel each, with torch's own backward; [`squared_sum`] (the clipping
//!   norm) one reduction.
//!
//! Under `Autodiff`, Burn composes the norms and softmaxes from elementwise primitives and
//! differentiates each of them (a layer norm is nine ops forward and about twenty backward);
//! PyTorch runs one kernel each way. With `tch`, a tensor of `Autodiff<LibTorch>` (the training
//! backend) is recognised at run time by its type and handed to torch's fused kernels (outside
//! autodiff burn-tch already runs layer norm and the softmaxes as torch's; RMS norm, composed in
//! Burn, gets torch's `rms_norm` there too): under autodiff the op becomes one node of Burn's graph whose backward
//! asks torch's autograd for the input gradients (the op runs on detached inputs that require
//! grad, and its graph is kept until Burn's backward reaches it). Every other backend, and
//! LibTorch with any element type but `f32`, takes the composed path.
//!
//! `NEURONLAB_COMPOSED_OPS=1` in the environment turns all of this off (Burn's own ops
//! everywhere), for benchmarks and bisecting. The model code calls these functions instead of
//! `Linear::forward`, `LayerNorm::forward`, `RmsNorm::forward`, `activation::softmax` and
//! `activation::log_softmax`; `tests/fused.rs` checks values and gradients of both paths
//! against PyTorch, and the encoder and decoder parity tests check the models against
//! transformers on every backend.

use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation;

/// Whether the fused ops are on: unless the environment sets `NEURONLAB_COMPOSED_OPS=1` (for
/// benchmarks and bisecting: every op then runs as Burn composes it), read once.
pub fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURONLAB_COMPOSED_OPS").map_or(true, |v| v != "1"))
}

/// `linear.forward(x)` on the rows of `x`: its leading dimensions flattened into one, so that
/// the weight's gradient is one matrix product over all rows, as `torch.nn.functional.linear`
/// computes it. Burn's `Linear` broadcasts the weight over the leading dimensions instead, and
/// its backward then multiplies batch by batch and sums the products (for a `[32, 64, 384]`
/// input into 1536 outputs: 32 products and a `[32, 384, 1536]` temporary). Every backend.
pub fn linear<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    if D <= 2 || !enabled() {
        return linear.forward(x);
    }
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let mut out = dims;
    out[D - 1] = linear.weight.dims()[1];
    linear.forward(x.reshape([rows, dims[D - 1]])).reshape(out)
}

/// `norm.forward(x)`; `eps` is the norm's ε (Burn keeps it private), the checkpoint's
/// `layer_norm_eps`.
pub fn layer_norm<B: Backend, const D: usize>(
    norm: &LayerNorm<B>,
    eps: f64,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match libtorch::layer_norm(norm, eps, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    #[cfg(not(feature = "tch"))]
    let _ = eps;
    norm.forward(x)
}

/// `norm.forward(x)` (torch's `rms_norm`: `x · rsqrt(mean(x²) + ε) · γ`, as HF's
/// `LlamaRMSNorm`; Burn's divides by the square root, which differs in the last bit).
pub fn rms_norm<B: Backend, const D: usize>(norm: &RmsNorm<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match libtorch::rms_norm(norm, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    norm.forward(x)
}

/// `activation::softmax(x, dim)`.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match libtorch::softmax(x, dim, false) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::softmax(x, dim)
}

/// `activation::log_softmax(x, dim)`.
pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match libtorch::softmax(x, dim, true) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::log_softmax(x, dim)
}

/// `activation::silu(x)` (`x · sigmoid(x)`: two ops and their backward in Burn, one kernel each
/// way in torch; on plain LibTorch too).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    let x = match libtorch::silu(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation::silu(x)
}

/// Whether `B` takes the fused path (LibTorch `f32`, plain or under `Autodiff`, in a `tch`
/// build, unless the environment sets `NEURONLAB_COMPOSED_OPS=1`).
pub fn is_fused<B: Backend>() -> bool {
    #[cfg(feature = "tch")]
    {
        use std::any::TypeId;
        type Plain = burn::backend::libtorch::LibTorch<f32>;
        let b = TypeId::of::<B>();
        enabled()
            && (b == TypeId::of::<Plain>() || b == TypeId::of::<burn::backend::Autodiff<Plain>>())
    }
    #[cfg(not(feature = "tch"))]
    false
}

/// The settings of one AdamW step ([`adamw_step`]); `time` counts this step from 1.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    /// The learning rate.
    pub lr: f64,
    /// β₁.
    pub beta_1: f32,
    /// β₂.
    pub beta_2: f32,
    /// ε.
    pub epsilon: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// This step's number, from 1.
    pub time: usize,
}

/// A parameter, its gradient, and its moments `(m, v)` after `time − 1` steps (`None` before
/// the first).
pub struct AdamWTensors<B: Backend, const D: usize> {
    /// The parameter.
    pub param: Tensor<B, D>,
    /// Its gradient.
    pub grad: Tensor<B, D>,
    /// `(m, v)`.
    pub moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
}

/// One AdamW step on one parameter (PyTorch's `_single_tensor_adamw`: decoupled decay
/// `p ← p·(1 − lr·wd)`, `m ← lerp(m, g, 1 − β₁)`, `v ← β₂·v + (1 − β₂)·g²`, then
/// `p ← p − lr/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)`), in place in torch's kernels, on a plain
/// LibTorch `f32` tensor: the new `(param, m, v)`. `Err` hands the tensors back on any other
/// backend (and with `NEURONLAB_COMPOSED_OPS=1`), for Burn's `AdamW`, which computes the same in
/// about twice as many passes over the parameter.
#[allow(clippy::type_complexity)]
pub fn adamw_step<B: Backend, const D: usize>(
    tensors: AdamWTensors<B, D>,
    step: AdamWStep,
) -> Result<(Tensor<B, D>, Tensor<B, D>, Tensor<B, D>), AdamWTensors<B, D>> {
    #[cfg(feature = "tch")]
    {
        libtorch::adamw_step(tensors, step)
    }
    #[cfg(not(feature = "tch"))]
    {
        let _ = step;
        Err(tensors)
    }
}

/// `Σ x²` over every element of `x`, as a one-element tensor (the gradient norm of clipping).
/// On plain LibTorch `f32`, torch's `norm` squared (one reduction, no temporary the size of
/// `x`); elsewhere `x.square().sum()`.
pub fn squared_sum<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
    #[cfg(feature = "tch")]
    let x = match libtorch::squared_sum(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    composed::squared_sum(x)
}

/// The composed versions, whatever the backend (for tests that compare the two paths).
pub mod composed {
    use super::*;

    /// Burn's `LayerNorm::forward`.
    pub fn layer_norm<B: Backend, const D: usize>(
        norm: &LayerNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        norm.forward(x)
    }

    /// Burn's `RmsNorm::forward`.
    pub fn rms_norm<B: Backend, const D: usize>(
        norm: &RmsNorm<B>,
        x: Tensor<B, D>,
    ) -> Tensor<B, D> {
        norm.forward(x)
    }

    /// Burn's softmax.
    pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
        activation::softmax(x, dim)
    }

    /// `x.square().sum()`.
    pub fn squared_sum<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, 1> {
        x.square().sum()
    }

    /// Burn's SiLU.
    pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        activation::silu(x)
    }

    /// Burn's log-softmax.
    pub fn log_softmax<B: Backend, const D: usize>(x: Tensor<B, D>, dim: usize) -> Tensor<B, D> {
        activation::log_softmax(x, dim)
    }
}

#[cfg(feature = "tch")]
mod libtorch {
    use std::any::{Any, TypeId};

    use burn::backend::Autodiff;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::backend::libtorch::{LibTorch, TchTensor};
    use burn::nn::{LayerNorm, RmsNorm};
    use burn::prelude::*;
    use burn::tensor::TensorPrimitive;

    use super::{AdamWStep, AdamWTensors};

    type Ad = Autodiff<LibTorch<f32>>;
    type Plain = LibTorch<f32>;

    /// `a` as a `T` if it is one, else `a` back.
    fn cast<A: 'static, T: 'static>(a: A) -> Result<T, A> {
        let boxed: Box<dyn Any> = Box::new(a);
        match boxed.downcast::<T>() {
            Ok(t) => Ok(*t),
            Err(boxed) => Err(*boxed
                .downcast::<A>()
                .unwrap_or_else(|_| unreachable!("a box holds its own type"))),
        }
    }

    /// Torch's gradients for the op's inputs, by Burn's backward.
    #[derive(Debug)]
    struct TorchBackward;

    /// The op's output with its torch graph, and its inputs as torch saw them (the ones that
    /// need a gradient as leaves that require one). They share Burn's storage count of the
    /// tensors they view, so burn-tch never writes in place into memory torch has saved.
    #[derive(Debug, Clone)]
    struct Graph {
        output: TchTensor,
        inputs: Vec<TchTensor>,
        wanted: Vec<bool>,
    }

    impl<const N: usize> Backward<Plain, N> for TorchBackward {
        type State = Graph;

        fn backward(self, ops: Ops<Graph, N>, grads: &mut Gradients, _: &mut Checkpointer) {
            let grad = grads.consume::<Plain>(&ops.node);
            let Graph {
                output,
                inputs,
                wanted,
            } = ops.state;
            let leaves: Vec<&tch::Tensor> = inputs
                .iter()
                .zip(&wanted)
                .filter(|(_, w)| **w)
                .map(|(t, _)| &t.tensor)
                .collect();
            if leaves.is_empty() {
                return;
            }
            // ∂(Σ output · grad)/∂input is the vector-Jacobian product torch's backward gives.
            let surrogate = (&output.tensor * &grad.tensor).sum(None::<tch::Kind>);
            let mut computed =
                tch::Tensor::run_backward(&[surrogate], &leaves, false, false).into_iter();
            for (parent, want) in ops.parents.iter().zip(&wanted) {
                if !want {
                    continue;
                }
                let g = computed.next().expect("one gradient per leaf");
                if let Some(node) = parent {
                    grads.register::<Plain>(node.id, TchTensor::new(g));
                }
            }
        }
    }

    /// `f` on the raw tensors, as one node of Burn's graph differentiated by torch.
    fn torch_op<const N: usize>(
        inputs: [FloatTensorOf; N],
        f: impl Fn(&[tch::Tensor]) -> tch::Tensor,
    ) -> FloatTensorOf {
        let nodes = inputs.each_ref().map(|t| t.node.clone());
        match TorchBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let wanted: Vec<bool> = inputs
                    .iter()
                    .map(|t| !t.node.requirement.is_none())
                    .collect();
                let inputs: Vec<TchTensor> = inputs
                    .iter()
                    .zip(&wanted)
                    .map(|(t, want)| {
                        let raw = if *want {
                            t.primitive.tensor.detach().set_requires_grad(true)
                        } else {
                            t.primitive.tensor.shallow_clone()
                        };
                        TchTensor::from_existing(raw, t.primitive.storage.clone())
                    })
                    .collect();
                let raw: Vec<tch::Tensor> =
                    inputs.iter().map(|t| t.tensor.shallow_clone()).collect();
                let output = TchTensor::new(f(&raw));
                let detached =
                    TchTensor::from_existing(output.tensor.detach(), output.storage.clone());
                let state = Graph {
                    output,
                    inputs,
                    wanted,
                };
                prep.finish(state, detached)
            }
            OpsKind::UnTracked(prep) => {
                let raw: Vec<tch::Tensor> = inputs
                    .iter()
                    .map(|t| t.primitive.tensor.shallow_clone())
                    .collect();
                prep.finish(TchTensor::new(tch::no_grad(|| f(&raw))))
            }
        }
    }

    /// The float primitive of `Autodiff<LibTorch>`.
    type FloatTensorOf = burn::tensor::ops::FloatTensor<Ad>;

    /// `a` as the type it was checked to be.
    fn same<A: 'static, T: 'static>(a: A) -> T {
        cast(a).unwrap_or_else(|_| unreachable!("checked to be the same type"))
    }

    /// `x` as an `Autodiff<LibTorch>` tensor, if it is one and the fused ops are on.
    fn tracked<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<Ad, D>, Tensor<B, D>> {
        if super::enabled() { cast(x) } else { Err(x) }
    }

    /// `x` as a plain LibTorch tensor, if it is one and the fused ops are on.
    fn untracked<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<TchTensor, Tensor<B, D>> {
        if super::enabled() {
            cast::<_, Tensor<Plain, D>>(x).map(plain)
        } else {
            Err(x)
        }
    }

    fn ad<const D: usize>(t: Tensor<Ad, D>) -> FloatTensorOf {
        t.into_primitive().tensor()
    }

    fn from_ad<const D: usize>(t: FloatTensorOf) -> Tensor<Ad, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    fn plain<const D: usize>(t: Tensor<Plain, D>) -> TchTensor {
        t.into_primitive().tensor()
    }

    fn from_plain<const D: usize>(t: TchTensor) -> Tensor<Plain, D> {
        Tensor::from_primitive(TensorPrimitive::Float(t))
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn adamw_step<B: Backend, const D: usize>(
        tensors: AdamWTensors<B, D>,
        step: AdamWStep,
    ) -> Result<(Tensor<B, D>, Tensor<B, D>, Tensor<B, D>), AdamWTensors<B, D>> {
        if !super::enabled() || TypeId::of::<B>() != TypeId::of::<Plain>() {
            return Err(tensors);
        }
        // A tensor to write into: the storage itself when nothing else holds it, else a copy.
        let owned = |t: Tensor<B, D>| -> TchTensor {
            let t = plain(same::<_, Tensor<Plain, D>>(t));
            if t.can_mut() {
                t
            } else {
                TchTensor::new(t.tensor.g_mul_scalar(1.0))
            }
        };
        let AdamWStep {
            lr,
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            time,
        } = step;
        let (beta_1, beta_2, epsilon) = (f64::from(beta_1), f64::from(beta_2), f64::from(epsilon));
        let g = plain(same::<_, Tensor<Plain, D>>(tensors.grad));
        let mut p = owned(tensors.param);
        let (mut m, mut v) = match tensors.moments {
            Some((m, v)) => (owned(m), owned(v)),
            None => (
                TchTensor::new(g.tensor.zeros_like()),
                TchTensor::new(g.tensor.zeros_like()),
            ),
        };
        let bias_1 = 1.0 - beta_1.powi(time as i32);
        let bias_2_sqrt = (1.0 - beta_2.powi(time as i32)).sqrt();
        tch::no_grad(|| {
            // torch's single-tensor AdamW: m ← lerp(m, g, 1 − β₁), v ← β₂ v + (1 − β₂) g²,
            // p ← p (1 − lr λ) − (lr / c₁) m / (√v / √c₂ + ε), in an order that needs no
            // temporary but the denominator, which goes into the gradient's own storage when
            // nothing else holds it (the step consumes the gradient).
            let _ = m.tensor.lerp_(&g.tensor, 1.0 - beta_1);
            let _ = v.tensor.g_mul_scalar_(beta_2 / (1.0 - beta_2));
            let _ = v.tensor.addcmul_(&g.tensor, &g.tensor);
            let _ = v.tensor.g_mul_scalar_(1.0 - beta_2);
            if lr == 0.0 {
                return;
            }
            if weight_decay != 0.0 {
                let _ = p.tensor.g_mul_scalar_(1.0 - lr * f64::from(weight_decay));
            }
            // −(lr / c₁) / (√v / √c₂ + ε) = 1 / ((√v + ε √c₂) · (−c₁ / (lr √c₂))).
            let mut denom = if g.can_mut() {
                let _ = v.tensor.sqrt_out(&g.tensor);
                g.tensor.shallow_clone()
            } else {
                v.tensor.sqrt()
            };
            let _ = denom.g_add_scalar_(epsilon * bias_2_sqrt);
            let _ = denom.g_mul_scalar_(-bias_1 / (lr * bias_2_sqrt));
            let _ = p.tensor.addcdiv_(&m.tensor, &denom);
        });
        let out = |t: TchTensor| same::<_, Tensor<B, D>>(from_plain::<D>(t));
        Ok((out(p), out(m), out(v)))
    }

    pub(super) fn squared_sum<B: Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, 1>, Tensor<B, D>> {
        let x = untracked(x)?;
        let y = tch::no_grad(|| x.tensor.norm().square().reshape([1]));
        Ok(same::<_, Tensor<B, 1>>(from_plain::<1>(TchTensor::new(y))))
    }

    // Outside autodiff, burn-tch already runs layer norm and the softmaxes as torch's kernels;
    // Burn's `RmsNorm` is composed on every backend, so plain LibTorch gets torch's `rms_norm`.

    pub(super) fn layer_norm<B: Backend, const D: usize>(
        norm: &LayerNorm<B>,
        eps: f64,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = tracked(x)?;
        let [d] = norm.gamma.dims();
        let f =
            move |t: &[tch::Tensor]| t[0].layer_norm([d as i64], Some(&t[1]), t.get(2), eps, true);
        let gamma = ad(same::<_, Tensor<Ad, 1>>(norm.gamma.val()));
        let y = match &norm.beta {
            Some(beta) => torch_op([ad(x), gamma, ad(same::<_, Tensor<Ad, 1>>(beta.val()))], f),
            None => torch_op([ad(x), gamma], f),
        };
        Ok(same(from_ad::<D>(y)))
    }

    pub(super) fn rms_norm<B: Backend, const D: usize>(
        norm: &RmsNorm<B>,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let [d] = norm.gamma.dims();
        let eps = norm.epsilon;
        let x = match tracked(x) {
            Ok(x) => {
                let gamma = ad(same::<_, Tensor<Ad, 1>>(norm.gamma.val()));
                let y = torch_op([ad(x), gamma], move |t| {
                    t[0].rms_norm([d as i64], Some(&t[1]), eps)
                });
                return Ok(same(from_ad::<D>(y)));
            }
            Err(x) => x,
        };
        let x = untracked(x)?;
        let gamma = plain(same::<_, Tensor<Plain, 1>>(norm.gamma.val()));
        let y = x.tensor.rms_norm([d as i64], Some(&gamma.tensor), eps);
        Ok(same(from_plain::<D>(TchTensor::new(y))))
    }

    pub(super) fn softmax<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        dim: usize,
        log: bool,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = tracked(x)?;
        let y = torch_op([ad(x)], move |t| {
            if log {
                t[0].log_softmax(dim as i64, None::<tch::Kind>)
            } else {
                t[0].softmax(dim as i64, None::<tch::Kind>)
            }
        });
        Ok(same(from_ad::<D>(y)))
    }

    pub(super) fn silu<B: Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = match untracked(x) {
            Ok(x) => return Ok(same(from_plain::<D>(TchTensor::new(x.tensor.silu())))),
            Err(x) => x,
        };
        let x = tracked(x)?;
        let y = torch_op([ad(x)], |t| t[0].silu());
        Ok(same(from_ad::<D>(y)))
    }
}
