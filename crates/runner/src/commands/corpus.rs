//! `neuronlab corpus embed` and `corpus search`: a passage collection encoded into a sharded
//! matrix (resumable after a kill, a shard at a time), and queries searched exactly against it
//! into a TREC run (scored against qrels when given).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::backend::BackendJob;
use crate::harness::progress::Progress;
use crate::harness::results::write_atomic;
use crate::retrieval::encode::{Pooling, TextEncoder};
use crate::retrieval::matrix::{DistinctIds, Matrix, MatrixWriter, VectorDtype};
use crate::retrieval::search::{SearchPlan, search};
use crate::retrieval::trec::{
    Run, each_tsv_row, evaluate_run, read_id_texts, read_qrels, run_to_trec,
};

/// The encoder settings both commands share (a matrix is searched with the queries encoded as
/// its passages were).
#[derive(Debug, Clone, clap::Args)]
pub struct EncoderArgs {
    /// Encoder checkpoint folder (config.json, weights, tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// How token states become one vector.
    #[arg(long, value_enum, default_value = "mean")]
    pub pooling: Pooling,
    /// Pass the pooled state through the checkpoint's projection head (ANCE's `embeddingHead`
    /// and `norm`, or a PRF reformulator's `dense_proj` and `layer_norm`): ANCE's vectors are
    /// `--pooling cls --projection`.
    #[arg(long)]
    pub projection: bool,
    /// L2-normalise every vector (inner product = cosine).
    #[arg(long)]
    pub normalize: bool,
    /// Truncate texts to this many tokens (default: the model's positions).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
}

impl EncoderArgs {
    /// What a matrix records of how it was made (checked when a run resumes it).
    fn source(&self) -> String {
        format!(
            "{} pooling={:?}{} normalize={} max_len={}",
            self.model.display(),
            self.pooling,
            if self.projection { " projection" } else { "" },
            self.normalize,
            self.max_len.map_or("model".into(), |n| n.to_string())
        )
    }

    fn open<B: Backend>(&self, device: &B::Device) -> Result<TextEncoder<B>> {
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        TextEncoder::open(
            &self.model,
            (self.pooling, self.projection, self.normalize),
            self.max_len,
            device,
        )
    }

    /// Encode `texts` a batch at a time.
    fn encode_all<B: Backend>(
        &self,
        encoder: &TextEncoder<B>,
        texts: &[&str],
        device: &B::Device,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(texts.len() * encoder.dim());
        for batch in texts.chunks(self.batch) {
            out.extend(encoder.encode(batch, device)?);
        }
        Ok(out)
    }
}

/// Encode a passage collection into a sharded matrix.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusEmbedJob {
    // The encoder and how it pools (clap flattens its flags into this command's).
    #[allow(missing_docs)]
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// The collection: `pid<TAB>passage` per line (MS MARCO's collection.tsv).
    #[arg(long)]
    pub collection: PathBuf,
    // Where the matrix goes and how it is stored.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub matrix: MatrixArgs,
}

/// The matrix folder a command writes (`corpus embed`, `corpus import`).
#[derive(Debug, Clone, clap::Args)]
pub struct MatrixArgs {
    /// The matrix folder (created, or resumed after its last whole shard).
    #[arg(long)]
    pub output: PathBuf,
    /// Storage type of the vectors.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: VectorDtype,
    /// Passages per shard (the unit of resumption).
    #[arg(long, default_value_t = 65_536)]
    pub shard_rows: usize,
}

/// What `corpus embed` did, printed as JSON.
#[derive(Debug, Serialize)]
pub struct EmbedSummary {
    /// Passages in the matrix.
    pub passages: usize,
    /// Passages found already embedded (a resumed run).
    pub resumed_after: usize,
    /// Shards in the matrix.
    pub shards: usize,
    /// The vectors' length.
    pub dim: usize,
    /// Seconds this run took.
    pub seconds: f64,
    /// Passages embedded per second by this run.
    pub passages_per_s: f64,
}

impl BackendJob for CorpusEmbedJob {
    type Output = EmbedSummary;

