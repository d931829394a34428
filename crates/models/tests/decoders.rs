//! Llama and Mistral decoders against tiny randomly initialised HF models
//! (tests/fixtures/decoders/make_decoder_fixtures.py): logits, recorded FFN activations, neuron
//! replacements, the classification head, greedy generation, the KV cache, counting, saving.

use burn::prelude::*;
use models::{
    DecoderCheckpoint, ForwardContext, KvCache, LlamaModel, ReplaceWith, ScoreHead, TensorMap,
    TokenPosition, generate_greedy, save_llama,
};
use serde_json::Value;

use crate::util::{B, assert_close, fixture, flat, int_tensor, read_json, values};

const TOL: f32 = 1e-4;

fn expected(name: &str) -> Value {
    read_json(&fixture("decoders/expected.json"))[name].clone()
}

fn load(name: &str) -> LlamaModel<B> {
    let checkpoint = DecoderCheckpoint::open(fixture(&format!("decoders/{name}"))).unwrap();
    checkpoint.load::<B>(&Default::default()).unwrap().0
}

fn mask_tensor(e: &Value) -> Tensor<B, 2> {
    int_tensor(&e["attention_mask"], &Default::default()).float()
}

/// Compare `[batch, seq, width]` values only at real (mask = 1) positions.
fn assert_close_masked(what: &str, actual: Tensor<B, 3>, expected: &Value, mask: &Value, tol: f32) {
    let (got, shape) = values(actual);
    let (want, want_shape) = flat(expected);
    assert_eq!(shape, want_shape, "{what}: shape");
    let (m, _) = flat(mask);
    let width = shape[2];
    let mut worst = (0, 0f32);
    for (pos, &keep) in m.iter().enumerate() {
        if keep == 0.0 {
            continue;
        }
        for j in 0..width {
            let i = pos * width + j;
            let d = (got[i] - want[i]).abs();
            if d > worst.1 {
                worst = (i, d);
            }
        }
    }
    assert!(
        worst.1 <= tol,
        "{what}: element {} differs by {:e} (got {}, expected {})",
        worst.0,
        worst.1,
        got[worst.0],
        want[worst.0]
    );
}

fn layer_of(t: &[Tensor<B, 3>], layer: usize) -> Tensor<B, 3> {
    t[layer].clone()
}

#[test]
fn logits_and_ffn_activations_match_transformers() {
    for name in ["tiny-llama", "tiny-mistral"] {
        let e = expected(name);
        let model = load(name);
        let ids = int_tensor(&e["input_ids"], &Default::default());
        let mut ctx = ForwardContext::eval().recording().recording_gate();
        let logits = model.forward(ids, Some(mask_tensor(&e)), &mut ctx);
        assert_close_masked(
            &format!("{name} logits"),
            logits,
            &e["logits"],
            &e["attention_mask"],
            TOL,
        );
        assert_eq!(ctx.gate_preactivations.len(), 2);
        assert_close_masked(
            &format!("{name} gate layer 1"),
            layer_of(&ctx.gate_preactivations, 1),
            &e["gate_layer1"],
            &e["attention_mask"],
            TOL,
        );
        assert_close_masked(
            &format!("{name} silu(gate) layer 1"),
            layer_of(&ctx.ffn_activations, 1),
            &e["act_layer1"],
            &e["attention_mask"],
            TOL,
        );
    }
}

/// The fixture's interventions: layer 0 neurons 1 and 4 set to zero, layer 1 neurons 2 and 7 to
/// 0.3 and -0.2.
fn intervened_context(model: &LlamaModel<B>) -> ForwardContext<B> {
    let device = Default::default();
    let width = model.intermediate_size();
    let mut ctx = ForwardContext::eval().recording();
    ctx.replace_neurons(0, width, &[1, 4], &ReplaceWith::Zero, &device);
    ctx.replace_neurons(
        1,
        width,
        &[2, 7],
        &ReplaceWith::PerNeuron(vec![0.3, -0.2]),
        &device,
    );
    ctx
}

