//! Cluster-wide safety checkers (Raft Figure 3 properties).

use crate::core::{Core, Role};
use ringraft_storage::{Configuration, Entry, EntryKind, Index, LogId, NodeId, Term};
use std::collections::BTreeMap;

/// What the checkers have learned so far.
#[derive(Default)]
pub struct Checker {
    /// Election safety: at most one leader per term.
    leaders: BTreeMap<Term, NodeId>,
    /// Every entry any node has seen committed, with the earliest term in which a node knew it
    /// was committed.
    committed: BTreeMap<Index, (LogId, Term)>,
    /// State-machine safety: the entry applied at each index.
    applied: BTreeMap<Index, (LogId, bytes::Bytes)>,
    /// The highest commit index any node has reached (reads must not return less than what
    /// was committed when they arrived).
    max_commit: Index,
    /// Every configuration entry seen committed, from any node's log.
    committed_configurations: BTreeMap<Index, (LogId, Configuration)>,
    /// Per node, what its configuration bookkeeping looked like when last verified (the
    /// check decodes entries, so it is skipped while nothing it depends on changed).
    bookkeeping_verified: BTreeMap<NodeId, Vec<BookkeepingKey>>,
}

impl Checker {
    /// Checks a node after it processed an event. `commit_seen` is the highest commit index
    /// already recorded for this node (updated here).
    pub fn after_step(&mut self, core: &Core, commit_seen: &mut Index) -> Result<(), String> {
        core.check_invariants()?;
        let key = bookkeeping_key(core);
        if self.bookkeeping_verified.get(&core.id()) != Some(&key) {
            check_configuration_bookkeeping(core)?;
            self.bookkeeping_verified.insert(core.id(), key);
        }
        if core.role() == Role::Leader {
            match self.leaders.get(&core.term()) {
                Some(&other) if other != core.id() => {
                    return Err(format!(
                        "election safety: {} and {other} both lead {}",
                        core.id(),
                        core.term()
                    ))
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(core.term(), core.id());
                    self.check_leader_completeness(core)?;
                }
            }
        }
        if core.role() == Role::Leader {
            self.check_configurations(core)?;
        }
        self.observe_commits(core, commit_seen)
    }

    /// At most one uncommitted configuration, and no two quorums of one term's configurations
    /// that could be disjoint.
    fn check_configurations(&mut self, core: &Core) -> Result<(), String> {
        // Committed as far as anyone knows: a new leader may not have learned yet that an
        // earlier configuration committed.
        let known = self
            .committed
            .keys()
            .next_back()
            .copied()
            .unwrap_or_default();
        let commit = core.commit_index().max(known);
        // The newest configuration committed anywhere that this leader must hold (committed
        // in its term or earlier: leader completeness), from the record of every node's log:
        // not this leader's own bookkeeping, which is what a bug would corrupt. A stale leader
        // of an older term need not know what later leaders committed, even entries of its
        // own term or earlier that a later leader committed (the simulator's seed 49 058).
        let newest = self
            .committed_configurations
            .iter()
            .rev()
            .find(|(index, _)| {
                self.committed
                    .get(index)
                    .is_some_and(|&(_, first_known)| first_known <= core.term())
            })
            .map(|(_, c)| c);
        if let Some((id, committed)) = newest {
            let latest = core.latest_configuration();
            if latest.0 < id.index {
                return Err(format!(
                    "configuration safety: leader {} in {} has its latest configuration at {} \
                     but the configuration {id} was committed",
                    core.id(),
                    core.term(),
                    latest.0
                ));
            }
            let voters: Vec<NodeId> = committed.voters().collect();
            let latest: Vec<NodeId> = latest.1.voters().collect();
            if quorums_can_be_disjoint(&latest, &voters) {
                return Err(format!(
                    "configuration safety: leader {} in {} has latest voters {latest:?}, and \
                     the configuration committed at {id} has voters {voters:?}: their quorums \
                     can be disjoint",
                    core.id(),
                    core.term()
                ));
            }
        }
        let uncommitted = core
            .log()
            .iter()
            .filter(|e| e.id.index > commit && e.kind == ringraft_storage::EntryKind::Configuration)
            .count();
        if uncommitted > 1 {
            return Err(format!(
                "configuration safety: leader {} has {uncommitted} uncommitted configurations",
                core.id()
            ));
        }
        // The latest and the committed configuration are the only two that can be in force at
        // once; single-server changes keep their majorities overlapping.
        let latest: Vec<NodeId> = core.latest_configuration().1.voters().collect();
        // Committed as far as anyone knows (a new leader's own commit index may lag).
        let committed: Vec<NodeId> = core.configuration_at(commit).1.voters().collect();
        if !committed.is_empty() && quorums_can_be_disjoint(&latest, &committed) {
            return Err(format!(
                "configuration safety: leader {} in {} has latest voters {latest:?} and \
                 committed voters {committed:?}, whose quorums can be disjoint",
                core.id(),
                core.term()
            ));
        }
        Ok(())
    }

    /// Records the entries `core` has committed since `commit_seen` (call before effects that
    /// may compact them away, and after every step).
    pub fn observe_commits(&mut self, core: &Core, commit_seen: &mut Index) -> Result<(), String> {
        let commit = core.commit_index();
        self.max_commit = self.max_commit.max(commit);
        let mut i = commit_seen.next();
        while i <= commit {
            if let Some(entry) = core.log().entry(i) {
                if entry.kind == EntryKind::Configuration {
                    if let Ok(c) = Configuration::decode(&entry.data) {
                        self.committed_configurations.insert(i, (entry.id, c));
                    }
                }
                match self.committed.get_mut(&i) {
                    Some((id, _)) if *id != entry.id => {
                        return Err(format!(
                            "commit safety: {} committed {} at {i}, another node committed {id}",
                            core.id(),
                            entry.id
                        ))
                    }
                    Some((_, term)) => *term = (*term).min(core.term()),
                    None => {
                        self.committed.insert(i, (entry.id, core.term()));
                    }
                }
            }
            i = i.next();
        }
        *commit_seen = (*commit_seen).max(commit);
        Ok(())
    }

