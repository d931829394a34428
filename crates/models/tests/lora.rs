//! LoRA adapters against PyTorch (the official `LoRALayer` formula, with a neuron mask on B):
//! the adapted output, the gradients of A and B (exactly zero in the masked columns of B), the
//! merged weight, a fresh adapter's zero update, and the PEFT-named safetensors round trip.

use burn::backend::Autodiff;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use models::{LoraAdapter, LoraConfig, LoraInit, TensorMap};

use crate::util::{B, assert_close, fixture, flat, read_json, values};

type AB = Autodiff<B>;

fn tensor<Bk: burn::tensor::backend::Backend, const D: usize>(
    v: &serde_json::Value,
) -> Tensor<Bk, D> {
    let (data, shape) = flat(v);
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

fn adapter<Bk: burn::tensor::backend::Backend>(
    e: &serde_json::Value,
) -> (Linear<Bk>, LoraAdapter<Bk>) {
    let device = Default::default();
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        init: LoraInit::Normal { std: 0.01 },
    };
    let trainable: Vec<usize> = serde_json::from_value(e["trainable"].clone()).unwrap();
    let mut lora = LoraAdapter::<Bk>::new(6, 5, &config, Some(&trainable), 0, &device).unwrap();
    lora.a = Param::from_tensor(tensor(&e["a"]));
    lora.b = Param::from_tensor(tensor(&e["b"]));
    // The base is frozen: its parameters do not require gradients.
    let linear = Linear {
        weight: Param::from_tensor(tensor(&e["weight"])).set_require_grad(false),
        bias: Some(Param::from_tensor(tensor(&e["bias"])).set_require_grad(false)),
    };
    (linear, lora)
}

#[test]
fn adapted_output_gradients_and_merge_match_pytorch() {
    let e = read_json(&fixture("lora/expected.json"));
    let (linear, lora) = adapter::<AB>(&e);
    let x: Tensor<AB, 3> = tensor(&e["x"]);
    let g: Tensor<AB, 3> = tensor(&e["g"]);
    let out = lora.forward(&linear, x.clone());
    let grads = (out.clone() * g).sum().backward();
    let grad_a = lora.a.grad(&grads).unwrap();
    let grad_b = lora.b.grad(&grads).unwrap();
    let inner = |t: Tensor<AB, 3>| t.inner();
    crate::util::assert_close("out", inner(out), &e["out"], 1e-5);
    crate::util::assert_close("grad A", grad_a, &e["grad_a"], 1e-4);
    crate::util::assert_close("grad B", grad_b.clone(), &e["grad_b"], 1e-4);
    // The masked columns of B (neurons 0, 2, 4) get exactly zero gradient.
    let (gb, _) = values(grad_b);
    for row in gb.chunks(5) {
        for j in [0, 2, 4] {
            assert_eq!(row[j], 0.0, "column {j}");
        }
    }
    // The frozen base gets none.
    assert!(linear.weight.grad(&grads).is_none());
    assert!(linear.bias.as_ref().unwrap().grad(&grads).is_none());

    // Merged for inference: the same output from one linear.
    let (linear, lora) = adapter::<B>(&e);
    let merged = lora.merge(linear.clone());
    assert_close(
        "merged weight",
        merged.weight.val(),
        &e["merged_weight"],
        1e-5,
    );
    let x: Tensor<B, 3> = tensor(&e["x"]);
    let (a, _) = values(merged.forward(x.clone()));
    let (b, _) = values(lora.forward(&linear, x));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
}

