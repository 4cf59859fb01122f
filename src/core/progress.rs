//! Per-follower replication progress: one enum state machine that owns its transitions.
//!
//! ```text
//!            success                     reject / stall
//!   Probe ───────────────► Replicate ───────────────────► Probe
//!     ▲                                                     
//!     └──── snapshot done ── Snapshot ◄── needs compacted entries
//! ```
//!
//! - `Probe`: the leader does not know where the follower's log matches; it sends one
//!   AppendEntries at a time and waits for the answer (or a heartbeat response) before the
//!   next, walking back with the follower's conflict hints.
//! - `Replicate`: the follower's log matches up to `match_index`; the leader streams entries
//!   optimistically, at most `max_inflight` messages ahead of the acknowledgements.
//! - `Snapshot`: the follower needs entries the leader has compacted; it must install a
//!   snapshot first (sent by the snapshot machinery of the next core milestone).
//!
//! Invariant: `match_index < next_index`.

use ringraft_storage::Index;
use std::collections::VecDeque;

/// Where replication to one follower stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Finding the match point, one message at a time.
    Probe {
        /// A probe is outstanding: send nothing more until it is answered.
        paused: bool,
    },
    /// Streaming; `inflight` holds the last index of each unacknowledged message, ascending.
    Replicate {
        /// Last index of each message in flight.
        inflight: VecDeque<Index>,
    },
    /// Streaming a snapshot that ends at `index`, one chunk at a time: the leader's snapshot
    /// (the follower needs compacted entries), or with `stage` the user restore whose entry is
    /// at `index` (the follower must stage it before it may accept that entry).
    Snapshot {
        /// The snapshot's last included index (for a staged restore: its entry's index).
        index: Index,
        /// Staging a user restore rather than installing a snapshot.
        stage: bool,
        /// The offset the follower expects next.
        next_offset: u64,
        /// A chunk is being read or is on its way.
        in_flight: bool,
        /// The round in which the outstanding chunk was requested (to resume after a loss).
        sent_round: u64,
    },
}

/// The leader's knowledge of one follower.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Highest index known to match the leader's log (durably on the follower).
    pub match_index: Index,
    /// Next index to send.
    pub next_index: Index,
    /// The replication state machine.
    pub state: ReplicationState,
    /// The highest heartbeat round the follower acknowledged.
    pub acked_round: u64,
    /// The round in which `match_index` last advanced (or the state was entered); used to
    /// detect a stalled pipeline whose messages were lost.
    pub progress_round: u64,
    /// Set while the follower is no longer a member: the round it left in.
    pub removed_at_round: Option<u64>,
    /// The round stamped on the last AppendEntries sent to the follower (0: none yet): the
    /// heartbeat timer's rounds skip a follower that was sent one lately.
    pub append_round: u64,
}

impl Progress {
    /// A fresh progress for a new leader whose last index is `last`.
    pub fn new(last: Index, round: u64) -> Progress {
        Progress {
            match_index: Index(0),
            next_index: last.next(),
            state: ReplicationState::Probe { paused: false },
            acked_round: 0,
            progress_round: round,
            removed_at_round: None,
            append_round: 0,
        }
    }

    /// True if the heartbeat of the round after `previous` need not go to this follower (the
    /// rule at `BUSY_ROUNDS_MIN` in `core::leader`): it is streaming (`Replicate`), and within
    /// the last `rounds` rounds it was sent AppendEntries and acknowledged a round. A follower
    /// being probed or sent a snapshot, or whose messages go unanswered (cut off, or a stalled
    /// pipeline), is not busy: heartbeats unpause and restart it as before.
    pub fn is_busy(&self, previous: u64, rounds: u64) -> bool {
        let recent = |round: u64| round + rounds > previous;
        matches!(self.state, ReplicationState::Replicate { .. })
            && recent(self.append_round)
            && recent(self.acked_round)
    }

    /// True if nothing more may be sent now.
    pub fn is_paused(&self, max_inflight: usize) -> bool {
        match &self.state {
            ReplicationState::Probe { paused } => *paused,
            ReplicationState::Replicate { inflight } => inflight.len() >= max_inflight,
            ReplicationState::Snapshot { .. } => true,
        }
    }

    /// Holds every entry up to `last`, has nothing in flight, is a member, and acknowledged
    /// heartbeat round `round` (a condition of quiescence).
    pub fn is_caught_up(&self, last: Index, round: u64) -> bool {
        self.match_index == last
            && self.acked_round >= round
            && self.removed_at_round.is_none()
            && match &self.state {
                ReplicationState::Replicate { inflight } => inflight.is_empty(),
                ReplicationState::Probe { paused } => !paused,
                ReplicationState::Snapshot { .. } => false,
            }
    }

