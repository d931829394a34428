//! The inputs of a PRF cell, read once and checked: query sets (queries, qrels, first-pass
//! runs), the feedback passages' texts, and the training passages' vectors.
//!
//! Which queries a set holds follows the official `QryRfmDataset`: those whose qrels give some
//! passage a positive grade, in sorted id order. A query of the set without a text, or without a
//! first-pass run, is an error naming the file (the official code fails on a missing key).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use super::spec::{CorpusFiles, PrfSpec, QueryFiles};
use crate::retrieval::matrix::Matrix;
use crate::retrieval::trec::{Qrels, each_tsv_row, read_id_texts, read_qrels, read_run};

/// A first-pass run: each query's passages, best first.
pub type Ranking = BTreeMap<String, Vec<String>>;

/// Read a first-pass run: a TREC run (`qid Q0 pid rank score tag`, ordered by score as
/// trec_eval orders it) or MS MARCO's `qid<TAB>pid<TAB>rank` (ordered by rank), told apart by
/// the first line. Errors name the file and line.
pub fn read_ranking(path: &Path) -> Result<Ranking> {
    let text_start = {
        use std::io::BufRead;
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut first = String::new();
        std::io::BufReader::new(file)
            .read_line(&mut first)
            .with_context(|| format!("cannot read {}", path.display()))?;
        first
    };
    if text_start.split('\t').count() == 3 {
        let mut ranked: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        each_tsv_row(path, 3, "qid<TAB>pid<TAB>rank", |i, f| {
            let rank: i64 = f[2].trim().parse().with_context(|| {
                format!(
                    "{}, line {}: rank {:?} is not an integer",
                    path.display(),
                    i + 1,
                    f[2]
                )
            })?;
            if !seen.insert((f[0].to_string(), f[1].to_string())) {
                bail!(
                    "{}, line {}: passage {} is listed twice for query {}",
                    path.display(),
                    i + 1,
                    f[1],
                    f[0]
                );
            }
            ranked
                .entry(f[0].to_string())
                .or_default()
                .push((rank, f[1].to_string()));
            Ok(())
        })?;
        ensure!(!ranked.is_empty(), "{}: no ranked passages", path.display());
        Ok(ranked
            .into_iter()
            .map(|(q, mut list)| {
                list.sort_by_key(|(rank, _)| *rank);
                (q, list.into_iter().map(|(_, p)| p).collect())
            })
            .collect())
    } else {
        Ok(read_run(path)?
            .into_iter()
            .map(|(q, mut list)| {
                crate::retrieval::trec::trec_order(&mut list);
                (q, list.into_iter().map(|(p, _)| p).collect())
            })
            .collect())
    }
}

/// One query set, read.
#[derive(Debug, Clone)]
pub struct QuerySetData {
    /// The queries with a relevant passage, sorted by id, with their texts.
    pub queries: Vec<(String, String)>,
    /// Their judgements.
    pub qrels: Qrels,
    /// Their first-pass runs.
    pub ranking: Ranking,
    /// The grade that counts as relevant.
    pub relevance_level: i32,
}

impl QuerySetData {
    /// Read `files`.
    ///
    /// # Errors
    /// A file that does not parse (named with its line), or a judged query without a text or
    /// without a first-pass run.
    pub fn read(files: &QueryFiles) -> Result<Self> {
        let texts = read_id_texts(&files.queries, "query")?;
        let qrels = read_qrels(&files.qrels, None)?;
        let ranking = read_ranking(&files.run)?;
        let mut queries = Vec::new();
        for (qid, judged) in &qrels {
            if !judged.values().any(|&g| g > 0) {
                continue;
            }
            let Some(text) = texts.get(qid) else {
                bail!(
                    "{}: query {qid} has judgements but no text in {}",
                    files.qrels.display(),
                    files.queries.display()
                );
            };
            if !ranking.contains_key(qid) {
                bail!(
                    "{}: query {qid} of {} has no first-pass passages (its feedback)",
                    files.run.display(),
                    files.qrels.display()
                );
            }
            queries.push((qid.clone(), text.clone()));
        }
        ensure!(
            !queries.is_empty(),
            "{}: no query has a relevant passage",
            files.qrels.display()
        );
        let top = qrels.values().flat_map(|j| j.values()).copied().max();
        if let Some(top) = top
            && top < files.relevance_level
        {
            bail!(
                "{}: relevance_level = {} is above every grade (the highest is {top}), so every \
                 query would score 0",
                files.qrels.display(),
                files.relevance_level
            );
        }
        Ok(Self {
            queries,
            qrels,
            ranking,
            relevance_level: files.relevance_level,
        })
    }

