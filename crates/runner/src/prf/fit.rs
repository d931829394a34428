//! A PRF cell's run: train the reformulator on the training queries with LoL's objective,
//! evaluate on `dev` by searching the whole matrix, keep the best model by MRR@10 (the official
//! `metric_for_best_model mrr10`), and evaluate it on every query set at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::backend::Autodiff;
use burn::prelude::*;
use losses::ReformulationLoss;
use models::{
    Checkpoint, FeedbackInput, FeedbackLimits, ForwardContext, QueryReformulator, TextTokenizer,
    feedback_batch,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::cell::{PrfCell, check_revisions};
use super::data::{PrfData, QuerySetData, draw_revisions};
use crate::harness::log::{Outcome, RunLog};
use crate::harness::results::write_atomic;
use crate::retrieval::matrix::Matrix;
use crate::retrieval::search::{SearchPlan, search};
use crate::retrieval::trec::{Run, evaluate_run, run_to_trec};
use crate::training::fit::{Evaluation, Learner, Plan, fit};
use crate::training::seeds::{Purpose, derive_seed, shuffled};

/// Passages kept per evaluated query (the official evaluation's depth, for recall@1000).
const EVAL_DEPTH: usize = 1000;

/// The main metric.
const MAIN: &str = "mrr@10";

/// Run `cell` in `dir` on `device`.
pub fn run_prf<B: Backend>(
    cell: &PrfCell,
    dir: &Path,
    log: &mut RunLog,
    device: &B::Device,
) -> Result<Outcome> {
    let t = &cell.train;
    let limits = (t.max_train_examples, t.max_eval_examples);
    let mut data = PrfData::read(&cell.files, &cell.prf, limits, |line| log.line(line))?;
    check_revisions(&data.train, &cell.prf, &cell.files.train.run)?;
    let checkpoint = Checkpoint::open(&cell.model_dir)
        .with_context(|| format!("loading model {}", cell.model_dir.display()))?;
    if checkpoint.config.hidden_size != data.dim {
        bail!(
            "{}: the passage vectors have {} dimensions, the model's hidden_size is {}",
            cell.files.matrix.display(),
            data.dim,
            checkpoint.config.hidden_size
        );
    }
    let tokenizer = TextTokenizer::from_dir(&cell.model_dir, &checkpoint.config)?;
    let limits = FeedbackLimits {
        max_seq_len: cell
            .train
            .max_seq_len
            .min(checkpoint.config.max_input_len()),
        max_q_len: cell.prf.max_q_len,
        max_p_len: cell.prf.max_p_len,
    };
    let (model, report) = QueryReformulator::<Autodiff<B>>::load(
        checkpoint,
        cell.prf.reformulator(),
        derive_seed(cell.seed, Purpose::Head, 0),
        device,
    )?;
    log.initialised(&report);
    let matrix = Matrix::open(&cell.files.matrix)?;
    // Every feedback passage tokenised once (its texts are not needed after), cut to
    // max_p_len, which no input exceeds.
    let mut passage_tokens = HashMap::with_capacity(data.passages.len());
    for (pid, text) in data.passages.drain() {
        let mut tokens = FeedbackInput::passage_tokens(&tokenizer, &text)
            .with_context(|| format!("passage {pid}"))?;
        tokens.truncate(limits.max_p_len);
        passage_tokens.insert(pid, tokens);
    }
    let inputs = Inputs {
        tokenizer: &tokenizer,
        passages: &passage_tokens,
        limits,
    };
    // The evaluation sets' inputs, the same at every evaluation: each query with its first
    // max_n_prf first-pass passages.
    let eval_inputs: Vec<Vec<FeedbackInput>> = data
        .eval
        .iter()
        .map(|(_, set)| {
            set.queries
                .iter()
                .map(|(qid, text)| inputs.input(text, set.feedback(qid, cell.prf.max_n_prf)))
                .collect::<Result<_>>()
        })
        .collect::<Result<_>>()?;

    // Training passages: constants on the device; each training query's positives as rows.
    let row_of: HashMap<&str, usize> = data
        .train_ids
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i))
        .collect();
    let vectors = std::mem::take(&mut data.train_vectors);
    let passages = Tensor::<Autodiff<B>, 2>::from_data(
        TensorData::new(vectors, [data.train_ids.len(), data.dim]),
        device,
    );
    let train = &data.train;
    let positives: Vec<Vec<usize>> = train
        .queries
        .iter()
        .map(|(qid, _)| train.positives(qid).iter().map(|p| row_of[p]).collect())
        .collect();
    let objective = ReformulationLoss::new(cell.prf.n_compare)
        .with_lambda_pr(cell.prf.lambda_pr)
        .with_lambda_qr(cell.prf.lambda_qr)
        .with_lambda_cr(cell.prf.lambda_cr);

    let learner = PrfLearner {
        cell,
        train,
        inputs: &inputs,
        passages,
        positives,
        objective,
        dev: (&data.eval[0].0, &data.eval[0].1, &eval_inputs[0]),
        matrix: &matrix,
    };
    let trained = fit(&learner, model, t, dir, log, device)?;

    // The best model on every set (dev: its evaluation, whose run was written with it), beside
    // the first-pass runs' scores.
    let mut metrics = BTreeMap::new();
    for (i, (name, set)) in data.eval.iter().enumerate() {
        let scores = if i == 0 {
            trained.best_metrics.clone()
        } else {
            let (scores, run) = evaluate(
                &trained.model,
                set,
                &eval_inputs[i],
                (&tokenizer, &matrix),
                t.batch_size,
                &mut |done, total| log.evaluating("queries", done, total, name),
                device,
            )?;
            write_atomic(&dir.join(run_file(name)), run_to_trec(&run, TAG).as_bytes())?;
            scores
        };
        let first_pass = first_pass_scores(set);
        let prefix = if i == 0 {
            String::new()
        } else {
            format!("{name}/")
        };
        for (k, v) in scores {
            metrics.insert(format!("{prefix}{k}"), v);
        }
        for (k, v) in first_pass {
            metrics.insert(format!("{prefix}first-pass {k}"), v);
        }
        log.line(&format!(
            "{name}: {MAIN} {:.4} (first pass {:.4})",
            metrics[&format!("{prefix}{MAIN}")],
            metrics[&format!("{prefix}first-pass {MAIN}")]
        ));
    }
    Ok(Outcome {
        main_metric: MAIN.into(),
        metrics,
        best_step: Some(trained.best_step),
        final_metrics: trained.last_metrics,
        steps: Some(trained.plan.total),
        ablation: Vec::new(),
        resolved: BTreeMap::new(),
    })
}

