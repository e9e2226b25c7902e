//! Avro on the wire, and nowhere else.
//!
//! Every record value on every topic is Avro *single-object encoding* (Avro specification,
//! "Single object encoding"): the two bytes `C3 01`, the 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema's Parsing Canonical Form, then the binary datum. A
//! consumer identifies the writer schema from the fingerprint alone, with no schema registry, and
//! the schemas themselves live in `schemas/*.avsc`.
//!
//! The canonical form is computed here from the `.avsc` text, by the specification's rules
//! ([`parsing_canonical_form`]), and not by apache-avro: its `Schema::fingerprint` keeps
//! `{"type":"long"}` where a logical type annotated a primitive, so its fingerprints match no
//! other Avro implementation (Java's `SchemaNormalization`, fastavro...). Releases before this
//! one wrote that fingerprint; every codec still reads it ([`EmbeddedSchema::legacy_fingerprint`]).
//!
//! Records written with the current schema decode straight into the Rust type (the fast serde
//! path of apache-avro 0.22). Records written with an earlier schema that a codec was told about
//! are decoded with that schema and resolved to the current one, which is how fields can be
//! added with defaults without stopping the pipeline.

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{AgentStatus, CallEvent, CallRecord, DeadLetter, RawWebhook};

const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// A schema compiled into the binary, with the fingerprints its records carry.
#[derive(Debug)]
pub struct EmbeddedSchema {
    pub schema: Schema,
    /// The schema's Parsing Canonical Form, by the specification's rules.
    pub canonical_form: String,
    /// CRC-64-AVRO of [`Self::canonical_form`]: what this release writes, and what any other
    /// Avro implementation computes for the `.avsc` file.
    pub fingerprint: u64,
    /// apache-avro 0.22's fingerprint of the schema (its canonical form keeps logical types'
    /// primitives as objects), which earlier releases wrote; still read, never written.
    pub legacy_fingerprint: u64,
}

impl EmbeddedSchema {
    /// Parses an `.avsc` text and computes both fingerprints.
    pub fn parse(text: &str) -> Result<Self, CodecError> {
        let schema = Schema::parse_str(text).map_err(CodecError::Decode)?;
        let canonical_form = parsing_canonical_form(text)?;
        Ok(Self {
            fingerprint: fingerprint64(canonical_form.as_bytes()),
            legacy_fingerprint: legacy_fingerprint(&schema),
            canonical_form,
            schema,
        })
    }

    /// Whether a record whose header carries `fingerprint` was written with this schema.
    fn wrote(&self, fingerprint: u64) -> bool {
        fingerprint == self.fingerprint || fingerprint == self.legacy_fingerprint
    }
}

pub static RAW_WEBHOOK_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/raw_webhook.avsc")));
pub static CALL_EVENT_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.avsc")));
/// Schemas records may still be written in by an older release (see `schemas/README.md`).
pub static RAW_WEBHOOK_V1_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/raw_webhook.v1.avsc")));
pub static CALL_EVENT_V1_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.v1.avsc")));
/// `CallEvent` before the recordings stage added `recording_status` and `recording_error`.
pub static CALL_EVENT_V2_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.v2.avsc")));
/// `CallEvent` before the wrap-up (`WRAP_UP` kind and `wrap_up`).
pub static CALL_EVENT_V3_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.v3.avsc")));
/// `CallRecord` before `wrap_up`.
pub static CALL_RECORD_V2_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_record.v2.avsc")));
/// `CallRecord` before `recording_status` and `recording_error`.
pub static CALL_RECORD_V1_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_record.v1.avsc")));
pub static DEAD_LETTER_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/dead_letter.avsc")));
pub static CALL_RECORD_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_record.avsc")));
pub static AGENT_STATUS_SCHEMA: LazyLock<EmbeddedSchema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/agent_status.avsc")));

fn parse_embedded(text: &str) -> EmbeddedSchema {
    // The schemas are compiled into the binary and covered by unit tests, so a parse failure is
    // a build defect, not a runtime condition.
    EmbeddedSchema::parse(text).expect("embedded Avro schema must parse")
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not Avro single-object encoding (missing C3 01 header)")]
    NotSingleObject,
    #[error("written with an unknown schema (fingerprint {0:016x})")]
    UnknownSchema(u64),
    #[error("Avro encode failed: {0}")]
    Encode(#[source] apache_avro::Error),
    #[error("Avro decode failed: {0}")]
    Decode(#[source] apache_avro::Error),
    #[error("{0} trailing bytes after the Avro datum")]
    TrailingBytes(usize),
    #[error("not a valid Avro schema: {0}")]
    InvalidSchema(String),
}

/// The fingerprint apache-avro 0.22 computes (`Schema::fingerprint::<Rabin>`), as a number.
fn legacy_fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(le)
}

/// The CRC-64-AVRO fingerprint (Avro specification, "Schema Fingerprints": the 64-bit Rabin
/// fingerprint with the empty value `0xc15d213aa4d7a795`). Single-object encoding writes it
/// little-endian.
pub fn fingerprint64(bytes: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: LazyLock<[u64; 256]> = LazyLock::new(|| {
        let mut table = [0u64; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (fp & 1).wrapping_neg());
            }
            *slot = fp;
        }
        table
    });
    bytes.iter().fold(EMPTY, |fp, &b| (fp >> 8) ^ TABLE[((fp ^ u64::from(b)) & 0xff) as usize])
}

const PRIMITIVES: [&str; 8] = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"];

