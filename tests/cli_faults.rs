//! Faults and concurrency through the binary: two `grid run` on one output folder, a full disk
//! inside a cell, what a killed process leaves behind, and tables that always agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::cli_grid::experiment;
use crate::util::{csv_rows, neuronlab, text};

/// Four cells (two losses × two seeds) that checkpoint at every evaluation.
const GRID: &str = r#"[grid]
model = ["tiny"]
dataset = ["words"]
loss = ["baseline", "cmp2"]
seed = [1, 2]
train = { max_steps = [40], eval_every = [10], checkpoint_every_s = [0.0] }
"#;

/// The `result.json` of every run folder of `grid_dir`, by run id.
fn results(grid_dir: &Path) -> BTreeMap<String, Value> {
    std::fs::read_dir(grid_dir)
        .unwrap()
        .map(|e| e.unwrap().path().join("result.json"))
        .filter(|p| p.exists())
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (v["run_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

/// The metrics of every finished run: what must not depend on how the grid was run.
fn metrics(grid_dir: &Path) -> BTreeMap<String, String> {
    results(grid_dir)
        .into_iter()
        .map(|(id, v)| {
            assert_eq!(v["status"], "finished", "{id}: {v}");
            let numbers = format!("{} {} {}", v["metrics"], v["final_metrics"], v["ablation"]);
            (id, numbers)
        })
        .collect()
}

fn spawn(exp: &str, output: &str, root: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args(["grid", "run", exp, "--output", output])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn two_processes_on_one_grid_finish_every_cell_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let exp = exp.to_str().unwrap();
    let single = neuronlab(&["grid", "run", exp, "--output", "single"], root);
    assert!(single.status.success(), "{}", text(&single));

    let (a, b) = (spawn(exp, "shared", root), spawn(exp, "shared", root));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let logs = format!("{}\n---\n{}", text(&a), text(&b));
    assert!(a.status.success() && b.status.success(), "{logs}");
    // Each cell ran in one process: one start line per run id, four finished cells in all.
    let grid = root.join("shared/tiny");
    let runs = results(&grid);
    assert_eq!(runs.len(), 4, "{logs}");
    for id in runs.keys() {
        let starts = logs
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(id.as_str()) && !l.contains("skipped"))
            .count();
        assert_eq!(starts, 1, "run {id} started {starts} times:\n{logs}");
        let log = std::fs::read_to_string(grid.join(id).join("log.txt")).unwrap();
        assert_eq!(log.matches("finished in").count(), 1, "{log}");
    }
    assert_eq!(logs.matches(" finished in ").count(), 4, "{logs}");
    assert!(!logs.contains("FAILED"), "{logs}");
    assert_eq!(metrics(&grid), metrics(&root.join("single/tiny")));
    // No staging left, and the tables hold every cell.
    let leftovers: Vec<PathBuf> = walk(&root.join("shared"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(csv_rows(&grid.join("results.csv")).len(), 5);
}

/// Every path under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// The script of [`a_full_disk_fails_its_cells_and_the_grid_goes_on`]: cell 0 on a disk with
/// room, then the grid on a disk left with 160 KiB (less than a checkpoint of the tiny model),
/// then again with the room back. Each step's output goes to `ROOT/stepN.log`, its exit status
/// to `ROOT/stepN.rc`, and a copy of the results to `ROOT/stepN`.
const FULL_DISK: &str = r#"
set -u
run() {
    "$BIN" grid run "$EXP" --output "$DISK/runs" "$@" > "$ROOT/step$STEP.log" 2>&1
    echo $? > "$ROOT/step$STEP.rc"
    cp -r "$DISK/runs" "$ROOT/step$STEP"
    STEP=$((STEP + 1))
}
STEP=1
if [ "$MODE" = tmpfs ]; then
    mount -t tmpfs -o size=4m tmpfs "$DISK" || exit 97
    run --cell 0
    free=$(df --output=avail -B1 "$DISK" | tail -n 1)
    head -c $((free - 160 * 1024)) /dev/zero > "$DISK/filler" 2>/dev/null
    run
    rm "$DISK/filler"
    run
else
    # No mount allowed: a file size limit stands in for the full disk (writes past it fail
    # with EFBIG, and the signal that would kill the process is ignored).
    run --cell 0
    (trap '' XFSZ; ulimit -f 60; run)
    STEP=3
    run
fi
"#;

#[test]
fn a_full_disk_fails_its_cells_and_the_grid_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let disk = root.join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let script = |mode: &str| {
        // A user and mount namespace of its own lets the test mount a small tmpfs without
        // privileges; the mount goes away with the namespace.
        let mut cmd = if mode == "tmpfs" {
            let mut c = Command::new("unshare");
            c.args(["-r", "-m", "bash", "-c", FULL_DISK]);
            c
        } else {
            let mut c = Command::new("bash");
            c.args(["-c", FULL_DISK]);
            c
        };
        cmd.env("BIN", env!("CARGO_BIN_EXE_neuronlab"))
            .env("EXP", &exp)
            .env("DISK", &disk)
            .env("ROOT", root)
            .env("MODE", mode)
            .env("NO_COLOR", "1")
            .current_dir(root)
            .status()
    };
    // NEURONLAB_TEST_FULL_DISK=limit tries the stand-in on a machine that can mount.
    let wanted = std::env::var("NEURONLAB_TEST_FULL_DISK").unwrap_or_else(|_| "tmpfs".into());
    let mounted = wanted == "tmpfs" && script("tmpfs").is_ok_and(|s| s.success());
    let (mode, cause) = if mounted {
        ("tmpfs", "No space left on device")
    } else {
        eprintln!("no tmpfs: a file size limit stands in for the full disk");
        assert!(script("limit").unwrap().success());
        ("limit", "File too large")
    };
    let step = |n: usize| {
        let log = std::fs::read_to_string(root.join(format!("step{n}.log"))).unwrap();
        let rc = std::fs::read_to_string(root.join(format!("step{n}.rc"))).unwrap();
        (rc.trim().parse::<i32>().unwrap(), log)
    };

    let (rc, log) = step(1);
    assert_eq!(rc, 0, "{mode}: {log}");

    // The full disk fails cells 1 to 3, each recorded with the path and the cause; the grid
    // goes on to the end and exits 1, and cell 0's result is kept.
    let (rc, log) = step(2);
    assert_eq!(rc, 1, "{mode}: {log}");
    assert!(
        log.contains("1 skipped (finished before)") && log.contains("3 failed"),
        "{log}"
    );
    let runs = results(&root.join("step2/tiny"));
    let failed: Vec<&Value> = runs.values().filter(|v| v["status"] == "failed").collect();
    assert_eq!(failed.len(), 3, "{runs:?}");
    for v in &failed {
        let error = v["error"].as_str().unwrap();
        assert!(
            error.contains("cannot write the checkpoint file") && error.matches(cause).count() == 1,
            "{mode}: {error}"
        );
    }
    assert_eq!(
        runs.values().filter(|v| v["status"] == "finished").count(),
        1
    );
    let rows = csv_rows(&root.join("step2/tiny/results.csv"));
    assert_eq!(rows.len(), 5, "{rows:?}");

    // With the room back, the failed cells run again and every cell finishes.
    let (rc, log) = step(3);
    assert_eq!(rc, 0, "{mode}: {log}");
    assert!(log.contains("3 finished, 1 skipped"), "{log}");
    assert_eq!(metrics(&root.join("step3/tiny")).len(), 4);
}

#[test]
fn a_killed_writers_staging_is_removed_and_the_tables_are_rewritten_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = experiment(root, GRID);
    let exp = exp.to_str().unwrap();
    let out = neuronlab(
        &["grid", "run", exp, "--output", "runs", "--cell", "0"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/tiny");
    let run = grid.join(results(&grid).keys().next().unwrap());
    // What a process killed in the middle of writing leaves: staging of a dead process id (no
    // process has the largest ids), and tables that disagree with the run folders.
    let dead = u32::MAX - 7;
    let stale = [
        grid.join(format!("results.csv.{dead}.tmp")),
        run.join(format!("result.json.{dead}.tmp")),
    ];
    for f in &stale {
        std::fs::write(f, "torn").unwrap();
    }
    let staging = run.join(format!("checkpoint.{dead}.tmp"));
    std::fs::create_dir_all(staging.join("model")).unwrap();
    std::fs::remove_file(grid.join("results.parquet")).unwrap();
    std::fs::write(grid.join("results.csv"), "run_id\n").unwrap();

    // `--cell 0` again: the cell is skipped, yet the start cleans up and rewrites both tables.
    let out = neuronlab(
        &["grid", "run", exp, "--output", "runs", "--cell", "0"],
        root,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("finished before; skipped"),
        "{}",
        text(&out)
    );
    for f in stale.iter().chain([&staging]) {
        assert!(!f.exists(), "{} is left", f.display());
    }
    assert_eq!(csv_rows(&grid.join("results.csv")).len(), 2);
    assert!(grid.join("results.parquet").exists());
}

/// Turns a run folder's checkpoint into what a kill leaves (given the staging folder's name).
type MakeState = fn(&Path, &str);

/// Run `exp` into `out/` and `kill -9` it once a run folder of `grid` has a checkpoint at step
/// `at` or later.
fn kill_at_checkpoint(exp: &str, root: &Path, out: &str, grid: &str, at: u64) {
    let mut child = spawn(exp, out, root);
    let started = std::time::Instant::now();
    loop {
        let step = std::fs::read_dir(root.join(out).join(grid))
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let state = e.unwrap().path().join("checkpoint/state.json");
                let v: Value = serde_json::from_str(&std::fs::read_to_string(state).ok()?).ok()?;
                v["step"].as_u64()
            })
            .max();
        if step.is_some_and(|s| s >= at) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run finished before a checkpoint at step {at}: make it longer"
        );
        assert!(
            started.elapsed().as_secs() < 120,
            "no checkpoint in 2 minutes"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Copy the folder `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The one run folder of the grid `tiny` under `root/out`.
fn only_run(root: &Path, out: &str) -> PathBuf {
    std::fs::read_dir(root.join(out).join("tiny"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap()
}

/// Each line of the run's `metrics.jsonl` without its seconds.
fn evaluations(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds");
            v.to_string()
        })
        .collect()
}

#[test]
fn a_kill_at_any_point_of_the_checkpoint_swap_resumes_to_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // At a learning rate of 1e-12 every evaluation scores as the first, so the best model never
    // changes after it and each later checkpoint carries it over from the previous checkpoint.
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"cmp2\"]\n\
                train = { max_steps = [160], eval_every = [20], checkpoint_every_s = [0.0], \
                learning_rate = [1e-12] }\n";
    let exp = experiment(root, grid);
    let exp = exp.to_str().unwrap();
    let out = crate::util::neuronlab(&["grid", "run", exp, "--output", "straight"], root);
    assert!(out.status.success(), "{}", text(&out));
    let straight = evaluations(&only_run(root, "straight"));
    assert_eq!(straight.len(), 8);

    // A checkpoint past the first evaluation that improved: kill the run there.
    kill_at_checkpoint(exp, root, "killed", "tiny", 40);
    let run = only_run(root, "killed");
    // The kill may land inside a swap: take the newest complete checkpoint as the base.
    let checkpoint = run.join("checkpoint");
    if !checkpoint.join("state.json").exists() {
        std::fs::remove_dir_all(&checkpoint).ok();
        std::fs::rename(run.join("checkpoint.old"), &checkpoint).unwrap();
    }
    for entry in std::fs::read_dir(&run).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("checkpoint.") {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }

    // What a kill leaves at each point of the next swap (the staging folder of a dead process).
    let staging = format!("checkpoint.{}.tmp", u32::MAX - 9);
    let states: [(&str, MakeState); 3] = [
        ("before", |run, staging| {
            // Staging half written; the current checkpoint untouched.
            std::fs::create_dir_all(run.join(staging)).unwrap();
            std::fs::copy(
                run.join("checkpoint/trained.safetensors"),
                run.join(staging).join("trained.safetensors"),
            )
            .unwrap();
        }),
        ("between", |run, staging| {
            // The current checkpoint renamed away, the staging folder complete.
            copy_dir(&run.join("checkpoint"), &run.join(staging));
            std::fs::rename(run.join("checkpoint"), run.join("checkpoint.old")).unwrap();
        }),
        ("after", |run, _| {
            // The new checkpoint in place, the previous one not yet removed.
            copy_dir(&run.join("checkpoint"), &run.join("checkpoint.old"));
        }),
    ];
    for (name, make) in states {
        copy_dir(&root.join("killed"), &root.join(name));
        let run = only_run(root, name);
        make(&run, &staging);
        let out = crate::util::neuronlab(&["grid", "run", exp, "--output", name], root);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(
            text(&out).contains("resumed from the checkpoint at step"),
            "{name}: {}",
            text(&out)
        );
        assert_eq!(evaluations(&run), straight, "{name}");
        let left: Vec<String> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("checkpoint"))
            .collect();
        assert!(left.is_empty(), "{name}: a finished run keeps {left:?}");
    }
}

/// What must not depend on a kill, per run folder of `grid`: the numbers of `result.json`,
/// `metrics.jsonl` without its seconds, and the text of every other output file.
fn outputs(grid: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(grid).unwrap() {
        let run = entry.unwrap().path();
        if !run.is_dir() || !run.join("result.json").exists() {
            continue;
        }
        let id = run.file_name().unwrap().to_string_lossy().to_string();
        let result: Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap())
                .unwrap();
        assert_eq!(result["status"], "finished", "{id}: {result}");
        let mut s = ["metrics", "final_metrics", "best_step", "steps", "ablation"]
            .map(|k| format!("{k}: {}\n", result[k]))
            .concat();
        if run.join("metrics.jsonl").exists() {
            s += &evaluations(&run).join("\n");
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&run)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                let text = [".csv", ".trec", ".json"].iter().any(|e| name.ends_with(e));
                text && !["result.json", "progress.json"].contains(&name.as_str())
            })
            .collect();
        files.sort();
        for f in files {
            s += &format!(
                "\n-- {}\n{}",
                f.display(),
                std::fs::read_to_string(&f).unwrap()
            );
        }
        out.insert(id, s.replace(&grid.display().to_string(), "GRID"));
    }
    out
}

/// Run `exp` straight into `straight/`, then into `killed/` with a `kill -9` once a run has a
/// checkpoint at step `at` or later, and again: the resumed grid's outputs are the straight
/// one's.
fn a_killed_cell_resumes_to_identical_outputs(root: &Path, exp: &Path, grid: &str, at: u64) {
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "straight"], root);
    assert!(out.status.success(), "{}", text(&out));
    let straight = outputs(&root.join("straight").join(grid));
    assert!(!straight.is_empty());

    kill_at_checkpoint(exp, root, "killed", grid, at);
    let out = neuronlab(&["grid", "run", exp, "--output", "killed"], root);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("resumed from the checkpoint at step"),
        "{}",
        text(&out)
    );
    let resumed = outputs(&root.join("killed").join(grid));
    assert_eq!(
        resumed.keys().collect::<Vec<_>>(),
        straight.keys().collect::<Vec<_>>()
    );
    for (id, want) in &straight {
        assert_eq!(&resumed[id], want, "run {id}");
    }
}

#[test]
fn a_lora_cell_killed_mid_training_resumes_to_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // A checkpoint after every step (LoRA cells evaluate only after training).
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\nneurons = [\"aa\"]\n\
                train = { max_steps = [120], checkpoint_every_s = [0.0] }\n";
    let exp = crate::cli_adapt::experiment(root, crate::cli_adapt::LORA, grid);
    a_killed_cell_resumes_to_identical_outputs(root, &exp, "adapt", 20);
}

#[test]
fn a_prf_cell_killed_mid_training_resumes_to_identical_results() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    crate::cli_prf::corpus(root);
    let grid = "\n[grid]\nmodel = [\"minilm\"]\ncorpus = [\"wiki\"]\nprf = [\"lol\"]\n\
                train = { max_steps = [6], eval_every = [2], checkpoint_every_s = [0.0], \
                learning_rate = [0.0001] }\n";
    let exp = crate::cli_prf::experiment(root, grid);
    a_killed_cell_resumes_to_identical_outputs(root, &exp, "prf", 2);
}

/// Send `signal` (`TERM`, `INT`, `USR1`) to a `grid run` of `exp` into `out` once a run of
/// `grid` reports step `at` or later in its `progress.json` or checkpoint; the process's exit
/// status and output.
fn signal_at_step(
    exp: &str,
    root: &Path,
    (out, grid): (&str, &str),
    at: u64,
    signal: &str,
) -> std::process::Output {
    let child = spawn(exp, out, root);
    crate::util::wait_until_step(&root.join(out).join(grid), at);
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    child.wait_with_output().unwrap()
}

/// Run `exp` straight, then stop a run with `signal` mid-training: the cell is checkpointed at
/// the step it was on and recorded `interrupted`, the process exits with 128 + the signal's
/// number, and the next run resumes it to the straight run's outputs.
fn a_signalled_cell_resumes_to_identical_outputs(
    root: &Path,
    exp: &Path,
    grid: &str,
    (at, total): (u64, u64),
    (signal, status): (&str, i32),
) {
    let exp = exp.to_str().unwrap();
    let out = neuronlab(&["grid", "run", exp, "--output", "straight"], root);
    assert!(out.status.success(), "{}", text(&out));
    let straight = outputs(&root.join("straight").join(grid));

    let out = signal_at_step(exp, root, ("signalled", grid), at, signal);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(status), "{said}");
    assert!(
        said.contains("resumes where it stopped") && said.contains("INTERRUPTED"),
        "{said}"
    );
    let grid_dir = root.join("signalled").join(grid);
    let (id, result) = results(&grid_dir).into_iter().next().expect("a result");
    assert_eq!(result["status"], "interrupted", "{result}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(grid_dir.join(&id).join("checkpoint/state.json")).unwrap(),
    )
    .unwrap();
    let step = state["step"].as_u64().unwrap();
    assert!((at..total).contains(&step), "checkpoint at step {step}");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("after step {step}: its checkpoint holds it")),
        "{error}"
    );
    let list = neuronlab(&["grid", "list", exp, "--output", "signalled"], root);
    assert!(text(&list).contains("1 interrupted"), "{}", text(&list));

    let out = neuronlab(&["grid", "run", exp, "--output", "signalled"], root);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("resumed from the checkpoint at step {step}")),
        "{}",
        text(&out)
    );
    assert_eq!(outputs(&grid_dir), straight);
}

#[test]
fn a_sigterm_checkpoints_an_encoder_cell_between_evaluations_and_the_next_run_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // No checkpoint on the clock: the signal's is the only one.
    let grid = "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"cmp2\"]\n\
                train = { max_steps = [400], eval_every = [50], checkpoint_every_s = [3600.0] }\n";
    let exp = experiment(root, grid);
    a_signalled_cell_resumes_to_identical_outputs(root, &exp, "tiny", (60, 400), ("TERM", 143));
}

#[test]
fn a_sigusr1_checkpoints_a_lora_cell_and_the_next_run_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // LoRA steps on the tiny model are fast (~150/s): a checkpoint after every step slows them
    // enough to be caught mid-run.
    let grid = "[grid]\nmodel = [\"tiny\"]\ntask = [\"topics\"]\nneurons = [\"aa\"]\n\
                train = { max_steps = [300], checkpoint_every_s = [0.0] }\n";
    let exp = crate::cli_adapt::experiment(root, crate::cli_adapt::LORA, grid);
    a_signalled_cell_resumes_to_identical_outputs(root, &exp, "adapt", (20, 300), ("USR1", 138));
}
