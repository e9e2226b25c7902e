#![no_main]
//! Avro decoding of every topic's records (single-object encoding, the current schema or any
//! previous one still read): any bytes are a record or a decoding error, never a panic, and a
//! record that decodes encodes again in the current schema and decodes to the same record.

use std::sync::LazyLock;

use switchboard_core::avro::{Codec, Codecs};

static CODECS: LazyLock<Codecs> = LazyLock::new(|| match Codecs::new() {
    Ok(codecs) => codecs,
    Err(e) => panic!("the embedded schemas do not parse: {e}"),
});

fn round_trip<T>(codec: &Codec<T>, data: &[u8])
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(value) = codec.decode(data) else { return };
    let bytes = match codec.encode(&value) {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded record does not encode: {e}: {value:?}"),
    };
    match codec.decode(&bytes) {
        Ok(again) => assert_eq!(again, value),
        Err(e) => panic!("a re-encoded record does not decode: {e}: {value:?}"),
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let codecs = &*CODECS;
    round_trip(&codecs.raw_webhook, data);
    round_trip(&codecs.call_event, data);
    round_trip(&codecs.dead_letter, data);
    round_trip(&codecs.call_record, data);
    round_trip(&codecs.agent_status, data);
});
