//! `neuronlab corpus embed` and `corpus search` on the real all-MiniLM-L6-v2: the matrix rows are
//! transformers' embeddings (tests/fixtures/minilm_embeddings.json), the run ranks passages by
//! those embeddings' inner products in trec_eval's order, a killed embedding resumes after its
//! last whole shard, and bad input is named by file and line with nothing written.

use std::path::Path;

use runner::retrieval::matrix::Matrix;
use serde_json::Value;

use crate::util::{artefact, fixture, flat, neuronlab, read_json, reference_sentences, text};

fn minilm() -> String {
    artefact("all-MiniLM-L6-v2").display().to_string()
}

fn ok(args: &[&str], root: &Path) -> Value {
    let out = neuronlab(args, root);
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn corpus_embed_and_search_give_transformers_vectors_and_their_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reference = read_json(&fixture("minilm_embeddings.json"));
    let sentences = reference_sentences(&reference);
    let (want, shape) = flat(&reference["embeddings"]);
    let dim = shape[1];
    let collection: String = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| format!("p{i}\t{s}\n"))
        .collect();
    std::fs::write(root.join("collection.tsv"), &collection).unwrap();
    let model = minilm();
    let embed_args = |extra: &[&'static str]| {
        let mut args = vec![
            "corpus",
            "embed",
            "--model",
            &model,
            "--collection",
            "collection.tsv",
            "--output",
            "m",
            "--shard-rows",
            "1",
            "--batch",
            "3",
        ];
        args.extend_from_slice(extra);
        args
    };
    let summary = ok(&embed_args(&[]), root);
    assert_eq!(summary["passages"], 4);
    assert_eq!(summary["shards"], 4);
    let m = Matrix::open(&root.join("m")).unwrap();
    let rows: Vec<f32> = (0..4).flat_map(|s| m.shard(s).unwrap().vectors).collect();
    let worst = rows
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "matrix vs transformers: {worst}");

    // Killed after two shards: the manifest names two; the rerun embeds the other two.
    let manifest = root.join("m/matrix.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["shards"].as_array_mut().unwrap().truncate(2);
    std::fs::write(&manifest, v.to_string()).unwrap();
    let summary = ok(&embed_args(&[]), root);
    assert_eq!(
        (
            summary["resumed_after"].as_u64(),
            summary["passages"].as_u64()
        ),
        (Some(2), Some(4))
    );
    let again: Vec<f32> = (0..4)
        .flat_map(|s| {
            Matrix::open(&root.join("m"))
                .unwrap()
                .shard(s)
                .unwrap()
                .vectors
        })
        .collect();
    assert_eq!(again, rows);
    // Other settings on the same folder are refused, naming the key.
    let out = neuronlab(&embed_args(&["--normalize"]), root);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("source"), "{}", text(&out));

    // Search: each query's passages by the reference vectors' inner products, trec_eval order.
    std::fs::write(
        root.join("queries.tsv"),
        format!("qa\t{}\nqb\t{}\n", sentences[0], sentences[3]),
    )
    .unwrap();
    std::fs::write(root.join("qrels.txt"), "qa 0 p0 1\nqb 0 p2 1\n").unwrap();
    let summary = ok(
        &[
            "corpus",
            "search",
            "--model",
            &model,
            "--matrix",
            "m",
            "--queries",
            "queries.tsv",
            "--output",
            "run.trec",
            "--k",
            "3",
            "--qrels",
            "qrels.txt",
        ],
        root,
    );
    assert_eq!(summary["queries"], 2);
    let run = runner::retrieval::trec::read_run(&root.join("run.trec")).unwrap();
    let mut mrr = 0.0;
    for (q, qi, judged) in [("qa", 0usize, "p0"), ("qb", 3, "p2")] {
        let mut expected: Vec<(String, f64)> = (0..4)
            .map(|p| {
                let dot: f32 = (0..dim)
                    .map(|j| want[qi * dim + j] * want[p * dim + j])
                    .sum();
                (format!("p{p}"), f64::from(dot))
            })
            .collect();
        runner::retrieval::trec::trec_order(&mut expected);
        expected.truncate(3);
        let got = &run[q];
        assert_eq!(got.len(), 3);
        for ((gi, gs), (wi, ws)) in got.iter().zip(&expected) {
            assert_eq!(gi, wi, "{q}: {got:?} vs {expected:?}");
            assert!(
                (gs - ws).abs() < 1e-3 * ws.abs().max(1.0),
                "{q}: {gs} vs {ws}"
            );
        }
        if let Some(k) = expected.iter().position(|(p, _)| p == judged) {
            mrr += 1.0 / (k + 1) as f64 / 2.0;
        }
    }
    // The run is scored against the qrels as the reference ranking scores.
    let got = summary["metrics"]["mrr@10"].as_f64().unwrap();
    assert!((got - mrr).abs() < 1e-12, "{got} vs {mrr}");
}

