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
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
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
                Bench::Step {
                    model,
                    batch,
                    seq,
                    n_drop,
                    sequential,
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
                iters: iters.max(1),
                device_label: device.to_string(),
            };
            println!("{}", serde_json::to_string(&run_on(device, task)?)?);
        }
    }
    Ok(())
}
