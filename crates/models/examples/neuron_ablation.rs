//! Load an HF encoder, embed two sentences, and see how ablating FFN neurons moves them.
//!
//! ```sh
//! bash scripts/fetch-artefacts.sh
//! cargo run --release -p models --example neuron_ablation -- .cache/artefacts/all-MiniLM-L6-v2
//! ```

use burn::backend::NdArray;
use burn::prelude::*;
use models::{Checkpoint, ForwardContext, TextTokenizer, load_bare_encoder, mean_pool};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: neuron_ablation CHECKPOINT_DIR")?;
    let device = Default::default();
    let checkpoint = Checkpoint::open(&dir)?;
    let tokenizer = TextTokenizer::from_dir(&dir, &checkpoint.config)?;
    let width = checkpoint.config.intermediate_size;
    let (model, _) = load_bare_encoder::<B>(checkpoint, &device)?;
    let input = tokenizer
        .encode_texts(&["A man is eating food.", "A man is eating a piece of bread."])?
        .to_input::<B>(&device);

    let cosine = |ctx: &mut ForwardContext<B>| {
        let e = mean_pool(&model.forward(&input, ctx), &input.attention_mask);
        let [a, b] = [0, 1].map(|i| e.clone().slice([i..i + 1, 0..e.dims()[1]]));
        let dot = (a.clone() * b.clone()).sum().into_scalar();
        let norms = (a.powi_scalar(2).sum().sqrt() * b.powi_scalar(2).sum().sqrt()).into_scalar();
        dot / norms
    };
    println!(
        "full model: cos = {:.4}",
        cosine(&mut ForwardContext::eval())
    );
    for fraction in [0.1, 0.3, 0.5] {
        // Ablate the first `fraction` of the FFN neurons in every layer.
        let keep: Vec<f32> = (0..width)
            .map(|j| {
                if (j as f64) < fraction * width as f64 {
                    0.0
                } else {
                    1.0
                }
            })
            .collect();
        let mut ctx = ForwardContext::eval().recording();
        for layer_idx in 0..model.num_layers() {
            ctx.set_neuron_mask(layer_idx, Tensor::from_floats(keep.as_slice(), &device));
        }
        let cos = cosine(&mut ctx);
        let mean_act = ctx.ffn_activations[0].clone().abs().mean().into_scalar();
        println!(
            "{:>3.0}% of neurons ablated: cos = {cos:.4} (mean |activation| of layer 0: {mean_act:.4})",
            fraction * 100.0
        );
    }
    Ok(())
}
