//! Load SmolLM2 from its GGUF file, answer a question greedily, count how often each FFN neuron
//! fires on a sentence, and see what silencing the most active neurons of one layer does to the
//! perplexity and to the answer.
//!
//! ```sh
//! bash scripts/fetch-artefacts.sh
//! cargo run --release -p models --example decoder_neurons -- .cache/artefacts/smollm2-135m-instruct
//! ```

use burn::backend::NdArray;
use models::{
    DecoderCheckpoint, ForwardContext, ReplaceWith, generate_greedy, perplexity, token_ids,
};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: decoder_neurons GGUF_FILE_OR_CHECKPOINT_DIR")?;
    let device = Default::default();
    let checkpoint = DecoderCheckpoint::open(&path)?;
    let tokenizer = checkpoint.tokenizer.clone().ok_or("no tokenizer")?;
    let (model, _) = checkpoint.load::<B>(&device)?;
    let (layers, width) = (model.num_layers(), model.intermediate_size());

    let prompt = tokenizer.apply_chat_template("What is the capital of France?")?;
    let prompt = tokenizer.encode(&prompt)?;
    let answer = |ctx: &mut ForwardContext<B>| -> Result<String, models::ModelError> {
        let out = generate_greedy(&model, &prompt, 20, &tokenizer.eos_ids, ctx, &device);
        tokenizer.decode(&out)
    };
    println!("answer: {}", answer(&mut ForwardContext::eval())?);

    // Count positive gate pre-activations per neuron over a sentence (no activations stored).
    let text = "The old stone bridge in the centre of the town is still used every day.";
    let ids = tokenizer.encode(text)?;
    let input = token_ids::<B, _>(&[&ids], &device);
    let mut ctx = ForwardContext::eval().counting();
    model.forward(input, None, &mut ctx);
    let stats = ctx.gate_statistics.as_ref().expect("counting").to_host();
    let (counts, tokens) = (stats.positive, stats.tokens);
    let layer = layers / 2;
    let mut order: Vec<usize> = (0..width).collect();
    order.sort_by(|&a, &b| counts[layer][b].total_cmp(&counts[layer][a]));
    let top: Vec<usize> = order[..width / 10].to_vec();
    println!(
        "layer {layer}: {} of {width} neurons fire on every one of the {tokens} tokens",
        counts[layer]
            .iter()
            .filter(|&&c| c as f64 == tokens)
            .count()
    );

    // Silence the 10% most active neurons of that layer (post-SiLU, every position).
    let clean = perplexity(
        &model,
        &ids,
        ids.len(),
        &mut ForwardContext::eval(),
        &device,
    )?;
    let mut ablated = ForwardContext::eval();
    ablated.replace_neurons(layer, width, &top, &ReplaceWith::Zero, &device);
    let after = perplexity(&model, &ids, ids.len(), &mut ablated, &device)?;
    println!(
        "perplexity {:.2} -> {:.2} with {} neurons of layer {layer} set to 0",
        clean.perplexity,
        after.perplexity,
        top.len()
    );
    println!("answer with them silenced: {}", answer(&mut ablated)?);
    Ok(())
}
