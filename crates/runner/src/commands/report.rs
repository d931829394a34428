//! `neuronlab report DIR/<grid>`: the grid's results as a Markdown report with plots.
//!
//! Writes, into the grid folder, `report.md` (also printed), `learning_curves.svg` / `.png` (the
//! main metric over training steps, mean ± std over seeds) and, when the cells evaluated ablation
//! rates, `ablation.svg` / `.png` (the main metric of the best checkpoint versus the fraction of
//! FFN neurons ablated, rate 0 being the unablated model). The report shows the PNGs, which
//! render in any Markdown viewer; the SVGs beside them scale.
//!
//! Cells are grouped by every axis value except the seed. Each group reports the mean ± sample
//! standard deviation (n − 1) of the main metric over its seeds. A group on an arm of an axis
//! that has a baseline arm (each kind declares its own: the encoder's `loss = "baseline"`, PRF's
//! `prf = "plain"`) is compared with the baseline group that has the same other axis values: the
//! delta of the means and an exact two-sided paired sign-flip permutation test over the seeds both have
//! (all 2^n sign assignments of the per-seed differences; with n seeds the smallest possible
//! p-value is 2 / 2^n, so two seeds can never show significance: the report says so).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::harness::results::{RunResult, write_atomic};
use crate::plot::{Chart, Figure, Series};

/// One finished run with its evaluations.
struct Run {
    result: RunResult,
    /// `(step, main metric)` per evaluation.
    curve: Vec<(f64, f64)>,
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Exact two-sided p-value of the paired sign-flip permutation test on differences `d`: the
/// fraction of the 2^n sign assignments whose mean is at least as far from 0 as the observed one.
pub fn sign_flip_p(d: &[f64]) -> f64 {
    let n = d.len();
    assert!(n <= 24, "the exact test enumerates 2^n assignments");
    if n == 0 {
        return 1.0;
    }
    let observed = d.iter().sum::<f64>().abs();
    let mut hits = 0u64;
    for mask in 0u64..(1 << n) {
        let s: f64 = d
            .iter()
            .enumerate()
            .map(|(i, x)| if mask >> i & 1 == 1 { -x } else { *x })
            .sum();
        if s.abs() >= observed - 1e-12 {
            hits += 1;
        }
    }
    hits as f64 / (1u64 << n) as f64
}

fn read_runs(dir: &Path) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        let file = path.join("result.json");
        if !file.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        let result: RunResult = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a neuronlab result", file.display()))?;
        let main = result.main_metric.clone().unwrap_or_default();
        let mut curve = Vec::new();
        if let Ok(text) = std::fs::read_to_string(path.join("metrics.jsonl")) {
            for (i, line) in text.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).with_context(|| {
                    format!("{}, line {}", path.join("metrics.jsonl").display(), i + 1)
                })?;
                if let (Some(step), Some(m)) = (v["step"].as_f64(), v["metrics"][&main].as_f64()) {
                    curve.push((step, m));
                }
            }
        }
        runs.push(Run { result, curve });
    }
    Ok(runs)
}

/// The group key of a run: its axis values without the seed.
fn group_key(r: &RunResult) -> BTreeMap<String, String> {
    let mut k = r.params.clone();
    k.remove("seed");
    k
}

fn describe(key: &BTreeMap<String, String>, skip: &[&str]) -> String {
    let parts: Vec<String> = key
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.join(" ")
}

/// Mean ± std of `(x, y)` curves at each x (over the runs that have that x).
fn average_curves(curves: &[Vec<(f64, f64)>]) -> Vec<(f64, f64, f64)> {
    let mut at: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for c in curves {
        for &(x, y) in c {
            at.entry((x * 1e6).round() as i64).or_default().push(y);
        }
    }
    at.into_iter()
        .map(|(x, ys)| {
            let (m, s) = mean_std(&ys);
            (x as f64 / 1e6, m, s)
        })
        .collect()
}

