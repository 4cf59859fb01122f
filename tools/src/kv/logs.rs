//! ringraft's `tracing` logs on standard error: a minimal subscriber, so the example needs no
//! logging framework.
//!
//! The level comes from the environment variable `RINGRAFT_LOG` (`off`, `error`, `warn`,
//! `info`, `debug` or `trace`; default `info`): at `info` a node reports its role changes,
//! elections, leaders, configuration changes, peer connections, snapshots and shutdown, a few
//! lines per event and none per request. Lines look like
//!
//! ```text
//! ringraft-kv: INFO ringraft::node::metrics: election won: leading node=1 term=2
//! ```

use std::fmt::{self, Write as _};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// The environment variable that sets the level.
pub const LEVEL_VARIABLE: &str = "RINGRAFT_LOG";

/// Parses a level name (see the module docs).
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    match text.trim().to_ascii_lowercase().as_str() {
        "off" => Some(LevelFilter::OFF),
        "error" => Some(LevelFilter::ERROR),
        "warn" => Some(LevelFilter::WARN),
        "info" => Some(LevelFilter::INFO),
        "debug" => Some(LevelFilter::DEBUG),
        "trace" => Some(LevelFilter::TRACE),
        _ => None,
    }
}

/// Installs the stderr subscriber as the process's default, at the level `RINGRAFT_LOG` names
/// (`info` when unset). Fails on an unknown level name or if a subscriber is already set.
pub fn install() -> Result<(), String> {
    let level = match std::env::var(LEVEL_VARIABLE) {
        Ok(text) => parse_level(&text).ok_or_else(|| {
            format!("{LEVEL_VARIABLE}={text}: expected off, error, warn, info, debug or trace")
        })?,
        Err(_) => LevelFilter::INFO,
    };
    tracing::subscriber::set_global_default(StderrLogger { level })
        .map_err(|e| format!("installing the log subscriber: {e}"))
}

/// Writes each enabled event as one line on standard error. Spans are not tracked (ringraft
/// logs events only).
struct StderrLogger {
    level: LevelFilter,
}

impl Subscriber for StderrLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level >= *metadata.level()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }

    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _span: &Id, _values: &Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let mut line = Line::default();
        event.record(&mut line);
        eprintln!(
            "ringraft-kv: {} {}: {}{}",
            metadata.level(),
            metadata.target(),
            line.message,
            line.fields
        );
    }

    fn enter(&self, _span: &Id) {}

    fn exit(&self, _span: &Id) {}
}

/// An event's message and its other fields as ` name=value`.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_parse_and_unknown_ones_do_not() {
        assert_eq!(parse_level("INFO"), Some(LevelFilter::INFO));
        assert_eq!(parse_level(" debug "), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("off"), Some(LevelFilter::OFF));
        assert_eq!(parse_level("loud"), None);
    }

    #[test]
    fn an_event_becomes_its_message_and_fields() {
        struct Capture(std::sync::Mutex<Vec<String>>);
        impl Subscriber for Capture {
            fn enabled(&self, _: &Metadata<'_>) -> bool {
                true
            }
            fn new_span(&self, _: &Attributes<'_>) -> Id {
                Id::from_u64(1)
            }
            fn record(&self, _: &Id, _: &Record<'_>) {}
            fn record_follows_from(&self, _: &Id, _: &Id) {}
            fn event(&self, event: &Event<'_>) {
                let mut line = Line::default();
                event.record(&mut line);
                let mut lines = self.0.lock().expect("lock");
                lines.push(format!("{}{}", line.message, line.fields));
            }
            fn enter(&self, _: &Id) {}
            fn exit(&self, _: &Id) {}
        }
        let capture = std::sync::Arc::new(Capture(std::sync::Mutex::new(Vec::new())));
        tracing::subscriber::with_default(capture.clone(), || {
            tracing::info!(node = 1, peer = "a", "connected to peer");
        });
        let lines = capture.0.lock().expect("lock").clone();
        assert_eq!(lines, vec!["connected to peer node=1 peer=a".to_string()]);
    }
}
