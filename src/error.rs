//! The library's error type, grouped by whose fault it is: the user's input (config, SQL, data
//! paths), a file lambdaflow wrote that cannot be read back, an external system (Kafka, the file
//! system), or a bug in lambdaflow.
//!
//! Each variant's message says what failed; the underlying error is its [`source`], never
//! repeated in the message (the convention of the Rust error-handling guidelines). Print an
//! error with its causes with [`Report`] (the binary does it through anyhow's `{:#}`).
//!
//! [`source`]: std::error::Error::source

use std::fmt;
use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error, as a source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    #[error("{}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file lambdaflow wrote (a manifest, checkpoint, segment, state) cannot be read back:
    /// damaged, truncated, or written by an incompatible version. The user can restore or
    /// remove it.
    #[error("{}: cannot read this {what} (damaged, truncated or written by another version); {fix}", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the file is, e.g. "speed checkpoint".
        what: &'static str,
        /// What the user can do about it.
        fix: &'static str,
        /// Why it does not read.
        source: BoxError,
    },
    /// The master dataset's Delta table could not be opened, read or committed to.
    #[error("the master dataset's Delta table at {}: {what}", path.display())]
    Table {
        /// The table's directory.
        path: PathBuf,
        /// What failed.
        what: String,
        /// delta-rs's error.
        source: BoxError,
    },
    /// A file could not be written: its encoder or the file system failed.
    #[error("{}: cannot write", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: BoxError,
    },
    /// The Kafka client configuration is refused (`kafka.bootstrap-servers`,
    /// `kafka.properties`).
    #[error("bad Kafka client configuration (kafka.bootstrap-servers, kafka.properties)")]
    KafkaConfig(#[source] rdkafka::error::KafkaError),
    /// Kafka is unreachable or refused a request.
    #[error("Kafka: {context}")]
    Kafka {
        /// What was attempted, on which topic, partition or brokers.
        context: String,
        /// The client's error, when there is one.
        #[source]
        source: Option<rdkafka::error::KafkaError>,
    },
    /// The Spark Connect server of the batch layer's Spark engine is unreachable or failed.
    #[error("Spark Connect at {remote}: {what}")]
    Spark {
        /// `sc://host:port` (never the token).
        remote: String,
        /// What was attempted.
        what: String,
        /// The client's or Spark's error.
        source: BoxError,
    },
    /// A value given to a request does not parse as the type it stands for (a `?key=` that is
    /// not a number for an integer key column, say): the caller's input.
    #[error("{0}")]
    InvalidValue(String),
    /// Another writer got there first: another process archived part of the range being
    /// archived, or owns the partition now. Nothing of this write was kept.
    #[error("{0}")]
    Conflict(String),
    /// The HTTP server cannot listen on its address (in use, not local, not permitted).
    #[error("serving.listen {addr}: cannot listen")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The state needed moved under the request several times in a row; trying again works.
    #[error("{0}")]
    Busy(String),
    /// An error inside DataFusion while executing a plan.
    #[error("query execution")]
    DataFusion(#[from] DataFusionError),
    /// An Arrow error while building or converting columns.
    #[error("arrow")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    /// A task of lambdaflow's panicked or was cancelled: a bug in lambdaflow.
    #[error("the {task} task failed (likely a bug in lambdaflow, please report it)")]
    Task {
        /// The task.
        task: &'static str,
        /// How it ended.
        source: tokio::task::JoinError,
    },
    /// Something that should not happen: likely a bug in lambdaflow.
    #[error("internal error (likely a bug in lambdaflow, please report it): {0}")]
    Internal(String),
}

impl Error {
    /// A configuration error.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// A Spark Connect failure at `remote` while doing `what`.
    pub fn spark(remote: &str, what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Spark {
            remote: remote.to_string(),
            what: what.into(),
            source: source.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A file lambdaflow wrote that does not read back: what it is, and what to do about it.
    pub fn damaged(
        path: impl Into<PathBuf>,
        what: &'static str,
        fix: &'static str,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Damaged {
            path: path.into(),
            what,
            fix,
            source: source.into(),
        }
    }

    /// A file that could not be written (the encoder's or the file system's error).
    pub fn write(path: impl Into<PathBuf>, source: impl Into<BoxError>) -> Self {
        Error::Write {
            path: path.into(),
            source: source.into(),
        }
    }

    /// A Kafka request that failed, with what was attempted.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source: Some(source),
        }
    }

    /// A Kafka failure that the message alone explains (a timeout, a missing topic).
    pub fn kafka_msg(context: impl Into<String>) -> Self {
        Error::Kafka {
            context: context.into(),
            source: None,
        }
    }

    /// A task that panicked or was cancelled.
    pub fn task(task: &'static str, source: tokio::task::JoinError) -> Self {
        Error::Task { task, source }
    }

    /// True when the user can fix it (configuration, SQL, input paths, a damaged file) rather
    /// than an outside system or lambdaflow itself.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::View { .. }
                | Error::Damaged { .. }
                | Error::KafkaConfig(_)
                | Error::InvalidValue(_)
                | Error::Bind { .. }
        )
    }
}

/// An error with its chain of causes, `message: cause: cause`, for logs and messages.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

impl Error {
    /// This error with its causes, for a log line or a message.
    pub fn report(&self) -> Report<'_> {
        Report(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_cause_once() {
        let e = Error::io(
            "/x/y",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        );
        assert_eq!(e.report().to_string(), "/x/y: no such file");
        let e = Error::damaged("/o/cp.json", "checkpoint", "move it away", "expected `{`");
        assert_eq!(
            e.report().to_string(),
            "/o/cp.json: cannot read this checkpoint (damaged, truncated or written by another \
             version); move it away: expected `{`"
        );
        assert!(e.is_user_error());
    }
}