/// The Parsing Canonical Form of a schema given as JSON text (Avro specification, "Parsing
/// Canonical Form for Schemas"): primitives in their simple form, whatever else annotated them
/// (a logical type); named types by their full names, namespaces resolved and dropped; only
/// `name`, `type`, `fields`, `symbols`, `items`, `values` and `size`, in that order; integer
/// sizes; no whitespace. A named type already defined is written as its full name, as Java's
/// `SchemaNormalization` does.
pub fn parsing_canonical_form(text: &str) -> Result<String, CodecError> {
    let json: Value = serde_json::from_str(text).map_err(|e| CodecError::InvalidSchema(e.to_string()))?;
    let mut out = String::with_capacity(text.len() / 2);
    Canonical { defined: HashSet::new(), out: &mut out }.schema(&json, "")?;
    Ok(out)
}

struct Canonical<'a> {
    /// Full names of the named types written so far.
    defined: HashSet<String>,
    out: &'a mut String,
}

fn invalid(what: impl Into<String>) -> CodecError {
    CodecError::InvalidSchema(what.into())
}

/// The full name of `name` in `namespace`, and the namespace it sets for what it encloses.
fn full_name(name: &str, namespace: &str) -> (String, String) {
    match name.rsplit_once('.') {
        Some((space, _)) => (name.to_owned(), space.to_owned()),
        None if namespace.is_empty() => (name.to_owned(), String::new()),
        None => (format!("{namespace}.{name}"), namespace.to_owned()),
    }
}

impl Canonical<'_> {
    fn string(&mut self, s: &str) {
        // [STRINGS]: serde_json escapes only what JSON requires (quotes, backslashes, control
        // characters) and writes everything else as UTF-8.
        self.out.push_str(&Value::String(s.to_owned()).to_string());
    }

    fn schema(&mut self, schema: &Value, namespace: &str) -> Result<(), CodecError> {
        match schema {
            Value::String(name) if PRIMITIVES.contains(&name.as_str()) => self.string(name),
            Value::String(name) => self.reference(name, namespace),
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, namespace)?;
                }
                self.out.push(']');
            }
            Value::Object(map) => self.object(map, namespace)?,
            other => return Err(invalid(format!("a schema cannot be {other}"))),
        }
        Ok(())
    }

    fn object(&mut self, map: &Map<String, Value>, namespace: &str) -> Result<(), CodecError> {
        let kind = match map.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the type is the schema.
            Some(nested @ (Value::Object(_) | Value::Array(_))) => return self.schema(nested, namespace),
            _ => return Err(invalid("an object schema without a type")),
        };
        match kind {
            // [PRIMITIVES]: `{"type":"long","logicalType":...}` is `"long"`.
            _ if PRIMITIVES.contains(&kind) => self.string(kind),
            "record" | "error" | "enum" | "fixed" => self.named(kind, map, namespace)?,
            "array" => {
                self.out.push_str(r#"{"type":"array","items":"#);
                self.schema(map.get("items").ok_or_else(|| invalid("an array without items"))?, namespace)?;
                self.out.push('}');
            }
            "map" => {
                self.out.push_str(r#"{"type":"map","values":"#);
                self.schema(map.get("values").ok_or_else(|| invalid("a map without values"))?, namespace)?;
                self.out.push('}');
            }
            // `{"type":"Name"}`: a reference to a named type.
            reference => self.reference(reference, namespace),
        }
        Ok(())
    }

    /// A reference to a named type defined earlier: a short name is looked up in the enclosing
    /// namespace, then in the null namespace (as Java's parser does).
    fn reference(&mut self, name: &str, namespace: &str) {
        let (full, _) = full_name(name, namespace);
        if !self.defined.contains(&full) && self.defined.contains(name) {
            self.string(name);
        } else {
            self.string(&full);
        }
    }

    fn named(&mut self, kind: &str, map: &Map<String, Value>, enclosing: &str) -> Result<(), CodecError> {
        let name = map
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("a {kind} without a name")))?;
        // [FULLNAMES]: a dotted name is already full; else its own namespace, else the enclosing one.
        let namespace = match map.get("namespace") {
            Some(Value::String(space)) => space.as_str(),
            Some(Value::Null) | None => enclosing,
            Some(other) => return Err(invalid(format!("namespace {other} is not a string"))),
        };
        let (full, namespace) = full_name(name, namespace);
        if !self.defined.insert(full.clone()) {
            self.string(&full);
            return Ok(());
        }
        // [ORDER]: name, type, then fields, symbols or size.
        self.out.push_str(r#"{"name":"#);
        self.string(&full);
        self.out.push_str(r#","type":"#);
        self.string(kind);
        match kind {
            "enum" => {
                self.out.push_str(r#","symbols":["#);
                let symbols = map
                    .get("symbols")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("an enum without symbols"))?;
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.string(
                        symbol.as_str().ok_or_else(|| invalid("an enum symbol that is not a string"))?,
                    );
                }
                self.out.push(']');
            }
            "fixed" => {
                // [INTEGERS]: `"size":"016"` is `16`.
                let size = match map.get("size") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                let size = size.ok_or_else(|| invalid("a fixed without a size"))?;
                self.out.push_str(&format!(r#","size":{size}"#));
            }
            _ => {
                self.out.push_str(r#","fields":["#);
                let fields = map
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("a record without fields"))?;
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let field_name = field
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("a field without a name"))?;
                    let field_type = field
                        .get("type")
                        .ok_or_else(|| invalid(format!("field {field_name} has no type")))?;
                    self.out.push_str(r#"{"name":"#);
                    self.string(field_name);
                    self.out.push_str(r#","type":"#);
                    self.schema(field_type, &namespace)?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
        }
        self.out.push('}');
        Ok(())
    }
}

/// Encoder and decoder for one record type.
pub struct Codec<T> {
    schema: &'static EmbeddedSchema,
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    /// Earlier writer schemas still accepted, each with a reader that resolves to `schema`.
    previous: Vec<(&'static EmbeddedSchema, GenericDatumReader<'static>)>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Codec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("schema", &self.schema.schema.name().map(|n| n.to_string()))
            .field("fingerprint", &format_args!("{:016x}", self.schema.fingerprint))
            .field("legacy_fingerprint", &format_args!("{:016x}", self.schema.legacy_fingerprint))
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    fn new(schema: &'static EmbeddedSchema) -> Result<Self, CodecError> {
        let writer = GenericDatumWriter::builder(&schema.schema)
            .human_readable(false)
            .build()
            .map_err(CodecError::Encode)?;
        let reader = GenericDatumReader::builder(&schema.schema)
            .human_readable(false)
            .build()
            .map_err(CodecError::Decode)?;
        Ok(Self { schema, writer, reader, previous: Vec::new(), _type: PhantomData })
    }

    /// Also accept records written with `older`, resolving them to the current schema.
    pub fn accept_previous(mut self, older: &'static EmbeddedSchema) -> Result<Self, CodecError> {
        let reader = GenericDatumReader::builder(&older.schema)
            .reader_schema(&self.schema.schema)
            .human_readable(false)
            .build()
            .map_err(CodecError::Decode)?;
        self.previous.push((older, reader));
        Ok(self)
    }

    /// The schema this codec writes.
    pub fn schema(&self) -> &'static EmbeddedSchema {
        self.schema
    }

    pub fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.schema.fingerprint.to_le_bytes());
        let _ = self.writer.write_ser(&mut out, value).map_err(CodecError::Encode)?;
        Ok(out)
    }

    /// Decodes a record written with the current schema or an accepted earlier one, under either
    /// its fingerprint or the legacy one of releases before.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
            return Err(CodecError::NotSingleObject);
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let mut datum = &bytes[HEADER_LEN..];
        let value = if self.schema.wrote(fp) {
            self.reader.read_deser::<T>(&mut datum).map_err(CodecError::Decode)?
        } else {
            let (_, reader) = self
                .previous
                .iter()
                .find(|(older, _)| older.wrote(fp))
                .ok_or(CodecError::UnknownSchema(fp))?;
            let resolved = reader.read_value(&mut datum).map_err(CodecError::Decode)?;
            apache_avro::from_value::<T>(&resolved).map_err(CodecError::Decode)?
        };
        if !datum.is_empty() {
            return Err(CodecError::TrailingBytes(datum.len()));
        }
        Ok(value)
    }
}

