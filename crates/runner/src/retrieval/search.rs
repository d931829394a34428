//! Exact inner-product search over a [`Matrix`]: every query against every passage, as the
//! official evaluation of dense retrieval does (no approximate index).
//!
//! The matrix is read a shard at a time and cut into chunks of at most `chunk_rows` passages;
//! each chunk's scores against a block of queries are one matmul on the device, and the best `k`
//! of each query are kept on the host, merged across chunks and shards, as (shard, row) indices:
//! ids are compared only where scores tie and copied only for the final `k`. Memory is bounded
//! by the chunk: one shard's vectors and the ids read so far on the host, `chunk_rows × dim`
//! passages and `query_block × chunk_rows` scores on the device. Ties are broken as trec_eval orders a run (score descending, then
//! passage id descending as strings), so the kept `k` are exactly trec_eval's first `k`, and a
//! passage tied at the cut is kept or dropped as trec_eval would rank it.

use anyhow::{Result, ensure};
use burn::prelude::*;

use super::matrix::Matrix;

/// How a search is cut into pieces (none changes the result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchPlan {
    /// Passages per matmul.
    pub chunk_rows: usize,
    /// Queries per matmul.
    pub query_block: usize,
}

impl Default for SearchPlan {
    fn default() -> Self {
        Self {
            chunk_rows: 16_384,
            query_block: 256,
        }
    }
}

/// A kept passage: its score and where its id is (shard, row), so that ids are compared only
/// where scores tie and copied only for the final `k`.
#[derive(Debug, Clone, Copy)]
struct Hit {
    score: f32,
    shard: u32,
    row: u32,
}

/// The trec_eval order: score descending, then id descending (`ids[shard][row]`).
fn before(ids: &[Vec<String>], a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then_with(|| {
        ids[b.shard as usize][b.row as usize].cmp(&ids[a.shard as usize][a.row as usize])
    })
}

/// Keep the `k` first of `list` in trec_eval order (unsorted).
fn keep_best(ids: &[Vec<String>], list: &mut Vec<Hit>, k: usize) {
    if list.len() > k {
        list.select_nth_unstable_by(k - 1, |a, b| before(ids, a, b));
        list.truncate(k);
    }
}

/// The `k` best passages of each query (row-major `[n, dim]` in `queries`), in trec_eval order
/// with their inner products, searched on `device`.
///
/// # Errors
/// Queries whose length is not a multiple of the matrix's `dim`, `k` = 0, or a shard that
/// cannot be read.
pub fn search<B: Backend>(
    matrix: &Matrix,
    queries: &[f32],
    k: usize,
    plan: SearchPlan,
    device: &B::Device,
) -> Result<Vec<Vec<(String, f64)>>> {
    let dim = matrix.dim();
    ensure!(k > 0, "k must be at least 1");
    ensure!(
        queries.len().is_multiple_of(dim),
        "query vectors of {} numbers do not split into rows of the matrix's dim {dim}",
        queries.len()
    );
    let n_queries = queries.len() / dim;
    let block = plan.query_block.max(1);
    let blocks: Vec<(usize, Tensor<B, 2>)> = (0..n_queries)
        .step_by(block)
        .map(|start| {
            let end = (start + block).min(n_queries);
            let data =
                TensorData::new(queries[start * dim..end * dim].to_vec(), [end - start, dim]);
            (start, Tensor::from_data(data, device))
        })
        .collect();
    let mut best: Vec<Vec<Hit>> = vec![Vec::new(); n_queries];
    // The ids of the shards read so far (every kept hit points into them).
    let mut ids: Vec<Vec<String>> = Vec::new();
    // One buffer for every row's selection (a chunk's passages).
    let mut order: Vec<Hit> = Vec::new();
    for s in 0..matrix.manifest.shards.len() {
        let shard = matrix.shard(s)?;
        let rows = shard.ids.len();
        ids.push(shard.ids);
        let shard_index = s as u32;
        for start in (0..rows).step_by(plan.chunk_rows.max(1)) {
            let end = (start + plan.chunk_rows.max(1)).min(rows);
            let n = end - start;
            let passages: Tensor<B, 2> = Tensor::from_data(
                TensorData::new(shard.vectors[start * dim..end * dim].to_vec(), [n, dim]),
                device,
            )
            .transpose();
            for (q0, q) in &blocks {
                let scores: Vec<f32> = q
                    .clone()
                    .matmul(passages.clone())
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("f32 scores");
                for (r, row) in scores.chunks_exact(n).enumerate() {
                    order.clear();
                    order.extend(row.iter().enumerate().map(|(j, &score)| Hit {
                        score,
                        shard: shard_index,
                        row: (start + j) as u32,
                    }));
                    keep_best(&ids, &mut order, k);
                    let kept = &mut best[q0 + r];
                    kept.extend_from_slice(&order);
                    keep_best(&ids, kept, k);
                }
            }
        }
    }
    Ok(best
        .into_iter()
        .map(|mut list| {
            list.sort_by(|a, b| before(&ids, a, b));
            list.into_iter()
                .map(|h| {
                    let id = ids[h.shard as usize][h.row as usize].clone();
                    (id, f64::from(h.score))
                })
                .collect()
        })
        .collect())
}
