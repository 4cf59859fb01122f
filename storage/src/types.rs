//! Identifier newtypes and log entries.

use bytes::Bytes;
use std::fmt;

/// A Raft term: a logical clock that increases with every election (Raft §5.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Term(pub u64);

/// A position in the replicated log. Index 0 is the empty log; the first entry is 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Index(pub u64);

/// The identity of a server in the cluster. Stable for the life of the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

/// The identity of one Raft group. A process that runs one group uses `GroupId(0)`; with many
/// groups per node (ARCHITECTURE §9) WAL records and message envelopes name their group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u64);

impl Term {
    /// The next term.
    pub fn next(self) -> Term {
        Term(self.0 + 1)
    }
}

impl Index {
    /// The index after this one.
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }

    /// The index before this one, saturating at 0.
    pub fn prev(self) -> Index {
        Index(self.0.saturating_sub(1))
    }

    /// `self + n`.
    pub fn plus(self, n: u64) -> Index {
        Index(self.0 + n)
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// The identity of one log entry: its term and its index. Two logs that hold entries with the
/// same `LogId` are identical up to that entry (Log Matching, Raft §5.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogId {
    /// The term in which a leader created the entry.
    pub term: Term,
    /// The entry's position in the log.
    pub index: Index,
}

impl LogId {
    /// A log id from its parts.
    pub fn new(term: Term, index: Index) -> LogId {
        LogId { term, index }
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.term, self.index)
    }
}

/// What a log entry means to Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// A user command, applied to the state machine.
    Command,
    /// The empty entry a new leader appends to commit entries of earlier terms (Raft §5.4.2).
    Noop,
    /// A barrier: resolves once every entry before it has been applied.
    Barrier,
    /// A cluster configuration (its data is an encoded [`crate::Configuration`]).
    Configuration,
    /// A user restore: applying it replaces the state machine with the snapshot staged for
    /// this entry (its data is empty; the entry's own id names the staged snapshot).
    Restore,
}

impl EntryKind {
    /// The kind's stable one-byte code, used in the record and wire formats.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Command => 1,
            EntryKind::Noop => 2,
            EntryKind::Barrier => 3,
            EntryKind::Configuration => 4,
            EntryKind::Restore => 5,
        }
    }

    /// The kind for a code, or `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<EntryKind> {
        match code {
            1 => Some(EntryKind::Command),
            2 => Some(EntryKind::Noop),
            3 => Some(EntryKind::Barrier),
            4 => Some(EntryKind::Configuration),
            5 => Some(EntryKind::Restore),
            _ => None,
        }
    }
}

/// One entry of the replicated log.
///
/// `data` is reference counted: cloning an entry never copies its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Term and index.
    pub id: LogId,
    /// What the entry means.
    pub kind: EntryKind,
    /// The payload: a user command, or an encoded configuration.
    pub data: Bytes,
    /// Opaque bytes carried with the entry for the application (hashicorp's `Extensions`).
    pub extensions: Bytes,
}

impl Entry {
    /// An entry with no extensions.
    pub fn new(id: LogId, kind: EntryKind, data: Bytes) -> Entry {
        Entry {
            id,
            kind,
            data,
            extensions: Bytes::new(),
        }
    }

    /// The entry's log id.
    pub fn log_id(&self) -> LogId {
        self.id
    }

    /// Payload bytes (data plus extensions), the unit `max_append_bytes` counts.
    pub fn payload_len(&self) -> usize {
        self.data.len() + self.extensions.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_kind_codes_round_trip_and_unknown_codes_are_rejected() {
        for kind in [
            EntryKind::Command,
            EntryKind::Noop,
            EntryKind::Barrier,
            EntryKind::Configuration,
            EntryKind::Restore,
        ] {
            assert_eq!(EntryKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(EntryKind::from_code(0), None);
        assert_eq!(EntryKind::from_code(200), None);
    }

    #[test]
    fn log_ids_order_by_term_then_index() {
        assert!(LogId::new(Term(2), Index(1)) > LogId::new(Term(1), Index(9)));
        assert!(LogId::new(Term(2), Index(3)) > LogId::new(Term(2), Index(2)));
        assert_eq!(Index(0).prev(), Index(0));
    }
}
