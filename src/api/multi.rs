//! Many Raft groups on one node: [`MultiRaft`] (ARCHITECTURE §14).

use super::config::Config;
use super::error::StartError;
use super::fsm::Fsm;
use super::transport::IntoTransport;
use super::Raft;
use crate::node::host::ShardHost;
use crate::node::router::{self, GroupLink, RouterShared, Watch};
use ringraft_storage::{GroupId, LogStore, NodeId, SnapshotStore, StableStore};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Settings of a [`MultiRaft`] node.
#[derive(Clone, Debug)]
pub struct MultiRaftConfig {
    /// Pin the node's shard threads to CPUs from this one on (Linux): shard `k` to CPU
    /// `cpu + k`. Default: not pinned.
    pub cpu: Option<usize>,
    /// Shard threads the node's groups run on (one per core is the thread-per-core layout):
    /// group `g` runs on shard `g mod shards` (or where [`MultiRaft::add_group_on`] puts it),
    /// with its own loop, timers and state machine calls there. One transport serves them all
    /// (with TCP one listener and one connection per peer node and lane), run with the
    /// liveness watch and the campaign slots on the first shard thread; groups on the others
    /// hand their messages to it and take theirs from it through queues (ARCHITECTURE §14,
    /// "Several shard threads"). Each shard has its
    /// own [`snapshot_threads`](Self::snapshot_threads). Default 1; at least 1. More pay on a
    /// machine that runs one node and has cores to spare (leave some to the WAL writer, the
    /// callers and the first shard's transport work; not measured on such a machine yet). A
    /// message to or from a group on another shard than the first crosses threads once more:
    /// on this project's 2-core test machine with three nodes in one process, two shards cost
    /// 1 000 busy durable groups about a quarter of their throughput (docs/PERFORMANCE.md,
    /// session 13).
    pub shards: usize,
    /// How often the node pings each peer node. Default 250 ms, a quarter of the default
    /// `silence_timeout`. A silence is reported when it reaches the timeout, not at the next
    /// ping, so a longer interval does not delay failure detection; it leaves less room for a
    /// ping delayed on a busy connection before a healthy peer looks silent, and each ping
    /// wakes both nodes (idle groups' CPU is mostly these wake-ups: a tenth of the timeout
    /// cost about twice the idle CPU of a quarter, docs/PERFORMANCE.md, session 24). Must be
    /// below `silence_timeout`.
    pub ping_interval: Duration,
    /// A peer node from which nothing arrived for this long is reported silent to the groups
    /// it is a member of; their quiesced followers then campaign. Default 1 s (the default
    /// election timeout of one group). Keep it at or below the groups' election timeout.
    /// Every member named in a group's configuration is watched, including one whose address
    /// there the transport cannot dial (a host name over TCP, the peer's socket address given
    /// to the transport at its start): the node pings it all the same.
    pub silence_timeout: Duration,
    /// How many of the node's groups may campaign, or lead without having settled yet, at
    /// once. A group whose election timer fires waits for a slot before it asks for votes;
    /// it keeps it until it follows again, until the leader it became has settled (it
    /// committed an entry of its term, so a quorum follows it), or for two election
    /// timeouts, whichever is first. This paces herds of elections (every group
    /// after a restart, every group a failed node led), whose heartbeats would otherwise be
    /// more than the nodes can answer in time, so that groups keep stepping down and never
    /// settle (ARCHITECTURE §14, "Herds"). Leadership transfers do not wait. Default 256;
    /// at least 1.
    pub campaign_slots: usize,
    /// How many threads the node's groups share for their snapshot-store work (persisting
    /// snapshots, sending and receiving InstallSnapshot chunks, staging restores): started
    /// as jobs come, ended after 10 s without work. A single `Raft` has a thread of its own
    /// for this; thousands of groups would otherwise have thousands. A group's jobs still run
    /// in order, one at a time. Default 4; at least 1.
    pub snapshot_threads: usize,
}

impl Default for MultiRaftConfig {
    fn default() -> MultiRaftConfig {
        MultiRaftConfig {
            cpu: None,
            ping_interval: Duration::from_millis(250),
            silence_timeout: Duration::from_millis(1000),
            campaign_slots: 256,
            snapshot_threads: crate::node::host::DEFAULT_SNAPSHOT_THREADS,
            shards: 1,
        }
    }
}

