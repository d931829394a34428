//! Activation statistics on the tiny decoders: counts, means and standard deviations equal brute
//! force over recorded gate pre-activations; shards merge to the whole; files round-trip; packing
//! keeps held-out windows apart; bad input is a named error.

use models::{DecoderCheckpoint, ForwardContext, LlamaModel};
use neurons::{ActivationStats, Packing, TextFormat, pack, read_documents};

use crate::util::{B, fixture, values};

fn load(name: &str) -> LlamaModel<B> {
    let checkpoint = DecoderCheckpoint::open(fixture(&format!("decoders/{name}"))).unwrap();
    checkpoint.load::<B>(&Default::default()).unwrap().0
}

fn windows(n: usize, len: usize, seed: u32) -> Vec<Vec<u32>> {
    (0..n)
        .map(|w| {
            (0..len)
                .map(|t| 3 + ((w * 31 + t * 17 + seed as usize * 7) % 90) as u32)
                .collect()
        })
        .collect()
}

#[test]
fn statistics_equal_brute_force_and_shards_merge() {
    let model = load("tiny-llama");
    let device = Default::default();
    let all = windows(5, 8, 1);
    let mut stats = ActivationStats::new(&model);
    let mut seen = Vec::new();
    stats
        .collect(&model, "en", &all, 2, &device, |d| seen.push(d))
        .unwrap();
    assert_eq!(seen, vec![2, 4, 5]);

    // Brute force: every gate pre-activation of every window, one window at a time.
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let mut positive = vec![0u64; layers * width];
    let mut sum = vec![0f64; layers * width];
    let mut sum_sq = vec![0f64; layers * width];
    for w in &all {
        let ids: Vec<i64> = w.iter().map(|&t| t as i64).collect();
        let input = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(ids, [1, w.len()]),
            &device,
        );
        let mut ctx = ForwardContext::eval().recording_gate();
        model.forward(input, None, &mut ctx);
        for (l, gate) in ctx.gate_preactivations.iter().enumerate() {
            let (g, _) = values(gate.clone());
            for (k, &v) in g.iter().enumerate() {
                let i = l * width + k % width;
                positive[i] += (v > 0.0) as u64;
                sum[i] += v as f64;
                sum_sq[i] += (v as f64) * (v as f64);
            }
        }
    }
    let en = &stats.languages["en"];
    assert_eq!(en.tokens, 40);
    assert_eq!(en.positive, positive);
    let (mean, std) = stats.mean_std("en").unwrap();
    for i in 0..layers * width {
        assert!((mean[i] - sum[i] / 40.0).abs() < 1e-5, "mean {i}");
        let want = (sum_sq[i] / 40.0 - (sum[i] / 40.0).powi(2)).max(0.0).sqrt();
        assert!(
            (std[i] - want).abs() < 1e-4,
            "std {i}: {} vs {want}",
            std[i]
        );
    }

    // Two shards merged equal one pass over both.
    let mut a = ActivationStats::new(&model);
    a.collect(&model, "en", &all[..3], 4, &device, |_| {})
        .unwrap();
    let mut b = ActivationStats::new(&model);
    b.collect(&model, "en", &all[3..], 4, &device, |_| {})
        .unwrap();
    b.collect(&model, "fr", &windows(2, 8, 2), 4, &device, |_| {})
        .unwrap();
    a.merge(&b).unwrap();
    assert_eq!(a.languages["en"].positive, en.positive);
    assert_eq!(a.languages["en"].tokens, 40);
    assert_eq!(a.languages["fr"].tokens, 16);

    // Saved and reloaded.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.json");
    a.save(&path).unwrap();
    let back = ActivationStats::load(&path).unwrap();
    assert_eq!(
        (&back.model, back.n_layers, back.width),
        (&a.model, a.n_layers, a.width)
    );
    for (lang, s) in &a.languages {
        let r = &back.languages[lang];
        assert_eq!((r.tokens, &r.positive), (s.tokens, &s.positive), "{lang}");
        // JSON keeps f64 sums to the last digit or so.
        for (x, y) in r
            .sum
            .iter()
            .chain(&r.sum_sq)
            .zip(s.sum.iter().chain(&s.sum_sq))
        {
            assert!(
                (x - y).abs() <= 1e-14 * y.abs().max(1.0),
                "{lang}: {x} vs {y}"
            );
        }
    }
    let probs = back.probabilities(&[]).unwrap();
    assert_eq!(probs.languages, vec!["en".to_string(), "fr".to_string()]);
    assert_eq!(probs.values[0][5], en.positive[5] as f32 / 40.0);
}

