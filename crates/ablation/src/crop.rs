//! Input ablation (CmpCrop): nested views of an input made of segments or tokens.
//!
//! The ablated "neurons" of CmpCrop are pieces of the input. Every function here returns, for
//! views `0..=n`, the indices of what each view keeps, in input order; view 0 is the full input
//! and each later view keeps a subset of the one before (the views are *nested*). The readers
//! (HotpotQA paragraphs, ranking feedback passages) build each view's token sequence from these
//! indices; a comparative step pads all its views to one length so that the dropout masks of
//! [`crate::DropoutMasks`] stay aligned across views.
//!
//! Randomness comes from an RNG the caller owns, so a seeded run replays the same views.

use rand::Rng;
use rand::seq::SliceRandom;
use rand::seq::index::sample;

/// Whether the views are drawn for training (random) or evaluation (fixed), as in the official
/// HotpotQA reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropMode {
    /// Shuffle the segments and draw nested distractor counts at random.
    Train,
    /// Keep the input order and use the fixed distractor counts `[6, 4, 2, 0]`.
    Eval,
}

/// Nested segment views (CmpCrop for multi-paragraph inputs, e.g. HotpotQA distractor paragraphs).
///
/// `supporting[i]` says whether segment `i` supports the answer; supporting segments are kept in
/// every view, the others (distractors) are dropped. Returns `n_crop + 1` views, each the list of
/// segment indices it keeps, in the order the segments are fed to the model. Follows
/// `MultiDocQADataset.__getitem__` of the official code (zycdev/CmpLoss, `utils/data.py`):
///
/// - **Train:** the segment order is shuffled (view 0 is every segment in that order); the
///   distractors are permuted once more; with `D` distractors and `D > n_crop`, `n_crop`
///   distinct counts are drawn from `0..D` and sorted in descending order, otherwise the counts
///   are `D-1, …, 0` padded with 0. View `k` keeps the supporting segments and the first
///   `count_k` distractors of that one permutation, in the shuffled order, so each view drops at
///   least one distractor (when there is one) and is nested in the previous view.
/// - **Eval:** the input order is kept, distractors in input order, counts `[6, 4, 2, 0]` (the
///   official values, meant for HotpotQA's 8 distractors; the official code slices this list,
///   so it supports `n_crop <= 4`, and so does this function).
///
/// # Panics
/// In eval mode with `n_crop > 4`.
pub fn segment_views(
    supporting: &[bool],
    n_crop: usize,
    mode: CropMode,
    rng: &mut impl Rng,
) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..supporting.len()).collect();
    if mode == CropMode::Train {
        order.shuffle(rng);
    }
    let mut distractors: Vec<usize> = order.iter().copied().filter(|&i| !supporting[i]).collect();
    let counts: Vec<usize> = match mode {
        CropMode::Train => {
            distractors.shuffle(rng);
            let d = distractors.len();
            if d > n_crop {
                let mut counts = sample(rng, d, n_crop).into_vec();
                counts.sort_unstable_by(|a, b| b.cmp(a));
                counts
            } else {
                let mut counts: Vec<usize> = (0..d).rev().collect();
                counts.resize(n_crop, 0);
                counts
            }
        }
        CropMode::Eval => {
            assert!(
                n_crop <= 4,
                "evaluation crops use the official counts [6, 4, 2, 0]: at most 4 views, got {n_crop}"
            );
            [6, 4, 2, 0][..n_crop].to_vec()
        }
    };
    let mut views = vec![order.clone()];
    for count in counts {
        let kept: Vec<usize> = distractors.iter().copied().take(count).collect();
        views.push(
            order
                .iter()
                .copied()
                .filter(|i| supporting[*i] || kept.contains(i))
                .collect(),
        );
    }
    views
}

/// Nested prefix lengths over `available` ordered passages (the LoL pseudo-relevance-feedback
/// reader, `qr_dataset.py`): `1 + n_crop` distinct counts drawn from `0..=available`, in
/// descending order. The first is the full view's passage count; view `k` keeps the first
/// `counts[k]` passages of the same sequence, so the views are nested prefixes. Not used by a
/// cell yet: it is the view schedule of the pseudo-relevance-feedback task still to come.
///
/// # Panics
/// If `n_crop + 1 > available + 1` (not enough distinct counts).
pub fn nested_prefix_counts(available: usize, n_crop: usize, rng: &mut impl Rng) -> Vec<usize> {
    assert!(
        n_crop < available + 1,
        "{} nested prefixes need at least {n_crop} passages, only {available} available",
        n_crop + 1
    );
    let mut counts = sample(rng, available + 1, n_crop + 1).into_vec();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn is_subsequence(inner: &[usize], outer: &[usize]) -> bool {
        let mut it = outer.iter();
        inner.iter().all(|x| it.any(|y| y == x))
    }

    #[test]
    fn train_segment_views_are_nested_and_keep_supporting_segments() {
        // HotpotQA distractor setting: 2 supporting paragraphs among 10.
        let mut supporting = vec![false; 10];
        supporting[3] = true;
        supporting[7] = true;
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..200 {
            for n_crop in 1..=4 {
                let views = segment_views(&supporting, n_crop, CropMode::Train, &mut rng);
                assert_eq!(views.len(), n_crop + 1);
                let mut full = views[0].clone();
                full.sort_unstable();
                assert_eq!(full, (0..10).collect::<Vec<_>>());
                for k in 1..views.len() {
                    assert!(views[k].contains(&3) && views[k].contains(&7));
                    assert!(
                        views[k].len() < views[k - 1].len(),
                        "view {k} must be smaller"
                    );
                    assert!(is_subsequence(&views[k], &views[k - 1]));
                }
            }
        }
    }

    #[test]
    fn few_distractors_count_down_then_repeat_the_empty_view() {
        let supporting = [true, false, false, true];
        let mut rng = StdRng::seed_from_u64(1);
        let views = segment_views(&supporting, 4, CropMode::Train, &mut rng);
        let sizes: Vec<usize> = views.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 3, 2, 2, 2]);
    }

    #[test]
    fn eval_segment_views_use_the_fixed_counts_in_input_order() {
        let supporting: Vec<bool> = (0..10).map(|i| i == 0 || i == 9).collect();
        let mut rng = StdRng::seed_from_u64(0);
        let views = segment_views(&supporting, 3, CropMode::Eval, &mut rng);
        assert_eq!(views[0], (0..10).collect::<Vec<_>>());
        assert_eq!(views[1], vec![0, 1, 2, 3, 4, 5, 6, 9]);
        assert_eq!(views[2], vec![0, 1, 2, 3, 4, 9]);
        assert_eq!(views[3], vec![0, 1, 2, 9]);
    }

    #[test]
    fn prefix_counts_are_distinct_and_descending() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let counts = nested_prefix_counts(5, 2, &mut rng);
            assert_eq!(counts.len(), 3);
            assert!(counts.windows(2).all(|w| w[0] > w[1]));
            assert!(counts[0] <= 5);
        }
        assert_eq!(nested_prefix_counts(2, 2, &mut rng), vec![2, 1, 0]);
    }
}
