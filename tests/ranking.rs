//! TREC qrels and runs, and MRR@10 / nDCG@10 / recall@1000 against trec_eval (pytrec_eval) on
//! a run with ties, graded judgements, an unjudged-relevant query and 1,200 candidates
//! (tests/fixtures/ranking/make_ranking_fixture.py).

use runner::ranking::{evaluate_run, read_qrels, read_run, run_to_trec};

use crate::util::{fixture, read_json};

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
        let mut sums = [0.0; 3];
        for (q, s) in &per_query {
            let w = &want[q];
            for (k, (name, got)) in [
                ("mrr@10", s.mrr_at_10),
                ("ndcg@10", s.ndcg_at_10),
                ("recall@1000", s.recall_at_1000),
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
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
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
