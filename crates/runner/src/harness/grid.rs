//! A grid's cells ([`Grid`]: read, expanded, checked, planned), and the pieces of expansion
//! that the kinds share: training-setting axes, their combinations, the decoder-model check and the check
//! that no two cells are the same run.
//!
//! Expansion is each kind's (its `expand`, in its folder); the registry puts them together. The
//! order is stable and documented there; cell numbers (for `--cell N`) count from 0 in it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

pub use crate::harness::cell::{BaselineArm, Cell, CellKind, Expand, Input, RunContext, Shared};
use crate::harness::experiment::{
    ExperimentFile, ModelKind, TrainConfig, TrainOverrides, setting_from_value,
};
use crate::harness::lock::is_held;
use crate::harness::log::{PROGRESS_FILE, ProgressFile};
use crate::harness::progress::human;
use crate::harness::results::{RunStatus, read_result, run_dir};

/// An experiment file, expanded.
pub struct Grid<C> {
    /// The file.
    pub file: ExperimentFile,
    /// Its cells in order.
    pub cells: Vec<Cell<C>>,
    /// `DIR/<grid>`.
    pub dir: PathBuf,
}

impl<C: Expand> Grid<C> {
    /// Read and expand `path` (`${ARTEFACTS}` is `artefacts`); results under `output/<name>`.
    pub fn open(path: &Path, output: &Path, artefacts: &Path) -> Result<Self> {
        let file = ExperimentFile::read(path, artefacts)?;
        let cells = C::expand(&file)?;
        let dir = output.join(&file.experiment.name);
        Ok(Self { file, cells, dir })
    }

    /// Check that every cell can start: unset `${VAR}`s in its paths, then its kind's checks
    /// ([`CellKind::check`]), once per model and subject. Returns one line per problem.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = BTreeSet::new();
        for cell in &self.cells {
            let c = &cell.config;
            if !seen.insert((c.model_name().to_owned(), c.subject())) {
                continue;
            }
            let at = format!("cell {} ({})", cell.index, cell.run_id);
            let mut paths = vec![Input {
                what: "model",
                name: c.model_name(),
                path: c.model_dir(),
            }];
            paths.extend(c.inputs());
            let unset: Vec<String> = paths
                .iter()
                .filter_map(|i| {
                    let text = i.path.to_string_lossy();
                    let start = text.find("${")?;
                    let var = text[start + 2..].split('}').next().unwrap_or("");
                    Some(format!(
                        "{at}: {} `{}`: the environment variable {var} is not set (the path is \
                         {})",
                        i.what,
                        i.name,
                        i.path.display()
                    ))
                })
                .collect();
            if !unset.is_empty() {
                problems.extend(unset);
                continue;
            }
            problems.extend(c.check().into_iter().map(|e| format!("{at}: {e:#}")));
        }
        problems
    }

    /// One line per cell: index, run id, status (`finished`, `failed`, `interrupted`, `pending`, or
    /// `running` with how far it is, read from its `progress.json`), axis values; then how many
    /// cells are in each state and, once some have finished, about how long the rest take in one
    /// process
    /// (the running cells' own estimates, and the finished cells' mean time for each other cell).
    pub fn plan(&self) -> String {
        let mut out = format!(
            "grid `{}`: {} cells, results in {}\n",
            self.file.experiment.name,
            self.cells.len(),
            self.dir.display()
        );
        let (mut done, mut failed, mut interrupted, mut pending) = (0usize, 0usize, 0usize, 0usize);
        let mut took = Vec::new();
        // Running cells: the fraction of their work left, and their own estimate when known.
        let mut running: Vec<(f64, Option<f64>)> = Vec::new();
        for cell in &self.cells {
            let params: Vec<String> = cell
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let dir = run_dir(&self.dir, cell);
            let (state, detail) = match read_result(&self.dir, cell) {
                Some(r) if r.finished() => {
                    done += 1;
                    took.push(r.seconds);
                    (r.status.to_string(), String::new())
                }
                Some(r) if r.status == RunStatus::Interrupted => {
                    interrupted += 1;
                    (r.status.to_string(), String::new())
                }
                Some(r) => {
                    failed += 1;
                    (r.status.to_string(), String::new())
                }
                None if is_held(&dir) => {
                    let progress = std::fs::read_to_string(dir.join(PROGRESS_FILE))
                        .ok()
                        .and_then(|t| serde_json::from_str::<ProgressFile>(&t).ok());
                    let detail = match &progress {
                        Some(p) => {
                            let mut d = format!(
                                "  [{} {}/{} ({}%)",
                                p.unit,
                                p.done,
                                p.total,
                                100 * p.done / p.total.max(1)
                            );
                            if let Some(left) = p.seconds_left {
                                d += &format!(", about {} left", human(left));
                            }
                            d + "]"
                        }
                        None => String::new(),
                    };
                    running.push(match progress {
                        Some(p) if p.unit == "steps" => {
                            (1.0 - p.done as f64 / p.total.max(1) as f64, p.seconds_left)
                        }
                        _ => (1.0, None),
                    });
                    ("running".into(), detail)
                }
                None => {
                    pending += 1;
                    ("pending".into(), String::new())
                }
            };
            out.push_str(&format!(
                "{:>4}  {}  {state:<8}{detail}  {}\n",
                cell.index,
                cell.run_id,
                params.join(" ")
            ));
        }
        out.push_str(&format!(
            "{done} done, {failed} failed, {} running, {pending} pending",
            running.len()
        ));
        if interrupted > 0 {
            out.push_str(&format!(
                ", {interrupted} interrupted (resumed by the next run)"
            ));
        }
        if !took.is_empty() && pending + interrupted + running.len() > 0 {
            let mean = took.iter().sum::<f64>() / took.len() as f64;
            let left: f64 = (pending + interrupted) as f64 * mean
                + running
                    .iter()
                    .map(|(share, own)| own.unwrap_or(share * mean))
                    .sum::<f64>();
            out.push_str(&format!(
                "; about {} left in one process (a cell took {} on average)",
                human(left),
                human(mean)
            ));
        }
        out.push('\n');
        out
    }
}