#[test]
fn a_fresh_adapter_changes_nothing_and_round_trips_with_peft_names() {
    let device = Default::default();
    for init in [LoraInit::Normal { std: 0.01 }, LoraInit::Kaiming] {
        let config = LoraConfig {
            rank: 4,
            alpha: 8.0,
            init,
        };
        let lora = LoraAdapter::<B>::new(16, 12, &config, None, 7, &device).unwrap();
        let (a, shape) = values(lora.a.val());
        assert_eq!(shape, vec![16, 4]);
        let std = (a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32).sqrt();
        match init {
            // N(0, 0.01²): the sample std of 64 draws is near 0.01.
            LoraInit::Normal { .. } => assert!((0.006..0.014).contains(&std), "{std}"),
            // U(−1/4, 1/4): std 1/(4√3) ≈ 0.144, every value inside the bound.
            LoraInit::Kaiming => {
                assert!(a.iter().all(|v| v.abs() <= 0.25), "{a:?}");
                assert!((0.1..0.19).contains(&std), "{std}");
            }
        }
        let x = Tensor::<B, 2>::ones([3, 16], &device);
        let (d, _) = values(lora.delta(x));
        assert!(d.iter().all(|&v| v == 0.0), "B = 0 at the start");
    }

    // Round trip through safetensors with PEFT's names and layouts.
    let e = read_json(&fixture("lora/expected.json"));
    let (_, lora) = adapter::<B>(&e);
    let mut map = TensorMap::new("adapter");
    let prefix = "base_model.model.model.layers.0.mlp.gate_proj";
    lora.to_map(prefix, &mut map);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    map.write_safetensors(&path).unwrap();
    let mut back = TensorMap::open(&path).unwrap();
    let keys: Vec<String> = back.keys().map(str::to_string).collect();
    assert_eq!(
        keys,
        [
            format!("{prefix}.lora_A.weight"),
            format!("{prefix}.lora_B.weight")
        ]
    );
    assert_eq!(back.shapes()[0].2, vec![2, 6], "lora_A is [r, d_in]");
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        init: LoraInit::Normal { std: 0.01 },
    };
    let loaded =
        LoraAdapter::<B>::from_map(prefix, &mut back, 6, 5, &config, Some(&[1, 3]), &device)
            .unwrap();
    back.finish().unwrap();
    let (w1, _) = values(lora.delta_weight());
    let (w2, _) = values(loaded.delta_weight());
    assert_eq!(
        w1, w2,
        "the stored B is the masked one, so the update is the same"
    );

    // A wrong rank names the key and both shapes; a neuron out of range and rank 0 are named.
    let mut again = TensorMap::open(&path).unwrap();
    let wrong = LoraConfig { rank: 3, ..config };
    let err = LoraAdapter::<B>::from_map(prefix, &mut again, 6, 5, &wrong, None, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("lora_A.weight") && err.contains("[2, 6]") && err.contains("[3, 6]"),
        "{err}"
    );
    let err = LoraAdapter::<B>::new(6, 5, &config, Some(&[5]), 0, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("neuron 5 is outside a linear of 5 outputs"),
        "{err}"
    );
    let zero = LoraConfig { rank: 0, ..config };
    let err = LoraAdapter::<B>::new(6, 5, &zero, None, 0, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rank must be at least 1"), "{err}");
}

/// The tiny Llama (2 layers × 48 FFN neurons, vocabulary 96).
fn tiny<Bk: burn::tensor::backend::Backend>() -> models::LlamaModel<Bk> {
    models::DecoderCheckpoint::open(fixture("decoders/tiny-llama"))
        .unwrap()
        .load::<Bk>(&Default::default())
        .unwrap()
        .0
}

fn ids<Bk: burn::tensor::backend::Backend>() -> Tensor<Bk, 2, burn::tensor::Int> {
    let rows: Vec<Vec<u32>> = (0..2)
        .map(|r| {
            (0..10)
                .map(|t| 3 + ((r * 29 + t * 11) % 90) as u32)
                .collect()
        })
        .collect();
    models::token_ids::<Bk, _>(&rows, &Default::default())
}

/// Give every adapter's B seeded random values (keeping its mask), as if trained.
fn perturb<Bk: burn::tensor::backend::Backend>(
    model: models::LlamaModel<Bk>,
) -> models::LlamaModel<Bk> {
    let mut model = model;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let lora = &mut layer.lora;
        for (k, slot) in [&mut lora.q_proj, &mut lora.v_proj, &mut lora.gate_proj]
            .into_iter()
            .enumerate()
        {
            if let Some(a) = slot.as_mut() {
                let [r, d_out] = a.b.dims();
                let values: Vec<f32> = (0..r * d_out)
                    .map(|i| (((i * 37 + l * 11 + k * 5) % 17) as f32 - 8.0) * 0.01)
                    .collect();
                a.b = Param::from_tensor(Tensor::from_data(
                    TensorData::new(values, [r, d_out]),
                    &Default::default(),
                ));
            }
        }
    }
    model
}

