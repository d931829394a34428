//! `grid export --slurm` through the binary: the job script and its options, the arrays in
//! dependency order (a study before the cells that use its neurons), a grid that does not
//! validate; and, on a real one-node Slurm cluster (`scripts/slurm-test.sh`), the exported grid
//! run to the end.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{files_starting_with, neuronlab, text};

/// A study and the fine-tuning cells that use its sets: 1 study + 4 fine-tuning cells.
fn study_grid(root: &Path) -> std::path::PathBuf {
    let study = crate::cli_adapt::p90_study(root);
    let grid = "[grid]\nmodel = [\"tiny\"]\nstudy = [\"p90\"]\ntask = [\"topics\"]\n\
                neurons = [\"target\"]\nseed = [3, 4]\n";
    crate::cli_adapt::experiment(root, &study, grid)
}

fn export(root: &Path, exp: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "grid",
        "export",
        "--slurm",
        exp.to_str().unwrap(),
        "--output",
        "runs",
    ];
    args.extend_from_slice(extra);
    neuronlab(&args, root)
}

/// The `--array=` spec of each `sbatch` line of `submit.sh`, and whether it has a dependency.
fn stages(submit: &str) -> Vec<(String, bool)> {
    submit
        .lines()
        .filter(|l| l.contains("sbatch --parsable"))
        .map(|l| {
            let array = l.split("--array=").nth(1).unwrap();
            let array = array.split_whitespace().next().unwrap().to_owned();
            (array, l.contains("--dependency=afterok:"))
        })
        .collect()
}

/// Cell numbers of an array spec (`0-3,7`).
fn cells(spec: &str) -> Vec<usize> {
    spec.split(',')
        .flat_map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![part.parse().unwrap()],
        })
        .collect()
}

