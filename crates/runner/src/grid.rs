//! Grid expansion: from an experiment file to its cells, in a stable, documented order.
//!
//! Order (outermost first): the (model, dataset) pairs — `grid.pairs` in file order, or every
//! model of `grid.model` (in order) with every dataset of `grid.dataset` (in order) —, then the
//! losses of `grid.loss` (or the pair's own `loss` list), then the training-setting axes of `grid.train` (keys in alphabetical
//! order, values in file order, the first key outermost), then the seeds. Cell numbers (for
//! `--cell N`) count from 0 in this order.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::experiment::{
    DatasetSpec, ExperimentFile, LossSpec, ModelSpec, TrainConfig, TrainOverrides,
    setting_from_value,
};

/// One cell of a grid, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Position in the expansion order.
    pub index: usize,
    /// Short hash of [`Cell::config`]: the run folder's name.
    pub run_id: String,
    /// The axis values of this cell (`model`, `dataset`, `loss`, `seed`, and each training
    /// setting that is an axis), as text for the results table.
    pub params: BTreeMap<String, String>,
    /// Everything the run depends on.
    pub config: CellConfig,
}

/// The resolved configuration of a cell, written as the run's `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellConfig {
    /// The grid's name.
    pub grid: String,
    /// Model name.
    pub model_name: String,
    /// Dataset name.
    pub dataset_name: String,
    /// Loss name.
    pub loss_name: String,
    /// Seed of every random choice in the run.
    pub seed: u64,
    /// The model's checkpoint folder, resolved (not part of the run id, so a moved checkout
    /// keeps its results).
    pub model_dir: std::path::PathBuf,
    /// The dataset's folder, resolved (not part of the run id).
    pub dataset_dir: std::path::PathBuf,
    /// The model (path as written).
    pub model: ModelSpec,
    /// The dataset (path as written).
    pub dataset: DatasetSpec,
    /// The loss.
    pub loss: LossSpec,
    /// Training settings.
    pub train: TrainConfig,
}

/// Expand `file` into its cells. Names that the grid uses but the file does not define, empty
/// axes, unknown settings and out-of-range values are errors naming file, line and key.
pub fn expand(file: &ExperimentFile) -> Result<Vec<Cell>> {
    let e = &file.experiment;
    let g = &e.grid;

    // (model, dataset) pairs.
    let pairs: Vec<(String, String, Vec<String>)> = if !g.pairs.is_empty() {
        if !g.model.is_empty() || !g.dataset.is_empty() {
            bail!(
                "{}: use either `pairs` or `model` × `dataset`, not both",
                file.locate(&["grid", "pairs"])
            );
        }
        g.pairs
            .iter()
            .map(|p| (p.model.clone(), p.dataset.clone(), p.loss.clone()))
            .collect()
    } else {
        for (axis, values) in [("model", &g.model), ("dataset", &g.dataset)] {
            if values.is_empty() {
                bail!(
                    "{}: the grid needs at least one {axis} (or `pairs`)",
                    file.locate(&["grid"])
                );
            }
        }
        g.model
            .iter()
            .flat_map(|m| {
                g.dataset
                    .iter()
                    .map(move |d| (m.clone(), d.clone(), Vec::new()))
            })
            .collect()
    };
    for (i, (m, d, _)) in pairs.iter().enumerate() {
        let (mkey, dkey) = if g.pairs.is_empty() {
            (
                vec!["grid".to_owned(), "model".to_owned()],
                vec!["grid".to_owned(), "dataset".to_owned()],
            )
        } else {
            let p = vec!["grid".to_owned(), "pairs".to_owned(), i.to_string()];
            (p.clone(), p)
        };
        if !e.models.contains_key(m) {
            bail!(
                "{}: unknown model `{m}`; the file defines {}",
                file.locate(&mkey.iter().map(String::as_str).collect::<Vec<_>>()),
                names(e.models.keys())
            );
        }
        if !e.datasets.contains_key(d) {
            bail!(
                "{}: unknown dataset `{d}`; the file defines {}",
                file.locate(&dkey.iter().map(String::as_str).collect::<Vec<_>>()),
                names(e.datasets.keys())
            );
        }
    }

    // Losses.
    let mut losses = e.losses.clone();
    if let Some(spec) = losses.get("baseline")
        && *spec != LossSpec::Baseline
    {
        bail!(
            "{}: `baseline` is predefined as the plain task loss; name this loss otherwise",
            file.locate(&["losses", "baseline"])
        );
    }
    losses.insert("baseline".into(), LossSpec::Baseline);
    for (name, spec) in &losses {
        check_loss(spec)
            .map_err(|msg| anyhow::anyhow!("{}: {msg}", file.locate(&["losses", name])))?;
    }
    let loss_names: Vec<String> = if g.loss.is_empty() {
        vec!["baseline".into()]
    } else {
        g.loss.clone()
    };
    let check_names = |names_: &[String], key: &[&str]| -> Result<()> {
        for name in names_ {
            if !losses.contains_key(name) {
                bail!(
                    "{}: unknown loss `{name}`; defined: {}",
                    file.locate(key),
                    names(losses.keys())
                );
            }
        }
        Ok(())
    };
    check_names(&loss_names, &["grid", "loss"])?;
    for (i, (_, _, own)) in pairs.iter().enumerate() {
        check_names(own, &["grid", "pairs", &i.to_string(), "loss"])?;
    }
    let seeds = if g.seed.is_empty() {
        vec![1]
    } else {
        g.seed.clone()
    };

    // Training-setting axes: each value checked as a setting on its own.
    let mut axes: Vec<(String, Vec<(String, TrainOverrides)>)> = Vec::new();
    for (key, values) in &g.train {
        let where_ = || file.locate(&["grid", "train", key]);
        let list = match values {
            toml::Value::Array(a) if !a.is_empty() => a,
            _ => bail!("{}: an axis is a non-empty list of values", where_()),
        };
        let mut parsed = Vec::new();
        for v in list {
            let o =
                setting_from_value(key, v).map_err(|err| anyhow::anyhow!("{}: {err}", where_()))?;
            parsed.push((v.to_string(), o));
        }
        axes.push((key.clone(), parsed));
    }

    let mut cells = Vec::new();
    for (model_name, dataset_name, own_losses) in &pairs {
        let model = &e.models[model_name];
        let dataset = &e.datasets[dataset_name];
        let mut base = TrainConfig::default();
        base.apply(&e.train);
        base.apply(&dataset.train);
        base.apply(&model.train);
        let pair_losses = if own_losses.is_empty() {
            &loss_names
        } else {
            own_losses
        };
        for loss_name in pair_losses {
            let mut with_loss = base.clone();
            if let LossSpec::Comparative { train, .. } = &losses[loss_name] {
                with_loss.apply(train);
            }
            for combo in cartesian(&axes) {
                let mut train = with_loss.clone();
                let mut params = BTreeMap::new();
                for (key, (text, o)) in axes.iter().map(|a| &a.0).zip(&combo) {
                    train.apply(o);
                    params.insert(key.clone(), text.clone());
                }
                train.validate().map_err(|msg| {
                    anyhow::anyhow!(
                        "{}: cell {model_name} × {dataset_name}: {msg}",
                        file.path.display()
                    )
                })?;
                for &seed in &seeds {
                    let config = CellConfig {
                        grid: e.name.clone(),
                        model_name: model_name.clone(),
                        dataset_name: dataset_name.clone(),
                        loss_name: loss_name.clone(),
                        seed,
                        model_dir: file.resolve(&model.path),
                        dataset_dir: file.resolve(&dataset.path),
                        model: model.clone(),
                        dataset: dataset.clone(),
                        loss: losses[loss_name].clone(),
                        train: train.clone(),
                    };
                    let mut params = params.clone();
                    params.insert("model".into(), model_name.clone());
                    params.insert("dataset".into(), dataset_name.clone());
                    params.insert("loss".into(), loss_name.clone());
                    params.insert("seed".into(), seed.to_string());
                    cells.push(Cell {
                        index: cells.len(),
                        run_id: run_id(&config),
                        params,
                        config,
                    });
                }
            }
        }
    }
    let mut seen = BTreeMap::new();
    for c in &cells {
        if let Some(other) = seen.insert(c.run_id.clone(), c.index) {
            bail!(
                "{}: cells {other} and {} are the same run (an axis repeats a value)",
                file.path.display(),
                c.index
            );
        }
    }
    Ok(cells)
}