#[test]
fn neuron_specific_lora_on_the_tiny_llama() {
    use models::ForwardContext;

    let device = Default::default();
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        init: LoraInit::Normal { std: 0.01 },
    };
    // Layer 0: neurons 2 and 7; layer 1: none (its gate adapter exists with an all-zero mask).
    let set = ablation::NeuronSet::from_pairs([(0, 2), (0, 7)]);
    let targets = ["q_proj", "v_proj", "gate_proj"];
    let clean = values(tiny::<B>().forward(ids(), None, &mut ForwardContext::eval())).0;
    let adapted = tiny::<B>()
        .with_lora(&targets, &config, Some(&set), 3, &device)
        .unwrap();
    // B = 0: a fresh adapter changes nothing.
    let fresh = values(adapted.forward(ids(), None, &mut ForwardContext::eval())).0;
    assert!(clean.iter().zip(&fresh).all(|(a, b)| (a - b).abs() < 1e-6));

    // As if trained: merged and unmerged logits agree, and differ from the clean model.
    let trained = perturb(adapted);
    let unmerged = values(trained.forward(ids(), None, &mut ForwardContext::eval())).0;
    let merged_model = trained.clone().merge_lora();
    assert!(merged_model.layers[0].lora.gate_proj.is_none());
    let merged = values(merged_model.forward(ids(), None, &mut ForwardContext::eval())).0;
    let worst = unmerged
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "merged vs unmerged: {worst}");
    assert!(
        unmerged
            .iter()
            .zip(&clean)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
    // Only the selected gate rows changed: the merged gate weight differs from the base in
    // columns 2 and 7 of layer 0 (Burn's [d_in, d_out] layout) and nowhere in layer 1.
    let base = tiny::<B>();
    for (l, cols) in [(0, vec![2, 7]), (1, vec![])] {
        let (w0, _) = values(base.layers[l].mlp.gate_proj.weight.val());
        let (w1, _) = values(merged_model.layers[l].mlp.gate_proj.weight.val());
        let changed: std::collections::BTreeSet<usize> = w0
            .iter()
            .zip(&w1)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i % 48)
            .collect();
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), cols, "layer {l}");
    }

    // Gradients of an LM loss: only adapter parameters get them; the gate adapters' B is zero
    // outside the selected neurons.
    let model = perturb(
        tiny::<AB>()
            .with_lora(&targets, &config, Some(&set), 3, &device)
            .unwrap(),
    );
    let logits = model.forward(ids(), None, &mut ForwardContext::eval());
    let grads = logits.powi_scalar(2).mean().backward();
    assert!(model.layers[0].mlp.gate_proj.weight.grad(&grads).is_none());
    assert!(model.embed_tokens.weight.grad(&grads).is_none());
    for (l, keep) in [(0usize, vec![2usize, 7]), (1, vec![])] {
        let gate = model.layers[l].lora.gate_proj.as_ref().unwrap();
        let (g, _) = values(gate.b.grad(&grads).unwrap());
        for (i, v) in g.iter().enumerate() {
            let j = i % 48;
            if keep.contains(&j) {
                assert!(*v != 0.0, "layer {l} neuron {j}: a selected neuron learns");
            } else {
                assert_eq!(*v, 0.0, "layer {l} neuron {j}");
            }
        }
        let q = model.layers[l].lora.q_proj.as_ref().unwrap();
        assert!(
            values(q.a.grad(&grads).unwrap())
                .0
                .iter()
                .any(|v| *v != 0.0)
        );
    }

    // Saved with PEFT names and loaded into a fresh model: the same logits.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("adapter_model.safetensors");
    models::save_lora(&trained, &path).unwrap();
    let map = TensorMap::open(&path).unwrap();
    assert!(
        map.contains("base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight"),
        "{:?}",
        map.keys().collect::<Vec<_>>()
    );
    let loaded =
        models::load_lora(tiny::<B>(), &path, &targets, &config, Some(&set), &device).unwrap();
    let back = values(loaded.forward(ids(), None, &mut ForwardContext::eval())).0;
    assert!(
        back.iter()
            .zip(&unmerged)
            .all(|(a, b)| (a - b).abs() < 1e-6)
    );
    // Loading fewer targets than the file has leaves tensors unused: named.
    let err = models::load_lora(tiny::<B>(), &path, &["q_proj"], &config, None, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unexpected") && err.contains("v_proj.lora_A.weight"),
        "{err}"
    );

    // Bad input: a target that names no linear, an empty set, a set without gate_proj.
    let err = |targets: &[&str], set: Option<&ablation::NeuronSet>| {
        tiny::<B>()
            .with_lora(targets, &config, set, 0, &device)
            .unwrap_err()
            .to_string()
    };
    let e = err(&["q_proj", "fc1"], None);
    assert!(
        e.contains("\"fc1\" names no linear") && e.contains("gate_proj"),
        "{e}"
    );
    let e = err(&["gate_proj"], Some(&ablation::NeuronSet::default()));
    assert!(e.contains("the neuron set is empty"), "{e}");
    let e = err(&["q_proj"], Some(&set));
    assert!(e.contains("gate_proj is not a target"), "{e}");
    let e = err(
        &["gate_proj"],
        Some(&ablation::NeuronSet::from_pairs([(2, 0)])),
    );
    assert!(e.contains("outside a model with 2 layers"), "{e}");
}