#[test]
fn statistics_of_another_model_are_refused() {
    let llama = load("tiny-llama");
    let mistral = load("tiny-mistral");
    let device = Default::default();
    let mut a = ActivationStats::new(&llama);
    let mut b = ActivationStats::new(&mistral);
    b.collect(&mistral, "en", &windows(1, 8, 0), 1, &device, |_| {})
        .unwrap();
    let err = a.merge(&b).unwrap_err().to_string();
    assert!(err.contains("statistics from another model"), "{err}");
    let err = a
        .collect(&mistral, "en", &windows(1, 8, 0), 1, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another model") && err.contains("I=64") && err.contains("I=48"),
        "{err}"
    );
    let err = a.mean_std("de").unwrap_err().to_string();
    assert!(err.contains("\"de\""), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"format\": \"something else\"}").unwrap();
    let err = ActivationStats::load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("bad.json") && err.contains("not a neuronlab activation statistics file"),
        "{err}"
    );
}

#[test]
fn packing_windows_budget_held_out_and_bad_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fr.txt");
    std::fs::write(&path, "un deux trois\n\nquatre cinq\nsix sept huit neuf\n").unwrap();
    let docs = read_documents(&path, &TextFormat::Lines).unwrap();
    assert_eq!(docs.len(), 3);
    // One "token" per character, BOS 1 per document: 14 + 12 + 19 = 45 tokens.
    let encode = |d: &str| -> Result<Vec<u32>, String> {
        Ok(std::iter::once(1)
            .chain(d.chars().map(|c| c as u32))
            .collect())
    };
    let packing = Packing {
        window: 8,
        held_out_fraction: 0.25,
        budget_tokens: None,
    };
    let packed = pack("fr", &path, &docs, &packing, encode).unwrap();
    assert_eq!(packed.total_tokens, 45);
    assert_eq!((packed.train.len(), packed.held_out.len()), (4, 1)); // 5 windows, tail of 5 dropped
    assert!(
        packed
            .train
            .iter()
            .chain(&packed.held_out)
            .all(|w| w.len() == 8)
    );
    assert_eq!(packed.train[0][..2], [1, 'u' as u32]);
    // Window 4 starts at token 32: "six sept huit neuf" after its BOS at 26, so 'e' of "sept".
    assert_eq!(packed.held_out[0][0], 'e' as u32);
    let budget = Packing {
        budget_tokens: Some(16),
        ..packing
    };
    assert_eq!(
        pack("fr", &path, &docs, &budget, encode)
            .unwrap()
            .train
            .len(),
        2
    );

    let short = Packing {
        window: 40,
        ..packing
    };
    let err = pack("fr", &path, &docs, &short, encode)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("language fr")
            && err.contains("fr.txt")
            && err.contains("45 tokens, fewer than the 2 window(s) of 40"),
        "{err}"
    );
    let empty = dir.path().join("de.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let docs = read_documents(&empty, &TextFormat::Lines).unwrap();
    let err = pack("de", &empty, &docs, &packing, encode)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("language de") && err.contains("de.txt") && err.contains("no text"),
        "{err}"
    );
    let jsonl = dir.path().join("es.jsonl");
    std::fs::write(&jsonl, "{\"text\": \"hola\"}\n{\"body\": \"adios\"}\n").unwrap();
    let err = read_documents(
        &jsonl,
        &TextFormat::Jsonl {
            field: "text".into(),
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("es.jsonl:2") && err.contains("no string field \"text\""),
        "{err}"
    );
}

