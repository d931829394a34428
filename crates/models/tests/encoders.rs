//! Parity with `transformers` on tiny random BERT, RoBERTa and ELECTRA models, and the forward
//! context (masks, recording, dropout) on them.

use ablation::{DropoutMasks, MaskDraw};
use burn::prelude::*;
use models::{Checkpoint, EncoderInput, ForwardContext, SequenceClassifier, SpanExtractor};
use serde_json::Value;

use crate::util::*;

const TOL: f32 = 1e-4;

fn input(expected: &Value, device: &Device<B>) -> EncoderInput<B> {
    let mask = int_tensor(&expected["attention_mask"], device).float();
    EncoderInput {
        input_ids: int_tensor(&expected["input_ids"], device),
        attention_mask: mask,
        token_type_ids: int_tensor(&expected["token_type_ids"], device),
        global_attention_mask: None,
    }
}

fn classifier(name: &str) -> (SequenceClassifier<B>, Value) {
    let dir = fixture(&format!("encoders/{name}"));
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let n_labels = checkpoint.config.labels.len();
    let (model, report) =
        SequenceClassifier::load(checkpoint, n_labels, None, 0, &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        report.initialised.is_empty(),
        "{name}: the head should load, got {report:?}"
    );
    (model, read_json(&dir.join("expected.json")))
}

fn check_classifier(name: &str) {
    let device = Default::default();
    let (model, expected) = classifier(name);
    let input = input(&expected, &device);
    let mut ctx = ForwardContext::eval().recording();
    let hidden = model.encoder.forward(&input, &mut ctx);
    let n_states = expected["hidden_states"].as_array().unwrap().len();
    assert_close(
        &format!("{name} last hidden state"),
        hidden.clone(),
        &expected["hidden_states"][n_states - 1],
        TOL,
    );
    assert_close(
        &format!("{name} FFN activation of layer 0"),
        ctx.ffn_activations[0].clone(),
        &expected["ffn_layer0"],
        TOL,
    );
    assert_eq!(
        ctx.ffn_activations.len(),
        n_states - 1,
        "one recording per layer"
    );
    if !expected["pooler_output"].is_null() {
        assert_close(
            &format!("{name} pooler"),
            model.encoder.pool(&hidden).unwrap(),
            &expected["pooler_output"],
            TOL,
        );
    }
    let logits = model.forward(&input, &mut ForwardContext::eval());
    assert_close(&format!("{name} logits"), logits, &expected["logits"], TOL);
}

#[test]
fn bert_matches_transformers() {
    check_classifier("bert");
}

#[test]
fn roberta_matches_transformers() {
    check_classifier("roberta");
}

#[test]
fn electra_matches_transformers() {
    check_classifier("electra");
}

#[test]
fn pytorch_bin_checkpoint_matches_transformers() {
    check_classifier("bert-bin");
}

#[test]
fn bf16_checkpoint_is_cast_to_f32() {
    check_classifier("bert-bf16");
}

#[test]
fn span_extraction_matches_transformers() {
    let device = Default::default();
    let dir = fixture("encoders/bert-qa");
    let (model, report) =
        SpanExtractor::<B>::load(Checkpoint::open(&dir).unwrap(), 0, &device).unwrap();
    assert!(report.initialised.is_empty());
    let expected = read_json(&dir.join("expected.json"));
    let (start, end) = model.forward(&input(&expected, &device), &mut ForwardContext::eval());
    assert_close("start logits", start, &expected["start_logits"], TOL);
    assert_close("end logits", end, &expected["end_logits"], TOL);
}

