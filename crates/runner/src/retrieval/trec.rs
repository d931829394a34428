//! TREC files and ranking metrics with trec_eval's conventions: qrels (`qid iter docid grade`),
//! runs (`qid Q0 docid rank score tag`), MRR@10, nDCG@10, recall@100 and recall@1000.
//!
//! Conventions (trec_eval 9, as `pytrec_eval` runs it; checked against it in
//! `tests/fixtures/ranking/make_ranking_fixture.py`):
//! - a run is ordered by score, descending, ties broken by document id, descending; the rank
//!   column is ignored;
//! - a passage is relevant when its grade is at least `relevance_level` (1; TREC DL uses 2 for
//!   MRR and recall); nDCG uses the grades themselves as linear gains (`ndcg_cut.10`), the
//!   ideal ranking from every judged passage of the query;
//! - a query is scored when it is in the run and the qrels, and means are over those queries;
//!   a query without any relevant passage scores 0.
//!
//! MRR@10 is MS MARCO's: the reciprocal rank of the first relevant passage among the 10 best,
//! 0 if there is none. Re-ranking a fixed candidate list cannot change recall@1000 (it depends
//! only on which passages are in the list).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Judgements: query → passage → grade.
pub type Qrels = BTreeMap<String, BTreeMap<String, i32>>;

/// A run: query → (passage, score) in file order.
pub type Run = BTreeMap<String, Vec<(String, f64)>>;

/// Call `f(line_index, line)` for every non-blank line of `path`, reading it as a stream (MS
/// MARCO's files run to gigabytes; none is held in memory whole).
fn each_line(path: &Path, mut f: impl FnMut(usize, &str) -> Result<()>) -> Result<()> {
    use std::io::BufRead;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}, line {}", path.display(), i + 1))?;
        if !line.trim().is_empty() {
            f(i, &line)?;
        }
    }
    Ok(())
}

/// Call `f(line_index, fields)` for every line of a TSV whose lines all have exactly `columns`
/// tab-separated, non-empty fields (`layout` names them in the error of any other line, which
/// names the file and line).
pub fn each_tsv_row(
    path: &Path,
    columns: usize,
    layout: &str,
    mut f: impl FnMut(usize, &[&str]) -> Result<()>,
) -> Result<()> {
    let mut rows = 0;
    each_line(path, |i, line| {
        let fields: Vec<&str> = line.split('\t').collect();
        if fields.len() != columns || fields.iter().any(|f| f.trim().is_empty()) {
            bail!(
                "{}, line {}: expected {columns} non-empty tab-separated fields `{layout}`, \
                 found {}",
                path.display(),
                i + 1,
                fields.len()
            );
        }
        rows += 1;
        f(i, &fields)
    })?;
    if rows == 0 {
        bail!("{}: no rows", path.display());
    }
    Ok(())
}

/// Read a qrels file: `qid iter docid grade` per line (whitespace-separated). A line with
/// another number of fields or a grade that is not an integer is an error naming the file and
/// line; so is a query outside `queries`, when given.
pub fn read_qrels(path: &Path, queries: Option<&dyn Fn(&str) -> bool>) -> Result<Qrels> {
    let mut qrels = Qrels::new();
    each_line(path, |i, line| {
        let at = || format!("{}, line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [qid, _, docid, grade] = fields[..] else {
            bail!(
                "{}: expected 4 fields `qid iter docid grade`, found {}: {line:?}",
                at(),
                fields.len()
            );
        };
        let grade: i32 = grade
            .parse()
            .with_context(|| format!("{}: grade {grade:?} is not an integer", at()))?;
        if let Some(known) = queries
            && !known(qid)
        {
            bail!("{}: query {qid:?} is not in the queries file", at());
        }
        qrels
            .entry(qid.to_string())
            .or_default()
            .insert(docid.to_string(), grade);
        Ok(())
    })?;
    if qrels.is_empty() {
        bail!("{}: no judgements", path.display());
    }
    Ok(qrels)
}