/// The codecs of every topic, built once per process.
#[derive(Debug)]
pub struct Codecs {
    pub raw_webhook: Codec<RawWebhook>,
    pub call_event: Codec<CallEvent>,
    pub dead_letter: Codec<DeadLetter>,
    /// Completed-call records on the calls topic (written by calllog).
    pub call_record: Codec<CallRecord>,
    /// Agent status changes on the agent-status topic (written by the desk).
    pub agent_status: Codec<AgentStatus>,
}

impl Codecs {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            raw_webhook: Codec::new(&RAW_WEBHOOK_SCHEMA)?.accept_previous(&RAW_WEBHOOK_V1_SCHEMA)?,
            call_event: Codec::new(&CALL_EVENT_SCHEMA)?
                .accept_previous(&CALL_EVENT_V1_SCHEMA)?
                .accept_previous(&CALL_EVENT_V2_SCHEMA)?
                .accept_previous(&CALL_EVENT_V3_SCHEMA)?,
            dead_letter: Codec::new(&DEAD_LETTER_SCHEMA)?,
            call_record: Codec::new(&CALL_RECORD_SCHEMA)?
                .accept_previous(&CALL_RECORD_V1_SCHEMA)?
                .accept_previous(&CALL_RECORD_V2_SCHEMA)?,
            agent_status: Codec::new(&AGENT_STATUS_SCHEMA)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::model::*;

