//! Dataset readers: GLUE folders as distributed, generic JSONL / CSV / Parquet, and the errors a
//! bad file gets.

use std::path::Path;

use runner::encoder::data::{Label, load};
use runner::encoder::spec::{Columns, DatasetFormat, DatasetSpec, Task};
use runner::harness::experiment::TrainOverrides;

use crate::util::fixture;

fn glue(task: &str, kind: Task) -> DatasetSpec {
    DatasetSpec {
        path: "unused".into(),
        format: DatasetFormat::Glue,
        task: kind,
        glue: Some(task.into()),
        columns: None,
        labels: None,
        train_file: None,
        eval_file: None,
        qa: None,
        ranking: None,
        train: TrainOverrides::default(),
    }
}

fn generic(format: DatasetFormat, pair: bool) -> DatasetSpec {
    DatasetSpec {
        format,
        glue: None,
        task: Task::Classification,
        columns: Some(Columns {
            text: "sentence".into(),
            text_pair: pair.then(|| "other".into()),
            label: "label".into(),
        }),
        ..glue("", Task::Classification)
    }
}

#[test]
fn every_glue_task_reads_with_hf_label_order() {
    let cases: [(&str, Task, usize, usize, &[&str]); 9] = [
        (
            "CoLA",
            Task::Classification,
            3,
            3,
            &["unacceptable", "acceptable"],
        ),
        (
            "SST-2",
            Task::Classification,
            2,
            2,
            &["negative", "positive"],
        ),
        (
            "MRPC",
            Task::Classification,
            4,
            4,
            &["not_equivalent", "equivalent"],
        ),
        ("STS-B", Task::Regression, 4, 4, &[]),
        (
            "QQP",
            Task::Classification,
            4,
            4,
            &["not_duplicate", "duplicate"],
        ),
        (
            "MNLI",
            Task::Classification,
            4,
            4,
            &["entailment", "neutral", "contradiction"],
        ),
        (
            "MNLI-mm",
            Task::Classification,
            4,
            4,
            &["entailment", "neutral", "contradiction"],
        ),
        (
            "QNLI",
            Task::Classification,
            2,
            2,
            &["entailment", "not_entailment"],
        ),
        (
            "RTE",
            Task::Classification,
            4,
            4,
            &["entailment", "not_entailment"],
        ),
    ];
    for (task, kind, n_train, n_eval, labels) in cases {
        let folder = task.trim_end_matches("-mm");
        let d = load(&glue(task, kind), &fixture(&format!("glue/{folder}")))
            .unwrap_or_else(|e| panic!("{task}: {e:#}"));
        assert_eq!((d.train.len(), d.eval.len()), (n_train, n_eval), "{task}");
        assert_eq!(d.labels, labels, "{task}");
    }
    let cola = load(&glue("CoLA", Task::Classification), &fixture("glue/CoLA")).unwrap();
    assert_eq!(cola.train[1].text, "Book the was John by written.");
    assert_eq!(cola.train[1].label, Label::Class(0));
    assert_eq!(cola.train[0].text_pair, None);
    let mnli = load(
        &glue("MNLI-mm", Task::Classification),
        &fixture("glue/MNLI"),
    )
    .unwrap();
    assert!(mnli.files.1.ends_with("dev_mismatched.tsv"));
    assert_eq!(mnli.eval[3].label, Label::Class(2)); // contradiction
    assert_eq!(
        mnli.eval[0].text_pair.as_deref(),
        Some("A person plays an instrument.")
    );
    let mrpc = load(&glue("MRPC", Task::Classification), &fixture("glue/MRPC")).unwrap();
    assert_eq!(mrpc.train[0].label, Label::Class(1)); // the byte-order mark is skipped
    let sts = load(&glue("STS-B", Task::Regression), &fixture("glue/STS-B")).unwrap();
    assert_eq!(sts.eval[3].label, Label::Value(1.25));
    assert_eq!(sts.num_outputs(), 1);
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn generic_jsonl_csv_and_parquet_read_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "train.jsonl",
        "{\"sentence\": \"good film\", \"other\": \"yes\", \"label\": 1}\n\n{\"sentence\": \"bad film\", \"other\": \"no\", \"label\": 0}\n",
    );
    write(
        d,
        "validation.jsonl",
        "{\"sentence\": \"fine\", \"other\": \"ok\", \"label\": 1}\n",
    );
    write(
        d,
        "train.csv",
        "sentence,other,label\n\"good, film\",yes,1\nbad film,no,0\n",
    );
    write(d, "validation.csv", "sentence,other,label\nfine,ok,1\n");
    let jsonl = load(&generic(DatasetFormat::Jsonl, true), d).unwrap();
    let csv = load(&generic(DatasetFormat::Csv, true), d).unwrap();
    assert_eq!(jsonl.labels, ["0", "1"]);
    assert_eq!(jsonl.train[1].text, "bad film");
    assert_eq!(jsonl.train[1].text_pair.as_deref(), Some("no"));
    assert_eq!(csv.train[0].text, "good, film");
    assert_eq!(csv.train[1], jsonl.train[1]);

    // Parquet with string labels and an explicit label list.
    {
        use polars::prelude::*;
        for (name, sentences, labels) in [
            (
                "train.parquet",
                vec!["great", "awful", "meh"],
                vec!["pos", "neg", "pos"],
            ),
            ("validation.parquet", vec!["nice"], vec!["pos"]),
        ] {
            let mut frame = DataFrame::new(
                sentences.len(),
                vec![
                    Column::new("sentence".into(), sentences),
                    Column::new("label".into(), labels),
                ],
            )
            .unwrap();
            ParquetWriter::new(std::fs::File::create(d.join(name)).unwrap())
                .finish(&mut frame)
                .unwrap();
        }
    }
    let mut spec = generic(DatasetFormat::Parquet, false);
    spec.labels = Some(vec!["neg".into(), "pos".into()]);
    let parquet = load(&spec, d).unwrap();
    assert_eq!(parquet.train[1].label, Label::Class(0));
    assert_eq!(parquet.train[2].label, Label::Class(1));
    // Without a list, string labels are their sorted distinct values.
    spec.labels = None;
    assert_eq!(load(&spec, d).unwrap().labels, ["neg", "pos"]);
}

