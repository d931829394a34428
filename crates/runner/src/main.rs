//! `neuronlab`: neuron-level research on pretrained language models.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use runner::backend::{DeviceArg, run_on};
use runner::commands;
use runner::harness::signals;

#[derive(Parser, Debug)]
#[command(
    name = "neuronlab",
    version,
    about = "Neuron-level research on pretrained language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Sentence embeddings: mean pooling over non-padding tokens, printed as a JSON array.
    Embed {
        #[command(flatten)]
        job: commands::embed::EmbedJob,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Perplexity of a text file under a decoder, printed as JSON `{"n_tokens", "mean_nll",
    /// "perplexity"}` (natural log; every token but the first predicted once).
    Perplexity {
        #[command(flatten)]
        job: commands::decoder::PerplexityJob,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Greedy generation with a decoder; prints the generated text.
    Generate {
        #[command(flatten)]
        job: commands::decoder::GenerateJob,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Architecture, parameter count, tensor names and shapes of a checkpoint.
    Inspect {
        /// A checkpoint directory or weights file.
        path: PathBuf,
    },
    /// Passage collections as dense vectors: encode one into a sharded matrix, search it.
    Corpus {
        #[command(subcommand)]
        what: CorpusCommand,
    },
    /// Language-neuron sets (JSON or Parquet, as studies write them).
    Neurons {
        #[command(subcommand)]
        what: NeuronsCommand,
    },
    /// Benchmarks (numbers for BENCHMARKS.md, printed as JSON lines).
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Experiment grids from TOML: run (resumably), list, export to Slurm.
    Grid {
        #[command(subcommand)]
        what: GridCommand,
    },
    /// A grid's results as Markdown (mean ± std over seeds, comparative − baseline with a paired
    /// test) and SVG plots (learning curves, metric versus ablation rate), written into DIR.
    Report {
        /// A grid's results folder (DIR/<grid name>).
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum CorpusCommand {
    /// Encode `pid<TAB>passage` lines into a matrix folder of safetensors shards, resumable
    /// after a kill (a shard at a time); prints a JSON summary.
    Embed {
        #[command(flatten)]
        job: commands::corpus::CorpusEmbedJob,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Exact inner-product search of encoded queries over a matrix, written as a TREC run
    /// (scored with --qrels); prints a JSON summary.
    Search {
        #[command(flatten)]
        job: commands::corpus::CorpusSearchJob,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// A matrix of LoL's (a torch.save'd dense [passages, dim] tensor, f16 or f32, with its
    /// pids file) into a matrix folder, a shard at a time, resumable; prints a JSON summary.
    Import(commands::corpus::CorpusImportJob),
}

#[derive(Subcommand, Debug)]
enum NeuronsCommand {
    /// How two sets overlap: per language the neurons of A, of B, of both and the Jaccard
    /// index, then the same per layer (Markdown).
    Compare {
        /// The first file.
        a: PathBuf,
        /// The second file.
        b: PathBuf,
    },
    /// Convert between our files (JSON / Parquet) and the official codes' neuron-set files:
    /// Tang et al.'s activation_mask (.pth), Mondal et al.'s lang_neuron_data.pkl (.pkl) and
    /// Kojima et al.'s expertise tables (.csv, read only).
    Convert {
        #[command(flatten)]
        job: commands::neurons::convert::ConvertJob,
    },
}

#[derive(Subcommand, Debug)]
enum GridCommand {
    /// Run every cell not finished before (exit status 1 when a cell failed; 128 + the signal's
    /// number when SIGTERM, SIGINT or SIGUSR1 stopped it, after checkpointing the cell).
    Run {
        /// The experiment file.
        file: PathBuf,
        /// Results root: results go to DIR/<grid name>/.
        #[arg(long, default_value = "runs")]
        output: PathBuf,
        /// Validate every cell and print the plan; run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Run only cell N (0-based, in `grid list` order), e.g. as a cluster array task.
        #[arg(long)]
        cell: Option<usize>,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// The cells, their run ids and status (pending, finished, failed).
    List {
        /// The experiment file.
        file: PathBuf,
        /// Results root.
        #[arg(long, default_value = "runs")]
        output: PathBuf,
    },
    /// Write a cluster script for the grid.
    /// Checks every cell as `grid run --dry-run` does, then writes the job script and
    /// DIR/<grid>/submit.sh, which submits the cells as job arrays in dependency order (a study
    /// before the cells that use its neurons). Run it with `bash DIR/<grid>/submit.sh`.
    Export {
        /// Write DIR/<grid>/slurm.sbatch (one cell per array task) and DIR/<grid>/submit.sh.
        #[arg(long, required = true)]
        slurm: bool,
        /// The experiment file.
        file: PathBuf,
        /// Results root.
        #[arg(long, default_value = "runs")]
        output: PathBuf,
        /// The partition (`#SBATCH --partition`); the cluster's default when not given.
        #[arg(long)]
        partition: Option<String>,
        /// Wall-clock limit of a task (`#SBATCH --time`).
        #[arg(long, default_value = "24:00:00")]
        time: String,
        /// Memory of a task (`#SBATCH --mem`, e.g. 32G); the cluster's default when not given.
        #[arg(long)]
        mem: Option<String>,
        /// CPUs of a task (`#SBATCH --cpus-per-task`), also its thread count.
        #[arg(long = "cpus-per-task", default_value_t = 4)]
        cpus_per_task: usize,
        /// GPUs of a task (`#SBATCH --gres=gpu:N`); with any, the cells run on cuda:0.
        #[arg(long, default_value_t = 0)]
        gpus: usize,
        /// The neuronlab binary the tasks run (default: `neuronlab` on the tasks' PATH).
        #[arg(long)]
        binary: Option<PathBuf>,
        /// Have Slurm send SIGUSR1 this many seconds before a task's time limit
        /// (`#SBATCH --signal=B:USR1@SECONDS`): the cell checkpoints and stops cleanly.
        #[arg(long, value_name = "SECONDS")]
        signal_before: Option<u32>,
        /// `#SBATCH --requeue`: a preempted task, or one stopped by --signal-before, goes back in
        /// the queue and resumes its cell from the checkpoint.
        #[arg(long)]
        requeue: bool,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Tokens/s of an encoder forward pass (eval mode) on a random batch without padding.
    Forward {
        #[command(flatten)]
        job: commands::bench::BenchForward,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Tokens/s of activation-statistics collection on a decoder (positive counts, sums and
    /// sums of squares of every gate pre-activation, counted inside the forward; no LM head).
    Collect {
        #[command(flatten)]
        job: commands::bench::BenchCollect,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Milliseconds per LoRA training step (forward, backward, clipping, AdamW) of a decoder
    /// classifier with a frozen base, on a random batch without padding.
    LoraStep {
        #[command(flatten)]
        job: commands::bench::BenchLoraStep,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Milliseconds per training step (forward of every view, backward, clipping, AdamW) of a
    /// sequence classifier on a random batch without padding, baseline or comparative.
    Step {
        #[command(flatten)]
        job: commands::bench::BenchStep,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Milliseconds per dense PRF training step (every revision's forward, LoL's objective,
    /// backward, clipping, AdamW) on random tokens and a random passage matrix.
    PrfStep {
        #[command(flatten)]
        job: commands::bench_prf::BenchPrfStep,
        #[command(flatten)]
        on: DeviceArg,
    },
    /// Queries/s of exact inner-product search over a random passage matrix (top k).
    Search {
        #[command(flatten)]
        job: commands::bench_prf::BenchSearch,
        #[command(flatten)]
        on: DeviceArg,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Print a command's result as one line of JSON.
fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Embed { job, on } => print_json(&run_on(on.device, job)?)?,
        Command::Perplexity { job, on } => print_json(&run_on(on.device, job)?)?,
        Command::Generate { job, on } => println!("{}", run_on(on.device, job)?),
        Command::Inspect { path } => print!("{}", commands::inspect::inspect(&path)?),
        Command::Bench { what } => match what {
            Bench::Forward { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
            Bench::Collect { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
            Bench::Step { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
            Bench::LoraStep { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
            Bench::PrfStep { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
            Bench::Search { mut job, on } => {
                job.device_label = on.device.to_string();
                print_json(&run_on(on.device, job)?)?
            }
        },
        Command::Corpus { what } => match what {
            CorpusCommand::Embed { job, on } => print_json(&run_on(on.device, job)?)?,
            CorpusCommand::Search { job, on } => print_json(&run_on(on.device, job)?)?,
            CorpusCommand::Import(job) => print_json(&job.run()?)?,
        },
        Command::Grid { what } => return grid(what),
        Command::Report { dir } => print!("{}", commands::report::report(&dir)?),
        Command::Neurons {
            what: NeuronsCommand::Compare { a, b },
        } => print!("{}", commands::neurons::compare(&a, &b)?),
        Command::Neurons {
            what: NeuronsCommand::Convert { job },
        } => print!("{}", commands::neurons::convert::convert(&job)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn grid(what: GridCommand) -> Result<ExitCode> {
    use commands::grid::{export_slurm, grid_run, open};
    match what {
        GridCommand::Run {
            file,
            output,
            dry_run: true,
            cell,
            ..
        } => {
            let grid = open(&file, &output)?;
            let problems = grid.validate();
            print!("{}", grid.plan());
            if let Some(n) = cell {
                anyhow::ensure!(
                    n < grid.cells.len(),
                    "--cell {n}: the grid has {} cells",
                    grid.cells.len()
                );
                println!("(--cell {n}: only cell {n} would run)");
            }
            if problems.is_empty() {
                println!("every cell is valid");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!(
                    "{}: {} problem(s):\n  {}",
                    file.display(),
                    problems.len(),
                    problems.join("\n  ")
                )
            }
        }
        GridCommand::Run {
            file,
            output,
            cell,
            on,
            ..
        } => {
            signals::install()?;
            let job = grid_run(file, output, cell, on.device.to_string());
            let summary = run_on(on.device, job)?;
            let elsewhere = match summary.elsewhere {
                0 => String::new(),
                n => format!(", {n} running in another process"),
            };
            eprintln!(
                "grid: {} finished, {} skipped (finished before){elsewhere}, {} failed",
                summary.finished,
                summary.skipped,
                summary.failed.len()
            );
            for (index, error) in &summary.failed {
                eprintln!("  cell {index} failed: {error}");
            }
            for problem in &summary.problems {
                eprintln!("  the results tables: {problem}");
            }
            if let Some(signal) = summary.interrupted {
                eprintln!(
                    "grid: stopped by {}; `grid run` again resumes where it stopped",
                    signals::name(signal)
                );
                return Ok(ExitCode::from(signals::Interrupted::exit_status(signal)));
            }
            Ok(
                if summary.failed.is_empty() && summary.problems.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                },
            )
        }
        GridCommand::List { file, output } => {
            print!("{}", open(&file, &output)?.plan());
            Ok(ExitCode::SUCCESS)
        }
        GridCommand::Export {
            file,
            output,
            partition,
            time,
            mem,
            cpus_per_task,
            gpus,
            binary,
            signal_before,
            requeue,
            ..
        } => {
            let opts = runner::harness::slurm::SlurmOptions {
                partition,
                time,
                mem,
                cpus: cpus_per_task,
                gpus,
                binary,
                signal_before,
                requeue,
            };
            let submit = export_slurm(&file, &output, &opts)?;
            println!("{}", submit.display());
            eprintln!("submit the grid with: bash {}", submit.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
