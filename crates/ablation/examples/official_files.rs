//! The official codes' neuron files: read Tang et al.'s `activation_mask` (a `torch.save`d list
//! per language of index tensors per layer), look at the sets, and write them again as Mondal et
//! al.'s `lang_neuron_data.pkl`, read it back and check nothing changed.
//!
//! ```sh
//! cargo run -p ablation --example official_files [-- path/to/activation_mask.pth]
//! ```
//!
//! Without an argument it reads the test fixture `tests/fixtures/official_neurons/tang_7.pth`
//! (made by `torch.save` in `make_official_fixtures.py`).

use ablation::official::{mondal, tang};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/fixtures/official_neurons/tang_7.pth")
        });
    // Seven lists are read in Tang's order (en, zh, fr, es, vi, id, ja); pass `Some(&names)` for
    // a file of other languages.
    let file = tang::read(&path, None)?;
    println!("{}: {} layers", path.display(), file.n_layers);
    for (lang, set) in &file.sets.sets {
        println!("  {lang}: {} neurons", set.len());
    }

    let width = 1 + file.sets.rows().map(|r| r.neuron).max().unwrap_or(0);
    let info = mondal::MondalInfo {
        model_name: "unknown".into(),
        method: "lape".into(),
        n_layers: file.n_layers,
        width,
    };
    let languages: Vec<String> = file.sets.sets.keys().cloned().collect();
    let out = std::env::temp_dir().join("official_files_example.pkl");
    mondal::write(&file.sets, &languages, &info, &out)?;
    let back = mondal::read(&out)?;
    assert_eq!(
        back.sets, file.sets,
        "a Mondal round trip keeps every neuron"
    );
    println!(
        "wrote {} (L {}, int_d {}) and read the same sets back",
        out.display(),
        back.info.n_layers,
        back.info.width
    );
    Ok(())
}
