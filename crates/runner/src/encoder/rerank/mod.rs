//! Passage re-ranking cells: a cross-encoder ([`models::RelevanceScorer`], one score per
//! `[CLS] query [SEP] passage [SEP]`) trained with listwise cross-entropy over each query's
//! candidates, then re-ranking each evaluation query's candidate list; scored with trec_eval's
//! conventions ([`crate::retrieval::trec`]: MRR@10, nDCG@10, recall@1000) and written as a TREC run
//! (`run.trec`) of the best evaluation.
//!
//! **Training groups.** A training query contributes one group per epoch: one relevant passage
//! (drawn at random among its relevant ones) and `group_size − 1` negatives (drawn without
//! replacement among its non-relevant candidates, with replacement when it has fewer). Groups
//! come from MS MARCO triples (`query positive negative` texts, grouped by query; streamed, each
//! query keeping its first `4 × (group_size − 1)` negatives) or from a
//! candidate run with qrels (relevant: any grade ≥ 1, as MS MARCO's training qrels have only
//! grade 1; negatives: the other candidates). `relevance_level` applies to evaluation only (TREC
//! DL: 2). Queries without a relevant passage or without a negative are left out and counted in
//! the log.
//!
//! **Input ablation (CmpCrop).** Here the comparative loss's input views drop *candidates*: view
//! `k` keeps the relevant passage and a nested random subset of the negatives
//! ([`ablation::crop::segment_views`], the negatives as the droppable segments), and its loss is the
//! listwise cross-entropy over the kept candidates only. A cross-encoder scores each candidate
//! alone, so a crop needs no extra forward pass: the scores of one pass per dropout power are
//! masked, so every view sees the same dropout. A crop-only loss (`n_drop = 0`) keeps ordinary
//! dropout, as LoL's trainer does (`model.train()`; HotpotQA's official code turns it off, see
//! [`crate::encoder::spec::StepDropout`]). Note the direction: fewer negatives make the listwise loss smaller, so the hinge
//! pushes the full list's loss towards the cropped lists' (the hard negatives that only the full
//! list holds), a different signal from the paper's ranking task.
//!
//! **The paper's ranking task is different.** CmpLoss's ranking experiments (MS MARCO dev, TREC
//! DL 2019/2020, DL-HARD) are pseudo-relevance feedback on a dense retriever (the LoL code,
//! zycdev/LoL): a query encoder reads the query with the top feedback passages of a first-pass
//! retrieval and is trained so that revisions with more feedback passages retrieve better, the
//! ablation dropping feedback passages. That needs a dense index of the 8.8M-passage
//! collection and is not what this cell does; this cell is the cross-encoder re-ranker the issue
//! asks for. Re-ranking a fixed candidate list cannot change recall@1000: the metric depends only
//! on which passages are in the list, so it is reported to show the candidates' ceiling.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ablation::DropoutMasks;
use ablation::View;
use ablation::crop::{CropMode, segment_views};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use losses::listwise_cross_entropy;
use models::{BertModel, EncoderConfig, RelevanceScorer, TextTokenizer};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::index::sample;

use crate::encoder::cell::{TrainCell, dataset_file};
use crate::encoder::fit::{EncoderLearner, EvalAblation, Evaluation, Inner, fit, open_checkpoint};
use crate::encoder::objective::Objective;
use crate::encoder::spec::{RankingFiles, RankingSpec};
use crate::harness::log::{Outcome, RunLog};
use crate::metrics::Scores;
use crate::retrieval::trec::{
    Qrels, Run, each_tsv_row, evaluate_run, read_candidates, read_id_texts, read_qrels, read_run,
    run_to_trec,
};
use crate::training::seeds::{Purpose, derive_seed};

/// One training query: its text, relevant passages and negatives (texts).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// The query.
    pub query: String,
    /// Relevant passages.
    pub positives: Vec<String>,
    /// Non-relevant passages.
    pub negatives: Vec<String>,
}

/// One evaluation query and its candidates (id, text), in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalQuery {
    /// Query id.
    pub qid: String,
    /// Query text.
    pub text: String,
    /// Candidate passages: id and text.
    pub candidates: Vec<(String, String)>,
}

/// Query texts and passage texts (id → text).
type Texts = (BTreeMap<String, String>, BTreeMap<String, String>);