#[test]
fn neuron_masks_zero_the_recorded_activation() {
    let device = Default::default();
    let (model, expected) = classifier("bert");
    let input = input(&expected, &device);
    let width = 37;
    let mut mask = vec![1.0f32; width];
    mask[5] = 0.0;
    mask[20] = 0.0;
    let mut ctx = ForwardContext::eval().recording();
    ctx.set_neuron_mask(1, Tensor::from_floats(mask.as_slice(), &device));
    let hidden = model.encoder.forward(&input, &mut ctx);
    let (acts, shape) = values(ctx.ffn_activations[1].clone());
    assert_eq!(shape, [2, 9, width]);
    for (i, a) in acts.iter().enumerate() {
        let neuron = i % width;
        if neuron == 5 || neuron == 20 {
            assert_eq!(*a, 0.0);
        }
    }
    // Layer 0 is untouched, and ablation changes the output.
    assert_close(
        "layer 0",
        ctx.ffn_activations[0].clone(),
        &expected["ffn_layer0"],
        TOL,
    );
    let (ablated, _) = values(hidden);
    let (clean, _) = flat(&expected["hidden_states"][2]);
    let moved = ablated
        .iter()
        .zip(&clean)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-3,
        "ablating two neurons moved the output by only {moved}"
    );
}

#[test]
fn all_ones_masks_change_nothing_and_head_masks_act() {
    let device = Default::default();
    let (model, expected) = classifier("roberta");
    let input = input(&expected, &device);
    let mut ctx = ForwardContext::eval();
    ctx.set_neuron_mask(0, Tensor::ones([37], &device));
    ctx.set_head_mask(1, Tensor::ones([4], &device));
    assert_close(
        "all-ones masks",
        model.forward(&input, &mut ctx),
        &expected["logits"],
        TOL,
    );

    let mut ctx = ForwardContext::eval();
    ctx.set_head_mask(0, Tensor::from_floats([1.0, 0.0, 1.0, 1.0], &device));
    let (masked, _) = values(model.encoder.forward(&input, &mut ctx));
    let (clean, _) = flat(&expected["hidden_states"][2]);
    let moved = masked
        .iter()
        .zip(&clean)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-3,
        "masking a head moved the output by only {moved}"
    );
}

#[test]
fn dropout_comes_from_the_callers_seed() {
    let device = Default::default();
    let (model, expected) = classifier("bert");
    let input = input(&expected, &device);
    let run = |seed: u64, power: u32| {
        let mut masks = DropoutMasks::new(seed);
        masks.set_power(power);
        values(model.forward(&input, &mut ForwardContext::with_dropout(masks))).0
    };
    // Power 0 is the full model: no dropout.
    let (clean, _) = flat(&expected["logits"]);
    let full = run(3, 0);
    assert!(full.iter().zip(&clean).all(|(a, b)| (a - b).abs() <= TOL));
    // Same seed, same masks; another seed, other masks.
    assert_eq!(run(3, 1), run(3, 1));
    assert_ne!(run(3, 1), run(4, 1));
    assert_ne!(run(3, 1), full);
}

#[test]
fn dropout_masks_are_the_same_computed_on_the_host_or_the_device() {
    let device = Default::default();
    let (model, expected) = classifier("bert");
    let input = input(&expected, &device);
    let run = |draw: MaskDraw| {
        let mut masks = DropoutMasks::new(9).with_draw(draw);
        masks.set_view_powers(&[1]);
        let first = values(model.forward(&input, &mut ForwardContext::with_dropout(masks))).0;
        let mut masks = DropoutMasks::new(9).with_draw(draw);
        masks.next_step();
        masks.set_power(2);
        let second = values(model.forward(&input, &mut ForwardContext::with_dropout(masks))).0;
        (first, second)
    };
    // On this backend's own integer ops (LibTorch in the tch build) as on the host.
    assert_eq!(run(MaskDraw::Host), run(MaskDraw::Device));
}

#[test]
fn saved_classifier_reloads_to_the_same_outputs() {
    let device = Default::default();
    let (model, expected) = classifier("roberta");
    let dir = tempfile::tempdir().unwrap();
    let config = models::EncoderConfig::from_file(fixture("encoders/roberta")).unwrap();
    model
        .save_pretrained(&config, &config.labels, dir.path())
        .unwrap();
    let (reloaded, report) =
        SequenceClassifier::<B>::load(Checkpoint::open(dir.path()).unwrap(), 2, None, 0, &device)
            .unwrap();
    assert!(report.initialised.is_empty());
    assert_close(
        "reloaded",
        reloaded.forward(&input(&expected, &device), &mut ForwardContext::eval()),
        &expected["logits"],
        TOL,
    );
}

