//! Avro on the wire, and nowhere else.
//!
//! Every record value on every topic is Avro *single-object encoding* (Avro specification,
//! "Single object encoding"): the two bytes `C3 01`, the 8-byte little-endian CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema's canonical form, then the binary datum. A consumer
//! identifies the writer schema from the fingerprint alone, with no schema registry, and the
//! schemas themselves live in `schemas/*.avsc`.
//!
//! Records written with the current schema decode straight into the Rust type (the fast serde
//! path of apache-avro 0.22). Records written with an earlier schema that a codec was told about
//! are decoded with that schema and resolved to the current one, which is how fields can be
//! added with defaults without stopping the pipeline.

use std::marker::PhantomData;
use std::sync::LazyLock;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{CallEvent, CallRecord, DeadLetter, RawWebhook};

const MAGIC: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

pub static RAW_WEBHOOK_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/raw_webhook.avsc")));
pub static CALL_EVENT_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.avsc")));
/// Schemas records may still be written in by an older release (see `schemas/README.md`).
pub static RAW_WEBHOOK_V1_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/raw_webhook.v1.avsc")));
pub static CALL_EVENT_V1_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.v1.avsc")));
/// `CallEvent` before the recordings stage added `recording_status` and `recording_error`.
pub static CALL_EVENT_V2_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_event.v2.avsc")));
/// `CallRecord` before `recording_status` and `recording_error`.
pub static CALL_RECORD_V1_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_record.v1.avsc")));
pub static DEAD_LETTER_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/dead_letter.avsc")));
pub static CALL_RECORD_SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| parse_embedded(include_str!("../../../schemas/call_record.avsc")));

fn parse_embedded(text: &str) -> Schema {
    // The schemas are compiled into the binary and covered by unit tests, so a parse failure is
    // a build defect, not a runtime condition.
    #[allow(clippy::expect_used)]
    Schema::parse_str(text).expect("embedded Avro schema must parse")
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
}

fn fingerprint(schema: &Schema) -> u64 {
    let bytes = schema.fingerprint::<Rabin>().bytes;
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(le)
}