/// A PEFT folder's adapters and head on the tiny Llama as a classifier.
fn peft_classifier(
    folder: &std::path::Path,
    set: Option<&ablation::NeuronSet>,
) -> (models::DecoderClassifier<B>, models::PeftConfig) {
    let loaded = models::load_peft(tiny::<B>(), folder, set, &Default::default()).unwrap();
    let head = loaded.head.expect("a SEQ_CLS folder has the score head");
    (
        models::DecoderClassifier::new(loaded.model, head, models::TokenPosition::LastNonPadding),
        loaded.config,
    )
}

fn classify(model: &models::DecoderClassifier<B>) -> Tensor<B, 2> {
    let mask = Tensor::ones([2, 10], &Default::default());
    model.forward(ids(), mask, &mut models::ForwardContext::eval())
}

#[test]
fn peft_folders_written_by_peft_give_peft_logits() {
    let e = read_json(&fixture("lora/peft_expected.json"));
    // The ids of `ids()` are the ones the script fed PEFT.
    let (rows, _) = values(ids::<B>().float());
    let want: Vec<f32> = flat(&e["input_ids"]).0;
    assert_eq!(rows, want);

    let (model, config) = peft_classifier(&fixture("lora/peft-seq-cls"), None);
    assert_eq!(config.task, Some(models::PeftTask::SeqCls));
    assert_eq!(config.targets, ["q_proj", "v_proj", "gate_proj"]);
    assert_eq!((config.rank, config.alpha), (4, 8.0));
    assert_close(
        "SEQ_CLS logits",
        classify(&model),
        &e["seq_cls_logits"],
        1e-4,
    );

    let loaded = models::load_peft(
        tiny::<B>(),
        &fixture("lora/peft-causal-lm"),
        None,
        &Default::default(),
    )
    .unwrap();
    assert!(loaded.head.is_none());
    assert_eq!(loaded.config.targets, ["o_proj", "down_proj"]);
    let logits = loaded
        .model
        .forward(ids(), None, &mut models::ForwardContext::eval());
    assert_close("CAUSAL_LM logits", logits, &e["causal_lm_logits"], 1e-4);
    // Not vacuous: the adapters move the base model's logits.
    let base = values(tiny::<B>().forward(ids(), None, &mut models::ForwardContext::eval())).0;
    let want = flat(&e["causal_lm_logits"]).0;
    assert!(base.iter().zip(&want).any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn save_peft_writes_the_folder_peft_writes_and_reads_it_back() {
    use models::{PeftConfig, PeftTask};

    let device = Default::default();
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        init: LoraInit::Normal { std: 0.01 },
    };
    let set = ablation::NeuronSet::from_pairs([(0, 2), (0, 7), (1, 40)]);
    let targets = ["q_proj", "v_proj", "gate_proj"];
    let model = perturb(
        tiny::<B>()
            .with_lora(&targets, &config, Some(&set), 3, &device)
            .unwrap(),
    );
    let head =
        models::params::torch_linear::<B>(32, 3, &mut rand::SeedableRng::seed_from_u64(5), &device);
    let peft = PeftConfig::of(&model, PeftTask::SeqCls, Some("tiny-llama"), 0.05).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("adapter");
    models::save_peft(&model, Some(&head), &peft, &folder).unwrap();

    // The same tensor names and shapes as the folder PEFT wrote for these targets (plus the
    // head's bias, which a `nn.Linear` head has), and nothing left half-written.
    let ours = TensorMap::open(folder.join("adapter_model.safetensors")).unwrap();
    let theirs = TensorMap::open(fixture("lora/peft-seq-cls/adapter_model.safetensors")).unwrap();
    let mut want = theirs.shapes();
    want.push(("base_model.model.score.bias".into(), "F32".into(), vec![3]));
    want.sort();
    assert_eq!(ours.shapes(), want);
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["adapter_config.json", "adapter_model.safetensors"]);
    let json = read_json(&folder.join("adapter_config.json"));
    for (key, value) in [
        ("peft_type", serde_json::json!("LORA")),
        ("task_type", serde_json::json!("SEQ_CLS")),
        ("r", serde_json::json!(4)),
        ("lora_alpha", serde_json::json!(8)),
        ("lora_dropout", serde_json::json!(0.05)),
        (
            "target_modules",
            serde_json::json!(["q_proj", "v_proj", "gate_proj"]),
        ),
        ("modules_to_save", serde_json::json!(["score"])),
        ("base_model_name_or_path", serde_json::json!("tiny-llama")),
        ("bias", serde_json::json!("none")),
    ] {
        assert_eq!(json[key], value, "{key}");
    }
    // The masked gate rows are stored as zeros: PEFT, which knows no mask, computes the same.
    let mut ours = ours;
    let b = ours
        .take(
            "base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight",
            &[48, 4],
        )
        .unwrap();
    for (row, chunk) in b.data.chunks(4).enumerate() {
        assert_eq!(chunk.iter().any(|v| *v != 0.0), row == 40, "gate row {row}");
    }

    // Read back (with the set): the same logits as the model that was saved.
    let before = models::DecoderClassifier::new(
        model.clone(),
        head.clone(),
        models::TokenPosition::LastNonPadding,
    );
    let (after, read) = peft_classifier(&folder, Some(&set));
    assert_eq!(read, peft);
    let (a, _) = values(classify(&before));
    let (b, _) = values(classify(&after));
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6),
        "{a:?} vs {b:?}"
    );

    // A head for a CAUSAL_LM folder, or none for SEQ_CLS, is refused before anything is written.
    let lm = PeftConfig::of(&model, PeftTask::CausalLm, None, 0.0).unwrap();
    let other = dir.path().join("other");
    let err = models::save_peft(&model, Some(&head), &lm, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("SEQ_CLS"), "{err}");
    let err = models::save_peft(&model, None, &peft, &other)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head"), "{err}");
    assert!(!other.exists());
}