#[test]
fn bad_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err = |spec: &DatasetSpec| format!("{:#}", load(spec, d).unwrap_err());
    let jsonl = generic(DatasetFormat::Jsonl, false);

    // Missing file.
    assert!(
        err(&jsonl).contains("train.jsonl does not exist"),
        "{}",
        err(&jsonl)
    );
    // Malformed line.
    write(
        d,
        "validation.jsonl",
        "{\"sentence\": \"fine\", \"label\": 1}\n",
    );
    write(
        d,
        "train.jsonl",
        "{\"sentence\": \"a\", \"label\": 0}\n{\"sentence\": \"b\", \"label\": 1\n",
    );
    let e = err(&jsonl);
    assert!(
        e.contains("train.jsonl, line 2") && e.contains("not valid JSON"),
        "{e}"
    );
    // Missing field.
    write(
        d,
        "train.jsonl",
        "{\"sentence\": \"a\", \"label\": 0}\n{\"text\": \"b\", \"label\": 1}\n",
    );
    let e = err(&jsonl);
    assert!(
        e.contains("line 2") && e.contains("missing field `sentence`"),
        "{e}"
    );
    // Label out of range of the declared labels.
    let mut two = jsonl.clone();
    two.labels = Some(vec!["neg".into(), "pos".into()]);
    write(
        d,
        "train.jsonl",
        "{\"sentence\": \"a\", \"label\": 0}\n{\"sentence\": \"b\", \"label\": 2}\n",
    );
    let e = err(&two);
    assert!(
        e.contains("train.jsonl, line 2") && e.contains("label 2 is out of range"),
        "{e}"
    );
    // A CSV without the column.
    write(d, "train.csv", "text,label\na,0\n");
    write(d, "validation.csv", "sentence,label\na,0\n");
    let e = err(&generic(DatasetFormat::Csv, false));
    assert!(
        e.contains("train.csv") && e.contains("no column `sentence`"),
        "{e}"
    );
    // GLUE: a short line, and an unknown label name.
    let glue_dir = d.join("RTE");
    std::fs::create_dir(&glue_dir).unwrap();
    write(
        &glue_dir,
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n",
    );
    write(
        &glue_dir,
        "dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
    );
    let e = format!(
        "{:#}",
        load(&glue("RTE", Task::Classification), &glue_dir).unwrap_err()
    );
    assert!(
        e.contains("train.tsv, line 3") && e.contains("expected 4"),
        "{e}"
    );
    write(
        &glue_dir,
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n",
    );
    let e = format!(
        "{:#}",
        load(&glue("RTE", Task::Classification), &glue_dir).unwrap_err()
    );
    assert!(
        e.contains("dev.tsv, line 2") && e.contains("unknown label \"maybe\""),
        "{e}"
    );
    // Task mismatch and unknown task.
    let e = format!(
        "{:#}",
        load(&glue("STS-B", Task::Classification), &glue_dir).unwrap_err()
    );
    assert!(e.contains("Regression"), "{e}");
    let e = format!(
        "{:#}",
        load(&glue("WNLI", Task::Classification), &glue_dir).unwrap_err()
    );
    assert!(e.contains("unknown GLUE task `WNLI`"), "{e}");
}