#[test]
fn interventions_and_change_matrices() {
    use std::collections::BTreeMap;

    use ablation::NeuronSet;
    use neurons::{ChangeMatrix, InterventionValue, intervention_context, mean_nll};

    let model = load("tiny-llama");
    let device = Default::default();
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let held_out = vec![
        ("en".to_string(), windows(3, 8, 3)),
        ("fr".to_string(), windows(2, 8, 4)),
    ];
    let mut stats = ActivationStats::new(&model);
    stats
        .collect(&model, "en", &windows(4, 8, 5), 4, &device, |_| {})
        .unwrap();
    let en_set = NeuronSet::from_pairs([(0, 1), (0, 4), (1, 7)]);
    let sets = BTreeMap::from([
        ("en".to_string(), en_set.clone()),
        ("fr".to_string(), NeuronSet::default()),
    ]);

    // The mean NLL of one batch equals the windowed perplexity's.
    let w = &held_out[0].1;
    let ppl = models::perplexity(&model, &w[0], 8, &mut ForwardContext::eval(), &device).unwrap();
    let one = mean_nll(&model, &w[..1], 4, &mut ForwardContext::eval(), &device);
    assert!(
        (one - ppl.mean_nll).abs() < 1e-9,
        "{one} vs {}",
        ppl.mean_nll
    );

    for value in [
        InterventionValue::Zero,
        InterventionValue::Constant(0.5),
        InterventionValue::Mean,
    ] {
        let m = ChangeMatrix::compute(
            &model,
            &held_out,
            &sets,
            &value,
            Some(&stats),
            2,
            &device,
            |_| {},
        )
        .unwrap();
        assert_eq!(m.languages, vec!["en", "fr"]);
        // fr has no neurons: its row is the clean one.
        assert_eq!(m.nll[1], m.clean_nll);
        assert!(m.nll_change()[1].iter().all(|&d| d == 0.0));
        // en's row equals a direct run with the same intervention.
        let mut ctx = intervention_context::<B>(
            &en_set,
            layers,
            width,
            &value,
            Some((&stats, "en")),
            &device,
        )
        .unwrap();
        let direct = mean_nll(&model, &held_out[1].1, 1, &mut ctx, &device);
        assert!(
            (m.nll[0][1] - direct).abs() < 1e-6,
            "{value:?}: {} vs {direct}",
            m.nll[0][1]
        );
        assert!(
            m.nll_change()[0].iter().all(|&d| d != 0.0),
            "{value:?}: no change"
        );
        let ppl = m.ppl_change();
        assert!((ppl[0][0] - (m.nll[0][0].exp() - m.clean_nll[0].exp())).abs() < 1e-12);
        let csv = m.to_csv(&m.nll_change());
        assert!(
            csv.starts_with("ablated,en,fr\nen,") && csv.ends_with("fr,0.000000,0.000000\n"),
            "{csv}"
        );
    }

    // A mean intervention writes the language's mean gate pre-activation into silu(gate).
    let (mean, _) = stats.mean_std("en").unwrap();
    let mut ctx = intervention_context::<B>(
        &en_set,
        layers,
        width,
        &InterventionValue::Mean,
        Some((&stats, "en")),
        &device,
    )
    .unwrap();
    ctx.record_ffn = true;
    let ids: Vec<i64> = held_out[0].1[0].iter().map(|&t| t as i64).collect();
    let input = burn::tensor::Tensor::<B, 2, burn::tensor::Int>::from_data(
        burn::tensor::TensorData::new(ids, [1, 8]),
        &device,
    );
    model.forward(input, None, &mut ctx);
    let (act, _) = values(ctx.ffn_activations[1].clone());
    for pos in 0..8 {
        assert!((act[pos * width + 7] as f64 - mean[width + 7]).abs() < 1e-6);
    }
    assert_eq!(
        InterventionValue::parse("-10"),
        Some(InterventionValue::Constant(-10.0))
    );
    assert_eq!(
        InterventionValue::parse("mean"),
        Some(InterventionValue::Mean)
    );
    assert_eq!(InterventionValue::parse("nope"), None);
}