    /// Records that an AppendEntries ending at `last` was sent.
    pub fn on_sent(&mut self, last: Index, carried_entries: bool) {
        match &mut self.state {
            ReplicationState::Probe { paused } => *paused = true,
            ReplicationState::Replicate { inflight } => {
                if carried_entries {
                    inflight.push_back(last);
                    self.next_index = last.next();
                }
            }
            ReplicationState::Snapshot { .. } => {}
        }
    }

    /// A successful AppendEntries response with `match_index`. Returns true if the match index
    /// advanced. Moves Probe to Replicate.
    pub fn on_success(&mut self, match_index: Index, round: u64) -> bool {
        let advanced = match_index > self.match_index;
        if advanced {
            self.match_index = match_index;
            self.progress_round = round;
        }
        self.next_index = self.next_index.max(self.match_index.next());
        match &mut self.state {
            ReplicationState::Probe { .. } => {
                self.state = ReplicationState::Replicate {
                    inflight: VecDeque::new(),
                };
                self.progress_round = round;
            }
            ReplicationState::Replicate { inflight } => {
                while inflight.front().is_some_and(|&i| i <= self.match_index) {
                    inflight.pop_front();
                }
            }
            ReplicationState::Snapshot { index, .. } => {
                if self.match_index >= *index {
                    self.state = ReplicationState::Probe { paused: false };
                }
            }
        }
        advanced
    }

    /// A rejection of the AppendEntries whose previous index was `rejected_prev`; `retry_next`
    /// is where the leader's hint analysis says to resume. Returns false for a stale rejection
    /// (one answering a request older than the current probe or below the match index).
    pub fn on_reject(&mut self, rejected_prev: Index, retry_next: Index, round: u64) -> bool {
        let stale = match &self.state {
            ReplicationState::Probe { .. } => rejected_prev != self.next_index.prev(),
            ReplicationState::Replicate { .. } => rejected_prev <= self.match_index,
            ReplicationState::Snapshot { .. } => true,
        };
        if stale {
            return false;
        }
        let next = retry_next.min(rejected_prev).max(self.match_index.next());
        self.next_index = next;
        self.state = ReplicationState::Probe { paused: false };
        self.progress_round = round;
        true
    }

    /// The follower answered a message of ours stamped `round`. A round above `current` was
    /// never sent in this term (an echo of another term's message, or a broken peer) and
    /// acknowledges nothing.
    pub fn ack_round(&mut self, round: u64, current: u64) {
        if round <= current {
            self.acked_round = self.acked_round.max(round);
        }
    }

    /// A heartbeat response in `round`. Unpauses a probe (its message may have been lost) and
    /// falls back from a stalled pipeline (no progress for two rounds while behind) to probing.
    pub fn on_heartbeat_response(&mut self, round: u64, current: u64, leader_last: Index) {
        self.ack_round(round, current);
        match &mut self.state {
            ReplicationState::Probe { paused } => *paused = false,
            ReplicationState::Replicate { .. } => {
                if self.match_index < leader_last && round > self.progress_round + 2 {
                    self.next_index = self.match_index.next();
                    self.state = ReplicationState::Probe { paused: false };
                    self.progress_round = round;
                }
            }
            ReplicationState::Snapshot {
                in_flight,
                sent_round,
                ..
            } => {
                // A chunk unanswered for two rounds was lost: ask for it again.
                if *in_flight && round > *sent_round + 2 {
                    *in_flight = false;
                }
            }
        }
    }

    /// The follower needs entries the leader compacted: stream the snapshot ending at `index`.
    pub fn become_snapshot(&mut self, index: Index, round: u64) {
        self.state = ReplicationState::Snapshot {
            index,
            stage: false,
            next_offset: 0,
            in_flight: false,
            sent_round: round,
        };
    }

    /// The follower lacks the user restore whose entry is at `index`: stream it for staging,
    /// then resume probing at `next` (the entries the follower refused for want of it).
    pub fn become_staging(&mut self, index: Index, next: Index, round: u64) {
        self.next_index = next.max(self.match_index.next());
        self.state = ReplicationState::Snapshot {
            index,
            stage: true,
            next_offset: 0,
            in_flight: false,
            sent_round: round,
        };
    }

    /// The follower staged the user restore it lacked: probe again from `next_index`.
    pub fn on_staged(&mut self, round: u64) {
        self.state = ReplicationState::Probe { paused: false };
        self.progress_round = round;
    }

