//! Warnings and banners for a person: on standard error as ssh prints them when the
//! forwarder runs as a command, and as log events when `forwarder serve` logs one JSON object
//! per line, where a bare line would break every log shipper reading it.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

static STRUCTURED: AtomicBool = AtomicBool::new(false);

/// From now on, notices are log events (called by `forwarder serve` when it sets up logging).
pub fn use_log_events() {
    STRUCTURED.store(true, Ordering::Relaxed);
}

fn structured() -> bool {
    STRUCTURED.load(Ordering::Relaxed)
}

/// `forwarder: warning: <text>` on standard error, or a WARN event.
pub fn warning(text: impl Display) {
    if structured() {
        tracing::warn!("{text}");
    } else {
        eprintln!("forwarder: warning: {text}");
    }
}

/// The server's pre-login banner (already sanitized): as it came, on standard error, as
/// OpenSSH shows it; or an INFO event with the text in a field. Not shown below INFO (`-q`).
pub fn banner(text: &str) {
    if !tracing::enabled!(tracing::Level::INFO) {
        return;
    }
    if structured() {
        tracing::info!(banner = %text.trim_end(), "the server's banner");
    } else if text.ends_with('\n') {
        eprint!("{text}");
    } else {
        eprintln!("{text}");
    }
}