/// The recorded gate pre-activations of each batch of `batch` windows: per batch, per layer,
/// `[tokens × width]` values.
fn batch_gates(model: &LlamaModel<B>, windows: &[Vec<u32>], batch: usize) -> Vec<Vec<Vec<f32>>> {
    let device = Default::default();
    windows
        .chunks(batch)
        .map(|batch| {
            let input = models::token_ids::<B, _>(batch, &device);
            let mut ctx = ForwardContext::eval().recording_gate();
            model.forward(input, None, &mut ctx);
            ctx.gate_preactivations
                .iter()
                .map(|g| values(g.clone()).0)
                .collect()
        })
        .collect()
}

/// Brute force: per batch, the `q` quantile of each neuron over the batch's tokens,
/// interpolated as torch.quantile; the mean over the batches.
fn mean_batch_quantile(batches: &[Vec<Vec<f32>>], width: usize, q: f64) -> Vec<f64> {
    use neurons::selection::quantile_linear;
    let mut want = vec![0f64; batches[0].len() * width];
    for per_layer in batches {
        for (l, g) in per_layer.iter().enumerate() {
            for j in 0..width {
                let mut column: Vec<f32> = g.iter().skip(j).step_by(width).copied().collect();
                column.sort_by(f32::total_cmp);
                want[l * width + j] += quantile_linear(&column, q) / batches.len() as f64;
            }
        }
    }
    want
}

#[test]
fn batch_percentiles_and_exceedance_equal_brute_force() {
    let model = load("tiny-llama");
    let device = Default::default();
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let all = windows(5, 8, 6);
    let mut stats = ActivationStats::new(&model);
    stats
        .collect_with_percentile(&model, "en", &all, 2, 0.9, &device, |_| {})
        .unwrap();
    // Brute force: per batch of 2 windows (16 tokens, the last batch 8), the 0.9 quantile of
    // each neuron; their mean over the 3 batches.
    let batches = batch_gates(&model, &all, 2);
    assert_eq!(batches.len(), 3);
    let want = mean_batch_quantile(&batches, width, 0.9);
    let p = stats.languages["en"].percentile(0.9).unwrap();
    assert_eq!((p.q, p.batches), (0.9, 3));
    for (i, (got, want)) in p.mean().iter().zip(&want).enumerate() {
        assert!((got - want).abs() < 1e-5, "neuron {i}: {got} vs {want}");
    }

    // Second pass: tokens strictly above the mean percentile.
    stats
        .collect_exceedance(&model, "en", &all, 4, 0.9, &device, |_| {})
        .unwrap();
    let mut above = vec![0u64; layers * width];
    for per_layer in &batches {
        for (l, g) in per_layer.iter().enumerate() {
            for (k, &v) in g.iter().enumerate() {
                let i = l * width + k % width;
                above[i] += (v > want[i] as f32) as u64;
            }
        }
    }
    let ex = stats.languages["en"].exceedance.as_ref().unwrap();
    assert_eq!(ex.tokens, 40);
    // A value within float noise of its threshold may fall either way.
    let differ = ex.count.iter().zip(&above).filter(|(a, b)| a != b).count();
    assert!(differ <= 2, "{differ} neurons differ");
    let probs = stats.exceedance_probabilities(&[]).unwrap();
    assert_eq!(probs.values[0][3], ex.count[3] as f32 / 40.0);
    // Roughly 10% of tokens are above a 90th percentile.
    let mean: f64 = ex.count.iter().map(|&c| c as f64 / 40.0).sum::<f64>() / ex.count.len() as f64;
    assert!((0.03..0.2).contains(&mean), "{mean}");

    // Round trip and merge keep both.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.json");
    stats.save(&path).unwrap();
    let mut back = ActivationStats::load(&path).unwrap();
    assert_eq!(
        back.languages["en"].exceedance,
        stats.languages["en"].exceedance
    );
    assert_eq!(back.languages["en"].percentile(0.9).unwrap().batches, 3);
    back.merge(&stats).unwrap();
    assert_eq!(back.languages["en"].percentile(0.9).unwrap().batches, 6);
    assert_eq!(back.languages["en"].exceedance.as_ref().unwrap().tokens, 80);

    // Without a percentile there is nothing to count against; other quantiles do not mix.
    let mut plain = ActivationStats::new(&model);
    plain
        .collect(&model, "fr", &all, 2, &device, |_| {})
        .unwrap();
    let err = plain
        .collect_exceedance(&model, "fr", &all, 2, 0.9, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("language fr: no percentile statistics"),
        "{err}"
    );
    let err = stats
        .collect_with_percentile(&model, "en", &all, 2, 0.5, &device, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("q = 0.9 cannot take q = 0.5"), "{err}");
    let err = back.merge(&plain).map(|_| ()).and_then(|_| {
        let mut other = ActivationStats::new(&model);
        other.collect(&model, "en", &all, 2, &device, |_| {})?;
        back.merge(&other)
    });
    let err = err.unwrap_err().to_string();
    assert!(err.contains("language en: cannot merge"), "{err}");
}