fn bash_syntax_ok(script: &Path) {
    let check = Command::new("bash").arg("-n").arg(script).output().unwrap();
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn slurm_export_submits_a_study_before_the_cells_that_use_it() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = study_grid(root);
    let out = export(
        root,
        &exp,
        &[
            "--partition",
            "gpu-a100",
            "--time",
            "02:00:00",
            "--mem",
            "32G",
            "--cpus-per-task",
            "8",
            "--gpus",
            "1",
            "--binary",
            env!("CARGO_BIN_EXE_neuronlab"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/adapt");
    let job = std::fs::read_to_string(grid.join("slurm.sbatch")).unwrap();
    for line in [
        "#SBATCH --partition=gpu-a100",
        "#SBATCH --time=02:00:00",
        "#SBATCH --mem=32G",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --gres=gpu:1",
        "--cell \"$SLURM_ARRAY_TASK_ID\" --device cuda:0",
        "RAYON_NUM_THREADS=\"$threads\"",
        "threads=\"${SLURM_CPUS_PER_TASK:-8}\"",
        env!("CARGO_BIN_EXE_neuronlab"),
    ] {
        assert!(job.contains(line), "no `{line}` in\n{job}");
    }
    let submit = std::fs::read_to_string(grid.join("submit.sh")).unwrap();
    let stage_list = stages(&submit);
    assert_eq!(stage_list.len(), 2, "{submit}");
    assert!(!stage_list[0].1 && stage_list[1].1, "{submit}");
    assert!(
        submit.contains("--dependency=afterok:\"${job0}\""),
        "{submit}"
    );
    // The first stage is the study, the second its four fine-tuning cells.
    let (first, second) = (cells(&stage_list[0].0), cells(&stage_list[1].0));
    assert_eq!(first.len(), 1, "{submit}");
    assert_eq!(second.len(), 4, "{submit}");
    let list = neuronlab(
        &["grid", "list", exp.to_str().unwrap(), "--output", "runs"],
        root,
    );
    let study_line = text(&list)
        .lines()
        .find(|l| l.contains("study=p90") && !l.contains("task="))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("{}", text(&list)));
    let study_cell: usize = study_line
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first, vec![study_cell], "{}", text(&list));
    bash_syntax_ok(&grid.join("slurm.sbatch"));
    bash_syntax_ok(&grid.join("submit.sh"));

    // Without GPUs the cells run on the CPU; a grid without needs is one stage.
    let plain = crate::cli_grid::experiment(
        &root.join("plain"),
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"baseline\", \"cmp2\"]\nseed = [1, 2]\n",
    );
    let out = export(root, &plain, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let job = std::fs::read_to_string(root.join("runs/tiny/slurm.sbatch")).unwrap();
    assert!(
        job.contains("--device cpu") && !job.contains("--gres"),
        "{job}"
    );
    assert!(job.contains("#SBATCH --cpus-per-task=4"), "{job}");
    let submit = std::fs::read_to_string(root.join("runs/tiny/submit.sh")).unwrap();
    assert_eq!(stages(&submit), vec![("0-3".to_owned(), false)], "{submit}");
}

#[test]
fn slurm_export_of_a_grid_that_does_not_validate_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = study_grid(root);
    std::fs::remove_file(root.join("bb.jsonl")).unwrap();
    let out = export(root, &exp, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("nothing was exported") && msg.contains("bb.jsonl"),
        "{msg}"
    );
    assert!(!root.join("runs/adapt/submit.sh").exists());
    let out = export(root, &study_grid(root), &["--binary", "no/such/neuronlab"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("--binary") && text(&out).contains("no such file"),
        "{}",
        text(&out)
    );
}

/// Wait (at most `secs`) until Slurm lists none of `jobs`.
fn wait_for_jobs(jobs: &[String], secs: u64) {
    let started = std::time::Instant::now();
    loop {
        let q = Command::new("squeue")
            .args(["-h", "-o", "%i %T", "-j", &jobs.join(",")])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&q.stdout).trim().to_owned();
        if q.status.success() && listed.is_empty() {
            return;
        }
        assert!(
            started.elapsed().as_secs() < secs,
            "the jobs did not end in {secs} s: {listed}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs a Slurm cluster: run by scripts/slurm-test.sh"]
fn a_real_slurm_runs_the_exported_grid() {
    assert!(
        std::env::var_os("NEURONLAB_SLURM").is_some(),
        "run through scripts/slurm-test.sh, which starts the cluster"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = study_grid(root);
    // The tasks find the binary on their PATH, as on a cluster where it is installed.
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_neuronlab")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new(env!("CARGO_BIN_EXE_neuronlab"))
        .args([
            "grid",
            "export",
            "--slurm",
            exp.to_str().unwrap(),
            "--output",
            "runs",
        ])
        .args(["--cpus-per-task", "1", "--time", "00:20:00"])
        .current_dir(root)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/adapt");
    let submit = Command::new("bash")
        .arg(grid.join("submit.sh"))
        .current_dir(root)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", text(&submit));
    let jobs: Vec<String> = String::from_utf8_lossy(&submit.stdout)
        .lines()
        .filter_map(|l| l.rsplit("as job ").next().filter(|_| l.contains("as job ")))
        .map(str::to_owned)
        .collect();
    assert_eq!(jobs.len(), 2, "{}", text(&submit));
    eprintln!("submitted jobs {jobs:?}");
    wait_for_jobs(&jobs, 600);

    let outs = files_starting_with(&grid, "slurm-");
    let logs: String = outs
        .iter()
        .map(|p| format!("{}:\n{}", p.display(), std::fs::read_to_string(p).unwrap()))
        .collect();
    assert_eq!(outs.len(), 5, "one output file per task:\n{logs}");
    let mut finished = 0;
    for entry in std::fs::read_dir(&grid).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(result) = std::fs::read_to_string(dir.join("result.json")) else {
            continue;
        };
        let v: Value = serde_json::from_str(&result).unwrap();
        assert_eq!(v["status"], "finished", "{v}\n{logs}");
        let id = v["run_id"].as_str().unwrap();
        let log = std::fs::read_to_string(dir.join("log.txt")).unwrap();
        assert_eq!(
            log.lines().filter(|l| l.starts_with(id)).count(),
            1,
            "{log}"
        );
        assert_eq!(log.matches("finished in").count(), 1, "{log}");
        finished += 1;
    }
    assert_eq!(finished, 5, "{logs}");
    // Each task ran one cell, and a task that ran a fine-tuning cell found its study finished.
    assert_eq!(logs.matches(" finished in ").count(), 5, "{logs}");
    let report = neuronlab(&["report", grid.to_str().unwrap()], root);
    assert!(report.status.success(), "{}", text(&report));
    let md = std::fs::read_to_string(grid.join("report.md")).unwrap();
    assert!(md.contains("topics"), "{md}");
    let csv = std::fs::read_to_string(grid.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6, "{csv}");
}

#[test]
fn an_exported_task_passes_the_early_sigusr1_on_and_requeues_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let exp = crate::cli_grid::experiment(
        root,
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"cmp2\"]\n\
         train = { max_steps = [400], eval_every = [50], checkpoint_every_s = [3600.0] }\n",
    );
    let bin = env!("CARGO_BIN_EXE_neuronlab");
    let out = export(
        root,
        &exp,
        &["--signal-before", "300", "--requeue", "--binary", bin],
    );
    assert!(out.status.success(), "{}", text(&out));
    let script = root.join("runs/tiny/slurm.sbatch");
    let job = std::fs::read_to_string(&script).unwrap();
    for line in ["#SBATCH --signal=B:USR1@300", "#SBATCH --requeue"] {
        assert!(job.contains(line), "no `{line}` in\n{job}");
    }
    bash_syntax_ok(&script);

    // The task as Slurm starts it (array job 77, task 0), with an `scontrol` that notes its
    // arguments; Slurm's early signal goes to the batch shell only.
    let fake = root.join("fake-bin");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(
        fake.join("scontrol"),
        "#!/bin/sh\necho \"$@\" >> \"$SCONTROL_LOG\"\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(fake.join("scontrol"))
        .status()
        .unwrap();
    let task = || {
        Command::new("bash")
            .arg(&script)
            .env("SLURM_ARRAY_JOB_ID", "77")
            .env("SLURM_ARRAY_TASK_ID", "0")
            .env("SCONTROL_LOG", root.join("scontrol.log"))
            .env(
                "PATH",
                format!("{}:{}", fake.display(), std::env::var("PATH").unwrap()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = task();
    crate::util::wait_until_step(&root.join("runs/tiny"), 60);
    let sent = Command::new("kill")
        .args(["-USR1", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(138), "{said}");
    assert!(said.contains("interrupted by SIGUSR1 after step"), "{said}");
    assert_eq!(
        std::fs::read_to_string(root.join("scontrol.log")).unwrap(),
        "requeue 77_0\n"
    );

    // The requeued start resumes the cell and finishes it.
    let out = task().wait_with_output().unwrap();
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("resumed from the checkpoint at step"),
        "{said}"
    );
    let rows = crate::util::csv_rows(&root.join("runs/tiny/results.csv"));
    assert_eq!(rows[1][1], "finished", "{rows:?}");
}

#[test]
#[ignore = "needs a Slurm cluster: run by scripts/slurm-test.sh"]
fn a_real_slurm_requeue_mid_cell_resumes_it_to_the_uninterrupted_numbers() {
    assert!(
        std::env::var_os("NEURONLAB_SLURM").is_some(),
        "run through scripts/slurm-test.sh, which starts the cluster"
    );
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // One encoder cell long enough to be caught mid-training, checkpointed only by the signal.
    let exp = crate::cli_grid::experiment(
        root,
        "[grid]\nmodel = [\"tiny\"]\ndataset = [\"words\"]\nloss = [\"cmp2\"]\n\
         train = { max_steps = [400], eval_every = [50], checkpoint_every_s = [3600.0] }\n",
    );
    let bin = env!("CARGO_BIN_EXE_neuronlab");
    let out = export(
        root,
        &exp,
        &["--requeue", "--binary", bin, "--cpus-per-task", "1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let grid = root.join("runs/tiny");
    let submit = Command::new("bash")
        .arg(grid.join("submit.sh"))
        .current_dir(root)
        .output()
        .unwrap();
    assert!(submit.status.success(), "{}", text(&submit));
    let job = String::from_utf8_lossy(&submit.stdout)
        .rsplit("as job ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    crate::util::wait_until_step(&grid, 60);
    // What a preemption does: Slurm sends the task SIGTERM and queues it again.
    let requeue = Command::new("scontrol")
        .args(["requeue", &format!("{job}_0")])
        .output()
        .unwrap();
    assert!(requeue.status.success(), "{}", text(&requeue));
    wait_for_jobs(&[job], 600);

    let run = std::fs::read_dir(&grid)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("result.json").exists())
        .expect("a run folder with a result");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    let result: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("result.json")).unwrap()).unwrap();
    assert_eq!(result["status"], "finished", "{result}\n{log}");
    assert!(log.contains("interrupted by SIGTERM after step"), "{log}");
    assert!(log.contains("resumed from the checkpoint at step"), "{log}");
    assert_eq!(log.matches("finished in").count(), 1, "{log}");
    // The same numbers as the cell run straight through.
    let straight = neuronlab(
        &["grid", "run", exp.to_str().unwrap(), "--output", "straight"],
        root,
    );
    assert!(straight.status.success(), "{}", text(&straight));
    let straight: Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("straight/tiny")
                .join(run.file_name().unwrap())
                .join("result.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for key in ["metrics", "final_metrics", "best_step", "steps"] {
        assert_eq!(result[key], straight[key], "{key}");
    }
}
