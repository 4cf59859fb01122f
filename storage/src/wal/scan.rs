//! Recovery as a pure function: [`scan`] one segment's bytes → its valid prefix.
//!
//! Records are read in order. A batch's records count only once its commit record is read.
//! Reading stops at a zero header (never-written space) or at a record that fails
//! verification. What follows decides between a torn tail and corruption:
//!
//! - **Torn tail**: nothing after the stopping point belongs to a batch that began later. This
//!   is what a crash during the last batch's write leaves: the batch was never acknowledged
//!   (acknowledgement waits for its fdatasync), and batches are written one at a time, so only
//!   the last one can be incomplete. Its bytes are reported so the caller can zero them before
//!   writing again (stale records must never be mistaken for new ones later).
//! - **Corruption**: a valid commit record of a *later* batch follows the damage, so the damage
//!   is in data that was acknowledged. That is an error naming the offset, never a silent skip.
//!
//! Limits of what can be told apart (documented, as raft-wal does): damage confined to the last
//! batch looks exactly like a torn write of it, so it is cut as a torn tail; and rewriting the
//! partly filled last block assumes a device does not tear a sector it overwrites with the same
//! leading bytes ("powersafe overwrite").

use super::format::{
    SegmentHeader, KIND_CHECKPOINT, KIND_COMMIT, KIND_HARD_STATE, KIND_REMOVE_GROUP,
    KIND_REWRITE_BEGIN, KIND_REWRITE_END, KIND_TRUNCATE_PREFIX, KIND_TRUNCATE_SUFFIX,
};
use super::format::{COMMIT_RECORD_SIZE, SEGMENT_HEADER_SIZE};
use crate::record::{self, RecordHeader, HEADER_SIZE, RECORD_ALIGNMENT};
use crate::types::{EntryKind, GroupId, Index, NodeId, Term};
use std::fmt;

/// What a committed record does to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordAction {
    /// An entry at `index`.
    Entry,
    /// Remove entries after `index`.
    TruncateSuffix,
    /// Remove entries before `index`.
    TruncatePrefix,
    /// The node's hard state: `term` its term, `index` its commit index.
    HardState {
        /// The node voted for in `term`, if any.
        vote: Option<NodeId>,
    },
    /// The group's log is written again from `index` (its first index) on: the entry records
    /// up to the matching [`RecordAction::RewriteEnd`] replace the earlier copies.
    RewriteBegin {
        /// The group's last index: the last copy.
        last: Index,
    },
    /// Ends a rewrite; `index` is the group's last index.
    RewriteEnd,
    /// The group was removed: everything of it before this record is forgotten.
    RemoveGroup,
    /// Where the group stood when the segment began: `index` its last index, `term` the term
    /// of its hard state.
    Checkpoint {
        /// Its first index.
        first: Index,
        /// The vote of its hard state, if any.
        vote: Option<NodeId>,
        /// The commit index of its hard state.
        commit: Index,
    },
}

/// One committed record found by [`scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// What it does.
    pub action: RecordAction,
    /// The group it belongs to.
    pub group: GroupId,
    /// Its index field.
    pub index: Index,
    /// Its term field.
    pub term: Term,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Encoded length in bytes.
    pub len: u32,
    /// Payload (data plus extensions) length in bytes.
    pub payload_len: u32,
}

/// The result of scanning one segment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentScan {
    /// The header; `None` for an unused (all-zero header) segment.
    pub header: Option<SegmentHeader>,
    /// Committed records in order.
    pub records: Vec<ScannedRecord>,
    /// End of the last committed batch: where the next batch goes.
    pub valid_len: u64,
    /// Bytes after `valid_len` that hold a torn batch: `valid_len..torn_end` must be zeroed
    /// before the segment is written again. Equal to `valid_len` when the tail is clean.
    pub torn_end: u64,
}

/// Why a segment failed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanError {
    /// Byte offset of the bad data.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at offset {}: {}", self.offset, self.reason)
    }
}

