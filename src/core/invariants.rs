//! The invariants the tests and the simulator check after every step.

use super::*;

impl Core {
    /// Checks the core's invariants; `Err` describes the first violation. Run after every step
    /// in tests and the simulator.
    pub fn check_invariants(&self) -> Result<(), String> {
        let last = self.log.last_index();
        let snapshot = self.log.prev().index;
        if !(snapshot <= self.applied && self.applied <= self.commit && self.commit <= last) {
            return Err(format!(
                "{}: expected snapshot {snapshot} <= applied {} <= commit {} <= last {last}",
                self.id(),
                self.applied,
                self.commit
            ));
        }
        if let Some(first) = self.log.iter().next() {
            if first.id.term < self.log.prev().term {
                return Err(format!(
                    "{}: log entry {} follows compaction point {} with a lower term",
                    self.id(),
                    first.id,
                    self.log.prev()
                ));
            }
        }
        // A log holds a restore entry only with its snapshot staged (or a snapshot past it).
        let covered = self.snapshot.as_ref().map_or(snapshot, |s| s.last.index);
        let unstaged = self.log.iter().find(|e| {
            e.kind == EntryKind::Restore
                && e.id.index > covered
                && !self.restores.contains_key(&e.id)
        });
        #[cfg(feature = "sim")]
        let unstaged =
            unstaged.filter(|_| self.config.mutation != Some(Mutation::AcceptUnstagedRestore));
        if let Some(e) = unstaged {
            return Err(format!(
                "{}: restore entry {} without its staged snapshot",
                self.id(),
                e.id
            ));
        }
        if self.log.durable_index() > last {
            return Err(format!(
                "{}: durable {} > last {last}",
                self.id(),
                self.log.durable_index()
            ));
        }
        if let RoleState::Leader(l) = &self.role {
            if self.leader != Some(self.id()) || self.vote != Some(self.id()) {
                return Err(format!(
                    "{}: leader without self as leader and vote",
                    self.id()
                ));
            }
            for (peer, p) in &l.progress {
                if p.match_index >= p.next_index || p.next_index > last.next() {
                    return Err(format!(
                        "{}: progress of {peer}: match {} next {} last {last}",
                        self.id(),
                        p.match_index,
                        p.next_index
                    ));
                }
                if let ReplicationState::Replicate { inflight } = &p.state {
                    let mut previous = p.match_index;
                    for &i in inflight {
                        if i <= previous || i > last {
                            return Err(format!("{}: inflight to {peer} out of order", self.id()));
                        }
                        previous = i;
                    }
                }
            }
        }
        Ok(())
    }
}