/// The run file of query set `name`.
fn run_file(name: &str) -> String {
    format!("run.{name}.trec")
}

/// The run tag of the written runs.
const TAG: &str = "neuronlab-prf";

/// A PRF cell's learner: the reformulator trained with LoL's objective on the training queries'
/// revisions, evaluated on the dev set by searching the whole matrix.
struct PrfLearner<'a, B: Backend> {
    cell: &'a PrfCell,
    train: &'a QuerySetData,
    inputs: &'a Inputs<'a>,
    /// The training queries' positive passages' vectors (constants on the device).
    passages: Tensor<Autodiff<B>, 2>,
    /// Each training query's positives as rows of `passages`.
    positives: Vec<Vec<usize>>,
    objective: ReformulationLoss,
    /// The dev set's name, queries and inputs.
    dev: (&'a str, &'a QuerySetData, &'a [FeedbackInput]),
    matrix: &'a Matrix,
}

impl<B: Backend> Learner<Autodiff<B>> for PrfLearner<'_, B> {
    type Model = QueryReformulator<Autodiff<B>>;

    fn train_len(&self) -> usize {
        self.train.queries.len()
    }

    fn describe(&self, plan: &Plan) -> String {
        format!(
            "{} steps of {} training queries × {} revisions (warmup {}), evaluation every {}",
            plan.total,
            self.cell.train.batch_size,
            self.objective.group(),
            plan.warmup,
            plan.eval_every
        )
    }

    fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        shuffled(
            self.train_len(),
            self.cell.seed,
            Purpose::PrfDataOrder,
            epoch as u64,
        )
    }

    fn batch_loss(
        &self,
        model: &Self::Model,
        batch: &[usize],
        index: u64,
        device: &B::Device,
    ) -> Result<Tensor<Autodiff<B>, 1>> {
        let prf = &self.cell.prf;
        let mut rng =
            StdRng::seed_from_u64(derive_seed(self.cell.seed, Purpose::PrfRevisions, index));
        let mut revisions = Vec::new();
        let mut batch_positives = Vec::new();
        for &q in batch {
            let (qid, text) = &self.train.queries[q];
            let feedback = self.train.feedback(qid, prf.max_n_prf);
            revisions.extend(self.inputs.revisions(
                text,
                feedback,
                self.objective.n_compare,
                prf.shuffle_psgs,
                &mut rng,
            )?);
            for _ in 0..self.objective.group() {
                batch_positives.push(self.positives[q].clone());
            }
        }
        let input = feedback_batch(&revisions, self.inputs.tokenizer).to_input(device);
        let masks =
            ablation::DropoutMasks::new(derive_seed(self.cell.seed, Purpose::PrfDropout, index));
        let vectors = model.forward(&input, &mut ForwardContext::with_dropout(masks));
        Ok(self
            .objective
            .forward(vectors, self.passages.clone(), &batch_positives, true)
            .loss)
    }

    fn evaluate(
        &self,
        model: &QueryReformulator<B>,
        log: &mut RunLog,
        device: &B::Device,
    ) -> Result<Evaluation> {
        let (name, set, inputs) = self.dev;
        let (metrics, run) = evaluate(
            model,
            set,
            inputs,
            (self.inputs.tokenizer, self.matrix),
            self.cell.train.batch_size,
            &mut |done, total| log.evaluating("queries", done, total, name),
            device,
        )?;
        Ok(Evaluation {
            main: MAIN.into(),
            metrics,
            files: vec![(run_file(name), run_to_trec(&run, TAG))],
        })
    }
}