impl std::error::Error for ScanError {}

fn is_zero(bytes: &[u8]) -> bool {
    // OR-folding fixed chunks vectorizes; `all` would stop at every byte to branch. Matters
    // for recovery, which checks up to a whole segment of never-written zeros.
    let mut chunks = bytes.chunks_exact(64);
    let mut acc = 0u8;
    for chunk in &mut chunks {
        acc |= chunk.iter().fold(0, |a, &b| a | b);
        if acc != 0 {
            return false;
        }
    }
    acc | chunks.remainder().iter().fold(0, |a, &b| a | b) == 0
}

/// The offset of the first non-zero byte at or after `from`, if any; skips zeros a block at a
/// time.
fn next_non_zero(bytes: &[u8], from: usize) -> Option<usize> {
    let mut pos = from;
    while let Some(block) = bytes.get(pos..(pos + 4096).min(bytes.len())) {
        if block.is_empty() {
            return None;
        }
        if !is_zero(block) {
            return block.iter().position(|&b| b != 0).map(|at| pos + at);
        }
        pos += block.len();
    }
    None
}

/// The vote in a hard-state record's body: exactly 8 bytes, 0 for none.
fn hard_state_vote(data: &[u8]) -> Option<Option<NodeId>> {
    let raw: [u8; 8] = data.try_into().ok()?;
    Some(match u64::from_le_bytes(raw) {
        0 => None,
        id => Some(NodeId(id)),
    })
}

fn checkpoint_body(data: &[u8]) -> Option<RecordAction> {
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(at..at + 8)?.try_into().ok()?))
    };
    if data.len() != 24 {
        return None;
    }
    Some(RecordAction::Checkpoint {
        first: Index(word(0)?),
        vote: match word(8)? {
            0 => None,
            id => Some(NodeId(id)),
        },
        commit: Index(word(16)?),
    })
}

fn commit_batch_start(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.get(..8)?.try_into().ok()?))
}

/// Scans one segment's bytes (the whole file) and returns its valid prefix. Pure and
/// panic-free on any input; `max_entry_bytes` bounds the record sizes accepted.
pub fn scan(bytes: &[u8], max_entry_bytes: usize) -> Result<SegmentScan, ScanError> {
    let header = SegmentHeader::parse(bytes).map_err(|reason| ScanError { offset: 0, reason })?;
    if header.is_none() {
        // An unused segment must be entirely zero: anything else is damage.
        return match next_non_zero(bytes, 0) {
            None => Ok(SegmentScan::default()),
            Some(at) => Err(ScanError {
                offset: at as u64,
                reason: "data in a segment whose header was never written".into(),
            }),
        };
    }
    // Records of the batch being read are pushed at once and dropped again if the batch has
    // no commit (`committed` is how many belong to committed batches): no copy per batch.
    let mut records = Vec::new();
    let mut committed = 0;
    let mut batch_start = SEGMENT_HEADER_SIZE;
    let mut pos = SEGMENT_HEADER_SIZE;
    while let Some(rest) = bytes.get(pos..) {
        if rest.len() < HEADER_SIZE || is_zero(&rest[..HEADER_SIZE]) {
            break;
        }
        let Ok(rec) = record::decode_raw(rest, max_entry_bytes) else {
            break;
        };
        let action = match rec.kind_code() {
            KIND_COMMIT => {
                if commit_batch_start(rec.data) != Some(batch_start as u64) {
                    // A commit for another batch where this one should end: treat as damage.
                    break;
                }
                committed = records.len();
                pos += rec.encoded_len();
                batch_start = pos;
                continue;
            }
            KIND_TRUNCATE_SUFFIX => RecordAction::TruncateSuffix,
            KIND_TRUNCATE_PREFIX => RecordAction::TruncatePrefix,
            KIND_HARD_STATE => match hard_state_vote(rec.data) {
                Some(vote) => RecordAction::HardState { vote },
                // A well-checksummed record of the wrong shape: damage, as an unknown kind.
                None => break,
            },
            KIND_REWRITE_BEGIN => match commit_batch_start(rec.data) {
                Some(last) if rec.data.len() == 8 => {
                    RecordAction::RewriteBegin { last: Index(last) }
                }
                _ => break,
            },
            KIND_REWRITE_END => RecordAction::RewriteEnd,
            // A well-checksummed record of the wrong shape: damage, as an unknown kind.
            KIND_REMOVE_GROUP if !rec.data.is_empty() => break,
            KIND_REMOVE_GROUP => RecordAction::RemoveGroup,
            KIND_CHECKPOINT => match checkpoint_body(rec.data) {
                Some(action) => action,
                None => break,
            },
            code if EntryKind::from_code(code).is_some() => RecordAction::Entry,
            _ => break,
        };
        records.push(ScannedRecord {
            action,
            group: GroupId(rec.header.group.get()),
            index: rec.index(),
            term: rec.term(),
            offset: pos as u64,
            len: rec.encoded_len() as u32,
            payload_len: rec.header.length.get(),
        });
        pos += rec.encoded_len();
    }
    records.truncate(committed);
    // `batch_start` is the end of the last committed batch. Decide what lies beyond it.
    let torn_end = classify_tail(bytes, batch_start, pos, max_entry_bytes)?;
    Ok(SegmentScan {
        header,
        records,
        valid_len: batch_start as u64,
        torn_end: torn_end as u64,
    })
}

