//! `grid export --slurm`: a grid as Slurm job arrays, one task per cell, submitted in the order
//! the cells need each other.
//!
//! Cells that read other cells' results ([`crate::harness::cell::CellKind::needs`]: the
//! fine-tuning cells of a study) go into a later stage than the cells they read: `submit.sh`
//! submits each stage as one array (`sbatch --parsable --array=…`), every stage after the first
//! with `--dependency=afterok:` on the one before, so a stage starts once every task of the
//! previous one succeeded. Each task runs `neuronlab grid run FILE --cell $SLURM_ARRAY_TASK_ID`;
//! finished cells are skipped and a cell runs under its run folder's lock, so resubmitting (or a
//! requeue) is safe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::harness::grid::{Cell, CellKind, Expand, Grid};
use crate::harness::results::write_atomic;

/// The job settings of the export.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// `--partition`, if the cluster wants one.
    pub partition: Option<String>,
    /// `--time` of a task.
    pub time: String,
    /// `--mem` of a task (e.g. `16G`), if given.
    pub mem: Option<String>,
    /// `--cpus-per-task`, also the task's thread count.
    pub cpus: usize,
    /// GPUs per task (`--gres=gpu:N`); with any, the cells run on `cuda:0`.
    pub gpus: usize,
    /// The `neuronlab` binary the tasks run; `None`: `neuronlab` on the task's `PATH`.
    pub binary: Option<PathBuf>,
    /// Seconds before the time limit at which Slurm sends the task SIGUSR1
    /// (`--signal=B:USR1@N`): the running cell checkpoints and stops (see
    /// [`crate::harness::signals`]).
    pub signal_before: Option<u32>,
    /// `--requeue`: a preempted task goes back in the queue, and so does one stopped by
    /// `signal_before` (`scontrol requeue`); either resumes its cell from the checkpoint.
    pub requeue: bool,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        Self {
            partition: None,
            time: "24:00:00".into(),
            mem: None,
            cpus: 4,
            gpus: 0,
            binary: None,
            signal_before: None,
            requeue: false,
        }
    }
}

/// The stages of a grid: stage 0 holds the cells that need no other cell, stage k + 1 the cells
/// that need one of stage k (and none later). Each stage's cell numbers, in order.
pub fn stages<C: CellKind>(cells: &[Cell<C>]) -> Result<Vec<Vec<usize>>> {
    let by_id: BTreeMap<&str, usize> = cells.iter().map(|c| (c.run_id.as_str(), c.index)).collect();
    let mut stage: BTreeMap<usize, usize> = BTreeMap::new();
    // Depth-first over the needs; a cycle cannot come from expansion, but is an error, not a hang.
    fn depth<C: CellKind>(
        i: usize,
        cells: &[Cell<C>],
        by_id: &BTreeMap<&str, usize>,
        stage: &mut BTreeMap<usize, usize>,
        path: &mut Vec<usize>,
    ) -> Result<usize> {
        if let Some(&s) = stage.get(&i) {
            return Ok(s);
        }
        if path.contains(&i) {
            bail!("cells {path:?} need each other");
        }
        path.push(i);
        let mut s = 0;
        for id in cells[i].config.needs() {
            if let Some(&j) = by_id.get(id) {
                s = s.max(depth(j, cells, by_id, stage, path)? + 1);
            }
        }
        path.pop();
        stage.insert(i, s);
        Ok(s)
    }
    for c in cells {
        depth(c.index, cells, &by_id, &mut stage, &mut Vec::new())?;
    }
    let n = stage.values().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); n];
    for (i, s) in stage {
        out[s].push(i);
    }
    Ok(out)
}

/// Cell numbers as a Slurm array spec: runs of consecutive numbers as ranges (`0-3,7,9-10`).
fn array_spec(cells: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < cells.len() {
        let mut j = i;
        while j + 1 < cells.len() && cells[j + 1] == cells[j] + 1 {
            j += 1;
        }
        parts.push(if i == j {
            cells[i].to_string()
        } else {
            format!("{}-{}", cells[i], cells[j])
        });
        i = j + 1;
    }
    parts.join(",")
}

/// Whether `name` is a file on `PATH`.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