#[test]
fn neuron_replacements_match_hooks_in_transformers() {
    for name in ["tiny-llama", "tiny-mistral"] {
        let e = expected(name);
        let model = load(name);
        let ids = int_tensor(&e["input_ids"], &Default::default());
        let mut ctx = intervened_context(&model);
        let logits = model.forward(ids.clone(), Some(mask_tensor(&e)), &mut ctx);
        assert_close_masked(
            &format!("{name} intervened logits"),
            logits.clone(),
            &e["intervened_logits"],
            &e["attention_mask"],
            TOL,
        );
        assert_close_masked(
            &format!("{name} intervened silu(gate) layer 1"),
            layer_of(&ctx.ffn_activations, 1),
            &e["intervened_act_layer1"],
            &e["attention_mask"],
            TOL,
        );
        // A constant replacement is the same as per-neuron values that are all equal.
        let device = Default::default();
        let width = model.intermediate_size();
        let mut a = ForwardContext::eval();
        a.replace_neurons(1, width, &[3, 5], &ReplaceWith::Constant(0.7), &device);
        let mut b = ForwardContext::eval();
        b.replace_neurons(
            1,
            width,
            &[3, 5],
            &ReplaceWith::PerNeuron(vec![0.7, 0.7]),
            &device,
        );
        let la = model.forward(ids.clone(), Some(mask_tensor(&e)), &mut a);
        let lb = model.forward(ids.clone(), Some(mask_tensor(&e)), &mut b);
        assert_eq!(values(la.clone()).0, values(lb).0);
        let clean = model.forward(ids, Some(mask_tensor(&e)), &mut ForwardContext::eval());
        assert_ne!(
            values(la).0,
            values(clean).0,
            "{name}: the replacement changed nothing"
        );
    }
}

#[test]
fn greedy_generation_matches_transformers_generate() {
    for name in ["tiny-llama", "tiny-mistral"] {
        let e = expected(name);
        let model = load(name);
        let (prompt, _) = flat(&e["generate_prompt"]);
        let prompt: Vec<u32> = prompt.iter().map(|&v| v as u32).collect();
        let (want, _) = flat(&e["generated"]);
        let want: Vec<u32> = want.iter().map(|&v| v as u32).collect();
        let new = generate_greedy(
            &model,
            &prompt,
            8,
            &[2],
            &mut ForwardContext::eval(),
            &Default::default(),
        );
        let mut got = prompt.clone();
        got.extend(&new);
        assert_eq!(got, want, "{name}: generated ids");
    }
}

#[test]
fn the_kv_cache_gives_the_logits_of_a_full_pass() {
    // Mistral's window (6) is shorter than the sequence, so the cache must respect it too.
    for name in ["tiny-llama", "tiny-mistral"] {
        let e = expected(name);
        let model = load(name);
        let device = Default::default();
        let ids = int_tensor(&e["input_ids"], &device);
        let [_, seq] = ids.dims();
        let row = ids.slice([0..1, 0..seq]);
        let full = model.forward(row.clone(), None, &mut ForwardContext::eval());
        let mut cache = KvCache::new();
        let mut parts = vec![model.forward_cached(
            row.clone().slice([0..1, 0..4]),
            None,
            &mut cache,
            &mut ForwardContext::eval(),
        )];
        for t in 4..seq {
            parts.push(model.forward_cached(
                row.clone().slice([0..1, t..t + 1]),
                None,
                &mut cache,
                &mut ForwardContext::eval(),
            ));
        }
        assert_eq!(cache.len(), seq);
        let stepwise = Tensor::cat(parts, 1);
        let (a, _) = values(full);
        let (b, _) = values(stepwise);
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < 1e-5,
            "{name}: cached and full logits differ by {diff}"
        );
    }
}

#[test]
fn classifier_reads_the_last_non_padding_token_like_transformers() {
    let e = expected("tiny-llama");
    let device = Default::default();
    let mut checkpoint = DecoderCheckpoint::open(fixture("decoders/tiny-llama")).unwrap();
    let (w, shape) = flat(&e["classifier_score_weight"]);
    checkpoint
        .tensors
        .insert("score.weight", models::HostTensor::new(shape, w));
    let (clf, report) = checkpoint
        .load_classifier::<B>(3, TokenPosition::LastNonPadding, ScoreHead::Hf, 0, &device)
        .unwrap();
    assert_eq!(report.dropped, vec!["lm_head.weight".to_string()]);
    assert!(report.initialised.is_empty());
    let ids = int_tensor(&e["input_ids"], &device);
    let logits = clf.forward(ids, mask_tensor(&e), &mut ForwardContext::eval());
    assert_close("classifier logits", logits, &e["classifier_logits"], TOL);
}