#[test]
fn real_fetched_datasets_read_with_their_splits_and_classes() {
    use crate::util::artefact;
    let mut spec = generic(DatasetFormat::Jsonl, false);
    spec.train_file = Some("train.jsonl".into());
    spec.eval_file = Some("validation.jsonl".into());
    let polarity = load(&spec, &artefact("rt-polarity")).unwrap();
    assert_eq!((polarity.train.len(), polarity.eval.len()), (3200, 400));
    assert_eq!(polarity.labels, ["0", "1"]);

    // Wikipedia leads: topic names as labels, their sorted set the classes.
    spec.columns = Some(Columns {
        text: "text".into(),
        text_pair: None,
        label: "topic".into(),
    });
    let sizes = [
        ("en", 8026, 1003, 12),
        ("es", 4991, 624, 8),
        ("fr", 7964, 995, 11),
    ];
    for (lang, train, eval, classes) in sizes {
        let d = load(&spec, &artefact("wiki-leads").join(lang)).unwrap();
        assert_eq!(
            (d.train.len(), d.eval.len(), d.labels.len()),
            (train, eval, classes),
            "{lang}"
        );
        assert!(
            d.train
                .iter()
                .all(|e| matches!(e.label, Label::Class(c) if c < classes))
        );
    }
    let en = load(&spec, &artefact("wiki-leads/en")).unwrap();
    assert!(
        en.labels.contains(&"Mathematics".to_string()),
        "{:?}",
        en.labels
    );
}

#[test]
fn xnli_and_xquad_readers() {
    use runner::data::crosslingual::{read_squad_json, read_xnli};

    // XNLI-1.0 test layout: every language, or one.
    let all = read_xnli(&fixture("xnli/xnli.test.tsv"), None).unwrap();
    assert_eq!(all.len(), 5);
    let vi = read_xnli(&fixture("xnli/xnli.test.tsv"), Some("vi")).unwrap();
    assert_eq!(vi.len(), 2);
    assert_eq!(
        vi[1].premise, "Cô ấy đang đọc \"sách\".",
        "quotes are text in XNLI's TSV"
    );
    assert_eq!((vi[0].label, vi[1].label), (1, 0));
    assert_eq!(all[4].label, 2);
    assert_eq!(vi[0].language.as_deref(), Some("vi"));
    // XNLI-MT training layout: `contradictory`.
    let mt = read_xnli(&fixture("xnli/multinli.train.vi.tsv"), None).unwrap();
    assert_eq!((mt[0].label, mt[1].label), (1, 2));
    assert_eq!(mt[1].hypothesis, "Trời nắng.");
    let jsonl = read_xnli(&fixture("xnli/xnli.en.jsonl"), None).unwrap();
    assert_eq!((jsonl[0].label, jsonl[1].label), (0, 2));

    // XQuAD: answers at their character offsets in a non-ASCII context.
    let qa = read_squad_json(&fixture("xquad/xquad.vi.json")).unwrap();
    assert_eq!(qa.len(), 2);
    assert_eq!(qa[1].id, "q2");
    let (start, text) = &qa[1].answers[0];
    assert_eq!(text, "Sài Gòn");
    assert_eq!(
        qa[1]
            .context
            .chars()
            .skip(*start)
            .take(7)
            .collect::<String>(),
        "Sài Gòn"
    );

    // Bad input: a label out of range, a language without rows, a misplaced answer.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, "premise\thypo\tlabel\na\tb\tneutral\nc\td\tmaybe\n").unwrap();
    let err = read_xnli(&bad, None).unwrap_err().to_string();
    assert!(
        err.contains("bad.tsv, line 3") && err.contains("\"maybe\""),
        "{err}"
    );
    let err = read_xnli(&fixture("xnli/xnli.test.tsv"), Some("ur"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no examples for language ur"), "{err}");
    let text = std::fs::read_to_string(fixture("xquad/xquad.vi.json"))
        .unwrap()
        .replace("\"answer_start\": 74", "\"answer_start\": 73");
    let moved = dir.path().join("moved.json");
    std::fs::write(&moved, text).unwrap();
    let err = read_squad_json(&moved).unwrap_err().to_string();
    assert!(
        err.contains("moved.json") && err.contains("question q2") && err.contains("character 73"),
        "{err}"
    );
}