/// What turns a query and its feedback into tokens.
struct Inputs<'a> {
    tokenizer: &'a TextTokenizer,
    /// Every feedback passage's tokens.
    passages: &'a HashMap<String, Vec<u32>>,
    limits: FeedbackLimits,
}

impl Inputs<'_> {
    /// The input of `query` with the passages `pids` as feedback.
    fn input<'p>(
        &self,
        query: &str,
        pids: impl IntoIterator<Item = &'p String>,
    ) -> Result<FeedbackInput> {
        let query = FeedbackInput::query_tokens(self.tokenizer, query)
            .with_context(|| format!("query {query:?}"))?;
        let passages: Vec<&[u32]> = pids
            .into_iter()
            .map(|p| self.passages[p].as_slice())
            .collect();
        Ok(FeedbackInput::from_tokens(&query, &passages, self.limits))
    }

    /// A training query's `1 + n_compare` revisions ([`draw_revisions`]).
    fn revisions(
        &self,
        query: &str,
        feedback: &[String],
        n_compare: usize,
        shuffle: bool,
        rng: &mut StdRng,
    ) -> Result<Vec<FeedbackInput>> {
        let (counts, chosen) = draw_revisions(feedback.len(), n_compare, shuffle, rng);
        let full = self.input(query, chosen.iter().map(|&i| &feedback[i]))?;
        Ok(counts.iter().map(|&n| full.first(n)).collect())
    }
}

/// The model's run on `set` (its `inputs`: each query with its first `max_n_prf` first-pass
/// passages as feedback, searched over the whole matrix) and its scores.
fn evaluate<B: Backend>(
    model: &QueryReformulator<B>,
    set: &QuerySetData,
    inputs: &[FeedbackInput],
    (tokenizer, matrix): (&TextTokenizer, &Matrix),
    batch_size: usize,
    progress: &mut dyn FnMut(usize, usize),
    device: &B::Device,
) -> Result<(BTreeMap<String, f64>, Run)> {
    let mut vectors = Vec::new();
    let mut done = 0;
    for batch in inputs.chunks(batch_size.max(1)) {
        done += batch.len();
        progress(done, inputs.len());
        let input = feedback_batch(batch, tokenizer).to_input(device);
        let v = model.forward(&input, &mut ForwardContext::eval());
        vectors.extend(
            v.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32"),
        );
    }
    let found = search::<B>(matrix, &vectors, EVAL_DEPTH, SearchPlan::default(), device)?;
    let run: Run = set
        .queries
        .iter()
        .zip(found)
        .map(|((qid, _), list)| (qid.clone(), list))
        .collect();
    let (_, means) = evaluate_run(&run, &set.qrels, set.relevance_level);
    Ok((rank_metrics(&means), run))
}

/// The first-pass run's scores on `set` (its order as read: score 1/rank).
fn first_pass_scores(set: &QuerySetData) -> BTreeMap<String, f64> {
    let run: Run = set
        .queries
        .iter()
        .map(|(qid, _)| {
            let list = set.ranking[qid]
                .iter()
                .enumerate()
                .map(|(k, p)| (p.clone(), 1.0 / (k + 1) as f64))
                .collect();
            (qid.clone(), list)
        })
        .collect();
    rank_metrics(&evaluate_run(&run, &set.qrels, set.relevance_level).1)
}

fn rank_metrics(s: &crate::retrieval::trec::RankScores) -> BTreeMap<String, f64> {
    BTreeMap::from([
        (MAIN.to_string(), s.mrr_at_10),
        ("ndcg@10".to_string(), s.ndcg_at_10),
        ("recall@100".to_string(), s.recall_at_100),
        ("recall@1000".to_string(), s.recall_at_1000),
    ])
}