#[test]
fn a_torch_linear_head_adds_its_bias_and_is_drawn_as_pytorch_draws_one() {
    let e = expected("tiny-llama");
    let device = Default::default();
    let with_score = |bias: Option<Vec<f32>>| {
        let mut checkpoint = DecoderCheckpoint::open(fixture("decoders/tiny-llama")).unwrap();
        let (w, shape) = flat(&e["classifier_score_weight"]);
        checkpoint
            .tensors
            .insert("score.weight", models::HostTensor::new(shape, w));
        if let Some(b) = bias {
            checkpoint
                .tensors
                .insert("score.bias", models::HostTensor::new(vec![3], b));
        }
        checkpoint.load_classifier::<B>(
            3,
            TokenPosition::LastNonPadding,
            ScoreHead::TorchLinear,
            0,
            &device,
        )
    };
    // A saved bias is read and added to HF's logits (an affine layer: W h + b).
    let bias = vec![0.5f32, -1.25, 2.0];
    let (clf, _) = with_score(Some(bias.clone())).unwrap();
    let ids = int_tensor(&e["input_ids"], &device);
    let logits = clf.forward(ids, mask_tensor(&e), &mut ForwardContext::eval());
    let (hf, shape) = flat(&e["classifier_logits"]);
    let want: Vec<f32> = hf
        .iter()
        .enumerate()
        .map(|(i, v)| v + bias[i % 3])
        .collect();
    let got = logits.into_data().to_vec::<f32>().unwrap();
    assert_eq!(shape, vec![got.len() / 3, 3]);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < TOL, "{g} vs {w}");
    }
    // Strict: a head with a bias needs the checkpoint's bias.
    let err = with_score(None).unwrap_err().to_string();
    assert!(err.contains("score.bias"), "{err}");
    // A fresh head: nn.Linear's default, uniform in ±1/√hidden for weight and bias.
    let checkpoint = DecoderCheckpoint::open(fixture("decoders/tiny-llama")).unwrap();
    let hidden = checkpoint.config.hidden_size;
    let (clf, report) = checkpoint
        .load_classifier::<B>(3, TokenPosition::Last, ScoreHead::TorchLinear, 7, &device)
        .unwrap();
    assert_eq!(report.initialised, vec!["score".to_string()]);
    let bound = 1.0 / (hidden as f64).sqrt();
    let w: Vec<f64> = clf
        .score
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let b = clf
        .score
        .bias
        .as_ref()
        .expect("a bias")
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!((w.len(), b.len()), (3 * hidden, 3));
    assert!(
        w.iter()
            .chain(b.iter().map(|x| f64::from(*x)).collect::<Vec<_>>().iter())
            .all(|x| x.abs() <= bound)
    );
    // A uniform in ±bound has standard deviation bound/√3 (N(0, 0.02²) would have 0.02).
    let sd = (w.iter().map(|x| x * x).sum::<f64>() / w.len() as f64).sqrt();
    assert!(
        (sd / (bound / 3f64.sqrt()) - 1.0).abs() < 0.15,
        "sd {sd}, bound {bound}"
    );
}