/// Read a TREC run: `qid Q0 docid rank score tag` per line. A line with another number of
/// fields, a rank that is not an integer, a score that is not a finite number, or a passage
/// listed twice for a query is an error naming the file and line.
pub fn read_run(path: &Path) -> Result<Run> {
    let mut run = Run::new();
    let mut seen = std::collections::HashSet::new();
    each_line(path, |i, line| {
        let at = || format!("{}, line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [qid, _, docid, rank, score, _] = fields[..] else {
            bail!(
                "{}: expected 6 fields `qid Q0 docid rank score tag`, found {}: {line:?}",
                at(),
                fields.len()
            );
        };
        rank.parse::<i64>()
            .with_context(|| format!("{}: rank {rank:?} is not an integer", at()))?;
        let score: f64 = score
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite())
            .with_context(|| format!("{}: score {score:?} is not a finite number", at()))?;
        if !seen.insert((qid.to_string(), docid.to_string())) {
            bail!("{}: passage {docid} is listed twice for query {qid}", at());
        }
        run.entry(qid.to_string())
            .or_default()
            .push((docid.to_string(), score));
        Ok(())
    })?;
    if run.is_empty() {
        bail!("{}: no ranked passages", path.display());
    }
    Ok(run)
}

/// trec_eval's order: score descending, then document id descending.
pub fn trec_order(ranked: &mut [(String, f64)]) {
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
}

/// A run as TREC text, each query's passages in trec_eval's order with ranks from 1.
pub fn run_to_trec(run: &Run, tag: &str) -> String {
    let mut out = String::new();
    for (qid, ranked) in run {
        let mut ranked = ranked.clone();
        trec_order(&mut ranked);
        for (k, (docid, score)) in ranked.iter().enumerate() {
            out.push_str(&format!("{qid} Q0 {docid} {} {score} {tag}\n", k + 1));
        }
    }
    out
}

/// One query's scores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankScores {
    /// Reciprocal rank of the first relevant passage in the top 10 (0 if none).
    pub mrr_at_10: f64,
    /// nDCG@10 with linear gains.
    pub ndcg_at_10: f64,
    /// Relevant passages in the top 100 over all relevant ones (0 if none).
    pub recall_at_100: f64,
    /// Relevant passages in the top 1,000 over all relevant ones (0 if none).
    pub recall_at_1000: f64,
}

/// Scores of one query's ranked passages (any order; sorted here) against its judgements.
pub fn query_scores(
    ranked: &[(String, f64)],
    judged: &BTreeMap<String, i32>,
    relevance_level: i32,
) -> RankScores {
    let mut ranked = ranked.to_vec();
    trec_order(&mut ranked);
    let grade = |d: &str| judged.get(d).copied().unwrap_or(0);
    let mrr_at_10 = ranked
        .iter()
        .take(10)
        .position(|(d, _)| grade(d) >= relevance_level)
        .map_or(0.0, |k| 1.0 / (k + 1) as f64);
    let dcg = |grades: &mut dyn Iterator<Item = i32>| -> f64 {
        grades
            .take(10)
            .enumerate()
            .map(|(k, g)| f64::from(g.max(0)) / ((k + 2) as f64).log2())
            .sum()
    };
    let mut ideal: Vec<i32> = judged.values().copied().filter(|&g| g > 0).collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let best = dcg(&mut ideal.into_iter());
    let ndcg_at_10 = if best > 0.0 {
        dcg(&mut ranked.iter().map(|(d, _)| grade(d))) / best
    } else {
        0.0
    };
    let relevant = judged.values().filter(|&&g| g >= relevance_level).count();
    let recall = |depth: usize| {
        let found = ranked
            .iter()
            .take(depth)
            .filter(|(d, _)| grade(d) >= relevance_level)
            .count();
        if relevant > 0 {
            found as f64 / relevant as f64
        } else {
            0.0
        }
    };
    RankScores {
        mrr_at_10,
        ndcg_at_10,
        recall_at_100: recall(100),
        recall_at_1000: recall(1000),
    }
}

