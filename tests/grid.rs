//! Experiment files: parsing, grid expansion order, overrides, and errors that name file, line
//! and key.

use std::path::Path;

use runner::harness::experiment::ExperimentFile;
use runner::registry::{Cell, expand};

fn parse(text: &str) -> anyhow::Result<ExperimentFile> {
    ExperimentFile::parse(
        Path::new("/exp/test.toml"),
        text.to_owned(),
        Path::new("/cache"),
    )
}

fn cells(text: &str) -> Vec<Cell> {
    expand(&parse(text).unwrap()).unwrap()
}

fn error(text: &str) -> String {
    match parse(text) {
        Err(e) => format!("{e:#}"),
        Ok(file) => format!("{:#}", expand(&file).unwrap_err()),
    }
}

const BASE: &str = r#"
name = "demo"

[train]
epochs = 2
batch_size = 16

[models.mini]
path = "${ARTEFACTS}/all-MiniLM-L6-v2"
kind = "encoder"
train = { learning_rate = 5e-5 }

[models.tiny]
path = "models/tiny"
kind = "encoder"

[datasets.pol]
path = "data/pol"
format = "jsonl"
task = "classification"
columns = { text = "sentence", label = "label" }
train = { epochs = 1, learning_rate = 1e-5 }

[datasets.sts]
path = "data/sts"
format = "glue"
glue = "STS-B"
task = "regression"

[losses.cmp2]
kind = "comparative"
n_drop = 2
target = "first"
"#;

#[test]
fn expansion_order_is_pairs_then_loss_then_settings_then_seed() {
    let text = format!(
        "{BASE}\n[grid]\nmodel = [\"tiny\", \"mini\"]\ndataset = [\"sts\", \"pol\"]\n\
         loss = [\"baseline\", \"cmp2\"]\nseed = [3, 1]\n\
         train = {{ warmup_ratio = [0.0, 0.1], batch_size = [8, 32] }}\n"
    );
    let cells = cells(&text);
    assert_eq!(cells.len(), 2 * 2 * 2 * 2 * 2 * 2);
    let key = |c: &Cell| {
        let p = &c.params;
        format!(
            "{} {} {} bs={} wr={} s={}",
            p["model"], p["dataset"], p["loss"], p["batch_size"], p["warmup_ratio"], p["seed"]
        )
    };
    assert_eq!(key(&cells[0]), "tiny sts baseline bs=8 wr=0.0 s=3");
    assert_eq!(key(&cells[1]), "tiny sts baseline bs=8 wr=0.0 s=1");
    assert_eq!(key(&cells[2]), "tiny sts baseline bs=8 wr=0.1 s=3");
    assert_eq!(key(&cells[4]), "tiny sts baseline bs=32 wr=0.0 s=3");
    assert_eq!(key(&cells[8]), "tiny sts cmp2 bs=8 wr=0.0 s=3");
    assert_eq!(key(&cells[16]), "tiny pol baseline bs=8 wr=0.0 s=3");
    assert_eq!(key(&cells[32]), "mini sts baseline bs=8 wr=0.0 s=3");
    assert!(cells.iter().enumerate().all(|(i, c)| c.index == i));
    // The same file expands to the same run ids; every cell has its own.
    let again = expand(&parse(&text).unwrap()).unwrap();
    assert_eq!(cells, again);
    let mut ids: Vec<&str> = cells.iter().map(|c| c.run_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), cells.len());
}

