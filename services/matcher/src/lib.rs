//! matcher: finds the agent and the customer of each call event.
//!
//! Input: normalised call events (`<prefix>normalized`). Output: the same events, enriched, on
//! `<prefix>matched`, keyed by call. Delivery: at least once, offsets stored after the produce is
//! acknowledged. Ordering: per call, as the input partition.
//!
//! Today it forwards events unchanged; directory matching (agent by extension/number then email,
//! customer by E.164 caller number) is the next step for this stage.

use switchboard_core::config::{Service, Settings};
use switchboard_core::forward::ForwardCallEvents;
use switchboard_core::service::{self, ServiceError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub async fn run(
    settings: Settings,
    listener: TcpListener,
    cancel: CancellationToken,
) -> Result<(), ServiceError> {
    service::run_stage(
        Service::Matcher,
        &settings,
        listener,
        |topics| &topics.normalized,
        |codecs, topics| ForwardCallEvents { codecs, output_topic: topics.matched.clone() },
        cancel,
    )
    .await
}
