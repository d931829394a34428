//! The error type of this crate.

use std::path::PathBuf;

impl ModelError {
    /// `path` does not hold `expected`: it is missing, or a file or folder where the other
    /// should be.
    pub fn not_found(path: &std::path::Path, expected: &'static str) -> Self {
        let what = if !path.exists() {
            "does not exist"
        } else if path.is_dir() {
            "is a folder"
        } else {
            "is a file"
        };
        Self::NotFound {
            path: path.to_path_buf(),
            what,
            expected,
        }
    }
}

/// Everything that can go wrong while reading a checkpoint, a config or a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read. (The cause is in the message and not a `source`, so that an
    /// error chain says it once.)
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A path is missing or is not what was expected (a file where a folder should be).
    #[error("{path} {what}; expected {expected}")]
    NotFound {
        /// The path.
        path: PathBuf,
        /// `does not exist`, `is a file`, `is a folder`.
        what: &'static str,
        /// What should be there.
        expected: &'static str,
    },
    /// A directory holds none of the files a checkpoint can be read from.
    #[error("no checkpoint in {dir}: expected one of {expected}")]
    NoCheckpoint {
        /// The directory.
        dir: PathBuf,
        /// The file names looked for.
        expected: String,
    },
    /// A file exists but its contents are not what its format says.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// `config.json` names an architecture this crate does not implement.
    #[error("{path}: unknown model_type {model_type:?}; supported: {supported}")]
    UnknownModelType {
        /// The config file.
        path: PathBuf,
        /// The value found.
        model_type: String,
        /// The values this crate understands.
        supported: String,
    },
    /// A LoRA adapter that cannot be built.
    #[error("LoRA: {0}")]
    Lora(String),
    /// A config value is missing or unusable.
    #[error("{path}: key {key:?}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The model needs a tensor the checkpoint does not have.
    #[error("{source_file}: missing tensor {key:?} (expected shape {expected:?})")]
    MissingTensor {
        /// The checkpoint.
        source_file: PathBuf,
        /// The checkpoint key.
        key: String,
        /// The shape the model expects, in checkpoint (HF) layout.
        expected: Vec<usize>,
    },
    /// The checkpoint has tensors the model does not use.
    #[error("{source_file}: unexpected tensor(s) not used by the model: {}", keys.join(", "))]
    UnexpectedTensors {
        /// The checkpoint.
        source_file: PathBuf,
        /// The unused keys (with their shapes).
        keys: Vec<String>,
    },
    /// A tensor has a different shape from the one the model expects.
    #[error("{source_file}: tensor {key:?} has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The checkpoint.
        source_file: PathBuf,
        /// The checkpoint key.
        key: String,
        /// The shape the model expects, in checkpoint (HF) layout.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor has a data type that cannot be read as floats.
    #[error(
        "{source_file}: tensor {key:?} has dtype {dtype}, expected a float type (F32, F16, BF16, F64)"
    )]
    BadDType {
        /// The checkpoint.
        source_file: PathBuf,
        /// The checkpoint key.
        key: String,
        /// The dtype found.
        dtype: String,
    },
    /// The tokenizer does not fit the model or could not be built.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Input text the model cannot encode.
    #[error("input text #{index}: {message}")]
    Input {
        /// The position of the text in the batch.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |cause| ModelError::Io { path, cause }
}