/// Every combination of one value per axis, first axis outermost (one empty combination when
/// there are no axes).
fn cartesian<T: Clone>(axes: &[(String, Vec<T>)]) -> Vec<Vec<T>> {
    axes.iter().fold(vec![Vec::new()], |acc, (_, values)| {
        acc.iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut p = prefix.clone();
                    p.push(v.clone());
                    p
                })
            })
            .collect()
    })
}

fn check_loss(spec: &LossSpec) -> Result<(), String> {
    use crate::experiment::CmpMode;
    let LossSpec::Comparative {
        n_drop,
        n_crop,
        p,
        mode,
        primary,
        weight,
        temperature,
        ..
    } = spec
    else {
        return Ok(());
    };
    if *n_drop == 0 && *n_crop == 0 {
        return Err("a comparative loss needs n_drop > 0 or n_crop > 0".into());
    }
    if let Some(p) = p
        && !(0.0..1.0).contains(p)
    {
        return Err(format!("p must be in [0, 1), got {p}"));
    }
    if temperature.is_nan() || *temperature <= 0.0 {
        return Err(format!("temperature must be > 0, got {temperature}"));
    }
    match mode {
        CmpMode::Weighted if primary.is_none() || weight.is_none() => {
            Err("mode = \"weighted\" needs `primary` and `weight`".into())
        }
        CmpMode::Comparative if primary.is_some() || weight.is_some() => Err(
            "`primary` and `weight` belong to mode = \"weighted\" (the comparative mode has none)"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = keys.map(|k| format!("`{k}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// A 12-hex-digit FNV-1a hash of the cell's configuration (as TOML, paths as written, without
/// `checkpoints` and `save_model`).
pub fn run_id(config: &CellConfig) -> String {
    let mut config = config.clone();
    config.model_dir = Default::default();
    config.dataset_dir = Default::default();
    // Settings that do not change the numbers do not change the run.
    config.train.checkpoints = true;
    config.train.save_model = false;
    let text = toml::to_string(&config).expect("a cell config serialises");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{:012x}", h >> 16)
}
