//! The core's view of the replicated log.
//!
//! The core keeps the entries after its compaction point in memory (the glue persists them
//! through `Persist` effects) and tracks which prefix is known durable. Durability arrives
//! asynchronously: each persist batch has a sequence number, and `mark_persisted(seq)` learns
//! that every batch up to `seq` is on disk.
//!
//! Why durability is tracked by batch and capped on truncation: a batch records "the log
//! was durable up to index i" at the time it was written. If a later batch truncates the log
//! below `i` and appends different entries, the old claim refers to entries that no longer
//! exist; so a truncation at `t` caps every outstanding claim (and the current durable index)
//! at `t - 1`. The leader counts itself toward commit only with `durable_index`.

use bytes::Bytes;
use ringraft_storage::{Entry, EntryKind, Index, LogId, Term};
use std::collections::VecDeque;

/// In-memory log entries after `prev` plus durability tracking.
#[derive(Clone, Debug)]
pub struct RaftLog {
    /// The id of the entry just before the first held entry (the compaction point).
    prev: LogId,
    entries: VecDeque<Entry>,
    /// Highest index known durable and matching the current log.
    durable: Index,
    /// Outstanding persist batches: (seq, last index of the log once that batch is durable).
    pending: VecDeque<(u64, Index)>,
    /// Memory the held entries take: [`held_size`] of each.
    held_bytes: u64,
}

/// What one held entry costs in memory, as [`RaftLog::held_bytes`] counts it: its `Entry`
/// (whose payloads are reference-counted buffers) plus its payload and extensions.
pub fn held_size(entry: &Entry) -> u64 {
    (std::mem::size_of::<Entry>() + entry.data.len() + entry.extensions.len()) as u64
}

impl RaftLog {
    /// A log holding `entries`, which follow `prev` consecutively and are already durable.
    pub fn new(prev: LogId, entries: Vec<Entry>) -> RaftLog {
        let durable = prev.index.plus(entries.len() as u64);
        let held_bytes = entries.iter().map(held_size).sum();
        RaftLog {
            prev,
            entries: entries.into(),
            durable,
            pending: VecDeque::new(),
            held_bytes,
        }
    }

    /// Memory the held entries take (sizes of their `Entry` values and payloads): what a
    /// compaction can give back (ARCHITECTURE §13).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Drops the first `n` held entries.
    fn drop_front(&mut self, n: usize) {
        let dropped: u64 = self.entries.drain(..n).map(|e| held_size(&e)).sum();
        self.held_bytes -= dropped;
    }

    /// The compaction point: entries at or below it are not held.
    pub fn prev(&self) -> LogId {
        self.prev
    }

    /// The last entry's id (or the compaction point when empty).
    pub fn last_log_id(&self) -> LogId {
        self.entries.back().map(|e| e.id).unwrap_or(self.prev)
    }

    /// The last index.
    pub fn last_index(&self) -> Index {
        self.last_log_id().index
    }

    /// Highest index known durable.
    pub fn durable_index(&self) -> Index {
        self.durable
    }

