//! Segment files: naming, the segment header and the WAL's internal records.
//!
//! ```text
//!  segment file  <dir>/<segment id, 20 digits>.seg, preallocated and zero-filled
//!  ┌─────────── 64-byte header ────────────┬──────────────────── records ───────────────────┐
//!  │ magic "RRWALSEG" version id cluster crc│ checkpoints, entry… commit │ batch … │ 0 0 0 …│
//!  └────────────────────────────────────────┴────────────────────────────────────────────────┘
//! ```
//!
//! A spare segment is created zero-filled with its final name while the active one fills; its
//! header stays zero (an *unused* segment) until its first batch writes it, so activation costs
//! no extra write or sync. Every batch ends with a *commit* record naming the offset where the
//! batch began: recovery keeps only records followed by their batch's commit, which is how a
//! torn tail is told apart from a complete batch. Truncations are records too
//! (`TRUNCATE_SUFFIX`, `TRUNCATE_PREFIX`), replayed in order on recovery, so no segment is ever
//! rewritten; so is the node's hard state (`HARD_STATE`: term, vote, commit index), which
//! therefore becomes durable with the batch it was submitted in.
//!
//! One WAL can hold the logs of many Raft groups (a [`crate::wal::SharedWal`]): every record
//! names its group, and a segment starts with one `CHECKPOINT` record per group that holds
//! anything (its first and last index and its hard state at that point), so that deleting
//! older segments never loses a group's hard state or the start of its log. A group removed
//! for good leaves a `REMOVE_GROUP` record, after which it holds nothing.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Magic bytes at the start of every used segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RRWALSEG";
/// The segment format version this build writes. Version 3 added [`KIND_REMOVE_GROUP`], so
/// that a build that does not know the record refuses the segment by its version instead of
/// reporting it as damage.
pub const SEGMENT_VERSION: u32 = 3;
/// The oldest segment format version this build reads (version 2: every record names its
/// group; its records are a subset of version 3's).
pub const SEGMENT_VERSION_OLDEST: u32 = 2;
/// Size of [`SegmentHeader`]; records start at this offset.
pub const SEGMENT_HEADER_SIZE: usize = 64;

/// Internal record: ends a batch. `index` is the ticket the batch makes durable (for tools;
/// recovery ignores it); the body is the batch's start offset in the segment (u64
/// little-endian).
pub const KIND_COMMIT: u8 = 0x80;
/// Internal record: entries after `index` are removed.
pub const KIND_TRUNCATE_SUFFIX: u8 = 0x81;
/// Internal record: entries before `index` are removed (the log restarts at `index` if empty).
pub const KIND_TRUNCATE_PREFIX: u8 = 0x82;
/// Internal record: the node's hard state. `term` is its term, `index` its commit index, and
/// the body (8 bytes, little-endian) the node voted for in that term (0: none). The newest one
/// in log order wins on recovery; every new segment starts with a copy of the newest (in a
/// [`KIND_CHECKPOINT`]), so deleting compacted segments never loses it.
pub const KIND_HARD_STATE: u8 = 0x83;
/// Internal record at the start of a segment, one per group holding anything: `index` is the
/// group's last index at that point, `term` its hard state's term, and the body (24 bytes,
/// little-endian) its first index, the vote of its hard state (0: none) and its commit index.
/// Recovery checks it against the group's replayed log, or, when the segments before it are
/// gone, starts the group from it.
pub const KIND_CHECKPOINT: u8 = 0x84;
/// Internal record: the group's whole log (`index` its first index; the body, 8 bytes
/// little-endian, its last) is written again from here, record for record, up to the matching
/// [`KIND_REWRITE_END`]: an idle group's few entries move forward so that the old segment
/// holding them can be deleted. Recovery takes the new copies only once the end record is
/// there; a rewrite cut short by a crash is ignored (its old copies were not deleted).
pub const KIND_REWRITE_BEGIN: u8 = 0x85;
/// Internal record: ends a rewrite; `index` is the group's last index.
pub const KIND_REWRITE_END: u8 = 0x86;
/// Internal record: the group is removed from the WAL (`SharedWal::remove`): recovery forgets
/// everything of it before this record (its entries, hard state and checkpoints); records of
/// the group after it belong to a new log that starts empty. `index` is 0 and the body empty.
pub const KIND_REMOVE_GROUP: u8 = 0x87;
/// Encoded size of a checkpoint record.
pub const CHECKPOINT_RECORD_SIZE: usize = crate::record::encoded_len(24);
/// Encoded size of a commit record.
pub const COMMIT_RECORD_SIZE: usize = crate::record::encoded_len(8);

