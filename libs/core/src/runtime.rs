//! Process plumbing shared by every `main`: logging, the shutdown signal, exit codes.

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::LogSettings;

/// Exit code for a configuration error (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;
/// Exit code for a dependency that could not be reached at start-up (sysexits `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code for a failure while running (sysexits `EX_SOFTWARE`).
pub const EXIT_FAILURE: i32 = 70;

/// Installs the tracing subscriber. `RUST_LOG` wins over the configured filter.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless, so its error is ignored.
    let _ = if settings.format == "json" { builder.json().try_init() } else { builder.try_init() };
}

/// Cancels `token` on the first SIGINT or SIGTERM. A second signal is left to the default
/// handler's replacement: it exits at once, for an operator who does not want to wait.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("Shutdown signal received; draining.");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("Second signal received; exiting without draining.");
        std::process::exit(EXIT_FAILURE);
    });
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        // Without signal handlers the process can still be stopped with SIGKILL; never return,
        // so shutdown is not triggered by mistake.
        tracing::error!("Could not install signal handlers.");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
