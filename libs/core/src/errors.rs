//! Errors as one log line: a library error usually displays only itself (`tokio_postgres::Error`
//! says "db error", hyper says "client error (Connect)") and keeps what went wrong in its
//! sources, so logs, dead letters and attempt logs print the whole chain.

/// An error with every cause on one line. A cause whose text the line already ends with (a
/// wrapper that displays its source) is not repeated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Driver(#[source] Server);

    #[derive(Debug, thiserror::Error)]
    #[error("ERROR: invalid byte sequence for encoding \"UTF8\": 0x00")]
    struct Server;

    #[derive(Debug, thiserror::Error)]
    enum Wrapper {
        #[error("database: {0}")]
        Db(#[from] Driver),
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let error = Wrapper::from(Driver(Server));
        assert_eq!(
            chain(&error),
            "database: db error: ERROR: invalid byte sequence for encoding \"UTF8\": 0x00"
        );
    }
}
