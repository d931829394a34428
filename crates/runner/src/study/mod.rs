//! Neuron studies: one grid cell that finds a decoder's language-specific neurons and checks
//! them by ablation.
//!
//! 1. **Text.** Each language's files (from every text the study names, in order) are read,
//!    tokenised with the model's tokenizer and packed into windows of `window` tokens without
//!    padding ([`neurons::pack`]); the last `held_out_fraction` of each file's windows is held
//!    out. The windows of a language's files are interleaved file by file, then cut to
//!    `budget_tokens` (statistics) and `eval_tokens` (held out).
//! 2. **Statistics** ([`neurons::ActivationStats`]): positive counts, mean and standard deviation
//!    of the gate pre-activation, and the mean per-batch percentiles at `quantile` and at
//!    Mondal et al.'s 0.75, 0.9 and 0.95 ([`INTERVENTION_QUANTILES`], for the `mean_p75` …
//!    `mean_p95` interventions), per language, in one pass.
//!    They are cached in `DIR/<grid>/statistics/<hash>.json` (the hash covers the model, every
//!    window, the batch size and the quantiles), so the studies of one grid share one pass, and a
//!    rerun after a kill starts from them. The percentile method adds its second pass to the
//!    same file.
//! 3. **Selection** by the study's method: LAPE (Tang or Mondal), the activation-probability
//!    percentile (Mondal), average precision (Kojima, with each statistics window as one text),
//!    or sets read from a file.
//! 4. **Interventions**: each language's neurons set to the study's value, every language's
//!    held-out NLL measured ([`neurons::ChangeMatrix`]), and the same with random neurons of the
//!    same per-layer counts (seeded by the cell's seed) as a control.
//!
//! The run folder gets `neurons.json` / `neurons.parquet` (one row per language and neuron),
//! `selection.json` (the method's thresholds and counts), `counts.csv` (neurons per language and
//! layer), `overlap.csv` (neurons shared by each pair of languages), their heatmaps
//! `counts` / `overlap` (`.svg` and `.png`), and, with interventions, `nll_change.csv`, `ppl_change.csv`,
//! `random_nll_change.csv`, `random_ppl_change.csv` (rows: ablated language, columns:
//! evaluated language) and a heatmap of each (`.svg` and `.png`).

pub mod cell;
pub mod kind;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ablation::{LanguageSets, NeuronSet};
use anyhow::{Context, Result};
use burn::prelude::*;
use models::{DecoderCheckpoint, DecoderTokenizer, LlamaModel};
use neurons::selection::{LapeConfig, LapeVariant, lape, top_per_language};
use neurons::{
    ActivationStats, ChangeMatrix, InterventionValue, Packing, TextFormat, average_precision_sets,
    pack, read_documents, window_responses,
};

use crate::handoff::StudyOutputs;
use crate::harness::ids::Fnv1a;
use crate::harness::log::{Outcome, RunLog};
use crate::harness::results::write_atomic;
use crate::plot::{Figure, Heatmap};
use crate::study::cell::StudyCell;
use crate::study::spec::{LapeVariantSpec, StudyMethod, TextFileFormat};

/// One language's windows.
#[derive(Debug, Clone)]
pub struct LanguageText {
    /// The language code.
    pub language: String,
    /// Windows for statistics.
    pub train: Vec<Vec<u32>>,
    /// Held-out windows for the matrices.
    pub held_out: Vec<Vec<u32>>,
}

