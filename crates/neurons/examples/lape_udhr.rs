//! Language-specific neurons of SmolLM2 from the Universal Declaration of Human Rights in eight
//! languages: collect activation statistics, select neurons with LAPE (Tang et al.), and measure
//! how zeroing each language's neurons changes every language's held-out NLL, beside a control of
//! random neurons with the same per-layer counts.
//!
//! ```sh
//! bash scripts/fetch-artefacts.sh
//! cargo run --release -p neurons --example lape_udhr -- .cache/artefacts
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::backend::NdArray;
use models::DecoderCheckpoint;
use neurons::selection::{LapeConfig, lape};
use neurons::{
    ActivationStats, ChangeMatrix, InterventionValue, Packing, TextFormat, pack, read_documents,
};

type B = NdArray<f32>;

const LANGUAGES: [(&str, &str); 8] = [
    ("en", "eng"),
    ("fr", "fra"),
    ("es", "spa"),
    ("de", "deu_1996"),
    ("vi", "vie"),
    ("id", "ind"),
    ("ja", "jpn"),
    ("zh", "cmn_hans"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: lape_udhr ARTEFACTS_DIR")?,
    );
    let device = Default::default();
    let checkpoint = DecoderCheckpoint::open(cache.join("smollm2-135m-instruct"))?;
    let tokenizer = checkpoint.tokenizer.clone().ok_or("no tokenizer")?;
    let (model, _) = checkpoint.load::<B>(&device)?;
    let packing = Packing {
        window: 128,
        held_out_fraction: 0.2,
        budget_tokens: None,
    };

    let mut stats = ActivationStats::new(&model);
    let mut held_out = Vec::new();
    for (lang, code) in LANGUAGES {
        let path = cache.join(format!("udhr/{code}.txt"));
        let docs = read_documents(&path, &TextFormat::Lines)?;
        let packed = pack(lang, &path, &docs, &packing, |d| {
            tokenizer.encode(d).map_err(|e| e.to_string())
        })?;
        eprintln!(
            "{lang}: {} tokens, {} + {} windows",
            packed.total_tokens,
            packed.train.len(),
            packed.held_out.len()
        );
        stats.collect(&model, lang, &packed.train, 8, &device, |_| {})?;
        held_out.push((lang.to_string(), packed.held_out));
    }

    let languages: Vec<String> = LANGUAGES.iter().map(|(l, _)| l.to_string()).collect();
    let chosen = lape(&stats.probabilities(&languages)?, &LapeConfig::default())?;
    println!(
        "LAPE: threshold {:.4}, {} neurons",
        chosen.threshold,
        chosen.selected.len()
    );
    for (lang, set) in &chosen.sets {
        let per_layer = set.counts_per_layer(model.num_layers());
        println!("  {lang}: {:4} neurons; by layer {per_layer:?}", set.len());
    }

    let (n_layers, width) = (model.num_layers(), model.intermediate_size());
    let random: BTreeMap<String, ablation::NeuronSet> = chosen
        .sets
        .iter()
        .map(|(l, s)| Ok((l.clone(), s.random_like(n_layers, width, 0)?)))
        .collect::<Result<_, ablation::NeuronSetError>>()?;
    for (name, sets) in [("LAPE neurons", &chosen.sets), ("random neurons", &random)] {
        let m = ChangeMatrix::compute(
            &model,
            &held_out,
            sets,
            &InterventionValue::Zero,
            None,
            8,
            &device,
            |l| eprint!("{l} "),
        )?;
        eprintln!();
        println!(
            "\nNLL change, {name} zeroed (rows: ablated, columns: evaluated)\n{}",
            m.to_csv(&m.nll_change())
        );
    }
    Ok(())
}
