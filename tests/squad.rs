//! SQuAD training windows against transformers' run_qa.py preprocessing with the same fast
//! tokenizer (tests/fixtures/qa/make_squad_windows_fixture.py): ids, segments, context offsets
//! and the answer labels, CLS for windows without the answer.

use runner::data::crosslingual::read_squad_json;
use runner::encoder::extractive::squad::{predict_answers, predictions_json, squad_windows};
use tokenizers::Tokenizer;

use crate::util::{artefact, fixture, read_json};

fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn squad_windows_match_run_qa_preprocessing() {
    let r = read_json(&fixture("qa/squad_windows.json"));
    let tokenizer =
        Tokenizer::from_file(artefact("all-MiniLM-L6-v2").join("tokenizer.json")).unwrap();
    let examples = read_squad_json(&fixture("xquad/xquad.en.json")).unwrap();
    let max_len = r["max_len"].as_u64().unwrap() as usize;
    let stride = r["stride"].as_u64().unwrap() as usize;
    let windows = squad_windows(&tokenizer, &examples, max_len, stride).unwrap();
    let want = r["windows"].as_array().unwrap();
    assert_eq!(windows.len(), want.len());
    for (k, (w, e)) in windows.iter().zip(want).enumerate() {
        assert_eq!(
            w.example,
            e["example"].as_u64().unwrap() as usize,
            "window {k}"
        );
        assert_eq!(w.ids, u32s(&e["input_ids"]), "window {k}");
        assert_eq!(w.type_ids, u32s(&e["token_type_ids"]), "window {k}");
        let offsets: Vec<Option<(usize, usize)>> = e["context_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.as_array().map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as usize,
                    )
                })
            })
            .collect();
        assert_eq!(w.context_offsets, offsets, "window {k}");
        assert_eq!(
            (w.start, w.end),
            (
                e["start"].as_u64().unwrap() as usize,
                e["end"].as_u64().unwrap() as usize
            ),
            "window {k}"
        );
        assert!(w.ids.len() <= max_len);
    }
    // run_qa.py's quirk is reproduced: an answer that begins in a window's last context token
    // gets its start on the separator after it (start = end + 1). The fixture has one.
    let quirks: Vec<_> = windows.iter().filter(|w| w.start > w.end).collect();
    assert_eq!(quirks.len(), 1);
    assert_eq!(quirks[0].start, quirks[0].end + 1);
    assert_eq!(quirks[0].context_offsets[quirks[0].start], None);
    // Every question has a window that holds its answer, and the labelled tokens spell it.
    for (i, example) in examples.iter().enumerate() {
        let labelled: Vec<_> = windows
            .iter()
            .filter(|w| w.example == i && w.start > 0 && w.start <= w.end)
            .collect();
        assert!(!labelled.is_empty(), "question {}", example.id);
        let w = labelled[0];
        let (a, _) = w.context_offsets[w.start].unwrap();
        let (_, b) = w.context_offsets[w.end].unwrap();
        let span: String = example.context.chars().skip(a).take(b - a).collect();
        assert_eq!(span, example.answers[0].1);
    }
    // A max_len with no room for the context names the question.
    let err = squad_windows(&tokenizer, &examples, 6, 2).unwrap_err();
    assert!(format!("{err:#}").contains("question q1"), "{err:#}");
}

#[test]
fn span_decoding_matches_utils_qa_postprocessing() {
    let r = read_json(&fixture("qa/span_decoding.json"));
    let w = read_json(&fixture("qa/squad_windows.json"));
    let tokenizer =
        Tokenizer::from_file(artefact("all-MiniLM-L6-v2").join("tokenizer.json")).unwrap();
    let examples = read_squad_json(&fixture("xquad/xquad.en.json")).unwrap();
    let windows = squad_windows(
        &tokenizer,
        &examples,
        w["max_len"].as_u64().unwrap() as usize,
        w["stride"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let logits = r["logits"].as_array().unwrap();
    let starts: Vec<Vec<f32>> = logits.iter().map(|l| floats(&l["start"])).collect();
    let ends: Vec<Vec<f32>> = logits.iter().map(|l| floats(&l["end"])).collect();
    let n_best = r["n_best"].as_u64().unwrap() as usize;
    let max_answer = r["max_answer_length"].as_u64().unwrap() as usize;
    let predictions = predict_answers(&examples, &windows, &starts, &ends, n_best, max_answer);
    for (id, p) in &predictions {
        let p = p.as_ref().unwrap();
        assert_eq!(p.text, r["predictions"][id].as_str().unwrap(), "{id}");
        assert!(
            (p.score - r["scores"][id].as_f64().unwrap()).abs() < 1e-4,
            "{id}"
        );
        assert!(p.chars.1 - p.chars.0 >= p.text.chars().count());
    }
    let json: serde_json::Value = serde_json::from_str(&predictions_json(&predictions)).unwrap();
    assert_eq!(json, r["predictions"]);
    // A maximum answer length of 0 tokens leaves nothing: an empty answer.
    let none = predict_answers(&examples, &windows, &starts, &ends, n_best, 0);
    assert!(none.iter().all(|(_, p)| p.is_none()));
    let json: serde_json::Value = serde_json::from_str(&predictions_json(&none)).unwrap();
    assert_eq!(json["q1"], "");
}