#[test]
fn several_percentiles_in_one_pass_and_mondals_percentile_interventions() {
    use ablation::NeuronSet;
    use neurons::{InterventionValue, intervention_context};

    let model = load("tiny-llama");
    let device = Default::default();
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let all = windows(5, 8, 9);
    let qs = [0.95, 0.75, 0.9]; // any order: kept ascending
    let mut stats = ActivationStats::new(&model);
    stats
        .collect_with_percentiles(&model, "en", &all, 2, &qs, &device, |_| {})
        .unwrap();
    let got: Vec<f64> = stats.languages["en"]
        .percentiles
        .iter()
        .map(|p| p.q)
        .collect();
    assert_eq!(got, [0.75, 0.9, 0.95]);
    // Brute force, as Mondal et al.'s act_stat: per batch, torch.quantile of each neuron over
    // the batch's tokens at every q, averaged over the batches.
    let batches = batch_gates(&model, &all, 2);
    for q in qs {
        let want = mean_batch_quantile(&batches, width, q);
        let mean = stats.mean_percentile("en", q).unwrap();
        for (i, (g, w)) in mean.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5, "q {q} neuron {i}: {g} vs {w}");
        }
    }
    // The one-quantile path (a selection instead of a sort) gives the same numbers.
    let mut single = ActivationStats::new(&model);
    single
        .collect_with_percentile(&model, "en", &all, 2, 0.9, &device, |_| {})
        .unwrap();
    let (a, b) = (
        single.mean_percentile("en", 0.9).unwrap(),
        stats.mean_percentile("en", 0.9).unwrap(),
    );
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-9));
    // Shards with other quantiles do not merge; a quantile not collected is a clear error.
    let err = stats.merge(&single).unwrap_err().to_string();
    assert!(err.contains("language en: cannot merge"), "{err}");
    let err = single.mean_percentile("en", 0.95).unwrap_err().to_string();
    assert!(
        err.contains("no mean per-batch percentile at q = 0.95 (collected: q = 0.9)"),
        "{err}"
    );

    // mean_p95 writes the language's mean per-batch 95th percentile into the neurons.
    assert_eq!(
        InterventionValue::parse("mean_p95"),
        Some(InterventionValue::MeanPercentile(0.95))
    );
    for bad in ["mean_p0", "mean_p100", "mean_p", "mean_p9x", "mean_p-5"] {
        assert_eq!(InterventionValue::parse(bad), None, "{bad}");
    }
    let set = NeuronSet::from_pairs([(1, 3)]);
    let mut ctx = intervention_context::<B>(
        &set,
        layers,
        width,
        &InterventionValue::MeanPercentile(0.95),
        Some((&stats, "en")),
        &device,
    )
    .unwrap();
    ctx.record_ffn = true;
    model.forward(
        models::token_ids::<B, _>(&all[..1], &device),
        None,
        &mut ctx,
    );
    let (act, _) = values(ctx.ffn_activations[1].clone());
    let p95 = stats.mean_percentile("en", 0.95).unwrap()[width + 3];
    for pos in 0..8 {
        assert!((act[pos * width + 3] as f64 - p95).abs() < 1e-6);
    }

    // Round trip; a file of the earlier layout (one `percentile`) still loads.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.json");
    // (serde_json's default float reading may move a last bit, so values compare within 1e-12.)
    let same_percentiles = |a: &ActivationStats, b: &ActivationStats| {
        let (a, b) = (
            &a.languages["en"].percentiles,
            &b.languages["en"].percentiles,
        );
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.q == y.q
                    && x.batches == y.batches
                    && x.sum.iter().zip(&y.sum).all(|(u, v)| (u - v).abs() < 1e-12)
            })
    };
    stats.save(&path).unwrap();
    assert!(same_percentiles(
        &ActivationStats::load(&path).unwrap(),
        &stats
    ));
    single.save(&path).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let en = v["languages"]["en"].as_object_mut().unwrap();
    let list = en.remove("percentiles").unwrap();
    en.insert("percentile".into(), list[0].clone());
    std::fs::write(&path, v.to_string()).unwrap();
    assert!(same_percentiles(
        &ActivationStats::load(&path).unwrap(),
        &single
    ));
}

