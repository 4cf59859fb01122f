//! The public API (ARCHITECTURE §7): [`Raft`], its [`Config`], the [`Fsm`] traits, errors and
//! futures.
//!
//! ```
//! use bytes::Bytes;
//! use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft};
//! use ringraft_net::memory::MemNetwork;
//! use ringraft_storage::{Configuration, Entry, InmemSnapshotStore, InmemStore, NodeId};
//! use std::time::Duration;
//!
//! /// Counts the commands it applied.
//! struct Counter(u64);
//! impl Fsm for Counter {
//!     fn apply(&mut self, _entry: &Entry) -> Bytes {
//!         self.0 += 1;
//!         Bytes::from(self.0.to_string())
//!     }
//!     fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
//!         Err("not supported".into())
//!     }
//!     fn restore(&mut self, _snapshot: &mut dyn std::io::Read) -> Result<(), FsmError> {
//!         Ok(())
//!     }
//! }
//!
//! let network = MemNetwork::new();
//! let store = InmemStore::new();
//! let raft = Raft::new(
//!     Config::fast(NodeId(1)),
//!     Counter(0),
//!     store.clone(),
//!     store,
//!     InmemSnapshotStore::new(),
//!     network.transport(NodeId(1)),
//! )?;
//! raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
//!     .wait()?;
//! let mut changes = raft.leader_changes();
//! while changes.current().leader != Some(NodeId(1)) {
//!     changes.wait_changed(Duration::from_secs(5));
//! }
//! let applied = raft.apply("hello", Duration::from_secs(1)).wait()?;
//! assert_eq!(applied.response, Bytes::from("1"));
//! raft.shutdown().wait();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod config;
#[cfg(feature = "serde")]
mod config_serde;
pub(crate) mod error;
pub(crate) mod fsm;
pub(crate) mod future;
pub mod metrics;
mod multi;
pub(crate) mod observer;
mod offline;
pub(crate) mod outcome;
mod peers_json;
pub(crate) mod transport;
pub(crate) mod watch;

pub use crate::node::host::ShardHost;
pub use config::{ApplyPlacement, Config, ReloadableConfig};
pub use error::{
    ApplyError, BootstrapClusterError, ConfigError, MembershipError, ReadError, ReloadConfigError,
    RestoreError, StartError, TakeSnapshotError, TransferError,
};
pub use fsm::{Fsm, FsmError, FsmSnapshot};
pub use future::RaftFuture;
pub use multi::{MultiRaft, MultiRaftConfig, MultiRaftStats};
pub use observer::{Observation, Observer, ObserverId};
pub use offline::{get_configuration, has_existing_state, recover_cluster, RecoverClusterError};
pub use outcome::{Applied, AppliedBatch, RaftState};
pub use peers_json::{parse_peers_json, read_peers_json, PeersJsonError};
pub use transport::{IntoTransport, TcpTransportConfig};
pub use watch::{Changed, LeaderChanges, LeaderObservation};

use crate::core::MembershipChange;
use crate::node::{Command, PushError, Reply, Shared};
use bytes::Bytes;
use ringraft_storage::{
    Configuration, Index, LogStore, NodeId, SnapshotMeta, SnapshotStore, StableStore, Term,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A running Raft node. Cheap to clone (`Send + Sync`); every clone is the same node.
///
/// Requests are answered through [`RaftFuture`]s (await them on any executor, or block with
/// `.wait()`). Requests that take a `timeout` wait at most that long to enter the node's
/// bounded submission queue (`Duration::ZERO`: as long as it takes) and otherwise fail with
/// `EnqueueTimeout`; like hashicorp's, the timeout never bounds the request itself. Dropping
/// the last handle shuts the node down.
#[derive(Clone)]
pub struct Raft {
    handle: Arc<Handle>,
}

struct Handle {
    shared: Arc<Shared>,
    /// The node's snapshot store, for [`Raft::open_snapshot`].
    snapshots: Arc<dyn SnapshotStore>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_shutdown();
    }
}

fn closed<T, E>(e: E) -> Result<T, E> {
    Err(e)
}

