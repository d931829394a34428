//! Dropout masks with a caller-owned RNG and nested views (CmpDrop).
//!
//! PyTorch's dropout keeps a unit when `u < 1 - p` for a uniform `u`; the official CmpLoss code
//! makes its ablated views nested by replaying the RNG state before every ablated pass, so each
//! view sees the same `u` at each dropout site. Here the same effect is built in: the uniforms of a
//! step are drawn once per dropout site and cached, and view `k` keeps the units with
//! `u >= p_k`. A larger `k` means a larger `p_k` and therefore a subset of the kept units.

use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The dropout rate of nested view `power`: `p_k = 1 - (1 - p)^k` (`p_0 = 0`, `p_1 = p`).
///
/// With `p = 0.1`: `p_1 = 0.1`, `p_2 = 0.19`, `p_3 = 0.271`, `p_4 = 0.3439`.
pub fn nested_rate(p: f64, power: u32) -> f64 {
    1.0 - (1.0 - p).powi(power as i32)
}

/// Source of dropout masks for one model, drawn from a seeded RNG that the caller owns.
///
/// A forward pass asks for one mask per dropout site, in forward order. Within a *step* the
/// uniforms of each site are drawn once and reused by every view, so views are nested; a new step
/// ([`DropoutMasks::next_step`]) draws fresh uniforms. Ordinary (non-nested) training dropout is
/// power 1 with a new step before every forward pass.
///
/// **Batched views.** [`DropoutMasks::set_view_powers`] selects several views at once for a
/// forward pass over `views × B` rows (view `v` in rows `v·B .. (v+1)·B`, the batch dimension
/// first, as at every dropout site of the models). Each view's block gets the mask that view
/// would get alone, from the same uniforms, so running the views batched or one after another
/// gives identical masks; this is what lets a comparative step choose between the two by memory.
#[derive(Debug)]
pub struct DropoutMasks<B: Backend> {
    rng: StdRng,
    powers: Vec<u32>,
    uniforms: Vec<Tensor<B, 1>>,
    cursor: usize,
}