    /// Leader completeness (Raft §5.4): the leader of a term holds every entry committed in an
    /// earlier term. (A slow node can still win an old term after later terms committed
    /// entries; those it need not hold.)
    fn check_leader_completeness(&self, core: &Core) -> Result<(), String> {
        let log = core.log();
        for (&index, &(id, term)) in self.committed.range(log.prev().index.next()..) {
            if term < core.term() && log.term_at(index) != Some(id.term) {
                return Err(format!(
                    "leader completeness: {} leads {} without committed entry {id}",
                    core.id(),
                    core.term()
                ));
            }
        }
        Ok(())
    }

    /// State-machine safety: every node applies the same entry at each index.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), String> {
        match self.applied.get(&entry.id.index) {
            Some((id, data)) if *id != entry.id || *data != entry.data => Err(format!(
                "state-machine safety: {node} applied {} at {}, another node applied {id}",
                entry.id, entry.id.index
            )),
            Some(_) => Ok(()),
            None => {
                self.applied
                    .insert(entry.id.index, (entry.id, entry.data.clone()));
                Ok(())
            }
        }
    }

    /// The highest commit index any node has reached so far.
    pub fn max_commit(&self) -> Index {
        self.max_commit
    }

    /// The id of the entry committed at `index`, if any node committed one.
    pub fn committed_at(&self, index: Index) -> Option<LogId> {
        self.committed.get(&index).map(|(id, _)| *id)
    }

    /// Number of terms that had a leader.
    pub fn leader_terms(&self) -> usize {
        self.leaders.len()
    }
}

/// What the bookkeeping check depends on: each tracked configuration's index, the term of the
/// log entry there (an entry's contents never change while its index and term do not), its
/// size, and the compaction point.
type BookkeepingKey = (Index, Option<Term>, usize, Index);

fn bookkeeping_key(core: &Core) -> Vec<BookkeepingKey> {
    let prev = core.log().prev().index;
    core.configurations()
        .iter()
        .map(|(index, c)| (*index, core.log().term_at(*index), c.servers.len(), prev))
        .collect()
}

/// Every configuration the core tracks after its base is a configuration entry of its log,
/// holding that configuration (after truncations and compactions too); only the base may lie
/// at or below the compaction point.
fn check_configuration_bookkeeping(core: &Core) -> Result<(), String> {
    let prev = core.log().prev().index;
    for (position, (index, configuration)) in core.configurations().iter().enumerate() {
        if *index <= prev {
            if position > 0 {
                return Err(format!(
                    "configuration bookkeeping: {} tracks a second configuration at {index}, at \
                     or below its compaction point {prev}",
                    core.id()
                ));
            }
            continue;
        }
        let holds = core.log().entry(*index).is_some_and(|e| {
            e.kind == EntryKind::Configuration
                && Configuration::decode(&e.data).is_ok_and(|c| c == *configuration)
        });
        if !holds {
            return Err(format!(
                "configuration bookkeeping: {} tracks a configuration at {index} that its log \
                 does not hold there",
                core.id()
            ));
        }
    }
    Ok(())
}

/// Log matching (Raft §5.3): if two logs hold an entry with the same index and term, they are
/// identical up to it.
pub fn check_log_matching(a: (NodeId, &[Entry]), b: (NodeId, &[Entry])) -> Result<(), String> {
    let (na, la) = a;
    let (nb, lb) = b;
    let common = la.len().min(lb.len());
    let Some(top) = (0..common).rev().find(|&i| la[i].id == lb[i].id) else {
        return Ok(());
    };
    for i in 0..=top {
        if la[i] != lb[i] {
            return Err(format!(
                "log matching: {na} and {nb} agree on {} but differ at {}",
                la[top].id, la[i].id.index
            ));
        }
    }
    Ok(())
}

/// True if a majority of `a` and a majority of `b` can be disjoint.
pub fn quorums_can_be_disjoint(a: &[NodeId], b: &[NodeId]) -> bool {
    let only_a = a.iter().filter(|x| !b.contains(x)).count();
    let only_b = b.iter().filter(|x| !a.contains(x)).count();
    let both = a.len() - only_a;
    let (need_a, need_b) = (a.len() / 2 + 1, b.len() / 2 + 1);
    // Each side takes its own members first, then shares the common ones.
    need_a.saturating_sub(only_a) + need_b.saturating_sub(only_b) <= both
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> Vec<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    #[test]
    fn single_server_changes_keep_quorums_overlapping_and_two_changes_do_not() {
        assert!(!quorums_can_be_disjoint(
            &ids(&[1, 2, 3]),
            &ids(&[1, 2, 3, 4])
        ));
        assert!(!quorums_can_be_disjoint(&ids(&[1, 2, 3]), &ids(&[1, 2])));
        assert!(!quorums_can_be_disjoint(
            &ids(&[1, 2, 3, 4]),
            &ids(&[2, 3, 4])
        ));
        assert!(quorums_can_be_disjoint(
            &ids(&[1, 2, 3]),
            &ids(&[2, 3, 4, 5])
        ));
        assert!(quorums_can_be_disjoint(&ids(&[1, 2, 3]), &ids(&[4, 5])));
        assert!(quorums_can_be_disjoint(&ids(&[1, 2]), &ids(&[3])));
    }
}