/// Build the report of the grid folder `dir`; returns the Markdown.
pub fn report(dir: &Path) -> Result<String> {
    let runs = read_runs(dir)?;
    if runs.is_empty() {
        bail!(
            "{}: no run folders with a result.json (run `neuronlab grid run` first)",
            dir.display()
        );
    }
    let finished: Vec<&Run> = runs.iter().filter(|r| r.result.finished()).collect();
    let failed: Vec<&Run> = runs.iter().filter(|r| !r.result.finished()).collect();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if runs.iter().any(|r| r.result.params.contains_key("task")) {
        let (tasks, studies): (Vec<&Run>, Vec<&Run>) = runs
            .iter()
            .partition(|r| r.result.params.contains_key("task"));
        let mut md = adapt_report(dir, &name, &tasks)?;
        if !studies.is_empty() {
            md.push('\n');
            md.push_str(&study_report(dir, &name, &studies));
        }
        failed_runs(&mut md, &failed);
        write_atomic(&dir.join("report.md"), md.as_bytes())?;
        return Ok(md);
    }
    if runs.iter().any(|r| r.result.params.contains_key("study")) {
        let mut md = study_report(dir, &name, &runs.iter().collect::<Vec<_>>());
        failed_runs(&mut md, &failed);
        write_atomic(&dir.join("report.md"), md.as_bytes())?;
        return Ok(md);
    }
    let mut by_metric: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for r in &finished {
        let metric = r
            .result
            .main_metric
            .clone()
            .unwrap_or_else(|| "metric".into());
        by_metric.entry(metric).or_default().push(r);
    }
    let mut md = String::new();
    let _ = writeln!(md, "# Grid `{name}`\n");
    let _ = writeln!(
        md,
        "{} runs: {} finished, {} failed. Main metric: best evaluation during training \
         (model selection on the evaluation split), mean ± std over seeds.\n",
        runs.len(),
        finished.len(),
        failed.len()
    );
    let several = by_metric.len() > 1;
    for (metric, members) in &by_metric {
        // One section per main metric (a grid over GLUE, SQuAD and ranking has several); the
        // plots of a one-metric grid keep their plain names.
        let suffix = if several {
            let clean: String = metric
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            format!("_{clean}")
        } else {
            String::new()
        };
        if several {
            let _ = writeln!(md, "## Cells selected by {metric}\n");
        }
        metric_section(dir, &name, metric, members, &suffix, &mut md)?;
    }
    failed_runs(&mut md, &failed);
    write_atomic(&dir.join("report.md"), md.as_bytes())?;
    Ok(md)
}

/// The tables and plots of the runs whose main metric is `metric`; plot files end in `suffix`.
fn metric_section(
    dir: &Path,
    name: &str,
    metric: &str,
    finished: &[&Run],
    suffix: &str,
    md: &mut String,
) -> Result<()> {
    let mut groups: Groups<'_> = BTreeMap::new();
    for r in finished {
        groups.entry(group_key(&r.result)).or_default().push(r);
    }
    group_table(metric, finished, &groups, md);
    baseline_comparisons(metric, &groups, md);
    learning_curves(dir, (name, metric, suffix), &groups, md)?;
    ablation_section(dir, (name, metric, suffix), finished, &groups, md)
}

/// Runs by their group (every axis value but the seed).
type Groups<'a> = BTreeMap<BTreeMap<String, String>, Vec<&'a Run>>;