/// Looks past the stopping point `stop` for evidence of a later, committed batch. Returns the
/// end of the torn region (rounded to the record alignment), or the corruption found.
fn classify_tail(
    bytes: &[u8],
    valid_end: usize,
    stop: usize,
    max_entry_bytes: usize,
) -> Result<usize, ScanError> {
    let mut torn_end = valid_end;
    let mut damage_at: Option<usize> = None;
    if stop > valid_end {
        torn_end = stop;
    }
    let mut pos = stop;
    while pos + RECORD_ALIGNMENT <= bytes.len() {
        let word = &bytes[pos..pos + RECORD_ALIGNMENT];
        if is_zero(word) {
            // Jump to the word holding the next non-zero byte (or past the last whole word).
            let next = next_non_zero(bytes, pos).unwrap_or(bytes.len());
            let aligned = pos + (next - pos) / RECORD_ALIGNMENT * RECORD_ALIGNMENT;
            pos = aligned.max(pos + RECORD_ALIGNMENT);
            continue;
        }
        torn_end = pos + RECORD_ALIGNMENT;
        damage_at.get_or_insert(pos);
        // Cheap plausibility test before spending a checksum on this offset.
        let plausible = record::peek_header(&bytes[pos..]).is_some_and(|h: RecordHeader| {
            h.kind == KIND_COMMIT && h.length.get() == 8 && h.flags == 0 && h.reserved == [0; 2]
        });
        if plausible {
            if let Ok(rec) = record::decode_raw(&bytes[pos..], max_entry_bytes) {
                if let Some(start) = commit_batch_start(rec.data) {
                    if start as usize > valid_end && (start as usize) < pos {
                        return Err(ScanError {
                            offset: damage_at.map_or(stop, |d| d.min(stop)) as u64,
                            reason: format!(
                                "damaged record before a later committed batch (commit at \
                                 offset {pos} for the batch at offset {start})"
                            ),
                        });
                    }
                }
                pos += COMMIT_RECORD_SIZE;
                torn_end = pos;
                continue;
            }
        }
        pos += RECORD_ALIGNMENT;
    }
    // A trailing fragment shorter than the alignment (a file cut mid-word) is torn too.
    if pos < bytes.len() && !is_zero(&bytes[pos..]) {
        torn_end = bytes.len();
    }
    Ok(torn_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::encode_raw;
    use crate::types::{GroupId, LogId};
    use zerocopy::IntoBytes;

    /// A segment image with the given batches of entry indexes, and the batch end offsets.
    pub(crate) fn image(
        batches: &[std::ops::RangeInclusive<u64>],
        size: usize,
    ) -> (Vec<u8>, Vec<usize>) {
        let mut out = SegmentHeader::new(1, 7).as_bytes().to_vec();
        let mut ends = Vec::new();
        for batch in batches {
            let start = out.len() as u64;
            for i in batch.clone() {
                let data = vec![i as u8; (i % 13) as usize];
                encode_raw(
                    &mut out,
                    1,
                    GroupId(0),
                    LogId::new(Term(1), Index(i)),
                    &data,
                    b"",
                    1024,
                )
                .expect("encode");
            }
            encode_raw(
                &mut out,
                KIND_COMMIT,
                GroupId(0),
                LogId::default(),
                &start.to_le_bytes(),
                b"",
                1024,
            )
            .expect("encode");
            ends.push(out.len());
        }
        out.resize(size, 0);
        (out, ends)
    }

    #[test]
    fn clean_segments_scan_to_their_last_commit() {
        let (bytes, ends) = image(&[1..=3, 4..=4, 5..=9], 4096);
        let scan = scan(&bytes, 1024).expect("scan");
        assert_eq!(scan.records.len(), 9);
        assert_eq!(scan.valid_len as usize, ends[2]);
        assert_eq!(scan.torn_end, scan.valid_len);
        let (empty, _) = image(&[], 4096);
        assert!(super::scan(&empty, 1024).expect("scan").records.is_empty());
        assert_eq!(
            super::scan(&[0; 4096], 1024).expect("unused"),
            SegmentScan::default()
        );
    }

    #[test]
    fn a_torn_last_batch_is_cut_at_every_offset() {
        let (full, ends) = image(&[1..=3, 4..=8], 4096);
        for cut in ends[0]..ends[1] {
            let mut bytes = full.clone();
            bytes[cut..].iter_mut().for_each(|b| *b = 0);
            let zeroed = scan(&bytes, 1024).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            if bytes == full {
                // Zeroing bytes that were already zero (the end of the commit body) is no tear.
                assert_eq!(zeroed.valid_len as usize, ends[1]);
            } else {
                assert_eq!(zeroed.valid_len as usize, ends[0], "cut {cut}");
                assert_eq!(zeroed.records.len(), 3);
            }
            let short = scan(&full[..cut], 1024).unwrap_or_else(|e| panic!("cut {cut}: {e}"));
            assert_eq!(short.valid_len as usize, ends[0]);
        }
        // A hole in the middle of the last batch (its commit written, a block in between not).
        let mut holed = full.clone();
        holed[ends[0] + 8..ends[0] + 60]
            .iter_mut()
            .for_each(|b| *b = 0);
        let scan = scan(&holed, 1024).expect("hole in last batch is torn");
        assert_eq!(scan.valid_len as usize, ends[0]);
        assert!(scan.torn_end as usize >= ends[1] - COMMIT_RECORD_SIZE);
    }

    proptest::proptest! {
        #[test]
        fn scanning_arbitrary_bytes_never_panics(
            records in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            with_header in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            if with_header {
                bytes.extend_from_slice(&SegmentHeader::new(1, 0).to_bytes());
            }
            bytes.extend_from_slice(&records);
            if let Ok(result) = scan(&bytes, 1024) {
                proptest::prop_assert!(result.valid_len <= result.torn_end);
            }
        }
    }

    #[test]
    fn damage_before_a_later_batch_is_corruption() {
        let (full, ends) = image(&[1..=3, 4..=8, 9..=9], 4096);
        for at in SEGMENT_HEADER_SIZE..ends[1] {
            let mut bytes = full.clone();
            bytes[at] ^= 0x10;
            let err = scan(&bytes, 1024).expect_err("corruption");
            assert!(err.offset as usize <= at, "{at}: {err}");
        }
    }
}