    fn sample_event() -> CallEvent {
        CallEvent {
            event_id: EventId::parse("e-1").expect("valid"),
            raw_id: "0190-raw".into(),
            source_id: SourceId::parse("acme").expect("valid"),
            vendor: Vendor::Generic,
            call_id: CallId::parse("call-1").expect("valid"),
            leg_id: Some(LegId::parse("leg-1").expect("valid")),
            kind: EventKind::Answered,
            direction: Direction::Inbound,
            from_raw: Some("020 7946 0000".into()),
            from_e164: Some(PhoneNumber::from_e164("+442079460000").expect("valid")),
            to_raw: None,
            to_e164: None,
            agent_number: Some("101".into()),
            agent_email: Some("ann@example.com".into()),
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).single().expect("valid"),
            received_at: Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 1).single().expect("valid"),
            sequence: Some(3),
            hangup_cause: None,
            recording_url: Some("https://rec.example/1".into()),
            agent_extension: Some("101".into()),
            disposition: Some(Disposition::Answered),
            recording_id: Some("rec-1".into()),
            agent_id: Some("agent-1".into()),
            agent_match: Some(AgentMatch::Extension),
            contact_ids: vec!["c-1".into(), "c-2".into()],
            contact_match: Some(ContactMatch::Ambiguous),
            responsible_agent_id: None,
            recording_status: Some(RecordingStatus::Failed),
            recording_error: Some("vendor answered 404 five times".into()),
            queue: Some("Sales<-".into()),
            wrap_up: None,
        }
    }

    fn sample_wrap_up() -> WrapUp {
        WrapUp {
            code: Some("sale".into()),
            label: Some("Sale".into()),
            note: Some("wants the blue one".into()),
            tags: vec!["vip".into(), "renewal".into()],
            agent_id: Some("agent-1".into()),
            set_at: Utc.with_ymd_and_hms(2026, 11, 21, 10, 9, 0).single().expect("valid"),
        }
    }

    /// `value` written with `older`, which lacks the `queue` and `wrap_up` fields: the value
    /// without them.
    fn written_without_wrap_up<T: Serialize>(
        older: &'static EmbeddedSchema,
        fingerprint: u64,
        value: &T,
    ) -> Vec<u8> {
        let mut value = apache_avro::to_value(value).expect("to value");
        let apache_avro::types::Value::Record(fields) = &mut value else { panic!("a record") };
        fields.retain(|(name, _)| name != "wrap_up" && name != "queue");
        let value = value.resolve(&older.schema).expect("resolves to the older schema");
        let old_writer = GenericDatumWriter::builder(&older.schema).build().expect("w");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&fingerprint.to_le_bytes());
        bytes.extend(old_writer.write_value_to_vec(value).expect("datum"));
        bytes
    }

    #[test]
    fn wrap_up_events_round_trip_and_events_from_before_them_resolve_to_none() {
        let codecs = Codecs::new().expect("codecs");
        let mut event = sample_event();
        (event.kind, event.wrap_up) = (EventKind::WrapUp, Some(sample_wrap_up()));
        let bytes = codecs.call_event.encode(&event).expect("encode");
        assert_eq!(codecs.call_event.decode(&bytes).expect("decode"), event);

        let older = CallEvent { queue: None, ..sample_event() };
        let v3: &'static EmbeddedSchema = &CALL_EVENT_V3_SCHEMA;
        let plain = Codec::<CallEvent>::new(&CALL_EVENT_SCHEMA).expect("codec");
        for fingerprint in [v3.fingerprint, v3.legacy_fingerprint] {
            let bytes = written_without_wrap_up(v3, fingerprint, &older);
            assert!(matches!(plain.decode(&bytes), Err(CodecError::UnknownSchema(_))), "a different schema");
            assert_eq!(codecs.call_event.decode(&bytes).expect("resolved"), older);
        }
    }

    #[test]
    fn call_event_round_trips() {
        let codecs = Codecs::new().expect("codecs");
        let event = sample_event();
        let bytes = codecs.call_event.encode(&event).expect("encode");
        assert_eq!(&bytes[..2], &MAGIC);
        assert_eq!(
            bytes[2..HEADER_LEN],
            CALL_EVENT_SCHEMA.fingerprint.to_le_bytes(),
            "the canonical fingerprint"
        );
        assert_eq!(codecs.call_event.decode(&bytes).expect("decode"), event);
        let legacy = relabelled(&bytes, CALL_EVENT_SCHEMA.legacy_fingerprint);
        assert_eq!(codecs.call_event.decode(&legacy).expect("legacy fingerprint"), event);
    }

    /// `bytes` with the fingerprint in its header replaced by `fingerprint`.
    fn relabelled(bytes: &[u8], fingerprint: u64) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        bytes[2..HEADER_LEN].copy_from_slice(&fingerprint.to_le_bytes());
        bytes
    }

    #[test]
    fn raw_webhook_and_dead_letter_round_trip() {
        let codecs = Codecs::new().expect("codecs");
        let raw = RawWebhook {
            id: "r1".into(),
            source_id: SourceId::parse("acme").expect("valid"),
            vendor: Vendor::Generic,
            default_region: "GB".into(),
            timezone: Some("Europe/London".into()),
            received_at: Utc::now(),
            remote_addr: Some("127.0.0.1:5000".into()),
            method: "POST".into(),
            path: "/v1/webhooks/acme".into(),
            query: None,
            content_type: Some("application/json".into()),
            headers: [("user-agent".to_owned(), "pbx/1".to_owned())].into(),
            body: b"{\"call_id\":\"x\"}".to_vec(),
        };
        let bytes = codecs.raw_webhook.encode(&raw).expect("encode");
        assert_eq!(bytes[2..HEADER_LEN], RAW_WEBHOOK_SCHEMA.fingerprint.to_le_bytes());
        let back = codecs.raw_webhook.decode(&bytes).expect("decode");
        assert_eq!(back.body, raw.body);
        assert_eq!(back.received_at.timestamp_micros(), raw.received_at.timestamp_micros());
        let legacy = relabelled(&bytes, RAW_WEBHOOK_SCHEMA.legacy_fingerprint);
        assert_eq!(codecs.raw_webhook.decode(&legacy).expect("legacy fingerprint").body, raw.body);

        let dead = DeadLetter {
            stage: "normalizer".into(),
            reason: "bad".into(),
            error_class: "adapter".into(),
            topic: "t".into(),
            partition: 1,
            offset: 42,
            key: None,
            payload: bytes,
            failed_at: Utc::now(),
        };
        let bytes = codecs.dead_letter.encode(&dead).expect("encode");
        assert_eq!(bytes[2..HEADER_LEN], DEAD_LETTER_SCHEMA.fingerprint.to_le_bytes());
        assert_eq!(codecs.dead_letter.decode(&bytes).expect("decode").payload, dead.payload);
        let legacy = relabelled(&bytes, DEAD_LETTER_SCHEMA.legacy_fingerprint);
        assert_eq!(codecs.dead_letter.decode(&legacy).expect("legacy fingerprint").payload, dead.payload);
    }

    #[test]
    fn garbage_and_foreign_schemas_are_errors_not_panics() {
        let codecs = Codecs::new().expect("codecs");
        assert!(matches!(codecs.call_event.decode(b""), Err(CodecError::NotSingleObject)));
        assert!(matches!(codecs.call_event.decode(b"{\"json\":1}"), Err(CodecError::NotSingleObject)));
        let raw_bytes = codecs.raw_webhook.encode(&RawWebhook {
            id: "r".into(),
            source_id: SourceId::parse("a").expect("valid"),
            vendor: Vendor::Generic,
            default_region: "GB".into(),
            timezone: Some("Europe/London".into()),
            received_at: Utc::now(),
            remote_addr: None,
            method: "POST".into(),
            path: "/".into(),
            query: None,
            content_type: None,
            headers: Default::default(),
            body: vec![],
        });
        let raw_bytes = raw_bytes.expect("encode");
        assert!(matches!(codecs.call_event.decode(&raw_bytes), Err(CodecError::UnknownSchema(_))));
        let good = codecs.call_event.encode(&sample_event()).expect("encode");
        for cut in [HEADER_LEN, HEADER_LEN + 3, good.len() - 1] {
            assert!(codecs.call_event.decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(codecs.call_event.decode(&long), Err(CodecError::TrailingBytes(1))));
    }

    #[test]
    fn records_from_an_older_schema_resolve_to_the_current_one() {
        let older: &'static EmbeddedSchema = &CALL_EVENT_V1_SCHEMA;
        let mut event = sample_event();
        (event.agent_extension, event.disposition, event.recording_id) = (None, None, None);
        (event.agent_id, event.agent_match, event.contact_match) = (None, None, None);
        (event.recording_status, event.recording_error, event.queue) = (None, None, None);
        event.contact_ids.clear();
        let plain = Codec::<CallEvent>::new(&CALL_EVENT_SCHEMA).expect("codec");
        let evolving = Codecs::new().expect("codecs").call_event;
        for fingerprint in [older.fingerprint, older.legacy_fingerprint] {
            let bytes = written_with(older, fingerprint, &OlderCallEvent::from(&event));
            assert!(matches!(plain.decode(&bytes), Err(CodecError::UnknownSchema(_))));
            assert_eq!(evolving.decode(&bytes).expect("resolved"), event);
        }
    }

    /// Writes `value` as `older` would have: the single-object header with `fingerprint` (one of
    /// that schema's), then the datum.
    fn written_with<T: Serialize>(older: &'static EmbeddedSchema, fingerprint: u64, value: &T) -> Vec<u8> {
        let old_writer = GenericDatumWriter::builder(&older.schema).human_readable(false).build().expect("w");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&fingerprint.to_le_bytes());
        let _ = old_writer.write_ser(&mut bytes, value).expect("write");
        bytes
    }

    #[test]
    fn call_events_from_before_the_recording_status_resolve_to_none() {
        let mut event = sample_event();
        (event.recording_status, event.recording_error, event.queue) = (None, None, None);
        let older: &'static EmbeddedSchema = &CALL_EVENT_V2_SCHEMA;
        let plain = Codec::<CallEvent>::new(&CALL_EVENT_SCHEMA).expect("codec");
        for fingerprint in [older.fingerprint, older.legacy_fingerprint] {
            let bytes = written_with(older, fingerprint, &V2CallEvent::from(&event));
            assert!(matches!(plain.decode(&bytes), Err(CodecError::UnknownSchema(_))), "a different schema");
            assert_eq!(Codecs::new().expect("codecs").call_event.decode(&bytes).expect("resolved"), event);
        }
    }

    #[test]
    fn call_records_round_trip_and_older_ones_resolve() {
        let codecs = Codecs::new().expect("codecs");
        let record = CallRecord {
            source_id: SourceId::parse("acme").expect("valid"),
            vendor: Vendor::Telphin,
            call_id: CallId::parse("call-1").expect("valid"),
            version: 3,
            status: CallStatus::Ended,
            outcome: Some(Outcome::Answered),
            completion: Some(Completion::EndMarker),
            completed_at: Some(Utc.with_ymd_and_hms(2026, 11, 21, 10, 5, 0).single().expect("valid")),
            direction: Direction::Inbound,
            from_number: Some("+442079460000".into()),
            to_number: None,
            started_at: Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).single().expect("valid"),
            answered_at: None,
            ended_at: None,
            duration_seconds: None,
            talk_seconds: None,
            disposition: None,
            hangup_cause: None,
            agent: None,
            contact_ids: vec![],
            contact_match: None,
            responsible_agent_id: None,
            recording_url: Some("https://sb.example/v1/recordings/ab?token=1.x".into()),
            recording_id: Some("200101-5A1C".into()),
            legs: vec![],
            recording_status: Some(RecordingStatus::Ready),
            recording_error: None,
            queue: Some("Sales<-".into()),
            wrap_up: None,
        };
        let bytes = codecs.call_record.encode(&record).expect("encode");
        assert_eq!(bytes[2..HEADER_LEN], CALL_RECORD_SCHEMA.fingerprint.to_le_bytes());
        assert_eq!(codecs.call_record.decode(&bytes).expect("decode"), record);
        let legacy = relabelled(&bytes, CALL_RECORD_SCHEMA.legacy_fingerprint);
        assert_eq!(codecs.call_record.decode(&legacy).expect("legacy fingerprint"), record);

        let v2: &'static EmbeddedSchema = &CALL_RECORD_V2_SCHEMA;
        let before_queue = CallRecord { queue: None, ..record.clone() };
        for fingerprint in [v2.fingerprint, v2.legacy_fingerprint] {
            let bytes = written_without_wrap_up(v2, fingerprint, &record);
            assert_eq!(codecs.call_record.decode(&bytes).expect("resolved"), before_queue);
        }
        let wrapped = CallRecord { wrap_up: Some(sample_wrap_up()), ..record.clone() };
        let bytes = codecs.call_record.encode(&wrapped).expect("encode");
        assert_eq!(codecs.call_record.decode(&bytes).expect("decode"), wrapped);

        let older = CallRecord { recording_status: None, recording_error: None, queue: None, ..record };
        let v1: &'static EmbeddedSchema = &CALL_RECORD_V1_SCHEMA;
        for fingerprint in [v1.fingerprint, v1.legacy_fingerprint] {
            let bytes = written_with(v1, fingerprint, &V1CallRecord::from(&older));
            assert_eq!(codecs.call_record.decode(&bytes).expect("resolved"), older);
        }
    }

    /// Every `.avsc` file, by name.
    const SCHEMA_FILES: [(&str, &str); 11] = [
        ("raw_webhook.avsc", include_str!("../../../schemas/raw_webhook.avsc")),
        ("raw_webhook.v1.avsc", include_str!("../../../schemas/raw_webhook.v1.avsc")),
        ("call_event.avsc", include_str!("../../../schemas/call_event.avsc")),
        ("call_event.v1.avsc", include_str!("../../../schemas/call_event.v1.avsc")),
        ("call_event.v2.avsc", include_str!("../../../schemas/call_event.v2.avsc")),
        ("call_event.v3.avsc", include_str!("../../../schemas/call_event.v3.avsc")),
        ("call_record.avsc", include_str!("../../../schemas/call_record.avsc")),
        ("call_record.v1.avsc", include_str!("../../../schemas/call_record.v1.avsc")),
        ("call_record.v2.avsc", include_str!("../../../schemas/call_record.v2.avsc")),
        ("dead_letter.avsc", include_str!("../../../schemas/dead_letter.avsc")),
        ("agent_status.avsc", include_str!("../../../schemas/agent_status.avsc")),
    ];

    #[test]
    fn every_schema_file_is_compiled_in_and_listed_here() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("schemas dir")
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".avsc"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SCHEMA_FILES.iter().map(|(name, _)| (*name).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed, "a schema file the codecs (and these tests) do not know");
    }

    /// Every rule of the specification on one schema. Apache Avro's Java `SchemaNormalization`
    /// gives the same text for it (checked by hand with `size` as a number: Java's parser refuses
    /// a quoted one).
    #[test]
    fn canonical_form_follows_the_specification() {
        let text = r#"{"namespace": "a.b", "type": "record", "name": "R", "doc": "d", "aliases": ["Q"],
          "fields": [
            {"name": "t", "type": {"type": "long", "logicalType": "timestamp-micros"}, "default": 0, "doc": "x"},
            {"type": {"type": "fixed", "size": "016", "name": "F", "namespace": "c"}, "name": "f", "order": "descending"},
            {"name": "e", "type": ["null", {"symbols": ["X", "Y"], "type": "enum", "name": "E", "default": "X"}], "default": null},
            {"name": "g", "type": "c.F"},
            {"name": "h", "type": {"type": "array", "items": "E"}},
            {"name": "m", "type": {"type": "map", "values": {"type": "string", "avro.java.string": "String"}}},
            {"name": "n", "type": {"type": "record", "name": "x.N", "fields": [
              {"name": "k", "type": {"type": "enum", "name": "K", "symbols": ["A"]}},
              {"name": "d", "type": {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2}}]}},
            {"name": "r", "type": "a.b.R"},
            {"name": "z", "type": {"type": "fixed", "name": "Z", "namespace": "", "size": 1}},
            {"name": "y", "type": "Z"}
          ]}"#;
        let expected = concat!(
            r#"{"name":"a.b.R","type":"record","fields":["#,
            r#"{"name":"t","type":"long"},"#,
            r#"{"name":"f","type":{"name":"c.F","type":"fixed","size":16}},"#,
            r#"{"name":"e","type":["null",{"name":"a.b.E","type":"enum","symbols":["X","Y"]}]},"#,
            r#"{"name":"g","type":"c.F"},"#,
            r#"{"name":"h","type":{"type":"array","items":"a.b.E"}},"#,
            r#"{"name":"m","type":{"type":"map","values":"string"}},"#,
            r#"{"name":"n","type":{"name":"x.N","type":"record","fields":["#,
            r#"{"name":"k","type":{"name":"x.K","type":"enum","symbols":["A"]}},"#,
            r#"{"name":"d","type":"bytes"}]}},"#,
            r#"{"name":"r","type":"a.b.R"},"#,
            r#"{"name":"z","type":{"name":"Z","type":"fixed","size":1}},"#,
            r#"{"name":"y","type":"Z"}"#,
            "]}"
        );
        assert_eq!(parsing_canonical_form(text).expect("canonical form"), expected);
        for bad in
            ["", "1", r#"{"name":"x"}"#, r#"{"type":"record","fields":[]}"#, r#"{"type":"enum","name":"E"}"#]
        {
            assert!(parsing_canonical_form(bad).is_err(), "{bad:?} is not a schema");
        }
    }

    /// Removes every `logicalType` attribute: apache-avro's canonical form is the specification's
    /// for everything else, so this is an independent check of ours and of our Rabin.
    fn without_logical_types(value: &mut Value) {
        match value {
            Value::Object(map) => {
                let _ = map.remove("logicalType");
                map.values_mut().for_each(without_logical_types);
            }
            Value::Array(items) => items.iter_mut().for_each(without_logical_types),
            _ => {}
        }
    }

    #[test]
    fn without_logical_types_our_canonical_form_and_fingerprint_are_apache_avros() {
        for (file, text) in SCHEMA_FILES {
            let mut json: Value = serde_json::from_str(text).expect("json");
            without_logical_types(&mut json);
            let plain = json.to_string();
            let theirs = Schema::parse_str(&plain).expect("parse");
            let ours = parsing_canonical_form(&plain).expect("canonical form");
            assert_eq!(ours, theirs.canonical_form(), "{file}");
            assert_eq!(fingerprint64(ours.as_bytes()), legacy_fingerprint(&theirs), "{file}: Rabin");
        }
    }

    /// Adds a `doc` and a custom attribute to every object, which the canonical form drops.
    fn documented(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.values_mut().for_each(documented);
                let _ = map.insert("doc".into(), "added \u{e9}\u{2019} \"doc\"".into());
                let _ = map.insert("zz-custom".into(), serde_json::json!({"type": "int"}));
            }
            Value::Array(items) => items.iter_mut().for_each(documented),
            _ => {}
        }
    }

    #[test]
    fn canonical_form_ignores_layout_documentation_and_attribute_order() {
        for (file, text) in SCHEMA_FILES {
            let canonical = parsing_canonical_form(text).expect("canonical form");
            assert!(!canonical.contains(char::is_whitespace), "{file}: no whitespace");
            for stripped in ["logicalType", "doc", "namespace", "default", "aliases"] {
                assert!(!canonical.contains(&format!("\"{stripped}\":")), "{file}: no {stripped}");
            }
            let mut json: Value = serde_json::from_str(text).expect("json");
            documented(&mut json);
            // serde_json's map sorts keys, so this also reorders every object's attributes.
            for variant in [json.to_string(), serde_json::to_string_pretty(&json).expect("pretty")] {
                assert_eq!(parsing_canonical_form(&variant).expect("canonical form"), canonical, "{file}");
            }
            assert_eq!(
                parsing_canonical_form(&canonical).expect("again"),
                canonical,
                "{file}: a fixed point"
            );
            let reparsed = EmbeddedSchema::parse(&canonical).expect("the canonical form is a schema");
            assert_eq!(reparsed.fingerprint, fingerprint64(canonical.as_bytes()));
        }
    }

    #[test]
    fn every_codec_reads_both_fingerprints_of_every_schema_it_knows() {
        let codecs = Codecs::new().expect("codecs");
        let known = |previous: &[(&'static EmbeddedSchema, GenericDatumReader<'static>)],
                     current: &'static EmbeddedSchema| {
            let mut all: Vec<&'static EmbeddedSchema> = previous.iter().map(|(s, _)| *s).collect();
            all.push(current);
            all
        };
        let families = [
            (known(&codecs.raw_webhook.previous, codecs.raw_webhook.schema()), 2),
            (known(&codecs.call_event.previous, codecs.call_event.schema()), 4),
            (known(&codecs.call_record.previous, codecs.call_record.schema()), 3),
            (known(&codecs.dead_letter.previous, codecs.dead_letter.schema()), 1),
            (known(&codecs.agent_status.previous, codecs.agent_status.schema()), 1),
        ];
        let mut seen = HashSet::new();
        for (schemas, versions) in families {
            assert_eq!(schemas.len(), versions);
            for schema in schemas {
                // Every schema here annotates a long with a logical type, where apache-avro's
                // canonical form went wrong.
                assert_ne!(schema.fingerprint, schema.legacy_fingerprint);
                assert!(seen.insert(schema.fingerprint) && seen.insert(schema.legacy_fingerprint), "unique");
                assert!(schema.wrote(schema.fingerprint) && schema.wrote(schema.legacy_fingerprint));
            }
        }
        assert_eq!(seen.len(), 2 * SCHEMA_FILES.len(), "every schema file is known to a codec");
    }

    /// `CallRecord` as `call_record.v1.avsc` had it: everything up to `legs`.
    #[derive(Serialize)]
    struct V1CallRecord {
        source_id: SourceId,
        vendor: Vendor,
        call_id: CallId,
        version: i64,
        status: CallStatus,
        outcome: Option<Outcome>,
        completion: Option<Completion>,
        #[serde(with = "crate::model::call_record::micros_opt")]
        completed_at: Option<chrono::DateTime<Utc>>,
        direction: Direction,
        from_number: Option<String>,
        to_number: Option<String>,
        #[serde(with = "micros")]
        started_at: chrono::DateTime<Utc>,
        #[serde(with = "crate::model::call_record::micros_opt")]
        answered_at: Option<chrono::DateTime<Utc>>,
        #[serde(with = "crate::model::call_record::micros_opt")]
        ended_at: Option<chrono::DateTime<Utc>>,
        duration_seconds: Option<i64>,
        talk_seconds: Option<i64>,
        disposition: Option<Disposition>,
        hangup_cause: Option<String>,
        agent: Option<AgentRef>,
        contact_ids: Vec<String>,
        contact_match: Option<ContactMatch>,
        responsible_agent_id: Option<String>,
        recording_url: Option<String>,
        recording_id: Option<String>,
        legs: Vec<LegRecord>,
    }

    impl From<&CallRecord> for V1CallRecord {
        fn from(r: &CallRecord) -> Self {
            let r = r.clone();
            Self {
                source_id: r.source_id,
                vendor: r.vendor,
                call_id: r.call_id,
                version: r.version,
                status: r.status,
                outcome: r.outcome,
                completion: r.completion,
                completed_at: r.completed_at,
                direction: r.direction,
                from_number: r.from_number,
                to_number: r.to_number,
                started_at: r.started_at,
                answered_at: r.answered_at,
                ended_at: r.ended_at,
                duration_seconds: r.duration_seconds,
                talk_seconds: r.talk_seconds,
                disposition: r.disposition,
                hangup_cause: r.hangup_cause,
                agent: r.agent,
                contact_ids: r.contact_ids,
                contact_match: r.contact_match,
                responsible_agent_id: r.responsible_agent_id,
                recording_url: r.recording_url,
                recording_id: r.recording_id,
                legs: r.legs,
            }
        }
    }

    /// `CallEvent` as `call_event.v2.avsc` had it: everything up to `responsible_agent_id`.
    #[derive(Serialize)]
    struct V2CallEvent {
        event_id: EventId,
        raw_id: String,
        source_id: SourceId,
        vendor: Vendor,
        call_id: CallId,
        leg_id: Option<LegId>,
        kind: EventKind,
        direction: Direction,
        from_raw: Option<String>,
        from_e164: Option<PhoneNumber>,
        to_raw: Option<String>,
        to_e164: Option<PhoneNumber>,
        agent_number: Option<String>,
        agent_email: Option<String>,
        agent_extension: Option<String>,
        #[serde(with = "micros")]
        occurred_at: chrono::DateTime<Utc>,
        #[serde(with = "micros")]
        received_at: chrono::DateTime<Utc>,
        sequence: Option<i64>,
        hangup_cause: Option<String>,
        recording_url: Option<String>,
        disposition: Option<Disposition>,
        recording_id: Option<String>,
        agent_id: Option<String>,
        agent_match: Option<AgentMatch>,
        contact_ids: Vec<String>,
        contact_match: Option<ContactMatch>,
        responsible_agent_id: Option<String>,
    }

    impl From<&CallEvent> for V2CallEvent {
        fn from(e: &CallEvent) -> Self {
            let e = e.clone();
            Self {
                event_id: e.event_id,
                raw_id: e.raw_id,
                source_id: e.source_id,
                vendor: e.vendor,
                call_id: e.call_id,
                leg_id: e.leg_id,
                kind: e.kind,
                direction: e.direction,
                from_raw: e.from_raw,
                from_e164: e.from_e164,
                to_raw: e.to_raw,
                to_e164: e.to_e164,
                agent_number: e.agent_number,
                agent_email: e.agent_email,
                agent_extension: e.agent_extension,
                occurred_at: e.occurred_at,
                received_at: e.received_at,
                sequence: e.sequence,
                hangup_cause: e.hangup_cause,
                recording_url: e.recording_url,
                disposition: e.disposition,
                recording_id: e.recording_id,
                agent_id: e.agent_id,
                agent_match: e.agent_match,
                contact_ids: e.contact_ids,
                contact_match: e.contact_match,
                responsible_agent_id: e.responsible_agent_id,
            }
        }
    }

    /// `CallEvent` as `call_event.v1.avsc` had it, serialised field by field like that schema.
    #[derive(Serialize)]
    struct OlderCallEvent {
        event_id: EventId,
        raw_id: String,
        source_id: SourceId,
        vendor: Vendor,
        call_id: CallId,
        leg_id: Option<LegId>,
        kind: EventKind,
        direction: Direction,
        from_raw: Option<String>,
        from_e164: Option<PhoneNumber>,
        to_raw: Option<String>,
        to_e164: Option<PhoneNumber>,
        agent_number: Option<String>,
        agent_email: Option<String>,
        #[serde(with = "micros")]
        occurred_at: chrono::DateTime<Utc>,
        #[serde(with = "micros")]
        received_at: chrono::DateTime<Utc>,
        sequence: Option<i64>,
        hangup_cause: Option<String>,
        recording_url: Option<String>,
    }

    impl From<&CallEvent> for OlderCallEvent {
        fn from(e: &CallEvent) -> Self {
            let e = e.clone();
            Self {
                event_id: e.event_id,
                raw_id: e.raw_id,
                source_id: e.source_id,
                vendor: e.vendor,
                call_id: e.call_id,
                leg_id: e.leg_id,
                kind: e.kind,
                direction: e.direction,
                from_raw: e.from_raw,
                from_e164: e.from_e164,
                to_raw: e.to_raw,
                to_e164: e.to_e164,
                agent_number: e.agent_number,
                agent_email: e.agent_email,
                occurred_at: e.occurred_at,
                received_at: e.received_at,
                sequence: e.sequence,
                hangup_cause: e.hangup_cause,
                recording_url: e.recording_url,
            }
        }
    }
}