/// Two cells with one run id: an axis repeats a value.
pub fn check_unique<C>(file: &ExperimentFile, cells: &[Cell<C>]) -> Result<()> {
    let mut seen = BTreeMap::new();
    for c in cells {
        if let Some(other) = seen.insert(c.run_id.clone(), c.index) {
            bail!(
                "{}: cells {other} and {} are the same run (an axis repeats a value)",
                file.path.display(),
                c.index
            );
        }
    }
    Ok(())
}

/// `grid.model` is not empty and names decoders of the file (`what` needs them).
pub fn check_decoder_models(file: &ExperimentFile, what: &str) -> Result<()> {
    let e = &file.experiment;
    if e.grid.model.is_empty() {
        bail!(
            "{}: the grid needs at least one model",
            file.locate(&["grid"])
        );
    }
    for (i, m) in e.grid.model.iter().enumerate() {
        let key = ["grid", "model", &i.to_string()];
        let Some(spec) = e.models.get(m) else {
            bail!(
                "{}: unknown model `{m}`; the file defines {}",
                file.locate(&key),
                names(e.models.keys())
            );
        };
        if spec.kind != ModelKind::Decoder {
            bail!(
                "{}: model `{m}` is an encoder; {what} need kind = \"decoder\"",
                file.locate(&key)
            );
        }
    }
    Ok(())
}

/// A training-setting axis: its key, and each value as text and as a setting.
pub type TrainAxis = (String, Vec<(String, TrainOverrides)>);

/// The training-setting axes of `grid.train`, each value checked as a setting on its own.
pub fn train_axes(file: &ExperimentFile) -> Result<Vec<TrainAxis>> {
    let mut axes = Vec::new();
    for (key, values) in &file.experiment.grid.train {
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
    Ok(axes)
}

/// `base` with each combination of the training axes applied (first axis outermost), checked:
/// the settings and the axis values as text. `cell` names the cell in an error.
pub fn train_settings(
    file: &ExperimentFile,
    axes: &[TrainAxis],
    base: &TrainConfig,
    cell: &str,
) -> Result<Vec<(TrainConfig, BTreeMap<String, String>)>> {
    cartesian(axes)
        .into_iter()
        .map(|combo| {
            let mut train = base.clone();
            let mut params = BTreeMap::new();
            for (key, (text, o)) in axes.iter().map(|a| &a.0).zip(&combo) {
                train.apply(o);
                params.insert(key.clone(), text.clone());
            }
            train
                .validate()
                .map_err(|msg| anyhow::anyhow!("{}: cell {cell}: {msg}", file.path.display()))?;
            Ok((train, params))
        })
        .collect()
}

/// Every combination of one value per axis, first axis outermost (one empty combination when
/// there are no axes).
pub fn cartesian<T: Clone>(axes: &[(String, Vec<T>)]) -> Vec<Vec<T>> {
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

/// The name an enum value has in experiment files.
pub fn kebab<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// Backquoted names for an error message (`none` when there are none).
pub fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = keys.map(|k| format!("`{k}`")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
