//! A delivery's subject (the call event or record it was made of) as JSON text, serialised once
//! and shared: every profile that fires on a record gets the same text, which goes to PostgreSQL
//! as `jsonb` as it is and is read back as text.
//!
//! Why: building a `serde_json::Value` tree per delivery, cloning it per profile and serialising
//! it again for the insert was most of the consumer's time (BENCHMARKS.md, dispatcher).

use std::sync::Arc;

use bytes::BufMut;
use serde::Serialize;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// The version byte of PostgreSQL's binary `jsonb`, which is followed by the JSON text.
const JSONB_VERSION: u8 = 1;

#[derive(Debug, Clone)]
pub struct SubjectJson(Arc<str>);

impl SubjectJson {
    /// `value` as JSON (`null` in the impossible case that one of our own types does not
    /// serialise, as `serde_json::to_value(..).unwrap_or(Null)` had it).
    pub fn of<T: Serialize + ?Sized>(value: &T) -> Self {
        // Room for a call record at once: growing the buffer from empty was a tenth of the time.
        let mut text = Vec::with_capacity(1024);
        match serde_json::to_writer(&mut text, value).map(|()| String::from_utf8(text)) {
            Ok(Ok(text)) => Self(Arc::from(text)),
            _ => Self(Arc::from("null")),
        }
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        &self.0
    }
}

impl PartialEq for SubjectJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl ToSql for SubjectJson {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.put_u8(JSONB_VERSION);
        }
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for SubjectJson {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = match (ty, raw.split_first()) {
            (&Type::JSONB, Some((&JSONB_VERSION, text))) => text,
            (&Type::JSONB, _) => return Err("unsupported jsonb encoding version".into()),
            _ => raw,
        };
        Ok(Self(Arc::from(std::str::from_utf8(text)?)))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::JSON | Type::JSONB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_the_serialised_value_and_compares_by_text() {
        let subject = SubjectJson::of(&serde_json::json!({"call": "c-1", "version": 2}));
        assert_eq!(subject.get(), r#"{"call":"c-1","version":2}"#);
        assert_eq!(subject, SubjectJson::of(&serde_json::json!({"call": "c-1", "version": 2})));
        assert_ne!(subject, SubjectJson::of(&serde_json::json!({"call": "c-2"})));
    }

    #[test]
    fn goes_to_postgres_as_jsonb_and_comes_back_as_the_same_text() {
        let subject = SubjectJson::of(&serde_json::json!({"a": [1, 2]}));
        let mut out = bytes::BytesMut::new();
        assert!(matches!(subject.to_sql(&Type::JSONB, &mut out), Ok(IsNull::No)));
        assert_eq!(out.first(), Some(&1), "jsonb's version byte");
        let back = SubjectJson::from_sql(&Type::JSONB, &out).expect("reads");
        assert_eq!(back, subject);
        assert!(!<SubjectJson as ToSql>::accepts(&Type::INT4));
        assert!(SubjectJson::from_sql(&Type::JSONB, b"\x02{}").is_err(), "an unknown jsonb version");
        let mut json = bytes::BytesMut::new();
        assert!(matches!(subject.to_sql(&Type::JSON, &mut json), Ok(IsNull::No)));
        assert_eq!(&json[..], subject.get().as_bytes(), "json has no version byte");
    }
}
