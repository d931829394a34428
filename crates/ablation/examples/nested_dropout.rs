//! Nested dropout views (CmpDrop): view k + 1 keeps a subset of what view k keeps.
//!
//! ```sh
//! cargo run -p ablation --example nested_dropout
//! ```

use ablation::{DropoutMasks, nested_rate};
use burn::backend::NdArray;

type B = NdArray<f32>;

fn main() {
    let device = Default::default();
    let mut masks = DropoutMasks::<B>::new(42);
    for power in 0..=4 {
        masks.set_power(power);
        let row = match masks.mask::<1>(0.1, [40], &device) {
            None => "1".repeat(40),
            Some(m) => m
                .to_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| if *x > 0.0 { '1' } else { '.' })
                .collect(),
        };
        println!("view {power}: p = {:.4}  {row}", nested_rate(0.1, power));
    }
}
