//! The frame: a fixed little-endian header followed by a body.
//!
//! ```text
//!  0       4   5    6      8         12      16                24                32
//!  ┌───────┬───┬────┬──────┬─────────┬───────┬─────────────────┬─────────────────┐
//!  │ magic │ver│kind│flags │body_len │  crc  │   request_id    │      group      │
//!  └───────┴───┴────┴──────┴─────────┴───────┴─────────────────┴─────────────────┘
//!  body: body_len bytes, laid out per kind (see `codec`)
//! ```
//!
//! - `magic` is `b"RRFT"`: a connection from something that is not a ringraft node (an HTTP
//!   probe, a port scanner) fails on its first four bytes instead of being read as a length.
//! - `ver` is the protocol version the frame is written in; a reader accepts
//!   [`MIN_PROTOCOL_VERSION`]`..=`[`MAX_PROTOCOL_VERSION`]. Hello frames are always written in
//!   version 1 so two nodes can agree on a version before anything else is said.
//! - `flags` are reserved and must be zero, so a later version can give them meaning (say,
//!   compression) and an older reader refuses rather than misreads.
//! - `body_len` is checked against the configured maximum frame size before any buffer for the
//!   body is allocated.
//! - `request_id` numbers requests per connection; a response carries the id of the request it
//!   answers, which is how a pipelining sender matches responses to its window.
//! - `group` is the Raft group (0 with one group), so many groups can share one connection
//!   (ARCHITECTURE §9).
//! - `crc` is CRC-32C over the header (with `crc` zero) and the body, except that the entry
//!   records inside an AppendEntries body are left out: each record carries its own CRC-32C,
//!   which the decoder verifies, so every byte is still covered by exactly one checksum and a
//!   1 MiB entry is not checksummed twice. Covering the header means a flipped request id or
//!   group cannot silently misroute a frame.

use std::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"RRFT";

/// The oldest protocol version this build reads.
pub const MIN_PROTOCOL_VERSION: u8 = 1;

/// The newest protocol version this build reads and writes.
pub const MAX_PROTOCOL_VERSION: u8 = 1;

/// Size of [`FrameHeader`] in bytes.
pub const FRAME_HEADER_SIZE: usize = 32;

/// The default maximum frame size (header plus body): 64 MiB plus room for headers, so one
/// 64 MiB entry (the storage crate's default maximum) still fits in an AppendEntries.
pub const DEFAULT_MAX_FRAME_BYTES: usize = (64 << 20) + (64 << 10);

/// The fixed frame header. See the module docs for the layout.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct FrameHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// The protocol version the frame is written in.
    pub version: u8,
    /// A [`FrameKind`] code.
    pub kind: u8,
    /// Reserved; must be zero.
    pub flags: U16,
    /// Body length in bytes.
    pub body_len: U32,
    /// CRC-32C of the header (this field zero) and the checksummed part of the body.
    pub crc: U32,
    /// The request id (requests) or the id of the request answered (responses).
    pub request_id: U64,
    /// The Raft group; 0 with one group.
    pub group: U64,
}

const _: () = assert!(std::mem::size_of::<FrameHeader>() == FRAME_HEADER_SIZE);

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// The connection handshake (see [`crate::handshake`]).
    Hello,
    /// `Body::AppendEntries`.
    AppendEntries,
    /// `Body::AppendEntriesResponse`.
    AppendEntriesResponse,
    /// `Body::Heartbeat`.
    Heartbeat,
    /// `Body::HeartbeatResponse`.
    HeartbeatResponse,
    /// `Body::RequestVote`.
    RequestVote,
    /// `Body::RequestVoteResponse`.
    RequestVoteResponse,
    /// `Body::PreVote`.
    PreVote,
    /// `Body::PreVoteResponse`.
    PreVoteResponse,
    /// `Body::TimeoutNow`.
    TimeoutNow,
    /// `Body::InstallSnapshot`.
    InstallSnapshot,
    /// `Body::InstallSnapshotResponse`.
    InstallSnapshotResponse,
    /// `Body::Quiesce`.
    Quiesce,
    /// `Body::NodePing`.
    NodePing,
    /// `Body::GroupStopped`.
    GroupStopped,
}

