//! Classification and regression datasets: GLUE TSV folders as distributed, and generic JSONL /
//! CSV / Parquet files with a column mapping.
//!
//! Every reader returns examples in file order with labels checked against the dataset's label
//! set; a malformed line, a missing column or a label out of range is an error naming the file
//! and line (Parquet: the row, counted from 1).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::text_column;
use crate::encoder::spec::{DatasetFormat, DatasetSpec, Task};

/// A target.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Label {
    /// A class index into [`Dataset::labels`].
    Class(usize),
    /// A real value (regression).
    Value(f32),
}

/// One example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// The first text segment.
    pub text: String,
    /// The second segment of a pair task.
    pub text_pair: Option<String>,
    /// The target.
    pub label: Label,
}

/// A dataset's training and evaluation splits.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Class names in label order (empty for regression).
    pub labels: Vec<String>,
    /// Training examples.
    pub train: Vec<Example>,
    /// Evaluation examples.
    pub eval: Vec<Example>,
    /// The files they came from.
    pub files: (PathBuf, PathBuf),
}

impl Dataset {
    /// The number of model outputs: classes, or 1 for regression.
    pub fn num_outputs(&self) -> usize {
        self.labels.len().max(1)
    }
}

/// A GLUE task's layout: file names, columns and labels (as the GLUE distribution has them, with
/// the label order of HF `datasets`' `glue` builder).
struct GlueTask {
    train: &'static str,
    eval: &'static str,
    /// Columns by header name, or by index for header-less CoLA.
    text: Col,
    text_pair: Option<Col>,
    label: Col,
    labels: &'static [&'static str],
    /// Labels written as 0/1 rather than names.
    numeric: bool,
    task: Task,
}

