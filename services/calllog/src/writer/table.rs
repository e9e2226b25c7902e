//! How rows travel to PostgreSQL: one array parameter per column, which the statement unnests, so
//! that a batch is one statement (and one round trip) whatever its size.
//!
//! [`columns!`] declares a table's columns once: name, SQL type, role, and the value a row gives
//! each. The row builder, the statement's parameters and the statement's column lists
//! ([`render`]) all come from that one list, so they cannot disagree on a column's name, type or
//! position.

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use tokio_postgres::{self, Statement};

/// One column as the statements see it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Column {
    pub(super) name: &'static str,
    /// The element type of its array parameter.
    pub(super) sql_type: &'static str,
    pub(super) kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Identifies the row: inserted, matched on, never updated.
    Key,
    Plain,
    /// A `text[]` column, sent as one text per row with its items joined by [`SEPARATOR`]: UNNEST
    /// of an array of arrays would flatten it, and PostgreSQL has no ragged arrays.
    List,
    /// Sent with each row for the statement to read, not stored (the revision an update expects).
    Input,
}

/// Text lists travel through UNNEST joined with the unit separator, which the call log's ids never
/// hold; a vendor's agent text that does is cut at it, the rest of it kept.
const SEPARATOR: char = '\u{1f}';

fn joined(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR);
        }
        out.push_str(item.as_ref().split(SEPARATOR).next().unwrap_or(""));
    }
    out
}

/// A [`Kind::List`] column's value. `None` for an empty list: `string_to_array('', …)` would be
/// one empty element, NULL is none.
pub(super) fn joined_list(items: impl IntoIterator<Item = impl AsRef<str>>) -> Option<String> {
    Some(joined(items)).filter(|text| !text.is_empty())
}

/// Fills a statement template's placeholders from a table's columns:
/// - `{unnest}`: `UNNEST($1::type[], …) AS u(name, …)`, every column in declaration order, which
///   is the order of the parameters;
/// - `{columns}` and `{values}`: the stored columns (all but [`Kind::Input`]), by name and as
///   read from `u`, lists split back into arrays (an `INSERT … SELECT`);
/// - `{set}`: `name = <value from u>` for each stored column but the key (an `UPDATE … FROM`);
/// - `{excluded}`: `name = EXCLUDED.name` for the same columns (an upsert);
/// - `{next}`: the first parameter after the columns'.
///
/// Panics on any other placeholder: every statement is rendered by the unit tests.
pub(super) fn render(template: &str, columns: &[Column]) -> String {
    let stored = || columns.iter().filter(|c| c.kind != Kind::Input);
    let updated = || stored().filter(|c| c.kind != Kind::Key);
    let value = |c: &Column, from: &str| match c.kind {
        Kind::List => {
            format!("COALESCE(string_to_array({from}{}, E'\\x{:02x}'), '{{}}')", c.name, u32::from(SEPARATOR))
        }
        Kind::Key | Kind::Plain | Kind::Input => format!("{from}{}", c.name),
    };
    let mut out = String::with_capacity(template.len().saturating_mul(3));
    let mut rest = template;
    while let Some((before, placeholder)) = rest.split_once('{') {
        out.push_str(before);
        let Some((name, after)) = placeholder.split_once('}') else {
            panic!("unclosed placeholder in {template}")
        };
        let text = match name {
            "unnest" => format!(
                "UNNEST({}) AS u({})",
                list((1_usize..).zip(columns).map(|(n, c)| format!("${n}::{}[]", c.sql_type))),
                list(columns.iter().map(|c| c.name.to_owned())),
            ),
            "columns" => list(stored().map(|c| c.name.to_owned())),
            "values" => list(stored().map(|c| value(c, ""))),
            "set" => list(updated().map(|c| format!("{} = {}", c.name, value(c, "u.")))),
            "excluded" => list(updated().map(|c| format!("{0} = EXCLUDED.{0}", c.name))),
            "next" => format!("${}", columns.len().saturating_add(1)),
            other => panic!("unknown placeholder {{{other}}} in {template}"),
        };
        out.push_str(&text);
        rest = after;
    }
    out.push_str(rest);
    out
}

fn list(items: impl Iterator<Item = String>) -> String {
    items.collect::<Vec<_>>().join(", ")
}

/// A table's rows gathered as column arrays.
pub(super) trait Rows {
    fn len(&self) -> usize;
    /// One array per column, in the order of the statement's parameters.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
}