/// A candidate file: a TREC run, or MS MARCO's `top1000` TSV (detected by its three tabs),
/// which carries the query and passage texts.
fn read_candidate_file(path: &Path) -> Result<(Run, Option<Texts>)> {
    use std::io::BufRead;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    if first.matches('\t').count() == 3 {
        let c = read_candidates(path)?;
        Ok((c.run, Some((c.queries, c.passages))))
    } else {
        Ok((read_run(path)?, None))
    }
}

/// The files of a ranking dataset, read.
struct Files<'a> {
    spec: &'a RankingSpec,
    paths: &'a RankingFiles,
    collection: Option<BTreeMap<String, String>>,
}

impl<'a> Files<'a> {
    fn collection(&mut self) -> Result<&BTreeMap<String, String>> {
        if self.collection.is_none() {
            let file = self.paths.collection.as_deref().context(
                "the candidates are a TREC run without texts: `ranking.collection` must name \
                 the passages file (`pid<TAB>text`)",
            )?;
            self.collection = Some(read_id_texts(file, "passage")?);
        }
        Ok(self.collection.as_ref().expect("just read"))
    }

    /// A passage's text (from the collection), naming the file that cited it when missing.
    fn passage(&mut self, pid: &str, cited_in: &str) -> Result<String> {
        let collection = self.collection()?;
        collection.get(pid).cloned().with_context(|| {
            format!(
                "{cited_in}: passage {pid} is not in {}",
                self.spec.collection.as_deref().unwrap_or("the collection")
            )
        })
    }

    fn queries(&self, file: Option<&Path>) -> Result<Option<BTreeMap<String, String>>> {
        file.map(|f| read_id_texts(f, "query")).transpose()
    }

    /// Candidates (≤ `max` per query, file order) with texts, and the qrels checked against the
    /// queries.
    fn candidates(
        &mut self,
        cand_path: &Path,
        qrels: &Path,
        queries: Option<&Path>,
        max: usize,
    ) -> Result<(Vec<EvalQuery>, Qrels)> {
        let (run, texts) = read_candidate_file(cand_path)?;
        let queries = match (self.queries(queries)?, &texts) {
            (Some(q), _) => q,
            (None, Some((q, _))) => q.clone(),
            (None, None) => bail!(
                "{}: a TREC run has no query texts: name the queries file (`qid<TAB>text`)",
                cand_path.display()
            ),
        };
        let known = |q: &str| queries.contains_key(q);
        let qrels = read_qrels(qrels, Some(&known))?;
        let cited = cand_path.display().to_string();
        let mut out = Vec::with_capacity(run.len());
        for (qid, ranked) in &run {
            let text = queries
                .get(qid)
                .or_else(|| texts.as_ref().and_then(|t| t.0.get(qid)))
                .with_context(|| format!("{cited}: query {qid} is not in the queries file"))?;
            let mut list = Vec::with_capacity(ranked.len().min(max));
            for (pid, _) in ranked.iter().take(max) {
                let passage = match &texts {
                    Some((_, passages)) => passages[pid].clone(),
                    None => self.passage(pid, &cited)?,
                };
                list.push((pid.clone(), passage));
            }
            out.push(EvalQuery {
                qid: qid.clone(),
                text: text.clone(),
                candidates: list,
            });
        }
        Ok((out, qrels))
    }
}

/// Negatives kept per training query from triples, in multiples of the group size: MS MARCO's
/// `triples.train.small.tsv` holds ~40M triples (27 GB), far more negatives per query than
/// training draws, so the file is streamed and each query keeps its first ones.
const KEPT_NEGATIVES_PER_SLOT: usize = 4;

/// Training groups from triples (`query positive negative`), grouped by query text in order of
/// first appearance, read line by line (the file is not held in memory); each query keeps at
/// most `4 × (group_size − 1)` distinct negatives. A line without three non-empty tab-separated
/// fields is an error naming the file and line.
fn groups_from_triples(path: &Path, group_size: usize) -> Result<Vec<Group>> {
    let keep = KEPT_NEGATIVES_PER_SLOT * (group_size - 1).max(1);
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    each_tsv_row(path, 3, "query positive negative", |_, r| {
        let [query, positive, negative] = [r[0], r[1], r[2]];
        let k = match index.get(query) {
            Some(&k) => k,
            None => {
                index.insert(query.to_string(), groups.len());
                groups.push(Group {
                    query: query.to_string(),
                    positives: Vec::new(),
                    negatives: Vec::new(),
                });
                groups.len() - 1
            }
        };
        let g = &mut groups[k];
        if !g.positives.iter().any(|p| p == positive) {
            g.positives.push(positive.to_string());
        }
        if g.negatives.len() < keep && !g.negatives.iter().any(|n| n == negative) {
            g.negatives.push(negative.to_string());
        }
        Ok(())
    })?;
    Ok(groups)
}

