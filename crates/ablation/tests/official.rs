//! The official neuron-set formats against files the official codes' own writers produced
//! (`tests/fixtures/official_neurons/make_official_fixtures.py`: `torch.save`, `pickle.dump`,
//! the expertise CSV layout), and round trips through our writers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ablation::official::{MondalInfo, kojima, mondal, tang};
use ablation::{LanguageSets, NeuronSet};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/official_neurons")
        .join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `{language: [[layer, neuron], ...]}` of the expected file.
fn pairs(v: &Value) -> BTreeMap<String, Vec<(usize, usize)>> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(lang, rows)| {
            let rows = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let r = r.as_array().unwrap();
                    let at = |i: usize| usize::try_from(r[i].as_u64().unwrap()).unwrap();
                    (at(0), at(1))
                })
                .collect();
            (lang.clone(), rows)
        })
        .collect()
}

fn pairs_of(sets: &LanguageSets) -> BTreeMap<String, Vec<(usize, usize)>> {
    sets.sets
        .iter()
        .map(|(l, s)| {
            (
                l.clone(),
                s.rows().iter().map(|r| (r.layer, r.neuron)).collect(),
            )
        })
        .collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_string()).collect()
}

#[test]
fn tangs_activation_mask_reads_as_torch_saved_it_in_the_released_language_order() {
    let file = tang::read(&fixture("tang_7.pth"), None).unwrap();
    assert_eq!(file.n_layers, 3);
    let sets = file.sets;
    let want = pairs(&expected()["tang_7.pth"]["languages"]);
    assert_eq!(pairs_of(&sets), want);
    assert!(
        sets.sets
            .values()
            .any(|s| s.counts_per_layer(3).contains(&0)),
        "the fixture has an empty layer"
    );
}

#[test]
fn a_tang_file_of_another_language_count_needs_the_names_and_then_reads() {
    let err = tang::read(&fixture("tang_6.pth"), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tang_6.pth")
            && err.contains("6 language lists")
            && err.contains("--languages"),
        "{err}"
    );
    let langs = names(&["en", "zh", "fr", "es", "vi", "id"]);
    let file = tang::read(&fixture("tang_6.pth"), Some(&langs)).unwrap();
    assert_eq!(file.n_layers, 2);
    assert_eq!(
        pairs_of(&file.sets),
        pairs(&expected()["tang_6.pth"]["languages"])
    );
    let err = tang::read(&fixture("tang_6.pth"), Some(&langs[..5])).unwrap_err();
    assert!(err.to_string().contains("--languages names 5"), "{err}");
}

#[test]
fn tang_files_we_write_hold_torch_saves_records_and_read_back_the_same() {
    let sets = tang::read(&fixture("tang_7.pth"), None).unwrap().sets;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tang_7.pth");
    let order = ablation::official::language_order(&sets, None).unwrap();
    assert_eq!(order, names(&ablation::official::TANG_LANGUAGES));
    tang::write(&sets, &order, 3, &out).unwrap();
    assert_eq!(tang::read(&out, None).unwrap().sets, sets);

    // The same records as torch.save's (its random serialization id aside), with the
    // archive folder named after the file as torch names it.
    let records = |p: &Path| {
        let z = zip::ZipArchive::new(std::fs::File::open(p).unwrap()).unwrap();
        let mut n: Vec<String> = z
            .file_names()
            .filter(|n| !n.ends_with("serialization_id"))
            .map(str::to_string)
            .collect();
        n.sort();
        n
    };
    assert_eq!(records(&out), records(&fixture("tang_7.pth")));

    // Fewer layers than a neuron needs is refused, naming the neuron.
    let err = tang::write(&sets, &order, 2, &out).unwrap_err().to_string();
    assert!(err.contains("2 layers (--layers)"), "{err}");
}

#[test]
fn mondals_lang_neuron_data_reads_with_its_model_shape_and_language_list() {
    let file = mondal::read(&fixture("mondal.pkl")).unwrap();
    let e = &expected()["mondal.pkl"];
    assert_eq!(pairs_of(&file.sets), pairs(&e["languages"]));
    assert_eq!(file.languages, names(&["en", "fr", "hi"]));
    assert_eq!(
        file.info,
        MondalInfo {
            model_name: "meta-llama/Meta-Llama-3.1-8B".into(),
            method: "lape".into(),
            n_layers: 3,
            width: 16,
        }
    );
    // The empty language (torch.tensor([]), a float tensor) is there and empty.
    assert!(file.sets.sets["fr"].is_empty());
}

