//! The library's error type, grouped by whose fault it is: the user's input (config, SQL, data
//! paths), an external system (Kafka, the file system), or a bug in lambdaflow.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lambdaflow.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong: the message names the key or file.
    #[error("bad configuration: {0}")]
    Config(String),
    /// A view's SQL does not plan, or cannot be maintained by both layers.
    #[error("view `{view}`: {msg}")]
    View {
        /// The view's name.
        view: String,
        /// What is wrong.
        msg: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Kafka is unreachable or refused a request.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// An error inside DataFusion while executing a plan.
    #[error("query execution: {}", .0.strip_backtrace())]
    DataFusion(#[from] DataFusionError),
    /// An Arrow error while building or converting columns.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// Something that should not happen: likely a bug in lambdaflow.
    #[error("internal error (likely a bug in lambdaflow, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Attaches a path to I/O results: `fs::read(&p).at(&p)?`.
pub trait IoContext<T> {
    /// Maps the error to [`Error::Io`] naming `path`.
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