#[test]
fn a_pretrained_encoder_gets_a_fresh_seeded_head() {
    let device = Default::default();
    let dir = fixture("encoders/bert-qa"); // has no classifier
    let load = |seed| {
        SequenceClassifier::<B>::load(Checkpoint::open(&dir).unwrap(), 4, None, seed, &device)
            .unwrap()
    };
    let (a, report) = load(1);
    assert_eq!(report.initialised, ["bert.pooler", "classifier"]);
    assert_eq!(report.dropped, ["qa_outputs.bias", "qa_outputs.weight"]);
    let (b, _) = load(1);
    let (c, _) = load(2);
    let w = |m: &SequenceClassifier<B>| values(m.head.out_proj.weight.val()).0;
    assert_eq!(w(&a), w(&b));
    assert_ne!(w(&a), w(&c));
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let device = Default::default();
    let tmp = copy_fixture("encoders/bert");
    let single = tmp.path().join("model.safetensors");
    let tensors = models::TensorMap::open(&single).unwrap().into_tensors();
    std::fs::remove_file(&single).unwrap();
    let mut shards = [models::TensorMap::new("a"), models::TensorMap::new("b")];
    let mut weight_map = serde_json::Map::new();
    for (i, (key, tensor)) in tensors.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(key.clone(), file.into());
        shards[i % 2].insert(key, tensor);
    }
    for (i, shard) in shards.iter().enumerate() {
        shard
            .write_safetensors(
                &tmp.path()
                    .join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            )
            .unwrap();
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let (model, _) =
        SequenceClassifier::<B>::load(Checkpoint::open(tmp.path()).unwrap(), 3, None, 0, &device)
            .unwrap();
    let expected = read_json(&fixture("encoders/bert/expected.json"));
    assert_close(
        "sharded",
        model.forward(&input(&expected, &device), &mut ForwardContext::eval()),
        &expected["logits"],
        TOL,
    );

    // An index that names a tensor its shard lacks is an error naming the key.
    let mut broken = index.clone();
    broken["weight_map"]["bert.extra.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(
        tmp.path().join("model.safetensors.index.json"),
        broken.to_string(),
    )
    .unwrap();
    let err = Checkpoint::open(tmp.path()).unwrap_err().to_string();
    assert!(
        err.contains("the index lists \"bert.extra.weight\" but its shard does not hold it"),
        "{err}"
    );
}

/// The tiny Longformer and the input of one of its `expected.json` cases (`"global"`: global
/// attention on some tokens; `"local_only"`: none, a pure sliding window).
fn longformer(case: &str, device: &Device<B>) -> (SpanExtractor<B>, EncoderInput<B>, Value) {
    let dir = fixture("encoders/longformer-qa");
    let (model, report) = SpanExtractor::<B>::load(Checkpoint::open(&dir).unwrap(), 0, device)
        .unwrap_or_else(|e| panic!("longformer: {e}"));
    assert!(report.initialised.is_empty(), "{report:?}");
    let all = read_json(&dir.join("expected.json"));
    let mut input = input(&all, device);
    input.global_attention_mask =
        Some(int_tensor(&all[case]["global_attention_mask"], device).float());
    (model, input, all[case].clone())
}

fn check_longformer(case: &str) {
    let device = Default::default();
    let (model, input, expected) = longformer(case, &device);
    let mut ctx = ForwardContext::eval().recording();
    let hidden = model.encoder.forward(&input, &mut ctx);
    let n_states = expected["hidden_states"].as_array().unwrap().len();
    assert_eq!(n_states, 3, "two layers");
    assert_close(
        &format!("longformer ({case}) last hidden state"),
        hidden,
        &expected["hidden_states"][n_states - 1],
        TOL,
    );
    assert_close(
        &format!("longformer ({case}) FFN activation of layer 0"),
        ctx.ffn_activations[0].clone(),
        &expected["ffn_layer0"],
        TOL,
    );
    let (start, end) = model.forward(&input, &mut ForwardContext::eval());
    assert_close(
        &format!("longformer ({case}) start"),
        start,
        &expected["start_logits"],
        TOL,
    );
    assert_close(
        &format!("longformer ({case}) end"),
        end,
        &expected["end_logits"],
        TOL,
    );
}