#[derive(Clone, Copy)]
enum Col {
    Name(&'static str),
    Index(usize),
}

fn glue_task(name: &str) -> Option<GlueTask> {
    use Col::*;
    let pair = |train, eval, a, b, label, labels, numeric| GlueTask {
        train,
        eval,
        text: Name(a),
        text_pair: Some(Name(b)),
        label: Name(label),
        labels,
        numeric,
        task: Task::Classification,
    };
    Some(match name.to_ascii_uppercase().as_str() {
        "COLA" => GlueTask {
            train: "train.tsv",
            eval: "dev.tsv",
            text: Index(3),
            text_pair: None,
            label: Index(1),
            labels: &["unacceptable", "acceptable"],
            numeric: true,
            task: Task::Classification,
        },
        "SST-2" | "SST2" => GlueTask {
            train: "train.tsv",
            eval: "dev.tsv",
            text: Name("sentence"),
            text_pair: None,
            label: Name("label"),
            labels: &["negative", "positive"],
            numeric: true,
            task: Task::Classification,
        },
        "MRPC" => pair(
            "train.tsv",
            "dev.tsv",
            "#1 String",
            "#2 String",
            "Quality",
            &["not_equivalent", "equivalent"],
            true,
        ),
        "STS-B" | "STSB" => GlueTask {
            task: Task::Regression,
            ..pair(
                "train.tsv",
                "dev.tsv",
                "sentence1",
                "sentence2",
                "score",
                &[],
                true,
            )
        },
        "QQP" => pair(
            "train.tsv",
            "dev.tsv",
            "question1",
            "question2",
            "is_duplicate",
            &["not_duplicate", "duplicate"],
            true,
        ),
        "MNLI" | "MNLI-M" => pair(
            "train.tsv",
            "dev_matched.tsv",
            "sentence1",
            "sentence2",
            "gold_label",
            &["entailment", "neutral", "contradiction"],
            false,
        ),
        "MNLI-MM" => pair(
            "train.tsv",
            "dev_mismatched.tsv",
            "sentence1",
            "sentence2",
            "gold_label",
            &["entailment", "neutral", "contradiction"],
            false,
        ),
        "QNLI" => pair(
            "train.tsv",
            "dev.tsv",
            "question",
            "sentence",
            "label",
            &["entailment", "not_entailment"],
            false,
        ),
        "RTE" => pair(
            "train.tsv",
            "dev.tsv",
            "sentence1",
            "sentence2",
            "label",
            &["entailment", "not_entailment"],
            false,
        ),
        _ => return None,
    })
}

/// The GLUE task names [`load`] knows.
pub const GLUE_TASKS: &[&str] = &[
    "CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "MNLI-mm", "QNLI", "RTE",
];

/// The training and evaluation files `spec` names in `dir` (they may not exist).
pub fn split_files(spec: &DatasetSpec, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    match spec.format {
        DatasetFormat::Glue => {
            let name = spec
                .glue
                .as_deref()
                .context("format = \"glue\" needs `glue = \"<task>\"`")?;
            let t = glue_task(name).with_context(|| {
                format!(
                    "unknown GLUE task `{name}`; known: {}",
                    GLUE_TASKS.join(", ")
                )
            })?;
            if t.task != spec.task {
                bail!(
                    "GLUE {name} is a {:?} task, but the dataset says task = {:?}",
                    t.task,
                    spec.task
                );
            }
            Ok((dir.join(t.train), dir.join(t.eval)))
        }
        DatasetFormat::Squad | DatasetFormat::Hotpot => {
            let (train, eval) = if spec.format == DatasetFormat::Squad {
                ("train-v1.1.json", "dev-v1.1.json")
            } else {
                ("hotpot_train_v1.1.json", "hotpot_dev_distractor_v1.json")
            };
            let file =
                |f: &Option<String>, default: &str| dir.join(f.as_deref().unwrap_or(default));
            Ok((file(&spec.train_file, train), file(&spec.eval_file, eval)))
        }
        DatasetFormat::Ranking => {
            bail!("a ranking dataset names its files in `ranking = {{ … }}`")
        }
        f => {
            let ext = match f {
                DatasetFormat::Jsonl => "jsonl",
                DatasetFormat::Csv => "csv",
                _ => "parquet",
            };
            if spec.columns.is_none() {
                bail!("format = \"{ext}\" needs `columns = {{ text = …, label = … }}`");
            }
            let train = spec
                .train_file
                .clone()
                .unwrap_or_else(|| format!("train.{ext}"));
            let eval = spec
                .eval_file
                .clone()
                .unwrap_or_else(|| format!("validation.{ext}"));
            Ok((dir.join(train), dir.join(eval)))
        }
    }
}

/// Read a dataset's two splits.
pub fn load(spec: &DatasetSpec, dir: &Path) -> Result<Dataset> {
    if !matches!(spec.task, Task::Classification | Task::Regression) {
        bail!(
            "task = {:?} is not sentence classification or regression",
            spec.task
        );
    }
    let (train_path, eval_path) = split_files(spec, dir)?;
    for p in [&train_path, &eval_path] {
        crate::data::expect_file("dataset file", p)?;
    }
    let (train, eval, labels) = match spec.format {
        DatasetFormat::Glue => {
            let name = spec.glue.as_deref().unwrap_or_default();
            let t = glue_task(name)
                .with_context(|| format!("format = \"glue\": unknown GLUE task {name:?}"))?;
            let labels: Vec<String> = spec
                .labels
                .clone()
                .unwrap_or_else(|| t.labels.iter().map(|s| s.to_string()).collect());
            let read = |p: &Path| -> Result<Vec<Example>> {
                let rows = read_tsv(p, !matches!(t.text, Col::Index(_)))?;
                rows_to_examples(
                    p,
                    rows,
                    t.text,
                    t.text_pair,
                    t.label,
                    t.numeric,
                    spec.task,
                    &labels,
                )
            };
            (read(&train_path)?, read(&eval_path)?, labels)
        }
        format => {
            let cols = spec
                .columns
                .as_ref()
                .context("this format needs `columns = { text = …, label = … }`")?;
            let read = |p: &Path| -> Result<Vec<RawRow>> {
                match format {
                    DatasetFormat::Jsonl => {
                        read_jsonl(p, &cols.text, cols.text_pair.as_deref(), &cols.label)
                    }
                    DatasetFormat::Csv => {
                        read_frame(p, true, &cols.text, cols.text_pair.as_deref(), &cols.label)
                    }
                    _ => read_frame(p, false, &cols.text, cols.text_pair.as_deref(), &cols.label),
                }
            };
            let (train_raw, eval_raw) = (read(&train_path)?, read(&eval_path)?);
            let labels = match (&spec.labels, spec.task) {
                (Some(l), _) => l.clone(),
                (None, Task::Regression) => Vec::new(),
                (None, _) => infer_labels(&train_raw),
            };
            let convert = |p: &Path, raw: Vec<RawRow>| -> Result<Vec<Example>> {
                raw.into_iter()
                    .map(|r| {
                        let label =
                            parse_label(&r.label, spec.task, &labels, None).with_context(|| {
                                format!("{}, {}: column `{}`", p.display(), r.at, cols.label)
                            })?;
                        Ok(Example {
                            text: r.text,
                            text_pair: r.text_pair,
                            label,
                        })
                    })
                    .collect()
            };
            (
                convert(&train_path, train_raw)?,
                convert(&eval_path, eval_raw)?,
                labels,
            )
        }
    };
    if spec.task == Task::Classification && labels.len() < 2 {
        bail!(
            "{}: a classification dataset needs at least 2 labels, found {:?}",
            train_path.display(),
            labels
        );
    }
    if train.is_empty() || eval.is_empty() {
        bail!(
            "{}: empty split",
            if train.is_empty() {
                &train_path
            } else {
                &eval_path
            }
            .display()
        );
    }
    Ok(Dataset {
        labels,
        train,
        eval,
        files: (train_path, eval_path),
    })
}

/// A row before label conversion.
struct RawRow {
    /// `line N` (JSONL, CSV) or `row N` (Parquet).
    at: String,
    text: String,
    text_pair: Option<String>,
    label: String,
}

/// Class names when the file does not list them: integer labels `0..=max` become `"0"…`, other
/// labels their sorted distinct values.
fn infer_labels(rows: &[RawRow]) -> Vec<String> {
    let distinct: BTreeSet<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let ints: Option<Vec<usize>> = distinct.iter().map(|s| s.parse().ok()).collect();
    match ints {
        Some(v) => (0..=v.into_iter().max().unwrap_or(0))
            .map(|i| i.to_string())
            .collect(),
        None => distinct.into_iter().map(str::to_owned).collect(),
    }
}

fn parse_label(raw: &str, task: Task, labels: &[String], numeric: Option<bool>) -> Result<Label> {
    let raw = raw.trim();
    match task {
        Task::Regression => raw
            .parse::<f32>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Label::Value)
            .with_context(|| format!("label {raw:?} is not a finite number")),
        _ => {
            if numeric != Some(false)
                && let Ok(i) = raw.parse::<usize>()
            {
                if i < labels.len() {
                    return Ok(Label::Class(i));
                }
                bail!(
                    "label {i} is out of range: the dataset has {} labels ({})",
                    labels.len(),
                    labels.join(", ")
                );
            }
            labels
                .iter()
                .position(|l| l == raw)
                .map(Label::Class)
                .with_context(|| {
                    format!(
                        "unknown label {raw:?}; expected one of {}",
                        labels.join(", ")
                    )
                })
        }
    }
}

