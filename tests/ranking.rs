//! TREC qrels and runs, and MRR@10 / nDCG@10 / recall@100 / recall@1000 against trec_eval (pytrec_eval) on
//! a run with ties, graded judgements, an unjudged-relevant query and 1,200 candidates
//! (tests/fixtures/ranking/make_ranking_fixture.py).

use runner::retrieval::trec::{evaluate_run, read_qrels, read_run, run_to_trec};

use crate::util::{fixture, read_json};

/// Write `text` to `dir/name` and return the path.
fn write_in(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn ranking_scores_match_trec_eval() {
    let qrels = read_qrels(&fixture("ranking/qrels.txt"), None).unwrap();
    let run = read_run(&fixture("ranking/run.txt")).unwrap();
    let expected = read_json(&fixture("ranking/expected.json"));
    for level in [1, 2] {
        let (per_query, means) = evaluate_run(&run, &qrels, level);
        let want = expected[level.to_string()].as_object().unwrap();
        // q6 is judged but not retrieved: not scored (trec_eval without -c).
        assert_eq!(
            per_query.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        let mut sums = [0.0; 4];
        for (q, s) in &per_query {
            let w = &want[q];
            for (k, (name, got)) in [
                ("mrr@10", s.mrr_at_10),
                ("ndcg@10", s.ndcg_at_10),
                ("recall@1000", s.recall_at_1000),
                ("recall@100", s.recall_at_100),
            ]
            .into_iter()
            .enumerate()
            {
                let w = w[name].as_f64().unwrap();
                assert!(
                    (got - w).abs() < 1e-4,
                    "level {level} {q} {name}: {got} vs trec_eval {w}"
                );
                sums[k] += w;
            }
        }
        let n = per_query.len() as f64;
        assert!((means.mrr_at_10 - sums[0] / n).abs() < 1e-4);
        assert!((means.ndcg_at_10 - sums[1] / n).abs() < 1e-4);
        assert!((means.recall_at_1000 - sums[2] / n).abs() < 1e-4);
        assert!((means.recall_at_100 - sums[3] / n).abs() < 1e-4);
        assert!(
            means.recall_at_100 < means.recall_at_1000,
            "a relevant passage between ranks 100 and 1000"
        );
    }
    // Written in trec_eval's order and read back: the same scores.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.trec");
    std::fs::write(&path, run_to_trec(&run, "neuronlab")).unwrap();
    let again = read_run(&path).unwrap();
    assert_eq!(
        evaluate_run(&again, &qrels, 1),
        evaluate_run(&run, &qrels, 1)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
    assert_eq!((first[0], first[3], first[5]), ("q1", "1", "neuronlab"));
}

#[test]
fn bad_trec_lines_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| write_in(dir.path(), name, text);
    let cases: [(&str, &str, bool, &str); 6] = [
        (
            "run",
            "q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.5\n",
            true,
            "line 2: expected 6 fields",
        ),
        (
            "run",
            "q1 Q0 d1 one 2.5 t\n",
            true,
            "line 1: rank \"one\" is not an integer",
        ),
        (
            "run",
            "q1 Q0 d1 1 NaN t\n",
            true,
            "line 1: score \"NaN\" is not a finite number",
        ),
        (
            "run",
            "q1 Q0 d1 1 2.5 t\nq1 Q0 d1 2 1.5 t\n",
            true,
            "line 2: passage d1 is listed twice for query q1",
        ),
        (
            "qrels",
            "q1 0 d1 1\nq1 0 d2\n",
            false,
            "line 2: expected 4 fields",
        ),
        (
            "qrels",
            "q1 0 d1 high\n",
            false,
            "line 1: grade \"high\" is not an integer",
        ),
    ];
    for (i, (kind, text, is_run, want)) in cases.iter().enumerate() {
        let path = write(&format!("{kind}{i}.txt"), text);
        let err = if *is_run {
            read_run(&path).unwrap_err()
        } else {
            read_qrels(&path, None).unwrap_err()
        };
        let msg = format!("{err:#}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(want), "want {want:?} in {msg}");
    }
    // A qrels line naming a query outside the queries file.
    let path = write("qrels-unknown.txt", "q1 0 d1 1\nq9 0 d2 1\n");
    let known = |q: &str| q == "q1";
    let msg = format!("{:#}", read_qrels(&path, Some(&known)).unwrap_err());
    assert!(
        msg.contains("line 2: query \"q9\" is not in the queries file"),
        "{msg}"
    );
}

#[test]
fn ms_marco_files_are_read_and_bad_lines_named() {
    use runner::retrieval::trec::{read_candidates, read_id_texts, read_tsv_rows};
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| write_in(dir.path(), name, text);
    let collection = write(
        "collection.tsv",
        "0\tThe Manhattan Project produced the first nuclear weapons.\n1\tParis is in France.\n",
    );
    let passages = read_id_texts(&collection, "passage").unwrap();
    assert_eq!(passages["1"], "Paris is in France.");
    let queries = write("queries.tsv", "q1\twhere is paris\n");
    let queries = read_id_texts(&queries, "query").unwrap();
    // The qrels are checked against the queries file.
    let qrels = write("qrels.tsv", "q1 0 1 1\nq2 0 0 1\n");
    let known = |q: &str| queries.contains_key(q);
    let msg = format!("{:#}", read_qrels(&qrels, Some(&known)).unwrap_err());
    assert!(
        msg.contains("line 2: query \"q2\" is not in the queries file"),
        "{msg}"
    );

    let top = write(
        "top1000.dev.tsv",
        "q1\t1\twhere is paris\tParis is in France.\nq1\t0\twhere is paris\tThe Manhattan ...\n",
    );
    let c = read_candidates(&top).unwrap();
    assert_eq!(
        c.run["q1"]
            .iter()
            .map(|(d, _)| d.as_str())
            .collect::<Vec<_>>(),
        ["1", "0"]
    );
    assert_eq!((c.queries.len(), c.passages.len()), (1, 2));
    let triples = write("triples.tsv", "a query\ta positive\ta negative\n");
    assert_eq!(
        read_tsv_rows(&triples, 3, "query positive negative").unwrap()[0][2],
        "a negative"
    );

    for (name, text, want) in [
        (
            "c1.tsv",
            "0\tfine\n1 no tab here\n",
            "line 2: expected 2 tab-separated fields",
        ),
        (
            "c2.tsv",
            "0\tfine\n0\tagain\n",
            "line 2: passage 0 appears twice",
        ),
        ("c3.tsv", "0\t \n", "line 1: empty passage id or text"),
    ] {
        let msg = format!(
            "{:#}",
            read_id_texts(&write(name, text), "passage").unwrap_err()
        );
        assert!(msg.contains(name) && msg.contains(want), "{msg}");
    }
    let msg = format!(
        "{:#}",
        read_candidates(&write("t.tsv", "q1\t1\tquery\n")).unwrap_err()
    );
    assert!(
        msg.contains("t.tsv, line 1: expected 4 non-empty tab-separated fields `qid pid query passage`, found 3"),
        "{msg}"
    );
}
