//! Exact inner-product search over a [`Matrix`]: every query against every passage, as the
//! official evaluation of dense retrieval does (no approximate index).
//!
//! The matrix is read a shard at a time and cut into chunks of at most `chunk_rows` passages;
//! each chunk's scores against a block of queries are one matmul on the device, and the best `k`
//! of each query are kept on the host, merged across chunks and shards. Memory is bounded by the
//! chunk: one shard on the host, `chunk_rows × dim` passages and `query_block × chunk_rows`
//! scores on the device. Ties are broken as trec_eval orders a run (score descending, then
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

/// The trec_eval order: score descending, then id descending.
fn before(a: (&str, f32), b: (&str, f32)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then_with(|| b.0.cmp(a.0))
}

/// Keep the `k` first of `list` in trec_eval order (unsorted).
fn keep_best(list: &mut Vec<(String, f32)>, k: usize) {
    if list.len() > k {
        list.select_nth_unstable_by(k - 1, |a, b| before((&a.0, a.1), (&b.0, b.1)));
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
    let mut best: Vec<Vec<(String, f32)>> = vec![Vec::new(); n_queries];
    // One index buffer for every row's selection (a chunk's passages).
    let mut order: Vec<usize> = Vec::new();
    for s in 0..matrix.manifest.shards.len() {
        let shard = matrix.shard(s)?;
        let rows = shard.ids.len();
        for start in (0..rows).step_by(plan.chunk_rows.max(1)) {
            let end = (start + plan.chunk_rows.max(1)).min(rows);
            let n = end - start;
            let passages: Tensor<B, 2> = Tensor::from_data(
                TensorData::new(shard.vectors[start * dim..end * dim].to_vec(), [n, dim]),
                device,
            )
            .transpose();
            let ids = &shard.ids[start..end];
            for (q0, q) in &blocks {
                let scores: Vec<f32> = q
                    .clone()
                    .matmul(passages.clone())
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .expect("f32 scores");
                for (r, row) in scores.chunks_exact(n).enumerate() {
                    let kept = &mut best[q0 + r];
                    // Only passages that could enter the kept k are copied out.
                    order.clear();
                    order.extend(0..n);
                    if n > k {
                        order.select_nth_unstable_by(k - 1, |&a, &b| {
                            before((&ids[a], row[a]), (&ids[b], row[b]))
                        });
                        order.truncate(k);
                    }
                    kept.extend(order.iter().map(|&j| (ids[j].clone(), row[j])));
                    keep_best(kept, k);
                }
            }
        }
    }
    Ok(best
        .into_iter()
        .map(|mut list| {
            list.sort_by(|a, b| before((&a.0, a.1), (&b.0, b.1)));
            list.into_iter().map(|(id, s)| (id, f64::from(s))).collect()
        })
        .collect())
}
