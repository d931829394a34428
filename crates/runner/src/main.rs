//! `neuronlab`: neuron-level research on pretrained language models.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use runner::backend::{DeviceSpec, run_on};
use runner::commands;

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
        /// Checkpoint directory (config.json, model.safetensors or pytorch_model.bin, tokenizer).
        #[arg(long)]
        model: PathBuf,
        /// L2-normalise each embedding.
        #[arg(long)]
        normalize: bool,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
        /// The texts to embed.
        #[arg(required = true)]
        texts: Vec<String>,
    },
    /// Perplexity of a text file under a decoder, printed as JSON `{"n_tokens", "mean_nll",
    /// "perplexity"}` (natural log; every token but the first predicted once).
    Perplexity {
        /// A `.gguf` file, or an HF checkpoint directory (config.json, weights, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// UTF-8 text, scored as one sequence.
        #[arg(long)]
        text_file: PathBuf,
        /// Window length for long texts (default: the model's context length); consecutive
        /// windows overlap by one token.
        #[arg(long)]
        window: Option<usize>,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Greedy generation with a decoder; prints the generated text.
    Generate {
        /// A `.gguf` file, or an HF checkpoint directory (config.json, weights, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// The prompt, used as given (no chat template unless --chat).
        #[arg(long)]
        prompt: String,
        /// Most tokens to generate (generation also stops at an end-of-sequence token).
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Render the prompt as one user turn with the checkpoint's chat template.
        #[arg(long)]
        chat: bool,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Architecture, parameter count, tensor names and shapes of a checkpoint.
    Inspect {
        /// A checkpoint directory or weights file.
        path: PathBuf,
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
enum GridCommand {
    /// Run every cell not finished before (exit status 1 when a cell failed).
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
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
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
    Export {
        /// Write DIR/<grid>/slurm.sbatch, a Slurm job array with one task per cell.
        #[arg(long, required = true)]
        slurm: bool,
        /// The experiment file.
        file: PathBuf,
        /// Results root.
        #[arg(long, default_value = "runs")]
        output: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Tokens/s of an encoder forward pass (eval mode) on a random batch without padding.
    Forward {
        /// Checkpoint directory.
        #[arg(long, default_value = ".cache/artefacts/all-MiniLM-L6-v2")]
        model: PathBuf,
        /// Sequences per batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Timed iterations (after two warm-up ones); the median is reported.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Tokens/s of activation-statistics collection on a decoder (positive counts, sums and
    /// sums of squares of every gate pre-activation, counted inside the forward; no LM head).
    Collect {
        /// A `.gguf` file or an HF decoder directory.
        #[arg(
            long,
            default_value = ".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
        )]
        model: PathBuf,
        /// Windows per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per window.
        #[arg(long, default_value_t = 256)]
        seq: usize,
        /// Timed batches (after one warm-up batch); the median is reported.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Milliseconds per LoRA training step (forward, backward, clipping, AdamW) of a decoder
    /// classifier with a frozen base, on a random batch without padding.
    LoraStep {
        /// A `.gguf` file or an HF decoder directory.
        #[arg(
            long,
            default_value = ".cache/artefacts/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
        )]
        model: PathBuf,
        /// Examples per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per example.
        #[arg(long, default_value_t = 64)]
        seq: usize,
        /// LoRA rank (alpha = 2 rank).
        #[arg(long, default_value_t = 8)]
        rank: usize,
        /// Linears with an unmasked adapter, comma-separated.
        #[arg(
            long,
            default_value = "q_proj,k_proj,v_proj,o_proj",
            value_delimiter = ','
        )]
        targets: Vec<String>,
        /// Add a gate_proj adapter masked to this many random neurons per layer.
        #[arg(long)]
        gate_neurons: Option<usize>,
        /// Timed steps (after one warm-up step); the median is reported.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Milliseconds per training step (forward of every view, backward, clipping, AdamW) of a
    /// sequence classifier on a random batch without padding, baseline or comparative.
    Step {
        /// Checkpoint directory.
        #[arg(long, default_value = ".cache/artefacts/all-MiniLM-L6-v2")]
        model: PathBuf,
        /// Examples per step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Tokens per example.
        #[arg(long, default_value_t = 64)]
        seq: usize,
        /// Nested dropout views c (0: the baseline).
        #[arg(long, default_value_t = 0)]
        n_drop: u32,
        /// Run the c + 1 views one after another instead of as one batch.
        #[arg(long)]
        sequential: bool,
        /// Time a span extractor (extractive QA: start/end losses) instead of a classifier.
        #[arg(long)]
        span: bool,
        /// Timed steps (after one warm-up step); the median is reported.
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// `cpu` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Embed {
            model,
            normalize,
            device,
            texts,
        } => {
            let embeddings = run_on(
                device,
                commands::embed::Embed {
                    model,
                    texts,
                    normalize,
                },
            )?;
            println!("{}", serde_json::to_string(&embeddings)?);
        }
        Command::Perplexity {
            model,
            text_file,
            window,
            device,
        } => {
            let task = commands::decoder::PerplexityTask {
                model,
                text_file,
                window,
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
        Command::Generate {
            model,
            prompt,
            max_new_tokens,
            chat,
            device,
        } => {
            let task = commands::decoder::GenerateTask {
                model,
                prompt,
                max_new_tokens,
                chat,
            };
            println!("{}", run_on(device, task)?);
        }
        Command::Inspect { path } => print!("{}", commands::inspect::inspect(&path)?),
        Command::Bench {
            what:
                Bench::Forward {
                    model,
                    batch,
                    seq,
                    iters,
                    device,
                },
        } => {
            let task = commands::bench::BenchForward {
                model,
                batch,
                seq,
                iters: iters.max(1),
                device_label: device.to_string(),
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
        Command::Bench {
            what:
                Bench::Collect {
                    model,
                    batch,
                    seq,
                    iters,
                    device,
                },
        } => {
            let task = commands::bench::BenchCollect {
                model,
                batch,
                seq,
                iters: iters.max(1),
                device_label: device.to_string(),
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
        Command::Bench {
            what:
                Bench::Step {
                    model,
                    batch,
                    seq,
                    n_drop,
                    sequential,
                    span,
                    iters,
                    device,
                },
        } => {
            let task = commands::bench::BenchStep {
                model,
                batch,
                seq,
                n_drop,
                batched: !sequential,
                span,
                iters: iters.max(1),
                device_label: device.to_string(),
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
        Command::Bench {
            what:
                Bench::LoraStep {
                    model,
                    batch,
                    seq,
                    rank,
                    targets,
                    gate_neurons,
                    iters,
                    device,
                },
        } => {
            let task = commands::bench::BenchLoraStep {
                model,
                batch,
                seq,
                rank,
                targets,
                gate_neurons,
                iters: iters.max(1),
                device_label: device.to_string(),
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
        Command::Grid { what } => return grid(what),
        Command::Report { dir } => print!("{}", commands::report::report(&dir)?),
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
            device,
            ..
        } => {
            let task = grid_run(file, output, cell, device.to_string());
            let summary = run_on(device, task)?;
            eprintln!(
                "grid: {} finished, {} skipped (finished before), {} failed",
                summary.finished,
                summary.skipped,
                summary.failed.len()
            );
            for (index, error) in &summary.failed {
                eprintln!("  cell {index} failed: {error}");
            }
            Ok(if summary.failed.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        GridCommand::List { file, output } => {
            print!("{}", open(&file, &output)?.plan());
            Ok(ExitCode::SUCCESS)
        }
        GridCommand::Export { file, output, .. } => {
            println!("{}", export_slurm(&file, &output)?.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
