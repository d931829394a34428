//! Metrics against NumPy / scikit-learn / SciPy (fixture from make_metric_fixtures.py).

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