impl<B: Backend> DropoutMasks<B> {
    /// Masks for ordinary dropout (power 1), seeded.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            powers: vec![1],
            uniforms: Vec::new(),
            cursor: 0,
        }
    }

    /// Forget the uniforms of the previous step; the next forward pass draws new ones.
    pub fn next_step(&mut self) {
        self.uniforms.clear();
        self.cursor = 0;
    }

    /// Select nested view `power` (0: no dropout at all) and rewind to the first dropout site,
    /// so that the next forward pass reuses this step's uniforms.
    pub fn set_power(&mut self, power: u32) {
        self.set_view_powers(&[power]);
    }

    /// Select several nested views for one batched forward pass (see the type docs) and rewind
    /// to the first dropout site.
    ///
    /// # Panics
    /// If `powers` is empty.
    pub fn set_view_powers(&mut self, powers: &[u32]) {
        assert!(!powers.is_empty(), "at least one view is needed");
        self.powers = powers.to_vec();
        self.cursor = 0;
    }

    /// The selected views' powers (one entry unless batched).
    pub fn powers(&self) -> &[u32] {
        &self.powers
    }

    /// The mask for the next dropout site with base rate `p`: `1 / (1 - p_k)` where the unit is
    /// kept (`u >= p_k`) and 0 elsewhere, or `None` when no selected view drops anything.
    ///
    /// # Panics
    /// If this site's shape differs from the one drawn for the same site earlier in the step
    /// (views of one step must run the same forward on inputs of the same shape: pad them to one
    /// length), or if a batched shape's first dimension is not a multiple of the view count.
    pub fn mask<const D: usize>(
        &mut self,
        p: f64,
        shape: [usize; D],
        device: &B::Device,
    ) -> Option<Tensor<B, D>> {
        let rates: Vec<f64> = self.powers.iter().map(|k| nested_rate(p, *k)).collect();
        if rates.iter().all(|r| *r <= 0.0) {
            return None;
        }
        let views = rates.len();
        assert!(
            shape[0].is_multiple_of(views),
            "a batched dropout site has {} rows, not a multiple of {views} views",
            shape[0]
        );
        let numel = shape.iter().product::<usize>() / views;
        let site = self.cursor;
        self.cursor += 1;
        if site == self.uniforms.len() {
            let draws: Vec<f32> = (0..numel).map(|_| self.rng.random::<f32>()).collect();
            self.uniforms
                .push(Tensor::from_data(TensorData::new(draws, [numel]), device));
        }
        let u = self.uniforms[site].clone();
        assert_eq!(
            u.dims()[0],
            numel,
            "dropout site {site} was drawn with {} units per view this step, now asked for \
             {shape:?} over {views} view(s)",
            u.dims()[0]
        );
        let blocks: Vec<Tensor<B, 1>> = rates
            .iter()
            .map(|&p_k| {
                assert!(p_k < 1.0, "dropout rate must be below 1, got {p_k}");
                if p_k <= 0.0 {
                    Tensor::ones([numel], device)
                } else {
                    u.clone()
                        .greater_equal_elem(p_k)
                        .float()
                        .mul_scalar(1.0 / (1.0 - p_k))
                }
            })
            .collect();
        let mask = if blocks.len() == 1 {
            blocks.into_iter().next().expect("one block")
        } else {
            Tensor::cat(blocks, 0)
        };
        Some(mask.reshape(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn nested_rates_match_the_paper() {
        let expected = [0.0, 0.1, 0.19, 0.271, 0.3439];
        for (k, want) in expected.iter().enumerate() {
            assert!((nested_rate(0.1, k as u32) - want).abs() < 1e-12);
        }
    }

    fn kept(mask: &Tensor<B, 2>) -> Vec<bool> {
        let v: Vec<f32> = mask.to_data().to_vec().unwrap();
        v.iter().map(|x| *x > 0.0).collect()
    }

    #[test]
    fn views_are_nested_within_a_step_and_fresh_across_steps() {
        let device = Default::default();
        let mut masks = DropoutMasks::<B>::new(7);
        let mut kept_per_power = Vec::new();
        for power in 1..=4u32 {
            masks.set_power(power);
            let a = masks.mask(0.1, [64, 32], &device).unwrap();
            let b = masks.mask(0.1, [8, 4], &device).unwrap();
            kept_per_power.push((kept(&a), kept(&b)));
            // Kept units are scaled by 1 / (1 - p_k).
            let scale = 1.0 / (1.0 - nested_rate(0.1, power)) as f32;
            let v: Vec<f32> = a.to_data().to_vec().unwrap();
            assert!(v.iter().all(|x| *x == 0.0 || (*x - scale).abs() < 1e-6));
        }
        for k in 0..3 {
            let (outer, inner) = (&kept_per_power[k], &kept_per_power[k + 1]);
            for (o, i) in outer
                .0
                .iter()
                .zip(&inner.0)
                .chain(outer.1.iter().zip(&inner.1))
            {
                assert!(
                    !*i || *o,
                    "view {} keeps a unit that view {} dropped",
                    k + 2,
                    k + 1
                );
            }
            let n_outer = outer.0.iter().filter(|x| **x).count();
            let n_inner = inner.0.iter().filter(|x| **x).count();
            assert!(n_inner < n_outer, "view {} should drop more units", k + 2);
        }
        // Power 0 is the full model: no mask at all.
        masks.set_power(0);
        assert!(masks.mask(0.1, [4, 4], &device).is_none());
        // A new step draws new uniforms; the same seed replays the same ones.
        masks.set_power(1);
        masks.next_step();
        let fresh = kept(&masks.mask(0.1, [64, 32], &device).unwrap());
        assert_ne!(fresh, kept_per_power[0].0);
        let mut replay = DropoutMasks::<B>::new(7);
        assert_eq!(
            kept(&replay.mask(0.1, [64, 32], &device).unwrap()),
            kept_per_power[0].0
        );
    }

    #[test]
    fn drop_fraction_is_close_to_the_rate() {
        let device = Default::default();
        let mut masks = DropoutMasks::<B>::new(1);
        masks.set_power(2);
        let dropped = kept(&masks.mask(0.1, [200, 100], &device).unwrap())
            .iter()
            .filter(|k| !**k)
            .count() as f64
            / 20_000.0;
        assert!((dropped - 0.19).abs() < 0.01, "dropped {dropped}");
    }

    #[test]
    fn batched_views_get_the_masks_of_sequential_views() {
        let device = Default::default();
        let powers = [0u32, 1, 2, 3];
        let mut sequential = DropoutMasks::<B>::new(11);
        let mut per_view = Vec::new();
        for &k in &powers {
            sequential.set_power(k);
            let a = sequential
                .mask(0.2, [3, 5, 4], &device)
                .unwrap_or_else(|| Tensor::ones([3, 5, 4], &device));
            let b = sequential
                .mask(0.2, [3, 7], &device)
                .unwrap_or_else(|| Tensor::ones([3, 7], &device));
            per_view.push((a, b));
        }
        let mut batched = DropoutMasks::<B>::new(11);
        batched.set_view_powers(&powers);
        let a = batched.mask(0.2, [12, 5, 4], &device).unwrap();
        let b = batched.mask(0.2, [12, 7], &device).unwrap();
        let want_a = Tensor::cat(per_view.iter().map(|v| v.0.clone()).collect(), 0);
        let want_b = Tensor::cat(per_view.iter().map(|v| v.1.clone()).collect(), 0);
        assert_eq!(a.to_data(), want_a.to_data());
        assert_eq!(b.to_data(), want_b.to_data());
        // The full model's block is all ones; the others drop something.
        let first: Vec<f32> = a.clone().slice(0..3).to_data().to_vec().unwrap();
        assert!(first.iter().all(|x| *x == 1.0));
        let last: Vec<f32> = a.slice(9..12).to_data().to_vec().unwrap();
        assert!(last.contains(&0.0));
    }

    #[test]
    #[should_panic(expected = "not a multiple of 3 views")]
    fn batched_rows_must_split_into_views() {
        let mut masks = DropoutMasks::<B>::new(0);
        masks.set_view_powers(&[0, 1, 2]);
        masks.mask(0.1, [4, 2], &Default::default());
    }
}
