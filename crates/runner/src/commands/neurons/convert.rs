//! `neuronlab neurons convert IN [IN…] OUT`: language-neuron sets between the workspace's files
//! (JSON / Parquet, [`ablation::LanguageSets`]) and the official codes' own
//! ([`ablation::official`]: Tang et al.'s `activation_mask`, Mondal et al.'s
//! `lang_neuron_data.pkl`, Kojima et al.'s expertise tables, read only).
//!
//! Formats come from `--from` / `--to` or the file's extension: `.json` / `.parquet` ours,
//! `.pth` / `.pt` Tang, `.pkl` Mondal, `.csv` Kojima (one table per language, so several INs).
//! What a format cannot say is taken from the input when it has it (Mondal's `L` and `int_d`,
//! Tang's layer count, Mondal's language order) and otherwise asked for: Tang's files name no
//! language (`--languages` when a file has other than the released seven), and an official file
//! written from ours needs the model's shape (`--layers`, and `--width` for Mondal), never
//! guessed from the highest index seen. The output is written beside its final name and moved
//! there when complete, so a failed conversion leaves no half file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ablation::LanguageSets;
use ablation::official::{self, MondalInfo, kojima, mondal, tang};
use anyhow::{Context, Result, bail};

/// A neuron-set file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SetFormat {
    /// The workspace's language sets: JSON, or Parquet by extension.
    Ours,
    /// RUCAIBox/Language-Specific-Neurons `activation_mask` (torch.save of per-layer indices).
    Tang,
    /// soumenkm/LSN `lang_neuron_data.pkl` (pickled dict of (N, 2) tensors).
    Mondal,
    /// kojima-takeshi188/lang_neuron expertise CSVs (read only).
    Kojima,
}

impl SetFormat {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Tang => "tang",
            Self::Mondal => "mondal",
            Self::Kojima => "kojima",
        }
    }

    /// The format a file's extension says, if it says one.
    pub fn of_path(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "json" | "parquet" => Self::Ours,
            "pth" | "pt" => Self::Tang,
            "pkl" | "pickle" => Self::Mondal,
            "csv" => Self::Kojima,
            _ => return None,
        })
    }
}

/// The options of `neurons convert`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConvertJob {
    /// The input file (several for Kojima's per-language tables), then the output file.
    #[arg(required = true, num_args = 2..)]
    pub files: Vec<PathBuf>,
    /// The inputs' format (default: from the extension).
    #[arg(long, value_enum)]
    pub from: Option<SetFormat>,
    /// The output's format (default: from the extension).
    #[arg(long, value_enum)]
    pub to: Option<SetFormat>,
    /// Languages in file order, comma-separated: the names of a Tang file's lists when reading,
    /// the order of the lists when writing Tang or Mondal.
    #[arg(long, value_delimiter = ',')]
    pub languages: Option<Vec<String>>,
    /// The model's layer count, for an official file written from sets that do not carry it.
    #[arg(long)]
    pub layers: Option<usize>,
    /// The model's FFN width (`int_d`), for a Mondal file written from sets that do not carry it.
    #[arg(long)]
    pub width: Option<usize>,
    /// `model_name` of a Mondal file (default: the input's, else "unknown").
    #[arg(long)]
    pub model: Option<String>,
    /// `method` of a Mondal file (default: the input's, else "lape").
    #[arg(long)]
    pub method: Option<String>,
}

/// What an input says besides its sets.
#[derive(Default)]
struct Carried {
    n_layers: Option<usize>,
    width: Option<usize>,
    languages: Option<Vec<String>>,
    model: Option<String>,
    method: Option<String>,
}

/// Convert, returning the report to print (what was read, what was written, what was left out).
///
/// # Errors
/// If a format cannot be told, an input cannot be read, the sets do not fit the output format
/// or the output cannot be written; each error names the file.
pub fn convert(job: &ConvertJob) -> Result<String> {
    let (output, inputs) = job
        .files
        .split_last()
        .expect("clap asks for two files at least");
    let from = format_of(job.from, &inputs[0], "--from")?;
    let to = format_of(job.to, output, "--to")?;
    if from != SetFormat::Kojima && inputs.len() > 1 {
        bail!(
            "{} inputs given, but only Kojima's tables (one per language) come in several files",
            inputs.len()
        );
    }
    let mut report = String::new();
    let (sets, carried) = read(from, inputs, job, &mut report)?;
    let counts: Vec<String> = sets
        .sets
        .iter()
        .map(|(l, s)| format!("{l} {}", s.len()))
        .collect();
    let _ = writeln!(
        report,
        "read {} ({}): {} languages: {}",
        inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        from.name(),
        sets.sets.len(),
        counts.join(", ")
    );
    write(to, &sets, carried, job, output, &mut report)?;
    Ok(report)
}

