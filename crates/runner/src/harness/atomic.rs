//! Files replaced whole: a killed writer leaves the old file or the new one, never a torn one.

use std::path::Path;

use anyhow::{Context, Result};

/// Write `bytes` to `path` through a temporary file (`NAME.PID.tmp`) and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // The process id keeps concurrent writers (array tasks of one grid) off each other's file.
    let tmp = path.with_extension(format!(
        "{}.{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}