#[test]
fn kojimas_on_p50_is_forced_at_the_gate_before_silu() {
    use models::ReplaceAt;
    use neurons::selection::quantile_linear;
    use neurons::{InterventionValue, intervention_context_at, window_responses};

    let model = load("tiny-llama");
    let device = Default::default();
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let en = windows(5, 8, 11);
    let mut stats = ActivationStats::new(&model);
    stats
        .collect(&model, "en", &en, 2, &device, |_| {})
        .unwrap();
    let err = stats.response_median("en").unwrap_err().to_string();
    assert!(err.contains("no median responses (on_p50)"), "{err}");
    stats
        .collect_response_median(&model, "en", &en, 2, &device, |_| {})
        .unwrap();
    // Brute force: each window's mean gate pre-activation per neuron, then the median over the
    // five windows (the third smallest), as np.percentile(q=50).
    let responses = window_responses(&model, &en, 1, &device, |_| {});
    let median = stats.response_median("en").unwrap();
    for i in 0..layers * width {
        let mut column: Vec<f32> = responses.iter().map(|r| r[i]).collect();
        column.sort_by(f32::total_cmp);
        assert_eq!(column.len(), 5);
        assert!((median[i] - column[2] as f64).abs() < 1e-6, "neuron {i}");
        assert!((median[i] - quantile_linear(&column, 0.5)).abs() < 1e-12);
    }
    assert_eq!(
        InterventionValue::parse("on_p50"),
        Some(InterventionValue::OnMedian)
    );

    // Forced at the gate: the recorded gate pre-activation is the median at every position and
    // the activation is silu of it; forced at the activation, the gate is untouched.
    let set = ablation::NeuronSet::from_pairs([(1, 5)]);
    let value = median[width + 5];
    let input = || models::token_ids::<B, _>(&en[..1], &device);
    for at in [ReplaceAt::Gate, ReplaceAt::Activation] {
        let mut ctx = intervention_context_at::<B>(
            &set,
            layers,
            width,
            &InterventionValue::OnMedian,
            Some((&stats, "en")),
            at,
            &device,
        )
        .unwrap();
        ctx.record_ffn = true;
        ctx.record_gate = true;
        model.forward(input(), None, &mut ctx);
        let (gate, _) = values(ctx.gate_preactivations[1].clone());
        let (act, _) = values(ctx.ffn_activations[1].clone());
        let silu = |x: f64| x / (1.0 + (-x).exp());
        for pos in 0..8 {
            let (g, a) = (gate[pos * width + 5] as f64, act[pos * width + 5] as f64);
            match at {
                ReplaceAt::Gate => {
                    assert!((g - value).abs() < 1e-6, "{at:?} gate {g} vs {value}");
                    assert!((a - silu(value)).abs() < 1e-6, "{at:?} act {a}");
                }
                ReplaceAt::Activation => {
                    assert!((a - value).abs() < 1e-6, "{at:?} act {a} vs {value}");
                    assert!((g - value).abs() > 1e-4, "{at:?}: the gate is the model's");
                }
            }
        }
    }

    // Medians do not merge; they survive a save and load.
    let err = stats.clone().merge(&stats).unwrap_err().to_string();
    assert!(err.contains("cannot merge median responses"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stats.json");
    stats.save(&path).unwrap();
    let back = ActivationStats::load(&path)
        .unwrap()
        .response_median("en")
        .unwrap();
    assert!(back.iter().zip(&median).all(|(a, b)| (a - b).abs() < 1e-12));
}

#[test]
fn window_responses_and_average_precision_sets() {
    use neurons::{average_precision, average_precision_sets, window_responses};

    let model = load("tiny-llama");
    let device = Default::default();
    let (layers, width) = (model.num_layers(), model.intermediate_size());
    let en = windows(3, 8, 7);
    let fr = windows(2, 8, 8);
    let r_en = window_responses(&model, &en, 2, &device, |_| {});
    let r_fr = window_responses(&model, &fr, 2, &device, |_| {});
    // Brute force: the mean of the recorded gate over the window's 8 tokens.
    let input = models::token_ids::<B, _>(&en[1..2], &device);
    let mut ctx = ForwardContext::eval().recording_gate();
    model.forward(input, None, &mut ctx);
    let (g, _) = values(ctx.gate_preactivations[1].clone());
    for j in 0..width {
        let want: f32 = (0..8).map(|t| g[t * width + j]).sum::<f32>() / 8.0;
        assert!((r_en[1][width + j] - want).abs() < 1e-5, "neuron {j}");
    }

    let langs = vec!["en".to_string(), "fr".to_string()];
    let sets =
        average_precision_sets(&langs, &[r_en.clone(), r_fr.clone()], layers, width, 3).unwrap();
    // Each set: the 3 highest- and 3 lowest-AP units, scored by their AP.
    let labels = [true, true, true, false, false];
    let ap: Vec<f64> = (0..layers * width)
        .map(|u| {
            let scores: Vec<f64> = r_en.iter().chain(&r_fr).map(|r| r[u] as f64).collect();
            average_precision(&labels, &scores).unwrap()
        })
        .collect();
    let en_set = &sets["en"];
    assert!(en_set.len() <= 6 && en_set.len() >= 4, "{}", en_set.len());
    let best = ap.iter().cloned().fold(f64::MIN, f64::max);
    let worst = ap.iter().cloned().fold(f64::MAX, f64::min);
    let scores: Vec<f64> = en_set.rows().iter().map(|r| r.score.unwrap()).collect();
    assert!(
        scores.contains(&best) && scores.contains(&worst),
        "{scores:?}"
    );
    for r in en_set.rows() {
        assert_eq!(r.score.unwrap(), ap[r.layer * width + r.neuron]);
        assert_eq!(r.language.as_deref(), Some("en"));
    }
    let err = average_precision_sets(&langs[..1], &[r_en], layers, width, 3).unwrap_err();
    assert!(err.to_string().contains("at least 2 languages"), "{err}");
}