#[test]
fn mondal_files_we_write_read_back_the_same_sets_and_shape() {
    let file = mondal::read(&fixture("mondal.pkl")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lang_neuron_data.pkl");
    mondal::write(&file.sets, &file.languages, &file.info, &out).unwrap();
    assert_eq!(mondal::read(&out).unwrap(), file);

    // Sets from another format go in with the shape given; a neuron outside it is refused.
    let sets = tang::read(&fixture("tang_7.pth"), None).unwrap().sets;
    let order = ablation::official::language_order(&sets, None).unwrap();
    let info = MondalInfo {
        model_name: "x/y".into(),
        method: "act_prob_90p".into(),
        n_layers: 3,
        width: 40,
    };
    mondal::write(&sets, &order, &info, &out).unwrap();
    let back = mondal::read(&out).unwrap();
    assert_eq!(back.sets, sets);
    assert_eq!(back.languages, order);
    let narrow = MondalInfo { width: 30, ..info };
    let err = mondal::write(&sets, &order, &narrow, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("outside a model with 3 layers of 30 neurons"),
        "{err}"
    );
}

#[test]
fn kojimas_expertise_tables_give_their_ffn_units_scored_by_ap() {
    let paths = [fixture("kojima_de.csv"), fixture("kojima_fr.csv")];
    let file = kojima::read(&paths).unwrap();
    let e = &expected()["kojima"];
    let mut want_pairs = BTreeMap::new();
    for (lang, rows) in e["languages"].as_object().unwrap() {
        let mut got = Vec::new();
        for r in rows.as_array().unwrap() {
            let r = r.as_array().unwrap();
            let (l, n) = (r[0].as_u64().unwrap(), r[1].as_u64().unwrap());
            let row = file.sets.sets[lang]
                .rows()
                .iter()
                .find(|x| x.layer as u64 == l && x.neuron as u64 == n)
                .unwrap_or_else(|| panic!("{lang} lacks ({l}, {n})"));
            assert!((row.score.unwrap() - r[2].as_f64().unwrap()).abs() < 1e-12);
            got.push((l as usize, n as usize));
        }
        want_pairs.insert(lang.clone(), got);
    }
    assert_eq!(pairs_of(&file.sets), want_pairs);
    let skipped: BTreeMap<String, usize> = e["skipped"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
        .collect();
    assert_eq!(file.skipped, skipped);
}

#[test]
fn bad_official_files_are_errors_naming_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let not_zip = dir.path().join("mask.pth");
    std::fs::write(&not_zip, b"not a zip").unwrap();
    let err = tang::read(&not_zip, None).unwrap_err().to_string();
    assert!(
        err.contains("mask.pth") && err.contains("not a torch.save zip"),
        "{err}"
    );

    let cut = dir.path().join("cut.pkl");
    let bytes = std::fs::read(fixture("mondal.pkl")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = mondal::read(&cut).unwrap_err().to_string();
    assert!(
        err.contains("cut.pkl") && err.contains("truncated"),
        "{err}"
    );

    let sets = LanguageSets::new(BTreeMap::from([(
        "en".to_string(),
        NeuronSet::from_pairs([(0, 3)]),
    )]));
    let info = MondalInfo {
        model_name: "m".into(),
        method: "lape".into(),
        n_layers: 1,
        width: 4,
    };
    let ok = dir.path().join("ok.pkl");
    mondal::write(&sets, &names(&["en"]), &info, &ok).unwrap();
    // The same file claiming a narrower model: its neuron is outside L x int_d.
    let mut raw = std::fs::read(&ok).unwrap();
    let at = raw
        .windows(6)
        .position(|w| w == b"int_dK")
        .expect("int_d is written as a BININT1")
        + 6;
    raw[at] = 2;
    std::fs::write(&ok, &raw).unwrap();
    let err = mondal::read(&ok).unwrap_err().to_string();
    assert!(
        err.contains("ok.pkl")
            && err.contains("lang_to_neuron[\"en\"]")
            && err.contains("int_d = 2"),
        "{err}"
    );

    let csv = dir.path().join("de.csv");
    std::fs::write(
        &csv,
        "ap,layer,unit,concept\n0.5,model.layers.0.mlp.gate_proj:0,1,de\nhigh,model.layers.0.mlp.gate_proj:0,2,de\n",
    )
    .unwrap();
    let err = kojima::read(std::slice::from_ref(&csv))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("de.csv") && err.contains("line 3") && err.contains("\"high\""),
        "{err}"
    );
    std::fs::write(&csv, "ap,layer,concept\n").unwrap();
    let err = kojima::read(&[csv]).unwrap_err().to_string();
    assert!(err.contains("no column \"unit\""), "{err}");
}
