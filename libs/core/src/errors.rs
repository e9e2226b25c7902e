//! Errors as one log line: a library error usually displays only itself (`tokio_postgres::Error`
//! says "db error", hyper says "client error (Connect)") and keeps what went wrong in its
//! sources, so logs, dead letters and attempt logs print the whole chain.
//!
//! PostgreSQL's `DETAIL` and `HINT` lines are left out: they quote the row's values (a unique
//! violation names the phone number or e-mail it collided on), and a log line or a dead letter is
//! no place for a customer's data. The message, severity and SQLSTATE say what went wrong.

/// An error with every cause on one line, without PostgreSQL's `DETAIL` and `HINT`. A cause
/// whose text the line already ends with (a wrapper that displays its source) is not repeated.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = without_detail(&error.to_string());
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = without_detail(&cause.to_string());
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `text` without the `DETAIL: …` and `HINT: …` lines that `tokio_postgres`'s `DbError` (and any
/// error that displays it) writes after its message.
pub(crate) fn without_detail(text: &str) -> String {
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_owned();
    let mut skipping = false;
    for line in lines {
        if line.starts_with("DETAIL: ") || line.starts_with("HINT: ") {
            skipping = true;
            continue;
        }
        // A line that is not a field of the previous one's DbError: the rest of a multi-line
        // message, kept.
        if skipping && !line.contains(": ") {
            continue;
        }
        skipping = false;
        out.push(' ');
        out.push_str(line);
    }
    out
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

    #[derive(Debug, thiserror::Error)]
    #[error(
        "ERROR: duplicate key value violates unique constraint \"agents_email\"\nDETAIL: Key (email)=(ann@example.com) already exists.\nHINT: pick another"
    )]
    struct Unique;

    #[derive(Debug, thiserror::Error)]
    #[error("db error: {0}")]
    struct Displaying(#[source] Unique);

    #[test]
    fn postgres_detail_and_hint_never_reach_the_line() {
        let line = chain(&Displaying(Unique));
        assert_eq!(line, "db error: ERROR: duplicate key value violates unique constraint \"agents_email\"");
        assert!(!line.contains("ann@example.com"), "{line}");
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