impl FrameKind {
    /// Every kind, for tests and tables.
    pub const ALL: [FrameKind; 15] = [
        FrameKind::Hello,
        FrameKind::AppendEntries,
        FrameKind::AppendEntriesResponse,
        FrameKind::Heartbeat,
        FrameKind::HeartbeatResponse,
        FrameKind::RequestVote,
        FrameKind::RequestVoteResponse,
        FrameKind::PreVote,
        FrameKind::PreVoteResponse,
        FrameKind::TimeoutNow,
        FrameKind::InstallSnapshot,
        FrameKind::InstallSnapshotResponse,
        FrameKind::Quiesce,
        FrameKind::NodePing,
        FrameKind::GroupStopped,
    ];

    /// The kind's stable wire code.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Hello => 1,
            FrameKind::AppendEntries => 16,
            FrameKind::AppendEntriesResponse => 17,
            FrameKind::Heartbeat => 18,
            FrameKind::HeartbeatResponse => 19,
            FrameKind::RequestVote => 20,
            FrameKind::RequestVoteResponse => 21,
            FrameKind::PreVote => 22,
            FrameKind::PreVoteResponse => 23,
            FrameKind::TimeoutNow => 24,
            FrameKind::InstallSnapshot => 25,
            FrameKind::InstallSnapshotResponse => 26,
            FrameKind::Quiesce => 27,
            FrameKind::NodePing => 28,
            FrameKind::GroupStopped => 29,
        }
    }

    /// The kind for a wire code, or `None` for a code this version does not know.
    pub fn from_code(code: u8) -> Option<FrameKind> {
        FrameKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// True for kinds that answer a request (and so carry the request's id).
    pub fn is_response(self) -> bool {
        matches!(
            self,
            FrameKind::AppendEntriesResponse
                | FrameKind::HeartbeatResponse
                | FrameKind::RequestVoteResponse
                | FrameKind::PreVoteResponse
                | FrameKind::InstallSnapshotResponse
        )
    }

    /// True for requests the receiver answers (a transport tracks them until it does):
    /// every request but `TimeoutNow`, `Quiesce`, `NodePing` and `GroupStopped`, which are
    /// one-way.
    pub fn expects_response(self) -> bool {
        !self.is_response()
            && !matches!(
                self,
                FrameKind::Hello
                    | FrameKind::TimeoutNow
                    | FrameKind::Quiesce
                    | FrameKind::NodePing
                    | FrameKind::GroupStopped
            )
    }

    /// The request kind a response kind answers (`None` for requests and Hello).
    pub fn answers(self) -> Option<FrameKind> {
        match self {
            FrameKind::AppendEntriesResponse => Some(FrameKind::AppendEntries),
            FrameKind::HeartbeatResponse => Some(FrameKind::Heartbeat),
            FrameKind::RequestVoteResponse => Some(FrameKind::RequestVote),
            FrameKind::PreVoteResponse => Some(FrameKind::PreVote),
            FrameKind::InstallSnapshotResponse => Some(FrameKind::InstallSnapshot),
            _ => None,
        }
    }
}

