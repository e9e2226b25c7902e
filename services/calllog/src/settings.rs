//! The call-log writer's own section of the configuration: `[calllog]`, `SWITCHBOARD_CALLLOG__…`.

use serde::{Deserialize, Serialize};
use switchboard_core::config::{Section, Settings};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CalllogSettings {
    /// Most events written in one database transaction.
    pub batch_max: usize,
    /// How long the writer waits to fill a batch once it has one event.
    pub batch_linger_ms: u64,
    /// A call with no end marker is complete (and published) once no new event has arrived for
    /// this long, provided it was answered or has ended; a later event updates it again.
    pub settle_ms: u64,
    /// The same for a call that is still ringing: longer, so that a caller waiting in a queue
    /// is not reported missed while they wait.
    pub ringing_settle_ms: u64,
    /// Batches a writer has in the database at once (each its own transaction); offsets are
    /// still stored in order. 1 writes strictly one batch after another.
    pub batches_in_flight: usize,
    /// Calls whose events a writer keeps in memory while they are in progress, so that a call's
    /// next batch folds without reading it back; 0 reads every call back.
    pub fold_cache_calls: usize,
    /// Most events one call keeps: every batch refolds a call from all its events, so a call that
    /// grew without bound (a PBX stuck resending a leg's event under new ids) would make each of
    /// its batches slower than the last. Events beyond go to the dead-letter topic with the reason.
    pub max_events_per_call: usize,
}

impl Default for CalllogSettings {
    fn default() -> Self {
        Self {
            batch_max: 1_000,
            batch_linger_ms: 20,
            settle_ms: 60_000,
            ringing_settle_ms: 3_600_000,
            batches_in_flight: 2,
            fold_cache_calls: 50_000,
            max_events_per_call: 10_000,
        }
    }
}

impl Section for CalllogSettings {
    const NAME: &'static str = "calllog";

    fn validate(&self, _shared: &Settings) -> Result<(), String> {
        if !(1..=16).contains(&self.batches_in_flight) {
            return Err("batches_in_flight must be 1..=16".into());
        }
        if self.max_events_per_call == 0 || self.batch_max == 0 {
            return Err("max_events_per_call and batch_max must be at least 1".into());
        }
        if self.settle_ms < 100 || self.ringing_settle_ms < self.settle_ms {
            return Err("settle_ms must be at least 100 and ringing_settle_ms at least settle_ms".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use switchboard_core::config::Settings;

    use super::*;

    #[test]
    fn calllog_settings_are_validated() {
        let load = |vars: &[(&str, &str)]| {
            Settings::section_from_vars::<CalllogSettings, _, _>(vars.iter().copied())
        };
        assert_eq!(load(&[("SWITCHBOARD_CALLLOG__BATCH_MAX", "50")]).expect("valid").batch_max, 50);
        assert!(load(&[("SWITCHBOARD_CALLLOG__BATCH_MAX", "0")]).is_err());
        assert!(load(&[("SWITCHBOARD_CALLLOG__BATCHES_IN_FLIGHT", "17")]).is_err());
        assert!(load(&[("SWITCHBOARD_CALLLOG__RINGING_SETTLE_MS", "100")]).is_err(), "below settle_ms");
    }
}
