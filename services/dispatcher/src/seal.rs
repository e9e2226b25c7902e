//! Profile secrets at rest: sealed with `dispatcher.secrets_key` by the one sealer every service
//! uses ([`switchboard_core::seal`]).

pub use switchboard_core::seal::{SealError, Sealer};
