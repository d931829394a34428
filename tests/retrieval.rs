//! Passage matrices on disk and exact inner-product search against NumPy brute force with
//! trec_eval's tie order (tests/fixtures/retrieval/make_search_fixture.py), across shard and
//! chunk cuts; the matrix's resumable writing and its errors.

use runner::retrieval::matrix::{MANIFEST, Matrix, MatrixWriter, VectorDtype};
use runner::retrieval::search::{SearchPlan, search};
use serde_json::Value;

use crate::util::{B, fixture, read_json};

const DIM: usize = 16;

/// The fixture script's vectors (`ties` / `floats`), row-major.
fn vectors(kind: &str, n: usize, salt: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * DIM);
    for i in 0..n {
        for j in 0..DIM {
            out.push(match kind {
                "ties" => (((i * 7919 + j * 104729 + salt * 31) % 5) as f32) - 2.0,
                _ => ((i as f64) * 0.37 + (j as f64) * 1.1 + salt as f64).sin() as f32,
            });
        }
    }
    out
}

/// A matrix of the fixture's passages in shards of `shard_rows`.
fn matrix(
    dir: &std::path::Path,
    kind: &str,
    n: usize,
    shard_rows: usize,
    dtype: VectorDtype,
) -> Matrix {
    let v = vectors(kind, n, 0);
    let mut w = MatrixWriter::open(dir, DIM, dtype, shard_rows, "test").unwrap();
    for start in (0..n).step_by(shard_rows) {
        let end = (start + shard_rows).min(n);
        let ids: Vec<String> = (start..end).map(|i| format!("p{i}")).collect();
        w.write_shard(&ids, &v[start * DIM..end * DIM]).unwrap();
    }
    Matrix::open(dir).unwrap()
}

fn check(got: &[Vec<(String, f64)>], want: &Value, exact: bool, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (q, (g, w)) in got.iter().zip(want).enumerate() {
        let w = w.as_array().unwrap();
        assert_eq!(g.len(), w.len(), "{what} q{q}");
        for (rank, (a, b)) in g.iter().zip(w).enumerate() {
            let (id, score) = (b[0].as_str().unwrap(), b[1].as_f64().unwrap());
            if exact {
                assert_eq!((a.0.as_str(), a.1), (id, score), "{what} q{q} rank {rank}");
            } else {
                assert_eq!(a.0, id, "{what} q{q} rank {rank}");
                assert!(
                    (a.1 - score).abs() < 1e-4,
                    "{what} q{q} rank {rank}: {} vs {score}",
                    a.1
                );
            }
        }
    }
}

#[test]
fn exact_search_matches_numpy_with_trec_eval_ties_across_shards_and_chunks() {
    let e = read_json(&fixture("retrieval/expected.json"));
    let n = e["n_passages"].as_u64().unwrap() as usize;
    let nq = e["n_queries"].as_u64().unwrap() as usize;
    // The tie case has ties to break (else it would not test the order).
    assert!(e["ties"]["tied_pairs_in_top100_q0"].as_u64().unwrap() > 50);
    let device = Default::default();
    for kind in ["ties", "floats"] {
        let queries = vectors(kind, nq, 1);
        for (shard_rows, chunk_rows, query_block) in [(n, n, nq), (700, 128, 5), (1000, 999, 1)] {
            let tmp = tempfile::tempdir().unwrap();
            let m = matrix(tmp.path(), kind, n, shard_rows, VectorDtype::F32);
            assert_eq!((m.len(), m.dim()), (n, DIM));
            let plan = SearchPlan {
                chunk_rows,
                query_block,
            };
            for k in [10usize, 100] {
                let got = search::<B>(&m, &queries, k, plan, &device).unwrap();
                let what = format!("{kind} shards {shard_rows} chunks {chunk_rows} k {k}");
                check(&got, &e[kind][k.to_string()], kind == "ties", &what);
            }
        }
    }
    // k beyond the corpus: every passage, in order.
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), "ties", 30, 7, VectorDtype::F32);
    let got = search::<B>(
        &m,
        &vectors("ties", 2, 1),
        50,
        SearchPlan::default(),
        &device,
    )
    .unwrap();
    assert_eq!(got[0].len(), 30);
    assert!(
        got[0]
            .windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && w[0].0 > w[1].0))
    );
}