/// One row per group: the main metric (best and final) and the others, mean ± std over seeds.
fn group_table(metric: &str, finished: &[&Run], groups: &Groups<'_>, md: &mut String) {
    // The other metrics of the best evaluations (EM beside F1, recall beside MRR, …).
    let others: Vec<String> = {
        let mut o: Vec<String> = finished
            .iter()
            .flat_map(|r| r.result.metrics.keys().cloned())
            .filter(|k| k != metric)
            .collect();
        o.sort();
        o.dedup();
        o
    };
    let _ = writeln!(
        md,
        "| cell group | seeds | {metric} | final {metric} |{} steps | seconds / run |",
        others.iter().map(|o| format!(" {o} |")).collect::<String>()
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|{}---:|---:|",
        "---:|".repeat(others.len())
    );
    for (key, members) in groups {
        let best_of = |m: &str| -> Vec<f64> {
            members
                .iter()
                .filter_map(|r| r.result.metrics.get(m).copied())
                .collect()
        };
        let last: Vec<f64> = members
            .iter()
            .filter_map(|r| r.result.final_metrics.get(metric).copied())
            .collect();
        let secs: Vec<f64> = members.iter().map(|r| r.result.seconds).collect();
        let (m, s) = mean_std(&best_of(metric));
        let (fm, fs) = mean_std(&last);
        let other_cells: String = others
            .iter()
            .map(|o| {
                let v = best_of(o);
                if v.is_empty() {
                    " – |".to_string()
                } else {
                    let (om, os) = mean_std(&v);
                    format!(" {om:.4} ± {os:.4} |")
                }
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {m:.4} ± {s:.4} | {fm:.4} ± {fs:.4} |{other_cells} {} | {:.0} |",
            describe(key, &[]),
            members.len(),
            members[0].result.steps.unwrap_or(0),
            mean_std(&secs).0
        );
    }
}

/// Each arm paired by seed with its axis's baseline arm.
fn baseline_comparisons(metric: &str, groups: &Groups<'_>, md: &mut String) {
    // Each arm against its axis's baseline arm (the encoder's loss = "baseline", PRF's
    // prf = "plain"), for the groups that match in every other axis value.
    let mut comparisons = String::new();
    for arm in crate::registry::baseline_arms() {
        for (key, members) in groups {
            let Some(value) = key.get(arm.axis).filter(|v| *v != arm.value) else {
                continue;
            };
            let mut base_key = key.clone();
            base_key.insert(arm.axis.into(), arm.value.into());
            let Some(base) = groups.get(&base_key) else {
                continue;
            };
            let by_seed = |rs: &[&Run]| -> BTreeMap<String, f64> {
                rs.iter()
                    .filter_map(|r| {
                        Some((
                            r.result.params.get("seed")?.clone(),
                            *r.result.metrics.get(metric)?,
                        ))
                    })
                    .collect()
            };
            let (ours, theirs) = (by_seed(members), by_seed(base));
            let diffs: Vec<f64> = ours
                .iter()
                .filter_map(|(seed, v)| theirs.get(seed).map(|b| v - b))
                .collect();
            if diffs.is_empty() {
                continue;
            }
            let (dm, ds) = mean_std(&diffs);
            let wins = diffs.iter().filter(|d| **d > 0.0).count();
            let _ = writeln!(
                comparisons,
                "| {} | {value} vs {} | {} | {dm:+.4} ± {ds:.4} | {wins}/{} | {:.3} |",
                describe(key, &[arm.axis]),
                arm.value,
                diffs.len(),
                diffs.len(),
                sign_flip_p(&diffs)
            );
        }
    }
    if !comparisons.is_empty() {
        let _ = writeln!(md, "\n### Against the baseline arm (paired by seed)\n");
        let _ = writeln!(
            md,
            "Exact two-sided paired sign-flip permutation test over the seeds; with n seeds \
             the smallest possible p-value is 2/2^n (0.5 for 2 seeds, 0.0625 for 5).\n"
        );
        let _ = writeln!(
            md,
            "| cell group | comparison | seeds | Δ {metric} | wins | p |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|");
        md.push_str(&comparisons);
    }
}

/// The main metric over the training steps, mean ± std over seeds, per group.
fn learning_curves(
    dir: &Path,
    (name, metric, suffix): (&str, &str, &str),
    groups: &Groups<'_>,
    md: &mut String,
) -> Result<()> {
    // Learning curves.
    let mut curves = Vec::new();
    for (key, members) in groups {
        let c: Vec<Vec<(f64, f64)>> = members.iter().map(|r| r.curve.clone()).collect();
        curves.push(Series {
            label: describe(key, &["model", "dataset"]),
            points: average_curves(&c),
        });
    }
    let chart = Chart {
        title: format!("{name}: {metric} during training (mean ± std over seeds)"),
        x_label: "optimiser step".into(),
        y_label: format!("eval {metric}"),
        series: curves,
    };
    chart.save(dir, &format!("learning_curves{suffix}"))?;
    let _ = writeln!(
        md,
        "\n### Plots\n\n![learning curves](learning_curves{suffix}.png)\n"
    );

    Ok(())
}

/// The best checkpoints' main metric versus the fraction of FFN neurons ablated.
fn ablation_section(
    dir: &Path,
    (name, metric, suffix): (&str, &str, &str),
    finished: &[&Run],
    groups: &Groups<'_>,
    md: &mut String,
) -> Result<()> {
    // Ablation curves.
    if finished.iter().any(|r| !r.result.ablation.is_empty()) {
        let mut series = Vec::new();
        let mut table = String::new();
        let rates: Vec<f64> = {
            let mut r: Vec<f64> = finished
                .iter()
                .flat_map(|r| r.result.ablation.iter().map(|a| a.0))
                .collect();
            r.push(0.0);
            r.sort_by(f64::total_cmp);
            r.dedup();
            r
        };
        let _ = writeln!(
            table,
            "| cell group | {} |",
            rates
                .iter()
                .map(|r| format!("rate {r}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(table, "|---|{}", "---:|".repeat(rates.len()));
        for (key, members) in groups {
            let c: Vec<Vec<(f64, f64)>> = members
                .iter()
                .map(|r| {
                    let mut v = vec![(
                        0.0,
                        r.result.metrics.get(metric).copied().unwrap_or(f64::NAN),
                    )];
                    v.extend(r.result.ablation.iter().copied());
                    v
                })
                .collect();
            let points = average_curves(&c);
            let cells: Vec<String> = rates
                .iter()
                .map(|rate| {
                    points
                        .iter()
                        .find(|p| (p.0 - rate).abs() < 1e-9)
                        .map(|p| format!("{:.4} ± {:.4}", p.1, p.2))
                        .unwrap_or_default()
                })
                .collect();
            let _ = writeln!(table, "| {} | {} |", describe(key, &[]), cells.join(" | "));
            series.push(Series {
                label: describe(key, &["model", "dataset"]),
                points,
            });
        }
        let chart = Chart {
            title: format!("{name}: {metric} with FFN neurons ablated at random"),
            x_label: "fraction of FFN neurons ablated (per layer)".into(),
            y_label: format!("eval {metric}"),
            series,
        };
        chart.save(dir, &format!("ablation{suffix}"))?;
        let _ = writeln!(
            md,
            "![metric vs ablation rate](ablation{suffix}.png)\n\n### {metric} versus ablation rate\n\n\
             The best checkpoint of each run, evaluated with a random fraction of every layer's \
             FFN neurons zeroed (kept ones scaled by 1/(1 − rate)); rate 0 is the unablated \
             model.\n\n{table}"
        );
    }
    Ok(())
}

fn failed_runs(md: &mut String, failed: &[&Run]) {
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Failed runs\n");
    for r in failed {
        let _ = writeln!(
            md,
            "- `{}` ({}): {}",
            r.result.run_id,
            describe(&r.result.params, &[]),
            r.result.error.as_deref().unwrap_or("?").replace('\n', " ")
        );
    }
}

/// The per-language scores of fine-tuning cells: name, section heading, what the table columns
/// call it, and whether it gets heatmaps.
const ADAPT_SCORES: [(&str, &str, &str, bool); 5] = [
    ("accuracy", "Accuracy", "acc.", true),
    ("token_f1", "Token-id F1", "token F1", true),
    ("token_em", "Token-id EM", "token EM", false),
    ("squad_f1", "SQuAD F1", "SQuAD F1", true),
    ("squad_em", "SQuAD EM", "SQuAD EM", false),
];

/// The fine-tuning cells of a grid. For each score the cells have (accuracy for
/// classification; token and SQuAD F1/EM for QA): the score per evaluation language, mean ±
/// std over seeds, for each neuron choice (a `target` choice gathers its per-language cells),
/// and the delta to plain LoRA (`neurons = none`) with the same other settings; heatmaps
/// `<score>.svg` / `.png` and `<score>_delta.svg` / `.png`.
fn adapt_report(dir: &Path, name: &str, runs: &[&Run]) -> Result<String> {
    let mut md = String::new();
    let finished: Vec<&Run> = runs
        .iter()
        .copied()
        .filter(|r| r.result.finished())
        .collect();
    let _ = writeln!(md, "# Grid `{name}`: cross-lingual LoRA fine-tuning\n");
    let _ = writeln!(
        md,
        "{} fine-tuning runs: {} finished, {} failed. Scores per evaluation language after \
         the last step (no model selection), mean ± std over seeds (n). Δ: difference of the \
         means to plain LoRA (`none`) with the same other settings, and the exact paired \
         sign-flip p-value over the seeds both have. QA scores: token-id F1 / EM (Mondal et \
         al.'s, on the generated ids against `\" \" + answer + eos`) and SQuAD F1 / EM (the \
         official string normalisation).",
        runs.len(),
        finished.len(),
        runs.len() - finished.len()
    );
    for (score, heading, label, plots) in ADAPT_SCORES {
        score_section(&mut md, dir, &finished, (score, heading, label, plots))?;
    }
    Ok(md)
}

/// Per seed, language → value.
type Scores = BTreeMap<String, BTreeMap<u64, f64>>;

/// Each group's scores as trained and with the intervention.
type ScoreGroups = BTreeMap<BTreeMap<String, String>, (Scores, Scores)>;

/// The runs' `score/<language>` (and `score_intervened/<language>`) metrics by group (every axis
/// value except the seed and the evaluation language), and the languages.
fn score_groups(finished: &[&Run], score: &str) -> (ScoreGroups, Vec<String>) {
    // Group: every axis value except the seed and the evaluation language.
    let key_of = |r: &RunResult| {
        let mut k = group_key(r);
        k.remove("eval");
        k
    };
    let mut groups: ScoreGroups = BTreeMap::new();
    let mut languages = std::collections::BTreeSet::new();
    let plain_prefix = format!("{score}/");
    let intervened_prefix = format!("{score}_intervened/");
    for r in finished {
        let seed: u64 = r
            .result
            .params
            .get("seed")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for (metric, value) in &r.result.metrics {
            if let Some(lang) = metric.strip_prefix(&plain_prefix) {
                languages.insert(lang.to_string());
                let (plain, _) = groups.entry(key_of(&r.result)).or_default();
                plain.entry(lang.into()).or_default().insert(seed, *value);
            } else if let Some(lang) = metric.strip_prefix(&intervened_prefix) {
                let (_, intervened) = groups.entry(key_of(&r.result)).or_default();
                intervened
                    .entry(lang.into())
                    .or_default()
                    .insert(seed, *value);
            }
        }
    }
    (groups, languages.into_iter().collect())
}

/// The heatmaps of one score: the means per language and the changes against plain LoRA.
fn score_heatmaps(
    md: &mut String,
    dir: &Path,
    (score, heading, label): (&str, &str, &str),
    (rows, languages): (Vec<String>, Vec<String>),
    (means, deltas): (Vec<Vec<f64>>, Vec<Vec<f64>>),
) -> Result<()> {
    let map = crate::plot::Heatmap {
        title: format!("{heading} (%) per evaluation language, mean over seeds"),
        x_label: "evaluation language".into(),
        y_label: "settings".into(),
        rows: rows.clone(),
        columns: languages.clone(),
        values: means,
        diverging: false,
        decimals: 1,
    };
    map.save(dir, score)?;
    let _ = writeln!(md, "\n![{label} per language]({score}.png)");
    if deltas.iter().flatten().any(|d| d.is_finite()) {
        let map = crate::plot::Heatmap {
            title: format!("{heading}: change (points) against plain LoRA"),
            x_label: "evaluation language".into(),
            y_label: "settings".into(),
            rows,
            columns: languages,
            values: deltas,
            diverging: true,
            decimals: 1,
        };
        map.save(dir, &format!("{score}_delta"))?;
        let _ = writeln!(
            md,
            "![{label}: change against plain LoRA]({score}_delta.png)"
        );
    }
    Ok(())
}

/// One score's tables (as trained; with the intervention if any) and heatmaps.
fn score_section(
    md: &mut String,
    dir: &Path,
    finished: &[&Run],
    (score, heading, label, plots): (&str, &str, &str, bool),
) -> Result<()> {
    let (groups, languages) = score_groups(finished, score);
    if groups.is_empty() {
        return Ok(());
    }
    let _ = writeln!(md, "\n## {heading}\n");
    let baseline_of = |key: &BTreeMap<String, String>| {
        let mut b = key.clone();
        b.insert("neurons".into(), "none".into());
        groups.get(&b).map(|g| &g.0)
    };
    let cell = |values: Option<&BTreeMap<u64, f64>>| match values {
        Some(v) if !v.is_empty() => {
            let (m, s) = mean_std(&v.values().copied().collect::<Vec<_>>());
            format!("{:.2} ± {:.2} ({})", 100.0 * m, 100.0 * s, v.len())
        }
        _ => "–".into(),
    };
    let header: Vec<String> = languages
        .iter()
        .map(|l| format!("{l} {label} (%)"))
        .collect();
    let _ = writeln!(
        md,
        "| settings | {} | Δ to none (pt, p) |",
        header.join(" | ")
    );
    let _ = writeln!(md, "|---|{}---|", "---:|".repeat(languages.len()));
    let mut means = Vec::new();
    let mut deltas = Vec::new();
    let mut rows = Vec::new();
    for (key, (plain, _)) in &groups {
        let base = baseline_of(key);
        let mut delta_text = Vec::new();
        let mut mean_row = Vec::new();
        let mut delta_row = Vec::new();
        for lang in &languages {
            let mine = plain.get(lang);
            let mean = mine
                .filter(|v| !v.is_empty())
                .map(|v| mean_std(&v.values().copied().collect::<Vec<_>>()).0);
            mean_row.push(mean.map_or(f64::NAN, |m| 100.0 * m));
            let delta = match (mine, base.and_then(|b| b.get(lang))) {
                (Some(a), Some(b)) if key.get("neurons").is_some_and(|n| n != "none") => {
                    let pairs: Vec<f64> = a
                        .iter()
                        .filter_map(|(seed, x)| b.get(seed).map(|y| x - y))
                        .collect();
                    let ma = mean_std(&a.values().copied().collect::<Vec<_>>()).0;
                    let mb = mean_std(&b.values().copied().collect::<Vec<_>>()).0;
                    delta_text.push(format!(
                        "{lang} {:+.2} (p {:.2})",
                        100.0 * (ma - mb),
                        sign_flip_p(&pairs)
                    ));
                    100.0 * (ma - mb)
                }
                _ => f64::NAN,
            };
            delta_row.push(delta);
        }
        let cells: Vec<String> = languages.iter().map(|l| cell(plain.get(l))).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            describe(key, &[]),
            cells.join(" | "),
            if delta_text.is_empty() {
                "–".into()
            } else {
                delta_text.join(", ")
            }
        );
        rows.push(describe(key, &["model", "task"]));
        means.push(mean_row);
        deltas.push(delta_row);
    }
    if groups.values().any(|(_, i)| !i.is_empty()) {
        let _ = writeln!(
            md,
            "\nWith the test-time intervention on the evaluation language's neurons:\n"
        );
        let _ = writeln!(md, "| settings | {} |", header.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(languages.len()));
        for (key, (_, intervened)) in &groups {
            let cells: Vec<String> = languages.iter().map(|l| cell(intervened.get(l))).collect();
            let _ = writeln!(md, "| {} | {} |", describe(key, &[]), cells.join(" | "));
        }
    }
    if plots && !rows.is_empty() && !languages.is_empty() {
        score_heatmaps(
            md,
            dir,
            (score, heading, label),
            (rows, languages),
            (means, deltas),
        )?;
    }
    Ok(())
}

/// The report of a grid of neuron studies: one row per run (method, neurons per language, the
/// mean NLL change on and off the diagonal, for the chosen and the random neurons), then each
/// run's heatmaps.
fn study_report(dir: &Path, name: &str, runs: &[&Run]) -> String {
    let mut md = String::new();
    let finished: Vec<&Run> = runs
        .iter()
        .copied()
        .filter(|r| r.result.finished())
        .collect();
    let _ = writeln!(md, "# Grid `{name}`: neuron studies\n");
    let _ = writeln!(
        md,
        "{} runs: {} finished, {} failed. NLL change: mean NLL of the evaluated language's \
         held-out text with the ablated language's neurons replaced, minus the clean mean NLL; \
         diagonal = a language's own neurons, off-diagonal = another language's. The random \
         control replaces as many random neurons per layer.\n",
        runs.len(),
        finished.len(),
        runs.len() - finished.len()
    );
    let _ = writeln!(
        md,
        "| run | study | model | seed | method | neurons per language | ΔNLL diagonal | \
         ΔNLL off-diagonal | random diagonal | random off-diagonal | seconds |"
    );
    let _ = writeln!(md, "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|");
    let number = |r: &Run, key: &str| {
        r.result
            .metrics
            .get(key)
            .map(|v| format!("{v:+.3}"))
            .unwrap_or_else(|| "–".into())
    };
    for r in &finished {
        let run = &r.result.run_id;
        let selection: serde_json::Value =
            std::fs::read_to_string(dir.join(run).join("selection.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
        let mut method = selection["method"].as_str().unwrap_or("?").to_string();
        if let Some(v) = selection["variant"].as_str() {
            method = format!("{method} ({v})");
        }
        let counts: Vec<String> = selection["counts"]
            .as_object()
            .map(|o| o.iter().map(|(l, n)| format!("{l} {n}")).collect())
            .unwrap_or_default();
        let p = |k: &str| r.result.params.get(k).cloned().unwrap_or_default();
        let _ = writeln!(
            md,
            "| `{run}` | {} | {} | {} | {method} | {} | {} | {} | {} | {} | {:.0} |",
            p("study"),
            p("model"),
            p("seed"),
            counts.join(", "),
            number(r, "nll_change_diagonal"),
            number(r, "nll_change_off_diagonal"),
            number(r, "random_nll_change_diagonal"),
            number(r, "random_nll_change_off_diagonal"),
            r.result.seconds
        );
    }
    for r in &finished {
        let run = &r.result.run_id;
        let _ = writeln!(md, "\n## {} (`{run}`)\n", describe(&r.result.params, &[]));
        for (file, what) in [
            ("counts.png", "neurons per language and layer"),
            ("overlap.png", "neurons shared by two languages"),
            ("nll_change.png", "NLL change"),
            ("random_nll_change.png", "NLL change, random neurons"),
        ] {
            if dir.join(run).join(file).is_file() {
                let _ = writeln!(md, "![{what}]({run}/{file})");
            }
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_flip_p_by_hand() {
        // Three positive differences: only all-plus and all-minus reach |sum| = 6 → 2/8.
        assert_eq!(sign_flip_p(&[1.0, 2.0, 3.0]), 0.25);
        // Sums of ±1 ± 1: |±2| twice, |0| twice; observed |1 - 1| = 0 → all 4.
        assert_eq!(sign_flip_p(&[1.0, -1.0]), 1.0);
        assert_eq!(sign_flip_p(&[0.5, 0.5]), 0.5);
    }

    #[test]
    fn mean_std_is_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - 1.290_994_448_735_805_6).abs() < 1e-12); // numpy.std(ddof=1)
    }
}
