//! Parity on a CUDA GPU: the tiny BERT fixture and MiniLM within 1e-4 of `transformers`.
//! Compiled only with `--features cuda`; run on a machine with an NVIDIA GPU.

use burn::backend::Cuda;
use burn::backend::cuda::CudaDevice;
use burn::prelude::*;
use models::{Checkpoint, EncoderInput, ForwardContext, SequenceClassifier};

use crate::util::*;

fn to_cpu<const D: usize>(t: Tensor<Cuda, D>) -> Tensor<B, D> {
    Tensor::from_data(t.into_data(), &Default::default())
}

#[test]
fn bert_fixture_matches_transformers_on_cuda() {
    let device = CudaDevice::new(0);
    let dir = fixture("encoders/bert");
    let expected = read_json(&dir.join("expected.json"));
    let (model, _) =
        SequenceClassifier::<Cuda>::load(Checkpoint::open(&dir).unwrap(), 3, None, 0, &device)
            .unwrap();
    let ints = |key: &str| {
        let t = int_tensor(&expected[key], &Default::default());
        Tensor::<Cuda, 2, Int>::from_data(t.into_data(), &device)
    };
    let input = EncoderInput {
        input_ids: ints("input_ids"),
        attention_mask: ints("attention_mask").float(),
        token_type_ids: ints("token_type_ids"),
        global_attention_mask: None,
    };
    let logits = model.forward(&input, &mut ForwardContext::eval());
    assert_close("cuda logits", to_cpu(logits), &expected["logits"], 1e-4);
}

#[test]
fn minilm_matches_transformers_on_cuda() {
    let (embeddings, _, _, reference) = minilm_reference_run::<Cuda>(&CudaDevice::new(0));
    assert_close(
        "cuda MiniLM",
        to_cpu(embeddings),
        &reference["embeddings"],
        1e-4,
    );
}