#[test]
fn settings_resolve_defaults_file_dataset_model_then_axis() {
    let text = format!(
        "{BASE}\n[grid]\npairs = [{{ model = \"mini\", dataset = \"pol\" }}, {{ model = \"tiny\", dataset = \"sts\" }}]\n"
    );
    let cells = cells(&text);
    assert_eq!(cells.len(), 2);
    let (mini_pol, tiny_sts) = (
        cells[0].config.as_train().unwrap(),
        cells[1].config.as_train().unwrap(),
    );
    // Dataset overrides the file, the model overrides the dataset.
    assert_eq!(mini_pol.train.epochs, 1.0);
    assert_eq!(mini_pol.train.learning_rate, 5e-5);
    assert_eq!(mini_pol.train.batch_size, 16);
    assert_eq!(tiny_sts.train.epochs, 2.0);
    assert_eq!(tiny_sts.train.learning_rate, 2e-5); // built-in default
    assert_eq!(mini_pol.loss_name, "baseline");
    assert_eq!(mini_pol.seed, 1);
    // Paths: ${ARTEFACTS} and relative to the file; the run id does not depend on them.
    assert_eq!(mini_pol.model_dir, Path::new("/cache/all-MiniLM-L6-v2"));
    assert_eq!(tiny_sts.dataset_dir, Path::new("/exp/data/sts"));
    let moved = ExperimentFile::parse(
        Path::new("/elsewhere/test.toml"),
        text.clone(),
        Path::new("/other-cache"),
    )
    .unwrap();
    assert_eq!(expand(&moved).unwrap()[0].run_id, cells[0].run_id);

    // An axis beats the model's setting.
    let text = format!(
        "{BASE}\n[grid]\nmodel = [\"mini\"]\ndataset = [\"pol\"]\ntrain = {{ learning_rate = [3e-5] }}\n"
    );
    assert_eq!(
        self::cells(&text)[0]
            .config
            .as_train()
            .unwrap()
            .train
            .learning_rate,
        3e-5
    );
}

#[test]
fn bad_files_name_file_line_and_key() {
    let grid = "\n[grid]\nmodel = [\"mini\"]\ndataset = [\"pol\"]\n";
    // An unknown key in a model table.
    let text = BASE.replace(
        "kind = \"encoder\"\ntrain",
        "kind = \"encoder\"\ncolour = 3\ntrain",
    );
    let err = error(&format!("{text}{grid}"));
    assert!(
        err.contains("/exp/test.toml, line 11") && err.contains("colour"),
        "{err}"
    );
    // A key no kind reads: at the top, among the grid axes, in a model table a kind reads
    // more of (the LoRA cells read `lora`), inside a kind's own section.
    let err = error(&format!("colour = 3\n{BASE}{grid}"));
    assert!(
        err.contains("/exp/test.toml, line 1: colour: unknown key `colour`"),
        "{err}"
    );
    let err = error(&format!("{BASE}{grid}studdy = [\"lape\"]\n"));
    assert!(
        err.contains("line 38: grid.studdy: unknown key `studdy` in `grid`"),
        "{err}"
    );
    let text = BASE.replace(
        "kind = \"encoder\"\ntrain",
        "kind = \"encoder\"\nlora = { rnk = 4 }\ntrain",
    );
    let err = error(&format!("{text}{grid}"));
    assert!(
        err.contains("/exp/test.toml, line 11") && err.contains("unknown field `rnk`"),
        "{err}"
    );
    // An axis of another kind.
    let err = error(&format!("{BASE}{grid}neurons = [\"en\"]\n"));
    assert!(
        err.contains("grid.neurons")
            && err.contains(
                "a grid of encoder fine-tuning (`dataset` or `pairs`) has no `neurons` axis"
            ),
        "{err}"
    );
    // Malformed TOML.
    let err = error(&format!("{BASE}{grid}\nepochs = = 3\n"));
    assert!(err.contains("/exp/test.toml, line"), "{err}");
    // A bad enum value names the expected ones.
    let err = error(&format!(
        "{}{grid}",
        BASE.replace("task = \"regression\"", "task = \"qa-ish\"")
    ));
    assert!(
        err.contains("line 28") && err.contains("classification"),
        "{err}"
    );
    // Unknown names in the grid.
    let err = error(&format!(
        "{BASE}\n[grid]\nmodel = [\"mini\", \"bert\"]\ndataset = [\"pol\"]\n"
    ));
    assert!(
        err.contains("line 36")
            && err.contains("grid.model")
            && err.contains("unknown model `bert`"),
        "{err}"
    );
    let err = error(&format!("{BASE}{grid}loss = [\"cmp3\"]\n"));
    assert!(
        err.contains("unknown loss `cmp3`") && err.contains("`cmp2`"),
        "{err}"
    );
    // An axis over something that is not a setting, or a value of the wrong type.
    let err = error(&format!("{BASE}{grid}train = {{ lr = [1e-5] }}\n"));
    assert!(
        err.contains("grid.train.lr") && err.contains("unknown field `lr`"),
        "{err}"
    );
    let err = error(&format!(
        "{BASE}{grid}train = {{ batch_size = [\"big\"] }}\n"
    ));
    assert!(err.contains("grid.train.batch_size"), "{err}");
    // Out-of-range settings and inconsistent losses.
    let err = error(&format!("{BASE}{grid}train = {{ warmup_ratio = [1.5] }}\n"));
    assert!(err.contains("warmup_ratio must be in [0, 1)"), "{err}");
    let err = error(&format!(
        "{BASE}{grid}train = {{ checkpoint_every_s = [-1.0] }}\n"
    ));
    assert!(
        err.contains("checkpoint_every_s must be a number of seconds >= 0"),
        "{err}"
    );
    let err = error(&format!(
        "{BASE}{grid}train = {{ max_steps = [10], warmup_steps = [20] }}\n"
    ));
    assert!(
        err.contains("warmup_steps must not exceed max_steps"),
        "{err}"
    );
    // No seed at all would run no cell.
    let err = error(&format!("{BASE}{grid}seed = []\n"));
    assert!(
        err.contains("line 38: grid.seed: no seed, so no cell would run"),
        "{err}"
    );
    let err = error(&format!(
        "{}{grid}",
        BASE.replace("n_drop = 2", "n_drop = 2\nmode = \"weighted\"")
    ));
    assert!(
        err.contains("losses.cmp2") && err.contains("needs `primary` and `weight`"),
        "{err}"
    );
    let err = error(&format!(
        "{}{grid}",
        BASE.replace("n_drop = 2", "n_drop = 2\ncr_schedule = true")
    ));
    assert!(
        err.contains("losses.cmp2") && err.contains("cr_schedule belongs to mode = \"weighted\""),
        "{err}"
    );
    let err = error(&format!(
        "{}{grid}",
        BASE.replace("n_drop = 2", "n_drop = 0")
    ));
    assert!(err.contains("n_drop > 0 or n_crop > 0"), "{err}");
    // Repeated axis values would be the same run twice.
    let err = error(&format!("{BASE}{grid}seed = [1, 1]\n"));
    assert!(err.contains("same run"), "{err}");
    // Pairs and model × dataset together.
    let err = error(&format!(
        "{BASE}{grid}pairs = [{{ model = \"mini\", dataset = \"pol\" }}]\n"
    ));
    assert!(err.contains("either `pairs`"), "{err}");
}