/// Encoder and decoder for one record type.
pub struct Codec<T> {
    schema: &'static Schema,
    fingerprint: u64,
    writer: GenericDatumWriter<'static>,
    reader: GenericDatumReader<'static>,
    /// Earlier writer schemas still accepted, each with a reader that resolves to `schema`.
    previous: Vec<(u64, GenericDatumReader<'static>)>,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Codec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("schema", &self.schema.name().map(|n| n.to_string()))
            .field("fingerprint", &format_args!("{:016x}", self.fingerprint))
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> Codec<T> {
    fn new(schema: &'static Schema) -> Result<Self, CodecError> {
        let writer =
            GenericDatumWriter::builder(schema).human_readable(false).build().map_err(CodecError::Encode)?;
        let reader =
            GenericDatumReader::builder(schema).human_readable(false).build().map_err(CodecError::Decode)?;
        Ok(Self {
            schema,
            fingerprint: fingerprint(schema),
            writer,
            reader,
            previous: Vec::new(),
            _type: PhantomData,
        })
    }

    /// Also accept records written with `older`, resolving them to the current schema.
    pub fn accept_previous(mut self, older: &'static Schema) -> Result<Self, CodecError> {
        let reader = GenericDatumReader::builder(older)
            .reader_schema(self.schema)
            .human_readable(false)
            .build()
            .map_err(CodecError::Decode)?;
        self.previous.push((fingerprint(older), reader));
        Ok(self)
    }

    pub fn encode(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.fingerprint.to_le_bytes());
        let _ = self.writer.write_ser(&mut out, value).map_err(CodecError::Encode)?;
        Ok(out)
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() < HEADER_LEN || bytes[..2] != MAGIC {
            return Err(CodecError::NotSingleObject);
        }
        let mut fp = [0u8; 8];
        fp.copy_from_slice(&bytes[2..HEADER_LEN]);
        let fp = u64::from_le_bytes(fp);
        let mut datum = &bytes[HEADER_LEN..];
        let value = if fp == self.fingerprint {
            self.reader.read_deser::<T>(&mut datum).map_err(CodecError::Decode)?
        } else {
            let (_, reader) =
                self.previous.iter().find(|(known, _)| *known == fp).ok_or(CodecError::UnknownSchema(fp))?;
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
}

impl Codecs {
    pub fn new() -> Result<Self, CodecError> {
        Ok(Self {
            raw_webhook: Codec::new(&RAW_WEBHOOK_SCHEMA)?.accept_previous(&RAW_WEBHOOK_V1_SCHEMA)?,
            call_event: Codec::new(&CALL_EVENT_SCHEMA)?
                .accept_previous(&CALL_EVENT_V1_SCHEMA)?
                .accept_previous(&CALL_EVENT_V2_SCHEMA)?,
            dead_letter: Codec::new(&DEAD_LETTER_SCHEMA)?,
            call_record: Codec::new(&CALL_RECORD_SCHEMA)?.accept_previous(&CALL_RECORD_V1_SCHEMA)?,
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
        }
    }

    #[test]
    fn call_event_round_trips() {
        let codecs = Codecs::new().expect("codecs");
        let event = sample_event();
        let bytes = codecs.call_event.encode(&event).expect("encode");
        assert_eq!(&bytes[..2], &MAGIC);
        assert_eq!(codecs.call_event.decode(&bytes).expect("decode"), event);
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
        let back = codecs.raw_webhook.decode(&bytes).expect("decode");
        assert_eq!(back.body, raw.body);
        assert_eq!(back.received_at.timestamp_micros(), raw.received_at.timestamp_micros());

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
        let back = codecs.dead_letter.decode(&codecs.dead_letter.encode(&dead).expect("encode"));
        assert_eq!(back.expect("decode").payload, dead.payload);
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
        let older: &'static Schema = &CALL_EVENT_V1_SCHEMA;
        let mut event = sample_event();
        (event.agent_extension, event.disposition, event.recording_id) = (None, None, None);
        (event.agent_id, event.agent_match, event.contact_match) = (None, None, None);
        (event.recording_status, event.recording_error) = (None, None);
        event.contact_ids.clear();
        let old_writer = GenericDatumWriter::builder(older).human_readable(false).build().expect("w");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&fingerprint(older).to_le_bytes());
        let _ = old_writer.write_ser(&mut bytes, &OlderCallEvent::from(&event)).expect("write");

        let plain = Codec::<CallEvent>::new(&CALL_EVENT_SCHEMA).expect("codec");
        assert!(matches!(plain.decode(&bytes), Err(CodecError::UnknownSchema(_))));
        let evolving = Codecs::new().expect("codecs").call_event;
        assert_eq!(evolving.decode(&bytes).expect("resolved"), event);
    }

    /// Writes `value` as `older` would have: the single-object header with that schema's
    /// fingerprint, then the datum.
    fn written_with<T: Serialize>(older: &'static Schema, value: &T) -> Vec<u8> {
        let old_writer = GenericDatumWriter::builder(older).human_readable(false).build().expect("w");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&fingerprint(older).to_le_bytes());
        let _ = old_writer.write_ser(&mut bytes, value).expect("write");
        bytes
    }

    #[test]
    fn call_events_from_before_the_recording_status_resolve_to_none() {
        let mut event = sample_event();
        (event.recording_status, event.recording_error) = (None, None);
        let bytes = written_with(&CALL_EVENT_V2_SCHEMA, &V2CallEvent::from(&event));
        let plain = Codec::<CallEvent>::new(&CALL_EVENT_SCHEMA).expect("codec");
        assert!(matches!(plain.decode(&bytes), Err(CodecError::UnknownSchema(_))), "a different schema");
        assert_eq!(Codecs::new().expect("codecs").call_event.decode(&bytes).expect("resolved"), event);
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
        };
        let bytes = codecs.call_record.encode(&record).expect("encode");
        assert_eq!(codecs.call_record.decode(&bytes).expect("decode"), record);

        let older = CallRecord { recording_status: None, recording_error: None, ..record };
        let bytes = written_with(&CALL_RECORD_V1_SCHEMA, &V1CallRecord::from(&older));
        assert_eq!(codecs.call_record.decode(&bytes).expect("resolved"), older);
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
