//! Neuron-specific LoRA on a decoder classifier, saved as a PEFT adapter folder that
//! `PeftModel.from_pretrained` opens, and read back.
//!
//! ```sh
//! cargo run -p models --example peft_adapter -- tests/fixtures/decoders/tiny-llama /tmp/adapter
//! python tests/fixtures/lora/check_peft_folder.py /tmp/adapter   # needs torch, transformers, peft
//! ```
//!
//! The adapters' `B` is drawn at random instead of trained (a fresh `B` is zero, which would make
//! any comparison pass); the folder also gets `logits.json` (the ids and this crate's logits)
//! for the check script.

use burn::backend::NdArray;
use burn::module::Param;
use burn::prelude::*;
use models::{
    DecoderCheckpoint, DecoderClassifier, ForwardContext, LoraConfig, LoraInit, PeftConfig,
    PeftTask, TokenPosition, load_peft, save_peft, token_ids,
};
use rand::{Rng, SeedableRng};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (model_dir, folder) = match (args.next(), args.next()) {
        (Some(m), Some(f)) => (m, std::path::PathBuf::from(f)),
        _ => return Err("usage: peft_adapter MODEL_DIR OUTPUT_FOLDER".into()),
    };
    let device = Default::default();
    let load = || -> Result<_, models::ModelError> {
        Ok(DecoderCheckpoint::open(&model_dir)?.load::<B>(&device)?.0)
    };
    let model = load()?;

    // LoRA on q_proj and v_proj, and on gate_proj restricted to two neurons of layer 0.
    let neurons = ablation::NeuronSet::from_pairs([(0, 2), (0, 7)]);
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        init: LoraInit::Normal { std: 0.01 },
    };
    let mut model = model.with_lora(
        &["q_proj", "v_proj", "gate_proj"],
        &config,
        Some(&neurons),
        0,
        &device,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for layer in &mut model.layers {
        for slot in [
            &mut layer.lora.q_proj,
            &mut layer.lora.v_proj,
            &mut layer.lora.gate_proj,
        ] {
            let a = slot.as_mut().expect("targeted");
            let [r, d_out] = a.b.dims();
            let b: Vec<f32> = (0..r * d_out)
                .map(|_| rng.random_range(-0.2..0.2))
                .collect();
            a.b = Param::from_tensor(Tensor::from_data(TensorData::new(b, [r, d_out]), &device));
        }
    }
    let hidden = model.hidden_size();
    // HF's `score` has no bias (a `nn.Linear` head's bias has no slot in
    // `LlamaForSequenceClassification`, and PEFT would leave it out).
    let mut head = models::params::torch_linear::<B>(hidden, 3, &mut rng, &device);
    head.bias = None;
    let classifier = DecoderClassifier::new(model, head, TokenPosition::LastNonPadding);

    // Save: adapter_config.json + adapter_model.safetensors (the masked B, and the head).
    let peft = PeftConfig::of(&classifier.model, PeftTask::SeqCls, Some(&model_dir), 0.0)?;
    save_peft(&classifier.model, Some(&classifier.score), &peft, &folder)?;
    println!("wrote {}", folder.display());

    // This crate's logits on two rows without padding, for the check script.
    let ids: Vec<Vec<u32>> = (0..2)
        .map(|r| {
            (0..10)
                .map(|t| 3 + ((r * 29 + t * 11) % 90) as u32)
                .collect()
        })
        .collect();
    let logits = |c: &DecoderClassifier<B>| -> Vec<f32> {
        let mask = Tensor::ones([2, 10], &device);
        c.forward(
            token_ids::<B, _>(&ids, &device),
            mask,
            &mut ForwardContext::eval(),
        )
        .into_data()
        .into_vec()
        .expect("f32")
    };
    let ours = logits(&classifier);
    let json = serde_json::json!({"input_ids": ids, "logits": ours.chunks(3).collect::<Vec<_>>()});
    std::fs::write(folder.join("logits.json"), json.to_string())?;

    // Read back onto a fresh decoder, with the neuron set so the mask is restored.
    let back = load_peft(load()?, &folder, Some(&neurons), &device)?;
    let again = DecoderClassifier::new(
        back.model,
        back.head.ok_or("no head")?,
        TokenPosition::LastNonPadding,
    );
    let worst = ours
        .iter()
        .zip(logits(&again))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("read back: max |logit difference| = {worst:.2e}");
    Ok(())
}
