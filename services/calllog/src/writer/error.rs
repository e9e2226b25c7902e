//! Why a write failed: for the service, whether retrying can help; within the writer, whether an
//! attempt is to be made again with the calls read back.

use deadpool_postgres::PoolError;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The data itself is refused (a value out of range, a constraint): retrying the same rows
    /// cannot help.
    #[error("rows refused by PostgreSQL: {0}")]
    Rejected(#[source] tokio_postgres::Error),
    /// The database is unreachable, restarting, or the transaction lost a race: retry.
    #[error("PostgreSQL unavailable")]
    Unavailable(#[source] tokio_postgres::Error),
    /// A statement ran past `statement_timeout` (a lock held elsewhere, or rows too heavy):
    /// retried a few times, then the batch is written one event at a time, and an event that
    /// still times out goes to the dead-letter topic, so that the partition does not stall.
    #[error("a statement ran past statement_timeout")]
    TimedOut(#[source] tokio_postgres::Error),
    #[error("no PostgreSQL connection")]
    Pool(#[source] PoolError),
    /// A call changed under its lock, which cannot happen unless something outside the call log
    /// wrote it: retry the batch, reading the calls again.
    #[error("a call changed under its lock")]
    Raced,
    #[error("cannot encode a call record: {0}")]
    Encode(#[from] switchboard_core::avro::CodecError),
}

impl WriteError {
    /// Whether writing the same rows again can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, WriteError::Unavailable(_) | WriteError::Pool(_) | WriteError::Raced)
    }

    /// Whether a statement timed out: transient a few times, then taken as refused.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WriteError::TimedOut(_))
    }
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(error: tokio_postgres::Error) -> Self {
        let class = error.code().map(|code| &code.code()[..2]);
        match class {
            // 22: data exception; 23: integrity constraint violation.
            Some("22" | "23") => WriteError::Rejected(error),
            // 57014 query_canceled: statement_timeout (the rest of class 57 is a server going
            // away, which is retried).
            _ if error.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) => {
                WriteError::TimedOut(error)
            }
            _ => WriteError::Unavailable(error),
        }
    }
}

impl From<PoolError> for WriteError {
    fn from(error: PoolError) -> Self {
        WriteError::Pool(error)
    }
}

/// Why an attempt at a batch did not commit.
pub(super) enum Attempt {
    Failed(WriteError),
    /// This many calls folded from the cache had been written by another writer since: rolled
    /// back.
    Stale(usize),
}

impl From<WriteError> for Attempt {
    fn from(error: WriteError) -> Self {
        Attempt::Failed(error)
    }
}

impl From<tokio_postgres::Error> for Attempt {
    fn from(error: tokio_postgres::Error) -> Self {
        Attempt::Failed(error.into())
    }
}

impl From<PoolError> for Attempt {
    fn from(error: PoolError) -> Self {
        Attempt::Failed(error.into())
    }
}
