//! Dropout masks from a counter-based generator, with nested views (CmpDrop).
//!
//! PyTorch's dropout keeps a unit when `u < 1 - p` for a uniform `u`; the official CmpLoss code
//! makes its ablated views nested by replaying the RNG state before every ablated pass, so each
//! view sees the same `u` at each dropout site. Here the same effect is built in: the uniforms of a
//! step are computed once per dropout site and cached, and view `k` keeps the units with
//! `u >= p_k`. A larger `k` means a larger `p_k` and therefore a subset of the kept units.
//!
//! **The uniforms are a function, not a stream.** Unit `i` of dropout site `s` in step `t` of a
//! mask source seeded with `seed` gets `u = hash(key(seed, t, s), i)`: a 64-bit key mixed from
//! the three numbers (SplitMix64), then two rounds of a 32-bit integer mixer over the unit's index
//! (xor-shift-multiply, multipliers below 2³¹ so that the products fit a signed 64-bit integer),
//! and the top 24 bits scaled to `[0, 1)`. Nothing depends on the order in which sites are asked
//! for or on any other user of an RNG, so the same `(seed, step, site)` gives the same mask
//! wherever it is computed: on the host ([`MaskDraw::Host`], plain `u32` arithmetic, then one
//! upload) or on the device ([`MaskDraw::Device`], the same arithmetic in integer tensor ops, so
//! a GPU step uploads nothing). The two give bit-identical masks (tested). Which one a source uses
//! is chosen from the backend's name ([`MaskDraw::for_backend`]): on a CPU backend the host *is*
//! the device and plain arithmetic is faster than a chain of tensor ops; elsewhere the device
//! computes. These are not PyTorch's numbers (no generator here reproduces torch's Philox or
//! MT19937 streams); the official code's nesting and rates are what is kept.

use burn::prelude::*;
use burn::tensor::IntDType;

/// The dropout rate of nested view `power`: `p_k = 1 - (1 - p)^k` (`p_0 = 0`, `p_1 = p`).
///
/// With `p = 0.1`: `p_1 = 0.1`, `p_2 = 0.19`, `p_3 = 0.271`, `p_4 = 0.3439`.
pub fn nested_rate(p: f64, power: u32) -> f64 {
    1.0 - (1.0 - p).powi(power as i32)
}

/// Where a dropout site's uniforms are computed (the numbers are the same either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskDraw {
    /// On the host in `u32` arithmetic, then uploaded: the fast path on CPU backends.
    Host,
    /// On the device in integer tensor ops: nothing crosses from the host (GPU backends).
    Device,
}

impl MaskDraw {
    /// [`MaskDraw::Host`] for CPU backends (`ndarray`, `flex`, `candle`, and any backend whose
    /// name for `device` says `cpu`, such as `libtorch<cpu>`), [`MaskDraw::Device`] otherwise
    /// (`libtorch<cuda>`, `cubecl<cuda>`, wgpu, …).
    pub fn for_backend<B: Backend>(device: &B::Device) -> Self {
        let name = B::name(device).to_lowercase();
        let cpu = ["cpu", "ndarray", "flex", "candle"];
        if cpu.iter().any(|c| name.contains(c)) {
            Self::Host
        } else {
            Self::Device
        }
    }
}

/// The two 31-bit halves of the key of one dropout site of one step (see the module docs).
fn site_key(seed: u64, step: u64, site: u64) -> [u32; 2] {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let key = splitmix(splitmix(splitmix(seed) ^ step) ^ site);
    [
        (key & 0x7FFF_FFFF) as u32,
        ((key >> 32) & 0x7FFF_FFFF) as u32,
    ]
}

/// The multipliers of the mixer: odd, below 2³¹ (so `x · m < 2⁶³` for any 32-bit `x`).
const MULTIPLIERS: [u32; 2] = [0x7FEB_352D, 0x21F0_AAAD];

/// One round of the 32-bit mixer.
fn mix_host(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(MULTIPLIERS[0]);
    x ^= x >> 15;
    x = x.wrapping_mul(MULTIPLIERS[1]);
    x ^ (x >> 16)
}