#[test]
fn longformer_with_global_attention_matches_transformers() {
    check_longformer("global");
}

#[test]
fn longformer_sliding_window_alone_matches_transformers() {
    check_longformer("local_only");
}

#[test]
fn longformer_global_attention_changes_the_output_and_saves_its_projections() {
    let device = Default::default();
    let (model, input, expected) = longformer("global", &device);
    // The two fixture cases differ, so the global rows and columns are exercised.
    let (start, _) = model.forward(&input, &mut ForwardContext::eval());
    let (with_global, _) = values(start);
    let dir = fixture("encoders/longformer-qa");
    let all = read_json(&dir.join("expected.json"));
    let (local, _) = flat(&all["local_only"]["start_logits"]);
    let moved = with_global
        .iter()
        .zip(&local)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        moved > 1e-3,
        "global attention moved the logits by only {moved}"
    );

    // Saved and read back, the model (with its global projections) gives the same logits.
    let out = std::env::temp_dir().join(format!("neuronlab-longformer-{}", std::process::id()));
    let config = models::EncoderConfig::from_file(&dir).unwrap();
    model.save_pretrained(&config, &out).unwrap();
    let (reloaded, report) =
        SpanExtractor::<B>::load(Checkpoint::open(&out).unwrap(), 0, &device).unwrap();
    assert!(report.initialised.is_empty(), "{report:?}");
    let (start, _) = reloaded.forward(&input, &mut ForwardContext::eval());
    assert_close("reloaded longformer", start, &expected["start_logits"], TOL);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn longformer_gradients_match_transformers() {
    type AB = burn::backend::Autodiff<B>;
    let device = Default::default();
    let (_, input, _) = longformer("global", &device);
    let dir = fixture("encoders/longformer-qa");
    let expected = read_json(&dir.join("expected.json"))["backward"].clone();
    let (model, _) =
        SpanExtractor::<AB>::load(Checkpoint::open(&dir).unwrap(), 0, &device).unwrap();
    let lift = |t: Tensor<B, 2>| Tensor::<AB, 2>::from_data(t.into_data(), &device);
    let lift_int = |t: Tensor<B, 2, Int>| Tensor::<AB, 2, Int>::from_data(t.into_data(), &device);
    let input = EncoderInput::<AB> {
        input_ids: lift_int(input.input_ids),
        attention_mask: lift(input.attention_mask),
        token_type_ids: lift_int(input.token_type_ids),
        global_attention_mask: input.global_attention_mask.map(lift),
    };
    let weight = |name: &str| {
        let (v, shape) = flat(&expected[name]);
        lift(Tensor::<B, 1>::from_floats(v.as_slice(), &device).reshape([shape[0], shape[1]]))
    };
    let (start, end) = model.forward(&input, &mut ForwardContext::eval());
    let grads = (start * weight("g_start") + end * weight("g_end"))
        .sum()
        .backward();
    let layers = &model.encoder.encoder.layer;
    let global = |i: usize| layers[i].attention.self_attn.global.as_ref().unwrap();
    let checks = [
        (
            "longformer.encoder.layer.0.attention.self.query_global.weight",
            global(0).query_global.weight.grad(&grads),
        ),
        (
            "longformer.encoder.layer.1.attention.self.value_global.weight",
            global(1).value_global.weight.grad(&grads),
        ),
        (
            "longformer.encoder.layer.1.attention.self.key.weight",
            layers[1].attention.self_attn.key.weight.grad(&grads),
        ),
    ];
    for (name, grad) in checks {
        let grad = grad.unwrap_or_else(|| panic!("{name}: no gradient"));
        // Burn's Linear holds [in, out]; HF's [out, in].
        assert_close(name, grad.transpose(), &expected["grads"][name], TOL);
    }
}