    /// Number of held entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if no entries are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn offset(&self, index: Index) -> Option<usize> {
        if index <= self.prev.index {
            return None;
        }
        let offset = (index.0 - self.prev.index.0 - 1) as usize;
        (offset < self.entries.len()).then_some(offset)
    }

    /// The term at `index`: `Some` for the compaction point and held entries, `None` for
    /// indexes beyond the log or compacted away.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.prev.index {
            return Some(self.prev.term);
        }
        self.offset(index).map(|o| self.entries[o].id.term)
    }

    /// The entry at `index`, if held.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.offset(index).map(|o| &self.entries[o])
    }

    /// Entries from `from` (inclusive) to `to` (inclusive), at most `max_count` of them and at
    /// most `max_bytes` of payload (but at least one when any is available).
    pub fn slice(&self, from: Index, to: Index, max_count: usize, max_bytes: usize) -> Vec<Entry> {
        let Some(start) = self.offset(from) else {
            return Vec::new();
        };
        // Sized once: a slice grown one entry at a time reallocates about log2(n) times, and
        // with hundreds of entries per apply batch those copies showed in profiles.
        let wanted = usize::try_from(to.0.saturating_sub(from.0).saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(max_count)
            .min(self.entries.len() - start);
        let mut out = Vec::with_capacity(wanted);
        let mut bytes = 0usize;
        for entry in self.entries.iter().skip(start) {
            if entry.id.index > to || out.len() >= max_count {
                break;
            }
            bytes += entry.payload_len();
            if bytes > max_bytes && !out.is_empty() {
                break;
            }
            out.push(entry.clone());
        }
        out
    }

    /// Appends entries that must follow the last entry consecutively.
    pub fn append(&mut self, entries: impl IntoIterator<Item = Entry>) {
        for entry in entries {
            let expected = self.last_index().next();
            assert_eq!(entry.id.index, expected, "log append must be consecutive");
            assert!(
                entry.id.term >= self.last_log_id().term,
                "log terms must not decrease"
            );
            self.held_bytes += held_size(&entry);
            self.entries.push_back(entry);
        }
    }

    /// Appends a new entry in `term` and returns its id.
    pub fn append_new(&mut self, term: Term, kind: EntryKind, data: Bytes) -> LogId {
        let id = LogId::new(term, self.last_index().next());
        self.append([Entry::new(id, kind, data)]);
        id
    }

    /// Removes every entry at or after `from` (which must be above the compaction point).
    pub fn truncate_from(&mut self, from: Index) {
        assert!(
            from > self.prev.index,
            "cannot truncate at or below the compaction point"
        );
        let keep = (from.0 - self.prev.index.0 - 1) as usize;
        let dropped: u64 = self.entries.iter().skip(keep).map(held_size).sum();
        self.held_bytes -= dropped;
        self.entries.truncate(keep);
        let cap = from.prev();
        self.durable = self.durable.min(cap);
        for (_, claimed) in self.pending.iter_mut() {
            *claimed = (*claimed).min(cap);
        }
    }

    /// Drops every entry up to and including `id.index`. If the log holds `id`, the entries after
    /// it stay (compaction, or Figure 13 rule 7 when installing a snapshot); otherwise the whole
    /// log is discarded and the log continues after `id`. The dropped entries are covered by a
    /// durable snapshot, so they count as durable.
    pub fn compact_through(&mut self, id: LogId) {
        if id.index <= self.prev.index {
            return;
        }
        if self.term_at(id.index) == Some(id.term) {
            let drop = (id.index.0 - self.prev.index.0) as usize;
            self.drop_front(drop);
            self.durable = self.durable.max(id.index);
        } else {
            self.entries.clear();
            self.held_bytes = 0;
            self.durable = id.index;
            for (_, claimed) in self.pending.iter_mut() {
                *claimed = (*claimed).min(id.index);
            }
        }
        self.prev = id;
    }

    /// Drops the entries up to `id.index` and declares `id` the compaction point whatever term
    /// the log held there (only the simulator's `KeepConflictingSuffixOnInstall` bug does this).
    #[cfg(feature = "sim")]
    pub fn force_prev(&mut self, id: LogId) {
        let drop = ((id.index.0 - self.prev.index.0) as usize).min(self.entries.len());
        self.drop_front(drop);
        self.prev = id;
        self.durable = self.durable.max(id.index);
    }

    /// Records that persist batch `seq` makes the log durable up to the current last index.
    pub fn note_persist_batch(&mut self, seq: u64) {
        let last = self.last_index();
        self.pending.push_back((seq, last));
    }

    /// Learns that every batch up to `seq` is durable.
    pub fn mark_persisted(&mut self, seq: u64) {
        while let Some(&(s, claimed)) = self.pending.front() {
            if s > seq {
                break;
            }
            self.pending.pop_front();
            self.durable = self
                .durable
                .max(claimed)
                .min(self.last_index())
                .max(self.prev.index);
        }
    }

    /// The first index of the run of entries with `term` that contains `index`, scanning back
    /// no further than the compaction point.
    pub fn first_index_of_term_run(&self, index: Index) -> Index {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first.prev() > self.prev.index && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The highest index at or below `at` whose entry has `term`, if any is held.
    pub fn last_index_of_term_at_or_below(&self, term: Term, at: Index) -> Option<Index> {
        let mut index = at.min(self.last_index());
        while index > self.prev.index {
            match self.term_at(index) {
                Some(t) if t == term => return Some(index),
                Some(t) if t < term => return None,
                _ => index = index.prev(),
            }
        }
        None
    }

    /// True if a candidate with `last` is at least as up to date as this log (Raft §5.4.1).
    pub fn is_up_to_date(&self, last: LogId) -> bool {
        let mine = self.last_log_id();
        last.term > mine.term || (last.term == mine.term && last.index >= mine.index)
    }

    /// Iterates over the held entries.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with_terms(terms: &[u64]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, t)| {
                Entry::new(
                    LogId::new(Term(*t), Index(i as u64 + 1)),
                    EntryKind::Noop,
                    Bytes::new(),
                )
            })
            .collect();
        RaftLog::new(LogId::default(), entries)
    }

    #[test]
    fn truncation_caps_durability_claims_of_outstanding_batches() {
        let mut log = log_with_terms(&[1, 1, 2]);
        assert_eq!(log.durable_index(), Index(3));
        log.append_new(Term(2), EntryKind::Noop, Bytes::new());
        log.note_persist_batch(1);
        log.truncate_from(Index(3));
        assert_eq!(log.durable_index(), Index(2));
        log.append_new(Term(3), EntryKind::Noop, Bytes::new());
        log.note_persist_batch(2);
        log.mark_persisted(1);
        assert_eq!(
            log.durable_index(),
            Index(2),
            "batch 1 wrote entries since truncated"
        );
        log.mark_persisted(2);
        assert_eq!(log.durable_index(), Index(3));
    }

    #[test]
    fn compaction_keeps_a_matching_suffix_and_discards_a_conflicting_log() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        log.compact_through(LogId::new(Term(1), Index(2)));
        assert_eq!(log.prev(), LogId::new(Term(1), Index(2)));
        assert_eq!(log.last_log_id(), LogId::new(Term(2), Index(4)));
        assert_eq!(log.term_at(Index(1)), None);
        assert_eq!(log.term_at(Index(2)), Some(Term(1)));
        // A snapshot whose last entry conflicts with ours replaces the whole log.
        log.compact_through(LogId::new(Term(3), Index(3)));
        assert_eq!(log.last_log_id(), LogId::new(Term(3), Index(3)));
        assert_eq!(log.len(), 0);
        assert_eq!(log.durable_index(), Index(3));
        // A snapshot beyond the log also replaces it.
        log.compact_through(LogId::new(Term(3), Index(10)));
        assert_eq!(log.last_index(), Index(10));
    }

    #[test]
    fn term_runs_and_up_to_date_checks() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term_run(Index(5)), Index(3));
        assert_eq!(log.first_index_of_term_run(Index(2)), Index(1));
        assert_eq!(
            log.last_index_of_term_at_or_below(Term(2), Index(6)),
            Some(Index(5))
        );
        assert_eq!(log.last_index_of_term_at_or_below(Term(3), Index(6)), None);
        assert!(log.is_up_to_date(LogId::new(Term(4), Index(6))));
        assert!(log.is_up_to_date(LogId::new(Term(5), Index(1))));
        assert!(!log.is_up_to_date(LogId::new(Term(4), Index(5))));
        assert_eq!(log.term_at(Index(0)), Some(Term(0)));
        assert_eq!(log.term_at(Index(7)), None);
    }

    #[test]
    fn held_bytes_follow_appends_truncations_and_compactions() {
        let entry = |index: u64, len: usize| {
            Entry::new(
                LogId::new(Term(1), Index(index)),
                EntryKind::Command,
                Bytes::from(vec![7u8; len]),
            )
        };
        let size = std::mem::size_of::<Entry>() as u64;
        let mut log = RaftLog::new(LogId::default(), vec![entry(1, 10), entry(2, 20)]);
        assert_eq!(log.held_bytes(), 2 * size + 30);
        let mut with_extensions = entry(3, 30);
        with_extensions.extensions = Bytes::from_static(b"ext");
        log.append([with_extensions, entry(4, 40)]);
        assert_eq!(log.held_bytes(), 4 * size + 103);
        log.truncate_from(Index(4));
        assert_eq!(log.held_bytes(), 3 * size + 63);
        log.compact_through(LogId::new(Term(1), Index(2)));
        assert_eq!(log.held_bytes(), size + 33);
        // A conflicting snapshot discards everything.
        log.compact_through(LogId::new(Term(2), Index(3)));
        assert_eq!(log.held_bytes(), 0);
        log.append([Entry::new(
            LogId::new(Term(2), Index(4)),
            EntryKind::Noop,
            Bytes::new(),
        )]);
        assert_eq!(log.held_bytes(), size);
        assert_eq!(
            log.held_bytes(),
            log.iter().map(held_size).sum::<u64>(),
            "the running count matches a recount"
        );
    }

    #[test]
    fn slices_respect_count_and_byte_limits_but_send_at_least_one() {
        let mut log = RaftLog::new(LogId::default(), Vec::new());
        for _ in 0..10 {
            log.append_new(Term(1), EntryKind::Command, Bytes::from(vec![0u8; 100]));
        }
        assert_eq!(log.slice(Index(1), Index(10), 4, 10_000).len(), 4);
        assert_eq!(log.slice(Index(1), Index(10), 100, 250).len(), 2);
        assert_eq!(log.slice(Index(1), Index(10), 100, 10).len(), 1);
        assert_eq!(log.slice(Index(8), Index(9), 100, 10_000).len(), 2);
        assert!(log.slice(Index(11), Index(20), 100, 10_000).is_empty());
    }
}
