//! Comparative steps on a tiny BERT: batched and sequential views give the same losses and
//! gradients, with dropout and crop views mixed as the official code mixes them.

use ablation::{DropoutMasks, ViewSchedule};
use burn::backend::Autodiff;
use burn::prelude::*;
use losses::{ComparativeLoss, DummyTarget, cross_entropy};
use models::{
    Checkpoint, EncoderInput, ForwardContext, SequenceClassifier, ViewExecution, view_losses,
};

use crate::util::{B, fixture};

type Ad = Autodiff<B>;

fn ids(rows: &[[i64; 9]], device: &Device<Ad>) -> Tensor<Ad, 2, Int> {
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), 9]), device)
}

fn mask(rows: &[[f32; 9]], device: &Device<Ad>) -> Tensor<Ad, 2> {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), 9]), device)
}

/// The full input and a cropped view of it (tail tokens removed), padded to one length.
fn input_views(device: &Device<Ad>) -> Vec<EncoderInput<Ad>> {
    let input_ids = ids(
        &[
            [2, 15, 27, 33, 48, 51, 60, 71, 3],
            [2, 88, 12, 90, 3, 0, 0, 0, 0],
            [2, 40, 41, 42, 43, 44, 3, 0, 0],
        ],
        device,
    );
    let cropped_ids = ids(
        &[
            [2, 15, 27, 33, 3, 0, 0, 0, 0],
            [2, 88, 12, 3, 0, 0, 0, 0, 0],
            [2, 40, 41, 3, 0, 0, 0, 0, 0],
        ],
        device,
    );
    let full_mask = mask(
        &[
            [1., 1., 1., 1., 1., 1., 1., 1., 1.],
            [1., 1., 1., 1., 1., 0., 0., 0., 0.],
            [1., 1., 1., 1., 1., 1., 1., 0., 0.],
        ],
        device,
    );
    let cropped_mask = mask(
        &[
            [1., 1., 1., 1., 1., 0., 0., 0., 0.],
            [1., 1., 1., 1., 0., 0., 0., 0., 0.],
            [1., 1., 1., 1., 0., 0., 0., 0., 0.],
        ],
        device,
    );
    let zeros = || Tensor::<Ad, 2, Int>::zeros([3, 9], device);
    vec![
        EncoderInput {
            input_ids,
            attention_mask: full_mask,
            token_type_ids: zeros(),
            global_attention_mask: None,
        },
        EncoderInput {
            input_ids: cropped_ids,
            attention_mask: cropped_mask,
            token_type_ids: zeros(),
            global_attention_mask: None,
        },
    ]
}

/// One comparative step: the loss value, the per-view losses and two gradients.
fn step(
    model: &SequenceClassifier<Ad>,
    schedule: ViewSchedule,
    execution: ViewExecution,
) -> (f32, Vec<f32>, Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let inputs = input_views(&device);
    let labels = Tensor::<Ad, 1, Int>::from_data(TensorData::new(vec![1i64, 0, 1], [3]), &device);
    let mut masks = DropoutMasks::new(42);
    masks.next_step();
    let mut ctx = ForwardContext::with_dropout(masks);
    let per_view = view_losses(
        &schedule.views(),
        &inputs,
        execution,
        &mut ctx,
        |input, ctx, n_views| {
            let logits = model.forward(input, ctx);
            cross_entropy(logits, labels.clone().repeat_dim(0, n_views)).unsqueeze_dim(1)
        },
    );
    let [b, v, _] = per_view.dims();
    let per_view = per_view.reshape([b, v]);
    let loss = ComparativeLoss::new(DummyTarget::Best).forward(per_view.clone());
    let grads = loss.backward();
    let grad = |t: &Tensor<Ad, 2>| -> Vec<f32> {
        t.grad(&grads)
            .expect("a gradient")
            .to_data()
            .to_vec()
            .unwrap()
    };
    let query = &model.encoder.encoder.layer[0]
        .attention
        .self_attn
        .query
        .weight;
    let head = &model.head.out_proj.weight;
    (
        loss.into_scalar(),
        per_view.to_data().to_vec().unwrap(),
        grad(&query.val()),
        grad(&head.val()),
    )
}

fn assert_all_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
        .fold(0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: batched and sequential differ by {worst}"
    );
}

#[test]
fn batched_and_sequential_views_give_the_same_losses_and_gradients() {
    let checkpoint = Checkpoint::open(fixture("encoders/bert")).unwrap();
    let labels = checkpoint.config.labels.len();
    let (model, _) =
        SequenceClassifier::<Ad>::load(checkpoint, labels, None, 0, &Default::default()).unwrap();
    for schedule in [ViewSchedule::new(2, 0), ViewSchedule::new(2, 1)] {
        let batched = step(&model, schedule, ViewExecution::Batched);
        let sequential = step(&model, schedule, ViewExecution::Sequential);
        let what = format!("{schedule:?}");
        assert!(
            (batched.0 - sequential.0).abs() < 1e-5,
            "{what}: loss {} vs {}",
            batched.0,
            sequential.0
        );
        assert_all_close(
            &format!("{what} view losses"),
            &batched.1,
            &sequential.1,
            1e-5,
        );
        assert_all_close(
            &format!("{what} query grad"),
            &batched.2,
            &sequential.2,
            1e-4,
        );
        assert_all_close(
            &format!("{what} head grad"),
            &batched.3,
            &sequential.3,
            1e-4,
        );
        // The views differ (dropout and crops act), and the loss has a gradient.
        let losses = &batched.1;
        assert!(
            losses[0] != losses[1] && losses[1] != losses[2],
            "{losses:?}"
        );
        assert!(batched.3.iter().any(|g| g.abs() > 0.0));
    }
}