#[test]
fn peft_folders_this_crate_cannot_honour_are_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    let load = |folder: &std::path::Path| {
        models::load_peft(tiny::<B>(), folder, None, &device)
            .unwrap_err()
            .to_string()
    };
    let err = load(&dir.path().join("none"));
    assert!(
        err.contains("adapter_config.json") && err.contains("does not exist"),
        "{err}"
    );

    let original: serde_json::Value =
        read_json(&fixture("lora/peft-causal-lm/adapter_config.json"));
    let weights = fixture("lora/peft-causal-lm/adapter_model.safetensors");
    let cases: [(&str, serde_json::Value, &str); 5] = [
        ("use_dora", serde_json::json!(true), "use_dora"),
        (
            "rank_pattern",
            serde_json::json!({"o_proj": 8}),
            "rank_pattern",
        ),
        ("target_modules", serde_json::json!(".*proj"), "regex"),
        (
            "target_modules",
            serde_json::json!(["o_proj", "lm_head"]),
            "lm_head",
        ),
        ("r", serde_json::json!(3), "lora_A.weight"),
    ];
    for (k, (key, value, want)) in cases.into_iter().enumerate() {
        let folder = dir.path().join(format!("case{k}"));
        std::fs::create_dir_all(&folder).unwrap();
        let mut config = original.clone();
        config[key] = value;
        std::fs::write(folder.join("adapter_config.json"), config.to_string()).unwrap();
        std::fs::copy(&weights, folder.join("adapter_model.safetensors")).unwrap();
        let err = load(&folder);
        assert!(err.contains(want) && err.contains("case"), "{key}: {err}");
    }
    // Fewer targets than the weights hold: the unused tensors are named.
    let folder = dir.path().join("fewer");
    std::fs::create_dir_all(&folder).unwrap();
    let mut config = original.clone();
    config["target_modules"] = serde_json::json!(["o_proj"]);
    std::fs::write(folder.join("adapter_config.json"), config.to_string()).unwrap();
    std::fs::copy(&weights, folder.join("adapter_model.safetensors")).unwrap();
    let err = load(&folder);
    assert!(
        err.contains("unexpected") && err.contains("down_proj.lora_A"),
        "{err}"
    );
}