    /// The relevant passages of `qid` (grade > 0, as the official `qrels_idx`), in id order.
    pub fn positives(&self, qid: &str) -> Vec<&str> {
        self.qrels[qid]
            .iter()
            .filter(|&(_, &g)| g > 0)
            .map(|(p, _)| p.as_str())
            .collect()
    }

    /// The first `n` first-pass passages of `qid`.
    pub fn feedback(&self, qid: &str, n: usize) -> &[String] {
        let list = &self.ranking[qid];
        &list[..n.min(list.len())]
    }
}

/// Every training positive is a row of the matrix (`in_matrix` says whether an id is).
pub fn check_positives(
    train: &QuerySetData,
    in_matrix: impl Fn(&str) -> bool,
    files: &CorpusFiles,
) -> Result<()> {
    for (qid, _) in &train.queries {
        if let Some(p) = train.positives(qid).into_iter().find(|p| !in_matrix(p)) {
            bail!(
                "{}: passage {p}, relevant to training query {qid}, is not in the matrix {} \
                 (embed the whole collection)",
                files.train.qrels.display(),
                files.matrix.display()
            );
        }
    }
    Ok(())
}

/// Everything a PRF cell reads besides the model.
#[derive(Debug)]
pub struct PrfData {
    /// The training queries.
    pub train: QuerySetData,
    /// The evaluation sets: `dev` first, then the test sets.
    pub eval: Vec<(String, QuerySetData)>,
    /// The texts of every feedback passage any query can get.
    pub passages: HashMap<String, String>,
    /// The training passages' ids (rows of `train_vectors`).
    pub train_ids: Vec<String>,
    /// Their vectors, row-major `[train_ids.len(), dim]`.
    pub train_vectors: Vec<f32>,
    /// The vectors' length.
    pub dim: usize,
}

impl PrfData {
    /// Read a corpus's files for the settings `prf`, keeping the first `max_train` training
    /// queries and `max_eval` queries of each evaluation set (0: all), calling `progress` with a
    /// line per stage.
    ///
    /// # Errors
    /// As [`QuerySetData::read`]; a feedback passage missing from the collection; a training
    /// positive missing from the matrix.
    pub fn read(
        files: &CorpusFiles,
        prf: &PrfSpec,
        (max_train, max_eval): (usize, usize),
        mut progress: impl FnMut(&str),
    ) -> Result<Self> {
        let cap = |mut set: QuerySetData, n: usize| {
            if n > 0 {
                set.queries.truncate(n);
            }
            set
        };
        let train = cap(QuerySetData::read(&files.train)?, max_train);
        let mut eval = Vec::new();
        for (name, set) in files.eval_sets() {
            eval.push((name.to_string(), cap(QuerySetData::read(set)?, max_eval)));
        }
        progress(&format!(
            "{} training queries; evaluation: {}",
            train.queries.len(),
            eval.iter()
                .map(|(n, s)| format!("{n} {} queries", s.queries.len()))
                .collect::<Vec<_>>()
                .join(", ")
        ));

        // Feedback texts: every set's first max_n_prf passages of every query.
        let mut wanted: BTreeMap<String, &Path> = BTreeMap::new();
        for (set, run) in std::iter::once((&train, &files.train.run)).chain(
            eval.iter()
                .map(|(_, s)| s)
                .zip(files.eval_sets().into_iter().map(|(_, f)| &f.run)),
        ) {
            for (qid, _) in &set.queries {
                for pid in set.feedback(qid, prf.max_n_prf) {
                    wanted.entry(pid.clone()).or_insert(run.as_path());
                }
            }
        }
        let mut passages = HashMap::with_capacity(wanted.len());
        each_tsv_row(&files.collection, 2, "pid<TAB>passage", |_, f| {
            if wanted.contains_key(f[0]) {
                passages.insert(f[0].to_string(), f[1].to_string());
            }
            Ok(())
        })?;
        if let Some((pid, run)) = wanted.iter().find(|(p, _)| !passages.contains_key(*p)) {
            bail!(
                "{}: feedback passage {pid} is not in the collection {}",
                run.display(),
                files.collection.display()
            );
        }
        progress(&format!("{} feedback passages read", passages.len()));

        // Training passages: each query's first train_candidates and its positives.
        let mut candidates = BTreeSet::new();
        for (qid, _) in &train.queries {
            candidates.extend(train.feedback(qid, prf.train_candidates).iter().cloned());
            candidates.extend(train.positives(qid).into_iter().map(String::from));
        }
        let matrix = Matrix::open(&files.matrix)?;
        let dim = matrix.dim();
        // Each candidate's row, copied once into its place (the matrix can be the whole
        // collection; the candidates of MS MARCO's training queries are millions of rows).
        let mut train_ids: Vec<String> = candidates.into_iter().collect();
        let slot: HashMap<&str, usize> = train_ids
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let mut train_vectors = vec![0f32; train_ids.len() * dim];
        let mut found = vec![false; train_ids.len()];
        for i in 0..matrix.manifest.shards.len() {
            let ids = matrix.shard_ids(i)?;
            if !ids.iter().any(|id| slot.contains_key(id.as_str())) {
                continue;
            }
            let shard = matrix.shard(i)?;
            for (r, id) in shard.ids.iter().enumerate() {
                if let Some(&k) = slot.get(id.as_str()) {
                    train_vectors[k * dim..(k + 1) * dim]
                        .copy_from_slice(&shard.vectors[r * dim..(r + 1) * dim]);
                    found[k] = true;
                }
            }
        }
        check_positives(&train, |p| slot.get(p).is_some_and(|&k| found[k]), files)?;
        drop(slot);
        // Candidates outside the matrix (a run over another collection) are left out.
        let mut kept = 0;
        for k in 0..train_ids.len() {
            if found[k] {
                train_vectors.copy_within(k * dim..(k + 1) * dim, kept * dim);
                train_ids.swap(kept, k);
                kept += 1;
            }
        }
        train_ids.truncate(kept);
        train_vectors.truncate(kept * dim);
        progress(&format!(
            "{} training passages from {} ({} rows, dim {dim})",
            train_ids.len(),
            files.matrix.display(),
            matrix.len()
        ));
        Ok(Self {
            train,
            eval,
            passages,
            train_ids,
            train_vectors,
            dim,
        })
    }
}

