//! The in-memory log index: where every held entry's record lives, in 8 bytes per entry.
//!
//! ```text
//!  runs (one per segment stretch)          terms (one per change of term)
//!  ┌ segment 3, first i100 ┐ ┌ segment 4 ┐  ┌ i1 t1 ┐ ┌ i250 t2 ┐
//!  │ offsets [u32] payloads│ │ …         │  └───────┘ └─────────┘
//! ```
//!
//! Why this shape: a 64-byte entry costs 104 bytes on disk, so a per-entry index of 24 bytes
//! plus a queued `Entry` clone (two reference counts touched on the shard thread and again on
//! the writer thread) was most of the per-entry bookkeeping. Offsets and payload lengths are
//! pushed to two `Vec<u32>`s; terms change rarely, so they are kept as runs. The layout of a
//! record is decided when it is appended, so nothing here changes when it becomes durable.

use crate::types::{Index, Term};
use std::collections::VecDeque;

/// Where one entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Loc {
    pub segment: u32,
    pub offset: u32,
    pub payload: u32,
}

/// Consecutive entries stored in one segment.
#[derive(Debug)]
struct Run {
    segment: u32,
    first: Index,
    offsets: Vec<u32>,
    payloads: Vec<u32>,
}

impl Run {
    fn end(&self) -> Index {
        self.first.plus(self.offsets.len() as u64)
    }
}

/// Locations and terms of the entries `first..=last`.
#[derive(Debug)]
pub(super) struct LogIndex {
    first: Index,
    /// Cover `first..=last` exactly, in order; none is empty.
    runs: VecDeque<Run>,
    /// `(start, term)`: entries from `start` up to the next start have `term`. Starts increase.
    terms: VecDeque<(Index, Term)>,
}

impl LogIndex {
    /// An empty index whose next entry is `first`.
    pub fn new(first: Index) -> LogIndex {
        LogIndex {
            first,
            runs: VecDeque::new(),
            terms: VecDeque::new(),
        }
    }

    pub fn first(&self) -> Index {
        self.first
    }

    /// The last index held; `first - 1` when empty.
    pub fn last(&self) -> Index {
        self.runs
            .back()
            .map_or(self.first.prev(), |r| r.end().prev())
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The segment holding the first entry, if any entry is held.
    pub fn oldest_segment(&self) -> Option<u32> {
        self.runs.front().map(|r| r.segment)
    }

    /// Records that entry `index` (which must be `last() + 1`) is at `segment`/`offset`.
    pub fn push(&mut self, index: Index, term: Term, segment: u32, offset: u32, payload: u32) {
        assert_eq!(
            index,
            self.last().next(),
            "log index pushes must be contiguous"
        );
        match self.runs.back_mut() {
            Some(run) if run.segment == segment => {
                run.offsets.push(offset);
                run.payloads.push(payload);
            }
            _ => self.runs.push_back(Run {
                segment,
                first: index,
                offsets: vec![offset],
                payloads: vec![payload],
            }),
        }
        if self.terms.back().is_none_or(|&(_, t)| t != term) {
            self.terms.push_back((index, term));
        }
    }

    fn run_of(&self, index: Index) -> Option<&Run> {
        if index < self.first || index > self.last() {
            return None;
        }
        // Reads are mostly of recent entries: try the last run first.
        match self.runs.back() {
            Some(run) if run.first <= index => Some(run),
            _ => {
                let at = self.runs.partition_point(|r| r.first <= index);
                self.runs.get(at.checked_sub(1)?)
            }
        }
    }

    /// Where entry `index` is, if held.
    pub fn locate(&self, index: Index) -> Option<Loc> {
        let run = self.run_of(index)?;
        let i = (index.0 - run.first.0) as usize;
        Some(Loc {
            segment: run.segment,
            offset: *run.offsets.get(i)?,
            payload: *run.payloads.get(i)?,
        })
    }

    /// The term of entry `index`, if held.
    pub fn term(&self, index: Index) -> Option<Term> {
        if index < self.first || index > self.last() {
            return None;
        }
        let at = self.terms.partition_point(|&(start, _)| start <= index);
        self.terms.get(at.checked_sub(1)?).map(|&(_, term)| term)
    }

    /// Removes every entry after `last` (no-op at or beyond `last()`).
    pub fn truncate_suffix(&mut self, last: Index) {
        while let Some(run) = self.runs.back_mut() {
            if run.first > last {
                self.runs.pop_back();
            } else {
                let keep = (last.0 + 1 - run.first.0) as usize;
                run.offsets.truncate(keep);
                run.payloads.truncate(keep);
                break;
            }
        }
        while self.terms.back().is_some_and(|&(start, _)| start > last) {
            self.terms.pop_back();
        }
    }

    /// Removes every entry before `first`; beyond `last() + 1` the index becomes empty with
    /// `first` as the next index. No-op at or below `first()`.
    pub fn truncate_prefix(&mut self, first: Index) {
        if first <= self.first {
            return;
        }
        if first > self.last() {
            self.runs.clear();
            self.terms.clear();
            self.first = first;
            return;
        }
        while self.runs.front().is_some_and(|r| r.end() <= first) {
            self.runs.pop_front();
        }
        if let Some(run) = self.runs.front_mut() {
            let drop = (first.0 - run.first.0) as usize;
            run.offsets.drain(..drop);
            run.payloads.drain(..drop);
            run.first = first;
        }
        while self.terms.len() > 1 && self.terms[1].0 <= first {
            self.terms.pop_front();
        }
        self.first = first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_and_terms_follow_pushes_and_truncations() {
        let mut index = LogIndex::new(Index(5));
        assert_eq!(index.last(), Index(4));
        for i in 5..25u64 {
            let segment = if i < 12 { 1 } else { 2 };
            let term = Term(if i < 9 { 1 } else { 3 });
            index.push(Index(i), term, segment, i as u32 * 100, i as u32);
        }
        assert_eq!(index.last(), Index(24));
        assert_eq!(
            index.locate(Index(11)),
            Some(Loc {
                segment: 1,
                offset: 1100,
                payload: 11
            })
        );
        assert_eq!(index.locate(Index(12)).map(|l| l.segment), Some(2));
        assert_eq!(index.locate(Index(4)), None);
        assert_eq!(index.locate(Index(25)), None);
        assert_eq!(index.term(Index(8)), Some(Term(1)));
        assert_eq!(index.term(Index(9)), Some(Term(3)));
        index.truncate_suffix(Index(8));
        assert_eq!(index.last(), Index(8));
        assert_eq!(index.term(Index(9)), None);
        index.push(Index(9), Term(4), 2, 5000, 1);
        assert_eq!(index.term(Index(9)), Some(Term(4)));
        assert_eq!(index.locate(Index(9)).map(|l| l.offset), Some(5000));
        index.truncate_prefix(Index(7));
        assert_eq!(index.first(), Index(7));
        assert_eq!(index.term(Index(7)), Some(Term(1)));
        assert_eq!(index.locate(Index(7)).map(|l| l.offset), Some(700));
        index.truncate_prefix(Index(20));
        assert_eq!((index.first(), index.last()), (Index(20), Index(19)));
        assert_eq!(index.term(Index(19)), None);
        index.push(Index(20), Term(5), 3, 64, 0);
        assert_eq!(index.term(Index(20)), Some(Term(5)));
    }
}
