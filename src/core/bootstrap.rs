//! Bootstrap (hashicorp's `BootstrapCluster`), offline cluster recovery (`RecoverCluster`) and
//! the "existing state" test they share.

use super::*;

/// True if a node has any state: a term, a log entry or a snapshot (hashicorp's
/// `HasExistingState`).
pub fn has_existing_state(state: &RecoveredState) -> bool {
    state.hard_state.term > Term(0)
        || !state.entries.is_empty()
        || state.log_prev.index > Index(0)
        || state.snapshot.is_some()
}

impl Core {
    /// The recovered state a brand-new cluster member persists before its first start: term 1
    /// and the configuration as entry 1 (hashicorp's bootstrap). Every initial voter should be
    /// bootstrapped with the same configuration.
    pub fn bootstrap_state(
        configuration: &Configuration,
    ) -> Result<RecoveredState, ConfigurationError> {
        configuration.validate()?;
        let entry = Entry::new(
            LogId::new(Term(1), Index(1)),
            EntryKind::Configuration,
            configuration.encode(),
        );
        Ok(RecoveredState {
            snapshot: None,
            hard_state: HardState {
                term: Term(1),
                vote: None,
                commit: Index(0),
            },
            log_prev: LogId::default(),
            entries: vec![entry],
            staged_restores: Vec::new(),
        })
    }

    /// Bootstraps a new cluster member (hashicorp's `BootstrapCluster`): the state to persist
    /// before the first start. Refused if the node already has state, if `local` is not a
    /// voter in `configuration`, or if the configuration is invalid.
    pub fn bootstrap(
        existing: &RecoveredState,
        local: NodeId,
        configuration: &Configuration,
    ) -> Result<RecoveredState, BootstrapError> {
        if has_existing_state(existing) {
            return Err(BootstrapError::ExistingState);
        }
        configuration
            .validate()
            .map_err(BootstrapError::InvalidConfiguration)?;
        if !configuration.is_voter(local) {
            return Err(BootstrapError::NotVoter { id: local });
        }
        Core::bootstrap_state(configuration).map_err(BootstrapError::InvalidConfiguration)
    }

    /// Forces a new configuration after losing quorum (hashicorp's `RecoverCluster`).
    ///
    /// **Unsafe by design**: every entry in the local log is treated as committed, and the
    /// surviving servers must all be recovered with the same configuration. The returned state
    /// has no log: it starts from a snapshot ending at the old log's last entry whose
    /// configuration is `configuration`. The caller must apply every command entry of the old
    /// state to the state machine, save that snapshot with the returned metadata (its `size`
    /// and `id` are the caller's to fill), persist the returned state, and then start the node.
    pub fn recover_cluster(
        existing: &RecoveredState,
        configuration: &Configuration,
    ) -> Result<(RecoveredState, SnapshotMeta), BootstrapError> {
        if !has_existing_state(existing) {
            return Err(BootstrapError::NoExistingState);
        }
        configuration
            .validate()
            .map_err(BootstrapError::InvalidConfiguration)?;
        let last = existing
            .entries
            .last()
            .map(|e| e.id)
            .unwrap_or(existing.log_prev)
            .max(
                existing
                    .snapshot
                    .as_ref()
                    .map_or(LogId::default(), |s| s.last),
            );
        let meta = SnapshotMeta {
            id: String::new(),
            last,
            configuration: configuration.clone(),
            configuration_index: last.index,
            size: 0,
        };
        let mut hard_state = existing.hard_state;
        hard_state.commit = last.index;
        hard_state.term = hard_state.term.max(last.term);
        let state = RecoveredState {
            hard_state,
            snapshot: Some(meta.clone()),
            log_prev: last,
            entries: Vec::new(),
            staged_restores: Vec::new(),
        };
        Ok((state, meta))
    }
}