/// What a [`MultiRaft`] node runs and what its liveness watch and campaign slots did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MultiRaftStats {
    /// Groups running on the node now.
    pub groups: usize,
    /// Pings sent to peer nodes since the node started.
    pub pings_sent: u64,
    /// Times a peer node was reported silent.
    pub peers_silent: u64,
    /// Campaigns that waited for a slot (see [`MultiRaftConfig::campaign_slots`]).
    pub campaigns_deferred: u64,
    /// Campaign slots held now: by groups campaigning, or leading before they committed an
    /// entry of their term. Above zero only while elections are under way.
    pub campaign_slots_held: usize,
}

/// One node hosting many Raft groups: its shard threads run the groups' loops, one transport
/// (one connection per peer node with TCP) carries every group's messages, each frame naming
/// its group, a few snapshot threads serve every group ([`MultiRaftConfig::snapshot_threads`]),
/// and peer nodes are watched for liveness once per node rather than once per group. Idle
/// groups quiesce: their leaders stop heartbeating and their followers stop their election
/// timers until a message arrives, the leader gets a request, or the leader's node goes
/// silent (ARCHITECTURE §14), so thousands of idle groups cost almost nothing. When the
/// groups fall behind what arrives, the node stops reading until they catch up (with TCP,
/// flow control then holds the senders back) instead of queueing without bound.
///
/// A `MultiRaft` runs its groups on one shard thread by default; to use several cores, give
/// it several ([`MultiRaftConfig::shards`]): group `g` then runs on shard `g mod shards`,
/// still behind the node's one transport, whose router runs on the first shard (ARCHITECTURE
/// §14, "Several shard threads"). Another layout needs no hand-off between threads: one
/// `MultiRaft` per shard with the node's id, each with its own transport (with TCP its own
/// port) and WAL, every node placing a group on the same shard; shard k of a node then talks to
/// shard k of the others, so a group's members are its shard's addresses.
///
/// Each group is a [`Raft`] with the whole single-group API (apply, barrier, reads,
/// membership, transfer, snapshots, observers, stats), its own state machine and stores, and
/// `Config::local_id` equal to this node's id. [`Raft::shutdown`] removes a group from the
/// node. Every node of a group must run the group under the same [`GroupId`]; messages for
/// groups a node does not run are dropped.
///
/// Differences from a single [`Raft`]: quiescence (hashicorp has none; an idle group's
/// leader sends no heartbeats, so `HeartbeatFailed` observations pause with it and a
/// quiesced follower's `last_contact` keeps growing until the group wakes), and a group's
/// shard loop shares its thread with every other group of its shard. A group shut down on one
/// node tells its replicas on the other nodes (`GroupStopped`), so a quiesced follower under
/// it campaigns instead of waiting for a node that stays up. Elections are paced per node
/// ([`MultiRaftConfig::campaign_slots`]): when more groups want to campaign at once than the
/// node has slots, the others wait their turn, so a restart of thousands of groups settles.
///
/// **Durable groups** share one write-ahead log per node: open a
/// `ringraft_storage::SharedWal` and give each group its share, `wal.log(group)`, as its log
/// store. One group commit (one write and one fdatasync) then covers every group's entries and
/// hard state of that moment, the WAL keeps each group's hard state (the stable store passed
/// along is only read at start), and segments are reclaimed as groups compact (idle groups'
/// few entries are rewritten forward). A group that leaves the node for good (its replica was
/// removed from the group, or the group deleted) is shut down with [`Raft::shutdown`], which
/// closes its log, and then removed with `SharedWal::remove(group)`: otherwise its log stays
/// in the WAL, is recovered on every start, and `SharedWal::groups` keeps listing it.
/// `ringraft-load --groups N --restart` runs 10 000 such groups and restarts them.
///
/// ```
/// use bytes::Bytes;
/// use ringraft::{Config, MultiRaft, MultiRaftConfig, Fsm, FsmError, FsmSnapshot};
/// use ringraft_net::memory::MemNetwork;
/// use ringraft_storage::{Configuration, GroupId, InmemSnapshotStore, InmemStore, NodeId, Server};
/// use std::time::Duration;
///
/// struct Count(u64);
/// impl Fsm for Count {
///     fn apply(&mut self, _entry: &ringraft_storage::Entry) -> Bytes {
///         self.0 += 1;
///         Bytes::from(self.0.to_string())
///     }
///     fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
///         Err("not needed here".into())
///     }
///     fn restore(&mut self, _data: &mut dyn std::io::Read) -> Result<(), FsmError> {
///         Ok(())
///     }
/// }
///
/// let network = MemNetwork::new();
/// let ids = [NodeId(1), NodeId(2), NodeId(3)];
/// let nodes: Vec<MultiRaft> = ids
///     .iter()
///     .map(|&id| MultiRaft::new(network.transport(id), MultiRaftConfig::default()).unwrap())
///     .collect();
/// let members = Configuration::new(ids.iter().map(|&id| Server::voter(id, format!("n{}", id.0))).collect());
/// let mut groups = Vec::new();
/// for g in 1..=20u64 {
///     for (node, &id) in nodes.iter().zip(&ids) {
///         let raft = node
///             .add_group(GroupId(g), Config::new(id), Count(0), InmemStore::new(),
///                        InmemStore::new(), InmemSnapshotStore::new())
///             .unwrap();
///         raft.bootstrap_cluster(members.clone()).wait().unwrap();
///         groups.push(raft);
///     }
/// }
/// // Every group elects its own leader; write to one of them.
/// let group_7: Vec<&ringraft::Raft> = groups[18..21].iter().collect();
/// let leader = loop {
///     if let Some(r) = group_7.iter().find(|r| r.state() == ringraft::RaftState::Leader) {
///         break *r;
///     }
///     std::thread::sleep(Duration::from_millis(10));
/// };
/// assert_eq!(leader.apply("x", Duration::from_secs(5)).wait().unwrap().response, Bytes::from("1"));
/// assert_eq!(nodes[0].stats().groups, 20);
/// # for r in &groups { r.shutdown().wait(); }
/// ```
pub struct MultiRaft {
    id: NodeId,
    router: u64,
    shared: Arc<RouterShared>,
    /// The shard threads; the first runs the router and the transport.
    hosts: Vec<ShardHost>,
}

