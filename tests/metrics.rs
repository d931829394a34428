//! Metrics and report statistics against NumPy / scikit-learn / SciPy (fixtures from
//! make_metric_fixtures.py and make_report_stats_fixture.py).

use runner::metrics::{accuracy, binary_f1, matthews, pearson, spearman};
use serde_json::Value;

use crate::util::{fixture, read_json};

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn metrics_match_the_reference() {
    let reference = read_json(&fixture("metrics.json"));
    for case in reference["classification"].as_array().unwrap() {
        let (pred, gold) = (ints(&case["pred"]), ints(&case["gold"]));
        let want = |k: &str| case[k].as_f64().unwrap();
        assert!((accuracy(&pred, &gold) - want("accuracy")).abs() < 1e-12);
        assert!((matthews(&pred, &gold) - want("matthews")).abs() < 1e-12);
        assert!((binary_f1(&pred, &gold) - want("f1")).abs() < 1e-12);
    }
    for case in reference["regression"].as_array().unwrap() {
        let (pred, gold) = (floats(&case["pred"]), floats(&case["gold"]));
        assert!((pearson(&pred, &gold) - case["pearson"].as_f64().unwrap()).abs() < 1e-12);
        assert!((spearman(&pred, &gold) - case["spearman"].as_f64().unwrap()).abs() < 1e-12);
    }
}

#[test]
fn report_statistics_match_scipy() {
    use runner::commands::report::{mean_std, sign_flip_p};
    let cases = read_json(&fixture("report_stats.json"));
    for case in cases.as_array().unwrap() {
        let d = floats(&case["diffs"]);
        let p = sign_flip_p(&d);
        assert!(
            (p - case["p"].as_f64().unwrap()).abs() < 1e-12,
            "{d:?}: p {p} vs {}",
            case["p"]
        );
        let (m, s) = mean_std(&d);
        assert!((m - case["mean"].as_f64().unwrap()).abs() < 1e-12);
        assert!(
            (s - case["std"].as_f64().unwrap()).abs() < 1e-12,
            "{d:?}: std {s}"
        );
    }
}

#[test]
fn qa_metrics_match_the_reference() {
    use runner::metrics::{squad_em_f1, squad_normalize, token_id_scores};

    let reference = read_json(&fixture("qa/metrics.json"));
    for case in reference["strings"].as_array().unwrap() {
        let p = case["prediction"].as_str().unwrap();
        let golds: Vec<String> = serde_json::from_value(case["golds"].clone()).unwrap();
        assert_eq!(
            squad_normalize(p),
            case["normalized"].as_str().unwrap(),
            "{p:?}"
        );
        let (em, f1) = squad_em_f1(p, &golds);
        assert_eq!(em, case["em"].as_f64().unwrap(), "EM {p:?}");
        assert!(
            (f1 - case["f1"].as_f64().unwrap()).abs() < 1e-12,
            "F1 {p:?}"
        );
    }
    for case in reference["ids"].as_array().unwrap() {
        let ids = |k: &str| -> Vec<u32> { serde_json::from_value(case[k].clone()).unwrap() };
        let (em, p, r, f1) = token_id_scores(&ids("pred"), &ids("gold"));
        for (got, key) in [(em, "em"), (p, "precision"), (r, "recall"), (f1, "f1")] {
            assert!(
                (got - case[key].as_f64().unwrap()).abs() < 1e-12,
                "{key} of {case}"
            );
        }
    }
}