/// Read, tokenise and pack every language of the study (see the module docs).
pub fn language_texts(
    cell: &StudyCell,
    tokenizer: &DecoderTokenizer,
    log: &mut RunLog,
) -> Result<Vec<LanguageText>> {
    let s = &cell.study;
    let order: Vec<String> = if s.languages.is_empty() {
        cell.files.keys().cloned().collect()
    } else {
        s.languages.clone()
    };
    let packing = Packing {
        window: s.window,
        held_out_fraction: s.held_out_fraction,
        budget_tokens: None,
    };
    let mut out = Vec::new();
    for lang in &order {
        let files = cell.files.get(lang).map(Vec::as_slice).unwrap_or_default();
        let mut trains = Vec::new();
        let mut helds = Vec::new();
        let mut described = Vec::new();
        for (text, path) in files {
            let spec = &cell.texts[text];
            let docs = read_texts(path, spec.format, spec.field.as_deref())
                .with_context(|| format!("text `{text}`, language {lang}"))?;
            let packed = pack(lang, path, &docs, &packing, |d| {
                tokenizer.encode(d).map_err(|e| e.to_string())
            })
            .with_context(|| format!("text `{text}`"))?;
            described.push(format!("{} tokens ({text})", packed.total_tokens));
            trains.push(packed.train);
            helds.push(packed.held_out);
        }
        let cap = |windows: Vec<Vec<u32>>, tokens: Option<usize>| match tokens {
            Some(t) => windows.into_iter().take((t / s.window).max(1)).collect(),
            None => windows,
        };
        let train = cap(interleave(trains), s.budget_tokens);
        let held_out = cap(interleave(helds), s.eval_tokens);
        log.line(&format!(
            "{lang}: {} -> {} windows of {} for statistics, {} held out",
            described.join(" + "),
            train.len(),
            s.window,
            held_out.len()
        ));
        out.push(LanguageText {
            language: lang.clone(),
            train,
            held_out,
        });
    }
    Ok(out)
}

/// The documents of one file.
fn read_texts(path: &Path, format: TextFileFormat, field: Option<&str>) -> Result<Vec<String>> {
    let field = || field.unwrap_or("text").to_string();
    let docs = match format {
        TextFileFormat::Lines => read_documents(path, &TextFormat::Lines)?,
        TextFileFormat::Whole => read_documents(path, &TextFormat::Whole)?,
        TextFileFormat::Jsonl => read_documents(path, &TextFormat::Jsonl { field: field() })?,
        TextFileFormat::Parquet => crate::data::read_parquet_texts(path, &field())?,
    };
    Ok(docs)
}

/// Windows of several files, one from each in turn, so a budget takes from all of them.
fn interleave(groups: Vec<Vec<Vec<u32>>>) -> Vec<Vec<u32>> {
    let mut iters: Vec<_> = groups.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::new();
    loop {
        let before = out.len();
        out.extend(iters.iter_mut().filter_map(Iterator::next));
        if out.len() == before {
            return out;
        }
    }
}

/// The per-batch percentiles every statistics pass collects besides the study's `quantile`: the
/// ones Mondal et al.'s `act_stat` pass takes for their `mean_p75_act`, `mean_p90_act` and
/// `mean_p95_act` interventions.
pub const INTERVENTION_QUANTILES: [f64; 3] = [0.75, 0.9, 0.95];

/// The quantiles a statistics pass of `quantile` collects, ascending.
fn pass_quantiles(quantile: f64) -> Vec<f64> {
    let mut qs = INTERVENTION_QUANTILES.to_vec();
    if !qs.iter().any(|q| (q - quantile).abs() < 1e-9) {
        qs.push(quantile);
    }
    qs.sort_by(f64::total_cmp);
    qs
}

