//! Every seed of a run is derived from the cell's seed, a purpose and an index, so that a run
//! is identical for the same seed on the same backend, and two purposes never share a stream.
//!
//! The purposes' numbers are part of every run's results: changing one changes the numbers a
//! cell produces. Encoder and LoRA cells grew separately, so the same number serves different
//! purposes in the two families; [`Purpose::code`] is the one table that says which.

/// Why a seed is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A task head the checkpoint lacks (every fine-tuning cell), index 0.
    Head,
    /// Encoder cells: the data order of an epoch (index: the epoch).
    EncoderDataOrder,
    /// Encoder cells: the dropout uniforms of a micro-batch (index: the micro-batch).
    EncoderDropout,
    /// Encoder cells: the FFN-ablation masks of an evaluation (index: the rate × 10⁶).
    EncoderAblation,
    /// Encoder cells: a micro-batch's own generator, for input views (index: the micro-batch).
    EncoderViews,
    /// Encoder cells: the dropout uniforms of an evaluation with dropout on (index: the power),
    /// then of each of its batches (index: the batch).
    EncoderEvalDropout,
    /// Encoder cells: the dropout views of an evaluation batch under `cmp_in_eval` (index: the
    /// evaluation's batch; the same masks at every evaluation).
    EncoderEvalViews,
    /// LoRA cells: the adapters' initialisation, index 0.
    LoraAdapters,
    /// LoRA cells: the data order of an epoch (index: the epoch).
    LoraDataOrder,
    /// LoRA cells: a random neuron set with a language set's per-layer counts, index 0.
    LoraRandomSet,
    /// PRF cells: the order of the training queries in an epoch (index: the epoch).
    PrfDataOrder,
    /// PRF cells: the dropout uniforms of a micro-batch (index: the micro-batch).
    PrfDropout,
    /// PRF cells: a micro-batch's feedback counts and passages (index: the micro-batch).
    PrfRevisions,
}

impl Purpose {
    /// The number mixed into the seed.
    pub const fn code(self) -> u64 {
        match self {
            Self::Head => 0,
            Self::EncoderDataOrder => 1,
            Self::EncoderDropout => 2,
            Self::EncoderAblation => 3,
            Self::EncoderViews => 4,
            Self::EncoderEvalDropout => 5,
            Self::EncoderEvalViews => 6,
            Self::LoraAdapters => 1,
            Self::LoraDataOrder => 3,
            Self::LoraRandomSet => 7,
            Self::PrfDataOrder => 1,
            Self::PrfDropout => 2,
            Self::PrfRevisions => 4,
        }
    }
}

/// A seed for one purpose of one run: SplitMix64 of the run seed, the purpose's code and an
/// index.
pub fn derive_seed(seed: u64, purpose: Purpose, index: u64) -> u64 {
    let purpose = purpose.code();
    let mut z = seed
        .wrapping_add(purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `0..n` in the seeded order of one purpose's `index` (an epoch's data order).
pub fn shuffled(n: usize, seed: u64, purpose: Purpose, index: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(derive_seed(
        seed, purpose, index,
    )));
    order
}