    fn run<B: Backend>(self, device: B::Device) -> Result<EmbedSummary> {
        let clock = Instant::now();
        let path = &self.collection;
        let layout = "pid passage";
        // Read through once: every line is checked before any work, and the total is known.
        let mut total = 0usize;
        let mut ids = DistinctIds::default();
        each_tsv_row(path, 2, layout, |i, fields| {
            total += 1;
            ids.note(fields[0], i + 1, path)
        })?;
        drop(ids);
        let encoder = self.encoder.open::<B>(&device)?;
        let mut writer = MatrixWriter::open(
            &self.matrix.output,
            encoder.dim(),
            self.matrix.dtype,
            self.matrix.shard_rows,
            &self.encoder.source(),
        )?;
        let resumed_after = writer.rows();
        if resumed_after > total {
            bail!(
                "{}: the matrix holds {resumed_after} passages, the collection {} only {total}",
                self.matrix.output.display(),
                path.display()
            );
        }
        if resumed_after > 0 {
            tracing::info!(
                "{}: resuming after {resumed_after} passages",
                self.matrix.output.display()
            );
        }
        // A resumed run checks that the collection still ends its last shard where it did.
        let last_id = match writer.manifest().shards.len() {
            0 => None,
            n => Matrix::open(&self.matrix.output)?.shard_ids(n - 1)?.pop(),
        };
        let mut pending: Vec<(String, String)> = Vec::new();
        let mut embedded = 0usize;
        let mut progress = Progress::new(
            "corpus embed",
            "passages",
            total as u64,
            resumed_after as u64,
            Instant::now(),
        );
        let mut flush = |pending: &mut Vec<(String, String)>, embedded: &mut usize| -> Result<()> {
            let texts: Vec<&str> = pending.iter().map(|(_, t)| t.as_str()).collect();
            let vectors = self.encoder.encode_all(&encoder, &texts, &device)?;
            let ids: Vec<String> = pending.drain(..).map(|(id, _)| id).collect();
            writer.write_shard(&ids, &vectors)?;
            *embedded += ids.len();
            progress.update((resumed_after + *embedded) as u64, "");
            Ok(())
        };
        let mut seen = 0usize;
        each_tsv_row(path, 2, layout, |i, fields| {
            seen += 1;
            if seen <= resumed_after {
                if seen == resumed_after && last_id.as_deref() != Some(fields[0]) {
                    bail!(
                        "{}, line {}: passage {} is not the matrix's last passage {:?}; the \
                         collection changed since {} was written",
                        path.display(),
                        i + 1,
                        fields[0],
                        last_id.as_deref().unwrap_or(""),
                        self.matrix.output.display()
                    );
                }
                return Ok(());
            }
            pending.push((fields[0].to_string(), fields[1].to_string()));
            if pending.len() == self.matrix.shard_rows {
                flush(&mut pending, &mut embedded)?;
            }
            Ok(())
        })?;
        if !pending.is_empty() {
            flush(&mut pending, &mut embedded)?;
        }
        let m = Matrix::open(&self.matrix.output)?;
        let seconds = clock.elapsed().as_secs_f64();
        Ok(EmbedSummary {
            passages: m.len(),
            resumed_after,
            shards: m.manifest.shards.len(),
            dim: m.dim(),
            seconds,
            passages_per_s: embedded as f64 / seconds.max(1e-9),
        })
    }
}

/// Search a matrix with encoded queries into a TREC run.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusSearchJob {
    // The encoder and how it pools (clap flattens its flags into this command's).
    #[allow(missing_docs)]
    #[command(flatten)]
    pub encoder: EncoderArgs,
    /// The matrix folder (`corpus embed --output`).
    #[arg(long)]
    pub matrix: PathBuf,
    /// The queries: `qid<TAB>query` per line (MS MARCO's queries.*.tsv).
    #[arg(long)]
    pub queries: PathBuf,
    /// The run file to write (`qid Q0 pid rank score tag`).
    #[arg(long)]
    pub output: PathBuf,
    /// Passages kept per query.
    #[arg(long, default_value_t = 1000)]
    pub k: usize,
    /// The run's tag column.
    #[arg(long, default_value = "neuronlab")]
    pub tag: String,
    /// Judgements (`qid iter pid grade`) to score the run with (MRR@10, nDCG@10, recall@1000).
    #[arg(long)]
    pub qrels: Option<PathBuf>,
    /// The grade from which a passage counts as relevant (TREC DL: 2).
    #[arg(long, default_value_t = 1)]
    pub relevance_level: i32,
    /// Passages per matmul (bounds the memory of the search).
    #[arg(long, default_value_t = 16_384)]
    pub chunk_rows: usize,
}