#[test]
fn bad_collections_and_queries_are_named_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let model = minilm();
    std::fs::write(root.join("bad.tsv"), "p1\tfine\np2 no tab here\n").unwrap();
    let out = neuronlab(
        &[
            "corpus",
            "embed",
            "--model",
            &model,
            "--collection",
            "bad.tsv",
            "--output",
            "m",
        ],
        root,
    );
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out);
    assert!(
        e.contains("bad.tsv, line 2") && e.contains("pid passage"),
        "{e}"
    );
    assert!(!root.join("m").exists(), "nothing written");

    // A passage id twice: search would rank that passage twice.
    std::fs::write(root.join("twice.tsv"), "p1\tone\np2\ttwo\np1\tthree\n").unwrap();
    let out = neuronlab(
        &[
            "corpus",
            "embed",
            "--model",
            &model,
            "--collection",
            "twice.tsv",
            "--output",
            "m",
        ],
        root,
    );
    assert!(!out.status.success());
    let e = text(&out);
    assert!(
        e.contains("twice.tsv, line 3: passage id p1 again (first on line 1)"),
        "{e}"
    );
    assert!(!root.join("m").exists(), "nothing written");

    // A resumed matrix whose collection changed under it.
    std::fs::write(root.join("c.tsv"), "p1\tone\np2\ttwo\np3\tthree\n").unwrap();
    let embed = |file: &str| {
        neuronlab(
            &[
                "corpus",
                "embed",
                "--model",
                &model,
                "--collection",
                file,
                "--output",
                "m",
                "--shard-rows",
                "2",
            ],
            root,
        )
    };
    assert!(embed("c.tsv").status.success());
    let manifest = root.join("m/matrix.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["shards"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&manifest, v.to_string()).unwrap();
    std::fs::write(root.join("c.tsv"), "p1\tone\npX\ttwo\np3\tthree\n").unwrap();
    let out = embed("c.tsv");
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out);
    assert!(
        e.contains("c.tsv, line 2") && e.contains("collection changed"),
        "{e}"
    );
    // A killed writer's half-written shard goes at the next start; a second writer on a matrix
    // another process is writing is refused.
    std::fs::write(root.join("c.tsv"), "p1\tone\np2\ttwo\np3\tthree\n").unwrap();
    let stale = root.join(format!("m/shard-00001.safetensors.{}.tmp", u32::MAX - 9));
    std::fs::write(&stale, b"half a shard").unwrap();
    let held = std::fs::File::create(root.join("m/.lock")).unwrap();
    held.lock().unwrap();
    let out = embed("c.tsv");
    let e = text(&out);
    assert!(!out.status.success(), "{e}");
    assert!(e.contains("another process is writing this matrix"), "{e}");
    drop(held);
    let out = embed("c.tsv");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!stale.exists(), "the stale shard is removed");

    // Queries: a missing file, a duplicate id; a model of another width.
    let search = |queries: &str| {
        neuronlab(
            &[
                "corpus",
                "search",
                "--model",
                &model,
                "--matrix",
                "m",
                "--queries",
                queries,
                "--output",
                "run.trec",
            ],
            root,
        )
    };
    let e = text(&search("none.tsv"));
    assert!(e.contains("none.tsv"), "{e}");
    // Qrels of other queries: every metric would be 0 (it printed -0.0 without a word).
    std::fs::write(root.join("q.tsv"), "q1\tone\nq2\ttwo\n").unwrap();
    std::fs::write(root.join("other.qrels"), "z9 0 p1 1\n").unwrap();
    let out = neuronlab(
        &[
            "corpus",
            "search",
            "--model",
            &model,
            "--matrix",
            "m",
            "--queries",
            "q.tsv",
            "--qrels",
            "other.qrels",
            "--output",
            "run.trec",
        ],
        root,
    );
    let e = text(&out);
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("other.qrels: judges none of the 2 queries of q.tsv (their ids begin q1, q2)"),
        "{e}"
    );
    std::fs::write(root.join("dup.tsv"), "q1\ta\nq1\tb\n").unwrap();
    let e = text(&search("dup.tsv"));
    assert!(e.contains("dup.tsv, line 2") && e.contains("twice"), "{e}");
    assert!(!root.join("run.trec").exists());
    let out = neuronlab(
        &[
            "corpus",
            "search",
            "--model",
            &model,
            "--matrix",
            ".",
            "--queries",
            "c.tsv",
            "--output",
            "run.trec",
        ],
        root,
    );
    assert!(text(&out).contains("matrix.json"), "{}", text(&out));
}