#[test]
fn pairs_name_their_own_losses_and_losses_carry_settings() {
    let text = format!(
        "{BASE}\n[losses.cmp-fast]\nkind = \"comparative\"\nn_drop = 1\n\
         train = {{ learning_rate = 9e-5, epochs = 4 }}\n\n[grid]\n\
         pairs = [{{ model = \"mini\", dataset = \"pol\", loss = [\"baseline\", \"cmp-fast\"] }}, \
         {{ model = \"tiny\", dataset = \"pol\" }}]\nseed = [1]\n"
    );
    let summary: Vec<(String, String, f64, f64)> = cells(&text)
        .iter()
        .map(|c| {
            (
                c.params["model"].clone(),
                c.params["loss"].clone(),
                c.config.as_train().unwrap().train.learning_rate,
                c.config.as_train().unwrap().train.epochs,
            )
        })
        .collect();
    // The first pair runs its own two losses, the second the default (`baseline`). The loss's
    // settings win over the model's (mini: 5e-5) and the dataset's (pol: epochs 1, 1e-5).
    assert_eq!(
        summary,
        vec![
            ("mini".into(), "baseline".into(), 5e-5, 1.0),
            ("mini".into(), "cmp-fast".into(), 9e-5, 4.0),
            ("tiny".into(), "baseline".into(), 1e-5, 1.0),
        ]
    );
    let err = format!(
        "{:#}",
        runner::registry::expand(
            &parse(&text.replace("\"cmp-fast\"] }", "\"cmp-slow\"] }")).unwrap()
        )
        .unwrap_err()
    );
    assert!(
        err.contains("grid.pairs.0.loss") && err.contains("cmp-slow"),
        "{err}"
    );
}

