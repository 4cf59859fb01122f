//! The record format: how one log entry is laid out on disk and on the wire.
//!
//! ```text
//!  0      4      8             16            24            32        36   37    38     40
//!  ┌──────┬──────┬─────────────┬─────────────┬─────────────┬─────────┬────┬─────┬──────┐
//!  │length│ crc  │    index    │    term     │    group    │data_len │kind│flags│ zero │
//!  └──────┴──────┴─────────────┴─────────────┴─────────────┴─────────┴────┴─────┴──────┘
//!  body: data (data_len bytes) ‖ extensions (length - data_len bytes) ‖ zero padding to 8
//! ```
//!
//! All integers are little-endian. `length` counts the body only (data plus extensions, not the
//! header or padding); the whole record occupies `HEADER_SIZE + round_up_8(length)` bytes, so
//! every header starts 8-byte aligned in a buffer that does. `crc` is CRC-32C over the header
//! with the `crc` field zeroed, then the body, then the padding: one checksum covers every byte
//! of the record, so a flipped bit anywhere (even in padding) is detected.
//!
//! Why these choices:
//! - The same layout is journaled by the WAL and carried by AppendEntries (ARCHITECTURE §5): a
//!   follower journals, byte for byte, the records it received. Nothing in a record is specific
//!   to one file or one batch; batch boundaries are separate WAL records. An [`Entry`] does not
//!   carry its checksum, so each side computes it again where it writes a record (the
//!   leader's WAL and its encoder for each follower; the follower verifies, then its WAL):
//!   ARCHITECTURE §10 says what that costs and why it stays so.
//! - `group` is the Raft group the entry belongs to (0 with one group), so one WAL can be
//!   shared by many groups later (ARCHITECTURE §9) without a format change.
//! - Kinds `1..=0x7f` are [`EntryKind`] codes; `0x80..=0xff` are reserved for storage-internal
//!   records (the WAL's batch commits and truncation markers), which [`decode_entry`] rejects.
//! - `flags` and the two trailing bytes are reserved and must be zero, so a future version can
//!   give them meaning (say, compression) and an old reader refuses rather than misreads.
//!
//! Decoding never panics and never allocates: it validates lengths against the buffer and the
//! configured maximum entry size before touching the body.

use crate::types::{Entry, EntryKind, GroupId, Index, LogId, Term};
use bytes::{BufMut, Bytes};
use std::fmt;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The fixed record header. See the module docs for the layout.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct RecordHeader {
    /// Body length in bytes: data plus extensions.
    pub length: U32,
    /// CRC-32C of the header (with this field zero), the body and the padding.
    pub crc: U32,
    /// The entry's index (or, for internal records, what the record kind defines).
    pub index: U64,
    /// The entry's term.
    pub term: U64,
    /// The Raft group the record belongs to; 0 when there is one group.
    pub group: U64,
    /// How many body bytes are data; the rest are extensions.
    pub data_len: U32,
    /// An [`EntryKind`] code, or an internal kind (`>= 0x80`).
    pub kind: u8,
    /// Reserved; must be zero.
    pub flags: u8,
    /// Reserved; must be zero.
    pub reserved: [u8; 2],
}

/// Size of [`RecordHeader`] in bytes.
pub const HEADER_SIZE: usize = 40;
const _: () = assert!(std::mem::size_of::<RecordHeader>() == HEADER_SIZE);
const _: () = assert!(HEADER_SIZE % RECORD_ALIGNMENT == 0);

/// Records start and end on multiples of this many bytes.
pub const RECORD_ALIGNMENT: usize = 8;

/// The smallest kind code reserved for storage-internal records.
pub const FIRST_INTERNAL_KIND: u8 = 0x80;

/// The default maximum entry payload (data plus extensions): 64 MiB, as in hashicorp raft-wal.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 64 << 20;

