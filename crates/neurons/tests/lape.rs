//! Neuron selection (LAPE as Tang et al. and as Mondal et al., top-k per language, average
//! precision) against a NumPy re-implementation of the official scripts
//! (tests/fixtures/lape/make_lape_fixture.py).

use std::collections::BTreeMap;

use neurons::selection::{
    LanguageTable, LapeConfig, LapeVariant, average_precision, lape, py_round, top_and_bottom,
    top_per_language,
};
use serde_json::Value;

use crate::util::{fixture, read_json};

fn expected() -> Value {
    read_json(&fixture("lape/expected.json"))
}

/// The table at `e[key]`, or at `e[group][key]`, shaped by the fixture's top-level fields.
fn table(e: &Value, key: &str) -> LanguageTable {
    table_in(e, e, key)
}

fn table_in(e: &Value, group: &Value, key: &str) -> LanguageTable {
    let languages: Vec<String> = serde_json::from_value(e["languages"].clone()).unwrap();
    let (n_layers, width) = (
        e["n_layers"].as_u64().unwrap() as usize,
        e["width"].as_u64().unwrap() as usize,
    );
    let rows: Vec<Vec<Vec<f64>>> = serde_json::from_value(group[key].clone()).unwrap();
    let flat: Vec<Vec<f64>> = rows
        .into_iter()
        .map(|r| r.into_iter().flatten().collect())
        .collect();
    if key == "counts" {
        let counts: Vec<Vec<u64>> = flat
            .iter()
            .map(|r| r.iter().map(|&c| c as u64).collect())
            .collect();
        let n: Vec<u64> = serde_json::from_value(e["n_tokens"].clone()).unwrap();
        LanguageTable::probabilities(languages, n_layers, width, &counts, &n).unwrap()
    } else {
        let values = flat
            .iter()
            .map(|r| r.iter().map(|&v| v as f32).collect())
            .collect();
        LanguageTable::new(languages, n_layers, width, values).unwrap()
    }
}

fn pairs(v: &Value) -> Vec<(usize, usize)> {
    let raw: Vec<(usize, usize)> = serde_json::from_value(v.clone()).unwrap();
    raw
}

fn set_pairs(
    sets: &BTreeMap<String, ablation::NeuronSet>,
) -> BTreeMap<String, Vec<(usize, usize)>> {
    sets.iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s.rows().iter().map(|r| (r.layer, r.neuron)).collect(),
            )
        })
        .collect()
}

fn check_lape(e: &Value, key: &str, config: LapeConfig) {
    let probs = table(e, "counts");
    let want = &e[key];
    let got = lape(&probs, &config).unwrap();
    let threshold = want["threshold"].as_f64().unwrap();
    assert!(
        (got.threshold - threshold).abs() < 1e-7,
        "{key}: threshold {} vs {threshold}",
        got.threshold
    );
    assert_eq!(got.m, want["m"].as_u64().unwrap() as usize, "{key}: m");
    assert_eq!(
        got.selected,
        pairs(&want["selected"]),
        "{key}: selected neurons"
    );
    let want_sets: BTreeMap<String, Vec<(usize, usize)>> = want["sets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), pairs(v)))
        .collect();
    assert_eq!(set_pairs(&got.sets), want_sets, "{key}: per-language sets");
    if let Some(entropy) = want.get("entropy") {
        // null stands for +inf (filtered out).
        let rows: Vec<Vec<Option<f64>>> = serde_json::from_value(entropy.clone()).unwrap();
        let flat: Vec<f64> = rows
            .into_iter()
            .flatten()
            .map(|v| v.unwrap_or(f64::INFINITY))
            .collect();
        assert_eq!(flat.len(), got.entropy.len());
        for (i, (a, b)) in got.entropy.iter().zip(&flat).enumerate() {
            assert!(
                (a.is_infinite() && b.is_infinite()) || (a - b).abs() < 1e-5,
                "{key}: entropy of neuron {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn lape_matches_the_official_scripts() {
    let e = expected();
    check_lape(&e, "tang", LapeConfig::default());
    check_lape(
        &e,
        "tang_top5",
        LapeConfig {
            top_rate: 0.05,
            ..LapeConfig::default()
        },
    );
    check_lape(
        &e,
        "mondal",
        LapeConfig {
            variant: LapeVariant::Mondal,
            ..LapeConfig::default()
        },
    );
}

#[test]
fn top_per_language_and_average_precision_match_numpy_and_sklearn() {
    let e = expected();
    let scores = table_in(&e, &e["ap90"], "scores");
    let got = top_per_language(&scores, 0.00125).unwrap();
    let want: BTreeMap<String, Vec<(usize, usize)>> = e["ap90"]["sets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), pairs(v)))
        .collect();
    // round(0.00125 · 4 · 500) = round(2.5) = 2 (Python rounds half to even).
    assert_eq!(e["ap90"]["m"], 2);
    assert_eq!(set_pairs(&got), want);

    let k = &e["kojima"];
    let labels: Vec<bool> = k["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v == 1)
        .collect();
    let responses: Vec<Vec<f64>> = serde_json::from_value(k["responses"].clone()).unwrap();
    let want: Vec<f64> = serde_json::from_value(k["ap"].clone()).unwrap();
    let got: Vec<f64> = responses
        .iter()
        .map(|r| average_precision(&labels, r).unwrap())
        .collect();
    for (u, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-12, "unit {u}: AP {a} vs sklearn {b}");
    }
    let (top, bottom) = top_and_bottom(&got, 3);
    assert_eq!(top[0], 3, "the planted unit ranks first");
    assert!(got[bottom[0]] <= got[bottom[1]] && got[bottom[1]] <= got[bottom[2]]);
    assert_eq!(average_precision(&[false, false], &[0.1, 0.2]), None);
}

#[test]
fn rounding_and_bad_parameters() {
    assert_eq!(
        [0.5, 1.5, 2.5, 3.5, 2.4, 2.6].map(py_round),
        [0, 2, 2, 4, 2, 3]
    );
    let e = expected();
    let probs = table(&e, "counts");
    let err = lape(
        &probs,
        &LapeConfig {
            top_rate: 0.0,
            ..LapeConfig::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("top_rate = 0"), "{err}");
    let err = LanguageTable::new(vec!["en".into()], 2, 3, vec![vec![0.0; 5]]).unwrap_err();
    assert!(
        err.to_string()
            .contains("language en: 5 values, expected 2 layers × 3 neurons"),
        "{err}"
    );
    let err =
        LanguageTable::probabilities(vec!["en".into()], 1, 2, &[vec![0, 0]], &[0]).unwrap_err();
    assert!(err.to_string().contains("language en: no tokens"), "{err}");
}