#[test]
fn corpus_import_reads_lols_torch_saved_matrices_and_refuses_what_it_cannot() {
    // tests/fixtures/retrieval/make_torch_matrix_fixture.py: value (5 i + j) / 8 - 2 at row i,
    // column j, rows named 7000 + i.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = fixture("retrieval/official");
    let pids = dir.join("pids.txt");
    let import = |tensor: &str, out: &str, extra: &[&str]| {
        let t = dir.join(tensor);
        let mut args = vec![
            "corpus",
            "import",
            "--tensor",
            t.to_str().unwrap(),
            "--pids",
            pids.to_str().unwrap(),
            "--output",
            out,
        ];
        args.extend_from_slice(extra);
        neuronlab(&args, root)
    };
    for (tensor, dtype) in [
        ("matrix.f16.pt", "f16"),
        ("matrix.f32.pt", "f32"),
        ("matrix.slice.pt", "f32"),
    ] {
        let out = import(tensor, tensor, &["--shard-rows", "3"]);
        assert!(out.status.success(), "{tensor}: {}", text(&out));
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (summary["passages"].as_u64(), summary["dim"].as_u64()),
            (Some(7), Some(5))
        );
        assert_eq!(summary["source_dtype"], dtype, "{tensor}");
        let m = Matrix::open(&root.join(tensor)).unwrap();
        assert_eq!(
            m.manifest.shards.len(),
            3,
            "{tensor}: 7 rows in shards of 3"
        );
        let (mut ids, mut rows) = (Vec::new(), Vec::new());
        for s in 0..3 {
            let shard = m.shard(s).unwrap();
            ids.extend(shard.ids);
            rows.extend(shard.vectors);
        }
        let want_ids: Vec<String> = (0..7).map(|i| (7000 + i).to_string()).collect();
        assert_eq!(ids, want_ids, "{tensor}");
        for (k, v) in rows.iter().enumerate() {
            let (i, j) = (k / 5, k % 5);
            assert_eq!(
                *v,
                (5 * i + j) as f32 / 8.0 - 2.0,
                "{tensor}: row {i} column {j}"
            );
        }
    }
    // Killed after one shard: the rerun writes the other two.
    let manifest = root.join("matrix.f16.pt/matrix.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    v["shards"].as_array_mut().unwrap().truncate(1);
    std::fs::write(&manifest, v.to_string()).unwrap();
    let out = import("matrix.f16.pt", "matrix.f16.pt", &["--shard-rows", "3"]);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["resumed_after"], 3, "{}", text(&out));
    let m = Matrix::open(&root.join("matrix.f16.pt")).unwrap();
    assert_eq!(m.shard(2).unwrap().vectors[0], 30.0 / 8.0 - 2.0);

    for (tensor, want) in [
        ("matrix.t.pt", "stride [1, 5]; save it contiguous"),
        ("matrix.sparse.pt", "a sparse tensor"),
    ] {
        let out = import(tensor, "refused", &[]);
        assert!(!out.status.success());
        assert!(
            text(&out).contains(tensor) && text(&out).contains(want),
            "{tensor}: {}",
            text(&out)
        );
        assert!(!root.join("refused").exists(), "nothing written");
    }
    std::fs::write(root.join("short.txt"), "7000\n7001\n").unwrap();
    let t = dir.join("matrix.f32.pt");
    let out = neuronlab(
        &[
            "corpus",
            "import",
            "--tensor",
            t.to_str().unwrap(),
            "--pids",
            "short.txt",
            "--output",
            "refused",
        ],
        root,
    );
    assert!(
        text(&out).contains("short.txt: 2 ids, but the tensor") && text(&out).contains("7 rows"),
        "{}",
        text(&out)
    );
    let repeated: String = [7000, 7001, 7002, 7003, 7001, 7005, 7006]
        .iter()
        .map(|i| format!("{i}\n"))
        .collect();
    std::fs::write(root.join("repeated.txt"), repeated).unwrap();
    let out = neuronlab(
        &[
            "corpus",
            "import",
            "--tensor",
            t.to_str().unwrap(),
            "--pids",
            "repeated.txt",
            "--output",
            "refused",
        ],
        root,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("repeated.txt, line 5: passage id 7001 again (first on line 2)"),
        "{}",
        text(&out)
    );
    assert!(!root.join("refused").exists(), "nothing written");
}