/// Why a record could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The buffer ends before the record does.
    Truncated {
        /// Bytes the record needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The payload is larger than the configured maximum.
    EntryTooLarge {
        /// The payload size (data plus extensions).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stored checksum does not match the record's bytes.
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum computed over the bytes.
        computed: u32,
    },
    /// `data_len` exceeds `length`.
    BadSplit {
        /// Declared data length.
        data_len: u32,
        /// Declared body length.
        length: u32,
    },
    /// The kind code is not an entry kind this version knows.
    UnknownKind {
        /// The code found.
        code: u8,
    },
    /// Reserved flag bits or bytes are set.
    ReservedBitsSet {
        /// The flags byte.
        flags: u8,
    },
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Truncated { needed, available } => {
                write!(
                    f,
                    "record truncated: needs {needed} bytes, buffer has {available}"
                )
            }
            RecordError::EntryTooLarge { size, max } => {
                write!(
                    f,
                    "entry payload of {size} bytes exceeds the maximum of {max} bytes"
                )
            }
            RecordError::ChecksumMismatch { stored, computed } => write!(
                f,
                "record checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            RecordError::BadSplit { data_len, length } => {
                write!(
                    f,
                    "record data length {data_len} exceeds its body length {length}"
                )
            }
            RecordError::UnknownKind { code } => write!(f, "unknown record kind code {code:#04x}"),
            RecordError::ReservedBitsSet { flags } => {
                write!(f, "record has reserved bits set (flags {flags:#04x})")
            }
        }
    }
}

impl std::error::Error for RecordError {}

/// `n` rounded up to the record alignment.
pub const fn padded_len(n: usize) -> usize {
    (n + RECORD_ALIGNMENT - 1) & !(RECORD_ALIGNMENT - 1)
}

/// The encoded size of a record whose body is `payload_len` bytes.
pub const fn encoded_len(payload_len: usize) -> usize {
    HEADER_SIZE + padded_len(payload_len)
}

const ZEROS: [u8; RECORD_ALIGNMENT] = [0; RECORD_ALIGNMENT];

/// A decoded record borrowing its body from the buffer it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The validated header.
    pub header: RecordHeader,
    /// The data part of the body.
    pub data: &'a [u8],
    /// The extensions part of the body.
    pub extensions: &'a [u8],
}

impl RecordRef<'_> {
    /// The record's kind code.
    pub fn kind_code(&self) -> u8 {
        self.header.kind
    }

    /// The record's index field.
    pub fn index(&self) -> Index {
        Index(self.header.index.get())
    }

    /// The record's term field.
    pub fn term(&self) -> Term {
        Term(self.header.term.get())
    }

    /// The record's group.
    pub fn group(&self) -> GroupId {
        GroupId(self.header.group.get())
    }

    /// Bytes the whole record occupies, padding included.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.header.length.get() as usize)
    }
}

fn header_crc(header: &RecordHeader) -> u32 {
    let mut zeroed = *header;
    zeroed.crc = U32::new(0);
    crate::crc::crc32c(zeroed.as_bytes())
}

/// The header (checksum included) of the record [`encode_raw`] would write for these fields,
/// without writing anything.
///
/// The network codec uses this to send an entry as record bytes while passing a large payload
/// by reference (vectored write) instead of copying it: the caller writes the header, then
/// `data`, `extensions` and [`padding_for`]`(data.len() + extensions.len())` zero bytes. The
/// result is byte for byte what [`encode_raw`] produces.
pub fn record_header(
    kind: u8,
    group: GroupId,
    id: LogId,
    data: &[u8],
    extensions: &[u8],
    max_entry_bytes: usize,
) -> Result<RecordHeader, RecordError> {
    let size = data.len() + extensions.len();
    if size > max_entry_bytes || size > u32::MAX as usize {
        return Err(RecordError::EntryTooLarge {
            size,
            max: max_entry_bytes.min(u32::MAX as usize),
        });
    }
    let mut header = RecordHeader {
        length: U32::new(size as u32),
        crc: U32::new(0),
        index: U64::new(id.index.0),
        term: U64::new(id.term.0),
        group: U64::new(group.0),
        data_len: U32::new(data.len() as u32),
        kind,
        flags: 0,
        reserved: [0; 2],
    };
    let pad = padded_len(size) - size;
    let mut crc = crate::crc::crc32c(header.as_bytes());
    crc = crate::crc::crc32c_append(crc, data);
    crc = crate::crc::crc32c_append(crc, extensions);
    crc = crate::crc::crc32c_append(crc, &ZEROS[..pad]);
    header.crc = U32::new(crc);
    Ok(header)
}

/// The zero bytes that pad a body of `payload_len` bytes to the record alignment.
pub fn padding_for(payload_len: usize) -> &'static [u8] {
    &ZEROS[..padded_len(payload_len) - payload_len]
}

