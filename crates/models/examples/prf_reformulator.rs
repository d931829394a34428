//! Reformulate a query with pseudo-relevance feedback, as LoL's dense model reads it: the query
//! and its feedback passages in one input, one vector out; then see how the feedback moves the
//! query towards a passage it names.
//!
//! ```sh
//! bash scripts/fetch-artefacts.sh
//! cargo run --release -p models --example prf_reformulator -- .cache/artefacts/all-MiniLM-L6-v2
//! ```
//!
//! MiniLM has no reformulator head; mean pooling without one (and normalised) makes it its own
//! first-pass query encoder, so with no feedback the vector is MiniLM's sentence embedding.

use burn::backend::NdArray;
use models::{
    Checkpoint, FeedbackInput, FeedbackLimits, ForwardContext, QueryReformulator,
    ReformulatorConfig, TextTokenizer, feedback_batch,
};

type B = NdArray<f32>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: prf_reformulator CHECKPOINT_DIR")?;
    let device = Default::default();
    let checkpoint = Checkpoint::open(&dir)?;
    let tokenizer = TextTokenizer::from_dir(&dir, &checkpoint.config)?;
    let config = ReformulatorConfig {
        mean_pooling: true,
        projection: false,
        norm_power: Some(2.0),
    };
    let (model, _) = QueryReformulator::<B>::load(checkpoint, config, 0, &device)?;

    let query = "jaguar speed";
    let feedback = [
        "The jaguar is a large cat native to the Americas; it can run at about 80 km/h.",
        "Jaguar Cars is a British manufacturer of luxury vehicles.",
    ];
    let target = "Big cats such as jaguars sprint in short bursts.";
    let limits = FeedbackLimits::default();
    let full = FeedbackInput::new(&tokenizer, query, &feedback, limits)?;
    // The official revisions: the same input cut after 0, 1 and 2 feedback passages.
    let revisions: Vec<FeedbackInput> = (0..=full.n_passages()).map(|n| full.first(n)).collect();
    let input = feedback_batch(&revisions, &tokenizer).to_input::<B>(&device);
    let queries = model.forward(&input, &mut ForwardContext::eval()); // [3, hidden]

    let passage = FeedbackInput::new(&tokenizer, target, &[], limits)?;
    let passage = feedback_batch(&[passage], &tokenizer).to_input::<B>(&device);
    let p = model.forward(&passage, &mut ForwardContext::eval()); // [1, hidden]
    let scores = queries.matmul(p.transpose()).into_data().to_vec::<f32>()?;
    for (n, s) in scores.iter().enumerate() {
        println!(
            "{n} feedback passage(s), {} tokens: cosine to the target passage {s:.4}",
            revisions[n].ids.len()
        );
    }
    Ok(())
}
