//! The views of one comparative step: which input view and which dropout power each pass uses.

/// One forward pass of a comparative step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The input view: 0 is the full input, `k` the `k`-th nested crop (see [`crate::crop`]).
    pub crop: usize,
    /// The dropout power: 0 is no dropout, `k` the nested rate `1 - (1 - p)^k`
    /// (see [`crate::DropoutMasks::set_power`]).
    pub power: u32,
}

/// Dropout in the views of a crop-only comparative step (`n_drop = 0`, `n_crop > 0`).
///
/// The official codes differ here. CmpLoss's `CmpQA.forward` (HotpotQA) tests
/// `elif self.eval() and …`; `eval()` switches the model to eval mode and returns it (truthy),
/// so whenever `n_drop == 0` the whole step, and the HotpotQA baseline, run without dropout
/// (`../shared/research/cmploss.md` §2.3). LoL's trainer (ranking) calls `model.train()` and
/// keeps ordinary dropout in every revision, as `CmpCls` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CropOnlyDropout {
    /// No dropout in any view: CmpQA's quirk, what the official HotpotQA runs did.
    #[default]
    Off,
    /// Ordinary dropout (power 1) in every view. The views share the step's uniforms, so they
    /// differ only by their input: the crop is the one ablation compared.
    Ordinary,
}

/// The passes of one comparative step with `n_drop` dropout ablations and `n_crop` input
/// ablations: `c = n_drop + n_crop` ablated views after the full model.
///
/// Follows `CmpQA.forward` of the official code: view 0 is the full input with no dropout
/// (when `n_drop > 0`); each ablated view steps either the crop counter or the dropout power,
/// crop first, alternating: step `i` crops further if crops remain and (`i` is even or the
/// drops are used up), otherwise it raises the dropout power. Each view therefore ablates the
/// previous one further. With `n_drop = n_crop = 0` (the baseline) there is one view with
/// ordinary dropout.
///
/// ```
/// use ablation::{View, ViewSchedule};
/// let views = ViewSchedule::new(2, 2).views();
/// let pairs: Vec<(usize, u32)> = views.iter().map(|v| (v.crop, v.power)).collect();
/// assert_eq!(pairs, [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSchedule {
    /// Dropout ablations.
    pub n_drop: u32,
    /// Input ablations.
    pub n_crop: usize,
    /// Dropout when `n_drop == 0` and `n_crop > 0`.
    pub crop_only_dropout: CropOnlyDropout,
}

impl ViewSchedule {
    /// A schedule whose crop-only steps run without dropout ([`CropOnlyDropout::Off`], the
    /// official HotpotQA behaviour); see [`Self::with_crop_only_dropout`].
    pub fn new(n_drop: u32, n_crop: usize) -> Self {
        Self {
            n_drop,
            n_crop,
            crop_only_dropout: CropOnlyDropout::default(),
        }
    }

    /// Choose the dropout of crop-only steps.
    pub fn with_crop_only_dropout(mut self, dropout: CropOnlyDropout) -> Self {
        self.crop_only_dropout = dropout;
        self
    }

    /// The number of ablated views, `c`.
    pub fn comparisons(&self) -> usize {
        self.n_drop as usize + self.n_crop
    }

    /// The `c + 1` passes in order: the full model first.
    pub fn views(&self) -> Vec<View> {
        if self.comparisons() == 0 {
            return vec![View { crop: 0, power: 1 }];
        }
        let crop_only_power = match self.crop_only_dropout {
            CropOnlyDropout::Off => 0,
            CropOnlyDropout::Ordinary => 1,
        };
        let mut views = vec![View {
            crop: 0,
            power: if self.n_drop > 0 { 0 } else { crop_only_power },
        }];
        let (mut crop, mut power) = (0usize, 0u32);
        for i in 0..self.comparisons() {
            if crop < self.n_crop && (i % 2 == 0 || power >= self.n_drop) {
                crop += 1;
            } else {
                power += 1;
            }
            views.push(View {
                crop,
                power: if self.n_drop > 0 {
                    power
                } else {
                    crop_only_power
                },
            });
        }
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(schedule: ViewSchedule) -> Vec<(usize, u32)> {
        schedule.views().iter().map(|v| (v.crop, v.power)).collect()
    }

    #[test]
    fn schedules_match_the_official_examples() {
        assert_eq!(pairs(ViewSchedule::new(0, 0)), [(0, 1)]);
        assert_eq!(pairs(ViewSchedule::new(2, 0)), [(0, 0), (0, 1), (0, 2)]);
        // n_drop = 1, n_crop = 1: full → cropped, no dropout → cropped with dropout p.
        assert_eq!(pairs(ViewSchedule::new(1, 1)), [(0, 0), (1, 0), (1, 1)]);
        assert_eq!(
            pairs(ViewSchedule::new(2, 2)),
            [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2)]
        );
        // Crops exhausted: the rest are drops; drops exhausted: the rest are crops.
        assert_eq!(
            pairs(ViewSchedule::new(3, 1)),
            [(0, 0), (1, 0), (1, 1), (1, 2), (1, 3)]
        );
        assert_eq!(
            pairs(ViewSchedule::new(1, 3)),
            [(0, 0), (1, 0), (1, 1), (2, 1), (3, 1)]
        );
        assert_eq!(pairs(ViewSchedule::new(0, 2)), [(0, 0), (1, 0), (2, 0)]);
        assert_eq!(
            pairs(ViewSchedule::new(0, 2).with_crop_only_dropout(CropOnlyDropout::Ordinary)),
            [(0, 1), (1, 1), (2, 1)]
        );
    }

    #[test]
    fn every_view_ablates_the_previous_one_further() {
        for n_drop in 0..5 {
            for n_crop in 0..5 {
                let views = ViewSchedule::new(n_drop, n_crop).views();
                assert_eq!(views.len(), n_drop as usize + n_crop + 1);
                for w in views.windows(2) {
                    assert!(w[1].crop >= w[0].crop && w[1].power >= w[0].power);
                    assert!(w[1] != w[0] || n_drop == 0);
                }
                assert_eq!(views.last().unwrap().crop, n_crop);
            }
        }
    }
}