/// The statistics of the study's windows: from the grid's cache when a cell computed them
/// before, collected (and cached) otherwise. `exceedance`: also the percentile method's
/// second pass; `medians`: also Kojima et al.'s median responses (`on_p50`).
#[allow(clippy::too_many_arguments)]
fn statistics<B: Backend>(
    model: &LlamaModel<B>,
    texts: &[LanguageText],
    cell: &StudyCell,
    exceedance: bool,
    medians: bool,
    stats_dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<(ActivationStats, PathBuf)> {
    let s = &cell.study;
    let mut stats = ActivationStats::new(model);
    // The key: model, batch, quantiles, then every language's windows, token by token.
    let quantiles = pass_quantiles(s.quantile);
    let mut key = Fnv1a::default();
    key.write(format!("{}\n{}\n{:?}\n", stats.model, s.batch_size, quantiles).as_bytes());
    for t in texts {
        key.write(t.language.as_bytes());
        for w in &t.train {
            key.write(&[0xff]);
            for id in w {
                key.write(&id.to_le_bytes());
            }
        }
        key.write(b"\n");
    }
    let key = key.finish();
    let mut path = stats_dir.join(format!("{key:016x}.json"));
    std::fs::create_dir_all(stats_dir)
        .with_context(|| format!("cannot create {}", stats_dir.display()))?;
    if !cell.statistics_files.is_empty() {
        // Given statistics (shards merged): the model must match, every language be there.
        for file in &cell.statistics_files {
            let shard = ActivationStats::load(file)?;
            stats
                .merge(&shard)
                .with_context(|| format!("{}", file.display()))?;
            log.line(&format!("statistics from {}", file.display()));
        }
        for t in texts {
            if !stats.languages.contains_key(&t.language) {
                anyhow::bail!(
                    "the statistics files have no language {}; they have {}",
                    t.language,
                    stats
                        .languages
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        // A second pass, if any, goes to a file of the run, not over the given ones.
        path = stats_dir.join(format!("{key:016x}-given.json"));
    } else {
        match ActivationStats::load(&path) {
            Ok(cached) if cached.model == stats.model => {
                log.line(&format!("statistics from {}", path.display()));
                stats = cached;
            }
            _ => {
                for t in texts {
                    let clock = Instant::now();
                    let tokens = t.train.len() * s.window;
                    stats.collect_with_percentiles(
                        model,
                        &t.language,
                        &t.train,
                        s.batch_size,
                        &quantiles,
                        device,
                        |done| {
                            let message = format!("statistics {}", t.language);
                            log.count("windows", done, t.train.len(), (0, clock), &message)
                        },
                    )?;
                    log.line(&format!(
                        "statistics {}: {tokens} tokens in {:.0}s ({:.0} tokens/s)",
                        t.language,
                        clock.elapsed().as_secs_f64(),
                        tokens as f64 / clock.elapsed().as_secs_f64().max(1e-9)
                    ));
                }
                stats.save(&path)?;
                log.line(&format!("statistics saved to {}", path.display()));
            }
        }
    }
    if exceedance {
        add_pass(
            &mut stats,
            texts,
            &path,
            log,
            "exceedance pass",
            |l| l.exceedance.is_none(),
            |st, t, progress| {
                st.collect_exceedance(
                    model,
                    &t.language,
                    &t.train,
                    s.batch_size,
                    s.quantile,
                    device,
                    progress,
                )
            },
        )?;
    }
    if medians {
        add_pass(
            &mut stats,
            texts,
            &path,
            log,
            "median responses",
            |l| l.response_median.is_none(),
            |st, t, progress| {
                st.collect_response_median(
                    model,
                    &t.language,
                    &t.train,
                    s.batch_size,
                    device,
                    progress,
                )
            },
        )?;
    }
    if !path.exists() {
        stats.save(&path)?;
    }
    Ok((stats, path))
}

/// A later pass over the statistics windows: run `pass` for each language whose statistics
/// `lack` it, log its time as `what`, and save the statistics file when any ran.
fn add_pass(
    stats: &mut ActivationStats,
    texts: &[LanguageText],
    path: &Path,
    log: &mut RunLog,
    what: &str,
    lacks: impl Fn(&neurons::LanguageStats) -> bool,
    mut pass: impl FnMut(
        &mut ActivationStats,
        &LanguageText,
        &mut dyn FnMut(usize),
    ) -> Result<(), neurons::StatsError>,
) -> Result<()> {
    let mut added = false;
    for t in texts {
        if lacks(&stats.languages[&t.language]) {
            let clock = Instant::now();
            let message = format!("{what} {}", t.language);
            pass(stats, t, &mut |done| {
                log.count("windows", done, t.train.len(), (0, clock), &message)
            })?;
            log.line(&format!(
                "{what} {}: {:.0}s",
                t.language,
                clock.elapsed().as_secs_f64()
            ));
            added = true;
        }
    }
    if added {
        stats.save(path)?;
    }
    Ok(())
}

/// The neuron sets of the cell's method (LAPE, the percentile method, average precision, or a
/// file), with the method's settings and figures added to `details`.
#[allow(clippy::too_many_arguments)]
fn select_sets<B: Backend>(
    cell: &StudyCell,
    model: &LlamaModel<B>,
    texts: &[LanguageText],
    languages: &[String],
    stats: Option<&ActivationStats>,
    details: &mut serde_json::Value,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<BTreeMap<String, NeuronSet>> {
    let s = &cell.study;
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    Ok(match s.method {
        StudyMethod::Lape => {
            let stats = stats.expect("collected");
            let defaults = LapeConfig::default();
            let config = LapeConfig {
                variant: match s.variant.unwrap_or(LapeVariantSpec::Tang) {
                    LapeVariantSpec::Tang => LapeVariant::Tang,
                    LapeVariantSpec::Mondal => LapeVariant::Mondal,
                },
                top_rate: s.top_rate.unwrap_or(defaults.top_rate),
                filter_rate: s.filter_rate.unwrap_or(defaults.filter_rate),
                activation_bar_ratio: s
                    .activation_bar_ratio
                    .unwrap_or(defaults.activation_bar_ratio),
            };
            let chosen = lape(&stats.probabilities(languages)?, &config)?;
            details["variant"] = format!("{:?}", config.variant).to_lowercase().into();
            details["top_rate"] = config.top_rate.into();
            details["filter_rate"] = config.filter_rate.into();
            details["activation_bar_ratio"] = config.activation_bar_ratio.into();
            details["threshold"] = chosen.threshold.into();
            details["activation_bar"] = chosen.activation_bar.into();
            details["m"] = chosen.m.into();
            details["selected"] = chosen.selected.len().into();
            chosen.sets
        }
        StudyMethod::Percentile => {
            let stats = stats.expect("collected");
            let rate = s.rate.unwrap_or(0.00125);
            details["rate"] = rate.into();
            details["quantile"] = s.quantile.into();
            top_per_language(&stats.exceedance_probabilities(languages)?, rate)?
        }
        StudyMethod::AveragePrecision => {
            let top_n = s.top_n.unwrap_or(1000);
            details["top_n"] = top_n.into();
            let mut responses = Vec::new();
            for t in texts {
                responses.push(window_responses(
                    model,
                    &t.train,
                    s.batch_size,
                    device,
                    |_| {},
                ));
            }
            log.line("average precision: responses collected");
            average_precision_sets(languages, &responses, n_layers, width, top_n)?
        }
        StudyMethod::File => {
            let path = cell
                .neurons_file
                .as_ref()
                .context("method = \"file\" needs `neurons`")?;
            let sets = LanguageSets::read(path)?;
            sets.check(n_layers, width).with_context(|| {
                format!("{}: the neuron sets do not fit the model", path.display())
            })?;
            details["file"] = path.display().to_string().into();
            sets.sets
        }
    })
}

/// Check the sets by ablation (the study's `intervention`): the held-out NLL and perplexity
/// change of every language with each language's neurons intervened on (and, with
/// `random_control`, random sets of the same sizes), written as matrices, their diagonal and
/// off-diagonal means added to `metrics`.
#[allow(clippy::too_many_arguments)]
fn check_by_ablation<B: Backend>(
    cell: &StudyCell,
    model: &LlamaModel<B>,
    texts: &[LanguageText],
    (sets, value): (&LanguageSets, &InterventionValue),
    stats: Option<&ActivationStats>,
    (dir, metrics): (&Path, &mut BTreeMap<String, f64>),
    log: &mut RunLog,
    device: &B::Device,
) -> Result<()> {
    let s = &cell.study;
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    let languages: Vec<String> = texts.iter().map(|t| t.language.clone()).collect();
    let held_out: Vec<(String, Vec<Vec<u32>>)> = texts
        .iter()
        .map(|t| (t.language.clone(), t.held_out.clone()))
        .collect();
    let clock = Instant::now();
    let clean = ChangeMatrix::clean(model, &held_out, s.batch_size, device);
    for (lang, nll) in languages.iter().zip(&clean) {
        metrics.insert(format!("clean_nll_{lang}"), *nll);
    }
    log.line(&format!(
        "clean NLL: {} ({:.0}s)",
        languages
            .iter()
            .zip(&clean)
            .map(|(l, v)| format!("{l} {v:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        clock.elapsed().as_secs_f64()
    ));
    let random: BTreeMap<String, NeuronSet> = if s.random_control {
        sets.sets
            .iter()
            .enumerate()
            .map(|(k, (l, set))| {
                Ok((
                    l.clone(),
                    set.random_like(n_layers, width, cell.seed.wrapping_add(k as u64))?,
                ))
            })
            .collect::<Result<_, ablation::NeuronSetError>>()?
    } else {
        BTreeMap::new()
    };
    let runs: Vec<(&str, &BTreeMap<String, NeuronSet>)> = if s.random_control {
        vec![("", &sets.sets), ("random_", &random)]
    } else {
        vec![("", &sets.sets)]
    };
    for (prefix, chosen) in runs {
        let clock = Instant::now();
        let m = ChangeMatrix::with_clean_at(
            model,
            &held_out,
            clean.clone(),
            chosen,
            value,
            stats,
            s.intervention_point.into(),
            s.batch_size,
            device,
            |l| {
                if l != "clean" {
                    log.line(&format!(
                        "{prefix}ablated {l}: {:.0}s",
                        clock.elapsed().as_secs_f64()
                    ));
                }
            },
        )?;
        write_matrices(dir, prefix, &m, s.intervention.as_str())?;
        let (diag, off) = diagonal_means(&m.nll_change());
        metrics.insert(format!("{prefix}nll_change_diagonal"), diag);
        metrics.insert(format!("{prefix}nll_change_off_diagonal"), off);
        let (diag, off) = diagonal_means(&m.ppl_change());
        metrics.insert(format!("{prefix}ppl_change_diagonal"), diag);
        metrics.insert(format!("{prefix}ppl_change_off_diagonal"), off);
    }
    Ok(())
}

/// Run one study cell into `dir` (see the module docs).
pub fn run_study<B: Backend>(
    cell: &StudyCell,
    dir: &Path,
    stats_dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let s = &cell.study;
    let (checkpoint, tokenizer) = DecoderCheckpoint::open_with_tokenizer(&cell.model_dir)
        .with_context(|| format!("model `{}`", cell.model_name))?;
    let (model, _) = checkpoint
        .load::<B>(device)
        .with_context(|| format!("model `{}`", cell.model_name))?;
    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    log.line(&format!(
        "model {}: {n_layers} layers x {width} FFN neurons",
        cell.model_name
    ));
    let texts = language_texts(cell, &tokenizer, log)?;
    let languages: Vec<String> = texts.iter().map(|t| t.language.clone()).collect();
    let intervention = s.intervention.value().cloned();
    let need_stats = matches!(s.method, StudyMethod::Lape | StudyMethod::Percentile)
        || intervention
            .as_ref()
            .is_some_and(InterventionValue::needs_statistics);
    let stats = if need_stats {
        let (stats, path) = statistics(
            &model,
            &texts,
            cell,
            s.method == StudyMethod::Percentile,
            intervention == Some(InterventionValue::OnMedian),
            stats_dir,
            log,
            device,
        )?;
        // Which file of the grid's `statistics/` they are, for the fine-tuning cells' mean
        // interventions.
        StudyOutputs::in_run(dir).record_statistics(&path)?;
        Some(stats)
    } else {
        None
    };

    let mut details = serde_json::json!({
        "method": spec::method_name(s.method),
        "languages": languages,
        "n_layers": n_layers,
        "width": width,
    });
    let sets = select_sets(
        cell,
        &model,
        &texts,
        &languages,
        stats.as_ref(),
        &mut details,
        log,
        device,
    )?;
    let sets = LanguageSets::new(sets);
    sets.check(n_layers, width)?;
    let mut metrics = BTreeMap::new();
    metrics.insert("neurons_total".to_string(), sets.rows().count() as f64);
    for (lang, set) in &sets.sets {
        metrics.insert(format!("neurons_{lang}"), set.len() as f64);
    }
    details["counts"] = sets
        .sets
        .iter()
        .map(|(l, s)| (l.clone(), serde_json::Value::from(s.len())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    write_selection(dir, &sets, &languages, n_layers, &details)?;
    log.line(&format!(
        "{} neuron rows: {}",
        sets.rows().count(),
        sets.sets
            .iter()
            .map(|(l, s)| format!("{l} {}", s.len()))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    let mut main_metric = "neurons_total".to_string();
    if let Some(value) = intervention {
        let pair = (&sets, &value);
        check_by_ablation(
            cell,
            &model,
            &texts,
            pair,
            stats.as_ref(),
            (dir, &mut metrics),
            log,
            device,
        )?;
        main_metric = "nll_change_diagonal".into();
    }
    Ok(Outcome {
        main_metric,
        metrics,
        best_step: None,
        final_metrics: BTreeMap::new(),
        steps: None,
        ablation: Vec::new(),
        resolved: BTreeMap::new(),
    })
}

/// Mean of the diagonal and of the off-diagonal cells.
fn diagonal_means(m: &[Vec<f64>]) -> (f64, f64) {
    let (mut d, mut nd, mut o, mut no) = (0.0, 0, 0.0, 0);
    for (i, row) in m.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            if i == j {
                d += v;
                nd += 1;
            } else {
                o += v;
                no += 1;
            }
        }
    }
    (d / nd.max(1) as f64, o / no.max(1) as f64)
}

/// `neurons.json`, `neurons.parquet`, `selection.json`, `counts.csv`, `overlap.csv` and the two
/// heatmaps.
fn write_selection(
    dir: &Path,
    sets: &LanguageSets,
    languages: &[String],
    n_layers: usize,
    details: &serde_json::Value,
) -> Result<()> {
    write_atomic(
        &StudyOutputs::in_run(dir).neurons(),
        sets.to_json().as_bytes(),
    )?;
    let parquet = dir.join("neurons.parquet");
    let tmp = dir.join(format!("neurons.parquet.{}.tmp", std::process::id()));
    sets.write_parquet(&tmp)?;
    std::fs::rename(&tmp, &parquet)
        .with_context(|| format!("cannot replace {}", parquet.display()))?;
    write_atomic(
        &dir.join("selection.json"),
        serde_json::to_string_pretty(details)?.as_bytes(),
    )?;
    let empty = NeuronSet::default();
    let set = |l: &String| sets.sets.get(l).unwrap_or(&empty);
    let counts: Vec<Vec<usize>> = languages
        .iter()
        .map(|l| set(l).counts_per_layer(n_layers))
        .collect();
    let mut csv = format!(
        "language,total,{}\n",
        (0..n_layers)
            .map(|l| format!("layer_{l}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    for (l, row) in languages.iter().zip(&counts) {
        let cells: Vec<String> = row.iter().map(usize::to_string).collect();
        csv.push_str(&format!(
            "{l},{},{}\n",
            row.iter().sum::<usize>(),
            cells.join(",")
        ));
    }
    write_atomic(&dir.join("counts.csv"), csv.as_bytes())?;
    let overlap: Vec<Vec<f64>> = languages
        .iter()
        .map(|a| {
            languages
                .iter()
                .map(|b| set(a).intersection(set(b)).len() as f64)
                .collect()
        })
        .collect();
    let mut csv = format!("language,{}\n", languages.join(","));
    for (l, row) in languages.iter().zip(&overlap) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v}")).collect();
        csv.push_str(&format!("{l},{}\n", cells.join(",")));
    }
    write_atomic(&dir.join("overlap.csv"), csv.as_bytes())?;
    let method = details["method"].as_str().unwrap_or("");
    let counts_map = Heatmap {
        title: format!("Language-specific neurons per layer ({method})"),
        x_label: "layer".into(),
        y_label: "language".into(),
        rows: languages.to_vec(),
        columns: (0..n_layers).map(|l| l.to_string()).collect(),
        values: counts
            .iter()
            .map(|r| r.iter().map(|&c| c as f64).collect())
            .collect(),
        diverging: false,
        decimals: 0,
    };
    counts_map.save(dir, "counts")?;
    let overlap_map = Heatmap {
        title: format!("Neurons shared by two languages ({method})"),
        x_label: "language".into(),
        y_label: "language".into(),
        rows: languages.to_vec(),
        columns: languages.to_vec(),
        values: overlap,
        diverging: false,
        decimals: 0,
    };
    overlap_map.save(dir, "overlap")?;
    Ok(())
}

/// `<prefix>nll_change.csv`, `<prefix>ppl_change.csv` and their heatmaps.
fn write_matrices(dir: &Path, prefix: &str, m: &ChangeMatrix, value: &str) -> Result<()> {
    let which = if prefix.is_empty() {
        "language-specific"
    } else {
        "random (matched per-layer counts)"
    };
    for (name, matrix, what) in [
        ("nll_change", m.nll_change(), "mean NLL"),
        ("ppl_change", m.ppl_change(), "perplexity"),
    ] {
        let path: PathBuf = dir.join(format!("{prefix}{name}.csv"));
        write_atomic(&path, m.to_csv(&matrix).as_bytes())?;
        let map = Heatmap {
            title: format!("Change in {what}: {which} neurons set to {value}"),
            x_label: "evaluated language".into(),
            y_label: "ablated language".into(),
            rows: m.languages.clone(),
            columns: m.languages.clone(),
            values: matrix,
            diverging: true,
            decimals: 2,
        };
        map.save(dir, &format!("{prefix}{name}"))?;
    }
    Ok(())
}