#[test]
fn gate_statistics_equal_brute_force_over_real_tokens() {
    let e = expected("tiny-mistral");
    let model = load("tiny-mistral");
    let ids = int_tensor(&e["input_ids"], &Default::default());
    let mut ctx = ForwardContext::eval().recording_gate().counting();
    // Two passes: counts accumulate.
    for _ in 0..2 {
        model.forward(ids.clone(), Some(mask_tensor(&e)), &mut ctx);
    }
    let stats = ctx.gate_statistics.as_ref().unwrap().to_host();
    let (counts, tokens) = (stats.positive.clone(), stats.tokens);
    let (mask, _) = flat(&e["attention_mask"]);
    let real: f32 = mask.iter().sum();
    assert_eq!(tokens, 2.0 * real as f64);
    for layer in 0..2 {
        let (gate, shape) = values(ctx.gate_preactivations[layer].clone());
        let width = shape[2];
        let mut brute = vec![0f32; width];
        for (pos, &m) in mask.iter().enumerate() {
            for j in 0..width {
                if m == 1.0 && gate[pos * width + j] > 0.0 {
                    brute[j] += 2.0;
                }
            }
        }
        assert_eq!(counts[layer], brute, "layer {layer}");
        // Sums and sums of squares over the same real tokens.
        let (mut sum, mut sum_sq) = (vec![0f64; width], vec![0f64; width]);
        for (pos, &m) in mask.iter().enumerate() {
            for j in 0..width {
                if m == 1.0 {
                    let g = gate[pos * width + j] as f64;
                    sum[j] += 2.0 * g;
                    sum_sq[j] += 2.0 * g * g;
                }
            }
        }
        for j in 0..width {
            assert!(
                (stats.sum[layer][j] as f64 - sum[j]).abs() < 1e-4,
                "sum {layer} {j}"
            );
            assert!((stats.sum_sq[layer][j] as f64 - sum_sq[j]).abs() < 1e-4 * sum_sq[j].max(1.0));
        }
        assert!(brute.iter().any(|&c| c > 0.0) && brute.iter().any(|&c| c < 2.0 * real));
    }
}

#[test]
fn a_saved_decoder_loads_back_with_the_same_logits() {
    for name in ["tiny-llama", "tiny-mistral"] {
        let e = expected(name);
        let checkpoint = DecoderCheckpoint::open(fixture(&format!("decoders/{name}"))).unwrap();
        let config = checkpoint.config.clone();
        let (model, _) = checkpoint.load::<B>(&Default::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut map = TensorMap::new(dir.path().join("model.safetensors"));
        save_llama(&model, &mut map);
        map.write_safetensors(&dir.path().join("model.safetensors"))
            .unwrap();
        std::fs::write(dir.path().join("config.json"), config.to_json()).unwrap();
        let reloaded = DecoderCheckpoint::open(dir.path()).unwrap();
        assert_eq!(reloaded.config, config);
        let (reloaded, _) = reloaded.load::<B>(&Default::default()).unwrap();
        let ids = int_tensor(&e["input_ids"], &Default::default());
        let a = model.forward(ids.clone(), None, &mut ForwardContext::eval());
        let b = reloaded.forward(ids, None, &mut ForwardContext::eval());
        assert_eq!(values(a).0, values(b).0, "{name}");
    }
}

#[test]
fn bad_decoder_checkpoints_are_named_errors() {
    let tmp = crate::util::copy_fixture("decoders/tiny-llama");
    let config_path = tmp.path().join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let set = |edit: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(&original).unwrap();
        edit(&mut v);
        std::fs::write(&config_path, v.to_string()).unwrap();
        DecoderCheckpoint::open(tmp.path())
            .and_then(|c| c.load::<B>(&Default::default()))
            .unwrap_err()
            .to_string()
    };
    let err = set(&|v| v["model_type"] = "gpt2".into());
    assert!(
        err.contains("gpt2") && err.contains("llama, mistral"),
        "{err}"
    );
    let err = set(&|v| v["num_key_value_heads"] = 3.into());
    assert!(
        err.contains("num_key_value_heads") && err.contains("do not divide"),
        "{err}"
    );
    let err = set(&|v| v["rope_parameters"]["rope_type"] = "yarn".into());
    assert!(
        err.contains("rope_parameters.rope_type") && err.contains("yarn"),
        "{err}"
    );
    let err = set(&|v| v["intermediate_size"] = 40.into());
    assert!(
        err.contains("model.layers.0.mlp.gate_proj.weight") && err.contains("[40, 32]"),
        "{err}"
    );
    let err = set(&|v| v["hidden_act"] = "gelu".into());
    assert!(err.contains("hidden_act") && err.contains("silu"), "{err}");
}
