//! The real SmolLM2-135M-Instruct (fetched GGUF) against transformers' loading of the same file
//! (tests/fixtures/decoders/make_smollm2_reference.py): tokens, logits, perplexity, the chat
//! template and greedy generation.

use models::{
    DecoderCheckpoint, DecoderTokenizer, ForwardContext, LlamaModel, generate_greedy, perplexity,
};
use serde_json::Value;

use crate::util::{B, artefact, fixture, flat, read_json};

fn reference() -> Value {
    read_json(&fixture("decoders/smollm2_reference.json"))
}

fn smollm2() -> (LlamaModel<B>, DecoderTokenizer) {
    let checkpoint = DecoderCheckpoint::open(artefact("smollm2-135m-instruct")).unwrap();
    assert_eq!(checkpoint.config.num_key_value_heads, 3);
    assert!(checkpoint.config.tie_word_embeddings);
    let tokenizer = checkpoint.tokenizer.clone().unwrap();
    let (model, report) = checkpoint.load::<B>(&Default::default()).unwrap();
    assert!(report.dropped.is_empty() && report.initialised.is_empty());
    (model, tokenizer)
}

fn ids(v: &Value) -> Vec<u32> {
    flat(v).0.iter().map(|&x| x as u32).collect()
}

#[test]
fn smollm2_perplexity_logits_chat_and_generation_match_transformers() {
    let r = reference();
    let (model, tokenizer) = smollm2();
    let device = Default::default();

    let text = std::fs::read_to_string(fixture("decoders/english_paragraph.txt")).unwrap();
    let tokens = tokenizer.encode(&text).unwrap();
    assert_eq!(tokens, ids(&r["paragraph_ids"]));

    let input = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(
            tokens[..3].iter().map(|&t| t as i64).collect::<Vec<_>>(),
            [1, 3],
        ),
        &device,
    );
    let logits = model.forward(input, None, &mut ForwardContext::eval());
    let first = logits.slice([0..1, 0..3, 0..8]).reshape([3, 8]);
    crate::util::assert_close("first logits", first, &r["first_logits"], 2e-3);

    let ppl = perplexity(
        &model,
        &tokens,
        model.max_positions(),
        &mut ForwardContext::eval(),
        &device,
    )
    .unwrap();
    assert_eq!(ppl.n_tokens, r["n_tokens"].as_u64().unwrap() as usize);
    let want = r["perplexity"].as_f64().unwrap();
    let rel = (ppl.perplexity - want).abs() / want;
    assert!(
        rel < 1e-3,
        "perplexity {} vs transformers {want} (relative {rel:e})",
        ppl.perplexity
    );
    // The batched NLL of the neuron studies agrees with transformers too.
    let (nll, n) = models::windows_nll(
        &model,
        std::slice::from_ref(&tokens),
        &mut ForwardContext::eval(),
        &device,
    );
    let want_nll = r["mean_nll"].as_f64().unwrap();
    assert_eq!(n, tokens.len() - 1);
    assert!(
        (nll / n as f64 - want_nll).abs() < 1e-4,
        "{} vs {want_nll}",
        nll / n as f64
    );
    // Windows of 32 tokens predict every token once, each with a shorter context: a different
    // (higher) perplexity over the same number of tokens.
    let windowed = perplexity(&model, &tokens, 32, &mut ForwardContext::eval(), &device).unwrap();
    assert_eq!(windowed.n_tokens, ppl.n_tokens);
    assert!(windowed.mean_nll > ppl.mean_nll, "{windowed:?} vs {ppl:?}");

    let chat = tokenizer
        .apply_chat_template("What is the capital of France?")
        .unwrap();
    assert_eq!(chat, r["chat_prompt"].as_str().unwrap());

    let prompt =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let prompt_ids = tokenizer.encode(prompt).unwrap();
    assert_eq!(prompt_ids, ids(&r["prompt_ids"]));
    let out = generate_greedy(
        &model,
        &prompt_ids,
        20,
        &tokenizer.eos_ids,
        &mut ForwardContext::eval(),
        &device,
    );
    assert_eq!(out, ids(&r["generated_ids"]));
    assert_eq!(
        tokenizer.decode(&out).unwrap(),
        "The capital of France is Paris."
    );
}