/// Rows of a TSV file with their 1-based line numbers.
type NumberedRows = Vec<(usize, Vec<String>)>;

/// TSV as GLUE writes it (no quoting): the header (if any) and the rows, with their lines.
fn read_tsv(path: &Path, header: bool) -> Result<(Vec<String>, NumberedRows)> {
    let text = crate::data::read_text(path)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let head: Vec<String> = if header {
        let (_, h) = lines
            .next()
            .with_context(|| format!("{}: empty file", path.display()))?;
        h.split('\t').map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    let rows = lines
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| (n, l.split('\t').map(str::to_owned).collect()))
        .collect();
    Ok((head, rows))
}

#[allow(clippy::too_many_arguments)]
fn rows_to_examples(
    path: &Path,
    (head, rows): (Vec<String>, Vec<(usize, Vec<String>)>),
    text: Col,
    text_pair: Option<Col>,
    label: Col,
    numeric: bool,
    task: Task,
    labels: &[String],
) -> Result<Vec<Example>> {
    let index = |c: Col| -> Result<usize> {
        match c {
            Col::Index(i) => Ok(i),
            Col::Name(n) => head.iter().position(|h| h == n).with_context(|| {
                format!(
                    "{}, line 1: no column `{n}` in the header ({})",
                    path.display(),
                    head.join(", ")
                )
            }),
        }
    };
    let (ti, pi, li) = (
        index(text)?,
        text_pair.map(index).transpose()?,
        index(label)?,
    );
    let width = if head.is_empty() {
        None
    } else {
        Some(head.len())
    };
    let need = ti.max(li).max(pi.unwrap_or(0)) + 1;
    rows.into_iter()
        .map(|(line, fields)| {
            let at = || format!("{}, line {line}", path.display());
            if width.is_some_and(|w| fields.len() != w) || fields.len() < need {
                bail!(
                    "{}: expected {} tab-separated fields, found {}",
                    at(),
                    width.unwrap_or(need),
                    fields.len()
                );
            }
            let label = parse_label(&fields[li], task, labels, Some(numeric)).with_context(at)?;
            Ok(Example {
                text: fields[ti].clone(),
                text_pair: pi.map(|i| fields[i].clone()),
                label,
            })
        })
        .collect()
}