fn format_of(given: Option<SetFormat>, path: &Path, flag: &str) -> Result<SetFormat> {
    given.or_else(|| SetFormat::of_path(path)).with_context(|| {
        format!(
            "{}: cannot tell the format from the name; pass {flag} ours|tang|mondal|kojima \
             (Tang's released masks have no extension: {flag} tang)",
            path.display()
        )
    })
}

fn read(
    from: SetFormat,
    inputs: &[PathBuf],
    job: &ConvertJob,
    report: &mut String,
) -> Result<(LanguageSets, Carried)> {
    Ok(match from {
        SetFormat::Ours => (LanguageSets::read(&inputs[0])?, Carried::default()),
        SetFormat::Tang => {
            let file = tang::read(&inputs[0], job.languages.as_deref())?;
            let carried = Carried {
                n_layers: Some(file.n_layers),
                ..Carried::default()
            };
            (file.sets, carried)
        }
        SetFormat::Mondal => {
            let file = mondal::read(&inputs[0])?;
            let carried = Carried {
                n_layers: Some(file.info.n_layers),
                width: Some(file.info.width),
                languages: Some(file.languages),
                model: Some(file.info.model_name),
                method: Some(file.info.method),
            };
            (file.sets, carried)
        }
        SetFormat::Kojima => {
            let file = kojima::read(inputs)?;
            if !file.skipped.is_empty() {
                let skipped: Vec<String> = file
                    .skipped
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                let _ = writeln!(
                    report,
                    "left out {} rows of modules other than the FFN's first projection: {}",
                    file.skipped.values().sum::<usize>(),
                    skipped.join(", ")
                );
            }
            (file.sets, Carried::default())
        }
    })
}

fn write(
    to: SetFormat,
    sets: &LanguageSets,
    carried: Carried,
    job: &ConvertJob,
    output: &Path,
    report: &mut String,
) -> Result<()> {
    let n_layers = job.layers.or(carried.n_layers);
    let need_layers = || {
        n_layers.with_context(|| {
            format!(
                "{}: the input does not say how many layers the model has; pass --layers",
                output.display()
            )
        })
    };
    let order = || -> Result<Vec<String>> {
        let given = job.languages.as_deref().or(carried.languages.as_deref());
        official::language_order(sets, given)
            .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))
    };
    match to {
        SetFormat::Ours => atomically(output, |tmp| {
            if output.extension().is_some_and(|e| e == "parquet") {
                sets.write_parquet(tmp)?;
            } else {
                std::fs::write(tmp, sets.to_json())?;
            }
            Ok(())
        })?,
        SetFormat::Tang => {
            let (order, n_layers) = (order()?, need_layers()?);
            atomically(output, |tmp| Ok(tang::write(sets, &order, n_layers, tmp)?))?;
            let _ = writeln!(
                report,
                "language lists in order: {} ({n_layers} layers each)",
                order.join(",")
            );
        }
        SetFormat::Mondal => {
            let width = job.width.or(carried.width).with_context(|| {
                format!(
                    "{}: the input does not say the model's FFN width; pass --width (int_d)",
                    output.display()
                )
            })?;
            let info = MondalInfo {
                model_name: job
                    .model
                    .clone()
                    .or(carried.model)
                    .unwrap_or_else(|| "unknown".into()),
                method: job
                    .method
                    .clone()
                    .or(carried.method)
                    .unwrap_or_else(|| "lape".into()),
                n_layers: need_layers()?,
                width,
            };
            let order = order()?;
            atomically(output, |tmp| Ok(mondal::write(sets, &order, &info, tmp)?))?;
            let _ = writeln!(
                report,
                "lang_list {}; model_name {}, method {}, L {}, int_d {}",
                order.join(","),
                info.model_name,
                info.method,
                info.n_layers,
                info.width
            );
        }
        SetFormat::Kojima => bail!(
            "{}: Kojima's expertise tables are read only: their columns (AP, on_p50, off_mean, …) \
             are statistics of the model's responses that a neuron set does not hold",
            output.display()
        ),
    }
    let _ = writeln!(report, "wrote {} ({})", output.display(), to.name());
    Ok(())
}

/// Write through `f` into a file of the same name in a scratch folder beside `output`, then
/// move it into place: a failure leaves `output` as it was.
fn atomically(output: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = output
        .file_name()
        .with_context(|| format!("{}: not a file name", output.display()))?;
    let parent = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let scratch = parent.join(format!(".{}.partial", name.to_string_lossy()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let tmp = scratch.join(name);
    let result = f(&tmp).and_then(|()| {
        std::fs::rename(&tmp, output).with_context(|| format!("cannot write {}", output.display()))
    });
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
