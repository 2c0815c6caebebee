//! What can go wrong reading a workload or writing a report; nothing in the replay itself fails.

use std::path::PathBuf;

/// A simulation error. `Read` and `Write` may succeed when retried (the file was being written,
/// the disk was full); `Invalid` needs the workload file fixed; `Chart` is a bug. Causes are
/// kept as `source()`, not repeated in the message (`{:#}` in anyhow prints both).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The workload file could not be read.
    #[error("cannot read workload {}{}", path.display(), hint(source))]
    Read {
        /// The path given.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The workload file is not a valid workload: `file:line: field: message`.
    #[error("{file}{}: {}{message}", line.map(|l| format!(":{l}")).unwrap_or_default(), if field.is_empty() { String::new() } else { format!("{field}: ") })]
    Invalid {
        /// File name as given.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// Field path, e.g. `spec.groups[1].runFor.max` (empty for whole-file problems).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// An output file or directory could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The chart could not be drawn (a plotting bug, not an input problem).
    #[error("cannot draw the chart: {0}")]
    Chart(String),
}

fn hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::NotFound {
        " (pass --workload FILE, or run from the repository root for the default examples/workloads/burst.yaml)"
    } else {
        ""
    }
}

/// `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