/// The feedback of a training query's `1 + n_compare` revisions, drawn as the official
/// `QryRfmDataset` does from `available` first-pass passages: distinct passage counts from
/// `0..=available` (`random.sample`), sorted descending; the first revision's passages are the
/// run's first ones, or with `shuffle` as many drawn at random (in random order); each later
/// revision keeps a prefix of them (the collator's cut). Returns the counts and the first
/// revision's passages as indices into the run.
///
/// # Panics
/// When `available < n_compare` (checked before a run starts).
pub fn draw_revisions(
    available: usize,
    n_compare: usize,
    shuffle: bool,
    rng: &mut StdRng,
) -> (Vec<usize>, Vec<usize>) {
    assert!(
        available >= n_compare,
        "{available} passages cannot give {} distinct counts",
        n_compare + 1
    );
    let all: Vec<usize> = (0..=available).collect();
    let mut counts: Vec<usize> = all.choose_multiple(rng, 1 + n_compare).copied().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let chosen = if shuffle {
        all[..available]
            .choose_multiple(rng, counts[0])
            .copied()
            .collect()
    } else {
        (0..counts[0]).collect()
    };
    (counts, chosen)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::SeedableRng;

    use super::*;

    #[test]
    fn revisions_have_distinct_descending_counts_and_nested_feedback() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen_counts = BTreeSet::new();
        let mut seen_first = BTreeSet::new();
        for _ in 0..2000 {
            let (counts, chosen) = draw_revisions(5, 2, true, &mut rng);
            assert_eq!(counts.len(), 3);
            assert!(counts.windows(2).all(|w| w[0] > w[1]), "{counts:?}");
            assert!(counts[0] <= 5);
            assert_eq!(chosen.len(), counts[0]);
            let distinct: BTreeSet<_> = chosen.iter().collect();
            assert_eq!(
                distinct.len(),
                chosen.len(),
                "passages drawn once: {chosen:?}"
            );
            assert!(chosen.iter().all(|&i| i < 5));
            seen_counts.insert(counts);
            if let Some(&first) = chosen.first() {
                seen_first.insert(first);
            }
        }
        // random.sample over 0..=5 choosing 3: all C(6, 3) = 20 sets appear; any passage can
        // come first when shuffled.
        assert_eq!(seen_counts.len(), 20);
        assert_eq!(seen_first.len(), 5);

        let (counts, chosen) = draw_revisions(5, 1, false, &mut rng);
        assert_eq!(
            chosen,
            (0..counts[0]).collect::<Vec<_>>(),
            "the run's best first"
        );
        let (counts, _) = draw_revisions(2, 2, false, &mut rng);
        assert_eq!(counts, [2, 1, 0], "every count when there are just enough");
    }
}