fn read_jsonl(path: &Path, text: &str, pair: Option<&str>, label: &str) -> Result<Vec<RawRow>> {
    let content = crate::data::read_text(path)?;
    let mut rows = Vec::new();
    for (i, line) in content.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}, line {n}", path.display());
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}: not valid JSON", at()))?;
        let field = |name: &str| -> Result<String> {
            match v.get(name) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(serde_json::Value::Number(x)) => Ok(x.to_string()),
                Some(serde_json::Value::Bool(b)) => Ok(u8::from(*b).to_string()),
                Some(other) => bail!(
                    "{}: field `{name}` is {other}, expected a string or number",
                    at()
                ),
                None => bail!("{}: missing field `{name}`", at()),
            }
        };
        let body = field(text)?;
        if body.trim().is_empty() {
            bail!(
                "{}: field `{text}` is empty; every example needs a text",
                at()
            );
        }
        rows.push(RawRow {
            at: format!("line {n}"),
            text: body,
            text_pair: pair.map(field).transpose()?,
            label: field(label)?,
        });
    }
    Ok(rows)
}

/// CSV (with a header) or Parquet through polars; every needed column read as text.
fn read_frame(
    path: &Path,
    csv: bool,
    text: &str,
    pair: Option<&str>,
    label: &str,
) -> Result<Vec<RawRow>> {
    use polars::prelude::{
        CsvReadOptions, DataFrame, ParquetReader, PolarsError, PolarsResult, SerReader,
    };
    let frame: PolarsResult<DataFrame> = if csv {
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .try_into_reader_with_file_path(Some(path.to_owned()))
            .and_then(|r| r.finish())
    } else {
        std::fs::File::open(path)
            .map_err(PolarsError::from)
            .and_then(|f| ParquetReader::new(f).finish())
    };
    let frame = Context::with_context(frame, || format!("cannot read {}", path.display()))?;
    let column = |name: &str| text_column(&frame, path, name);
    let texts = column(text)?;
    let pairs = pair.map(column).transpose()?;
    let labels = column(label)?;
    let mut rows = Vec::with_capacity(texts.len());
    for (i, (t, l)) in texts.into_iter().zip(labels).enumerate() {
        // CSV: the header is line 1; Parquet: rows count from 1.
        let at = if csv {
            format!("line {}", i + 2)
        } else {
            format!("row {}", i + 1)
        };
        let missing = |name: &str| anyhow::anyhow!("{}, {at}: `{name}` is empty", path.display());
        rows.push(RawRow {
            at: at.clone(),
            text: t
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| missing(text))?,
            text_pair: match (&pairs, pair) {
                (Some(p), Some(name)) => Some(p[i].clone().ok_or_else(|| missing(name))?),
                _ => None,
            },
            label: l.ok_or_else(|| missing(label))?,
        });
    }
    Ok(rows)
}
