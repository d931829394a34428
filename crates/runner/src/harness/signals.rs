//! Stopping on a signal the way clusters send them.
//!
//! Slurm sends SIGTERM before a time limit or a preemption (or the signal `--signal` names some
//! minutes ahead, SIGUSR1 in `grid export`'s scripts), and a terminal sends SIGINT on Ctrl-C. Once
//! [`install`]ed, the first SIGTERM, SIGINT or SIGUSR1 only raises a flag: the training loop
//! finishes its optimiser step, writes the cell's checkpoint and stops with [`Interrupted`]; the
//! harness records the cell as `interrupted` (not failed), starts no other cell and the process
//! exits with status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT, 138 for
//! SIGUSR1). The next `grid run` resumes the cell from its checkpoint. A second signal stops the
//! process at once, with the same status.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

/// Whether a stopping signal arrived.
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Which one (its number).
static WHICH: AtomicUsize = AtomicUsize::new(0);

/// Handle SIGTERM, SIGINT and SIGUSR1 as the module says. Only the binary's `grid run` calls it:
/// a library user's own process keeps its own signal handling.
pub fn install() -> Result<()> {
    for signal in [SIGTERM, SIGINT, SIGUSR1] {
        // In the order they run: a second signal exits (the flag is already up), the first
        // records which signal it was and raises the flag.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, &REQUESTED)
            .and_then(|_| signal_hook::flag::register_usize(signal, &WHICH, signal as usize))
            .and_then(|_| signal_hook::flag::register(signal, &REQUESTED))
            .with_context(|| format!("cannot handle signal {}", name(signal)))?;
    }
    Ok(())
}

/// The stopping signal that arrived, if one did.
pub fn received() -> Option<i32> {
    REQUESTED
        .load(Ordering::SeqCst)
        .then(|| WHICH.load(Ordering::SeqCst) as i32)
}

/// A signal's name (`SIGTERM`), or its number.
pub fn name(signal: i32) -> String {
    match signal {
        SIGTERM => "SIGTERM".into(),
        SIGINT => "SIGINT".into(),
        SIGUSR1 => "SIGUSR1".into(),
        n => format!("signal {n}"),
    }
}

/// A cell stopped by a signal, with where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "interrupted by {} after step {step}: {}",
    name(*signal),
    if *checkpointed {
        "its checkpoint holds it, and the next `grid run` resumes it from there"
    } else {
        "no checkpoint (`checkpoints = false`), so the next `grid run` starts it again"
    }
)]
pub struct Interrupted {
    /// The signal's number.
    pub signal: i32,
    /// Optimiser steps done.
    pub step: usize,
    /// Whether the checkpoint was written.
    pub checkpointed: bool,
}

impl Interrupted {
    /// The exit status of a process stopped by this signal: 128 + its number.
    pub fn exit_status(signal: i32) -> u8 {
        u8::try_from(128 + signal).unwrap_or(1)
    }

    /// The interruption somewhere in `e`'s chain of causes, if it is one.
    pub fn of(e: &anyhow::Error) -> Option<&Self> {
        e.chain().find_map(|c| c.downcast_ref::<Self>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interruption_is_found_under_any_context_and_names_its_signal() {
        let e = anyhow::Error::new(Interrupted {
            signal: SIGTERM,
            step: 7,
            checkpointed: true,
        })
        .context("training")
        .context("cell 3");
        let found = Interrupted::of(&e).expect("found");
        assert_eq!(found.step, 7);
        assert!(
            found
                .to_string()
                .starts_with("interrupted by SIGTERM after step 7: its checkpoint")
        );
        assert!(Interrupted::of(&anyhow::anyhow!("disk full")).is_none());
        assert_eq!(Interrupted::exit_status(SIGTERM), 143);
        assert_eq!(Interrupted::exit_status(SIGINT), 130);
        assert_eq!(Interrupted::exit_status(SIGUSR1), 138);
    }
}
