//! A processor that checks each call event and forwards it unchanged: what the matcher and
//! recordings stages do until their own logic lands, so the topology is complete and every hop
//! already has the real commit discipline.

use std::sync::Arc;

use crate::avro::Codecs;
use crate::kafka::Outbound;
use crate::stage::{Inbound, Poison, Processor};

#[derive(Debug)]
pub struct ForwardCallEvents {
    pub codecs: Arc<Codecs>,
    pub output_topic: String,
}

impl Processor for ForwardCallEvents {
    async fn process(&self, record: &Inbound) -> Result<Vec<Outbound>, Poison> {
        // Decoding proves the record is a call event before anyone downstream relies on it.
        let event = self
            .codecs
            .call_event
            .decode(&record.payload)
            .map_err(|e| Poison::new("decode", e.to_string()))?;
        Ok(vec![Outbound {
            topic: self.output_topic.clone(),
            key: Some(event.partition_key().into_bytes()),
            payload: record.payload.clone(),
        }])
    }
}