impl fmt::Display for FrameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a frame could not be decoded (or encoded). Every malformation has its own variant, so a
/// closed connection's log line says exactly what arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`].
    BadMagic {
        /// The four bytes found.
        found: [u8; 4],
    },
    /// The frame's protocol version is outside what this build reads.
    UnknownVersion {
        /// The version found.
        version: u8,
    },
    /// The kind code is not one this version knows.
    UnknownKind {
        /// The code found.
        code: u8,
    },
    /// Reserved header flags are set.
    ReservedFlags {
        /// The flags found.
        flags: u16,
    },
    /// The declared frame size exceeds the configured maximum (checked before allocating).
    FrameTooLarge {
        /// Header plus declared body length.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The buffer ends before the frame does (whole-buffer decoding only; a stream decoder
    /// waits for more bytes instead).
    TruncatedFrame {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// The frame's checksum does not match its bytes.
    ChecksumMismatch {
        /// The checksum in the header.
        stored: u32,
        /// The checksum computed.
        computed: u32,
    },
    /// The body ends before a field of its kind does (the declared length is too short).
    TruncatedBody {
        /// The frame kind.
        kind: FrameKind,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the body.
        available: usize,
    },
    /// The body has bytes after its last field.
    TrailingBytes {
        /// The frame kind.
        kind: FrameKind,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field holds a value outside its domain (a boolean that is not 0 or 1, a reserved
    /// field that is not zero, an unknown tag).
    BadField {
        /// The frame kind.
        kind: FrameKind,
        /// The field.
        field: &'static str,
        /// The value found.
        value: u64,
    },
    /// An entry record inside an AppendEntries is invalid.
    BadRecord {
        /// The entry's position in the frame (0-based).
        position: u32,
        /// What is wrong with it.
        error: ringraft_storage::record::RecordError,
    },
    /// An entry record belongs to another group than its frame.
    RecordGroupMismatch {
        /// The frame's group.
        frame: u64,
        /// The record's group.
        record: u64,
    },
    /// A snapshot chunk's configuration could not be decoded.
    BadConfiguration(ringraft_storage::ConfigurationError),
    /// A snapshot id is not valid UTF-8.
    BadSnapshotId,
    /// A message is too large to encode within the maximum frame size, or a field exceeds
    /// what its length prefix can express.
    MessageTooLarge {
        /// The frame kind.
        kind: FrameKind,
        /// The frame size it would need (lower bound).
        size: u64,
        /// The maximum allowed.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic { found } => {
                write!(
                    f,
                    "bad frame magic {found:02x?} (expected {MAGIC:02x?} \"RRFT\")"
                )
            }
            FrameError::UnknownVersion { version } => write!(
                f,
                "unknown protocol version {version} (this build reads \
                 {MIN_PROTOCOL_VERSION}..={MAX_PROTOCOL_VERSION})"
            ),
            FrameError::UnknownKind { code } => write!(f, "unknown frame kind code {code}"),
            FrameError::ReservedFlags { flags } => {
                write!(f, "frame has reserved flag bits set ({flags:#06x})")
            }
            FrameError::FrameTooLarge { size, max } => {
                write!(
                    f,
                    "frame of {size} bytes exceeds the maximum of {max} bytes"
                )
            }
            FrameError::TruncatedFrame { needed, available } => {
                write!(
                    f,
                    "frame truncated: needs {needed} bytes, buffer has {available}"
                )
            }
            FrameError::ChecksumMismatch { stored, computed } => write!(
                f,
                "frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            FrameError::TruncatedBody {
                kind,
                needed,
                available,
            } => write!(
                f,
                "{kind} body truncated: a field needs {needed} bytes, {available} left"
            ),
            FrameError::TrailingBytes { kind, extra } => {
                write!(f, "{kind} body has {extra} bytes after its last field")
            }
            FrameError::BadField { kind, field, value } => {
                write!(f, "{kind} field `{field}` has invalid value {value}")
            }
            FrameError::BadRecord { position, error } => {
                write!(f, "AppendEntries entry #{position} is invalid: {error}")
            }
            FrameError::RecordGroupMismatch { frame, record } => write!(
                f,
                "AppendEntries entry belongs to group {record} but the frame to group {frame}"
            ),
            FrameError::BadConfiguration(e) => {
                write!(f, "snapshot configuration is invalid: {e}")
            }
            FrameError::BadSnapshotId => write!(f, "snapshot id is not valid UTF-8"),
            FrameError::MessageTooLarge { kind, size, max } => write!(
                f,
                "{kind} of at least {size} bytes cannot be framed (maximum {max} bytes)"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

impl FrameHeader {
    /// A header for a body of `body_len` bytes; `crc` is filled in by the encoder.
    pub fn new(kind: FrameKind, request_id: u64, group: u64, body_len: u32) -> FrameHeader {
        let version = if kind == FrameKind::Hello {
            1
        } else {
            MAX_PROTOCOL_VERSION
        };
        FrameHeader {
            magic: MAGIC,
            version,
            kind: kind.code(),
            flags: U16::new(0),
            body_len: U32::new(body_len),
            crc: U32::new(0),
            request_id: U64::new(request_id),
            group: U64::new(group),
        }
    }

    /// Reads the header at the start of `buf` and validates everything that can be checked
    /// without the body: magic, version, kind, flags, and the size against `max_frame_bytes`.
    ///
    /// `Ok(None)` if `buf` is shorter than a header.
    pub fn parse(
        buf: &[u8],
        max_frame_bytes: usize,
    ) -> Result<Option<(FrameHeader, FrameKind)>, FrameError> {
        let Ok((header, _)) = FrameHeader::read_from_prefix(buf) else {
            // Check the magic on a partial header too, so garbage is refused at the first
            // bytes rather than after waiting for a full header that may never come.
            let n = buf.len().min(4);
            if buf[..n] != MAGIC[..n] {
                let mut found = [0; 4];
                found[..n].copy_from_slice(&buf[..n]);
                return Err(FrameError::BadMagic { found });
            }
            return Ok(None);
        };
        if header.magic != MAGIC {
            return Err(FrameError::BadMagic {
                found: header.magic,
            });
        }
        if !(MIN_PROTOCOL_VERSION..=MAX_PROTOCOL_VERSION).contains(&header.version) {
            return Err(FrameError::UnknownVersion {
                version: header.version,
            });
        }
        let kind = FrameKind::from_code(header.kind)
            .ok_or(FrameError::UnknownKind { code: header.kind })?;
        if header.flags.get() != 0 {
            return Err(FrameError::ReservedFlags {
                flags: header.flags.get(),
            });
        }
        let size = FRAME_HEADER_SIZE as u64 + u64::from(header.body_len.get());
        if size > max_frame_bytes as u64 {
            return Err(FrameError::FrameTooLarge {
                size,
                max: max_frame_bytes,
            });
        }
        Ok(Some((header, kind)))
    }

    /// The whole frame's size: header plus body.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_SIZE + self.body_len.get() as usize
    }

    /// The checksum of this header (with `crc` taken as zero) followed by `checked_body`.
    pub fn compute_crc(&self, checked_body: &[u8]) -> u32 {
        let mut zeroed = *self;
        zeroed.crc = U32::new(0);
        ringraft_storage::crc::crc32c_append(
            ringraft_storage::crc::crc32c(zeroed.as_bytes()),
            checked_body,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip_and_unknown_codes_are_refused() {
        for kind in FrameKind::ALL {
            assert_eq!(FrameKind::from_code(kind.code()), Some(kind));
        }
        for code in [0u8, 2, 15, 30, 255] {
            assert_eq!(FrameKind::from_code(code), None);
        }
    }

    #[test]
    fn header_checks_come_before_the_body() {
        let mut header = FrameHeader::new(FrameKind::Heartbeat, 1, 0, 10);
        assert!(FrameHeader::parse(header.as_bytes(), 64)
            .expect("ok")
            .is_some());
        assert_eq!(
            FrameHeader::parse(header.as_bytes(), 41),
            Err(FrameError::FrameTooLarge { size: 42, max: 41 })
        );
        header.body_len = U32::new(u32::MAX);
        assert!(matches!(
            FrameHeader::parse(header.as_bytes(), 1 << 20),
            Err(FrameError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_is_refused_on_its_first_bytes() {
        assert_eq!(
            FrameHeader::parse(b"GE", 64),
            Err(FrameError::BadMagic {
                found: [b'G', b'E', 0, 0]
            })
        );
        assert_eq!(FrameHeader::parse(b"RR", 64), Ok(None));
        assert_eq!(FrameHeader::parse(b"", 64), Ok(None));
    }
}