/// Every GLUE cell of both paper grids against the official commands (zycdev/CmpLoss
/// `scripts/GLUE.md`, bert-base-cased): `(dataset, loss) → (learning rate, batch, weight decay,
/// max steps (0: by epochs), epochs, warmup steps, warmup ratio)`. An unset `--weight_decay` is
/// HF's default 0; `--max_steps` and `--warmup_steps` win over epochs and the warmup ratio.
#[test]
fn the_paper_glue_cells_train_as_the_official_commands() {
    type Row = (
        &'static str,
        &'static str,
        f64,
        usize,
        f64,
        usize,
        f64,
        usize,
        f64,
    );
    #[rustfmt::skip]
    let official: [Row; 16] = [
        ("cola", "baseline", 1e-5, 16, 0.01, 5336, 10.0, 320, 0.06),
        ("cola", "cola-cmp", 1e-5, 16, 0.01, 5336, 10.0, 320, 0.06),
        ("sst2", "baseline", 1e-5, 32, 0.01, 20935, 10.0, 1256, 0.06),
        ("sst2", "sst2-cmp", 2e-5, 32, 0.0, 0, 3.0, 0, 0.0),
        ("mrpc", "baseline", 1e-5, 16, 0.01, 2296, 10.0, 137, 0.06),
        ("mrpc", "mrpc-cmp", 2e-5, 16, 0.01, 2296, 10.0, 137, 0.06),
        ("stsb", "baseline", 1e-5, 16, 0.01, 3598, 10.0, 214, 0.06),
        ("stsb", "stsb-cmp", 1e-5, 16, 0.01, 3598, 10.0, 214, 0.06),
        ("qqp", "baseline", 1e-5, 32, 0.01, 113272, 10.0, 28318, 0.25),
        ("qqp", "qqp-cmp", 2e-5, 32, 0.0, 0, 3.0, 0, 0.0),
        ("mnli", "baseline", 2e-5, 32, 0.0, 0, 3.0, 0, 0.0),
        ("mnli", "mnli-cmp", 3e-5, 32, 0.0, 0, 3.0, 0, 0.0),
        ("qnli", "baseline", 2e-5, 32, 0.0, 0, 3.0, 0, 0.1),
        ("qnli", "qnli-cmp", 3e-5, 32, 0.0, 0, 3.0, 0, 0.1),
        ("rte", "baseline", 1e-5, 8, 0.01, 2036, 7.0, 122, 0.06),
        ("rte", "rte-cmp", 1e-5, 8, 0.01, 2036, 7.0, 122, 0.06),
    ];
    for file in [
        "experiments/cmploss-paper.toml",
        "experiments/cmploss-glue.toml",
    ] {
        let path = crate::util::root().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let cells =
            expand(&ExperimentFile::parse(&path, text, Path::new("/cache")).unwrap()).unwrap();
        for &(dataset, loss, lr, batch, decay, max_steps, epochs, warmup, ratio) in &official {
            let matching: Vec<_> = cells
                .iter()
                .filter(|c| {
                    c.params.get("dataset").is_some_and(|d| d == dataset)
                        && c.params.get("loss").is_some_and(|l| l == loss)
                })
                .collect();
            assert!(!matching.is_empty(), "{file}: no cell {dataset} / {loss}");
            for cell in matching {
                let t = &cell.config.as_train().unwrap().train;
                let what = format!("{file}: {dataset} / {loss}");
                assert_eq!(t.learning_rate, lr, "{what}: learning rate");
                assert_eq!(t.batch_size * t.grad_accum_steps, batch, "{what}: batch");
                assert_eq!(t.weight_decay, decay, "{what}: weight decay");
                assert_eq!(t.max_steps, max_steps, "{what}: max steps");
                if max_steps == 0 {
                    assert_eq!(t.epochs, epochs, "{what}: epochs");
                }
                assert_eq!(t.warmup_steps, warmup, "{what}: warmup steps");
                if warmup == 0 {
                    assert_eq!(t.warmup_ratio, ratio, "{what}: warmup ratio");
                }
            }
        }
    }
}

