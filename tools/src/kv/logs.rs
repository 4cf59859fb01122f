//! The node's logs (ringraft's `tracing` events and the node's own) on standard error, through
//! `tracing-subscriber`: one line per event, each starting with an RFC 3339 timestamp in UTC
//! (microseconds), so that they line up with client histories and other nodes' logs.
//!
//! What is printed comes from `--log-level` (or `RINGRAFT_LOG`, or `log_level` in the config
//! file), an `EnvFilter`: a level (`off`, `error`, `warn`, `info`, `debug`, `trace`; default
//! `info`) or directives such as `info,ringraft::core=debug`. At `info` a node reports its role
//! changes, elections, leaders, configuration changes, peer connections, snapshots and
//! shutdown, a few lines per event and none per request. Text lines look like
//!
//! ```text
//! 2026-12-05T18:04:24.123456Z  INFO ringraft::node::metrics: election won: leading node=1 term=2
//! ```
//!
//! and with `--log-format json` each line is a JSON object with `timestamp`, `level`,
//! `target` and `fields` (the message and the event's fields).

use clap::ValueEnum;
use serde::Deserialize;
use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The environment variable that sets the filter (as `--log-level` does).
pub const LEVEL_VARIABLE: &str = "RINGRAFT_LOG";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL target: message field=value ...`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// What to log and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// An `EnvFilter` (`info`, `info,ringraft::core=debug`).
    pub filter: String,
    /// Text or JSON lines.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            filter: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// The subscriber `settings` describe, writing to `writer`. Fails on a malformed filter.
pub fn subscriber<W>(
    settings: &LogSettings,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, String>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .parse(&settings.filter)
        .map_err(|e| format!("--log-level {}: {e}", settings.filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    Ok(match settings.format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().finish()),
    })
}

/// Installs the standard-error subscriber as the process's default. Fails on a malformed
/// filter or if a subscriber is already set.
pub fn install(settings: &LogSettings) -> Result<(), String> {
    tracing::subscriber::set_global_default(subscriber(settings, std::io::stderr)?)
        .map_err(|e| format!("installing the log subscriber: {e}"))
}

/// Whether `text` is a timestamp as these logs write it: RFC 3339 in UTC,
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn is_rfc3339_utc(text: &str) -> bool {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    b.len() >= 20
        && digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && text.ends_with('Z')
        && (b.len() == 20 || (at(19, b'.') && b.len() > 21 && digits(20..b.len() - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;

        fn make_writer(&'a self) -> Capture {
            self.clone()
        }
    }

    fn lines(filter: &str, format: LogFormat) -> Vec<String> {
        let capture = Capture::default();
        let settings = LogSettings {
            filter: filter.into(),
            format,
        };
        let subscriber = subscriber(&settings, capture.clone()).expect("valid filter");
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "ringraft::node", node = 1, peer = "a", "connected to peer");
            tracing::debug!(target: "ringraft::core", term = 2, "vote requested");
            tracing::debug!(target: "ringraft::node", "not shown");
        });
        let bytes = capture.0.lock().expect("lock").clone();
        String::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .map(String::from)
            .collect()
    }

    #[test]
    fn text_lines_start_with_a_utc_timestamp_and_the_filter_applies() {
        let lines = lines("info,ringraft::core=debug", LogFormat::Text);
        assert_eq!(lines.len(), 2, "{lines:?}");
        for line in &lines {
            let (timestamp, _) = line.split_once(' ').expect("a timestamp, then the event");
            assert!(is_rfc3339_utc(timestamp), "{line}");
        }
        assert!(lines[0].ends_with("INFO ringraft::node: connected to peer node=1 peer=\"a\""));
        assert!(lines[1].contains("DEBUG ringraft::core: vote requested term=2"));
    }

    #[test]
    fn json_lines_are_objects_with_a_timestamp() {
        let lines = lines("info", LogFormat::Json);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
        assert!(
            is_rfc3339_utc(v["timestamp"].as_str().expect("timestamp")),
            "{v}"
        );
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["message"], "connected to peer");
        assert_eq!(v["fields"]["node"], 1);
    }

    #[test]
    fn timestamps_are_recognised() {
        assert!(is_rfc3339_utc("2026-12-05T18:04:24.123456Z"));
        assert!(is_rfc3339_utc("2026-12-05T18:04:24Z"));
        assert!(!is_rfc3339_utc("2026-12-05T18:04:24.123456+01:00"));
        assert!(!is_rfc3339_utc("2026-12-05 18:04:24Z"));
        assert!(!is_rfc3339_utc("2026-12-05T18:04:24.Z"));
        assert!(!is_rfc3339_utc("INFO"));
    }

    #[test]
    fn a_malformed_filter_is_refused() {
        let settings = LogSettings {
            filter: "info,ringraft=loud".into(),
            format: LogFormat::Text,
        };
        let e = subscriber(&settings, std::io::stderr)
            .err()
            .expect("refused");
        assert!(e.contains("--log-level info,ringraft=loud"), "{e}");
    }
}