/// Appends one record with an arbitrary kind code to `out`; returns the bytes written.
///
/// This is the primitive under [`encode_entry`]; the WAL also uses it for its internal records.
pub fn encode_raw(
    out: &mut impl BufMut,
    kind: u8,
    group: GroupId,
    id: LogId,
    data: &[u8],
    extensions: &[u8],
    max_entry_bytes: usize,
) -> Result<usize, RecordError> {
    let header = record_header(kind, group, id, data, extensions, max_entry_bytes)?;
    let size = data.len() + extensions.len();
    let pad = padded_len(size) - size;
    out.put_slice(header.as_bytes());
    out.put_slice(data);
    out.put_slice(extensions);
    out.put_slice(&ZEROS[..pad]);
    Ok(HEADER_SIZE + size + pad)
}

/// Appends `entry` as one record to `out`; returns the bytes written.
///
/// Fails with [`RecordError::EntryTooLarge`] if data plus extensions exceed `max_entry_bytes`.
pub fn encode_entry(
    out: &mut impl BufMut,
    group: GroupId,
    entry: &Entry,
    max_entry_bytes: usize,
) -> Result<usize, RecordError> {
    encode_raw(
        out,
        entry.kind.code(),
        group,
        entry.id,
        &entry.data,
        &entry.extensions,
        max_entry_bytes,
    )
}

/// Reads just the header at the start of `buf`, without checking anything.
///
/// `None` if `buf` is shorter than a header.
pub fn peek_header(buf: &[u8]) -> Option<RecordHeader> {
    RecordHeader::read_from_prefix(buf)
        .ok()
        .map(|(header, _)| header)
}

/// Decodes and verifies the record at the start of `buf` (any kind code).
///
/// Checks, in order: the header fits, reserved bits are zero, the payload is within
/// `max_entry_bytes`, the split is consistent, the record fits, the checksum matches. Returns
/// the record and the bytes it occupies.
pub fn decode_raw(buf: &[u8], max_entry_bytes: usize) -> Result<RecordRef<'_>, RecordError> {
    let Some(header) = peek_header(buf) else {
        return Err(RecordError::Truncated {
            needed: HEADER_SIZE,
            available: buf.len(),
        });
    };
    if header.flags != 0 || header.reserved != [0; 2] {
        return Err(RecordError::ReservedBitsSet {
            flags: header.flags,
        });
    }
    let length = header.length.get();
    let size = length as usize;
    if size > max_entry_bytes {
        return Err(RecordError::EntryTooLarge {
            size,
            max: max_entry_bytes,
        });
    }
    let data_len = header.data_len.get();
    if data_len > length {
        return Err(RecordError::BadSplit { data_len, length });
    }
    let total = encoded_len(size);
    let Some(record) = buf.get(..total) else {
        return Err(RecordError::Truncated {
            needed: total,
            available: buf.len(),
        });
    };
    let body = &record[HEADER_SIZE..];
    let computed = crate::crc::crc32c_append(header_crc(&header), body);
    if computed != header.crc.get() {
        return Err(RecordError::ChecksumMismatch {
            stored: header.crc.get(),
            computed,
        });
    }
    let (data, rest) = body.split_at(data_len as usize);
    Ok(RecordRef {
        header,
        data,
        extensions: &rest[..size - data_len as usize],
    })
}