/// The header at offset 0 of a used segment.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SegmentHeader {
    /// [`SEGMENT_MAGIC`].
    pub magic: [u8; 8],
    /// [`SEGMENT_VERSION`].
    pub version: U32,
    /// CRC-32C of the header with this field zero.
    pub crc: U32,
    /// The segment's id; ids increase by one per segment and name the file.
    pub segment_id: U64,
    /// Unused since version 2 (a segment holds many groups' logs; its checkpoint records say
    /// where each stood); zero.
    pub base_index: U64,
    /// The cluster the log belongs to (from the configuration); checked on open.
    pub cluster_id: U64,
    /// Reserved; zero.
    pub reserved: [u8; 24],
}
const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE);

impl SegmentHeader {
    /// A sealed header (checksum filled in).
    pub fn new(segment_id: u64, cluster_id: u64) -> SegmentHeader {
        let mut header = SegmentHeader {
            magic: SEGMENT_MAGIC,
            version: U32::new(SEGMENT_VERSION),
            crc: U32::new(0),
            segment_id: U64::new(segment_id),
            base_index: U64::new(0),
            cluster_id: U64::new(cluster_id),
            reserved: [0; 24],
        };
        header.crc = U32::new(header.checksum());
        header
    }

    /// The header's on-disk bytes.
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_SIZE] {
        let mut out = [0u8; SEGMENT_HEADER_SIZE];
        out.copy_from_slice(self.as_bytes());
        out
    }

    fn checksum(&self) -> u32 {
        let mut copy = *self;
        copy.crc = U32::new(0);
        crate::crc::crc32c(copy.as_bytes())
    }

    /// Parses and verifies the header at the start of `bytes`: `Ok(None)` if it is all zero
    /// (an unused segment), `Err(reason)` if it is damaged or of an unknown version.
    pub fn parse(bytes: &[u8]) -> Result<Option<SegmentHeader>, String> {
        let Some(raw) = bytes.get(..SEGMENT_HEADER_SIZE) else {
            return if bytes.iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(format!(
                    "segment is {} bytes, shorter than its header",
                    bytes.len()
                ))
            };
        };
        if raw.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let Ok((header, _)) = SegmentHeader::read_from_prefix(raw) else {
            return Err("unreadable segment header".into());
        };
        if header.magic != SEGMENT_MAGIC {
            return Err("bad segment magic".into());
        }
        if header.crc.get() != header.checksum() {
            return Err("segment header checksum mismatch".into());
        }
        if !(SEGMENT_VERSION_OLDEST..=SEGMENT_VERSION).contains(&header.version.get()) {
            return Err(format!(
                "unsupported segment version {}",
                header.version.get()
            ));
        }
        Ok(Some(header))
    }
}

/// The file name of segment `id`.
pub fn segment_file_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The segment id a file name denotes, if it is a segment name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_damage_is_reported() {
        let header = SegmentHeader::new(3, 42);
        let bytes = header.as_bytes().to_vec();
        assert_eq!(SegmentHeader::parse(&bytes), Ok(Some(header)));
        assert_eq!(SegmentHeader::parse(&[0; 64]), Ok(None));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(SegmentHeader::parse(&bad).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn versions_before_the_oldest_and_after_this_builds_are_refused_by_version() {
        let with_version = |version: u32| {
            let mut header = SegmentHeader::new(3, 42);
            header.version = U32::new(version);
            header.crc = U32::new(header.checksum());
            SegmentHeader::parse(header.as_bytes())
        };
        assert!(matches!(with_version(SEGMENT_VERSION), Ok(Some(_))));
        assert!(matches!(with_version(SEGMENT_VERSION_OLDEST), Ok(Some(_))));
        for version in [1, SEGMENT_VERSION + 1] {
            assert_eq!(
                with_version(version),
                Err(format!("unsupported segment version {version}"))
            );
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_file_name(&segment_file_name(17)), Some(17));
        assert_eq!(parse_segment_file_name("17.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000017.seg.tmp"),
            None
        );
    }
}
