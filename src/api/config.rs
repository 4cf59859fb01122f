//! [`Config`]: hashicorp's configuration fields and defaults, validated with its rules.

use super::error::ConfigError;
use crate::core::CoreConfig;
use ringraft_storage::NodeId;
use std::time::Duration;

/// A node's settings. [`Config::new`] gives hashicorp's defaults; [`Config::validate`] checks
/// hashicorp's rules (and ringraft's own), naming the offending field.
///
/// Mapping onto the consensus core: the core has one base election timeout `T` (a follower
/// campaigns after a random `[T, 2T)` without a leader; so does a candidate between rounds);
/// it is `election_timeout`, which `validate` keeps at or above `heartbeat_timeout`. A leader
/// sends heartbeats every `heartbeat_timeout / 10` (hashicorp: every `[HT/10, HT/5)`), and they
/// carry the commit index (so `commit_timeout` is not used). Unlike hashicorp, a leader does
/// not heartbeat a follower it keeps sending entries to, when `leader_lease_timeout` is at
/// least four heartbeat intervals (the default is five): that follower learns the commit index
/// of a burst's last write up to three heartbeat intervals after it, rather than one, and up to
/// five with a lease of seven intervals or more, which lets it go longer without heartbeats
/// (docs/ARCHITECTURE.md §4, "Heartbeats of a busy leader"). hashicorp's followers learn it
/// within one to two `CommitTimeout`s.
///
/// With the `serde` cargo feature, `Config` implements `serde::Deserialize`: only `local_id`
/// is required, missing fields keep these defaults, and durations are milliseconds (`150`) or
/// Go-style strings (`"150ms"`, `"1m30s"`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// This server's id, unique in the cluster forever (never 0).
    pub local_id: NodeId,
    /// A follower that hears no leader for this long (randomised up to twice) campaigns.
    /// Default 1 s. Must be at least 5 ms.
    pub heartbeat_timeout: Duration,
    /// A candidate's election round timeout (randomised up to twice). Default 1 s. At least
    /// 5 ms and at least `heartbeat_timeout`.
    pub election_timeout: Duration,
    /// hashicorp's idle re-send interval for the commit index. Default 50 ms; at least 1 ms.
    /// ringraft's heartbeats carry the commit index, so this is validated but not otherwise
    /// used (see [`Config`] for when followers learn the commit index).
    pub commit_timeout: Duration,
    /// Most entries in one AppendEntries. Default 64; between 1 and 1024.
    pub max_append_entries: usize,
    /// A leader whose removal (or demotion) commits shuts the node down (else it becomes a
    /// follower). Default true.
    pub shutdown_on_remove: bool,
    /// Entries kept behind a snapshot so slightly-behind followers catch up from the log.
    /// Default 10240.
    pub trailing_logs: u64,
    /// How often (randomised up to twice) to check whether to take an automatic snapshot.
    /// Default 120 s; at least 5 ms.
    ///
    /// Between checks, [`snapshot_memory_threshold`](Config::snapshot_memory_threshold) may
    /// start one sooner.
    pub snapshot_interval: Duration,
    /// Log entries since the latest snapshot that trigger an automatic snapshot. Default 8192.
    pub snapshot_threshold: u64,
    /// Memory the log held in memory may take before an automatic snapshot starts at once,
    /// without waiting for the next check, once `snapshot_threshold` entries have also been
    /// written since the latest snapshot. The entries are counted at their in-memory size (an
    /// entry's fixed part, 88 bytes, plus its payload and extensions). Default 256 MiB; 0
    /// turns it off, leaving only the periodic checks.
    ///
    /// A ringraft addition: hashicorp keeps its log in the log store, while a ringraft node
    /// holds every entry since its last compaction in memory (docs/ARCHITECTURE.md §13), so
    /// under a sustained write rate the periodic checks alone would let that memory grow for
    /// up to twice `snapshot_interval` (about 5 GB at 300 k writes/s of 64 bytes). The
    /// snapshot's compaction keeps `trailing_logs` entries as usual; one that fails is tried
    /// again `snapshot_threshold` entries later.
    pub snapshot_memory_threshold: u64,
    /// A leader that cannot reach a quorum for this long steps down. Default 500 ms; at least
    /// 5 ms and at most `heartbeat_timeout`. At least `heartbeat_timeout * 4 / 10` (four
    /// heartbeat intervals) lets a busy leader skip heartbeats, for up to four rounds from seven
    /// intervals on (see [`Config`]). Unlike hashicorp, a leader whose own timer runs more than
    /// a heartbeat interval late (its thread stalled, or other nodes or groups sharing it took
    /// that long) first sends a round and judges at its next tick, one interval later: the
    /// answers of its followers may be waiting unread. Its lease is not extended.
    pub leader_lease_timeout: Duration,
    /// Do not restore the newest snapshot into the state machine at start (it keeps its own
    /// state durably); the snapshot still sets the indexes and configuration. Default false.
    pub no_snapshot_restore_on_start: bool,
    /// Campaign without a pre-vote round. Default false.
    pub pre_vote_disabled: bool,
    /// Allow [`Raft::lease_read`](crate::Raft::lease_read) (relies on bounded clock drift).
    /// Default false.
    pub lease_read: bool,
    /// How much a read lease is shortened for clock-rate differences between nodes. Default
    /// 50 ms; must be below `election_timeout`.
    pub clock_drift_bound: Duration,
    /// Most AppendEntries in flight to one follower. Default 64.
    pub max_inflight: usize,
    /// Requests that may wait for the node's shard thread; a caller whose timeout passes while
    /// the queue is full gets `EnqueueTimeout`. Default 4096.
    pub submission_queue_capacity: usize,
    /// Run the node's shard loop on a thread of its own pinned to this CPU (Linux only;
    /// ARCHITECTURE §2). Default `None`: a thread of its own that the operating system
    /// schedules (or, with an in-process transport, one of the process's shared shard
    /// threads; see [`Raft::new`](crate::Raft::new)). A CPU the process may not use fails
    /// `Raft::new`.
    pub shard_cpu: Option<usize>,
    /// Where the state machine runs (a ringraft addition; hashicorp runs it on a goroutine of
    /// its own). Default [`ApplyPlacement::Adaptive`]: on the node's shard thread while it is
    /// fast, on a thread of its own once it is not.
    pub apply_placement: ApplyPlacement,
}