/// Runs `statement` on `rows`, with `more` parameters after theirs; nothing for no rows.
pub(super) async fn execute(
    tx: &Transaction<'_>,
    statement: &Statement,
    rows: &impl Rows,
    more: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    if rows.len() == 0 {
        return Ok(0);
    }
    let mut params = rows.params();
    params.extend_from_slice(more);
    tx.execute(statement, &params).await
}

/// Declares a table's column arrays:
///
/// ```text
/// columns! {
///     /// Docs.
///     struct NameRows<'a>;
///     fn push(arguments: Types) { let setup = …; }
///     column (sql_type[, key | list | input]): RustType = value from the arguments,
///     …
/// }
/// ```
///
/// gives `NameRows` (one `Vec` per column), `NameRows::push` (one row), `NameRows::COLUMNS` (for
/// [`render`]) and its [`Rows`] implementation.
macro_rules! columns {
    (
        $(#[$meta:meta])*
        struct $name:ident $(<$lt:lifetime>)?;
        fn push($($arg:ident: $arg_ty:ty),* $(,)?) { $(let $var:pat = $init:expr;)* }
        $($column:ident ($sql:ident $(, $kind:ident)?): $ty:ty = $value:expr,)+
    ) => {
        $(#[$meta])*
        #[derive(Default)]
        pub(super) struct $name $(<$lt>)? {
            rows: usize,
            $($column: Vec<$ty>,)+
        }

        impl $(<$lt>)? $name $(<$lt>)? {
            pub(super) const COLUMNS: &'static [$crate::writer::table::Column] = &[$(
                $crate::writer::table::Column {
                    name: stringify!($column),
                    sql_type: stringify!($sql),
                    kind: $crate::writer::table::columns!(@kind $($kind)?),
                },
            )+];

            pub(super) fn push(&mut self, $($arg: $arg_ty),*) {
                $(let $var = $init;)*
                $(self.$column.push($value);)+
                self.rows = self.rows.saturating_add(1);
            }
        }

        impl $(<$lt>)? $crate::writer::table::Rows for $name $(<$lt>)? {
            fn len(&self) -> usize {
                self.rows
            }

            fn params(&self) -> Vec<&(dyn ::tokio_postgres::types::ToSql + Sync)> {
                vec![$(&self.$column),+]
            }
        }
    };
    (@kind) => { $crate::writer::table::Kind::Plain };
    (@kind key) => { $crate::writer::table::Kind::Key };
    (@kind list) => { $crate::writer::table::Kind::List };
    (@kind input) => { $crate::writer::table::Kind::Input };
}

pub(super) use columns;

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: &[Column] = &[
        Column { name: "id", sql_type: "text", kind: Kind::Key },
        Column { name: "n", sql_type: "int8", kind: Kind::Plain },
        Column { name: "tags", sql_type: "text", kind: Kind::List },
        Column { name: "expected", sql_type: "int8", kind: Kind::Input },
    ];

    #[test]
    fn a_template_gets_its_column_lists_in_declaration_order() {
        let insert = render("INSERT INTO t ({columns}) SELECT {values} FROM {unnest}", COLUMNS);
        assert_eq!(
            insert,
            "INSERT INTO t (id, n, tags) \
             SELECT id, n, COALESCE(string_to_array(tags, E'\\x1f'), '{}') \
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[]) AS u(id, n, tags, expected)"
        );
        let update = render("SET {set}, flag = {next} / ON CONFLICT DO UPDATE SET {excluded}", COLUMNS);
        assert_eq!(
            update,
            "SET n = u.n, tags = COALESCE(string_to_array(u.tags, E'\\x1f'), '{}'), flag = $5 \
             / ON CONFLICT DO UPDATE SET n = EXCLUDED.n, tags = EXCLUDED.tags"
        );
    }

    #[test]
    #[should_panic(expected = "unknown placeholder {colums}")]
    fn a_misspelt_placeholder_is_caught() {
        let _ = render("INSERT INTO t ({colums})", COLUMNS);
    }

    #[test]
    fn lists_join_with_the_separator_and_an_empty_one_is_null() {
        assert_eq!(joined_list(["a", "b\u{1f}cut", "c"]).as_deref(), Some("a\u{1f}b\u{1f}c"));
        assert_eq!(joined_list(Vec::<String>::new()), None);
    }
}