#[test]
fn the_lsn_paper_classifier_head_is_mondals_linear_with_a_bias() {
    let path = crate::util::root().join("experiments/lsn-paper.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cells = expand(&ExperimentFile::parse(&path, text, Path::new("/cache")).unwrap()).unwrap();
    let xnli: Vec<_> = cells
        .iter()
        .filter_map(|c| c.config.as_lora())
        .filter(|c| c.task_name == "xnli")
        .collect();
    assert!(!xnli.is_empty());
    for cell in xnli {
        assert_eq!(
            cell.lora.head,
            runner::lora::spec::ClassifierHead::Linear,
            "{}",
            cell.model_name
        );
    }
}

#[test]
fn the_paper_squad_cells_train_as_the_official_commands() {
    use runner::encoder::spec::{CmpMode, LossSpec, Target};
    // (model, lr, per-step batch, accumulation, epochs, max_seq_len, comparative loss, dummy):
    // scripts/SQuAD.md, one block per model (the large ones on 3 GPUs, here accumulated).
    let official = [
        (
            "bert-tiny",
            2e-4,
            12,
            1,
            3.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "bert-small",
            1e-4,
            12,
            1,
            2.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "electra-small",
            1e-4,
            12,
            1,
            2.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "bert-medium",
            5e-5,
            12,
            1,
            2.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "bert-base",
            3e-5,
            12,
            1,
            2.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "electra-base",
            3e-5,
            12,
            1,
            2.0,
            512,
            "squad-cmp",
            Target::Ultra,
        ),
        (
            "bert-large",
            3e-5,
            8,
            3,
            2.0,
            384,
            "squad-cmp-large",
            Target::First,
        ),
        (
            "electra-large",
            1e-5,
            4,
            3,
            2.0,
            512,
            "squad-cmp-large",
            Target::First,
        ),
    ];
    let path = crate::util::root().join("experiments/cmploss-paper.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cells = expand(&ExperimentFile::parse(&path, text, Path::new("/cache")).unwrap()).unwrap();
    let squad: Vec<_> = cells
        .iter()
        .filter(|c| c.params.get("dataset").is_some_and(|d| d == "squad"))
        .collect();
    assert_eq!(
        squad.len(),
        official.len() * 2 * 3,
        "two losses × three seeds per model"
    );
    for (model, lr, batch, accum, epochs, seq, cmp, target) in official {
        for loss in ["baseline", cmp] {
            let matching: Vec<_> = squad
                .iter()
                .filter(|c| c.params["model"] == model && c.params["loss"] == loss)
                .collect();
            assert_eq!(matching.len(), 3, "{model} {loss}: one cell per seed");
            for cell in matching {
                let c = cell.config.as_train().unwrap();
                let t = &c.train;
                let what = format!("{model} {loss}");
                assert_eq!(t.learning_rate, lr, "{what}");
                assert_eq!((t.batch_size, t.grad_accum_steps), (batch, accum), "{what}");
                assert_eq!((t.epochs, t.max_steps), (epochs, 0), "{what}");
                assert_eq!(t.max_seq_len, seq, "{what}");
                assert_eq!(t.weight_decay, 0.0, "{what}");
                assert_eq!((t.warmup_ratio, t.warmup_steps), (0.1, 0), "{what}");
                assert_eq!(t.eval_every, 1000, "{what}");
                let qa = c.dataset.qa.clone().unwrap();
                assert_eq!(
                    (qa.doc_stride, qa.max_answer_length, qa.n_best),
                    (128, 30, 20),
                    "{what}"
                );
                match &c.loss {
                    // run_squad.py's baseline is AutoModelForQuestionAnswering: ordinary dropout.
                    LossSpec::Baseline { dropout } => assert_eq!(*dropout, None, "{what}"),
                    LossSpec::Comparative {
                        n_drop,
                        n_crop,
                        target: t,
                        mode,
                        temperature,
                        listwise,
                        ..
                    } => {
                        assert_eq!((*n_drop, *n_crop), (2, 0), "{what}");
                        assert_eq!(*t, target, "{what}");
                        assert_eq!(*mode, CmpMode::Comparative, "{what}: --just_cmp");
                        assert_eq!((*temperature, *listwise), (1.0, false), "{what}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_paper_hotpot_cells_train_as_the_official_commands() {
    // (loss, per-step batch, accumulation, n_drop, n_crop): scripts/HotpotQA.md, Main Experiments.
    let official = [
        ("baseline", 6, 1, None),
        ("hotpot-drop", 3, 2, Some((1, 0))),
        ("hotpot-crop", 3, 2, Some((0, 1))),
        ("hotpot-drop-crop", 3, 2, Some((1, 1))),
    ];
    let path = crate::util::root().join("experiments/cmploss-paper.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cells = expand(&ExperimentFile::parse(&path, text, Path::new("/cache")).unwrap()).unwrap();
    for (loss, batch, accum, views) in official {
        let matching: Vec<_> = cells
            .iter()
            .filter(|c| c.params.get("dataset").is_some_and(|d| d == "hotpot"))
            .filter(|c| c.params["loss"] == loss)
            .collect();
        assert_eq!(matching.len(), 3, "{loss}: one cell per seed");
        for cell in matching {
            let c = cell.config.as_train().unwrap();
            let t = &c.train;
            assert_eq!(t.learning_rate, 3e-5, "{loss}");
            assert_eq!((t.batch_size, t.grad_accum_steps), (batch, accum), "{loss}");
            assert_eq!(t.weight_decay, 0.0, "{loss}");
            assert_eq!((t.epochs, t.max_steps), (3.0, 0), "{loss}");
            assert_eq!((t.warmup_ratio, t.warmup_steps), (0.1, 0), "{loss}");
            assert_eq!(t.eval_every, 1000, "{loss}");
            // `--max_seq_length 2048` on allenai/longformer-base-4096.
            assert_eq!(t.max_seq_len, 2048, "{loss}");
            assert!(
                c.model_dir.ends_with("longformer-base-4096"),
                "{loss}: {}",
                c.model_dir.display()
            );
            let qa = c.dataset.qa.clone().unwrap();
            assert_eq!((qa.max_answer_length, qa.n_best), (64, 5), "{loss}");
            assert_eq!(
                (qa.max_q_len, qa.max_p_len),
                (Some(160), Some(256)),
                "{loss}"
            );
            assert_eq!(
                qa.layout,
                Some(runner::encoder::spec::HotpotLayoutKind::Official),
                "{loss}: the CmpLoss reader's <s> ĠYES ĠNO [Q] … layout"
            );
            match (&c.loss, views) {
                // CmpQA calls self.eval() whenever n_drop = 0: the official baseline trained
                // without dropout.
                (runner::encoder::spec::LossSpec::Baseline { dropout }, None) => assert_eq!(
                    *dropout,
                    Some(runner::encoder::spec::StepDropout::Off),
                    "{loss}"
                ),
                (
                    runner::encoder::spec::LossSpec::Comparative {
                        n_drop,
                        n_crop,
                        target,
                        mode,
                        dropout,
                        ..
                    },
                    Some((d, k)),
                ) => {
                    assert_eq!((*n_drop, *n_crop), (d, k), "{loss}");
                    let off = (d == 0).then_some(runner::encoder::spec::StepDropout::Off);
                    assert_eq!(*dropout, off, "{loss}");
                    assert_eq!(*target, runner::encoder::spec::Target::Ultra, "{loss}");
                    assert_eq!(*mode, runner::encoder::spec::CmpMode::Comparative, "{loss}");
                }
                (other, _) => panic!("{loss}: {other:?}"),
            }
        }
    }
}

#[test]
fn the_paper_prf_cells_train_as_the_official_dense_command() {
    // zycdev/LoL README, "For dense retrieval (ANCE)", Training: NC in {0, 1}, lambda_cr 1,
    // --num_train_epochs 12/(1+NC), --per_device_train_batch_size 36/(1+NC) on 3 reformulating
    // GPUs, lr 1e-5, warmup 0.1, --max_n_prf 5 --shuffle_psgs, 512 / 128 / 128 tokens,
    // --norm_power nan, the top-20 training matrix, eval_steps 1000.
    let path = crate::util::root().join("experiments/cmploss-paper.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let cells = expand(&ExperimentFile::parse(&path, text, Path::new("/cache")).unwrap()).unwrap();
    let prf: Vec<_> = cells.iter().filter_map(|c| c.config.as_prf()).collect();
    assert_eq!(prf.len(), 6, "plain and lol × 3 seeds");
    for c in prf {
        let nc = c.prf.n_compare;
        assert_eq!(
            (c.prf_name.as_str(), nc),
            if nc == 0 { ("plain", 0) } else { ("lol", 1) }
        );
        let t = &c.train;
        assert_eq!(t.batch_size, 108 / (1 + nc), "{}", c.prf_name);
        assert_eq!(t.epochs, 12.0 / (1 + nc) as f64, "{}", c.prf_name);
        assert_eq!(
            (t.learning_rate, t.warmup_ratio, t.weight_decay),
            (1e-5, 0.1, 0.0)
        );
        assert_eq!(
            (t.max_seq_len, t.eval_every, t.max_grad_norm),
            (512, 1000, 1.0)
        );
        // The shared [train]'s ablation rates are the encoder cells'.
        assert!(t.ablation_rates.is_empty(), "{:?}", t.ablation_rates);
        let p = &c.prf;
        assert_eq!((p.lambda_pr, p.lambda_qr), (1.0, 0.0));
        assert_eq!(p.lambda_cr, if nc == 0 { 0.0 } else { 1.0 });
        assert_eq!((p.max_n_prf, p.shuffle_psgs), (5, true));
        assert_eq!(
            (p.max_q_len, p.max_p_len, p.train_candidates),
            (128, 128, 20)
        );
        assert_eq!(p.norm_power, None);
        assert!(p.projection && p.pooling == runner::prf::spec::QueryPooling::First);
        assert!(c.model_dir.ends_with("ance-msmarco-passage"));
        let sets: Vec<_> = c
            .files
            .eval_sets()
            .iter()
            .map(|(n, s)| (n.to_string(), s.relevance_level))
            .collect();
        assert_eq!(
            sets,
            [("dev", 1), ("dl-hard", 2), ("dl19", 2), ("dl20", 2)].map(|(n, l)| (n.to_string(), l))
        );
    }
}

#[test]
fn a_setting_that_lora_or_prf_cells_do_not_read_is_an_error_naming_its_line() {
    let lora = r#"name = "x"

[train]
epochs = 1
ablation_rates = [0.1]

[models.tiny]
path = "models/tiny"
kind = "decoder"

[tasks.topics]
format = "jsonl"
text = "body"
label = "topic"
classes = ["x", "y"]
train = { aa = "aa.jsonl" }
eval = { bb = "bb.jsonl" }

[grid]
model = ["tiny"]
task = ["topics"]
"#;
    let err = error(lora);
    assert!(
        err.contains("/exp/test.toml, line 5: train.ablation_rates: LoRA cells do not read"),
        "{err}"
    );
    // In a task's settings and as an axis, too; without it the grid expands.
    let moved = lora.replace("ablation_rates = [0.1]\n", "");
    let err = error(&moved.replace(
        "eval = { bb = \"bb.jsonl\" }",
        "eval = { bb = \"bb.jsonl\" }\nsettings = { eval_every = 5 }",
    ));
    assert!(
        err.contains("line 17: tasks.topics.settings.eval_every: LoRA cells do not read"),
        "{err}"
    );
    let err = error(&format!("{moved}train = {{ group_by_length = [true] }}\n"));
    assert!(
        err.contains("line 21: grid.train.group_by_length: LoRA cells do not read"),
        "{err}"
    );
    assert_eq!(cells(&moved).len(), 1);

    let prf = r#"name = "x"

[models.mini]
path = "models/mini"
kind = "encoder"
train = { view_budget_tokens = 512 }

[corpora.wiki]
path = "."
collection = "collection.tsv"
matrix = "matrix"
train = { queries = "q.tsv", qrels = "qrels.txt", run = "run.trec" }
dev = { queries = "q.tsv", qrels = "qrels.txt", run = "run.trec" }

[grid]
model = ["mini"]
corpus = ["wiki"]
"#;
    let err = error(prf);
    assert!(
        err.contains("line 6: models.mini.train.view_budget_tokens: PRF cells do not read"),
        "{err}"
    );
    let prf = prf.replace("train = { view_budget_tokens = 512 }\n", "");
    let err = error(&prf.replace(
        "name = \"x\"\n",
        "name = \"x\"\n[train]\nsave_model = true\n",
    ));
    assert!(
        err.contains("line 3: train.save_model: PRF cells do not read"),
        "{err}"
    );
    assert_eq!(cells(&prf).len(), 1);
}
