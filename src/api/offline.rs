//! Helpers that work on a stopped node's stores (hashicorp's package-level functions):
//! [`has_existing_state`], [`get_configuration`] and [`recover_cluster`].

use super::{Config, Fsm, StartError};
use crate::core::{BootstrapError, Core, Time};
use crate::node::start::recover;
use ringraft_storage::{
    Configuration, ConfigurationError, EntryKind, Index, LogError, LogStore, SnapshotError,
    SnapshotStore, StableError, StableStore,
};
use std::fmt;
use std::io::Write;

/// True if the stores hold any state: a term, a log entry or a snapshot (hashicorp's
/// `HasExistingState`). A node without state waits for `bootstrap_cluster`.
pub fn has_existing_state(
    log: &dyn LogStore,
    stable: &dyn StableStore,
    snapshots: &dyn SnapshotStore,
) -> Result<bool, StartError> {
    let state = recover(log, stable, snapshots)?;
    Ok(crate::core::has_existing_state(&state))
}

/// The latest configuration persisted in a stopped node's stores, and its index (hashicorp's
/// `GetConfiguration`): the last configuration entry in the log, else the newest snapshot's.
/// `config` is validated as `Raft::new` would.
pub fn get_configuration(
    config: &Config,
    log: &dyn LogStore,
    stable: &dyn StableStore,
    snapshots: &dyn SnapshotStore,
) -> Result<(Index, Configuration), StartError> {
    let core_config = config.core_config(0).map_err(StartError::Config)?;
    let state = recover(log, stable, snapshots)?;
    let core = Core::new(core_config, state, Time(0)).map_err(StartError::Core)?;
    Ok(core.latest_configuration())
}

/// Why [`recover_cluster`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum RecoverClusterError {
    /// The stores could not be read (or `config` is invalid).
    Read(StartError),
    /// The stores hold no state: there is nothing to recover (bootstrap instead).
    NoExistingState,
    /// The forced configuration is invalid.
    InvalidConfiguration(ConfigurationError),
    /// The state machine failed to restore the old snapshot or to take the new one.
    Fsm(String),
    /// Writing the new snapshot failed.
    Snapshot(SnapshotError),
    /// Deleting the old log failed.
    Log(LogError),
    /// Saving the new hard state failed.
    Stable(StableError),
}

impl fmt::Display for RecoverClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoverClusterError::Read(e) => write!(f, "cannot read the node's state: {e}"),
            RecoverClusterError::NoExistingState => f.write_str("no existing state to recover"),
            RecoverClusterError::InvalidConfiguration(e) => write!(f, "invalid configuration: {e}"),
            RecoverClusterError::Fsm(e) => write!(f, "state machine failed: {e}"),
            RecoverClusterError::Snapshot(e) => write!(f, "snapshot store failed: {e}"),
            RecoverClusterError::Log(e) => write!(f, "log store failed: {e}"),
            RecoverClusterError::Stable(e) => write!(f, "stable store failed: {e}"),
        }
    }
}

impl std::error::Error for RecoverClusterError {}

/// Forces `configuration` onto a stopped node after the cluster lost quorum for good
/// (hashicorp's `RecoverCluster`), typically with the servers from
/// [`read_peers_json`](crate::read_peers_json).
///
/// **Unsafe by design**, like hashicorp's: every entry in this node's log is treated as
/// committed, including entries the old cluster never committed. Run it on every surviving
/// server with the *same* configuration, while none of them runs, then start them with
/// `Raft::new` and a fresh state machine.
///
/// What it does: restores the newest snapshot (if any) into `fsm` (a throw-away state
/// machine), applies every command entry of the log after it, takes a snapshot of `fsm`
/// ending at the log's last entry whose configuration is `configuration`, saves it in
/// `snapshots`, saves the hard state (commit index at that entry) and deletes the whole log.
pub fn recover_cluster(
    config: &Config,
    mut fsm: impl Fsm,
    log: &mut dyn LogStore,
    stable: &mut dyn StableStore,
    snapshots: &dyn SnapshotStore,
    configuration: &Configuration,
) -> Result<(), RecoverClusterError> {
    config
        .validate()
        .map_err(|e| RecoverClusterError::Read(StartError::Config(e)))?;
    let state = recover(log, stable, snapshots).map_err(RecoverClusterError::Read)?;
    let (new_state, meta) = Core::recover_cluster(&state, configuration).map_err(|e| match e {
        BootstrapError::InvalidConfiguration(e) => RecoverClusterError::InvalidConfiguration(e),
        _ => RecoverClusterError::NoExistingState,
    })?;

    let mut applied = Index(0);
    if let Some(snapshot) = &state.snapshot {
        let (_, mut reader) = snapshots
            .open(&snapshot.id)
            .map_err(RecoverClusterError::Snapshot)?;
        fsm.restore(&mut reader)
            .map_err(|e| RecoverClusterError::Fsm(e.to_string()))?;
        applied = snapshot.last.index;
    }
    for entry in state.entries.iter().filter(|e| e.id.index > applied) {
        if entry.kind == EntryKind::Command {
            fsm.apply(entry);
        }
    }

    let mut captured = fsm
        .snapshot()
        .map_err(|e| RecoverClusterError::Fsm(e.to_string()))?;
    let mut sink = snapshots
        .create(meta.last, &meta.configuration, meta.configuration_index)
        .map_err(RecoverClusterError::Snapshot)?;
    let persisted = captured
        .persist(&mut sink)
        .map_err(|e| e.to_string())
        .and_then(|()| sink.flush().map_err(|e| e.to_string()));
    captured.release();
    if let Err(e) = persisted {
        let _ = sink.cancel();
        return Err(RecoverClusterError::Fsm(e));
    }
    sink.commit().map_err(RecoverClusterError::Snapshot)?;

    stable
        .save(&new_state.hard_state)
        .map_err(RecoverClusterError::Stable)?;
    // A log store that keeps the hard state gets it too (start-up takes the newer of the two).
    if let Some(ticket) = log
        .save_hard_state(&new_state.hard_state)
        .map_err(RecoverClusterError::Log)?
    {
        log.wait_durable(ticket).map_err(RecoverClusterError::Log)?;
    }
    let ticket = log
        .truncate_prefix(meta.last.index.next())
        .map_err(RecoverClusterError::Log)?;
    log.wait_durable(ticket).map_err(RecoverClusterError::Log)?;
    Ok(())
}