impl Raft {
    /// Starts a node: recovers its state from the stores (restoring the newest snapshot into
    /// `fsm`), then runs its shard loop: with a transport that runs tasks (TCP) or with
    /// `config.shard_cpu`, on a shard thread of its own; with an in-process transport (the
    /// in-memory network's), on one of the process's shared shard threads (one per CPU less
    /// one, the least loaded first), where messages between co-hosted nodes wake a task
    /// instead of a thread (ARCHITECTURE §2).
    /// The state machine runs on the shard thread while it is fast
    /// ([`Config::apply_placement`]). A node with no state waits for
    /// [`bootstrap_cluster`](Raft::bootstrap_cluster) or for a leader to add it.
    ///
    /// `transport` is any [`Transport`](ringraft_net::transport::Transport) (the in-memory
    /// network's, say) or a [`TcpTransportConfig`], which binds the TCP transport on the
    /// node's shard thread; `Raft::new` returns once it is bound.
    pub fn new(
        config: Config,
        fsm: impl Fsm,
        log_store: impl LogStore + 'static,
        stable_store: impl StableStore + 'static,
        snapshot_store: impl SnapshotStore + 'static,
        transport: impl IntoTransport,
    ) -> Result<Raft, StartError> {
        Raft::start(
            None,
            config,
            fsm,
            log_store,
            stable_store,
            snapshot_store,
            transport,
            true,
        )
    }

    /// Like [`Raft::new`], but the node's shard loop runs on `host`'s thread together with
    /// the other nodes started there (one thread per core hosting many Raft groups, ARCHITECTURE
    /// §2), instead of on a thread of its own. `config.shard_cpu` is ignored: pin the host.
    pub fn new_on(
        host: &ShardHost,
        config: Config,
        fsm: impl Fsm,
        log_store: impl LogStore + 'static,
        stable_store: impl StableStore + 'static,
        snapshot_store: impl SnapshotStore + 'static,
        transport: impl IntoTransport,
    ) -> Result<Raft, StartError> {
        Raft::start(
            Some(host),
            config,
            fsm,
            log_store,
            stable_store,
            snapshot_store,
            transport,
            true,
        )
    }