/// A ranking cell's data and settings.
pub struct RankLearner {
    tokenizer: TextTokenizer,
    groups: Vec<Group>,
    group_size: usize,
    eval: Vec<EvalQuery>,
    qrels: Qrels,
    relevance_level: i32,
    metric: &'static str,
    eval_batch: usize,
    config: EncoderConfig,
}

impl RankLearner {
    /// Read a cell's ranking files. Returns the learner and a line for the log.
    pub fn load(cell: &TrainCell, config: &EncoderConfig) -> Result<(Self, String)> {
        let t = &cell.train;
        let spec = cell
            .dataset
            .ranking
            .as_ref()
            .context("format = \"ranking\" needs `ranking = { … }`")?;
        let metric = spec.metric.name();
        let paths = cell
            .ranking_files
            .as_ref()
            .context("format = \"ranking\" needs `ranking = { … }`")?;
        let tokenizer =
            TextTokenizer::from_dir(&cell.model_dir, config)?.with_max_len(t.max_seq_len)?;
        let mut files = Files {
            spec,
            paths,
            collection: None,
        };
        let named = (&spec.train_triples, &spec.train_candidates);
        let mut groups = match (named, (&paths.train_triples, &paths.train_candidates)) {
            ((Some(_), None), (Some(triples), None)) => {
                groups_from_triples(triples, spec.group_size)?
            }
            ((None, Some(candidates)), (None, Some(cand_path))) => {
                let qrels = paths
                    .train_qrels
                    .as_deref()
                    .context("`ranking.train_candidates` needs `ranking.train_qrels`")?;
                let (queries, qrels) = files.candidates(
                    cand_path,
                    qrels,
                    paths.train_queries.as_deref(),
                    usize::MAX,
                )?;
                let mut groups = Vec::with_capacity(queries.len());
                for q in queries {
                    let judged = qrels.get(&q.qid);
                    let relevant =
                        |pid: &str| judged.and_then(|j| j.get(pid)).copied().unwrap_or(0);
                    let mut positives = Vec::new();
                    for (pid, grade) in judged.into_iter().flatten() {
                        if *grade >= 1 {
                            let text = match q.candidates.iter().find(|c| &c.0 == pid) {
                                Some(c) => c.1.clone(),
                                None => files.passage(pid, candidates)?,
                            };
                            positives.push(text);
                        }
                    }
                    let negatives = q
                        .candidates
                        .iter()
                        .filter(|c| relevant(&c.0) < 1)
                        .map(|c| c.1.clone())
                        .collect();
                    groups.push(Group {
                        query: q.text,
                        positives,
                        negatives,
                    });
                }
                groups
            }
            _ => bail!(
                "a ranking dataset trains on `ranking.train_triples` or on \
                 `ranking.train_candidates` with `train_qrels`: name exactly one"
            ),
        };
        let before = groups.len();
        groups.retain(|g| !g.positives.is_empty() && !g.negatives.is_empty());
        let left_out = before - groups.len();
        if t.max_train_examples > 0 {
            groups.truncate(t.max_train_examples);
        }
        let (mut eval, qrels) = files.candidates(
            &paths.eval_candidates,
            &paths.eval_qrels,
            paths.eval_queries.as_deref(),
            spec.max_candidates,
        )?;
        if t.max_eval_examples > 0 {
            eval.truncate(t.max_eval_examples);
        }
        let note = format!(
            "{} training queries ({left_out} without a relevant passage or a negative left out), \
             {} evaluation queries with {} candidates",
            groups.len(),
            eval.len(),
            eval.iter().map(|q| q.candidates.len()).sum::<usize>()
        );
        Ok((
            Self {
                tokenizer,
                groups,
                group_size: spec.group_size,
                eval,
                qrels,
                relevance_level: spec.relevance_level,
                metric,
                eval_batch: t.batch_size * spec.group_size,
                config: config.clone(),
            },
            note,
        ))
    }