    /// The follower installed the snapshot ending at `index`.
    pub fn on_snapshot_installed(&mut self, index: Index, round: u64) {
        self.match_index = self.match_index.max(index);
        self.next_index = self.next_index.max(self.match_index.next());
        self.state = ReplicationState::Probe { paused: false };
        self.progress_round = round;
    }
}

/// The `quorum`-th largest value of `values` (1-based): the highest value that at least
/// `quorum` of them reach. `values` must hold at least `quorum` elements.
pub fn quorum_value<T: Ord + Copy>(values: &mut [T], quorum: usize) -> T {
    assert!(
        quorum >= 1 && quorum <= values.len(),
        "quorum {quorum} of {} values",
        values.len()
    );
    values.sort_unstable_by(|a, b| b.cmp(a));
    values[quorum - 1]
}

/// [`quorum_value`] of the values `values` yields (one per voter), or `None` if it yields
/// none. Up to 16 voters need no heap allocation: a leader computes this several times per
/// write, and with thousands of groups a write is rarely batched with others.
pub fn quorum_value_of<T: Ord + Copy + Default>(
    values: impl IntoIterator<Item = T>,
    quorum: usize,
) -> Option<T> {
    let mut held = [T::default(); 16];
    let mut len = 0;
    let mut spilled: Vec<T> = Vec::new();
    for value in values {
        if len < held.len() {
            held[len] = value;
            len += 1;
        } else {
            if spilled.is_empty() {
                spilled.extend_from_slice(&held);
            }
            spilled.push(value);
        }
    }
    if !spilled.is_empty() {
        return Some(quorum_value(&mut spilled, quorum));
    }
    if len == 0 {
        return None;
    }
    Some(quorum_value(&mut held[..len], quorum))
}

/// A majority of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_math() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
        assert_eq!(quorum_value(&mut [5, 1, 3], 2), 3);
        assert_eq!(quorum_value_of([5, 1, 3], 2), Some(3));
        assert_eq!(quorum_value_of(Vec::<u64>::new(), 1), None);
        // More voters than the stack buffer holds spill to a vector with the same answer.
        let many: Vec<u64> = (0..40).map(|i| (i * 17) % 41).collect();
        let mut sorted = many.clone();
        assert_eq!(
            quorum_value_of(many, 21),
            Some(quorum_value(&mut sorted, 21))
        );
        assert_eq!(quorum_value_of(0..40u64, 40), Some(0));
        assert_eq!(quorum_value_of(0..40u64, 1), Some(39));
        assert_eq!(quorum_value(&mut [5, 1, 3, 9, 2], 3), 3);
        assert_eq!(quorum_value(&mut [7], 1), 7);
    }

    #[test]
    fn probe_moves_to_replicate_on_success_and_back_on_reject() {
        let mut p = Progress::new(Index(10), 0);
        assert!(!p.is_paused(4));
        p.on_sent(Index(10), false);
        assert!(p.is_paused(4));
        assert!(p.on_success(Index(10), 1));
        assert!(matches!(p.state, ReplicationState::Replicate { .. }));
        p.on_sent(Index(12), true);
        p.on_sent(Index(14), true);
        assert_eq!(p.next_index, Index(15));
        assert!(p.on_success(Index(12), 2));
        assert_eq!(
            p.state,
            ReplicationState::Replicate {
                inflight: VecDeque::from([Index(14)])
            }
        );
        // A stale rejection below the match index is ignored.
        assert!(!p.on_reject(Index(11), Index(5), 3));
        assert!(p.on_reject(Index(14), Index(13), 3));
        assert_eq!(p.next_index, Index(13));
        assert_eq!(p.state, ReplicationState::Probe { paused: false });
        // The retry point never goes below match + 1.
        p.on_sent(Index(12), false);
        assert!(p.on_reject(Index(12), Index(2), 4));
        assert_eq!(p.next_index, Index(13));
    }

    #[test]
    fn a_stalled_pipeline_falls_back_to_probe() {
        let mut p = Progress::new(Index(0), 0);
        p.on_success(Index(0), 1);
        p.on_sent(Index(5), true);
        p.on_heartbeat_response(2, 10, Index(5));
        assert!(matches!(p.state, ReplicationState::Replicate { .. }));
        p.on_heartbeat_response(4, 10, Index(5));
        assert_eq!(p.state, ReplicationState::Probe { paused: false });
        assert_eq!(p.next_index, Index(1));
    }
}