/// Decodes and verifies the entry record at `offset` in `buf`, sharing `buf`'s memory (no copy
/// of the payload). Returns the entry, its group and the bytes the record occupies.
///
/// Internal (storage-only) kinds and unknown kinds are [`RecordError::UnknownKind`].
pub fn decode_entry(
    buf: &Bytes,
    offset: usize,
    max_entry_bytes: usize,
) -> Result<(Entry, GroupId, usize), RecordError> {
    let slice = buf.get(offset..).unwrap_or(&[]);
    let record = decode_raw(slice, max_entry_bytes)?;
    let kind = EntryKind::from_code(record.header.kind).ok_or(RecordError::UnknownKind {
        code: record.header.kind,
    })?;
    let data_start = offset + HEADER_SIZE;
    let data_end = data_start + record.data.len();
    let ext_end = data_end + record.extensions.len();
    let entry = Entry {
        id: LogId::new(record.term(), record.index()),
        kind,
        data: buf.slice(data_start..data_end),
        extensions: buf.slice(data_end..ext_end),
    };
    Ok((entry, record.group(), record.encoded_len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(index: u64, data: &[u8], ext: &[u8]) -> Entry {
        Entry {
            id: LogId::new(Term(3), Index(index)),
            kind: EntryKind::Command,
            data: Bytes::copy_from_slice(data),
            extensions: Bytes::copy_from_slice(ext),
        }
    }

    #[test]
    fn records_are_padded_to_eight_bytes() {
        for len in 0..40 {
            let mut out = Vec::new();
            let n = encode_entry(&mut out, GroupId(0), &entry(1, &vec![7; len], b""), 1 << 20)
                .expect("encode");
            assert_eq!(n, out.len());
            assert_eq!(n % RECORD_ALIGNMENT, 0);
            assert_eq!(n, encoded_len(len));
        }
    }

    #[test]
    fn entries_round_trip_without_copying_the_payload() {
        let e = entry(9, b"hello", b"ext");
        let mut out = Vec::new();
        encode_entry(&mut out, GroupId(5), &e, 1024).expect("encode");
        let buf = Bytes::from(out);
        let (decoded, group, used) = decode_entry(&buf, 0, 1024).expect("decode");
        assert_eq!(decoded, e);
        assert_eq!(group, GroupId(5));
        assert_eq!(used, buf.len());
        // The payload points into `buf`.
        assert_eq!(decoded.data.as_ptr(), buf[HEADER_SIZE..].as_ptr());
    }

    #[test]
    fn oversized_entries_are_a_typed_error_both_ways() {
        let e = entry(1, &[0; 100], &[0; 28]);
        let mut out = Vec::new();
        assert_eq!(
            encode_entry(&mut out, GroupId(0), &e, 127),
            Err(RecordError::EntryTooLarge {
                size: 128,
                max: 127
            })
        );
        assert!(out.is_empty(), "nothing is written on error");
        encode_entry(&mut out, GroupId(0), &e, 128).expect("encode");
        assert_eq!(
            decode_raw(&out, 127),
            Err(RecordError::EntryTooLarge {
                size: 128,
                max: 127
            })
        );
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        let mut out = Vec::new();
        encode_entry(&mut out, GroupId(0), &entry(4, b"abcdefghijk", b"xy"), 1024).expect("enc");
        for cut in 0..out.len() {
            assert!(decode_raw(&out[..cut], 1024).is_err(), "cut at {cut}");
        }
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_raw(&bad, 1024).is_err(),
                    "flip byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn record_header_plus_body_and_padding_equals_encode_raw() {
        for len in 0..20 {
            let e = entry(7, &vec![3; len], b"e");
            let mut whole = Vec::new();
            encode_entry(&mut whole, GroupId(2), &e, 1024).expect("encode");
            let header =
                record_header(1, GroupId(2), e.id, &e.data, &e.extensions, 1024).expect("header");
            let mut parts = header.as_bytes().to_vec();
            parts.extend_from_slice(&e.data);
            parts.extend_from_slice(&e.extensions);
            parts.extend_from_slice(padding_for(e.payload_len()));
            assert_eq!(parts, whole, "payload length {len}");
        }
    }

    #[test]
    fn internal_and_unknown_kinds_are_not_entries() {
        for code in [0u8, 9, FIRST_INTERNAL_KIND, 0xff] {
            let mut out = Vec::new();
            encode_raw(&mut out, code, GroupId(0), LogId::default(), b"", b"", 16).expect("enc");
            let buf = Bytes::from(out);
            assert!(decode_raw(&buf, 16).is_ok());
            assert_eq!(
                decode_entry(&buf, 0, 16),
                Err(RecordError::UnknownKind { code })
            );
        }
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(
            index in any::<u64>(), term in any::<u64>(), group in any::<u64>(),
            kind in 1u8..=4,
            data in proptest::collection::vec(any::<u8>(), 0..300),
            ext in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let e = Entry {
                id: LogId::new(Term(term), Index(index)),
                kind: EntryKind::from_code(kind).expect("known kind"),
                data: Bytes::from(data),
                extensions: Bytes::from(ext),
            };
            let mut out = vec![0xAA; 3]; // a non-zero offset
            encode_entry(&mut out, GroupId(group), &e, 1 << 20).expect("encode");
            let buf = Bytes::from(out);
            let (decoded, g, used) = decode_entry(&buf, 3, 1 << 20).expect("decode");
            prop_assert_eq!(decoded, e);
            prop_assert_eq!(g, GroupId(group));
            prop_assert_eq!(used + 3, buf.len());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let buf = Bytes::from(bytes);
            let _ = decode_raw(&buf, 1 << 20);
            let _ = decode_entry(&buf, 0, 64);
            let _ = decode_entry(&buf, 500, 64);
        }
    }
}