/// Per-query scores of every query in both the run and the qrels, and their means.
pub fn evaluate_run(
    run: &Run,
    qrels: &Qrels,
    relevance_level: i32,
) -> (BTreeMap<String, RankScores>, RankScores) {
    let per_query: BTreeMap<String, RankScores> = run
        .iter()
        .filter_map(|(q, ranked)| {
            qrels
                .get(q)
                .map(|judged| (q.clone(), query_scores(ranked, judged, relevance_level)))
        })
        .collect();
    let n = per_query.len().max(1) as f64;
    let mean = |f: fn(&RankScores) -> f64| per_query.values().map(f).sum::<f64>() / n;
    let means = RankScores {
        mrr_at_10: mean(|s| s.mrr_at_10),
        ndcg_at_10: mean(|s| s.ndcg_at_10),
        recall_at_100: mean(|s| s.recall_at_100),
        recall_at_1000: mean(|s| s.recall_at_1000),
    };
    (per_query, means)
}

/// Read a two-column TSV of `id<TAB>text` (MS MARCO's `collection.tsv` and `queries.*.tsv`).
/// `what` names the rows in errors ("passage", "query"). A line without exactly one tab, an
/// empty id or text, or an id seen before is an error naming the file and line.
pub fn read_id_texts(path: &Path, what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    each_line(path, |i, line| {
        let at = || format!("{}, line {}", path.display(), i + 1);
        let fields: Vec<&str> = line.split('\t').collect();
        let [id, body] = fields[..] else {
            bail!(
                "{}: expected 2 tab-separated fields `id text`, found {}",
                at(),
                fields.len()
            );
        };
        if id.trim().is_empty() || body.trim().is_empty() {
            bail!("{}: empty {what} id or text", at());
        }
        if out.insert(id.to_string(), body.to_string()).is_some() {
            bail!("{}: {what} {id} appears twice", at());
        }
        Ok(())
    })?;
    if out.is_empty() {
        bail!("{}: no {what} rows", path.display());
    }
    Ok(out)
}

/// Read a TSV whose every line has exactly `columns` tab-separated, non-empty fields
/// (MS MARCO's `top1000.dev.tsv`: 4; `triples.train.small.tsv`: 3), naming the file and line of
/// any other line.
pub fn read_tsv_rows(path: &Path, columns: usize, layout: &str) -> Result<Vec<Vec<String>>> {
    let mut out = Vec::new();
    each_tsv_row(path, columns, layout, |_, fields| {
        out.push(fields.iter().map(|f| f.to_string()).collect());
        Ok(())
    })?;
    Ok(out)
}

/// MS MARCO's re-ranking candidates with their texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidates {
    /// Each query's candidate passages in file order (score 0).
    pub run: Run,
    /// Query id → text.
    pub queries: BTreeMap<String, String>,
    /// Passage id → text.
    pub passages: BTreeMap<String, String>,
}

/// MS MARCO's candidate file (`qid pid query passage` per line).
pub fn read_candidates(path: &Path) -> Result<Candidates> {
    let mut c = Candidates {
        run: Run::new(),
        queries: BTreeMap::new(),
        passages: BTreeMap::new(),
    };
    each_tsv_row(path, 4, "qid pid query passage", |_, r| {
        c.run
            .entry(r[0].to_string())
            .or_default()
            .push((r[1].to_string(), 0.0));
        if !c.queries.contains_key(r[0]) {
            c.queries.insert(r[0].to_string(), r[2].to_string());
        }
        if !c.passages.contains_key(r[1]) {
            c.passages.insert(r[1].to_string(), r[3].to_string());
        }
        Ok(())
    })?;
    Ok(c)
}