/// What `corpus search` did, printed as JSON.
#[derive(Debug, Serialize)]
pub struct SearchSummary {
    /// Queries searched.
    pub queries: usize,
    /// Passages searched.
    pub passages: usize,
    /// Seconds encoding the queries.
    pub encode_seconds: f64,
    /// Seconds searching.
    pub search_seconds: f64,
    /// Queries searched per second (the search alone).
    pub queries_per_s: f64,
    /// Mean scores over the judged queries, with `--qrels`.
    pub metrics: Option<BTreeMap<String, f64>>,
}

impl BackendJob for CorpusSearchJob {
    type Output = SearchSummary;

    fn run<B: Backend>(self, device: B::Device) -> Result<SearchSummary> {
        let matrix = Matrix::open(&self.matrix)?;
        let source = self.encoder.source();
        if matrix.manifest.source != source {
            tracing::warn!(
                "{}: its passages were encoded with `{}`, the queries with `{source}`",
                self.matrix.display(),
                matrix.manifest.source
            );
        }
        let queries = read_id_texts(&self.queries, "query")?;
        let qrels = self
            .qrels
            .as_ref()
            .map(|p| read_qrels(p, None))
            .transpose()?;
        if let (Some(qrels), Some(path)) = (&qrels, &self.qrels)
            && !queries.keys().any(|q| qrels.contains_key(q))
        {
            let some: Vec<&str> = queries.keys().take(3).map(String::as_str).collect();
            bail!(
                "{}: judges none of the {} queries of {} (their ids begin {}), so every metric \
                 would be 0; give the qrels of these queries",
                path.display(),
                queries.len(),
                self.queries.display(),
                some.join(", ")
            );
        }
        let encoder = self.encoder.open::<B>(&device)?;
        if encoder.dim() != matrix.dim() {
            bail!(
                "--model gives vectors of {} numbers, the matrix {} holds {}",
                encoder.dim(),
                self.matrix.display(),
                matrix.dim()
            );
        }
        let clock = Instant::now();
        let texts: Vec<&str> = queries.values().map(String::as_str).collect();
        let vectors = self.encoder.encode_all(&encoder, &texts, &device)?;
        let encode_seconds = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let plan = SearchPlan {
            chunk_rows: self.chunk_rows,
            ..SearchPlan::default()
        };
        let ranked = search::<B>(&matrix, &vectors, self.k, plan, &device)?;
        let search_seconds = clock.elapsed().as_secs_f64();
        let run: Run = queries.keys().cloned().zip(ranked).collect();
        write_atomic(&self.output, run_to_trec(&run, &self.tag).as_bytes())
            .with_context(|| format!("--output {}", self.output.display()))?;
        let metrics = qrels.map(|qrels| {
            let (_, means) = evaluate_run(&run, &qrels, self.relevance_level);
            BTreeMap::from([
                ("mrr@10".to_string(), means.mrr_at_10),
                ("ndcg@10".to_string(), means.ndcg_at_10),
                ("recall@1000".to_string(), means.recall_at_1000),
            ])
        });
        Ok(SearchSummary {
            queries: run.len(),
            passages: matrix.len(),
            encode_seconds,
            search_seconds,
            queries_per_s: run.len() as f64 / search_seconds.max(1e-9),
            metrics,
        })
    }
}

/// `corpus import`: one of LoL's torch-saved matrices into a matrix folder.
#[derive(Debug, Clone, clap::Args)]
pub struct CorpusImportJob {
    /// The `torch.save`d tensor (LoL's `matrix/*.pt`).
    #[arg(long)]
    pub tensor: PathBuf,
    /// Its rows' passage ids, one per line (LoL's `pids.*.txt`).
    #[arg(long)]
    pub pids: PathBuf,
    // Where the matrix goes and how it is stored.
    #[allow(missing_docs)]
    #[command(flatten)]
    pub matrix: MatrixArgs,
}

impl CorpusImportJob {
    /// Import, logging progress after each shard.
    ///
    /// # Errors
    /// As [`crate::retrieval::torch_matrix::import`].
    pub fn run(&self) -> Result<crate::retrieval::torch_matrix::ImportSummary> {
        let m = &self.matrix;
        crate::retrieval::torch_matrix::import(
            &self.tensor,
            &self.pids,
            &m.output,
            (m.dtype, m.shard_rows),
            |done, total| tracing::info!("{done}/{total} passages"),
        )
    }
}