    /// A group's candidates for one step: the relevant passage first, then the negatives.
    fn draw<'g>(&self, group: &'g Group, rng: &mut StdRng) -> Vec<&'g str> {
        let mut out = Vec::with_capacity(self.group_size);
        out.push(group.positives[rng.random_range(0..group.positives.len())].as_str());
        let want = self.group_size - 1;
        let negatives = &group.negatives;
        if negatives.len() >= want {
            out.extend(
                sample(rng, negatives.len(), want)
                    .into_iter()
                    .map(|i| negatives[i].as_str()),
            );
        } else {
            out.extend((0..want).map(|_| negatives[rng.random_range(0..negatives.len())].as_str()));
        }
        out
    }
}

impl<B: AutodiffBackend> EncoderLearner<B> for RankLearner {
    type Model = RelevanceScorer<B>;

    fn train_len(&self) -> usize {
        self.groups.len()
    }

    fn sizes(&self) -> String {
        format!(
            "{} train queries (groups of {}) / {} eval queries",
            self.groups.len(),
            self.group_size,
            self.eval.len()
        )
    }

    fn unit_len(&self, i: usize) -> usize {
        self.groups[i].query.len()
    }

    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        objective: &Objective,
        masks: &mut Option<DropoutMasks<B>>,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Result<Tensor<B, 1>> {
        let g = self.group_size;
        let q = batch.len();
        let mut pairs = Vec::with_capacity(q * g);
        for &i in batch {
            let group = &self.groups[i];
            for passage in self.draw(group, rng) {
                pairs.push((group.query.as_str(), passage));
            }
        }
        let input = self.tokenizer.encode_pairs(&pairs)?.to_input::<B>(device);
        let seq = input.input_ids.dims()[1];
        // One pass per distinct dropout power; crops mask candidates of those scores.
        let mut powers: Vec<u32> = Vec::new();
        for v in &objective.views {
            if !powers.contains(&v.power) {
                powers.push(v.power);
            }
        }
        let passes: Vec<View> = powers
            .iter()
            .map(|&power| View { crop: 0, power })
            .collect();
        let scores = objective.run_views_of(&passes, std::slice::from_ref(&input), seq, masks, {
            |input, ctx, _| model.forward(input, ctx).unsqueeze_dim(1)
        }); // [q·g, passes, 1]
        let crops = objective.input_views() - 1;
        let mut keep = vec![vec![0f32; q * g]; crops + 1];
        let supporting: Vec<bool> = (0..g).map(|k| k == 0).collect();
        for row in 0..q {
            for (view, kept) in segment_views(&supporting, crops, CropMode::Train, rng)
                .into_iter()
                .enumerate()
            {
                for k in 0..g {
                    if !kept.contains(&k) {
                        keep[view][row * g + k] = -1e9;
                    }
                }
            }
        }
        let mut labels = vec![0f32; q * g];
        for row in 0..q {
            labels[row * g] = 1.0;
        }
        let labels = Tensor::<B, 2>::from_data(TensorData::new(labels, [q, g]), device);
        let per_view: Vec<Tensor<B, 1>> = objective
            .views
            .iter()
            .map(|v| {
                let p = powers.iter().position(|&p| p == v.power).expect("listed");
                let s = scores
                    .clone()
                    .slice([0..q * g, p..p + 1, 0..1])
                    .reshape([q, g]);
                let mask = Tensor::<B, 2>::from_data(
                    TensorData::new(keep[v.crop].clone(), [q, g]),
                    device,
                );
                listwise_cross_entropy(s + mask, labels.clone())
            })
            .collect();
        Ok(objective.combine(Tensor::stack::<2>(per_view, 1).unsqueeze_dim(2)))
    }

    fn evaluate(
        &self,
        model: &Inner<B, Self::Model>,
        ablation: &EvalAblation<B::InnerBackend>,
        progress: &mut dyn FnMut(usize, usize),
        device: &B::Device,
    ) -> Result<Evaluation> {
        let mut run = Run::new();
        let mut pass = 0;
        for (done, query) in self.eval.iter().enumerate() {
            progress(done + 1, self.eval.len());
            let mut ranked = Vec::with_capacity(query.candidates.len());
            for chunk in query.candidates.chunks(self.eval_batch.max(1)) {
                let pairs: Vec<(&str, &str)> = chunk
                    .iter()
                    .map(|(_, p)| (query.text.as_str(), p.as_str()))
                    .collect();
                let input = self.tokenizer.encode_pairs(&pairs)?.to_input(device);
                let scores = model.forward(&input, &mut ablation.context(pass));
                pass += 1;
                let scores = scores.into_data();
                for ((pid, _), s) in chunk.iter().zip(scores.iter::<f32>()) {
                    ranked.push((pid.clone(), f64::from(s)));
                }
            }
            run.insert(query.qid.clone(), ranked);
        }
        let (_, means) = evaluate_run(&run, &self.qrels, self.relevance_level);
        let scores = Scores {
            main: self.metric,
            values: [
                ("mrr@10", means.mrr_at_10),
                ("ndcg@10", means.ndcg_at_10),
                ("recall@1000", means.recall_at_1000),
            ]
            .into(),
        };
        Ok(Evaluation::new(
            scores,
            vec![("run.trec".into(), run_to_trec(&run, "neuronlab"))],
        ))
    }