impl std::fmt::Debug for MultiRaft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiRaft")
            .field("id", &self.id)
            .field("groups", &self.shared.groups.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl MultiRaft {
    /// Starts a node on `transport` (the in-memory network's, or a [`TcpTransportConfig`](
    /// crate::TcpTransportConfig), which binds on the node's shard thread before this returns)
    /// with no groups yet.
    pub fn new(
        transport: impl IntoTransport,
        config: MultiRaftConfig,
    ) -> Result<MultiRaft, StartError> {
        if config.ping_interval.is_zero() || config.ping_interval >= config.silence_timeout {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "ping_interval",
                reason: "must be non-zero and below silence_timeout",
            }));
        }
        if config.campaign_slots == 0 {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "campaign_slots",
                reason: "must be at least 1",
            }));
        }
        if config.snapshot_threads == 0 {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "snapshot_threads",
                reason: "must be at least 1",
            }));
        }
        if config.shards == 0 {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "shards",
                reason: "must be at least 1",
            }));
        }
        let mut hosts = Vec::with_capacity(config.shards);
        for k in 0..config.shards {
            // Only the first shard runs the transport's tasks.
            let io_driver = k == 0 && transport.runs_tasks();
            hosts.push(ShardHost::with_snapshot_threads(
                config.cpu.map(|c| c.saturating_add(k)),
                io_driver,
                config.snapshot_threads,
            )?);
        }
        let host = &hosts[0];
        let shared = Arc::new(RouterShared::default());
        let watch = Watch {
            ping_interval: config.ping_interval,
            silence_timeout: config.silence_timeout,
        };
        let (started_tx, started_rx) = mpsc::sync_channel::<Result<(u64, NodeId), String>>(1);
        let task_shared = shared.clone();
        let campaign_slots = config.campaign_slots;
        host.submit(Box::new(move || {
            Box::pin(async move {
                let transport = match transport.into_transport().await {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let id = transport.local_id();
                let (router, task) = router::start(transport, watch, campaign_slots, task_shared);
                let _ = started_tx.send(Ok((router, id)));
                task.await;
            })
        }));
        let (router, id) = started_rx
            .recv()
            .unwrap_or_else(|_| Err("the node's shard thread exited".into()))
            .map_err(StartError::Transport)?;
        Ok(MultiRaft {
            id,
            router,
            shared,
            hosts,
        })
    }

    /// This node's id (the transport's).
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Starts group `group` on this node, as [`Raft::new`] starts a node: recovers it from its
    /// stores, restores the newest snapshot into `fsm`, and runs its loop on its shard's thread
    /// (shard `group mod shards`; [`add_group_on`](Self::add_group_on) picks another).
    /// `config.local_id` must be this node's id. Fails with `StartError::Transport` if the
    /// group already runs here or the node stopped. A group with no state waits for
    /// [`Raft::bootstrap_cluster`] or for a leader to add it, as any node.
    ///
    /// Unlike [`Raft::new`], it returns without waiting for the group's loop to run on its
    /// shard (a shard busy with thousands of groups would make each call wait behind them):
    /// what the returned `Raft` is asked meanwhile waits in its queue, and a group whose
    /// node stops before its loop runs stops as if shut down.
    pub fn add_group(
        &self,
        group: GroupId,
        config: Config,
        fsm: impl Fsm,
        log_store: impl LogStore + 'static,
        stable_store: impl StableStore + 'static,
        snapshot_store: impl SnapshotStore + 'static,
    ) -> Result<Raft, StartError> {
        let shard = (group.0 % self.hosts.len() as u64) as usize;
        self.add_group_on(
            shard,
            group,
            config,
            fsm,
            log_store,
            stable_store,
            snapshot_store,
        )
    }

    /// [`add_group`](Self::add_group) on shard thread `shard` (below
    /// [`shards`](Self::shards)) rather than shard `group mod shards`: to place groups by
    /// load, say. The other nodes need not place the group alike.
    ///
    /// **Moving a group's replica to another shard**: shut it down ([`Raft::shutdown`]; the
    /// group carries on on its other replicas; transfer its leadership away first if this one
    /// leads, for a shorter pause) and add it again here on the new shard from the same
    /// stores (with a `SharedWal`, `wal.log(group)` again) and a state machine to restore: it
    /// recovers as a restarted replica does, from the newest snapshot and its log. The move
    /// costs that replica a restart, not the group its availability.
    ///
    /// Fails with a `StartError::Config` naming `shard` if there is no such shard, and as
    /// `add_group` otherwise.
    #[allow(clippy::too_many_arguments)]
    pub fn add_group_on(
        &self,
        shard: usize,
        group: GroupId,
        config: Config,
        fsm: impl Fsm,
        log_store: impl LogStore + 'static,
        stable_store: impl StableStore + 'static,
        snapshot_store: impl SnapshotStore + 'static,
    ) -> Result<Raft, StartError> {
        let Some(host) = self.hosts.get(shard) else {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "shard",
                reason: "must be below MultiRaftConfig::shards",
            }));
        };
        if config.local_id != self.id {
            return Err(StartError::Config(crate::core::ConfigError {
                field: "local_id",
                reason: "must be the MultiRaft node's id",
            }));
        }
        // Registered here, so a group that already runs (or a stopped node) fails the call,
        // while the group's loop starts on its shard without this thread waiting for it: a
        // round trip to a shard busy with thousands of groups took most of a 10 000-group
        // start (ARCHITECTURE §14, "Starting thousands of groups").
        self.shared
            .register_group(group)
            .map_err(StartError::Transport)?;
        let link = GroupLink {
            router: self.router,
            group,
            shared: self.shared.clone(),
        };
        let started = Raft::start(
            Some(host),
            config,
            fsm,
            log_store,
            stable_store,
            snapshot_store,
            link,
            false,
        );
        if started.is_err() {
            // It failed before its loop was sent to the shard (its stores, say).
            self.shared.unregister(group);
        }
        started
    }

    /// Stops the node: its router ends and its transport closes, and with TCP the listener is
    /// closed when this returns, so a new node may bind the same address at once (a dropped
    /// `MultiRaft` stops the same way without waiting). Shut the node's groups down first
    /// ([`Raft::shutdown`]): groups still running lose their network. Waits at most
    /// `limit`; returns false if the router had not stopped by then. Called on the thread of
    /// the node's first shard, which runs the router (from a state machine applied there), it
    /// cannot wait and returns false at once.
    pub fn shutdown(self, limit: Duration) -> bool {
        self.shared.close();
        if self.shared.thread.get() == Some(&std::thread::current().id()) {
            return false;
        }
        self.shared.wait_stopped(limit)
    }

    /// The node's shard threads ([`MultiRaftConfig::shards`]).
    pub fn shards(&self) -> usize {
        self.hosts.len()
    }

    /// Groups running now and the liveness watch's counters.
    pub fn stats(&self) -> MultiRaftStats {
        MultiRaftStats {
            groups: self.shared.groups.load(Ordering::Acquire),
            pings_sent: self.shared.pings_sent.load(Ordering::Relaxed),
            peers_silent: self.shared.silences.load(Ordering::Relaxed),
            campaigns_deferred: self.shared.campaigns_deferred.load(Ordering::Relaxed),
            campaign_slots_held: self.shared.campaign_slots_held.load(Ordering::Relaxed),
        }
    }
}

impl Drop for MultiRaft {
    /// Stops the node's router (without waiting for it: see [`MultiRaft::shutdown`]):
    /// groups still running lose their network (shut them down first). The shard threads end
    /// once every group on them has shut down.
    fn drop(&mut self) {
        self.shared.close();
    }
}
