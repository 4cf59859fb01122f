//! `Deserialize` for [`Config`] (the `serde` feature).
//!
//! Field names are [`Config`]'s. Only `local_id` is required; a missing field keeps
//! [`Config::new`]'s (hashicorp's) default, and an unknown field is an error (a misspelt
//! setting should not silently keep its default). Durations are either a number of
//! milliseconds (`150`) or a string of one or more `<number><unit>` parts with units `ns`,
//! `us`, `ms`, `s`, `m`, `h` (`"150ms"`, `"1m30s"`, hashicorp's Go duration syntax). The result
//! is not validated: [`Config::validate`] (or `Raft::new`) does that. In JSON, say:
//! `{"local_id": 1, "heartbeat_timeout": "500ms", "election_timeout": 500}`.

use super::Config;
use ringraft_storage::NodeId;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Millis(u64),
    Text(String),
}

/// Parses hashicorp's (Go's) duration syntax, without signs or fractions: `"1m30s"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (expected e.g. \"150ms\", \"1m30s\")");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        let nanos = value.checked_mul(nanos_per).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_nanos(nanos))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match DurationRepr::deserialize(d)? {
        DurationRepr::Millis(ms) => Ok(Some(Duration::from_millis(ms))),
        DurationRepr::Text(text) => parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    local_id: u64,
    #[serde(default, deserialize_with = "duration")]
    heartbeat_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    election_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    commit_timeout: Option<Duration>,
    max_append_entries: Option<usize>,
    shutdown_on_remove: Option<bool>,
    trailing_logs: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    snapshot_interval: Option<Duration>,
    snapshot_threshold: Option<u64>,
    snapshot_memory_threshold: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    leader_lease_timeout: Option<Duration>,
    no_snapshot_restore_on_start: Option<bool>,
    pre_vote_disabled: Option<bool>,
    lease_read: Option<bool>,
    #[serde(default, deserialize_with = "duration")]
    clock_drift_bound: Option<Duration>,
    max_inflight: Option<usize>,
    submission_queue_capacity: Option<usize>,
    shard_cpu: Option<usize>,
    /// "adaptive", "shard_thread" or "own_thread".
    apply_placement: Option<String>,
    /// The older switch: `true` is "shard_thread", `false` "own_thread".
    apply_on_shard_thread: Option<bool>,
}

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Config, D::Error> {
        let raw = Raw::deserialize(deserializer)?;
        let mut c = Config::new(NodeId(raw.local_id));
        macro_rules! set {
            ($($field:ident),*) => {
                $(if let Some(v) = raw.$field { c.$field = v; })*
            };
        }
        set!(
            heartbeat_timeout,
            election_timeout,
            commit_timeout,
            max_append_entries,
            shutdown_on_remove,
            trailing_logs,
            snapshot_interval,
            snapshot_threshold,
            snapshot_memory_threshold,
            leader_lease_timeout,
            no_snapshot_restore_on_start,
            pre_vote_disabled,
            lease_read,
            clock_drift_bound,
            max_inflight,
            submission_queue_capacity
        );
        c.shard_cpu = raw.shard_cpu;
        use super::config::ApplyPlacement;
        c.apply_placement = match (raw.apply_placement.as_deref(), raw.apply_on_shard_thread) {
            (Some(_), Some(_)) => {
                return Err(serde::de::Error::custom(
                    "give apply_placement or apply_on_shard_thread, not both",
                ))
            }
            (Some("adaptive"), None) => ApplyPlacement::Adaptive,
            (Some("shard_thread"), None) => ApplyPlacement::ShardThread,
            (Some("own_thread"), None) => ApplyPlacement::OwnThread,
            (Some(other), None) => {
                return Err(serde::de::Error::custom(format!(
                    "apply_placement: unknown placement {other:?} (expected \"adaptive\", \
                     \"shard_thread\" or \"own_thread\")"
                )))
            }
            (None, Some(true)) => ApplyPlacement::ShardThread,
            (None, Some(false)) => ApplyPlacement::OwnThread,
            (None, None) => ApplyPlacement::Adaptive,
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_in_go_syntax() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("150ms"), Ok(ms(150)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("2h"), Ok(ms(7_200_000)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_duration("3µs"), Ok(Duration::from_micros(3)));
        for bad in [
            "",
            "ms",
            "10",
            "1.5s",
            "-1s",
            "10 parsecs",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