/// The uniform of unit `index` under `key`.
fn uniform_host(key: [u32; 2], index: u32) -> f32 {
    let h = mix_host(mix_host(index ^ key[0]) ^ key[1]);
    (h >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

/// `x mod 2³²` for `0 <= x < 2⁶³`, without a scalar that a 32-bit integer cannot hold.
fn low_32<B: Backend>(x: Tensor<B, 1, Int>) -> Tensor<B, 1, Int> {
    let high = x
        .clone()
        .bitwise_right_shift_scalar(32.elem())
        .bitwise_left_shift_scalar(32.elem());
    x - high
}

/// `x ^ (x >> shift)`.
fn xor_shift<B: Backend>(x: Tensor<B, 1, Int>, shift: u32) -> Tensor<B, 1, Int> {
    x.clone()
        .bitwise_right_shift_scalar(shift.elem())
        .bitwise_xor(x)
}

/// [`mix_host`] in tensor ops on 64-bit integers holding 32-bit values.
fn mix_device<B: Backend>(x: Tensor<B, 1, Int>) -> Tensor<B, 1, Int> {
    let x = low_32(xor_shift(x, 16).mul_scalar(MULTIPLIERS[0].elem::<B::IntElem>()));
    let x = low_32(xor_shift(x, 15).mul_scalar(MULTIPLIERS[1].elem::<B::IntElem>()));
    xor_shift(x, 16)
}

/// [`uniform_host`] for units `0..n` in tensor ops on `device`.
fn uniforms_device<B: Backend>(key: [u32; 2], n: usize, device: &B::Device) -> Tensor<B, 1> {
    uniforms_of(key, Tensor::<B, 1, Int>::arange(0..n as i64, device))
}

/// [`uniform_host`] of each unit index in `index`, in tensor ops.
fn uniforms_of<B: Backend>(key: [u32; 2], index: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let index = index.cast(IntDType::I64);
    let h = mix_device(
        mix_device(index.bitwise_xor_scalar(key[0].elem())).bitwise_xor_scalar(key[1].elem()),
    );
    h.bitwise_right_shift_scalar(8.elem())
        .float()
        .mul_scalar(1.0 / (1u32 << 24) as f32)
}

/// The uniforms of units `0..n` under `key`, computed where `draw` says.
fn uniforms<B: Backend>(
    key: [u32; 2],
    n: usize,
    draw: MaskDraw,
    device: &B::Device,
) -> Tensor<B, 1> {
    assert!(
        u32::try_from(n).is_ok(),
        "a dropout site of {n} units per view is more than the generator's 2^32 counters"
    );
    match draw {
        MaskDraw::Host => {
            let draws: Vec<f32> = (0..n as u32).map(|i| uniform_host(key, i)).collect();
            Tensor::from_data(TensorData::new(draws, [n]), device)
        }
        MaskDraw::Device => uniforms_device(key, n, device),
    }
}

/// Source of dropout masks for one model, seeded by the caller.
///
/// A forward pass asks for one mask per dropout site, in forward order. Within a *step* the
/// uniforms of each site are computed once and reused by every view, so views are nested; a new
/// step ([`DropoutMasks::next_step`]) gets fresh uniforms. Ordinary (non-nested) training dropout
/// is power 1 with a new step before every forward pass.
///
/// **Batched views.** [`DropoutMasks::set_view_powers`] selects several views at once for a
/// forward pass over `views × B` rows (view `v` in rows `v·B .. (v+1)·B`, the batch dimension
/// first, as at every dropout site of the models). Each view's block gets the mask that view
/// would get alone, from the same uniforms, so running the views batched or one after another
/// gives identical masks; this is what lets a comparative step choose between the two by memory.
#[derive(Debug)]
pub struct DropoutMasks<B: Backend> {
    seed: u64,
    step: u64,
    draw: Option<MaskDraw>,
    powers: Vec<u32>,
    uniforms: Vec<Tensor<B, 1>>,
    cursor: usize,
}

impl<B: Backend> DropoutMasks<B> {
    /// Masks for ordinary dropout (power 1), seeded; where the uniforms are computed follows
    /// [`MaskDraw::for_backend`] unless [`DropoutMasks::with_draw`] says otherwise.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            step: 0,
            draw: None,
            powers: vec![1],
            uniforms: Vec::new(),
            cursor: 0,
        }
    }

    /// Compute the uniforms where `draw` says (the masks are the same either way).
    pub fn with_draw(mut self, draw: MaskDraw) -> Self {
        self.draw = Some(draw);
        self
    }

    /// Forget the uniforms of the previous step; the next forward pass gets new ones.
    pub fn next_step(&mut self) {
        self.uniforms.clear();
        self.cursor = 0;
        self.step += 1;
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
            let key = site_key(self.seed, self.step, site as u64);
            let draw = *self
                .draw
                .get_or_insert_with(|| MaskDraw::for_backend::<B>(device));
            self.uniforms.push(uniforms(key, numel, draw, device));
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
    fn host_and_device_compute_the_same_uniforms() {
        let device = Default::default();
        for (seed, step, site) in [(0, 0, 0), (7, 3, 11), (u64::MAX, 1 << 40, 5)] {
            let key = site_key(seed, step, site);
            // Indices past 2^16 and 2^24 exercise every shift of the mixer.
            let n = (1 << 17) + 37;
            let host = uniforms::<B>(key, n, MaskDraw::Host, &device);
            let on_device = uniforms::<B>(key, n, MaskDraw::Device, &device);
            assert_eq!(host.to_data(), on_device.to_data(), "key {key:?}");
        }
        let big = site_key(1, 2, 3);
        let index = Tensor::<B, 1, Int>::from_data([u32::MAX as i64], &device);
        let (host, on_device) = (uniform_host(big, u32::MAX), uniforms_of(big, index));
        assert_eq!(on_device.into_scalar(), host);
        // And the whole mask source: the same masks, site by site and step by step.
        let mut a = DropoutMasks::<B>::new(5).with_draw(MaskDraw::Host);
        let mut b = DropoutMasks::<B>::new(5).with_draw(MaskDraw::Device);
        for _ in 0..3 {
            for power in [1, 3] {
                a.set_power(power);
                b.set_power(power);
                for shape in [[16, 40], [3, 7]] {
                    let (x, y) = (a.mask(0.1, shape, &device), b.mask(0.1, shape, &device));
                    assert_eq!(x.unwrap().to_data(), y.unwrap().to_data());
                }
            }
            a.next_step();
            b.next_step();
        }
    }

    #[test]
    fn uniforms_look_independent_and_uniform() {
        let device = Default::default();
        let n = 1 << 18;
        let values = |seed, step, site| -> Vec<f64> {
            let u = uniforms::<B>(site_key(seed, step, site), n, MaskDraw::Host, &device);
            let v: Vec<f32> = u.to_data().to_vec().unwrap();
            v.into_iter().map(f64::from).collect()
        };
        let u = values(3, 0, 0);
        let mean = u.iter().sum::<f64>() / n as f64;
        let var = u.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 0.00056 for the mean, 0.00016 for the variance.
        assert!((mean - 0.5).abs() < 0.003, "mean {mean}");
        assert!((var - 1.0 / 12.0).abs() < 0.001, "variance {var}");
        let deciles = u.iter().fold([0usize; 10], |mut acc, x| {
            acc[(x * 10.0) as usize] += 1;
            acc
        });
        for (d, count) in deciles.iter().enumerate() {
            let share = *count as f64 / n as f64;
            assert!((share - 0.1).abs() < 0.003, "decile {d}: {share}");
        }
        // Neighbouring units, and the same unit at another site, in another step or under
        // another seed, are uncorrelated.
        let corr = |a: &[f64], b: &[f64]| {
            let m = a.len() as f64;
            let (ma, mb) = (a.iter().sum::<f64>() / m, b.iter().sum::<f64>() / m);
            let cov = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - ma) * (y - mb))
                .sum::<f64>()
                / m;
            cov / (1.0 / 12.0)
        };
        let others = [
            ("the next unit", u[1..].to_vec(), u[..n - 1].to_vec()),
            ("the next site", values(3, 0, 1), u.clone()),
            ("the next step", values(3, 1, 0), u.clone()),
            ("the next seed", values(4, 0, 0), u.clone()),
        ];
        for (what, a, b) in others {
            let r = corr(&a, &b);
            assert!(r.abs() < 0.01, "correlation with {what}: {r}");
        }
    }

    #[test]
    fn cpu_backends_compute_on_the_host() {
        assert_eq!(
            MaskDraw::for_backend::<B>(&Default::default()),
            MaskDraw::Host
        );
    }

    #[test]
    #[should_panic(expected = "not a multiple of 3 views")]
    fn batched_rows_must_split_into_views() {
        let mut masks = DropoutMasks::<B>::new(0);
        masks.set_view_powers(&[0, 1, 2]);
        masks.mask(0.1, [4, 2], &Default::default());
    }
}
