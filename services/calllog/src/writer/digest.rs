//! The content hash: what tells the writer whether a call's record, or a leg's row, changed since
//! it was last written, without keeping the old value.

use sha2::{Digest, Sha256};
use switchboard_core::model::LegRecord;

/// A leg's hash is stored as 32 hex digits followed by its leg id.
pub(super) const LEG_HASH_HEX: usize = 32;

/// SHA-256 of what a value's `Hash` implementation feeds it: every field, in declaration order,
/// without serialising the value first (Avro or JSON encoding was most of the writer's CPU). The
/// stream is stable for a given build; a build that changes it only makes each call's next write
/// count as a change once.
struct FieldDigest(Sha256);

impl std::hash::Hasher for FieldDigest {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Never called: `field_digest` takes the whole SHA-256.
        0
    }
}

/// The first 16 bytes of the field digest of `value`.
pub(super) fn field_digest(value: &impl std::hash::Hash) -> [u8; 16] {
    let mut state = FieldDigest(Sha256::new());
    value.hash(&mut state);
    let mut out = [0; 16];
    // SHA-256 gives 32 bytes: `zip` stops after the first 16.
    for (byte, digest) in out.iter_mut().zip(state.0.finalize()) {
        *byte = digest;
    }
    out
}

/// What a leg row holds, hashed to tell whether it must be written again.
pub(super) fn leg_hash(leg: &LegRecord, event_count: i32) -> String {
    hex(&field_digest(&(leg, event_count))[..LEG_HASH_HEX / 2])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        // Writing to a `String` cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}