    fn encoder<'a>(&self, model: &'a Inner<B, Self::Model>) -> &'a BertModel<B::InnerBackend> {
        &model.classifier.encoder
    }

    fn save(&self, model: &Inner<B, Self::Model>, out: &Path) -> Result<()> {
        Ok(model
            .classifier
            .save_pretrained(&self.config, &["relevance".to_string()], out)?)
    }
}

/// Every file the ranking dataset names exists (before any cell runs).
pub(crate) fn check_inputs(cell: &TrainCell) -> Result<()> {
    let files = cell
        .ranking_files
        .as_ref()
        .context("format = \"ranking\" needs `ranking = { … }`")?;
    files.all().try_for_each(|f| dataset_file(cell, f))
}

/// The loss of a ranking cell's steps. Its crop-only steps keep ordinary dropout unless the loss
/// says `dropout = "off"`: LoL's trainer calls `model.train()` (see
/// [`crate::encoder::spec::StepDropout::crop_only_default`]).
pub fn objective(cell: &TrainCell) -> Result<Objective> {
    Objective::with_crops(
        &cell.loss,
        cell.train.view_budget_tokens,
        "ranking crops negative candidates",
    )
}

/// Train and evaluate one ranking cell (see the module docs).
pub fn train_rank_cell<B: AutodiffBackend>(
    cell: &TrainCell,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let checkpoint = open_checkpoint(cell)?;
    let config = checkpoint.config.clone();
    let (learner, note) = RankLearner::load(cell, &config)?;
    log.line(&note);
    let objective = objective(cell)?;
    let (model, report) = RelevanceScorer::<B>::load(
        checkpoint,
        None,
        derive_seed(cell.seed, Purpose::Head, 0),
        device,
    )?;
    log.initialised(&report);
    fit(cell, &learner, model, &objective, dir, log, device)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    type B = NdArray<f32>;

    #[test]
    fn triples_group_by_query_and_keep_a_bounded_number_of_negatives() {
        let path = std::env::temp_dir().join(format!("triples-{}.tsv", std::process::id()));
        let mut text = String::new();
        for k in 0..20 {
            text.push_str(&format!("q one\tpos a\tneg {k}\n"));
            text.push_str(&format!("q two\tpos {}\tneg 0\n", k % 2));
        }
        std::fs::write(&path, text).unwrap();
        let groups = groups_from_triples(&path, 3).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].query, "q one");
        assert_eq!(groups[0].positives, ["pos a"]);
        let kept: Vec<String> = (0..8).map(|k| format!("neg {k}")).collect();
        assert_eq!(
            groups[0].negatives, kept,
            "4 x (3 - 1) first distinct negatives"
        );
        assert_eq!(groups[1].positives, ["pos 0", "pos 1"]);
        assert_eq!(groups[1].negatives, ["neg 0"]);
    }

    #[test]
    fn a_masked_candidate_leaves_the_listwise_loss_of_the_others() {
        let device = Default::default();
        let scores = [1.5f32, -0.3, 0.7, 2.0];
        let full = Tensor::<B, 2>::from_data(TensorData::new(scores.to_vec(), [1, 4]), &device);
        let mask = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0f32, -1e9, 0.0, -1e9], [1, 4]),
            &device,
        );
        let labels =
            Tensor::<B, 2>::from_data(TensorData::new(vec![1f32, 0., 0., 0.], [1, 4]), &device);
        let masked = listwise_cross_entropy(full + mask, labels)
            .into_scalar()
            .elem::<f32>();
        // −log softmax over the kept candidates (1.5, 0.7) at the relevant one.
        let expected = -(1.5f32 - (1.5f32.exp() + 0.7f32.exp()).ln());
        assert!((masked - expected).abs() < 1e-6, "{masked} vs {expected}");
    }
}