/// Quote `s` for bash (single quotes).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `neuronlab grid export --slurm`: check every cell as `grid run` does, then write
/// `DIR/<grid>/slurm.sbatch` (the task of one cell) and `DIR/<grid>/submit.sh` (the arrays in
/// dependency order). Returns the path of `submit.sh`.
pub fn export_slurm<C: Expand>(
    grid: &Grid<C>,
    file: &Path,
    output: &Path,
    opts: &SlurmOptions,
) -> Result<PathBuf> {
    let problems = grid.validate();
    if !problems.is_empty() {
        bail!(
            "{}: {} problem(s); nothing was exported:\n  {}",
            file.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    if opts.cpus == 0 {
        bail!("--cpus-per-task: a task needs at least one CPU");
    }
    let binary = match &opts.binary {
        Some(b) => {
            let b = std::path::absolute(b).unwrap_or_else(|_| b.clone());
            if !b.is_file() {
                bail!("--binary {}: no such file", b.display());
            }
            b.display().to_string()
        }
        None => {
            if !on_path("neuronlab") {
                eprintln!(
                    "warning: `neuronlab` is not on this PATH; the tasks look for it on theirs \
                     (or pass --binary PATH)"
                );
            }
            "neuronlab".into()
        }
    };
    std::fs::create_dir_all(&grid.dir)
        .with_context(|| format!("cannot create {}", grid.dir.display()))?;
    let abs = |p: &Path| {
        p.canonicalize()
            .or_else(|_| std::path::absolute(p))
            .unwrap_or_else(|_| p.to_owned())
    };
    let name = &grid.file.experiment.name;
    let dir = abs(&grid.dir);
    let device = if opts.gpus > 0 { "cuda:0" } else { "cpu" };
    let mut sbatch = format!(
        "#!/bin/bash\n\
         # One cell of grid `{name}` as a Slurm array task (the task id is the cell number).\n\
         # Submit the whole grid with: bash {submit}\n\
         #SBATCH --job-name=neuronlab-{name}\n\
         #SBATCH --output={out}\n\
         #SBATCH --cpus-per-task={cpus}\n\
         #SBATCH --time={time}\n",
        submit = dir.join("submit.sh").display(),
        out = dir.join("slurm-%A_%a.out").display(),
        cpus = opts.cpus,
        time = opts.time,
    );
    if let Some(p) = &opts.partition {
        sbatch.push_str(&format!("#SBATCH --partition={p}\n"));
    }
    if let Some(m) = &opts.mem {
        sbatch.push_str(&format!("#SBATCH --mem={m}\n"));
    }
    if opts.gpus > 0 {
        sbatch.push_str(&format!("#SBATCH --gres=gpu:{}\n", opts.gpus));
    }
    if let Some(seconds) = opts.signal_before {
        sbatch.push_str(&format!("#SBATCH --signal=B:USR1@{seconds}\n"));
    }
    if opts.requeue {
        sbatch.push_str("#SBATCH --requeue\n");
    }
    sbatch.push_str(&format!(
        "set -euo pipefail\n\
         cd {cwd}\n\
         # The task's CPUs are its threads (Burn's ndarray backend through rayon, LibTorch).\n\
         threads=\"${{SLURM_CPUS_PER_TASK:-{cpus}}}\"\n\
         export RAYON_NUM_THREADS=\"$threads\" OMP_NUM_THREADS=\"$threads\" MKL_NUM_THREADS=\"$threads\"\n",
        cwd = quote(&abs(Path::new(".")).display().to_string()),
        cpus = opts.cpus,
    ));
    let run = format!(
        "{binary} grid run {file} --output {output} --cell \"$SLURM_ARRAY_TASK_ID\" --device {device}",
        binary = quote(&binary),
        file = quote(&abs(file).display().to_string()),
        output = quote(&abs(output).display().to_string()),
    );
    sbatch.push_str(&task_body(&run, opts));
    let stages = stages(&grid.cells)?;
    let script = dir.join("slurm.sbatch");
    let mut submit = format!(
        "#!/bin/bash\n\
         # Submit grid `{name}` ({n} cells) to Slurm: one job array per stage, each stage after\n\
         # the first waiting for the one before to succeed (cells that read other cells' results\n\
         # come after them). Extra arguments go to every sbatch (e.g. --qos=...).\n\
         # Prints the job ids, one per stage.\n\
         set -euo pipefail\n",
        n = grid.cells.len(),
    );
    for (k, cells) in stages.iter().enumerate() {
        let dependency = match k {
            0 => String::new(),
            _ => format!(" --dependency=afterok:\"${{job{}}}\"", k - 1),
        };
        submit.push_str(&format!(
            "job{k}=$(sbatch --parsable --array={array}{dependency} \"$@\" {script})\n\
             job{k}=\"${{job{k}%%;*}}\"\n\
             echo \"stage {stage}: cells {array} as job $job{k}\"\n",
            array = array_spec(cells),
            script = quote(&script.display().to_string()),
            stage = k + 1,
        ));
    }
    write_atomic(&script, sbatch.as_bytes())?;
    let path = dir.join("submit.sh");
    write_atomic(&path, submit.as_bytes())?;
    Ok(path)
}

/// The lines that run the cell. A preemption or the time limit sends SIGTERM to neuronlab
/// itself, which checkpoints its cell (a requeued task resumes it). With `signal_before`, Slurm
/// signals only the batch shell (`B:`), so the shell runs neuronlab in the background and passes
/// the SIGUSR1 on; with `requeue` too, a task stopped that way puts itself back in the queue.
fn task_body(run: &str, opts: &SlurmOptions) -> String {
    if opts.signal_before.is_none() {
        return format!("exec {run}\n");
    }
    let mut body = format!(
        "# Slurm sends this shell SIGUSR1 before the time limit: neuronlab checkpoints its cell\n\
         # and exits with 138 (128 + SIGUSR1).\n\
         {run} &\n\
         pid=$!\n\
         trap 'kill -USR1 \"$pid\" 2> /dev/null || true' USR1\n\
         # A trapped signal ends `wait` early: wait again until neuronlab has exited.\n\
         while kill -0 \"$pid\" 2> /dev/null; do wait \"$pid\" || true; done\n\
         status=0\n\
         wait \"$pid\" || status=$?\n"
    );
    if opts.requeue {
        body.push_str(
            "if [ \"$status\" -eq 138 ]; then\n\
             \x20   # Back in the queue: the next start resumes the cell from its checkpoint.\n\
             \x20   scontrol requeue \"${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}\"\n\
             fi\n",
        );
    }
    body.push_str("exit \"$status\"\n");
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_fold_consecutive_cells_into_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(array_spec(&[5]), "5");
        assert_eq!(array_spec(&[]), "");
    }

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