/// Where a node's state machine ([`Fsm`](crate::Fsm)) runs: [`Config::apply_placement`].
///
/// Running it on the shard thread saves a thread hand-off per commit, which is most of a small
/// write's latency (ARCHITECTURE §2); but its time then delays replication, heartbeats and
/// elections of every node on that thread. Every placement calls the state machine from one
/// thread at a time, in log order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyPlacement {
    /// On the shard thread while the state machine is fast; moved for good to a thread of
    /// its own once it is not: when one call takes 20 ms or more (wall time: blocking I/O), or
    /// calls that compute 1 ms or more each add up to 50 ms within a second (the thread's CPU
    /// time, so preemption on a busy machine does not count; the occasional pause of a fast
    /// state machine, such as a hash map doubling, does not add up to it), and before any
    /// restore (restores read whole snapshots).
    /// The move keeps the order of everything the state machine sees. The default: a fast
    /// state machine gets the fast layout without a flag, a slow one stops delaying
    /// heartbeats after its first slow calls.
    #[default]
    Adaptive,
    /// Always on the shard thread: only for a state machine whose `apply` and `snapshot`
    /// take microseconds (no I/O), and whose restores are small.
    ShardThread,
    /// Always on a thread of its own (hashicorp's layout).
    OwnThread,
}

impl Config {
    /// hashicorp's defaults for server `local_id`.
    pub fn new(local_id: NodeId) -> Config {
        Config {
            local_id,
            heartbeat_timeout: Duration::from_millis(1000),
            election_timeout: Duration::from_millis(1000),
            commit_timeout: Duration::from_millis(50),
            max_append_entries: 64,
            shutdown_on_remove: true,
            trailing_logs: 10_240,
            snapshot_interval: Duration::from_secs(120),
            snapshot_threshold: 8192,
            snapshot_memory_threshold: 256 << 20,
            leader_lease_timeout: Duration::from_millis(500),
            no_snapshot_restore_on_start: false,
            pre_vote_disabled: false,
            lease_read: false,
            clock_drift_bound: Duration::from_millis(50),
            max_inflight: 64,
            submission_queue_capacity: 4096,
            shard_cpu: None,
            apply_placement: ApplyPlacement::Adaptive,
        }
    }

    /// hashicorp's test settings (`inmemConfig`): heartbeat, election and lease timeouts of
    /// 50 ms, commit timeout 5 ms; clock drift bound 5 ms.
    pub fn fast(local_id: NodeId) -> Config {
        Config {
            heartbeat_timeout: Duration::from_millis(50),
            election_timeout: Duration::from_millis(50),
            leader_lease_timeout: Duration::from_millis(50),
            commit_timeout: Duration::from_millis(5),
            clock_drift_bound: Duration::from_millis(5),
            ..Config::new(local_id)
        }
    }

