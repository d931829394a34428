//! File readers shared by the kinds of cell: cross-lingual task files ([`crosslingual`]: XNLI,
//! SQuAD-format JSON) and text columns of Parquet files.

pub mod crosslingual;

use std::path::Path;

use anyhow::{Context, Result};

/// The text of `path`, which must be UTF-8: bytes that are not are an error naming the line
/// and column of the first of them.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let at = e.utf8_error().valid_up_to();
        let line_start = bytes[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        anyhow::anyhow!(
            "{}, line {line}: byte 0x{:02x} (byte {} of the line) is not UTF-8; save the file as \
             UTF-8",
            path.display(),
            bytes[at],
            at - line_start + 1
        )
    })
}

/// `path` is a file that exists: otherwise what it is instead (`does not exist`, `is a
/// folder`), after `what` (e.g. "dataset file").
pub(crate) fn expect_file(what: &str, path: &Path) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else if path.is_dir() {
        anyhow::bail!("{what} {} is a folder; expected a file", path.display())
    } else {
        anyhow::bail!("{what} {} does not exist", path.display())
    }
}

/// Column `name` of `frame` (read from `path`) as text.
pub(crate) fn text_column(
    frame: &polars::prelude::DataFrame,
    path: &Path,
    name: &str,
) -> Result<Vec<Option<String>>> {
    let c = frame.column(name).map_err(|_| {
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        anyhow::anyhow!(
            "{}: no column `{name}` (columns: {})",
            path.display(),
            names.join(", ")
        )
    })?;
    let c = c
        .cast(&polars::prelude::DataType::String)
        .with_context(|| format!("{}: column `{name}` cannot be read as text", path.display()))?;
    Ok(c.str()?.iter().map(|v| v.map(str::to_owned)).collect())
}

/// The non-empty texts of column `field` of a Parquet file, in row order (null and blank rows
/// skipped).
pub fn read_parquet_texts(path: &Path, field: &str) -> Result<Vec<String>> {
    use polars::prelude::{ParquetReader, SerReader};
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let frame = ParquetReader::new(file)
        .finish()
        .with_context(|| format!("cannot read {} as Parquet", path.display()))?;
    Ok(text_column(&frame, path, field)?
        .into_iter()
        .flatten()
        .filter(|t| !t.trim().is_empty())
        .collect())
}
