//! The generative XQuAD cell's pieces on the real SmolLM2-135M-Instruct against Mondal et al.'s
//! code as re-computed with transformers (tests/fixtures/xquad/make_xquad_reference.py): the
//! Alpaca prompt, its token ids, the full-sequence LM loss of a padded batch, greedy decoding
//! and the token-id scores.

use burn::tensor::{Int, Tensor, TensorData};
use models::{DecoderCheckpoint, ForwardContext, generate_greedy, lm_loss};
use runner::data::crosslingual::read_squad_json;
use runner::lora::generative::{alpaca_prompt, encode_questions, qa_scores};
use serde_json::Value;

use crate::util::{B, artefact, fixture, flat, read_json};

fn ids(v: &Value) -> Vec<u32> {
    flat(v).0.iter().map(|&x| x as u32).collect()
}

#[test]
fn xquad_prompt_loss_and_decoding_match_the_official_code() {
    let r = read_json(&fixture("xquad/smollm2_reference.json"));
    let checkpoint = DecoderCheckpoint::open(artefact("smollm2-135m-instruct")).unwrap();
    let tokenizer = checkpoint.tokenizer.clone().unwrap();
    let (model, _) = checkpoint.load::<B>(&Default::default()).unwrap();
    let device = Default::default();
    let eos = tokenizer.eos_token().to_string();
    assert_eq!(eos, r["eos"].as_str().unwrap());
    assert_eq!(
        tokenizer.eos_id(),
        Some(r["eos_id"].as_u64().unwrap() as u32)
    );

    let en = read_squad_json(&fixture("xquad/xquad.en.json")).unwrap();
    let es = read_squad_json(&fixture("xquad/xquad.es.json")).unwrap();
    assert_eq!((en.len(), es.len()), (6, 6));
    assert_eq!(
        alpaca_prompt(
            &en[0].context,
            &en[0].question,
            Some((&en[0].answers[0].1, &eos))
        ),
        r["train_prompt"].as_str().unwrap()
    );
    assert_eq!(
        alpaca_prompt(&es[0].context, &es[0].question, None),
        r["eval_prompt"].as_str().unwrap()
    );

    // Training items: ids and gold ids; the loss of the padded batch (labels after the eos
    // masked, as the official code) equals lm_loss with the attention mask.
    let (train, left_out) = encode_questions(&tokenizer, en[..2].to_vec(), 512, true).unwrap();
    assert_eq!(left_out, 0);
    let want: Vec<Vec<u32>> = r["train_ids"].as_array().unwrap().iter().map(ids).collect();
    let gold: Vec<Vec<u32>> = r["train_gold_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids)
        .collect();
    for (k, item) in train.iter().enumerate() {
        assert_eq!(item.ids, want[k]);
        assert_eq!(item.gold_ids, gold[k]);
    }
    let width = want.iter().map(Vec::len).max().unwrap();
    assert_ne!(want[0].len(), want[1].len(), "the batch must need padding");
    let pad = tokenizer.eos_id().unwrap() as i64;
    let (mut x, mut mask) = (Vec::new(), Vec::new());
    for row in &want {
        for k in 0..width {
            x.push(row.get(k).map_or(pad, |&t| t as i64));
            mask.push(if k < row.len() { 1.0f32 } else { 0.0 });
        }
    }
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(x, [2, width]), &device);
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [2, width]), &device);
    let loss: f32 = lm_loss(&model, x, mask, &mut ForwardContext::eval()).into_scalar();
    let want_loss = r["loss"].as_f64().unwrap();
    assert!(
        (f64::from(loss) - want_loss).abs() < 1e-3,
        "loss {loss} vs the official code's {want_loss}"
    );
    // A filter below the texts' length leaves them out, as the official `seq_len >= Tmax - 1`.
    let short = want[0].len().min(want[1].len()) + 1;
    let (kept, left_out) = encode_questions(&tokenizer, en[..2].to_vec(), short, true).unwrap();
    assert_eq!((kept.len(), left_out), (0, 2));

    // Greedy decoding from evaluation prompts and the token-id scores.
    let stop = [tokenizer.eos_id().unwrap()];
    for g in r["generations"].as_array().unwrap() {
        let lang = g["language"].as_str().unwrap();
        let k = g["index"].as_u64().unwrap() as usize;
        let question = if lang == "en" { &en[k] } else { &es[k] };
        let (items, _) = encode_questions(&tokenizer, vec![question.clone()], 512, false).unwrap();
        assert_eq!(items[0].ids, ids(&g["prompt_ids"]));
        assert_eq!(items[0].gold_ids, ids(&g["gold_ids"]));
        let out = generate_greedy(
            &model,
            &items[0].ids,
            24,
            &stop,
            &mut ForwardContext::eval(),
            &device,
        );
        assert_eq!(out, ids(&g["generated_ids"]), "{lang} question {k}");
        let (scores, text) = qa_scores(&tokenizer, &items[0], &out).unwrap();
        assert_eq!(text, g["text"].as_str().unwrap().trim());
        let s = &g["scores"];
        assert!((scores[0] - s["f1"].as_f64().unwrap()).abs() < 1e-12);
        assert!((scores[1] - s["em"].as_f64().unwrap()).abs() < 1e-12);
    }
}