    /// Checks the settings (hashicorp's `ValidateConfig` rules, in its order, then ringraft's);
    /// the error names the first offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &'static str| Err(ConfigError { field, reason });
        let ms = Duration::from_millis;
        if self.local_id.0 == 0 {
            return bad("local_id", "must not be 0");
        }
        if self.heartbeat_timeout < ms(5) {
            return bad("heartbeat_timeout", "must be at least 5 ms");
        }
        if self.election_timeout < ms(5) {
            return bad("election_timeout", "must be at least 5 ms");
        }
        if self.commit_timeout < ms(1) {
            return bad("commit_timeout", "must be at least 1 ms");
        }
        if self.max_append_entries == 0 || self.max_append_entries > 1024 {
            return bad("max_append_entries", "must be between 1 and 1024");
        }
        if self.snapshot_interval < ms(5) {
            return bad("snapshot_interval", "must be at least 5 ms");
        }
        if self.leader_lease_timeout < ms(5) {
            return bad("leader_lease_timeout", "must be at least 5 ms");
        }
        if self.leader_lease_timeout > self.heartbeat_timeout {
            return bad("leader_lease_timeout", "must not exceed heartbeat_timeout");
        }
        if self.election_timeout < self.heartbeat_timeout {
            return bad("election_timeout", "must be at least heartbeat_timeout");
        }
        if self.clock_drift_bound >= self.election_timeout {
            return bad("clock_drift_bound", "must be below election_timeout");
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be at least 1");
        }
        if self.submission_queue_capacity == 0 {
            return bad("submission_queue_capacity", "must be at least 1");
        }
        Ok(())
    }

    /// The consensus core's settings for this configuration (`seed` varies per start).
    pub(crate) fn core_config(&self, seed: u64) -> Result<CoreConfig, ConfigError> {
        self.validate()?;
        let mut c = CoreConfig::new(self.local_id);
        c.election_timeout = self.election_timeout;
        c.heartbeat_interval = (self.heartbeat_timeout / 10).max(Duration::from_micros(500));
        c.leader_lease_timeout = self.leader_lease_timeout.max(c.heartbeat_interval);
        c.pre_vote = !self.pre_vote_disabled;
        c.max_append_entries = self.max_append_entries;
        c.max_inflight = self.max_inflight;
        c.lease_read = self.lease_read;
        c.clock_drift_bound = self.clock_drift_bound;
        c.seed = seed;
        c.trailing_logs = self.trailing_logs;
        c.shutdown_on_remove = self.shutdown_on_remove;
        c.validate().map_err(|e| ConfigError {
            field: e.field,
            reason: e.reason,
        })?;
        Ok(c)
    }
}

/// The settings [`Raft::reload_config`](crate::Raft::reload_config) changes on a running node
/// (hashicorp's `ReloadableConfig`). Every field is applied, so start from
/// [`ReloadableConfig::from_config`] and change what you mean to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadableConfig {
    /// [`Config::trailing_logs`]; used from the next compaction.
    pub trailing_logs: u64,
    /// [`Config::snapshot_interval`]; takes effect from the next snapshot check.
    pub snapshot_interval: Duration,
    /// [`Config::snapshot_threshold`]; takes effect at the next snapshot check.
    pub snapshot_threshold: u64,
    /// [`Config::heartbeat_timeout`]. Not reloadable yet (the core owns it): must be unchanged.
    pub heartbeat_timeout: Duration,
    /// [`Config::election_timeout`]. Not reloadable yet (the core owns it): must be unchanged.
    pub election_timeout: Duration,
}

impl ReloadableConfig {
    /// The reloadable fields of `config`.
    pub fn from_config(config: &Config) -> ReloadableConfig {
        ReloadableConfig {
            trailing_logs: config.trailing_logs,
            snapshot_interval: config.snapshot_interval,
            snapshot_threshold: config.snapshot_threshold,
            heartbeat_timeout: config.heartbeat_timeout,
            election_timeout: config.election_timeout,
        }
    }
}

impl Config {
    /// `self` with `reloadable`'s fields, validated.
    pub(crate) fn reloaded(
        &self,
        reloadable: &ReloadableConfig,
    ) -> Result<Config, super::ReloadConfigError> {
        use super::ReloadConfigError;
        let merged = Config {
            trailing_logs: reloadable.trailing_logs,
            snapshot_interval: reloadable.snapshot_interval,
            snapshot_threshold: reloadable.snapshot_threshold,
            heartbeat_timeout: reloadable.heartbeat_timeout,
            election_timeout: reloadable.election_timeout,
            ..self.clone()
        };
        merged.validate().map_err(ReloadConfigError::Invalid)?;
        Ok(merged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_rule_names_its_field() {
        assert_eq!(Config::new(NodeId(1)).validate(), Ok(()));
        assert_eq!(Config::fast(NodeId(1)).validate(), Ok(()));
        assert!(Config::fast(NodeId(1)).core_config(1).is_ok());
        type Breaker = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("local_id", Box::new(|c| c.local_id = NodeId(0))),
            (
                "heartbeat_timeout",
                Box::new(|c| c.heartbeat_timeout = Duration::from_millis(1)),
            ),
            (
                "election_timeout",
                Box::new(|c| c.election_timeout = Duration::from_millis(100)),
            ),
            (
                "commit_timeout",
                Box::new(|c| c.commit_timeout = Duration::ZERO),
            ),
            (
                "max_append_entries",
                Box::new(|c| c.max_append_entries = 2000),
            ),
            (
                "snapshot_interval",
                Box::new(|c| c.snapshot_interval = Duration::ZERO),
            ),
            (
                "leader_lease_timeout",
                Box::new(|c| c.leader_lease_timeout = Duration::from_secs(2)),
            ),
            (
                "clock_drift_bound",
                Box::new(|c| c.clock_drift_bound = Duration::from_secs(1)),
            ),
            (
                "submission_queue_capacity",
                Box::new(|c| c.submission_queue_capacity = 0),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = Config::new(NodeId(1));
            mutate(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field));
        }
    }
}