    /// Starts a node; on a `host`, waits until its loop runs there only if `wait_started`
    /// (a `MultiRaft` group does not wait, ARCHITECTURE §14, "Starting thousands of groups").
    #[allow(clippy::too_many_arguments)]
    fn start(
        host: Option<&ShardHost>,
        config: Config,
        fsm: impl Fsm,
        log_store: impl LogStore + 'static,
        stable_store: impl StableStore + 'static,
        snapshot_store: impl SnapshotStore + 'static,
        transport: impl IntoTransport,
        wait_started: bool,
    ) -> Result<Raft, StartError> {
        let (shared, snapshots) = crate::node::start::start_node(
            host,
            config,
            fsm,
            log_store,
            stable_store,
            snapshot_store,
            transport,
            wait_started,
        )?;
        Ok(Raft {
            handle: Arc::new(Handle { shared, snapshots }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// Submits a command built around `reply`; on failure answers with the mapped error.
    fn submit<T, E>(
        &self,
        timeout: Duration,
        on_closed: fn() -> Result<T, E>,
        enqueue_timeout: E,
        make: impl FnOnce(future::Sender<Result<T, E>>) -> Command,
    ) -> RaftFuture<T, E> {
        let (tx, rx) = future::channel(on_closed);
        let shared = self.shared();
        match shared.queue.push(make(tx), timeout, &shared.signal) {
            Ok(()) => rx,
            Err(PushError::Timeout) => RaftFuture::ready(Err(enqueue_timeout), on_closed),
            Err(PushError::Shutdown) => RaftFuture::ready(on_closed(), on_closed),
        }
    }

    /// Initialises a brand-new cluster with `configuration` (hashicorp's `BootstrapCluster`):
    /// call it on every initial voter with the same configuration, or on one node and add the
    /// others. Fails with `CantBootstrap` if this node already has state (safe to ignore on
    /// restart).
    pub fn bootstrap_cluster(
        &self,
        configuration: Configuration,
    ) -> RaftFuture<(), BootstrapClusterError> {
        self.submit(
            Duration::ZERO,
            || closed(BootstrapClusterError::Shutdown),
            BootstrapClusterError::EnqueueTimeout,
            |reply| Command::Bootstrap {
                configuration,
                reply,
            },
        )
    }

    /// Replicates `command` and resolves once it is committed *and* applied to this node's
    /// state machine, with [`Fsm::apply`]'s response (leader only).
    pub fn apply(
        &self,
        command: impl Into<Bytes>,
        timeout: Duration,
    ) -> RaftFuture<Applied, ApplyError> {
        self.apply_with_extensions(command, Bytes::new(), timeout)
    }

    /// As [`apply`](Raft::apply), with per-entry `extensions` (hashicorp's `Log.Extensions`):
    /// opaque bytes stored and replicated with the entry, outside its data, and handed to the
    /// state machine in [`Entry::extensions`](ringraft_storage::Entry::extensions).
    pub fn apply_with_extensions(
        &self,
        command: impl Into<Bytes>,
        extensions: impl Into<Bytes>,
        timeout: Duration,
    ) -> RaftFuture<Applied, ApplyError> {
        let commands = vec![command.into()];
        let extensions = extensions.into();
        let extensions = if extensions.is_empty() {
            Vec::new()
        } else {
            vec![extensions]
        };
        self.submit(
            timeout,
            || closed(ApplyError::Shutdown),
            ApplyError::EnqueueTimeout,
            |tx| Command::Apply {
                commands,
                extensions,
                reply: Reply::Apply(tx),
            },
        )
    }

    /// Replicates `commands` as consecutive entries (one batch) and resolves once all are
    /// applied, with one response per command.
    pub fn apply_batch(
        &self,
        commands: Vec<Bytes>,
        timeout: Duration,
    ) -> RaftFuture<AppliedBatch, ApplyError> {
        self.submit(
            timeout,
            || closed(ApplyError::Shutdown),
            ApplyError::EnqueueTimeout,
            |tx| Command::Apply {
                commands,
                extensions: Vec::new(),
                reply: Reply::ApplyBatch(tx),
            },
        )
    }

    /// Appends a barrier entry and resolves (with its index) once this node's state machine
    /// has applied every entry before it.
    pub fn barrier(&self, timeout: Duration) -> RaftFuture<Index, ApplyError> {
        self.submit(
            timeout,
            || closed(ApplyError::Shutdown),
            ApplyError::EnqueueTimeout,
            |tx| Command::Barrier {
                reply: Reply::Barrier(tx),
            },
        )
    }

    /// Replaces the cluster's state with the external snapshot `data` (hashicorp's
    /// `Restore`; leader only). Resolves with the index of the restore entry once this node's
    /// state machine has restored it; every node restores it at the same point of the log.
    ///
    /// The snapshot is first written durably to the snapshot store's staging area; then a
    /// restore entry is appended, which followers accept only once they have staged the same
    /// snapshot (the leader streams it to them). Entries before it are applied before it;
    /// entries after it apply on top of the restored state, so no proposal is cancelled.
    /// While the snapshot is being staged, writes, configuration changes and transfers are
    /// refused with a `RestoreInProgress` error. `data` is read on a separate thread.
    pub fn restore(
        &self,
        data: impl std::io::Read + Send + 'static,
        timeout: Duration,
    ) -> RaftFuture<Index, RestoreError> {
        let data: Box<dyn std::io::Read + Send> = Box::new(data);
        self.submit(
            timeout,
            || closed(RestoreError::Shutdown),
            RestoreError::EnqueueTimeout,
            |tx| Command::Restore {
                data,
                reply: Reply::Restore(tx),
            },
        )
    }

    /// Confirms with one quorum round that this node is still the leader.
    pub fn verify_leader(&self) -> RaftFuture<(), ReadError> {
        self.submit(
            Duration::ZERO,
            || closed(ReadError::Shutdown),
            ReadError::EnqueueTimeout,
            |tx| Command::VerifyLeader {
                reply: Reply::Verify(tx),
            },
        )
    }

    /// A linearizable read point (ReadIndex, thesis §6.4): resolves with an index once the
    /// leader confirmed its leadership *and* this node's state machine applied that index, so
    /// reading the state machine right after reflects every write acknowledged before the call.
    pub fn read_index(&self, timeout: Duration) -> RaftFuture<Index, ReadError> {
        self.submit(
            timeout,
            || closed(ReadError::Shutdown),
            ReadError::EnqueueTimeout,
            |tx| Command::Read {
                lease: false,
                reply: Reply::Read(tx),
            },
        )
    }

    /// As [`read_index`](Raft::read_index), but answered without a quorum round while the
    /// leader's lease holds (thesis §6.4.1; needs [`Config::lease_read`]).
    ///
    /// hashicorp/raft has no lease reads (its leader lease only decides when a leader steps
    /// down). Ours holds while a quorum acknowledged a heartbeat round sent less than
    /// `election_timeout` minus [`Config::clock_drift_bound`] ago. Once a
    /// [`transfer_leadership`](Raft::transfer_leadership) has told its target to campaign,
    /// the lease is void for the rest of the leader's term, even if the transfer then fails:
    /// the voters grant a transfer's votes while they still hear from this leader, so the
    /// read takes a quorum round instead.
    pub fn lease_read(&self, timeout: Duration) -> RaftFuture<Index, ReadError> {
        self.submit(
            timeout,
            || closed(ReadError::Shutdown),
            ReadError::EnqueueTimeout,
            |tx| Command::Read {
                lease: true,
                reply: Reply::Read(tx),
            },
        )
    }

    fn change(
        &self,
        change: MembershipChange,
        prev_index: Index,
        timeout: Duration,
    ) -> RaftFuture<Index, MembershipError> {
        let prev_index = (prev_index > Index(0)).then_some(prev_index);
        self.submit(
            timeout,
            || closed(MembershipError::Shutdown),
            MembershipError::EnqueueTimeout,
            |tx| Command::Membership {
                change,
                prev_index,
                timeout,
                reply: Reply::Membership(tx),
            },
        )
    }

    /// Adds `id` as a voter (or updates its address, or promotes a non-voter). Resolves with
    /// the configuration entry's index once it commits. A non-zero `prev_index` must equal the
    /// latest configuration's index when the change starts.
    ///
    /// Membership changes (this and [`add_nonvoter`](Raft::add_nonvoter),
    /// [`demote_voter`](Raft::demote_voter), [`remove_server`](Raft::remove_server)) run one at
    /// a time, as in hashicorp: a change asked for while another is in flight waits behind it,
    /// in order, for at most `timeout` (zero: as long as it takes), then fails with
    /// [`MembershipError::EnqueueTimeout`]; at most 64 wait, the next one fails with
    /// [`MembershipError::ChangeQueueFull`]. Neither changed anything.
    pub fn add_voter(
        &self,
        id: NodeId,
        address: impl Into<String>,
        prev_index: Index,
        timeout: Duration,
    ) -> RaftFuture<Index, MembershipError> {
        let address = address.into();
        self.change(
            MembershipChange::AddVoter { id, address },
            prev_index,
            timeout,
        )
    }

    /// Adds `id` as a non-voter (or updates its address; never demotes).
    pub fn add_nonvoter(
        &self,
        id: NodeId,
        address: impl Into<String>,
        prev_index: Index,
        timeout: Duration,
    ) -> RaftFuture<Index, MembershipError> {
        let address = address.into();
        self.change(
            MembershipChange::AddNonvoter { id, address },
            prev_index,
            timeout,
        )
    }

    /// Makes voter `id` a non-voter.
    pub fn demote_voter(
        &self,
        id: NodeId,
        prev_index: Index,
        timeout: Duration,
    ) -> RaftFuture<Index, MembershipError> {
        self.change(MembershipChange::DemoteVoter { id }, prev_index, timeout)
    }

    /// Removes `id` from the cluster.
    pub fn remove_server(
        &self,
        id: NodeId,
        prev_index: Index,
        timeout: Duration,
    ) -> RaftFuture<Index, MembershipError> {
        self.change(MembershipChange::RemoveServer { id }, prev_index, timeout)
    }

    /// The latest configuration (in effect once appended, possibly not yet committed) and its
    /// index. Never fails, even after shutdown.
    pub fn configuration(&self) -> (Index, Configuration) {
        self.shared()
            .configuration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn transfer(&self, target: Option<NodeId>) -> RaftFuture<(), TransferError> {
        self.submit(
            Duration::ZERO,
            || closed(TransferError::Shutdown),
            TransferError::EnqueueTimeout,
            |tx| Command::Transfer {
                target,
                reply: Reply::Transfer(tx),
            },
        )
    }

    /// Hands leadership to the most up-to-date voter; resolves once this node stepped down.
    pub fn transfer_leadership(&self) -> RaftFuture<(), TransferError> {
        self.transfer(None)
    }

    /// Hands leadership to `id`.
    pub fn transfer_leadership_to(&self, id: NodeId) -> RaftFuture<(), TransferError> {
        self.transfer(Some(id))
    }

    /// Takes a snapshot now (on any node): the state machine captures its state on the apply
    /// thread, it is persisted to the snapshot store, and the log is compacted behind it
    /// (keeping `trailing_logs`). Resolves with the stored snapshot's metadata.
    ///
    /// It covers every write whose `apply` resolved before this call (hashicorp orders
    /// snapshots with applies the same way). It fails with
    /// [`TakeSnapshotError::NothingNewToSnapshot`] when nothing was applied since the latest
    /// snapshot.
    ///
    /// Differs from hashicorp on purpose: a snapshot's index counts every applied entry,
    /// leaders' no-ops and barriers included, where hashicorp's state machine index moves only
    /// with commands and configurations. So a cluster that applied no command yet still has
    /// something to snapshot here (its leader's no-op, after the bootstrap configuration), and
    /// a snapshot's index can be a few entries past the last command.
    pub fn snapshot(&self) -> RaftFuture<SnapshotMeta, TakeSnapshotError> {
        self.submit(
            Duration::ZERO,
            || closed(TakeSnapshotError::Shutdown),
            TakeSnapshotError::EnqueueTimeout,
            |reply| Command::Snapshot { reply },
        )
    }

    /// Opens a stored snapshot for reading (hashicorp's `SnapshotFuture.Open`): its metadata
    /// and its data, after the store verified its checksum. Pass the metadata
    /// [`Raft::snapshot`] resolved with; it stays readable while the store retains it.
    pub fn open_snapshot(
        &self,
        meta: &SnapshotMeta,
    ) -> Result<(SnapshotMeta, Box<dyn std::io::Read + Send>), ringraft_storage::SnapshotError>
    {
        self.handle.snapshots.open(&meta.id)
    }

    /// The node's current role.
    pub fn state(&self) -> RaftState {
        self.shared().state()
    }

    /// The leader this node knows of (itself when it leads).
    pub fn leader(&self) -> Option<NodeId> {
        match self.shared().leader.load(Ordering::Acquire) {
            0 => None,
            id => Some(NodeId(id)),
        }
    }

    /// The known leader's id and address (from the latest configuration).
    pub fn leader_with_address(&self) -> Option<(NodeId, String)> {
        let leader = self.leader()?;
        let (_, configuration) = self.configuration();
        let address = configuration
            .server(leader)
            .map(|s| s.address.clone())
            .unwrap_or_default();
        Some((leader, address))
    }

    /// A watch of leadership changes (hashicorp's `LeaderCh`). At shutdown the watch delivers
    /// a last change to "no leader" (hashicorp's final `false`), unless that is already the
    /// latest value, and then closes.
    pub fn leader_changes(&self) -> LeaderChanges {
        LeaderChanges::new(self.shared().leader_watch.clone())
    }

    /// This node's id.
    pub fn local_id(&self) -> NodeId {
        self.shared().id
    }

    /// The current term.
    pub fn current_term(&self) -> Term {
        Term(self.shared().term.load(Ordering::Acquire))
    }

    /// The last index in the log or the newest snapshot.
    pub fn last_index(&self) -> Index {
        Index(self.shared().last_index.load(Ordering::Acquire))
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        Index(self.shared().commit_index.load(Ordering::Acquire))
    }

    /// The last index this node's state machine applied.
    pub fn applied_index(&self) -> Index {
        Index(self.shared().applied_index.load(Ordering::Acquire))
    }

    /// Registers `observer` (hashicorp's `RegisterObserver`): from now on it receives what
    /// happens to this node (see [`Observation`]). Returns the id to deregister it with.
    pub fn register_observer(&self, observer: Observer) -> ObserverId {
        self.shared().register_observer(observer)
    }

    /// Stops feeding the observer registered as `id`; false if it was not registered.
    pub fn deregister_observer(&self, id: ObserverId) -> bool {
        self.shared().deregister_observer(id)
    }

    /// How long ago this node last heard from a leader (hashicorp's `LastContact`): `Some(0)`
    /// on the leader itself, `None` if it never heard from one since it started.
    pub fn last_contact(&self) -> Option<Duration> {
        let shared = self.shared();
        if self.state() == RaftState::Leader {
            return Some(Duration::ZERO);
        }
        match shared.stats.last_contact.load(Ordering::Acquire) {
            0 => None,
            at => {
                let at = crate::core::Time(at - 1);
                Some(Duration::from_nanos(shared.clock.now().nanos_since(at)))
            }
        }
    }

    /// hashicorp's `Stats()`: a snapshot of the node's state as decimal strings, under
    /// hashicorp's keys where ringraft has the data: `state`, `term`, `last_log_index`,
    /// `last_log_term`, `commit_index`, `applied_index`, `fsm_pending` (batches handed to the
    /// apply thread and not yet applied), `last_snapshot_index`, `last_snapshot_term`,
    /// `latest_configuration_index`, `latest_configuration` (`[{id address suffrage}, ...]`),
    /// `num_peers` (other voters; 0 if this node is not a voter), `last_contact` (`"0"` on the
    /// leader, `"never"`, or the time since the leader was last heard from, as `{:?}` of a
    /// `Duration`), `protocol_version`, `protocol_version_min`, `protocol_version_max` (all
    /// `"3"`: ringraft speaks one protocol, hashicorp's newest). The values are read from
    /// what the shard thread published at the end of its latest turn, so they may be a turn
    /// behind each other.
    pub fn stats(&self) -> BTreeMap<String, String> {
        let shared = self.shared();
        let cells = &shared.stats;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Acquire).to_string();
        let state = self.state();
        let (configuration_index, configuration) = self.configuration();
        let id = self.local_id();
        let voter = configuration.voters().any(|v| v == id);
        let num_peers = if voter {
            configuration.voters().filter(|v| *v != id).count()
        } else {
            0
        };
        let last_contact = match (state, self.last_contact()) {
            (RaftState::Leader, _) => "0".to_string(),
            (_, None) => "never".to_string(),
            (_, Some(since)) => format!("{since:?}"),
        };
        let servers: Vec<String> = configuration
            .servers
            .iter()
            .map(|s| format!("{{{} {} {:?}}}", s.id, s.address, s.suffrage))
            .collect();
        let mut stats = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            stats.insert(key.to_string(), value);
        };
        put("state", format!("{state:?}"));
        put("term", self.current_term().0.to_string());
        put("last_log_index", load(&cells.last_log_index));
        put("last_log_term", load(&cells.last_log_term));
        put("commit_index", self.commit_index().0.to_string());
        put("applied_index", self.applied_index().0.to_string());
        put("fsm_pending", load(&cells.fsm_pending));
        put("last_snapshot_index", load(&cells.last_snapshot_index));
        put("last_snapshot_term", load(&cells.last_snapshot_term));
        put(
            "latest_configuration_index",
            configuration_index.0.to_string(),
        );
        put("latest_configuration", format!("[{}]", servers.join(" ")));
        put("num_peers", num_peers.to_string());
        put("last_contact", last_contact);
        for key in [
            "protocol_version",
            "protocol_version_min",
            "protocol_version_max",
        ] {
            put(key, "3".to_string());
        }
        stats
    }

    /// Changes the reloadable settings of the running node (hashicorp's `ReloadConfig`): the
    /// settings merged with `reloadable` are validated with [`Config::validate`]'s rules (an
    /// invalid field changes nothing and is named in the error), then applied.
    ///
    /// Every field applies at once: the consensus core takes the new timeouts and
    /// `trailing_logs` and re-arms its timers (a leader whose heartbeat interval shrank
    /// heartbeats at once; other roles draw a fresh election deadline), and
    /// `snapshot_interval`/`snapshot_threshold` apply from the next snapshot check.
    pub fn reload_config(&self, reloadable: ReloadableConfig) -> RaftFuture<(), ReloadConfigError> {
        self.submit(
            Duration::ZERO,
            || closed(ReloadConfigError::Shutdown),
            ReloadConfigError::EnqueueTimeout,
            |reply| Command::Reload { reloadable, reply },
        )
    }

    /// The reloadable settings in force (hashicorp's `ReloadableConfig()`): start from these
    /// when calling [`reload_config`](Raft::reload_config).
    pub fn reloadable_config(&self) -> ReloadableConfig {
        *self
            .shared()
            .reloadable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The error that stopped the node (a storage failure, a failed restore), if one did.
    pub fn fatal_error(&self) -> Option<String> {
        self.shared()
            .fatal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the node (not gracefully, like hashicorp's). Idempotent. Every pending request
    /// resolves (proposals with `Shutdown`: their outcome is unknown). The returned future
    /// resolves once the node's threads have stopped.
    pub fn shutdown(&self) -> RaftFuture<(), ()> {
        let shared = self.shared();
        shared.request_shutdown();
        let (tx, rx) = future::channel(|| Ok(()));
        match shared.on_stopped(tx) {
            None => rx,
            Some(tx) => {
                tx.send(Ok(()));
                rx
            }
        }
    }
}

impl fmt::Debug for Raft {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Raft")
            .field("id", &self.local_id())
            .field("state", &self.state())
            .field("term", &self.current_term())
            .field("leader", &self.leader())
            .field("commit_index", &self.commit_index())
            .field("applied_index", &self.applied_index())
            .finish()
    }
}