#[test]
fn f16_matrices_round_to_half_and_search_the_same_on_exact_values() {
    // Small integers are exact in f16: the same results as f32.
    let e = read_json(&fixture("retrieval/expected.json"));
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), "ties", 3000, 1024, VectorDtype::F16);
    let bytes = std::fs::metadata(tmp.path().join("shard-00000.safetensors"))
        .unwrap()
        .len();
    assert!(
        bytes < 1024 * DIM as u64 * 2 + 200,
        "{bytes} bytes: stored as f16"
    );
    let got = search::<B>(
        &m,
        &vectors("ties", 12, 1),
        10,
        SearchPlan::default(),
        &Default::default(),
    )
    .unwrap();
    check(&got, &e["ties"]["10"], true, "f16");
    let shard = m.shard(0).unwrap();
    assert_eq!(shard.vectors, vectors("ties", 1024, 0));
}

#[test]
fn a_matrix_resumes_after_its_last_whole_shard_and_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    let v = vectors("floats", 10, 0);
    let ids: Vec<String> = (0..10).map(|i| format!("d{i}")).collect();
    let mut w = MatrixWriter::open(&dir, DIM, VectorDtype::F32, 4, "enc").unwrap();
    w.write_shard(&ids[..4], &v[..4 * DIM]).unwrap();
    // A killed writer: shard 1 half-written under its temporary name, the manifest untouched.
    std::fs::write(
        dir.join("shard-00001.safetensors.safetensors.1.tmp"),
        b"partial",
    )
    .unwrap();
    drop(w);
    let mut w = MatrixWriter::open(&dir, DIM, VectorDtype::F32, 4, "enc").unwrap();
    assert_eq!(w.rows(), 4);
    assert!(
        !dir.join("shard-00001.safetensors.safetensors.1.tmp")
            .exists(),
        "the killed writer's shard is removed"
    );
    // One writer at a time.
    let err = MatrixWriter::open(&dir, DIM, VectorDtype::F32, 4, "enc").unwrap_err();
    assert!(
        format!("{err:#}").contains("another process is writing this matrix"),
        "{err:#}"
    );
    w.write_shard(&ids[4..8], &v[4 * DIM..8 * DIM]).unwrap();
    w.write_shard(&ids[8..], &v[8 * DIM..]).unwrap();
    let m = Matrix::open(&dir).unwrap();
    assert_eq!(m.len(), 10);
    let all: Vec<String> = (0..3).flat_map(|s| m.shard(s).unwrap().ids).collect();
    assert_eq!(all, ids);
    assert_eq!(m.shard(2).unwrap().vectors, v[8 * DIM..].to_vec());

    drop(w);
    // Other settings on the same folder are refused, naming the key.
    let err = MatrixWriter::open(&dir, DIM, VectorDtype::F16, 4, "enc").unwrap_err();
    assert!(format!("{err:#}").contains("dtype"), "{err:#}");
    let err = MatrixWriter::open(&dir, 8, VectorDtype::F32, 4, "enc").unwrap_err();
    assert!(format!("{err:#}").contains("dim 16"), "{err:#}");
    // A shard that disagrees with the manifest, and a folder that is not a matrix.
    std::fs::write(dir.join("shard-00001.ids"), "d4\nd5\n").unwrap();
    let err = m.shard(1).unwrap_err();
    assert!(
        format!("{err:#}").contains("shard-00001.ids: 2 ids, the manifest says 4"),
        "{err:#}"
    );
    let err = Matrix::open(tmp.path()).unwrap_err();
    assert!(format!("{err:#}").contains(MANIFEST), "{err:#}");
    let err =
        search::<B>(&m, &[0.0; 5], 3, SearchPlan::default(), &Default::default()).unwrap_err();
    assert!(format!("{err:#}").contains("dim 16"), "{err:#}");
}
