//! recordings: attaches recording links to call events.
//!
//! Input: matched call events (`<prefix>matched`). Output: the same events on
//! `<prefix>enriched`, keyed by call, which the call log and CRM subscribers read. Delivery: at
//! least once, offsets stored after the produce is acknowledged. Ordering: per call, as the
//! input partition.
//!
//! Today it forwards events unchanged (a recording URL in the event is kept as is); resolving
//! vendor recording ids into stable links is the next step for this stage.

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
        Service::Recordings,
        &settings,
        listener,
        |topics| &topics.matched,
        |codecs, topics| ForwardCallEvents { codecs, output_topic: topics.enriched.clone() },
        cancel,
    )
    .await
}
