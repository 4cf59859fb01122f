//! Encoding messages into frames and decoding frames back, zero-copy both ways where it pays.
//!
//! Body layouts (all integers little-endian; `env` is `from u64, to u64, term u64`):
//!
//! ```text
//!  AppendEntries          env, prev_term u64, prev_index u64, leader_commit u64, round u64,
//!                         count u32, reserved u32 (0), then `count` storage records
//!  AppendEntriesResponse  env, round u64, tag u8 (0 success, 1 log too short,
//!                         2 term mismatch, 3 stale term), 7 zero bytes, then per tag:
//!                         match_index | rejected_prev, last_index
//!                         | rejected_prev, term, first_index | nothing
//!                         | rejected_prev, restore_term, restore_index
//!  Heartbeat              env, leader_commit u64, round u64
//!  HeartbeatResponse      env, round u64
//!  RequestVote            env, last_term u64, last_index u64, flags u8 (bit 0: transfer)
//!  RequestVoteResponse    env, granted u8
//!  PreVote                env, last_term u64, last_index u64
//!  PreVoteResponse        env, granted u8
//!  TimeoutNow             env
//!  InstallSnapshot        env, offset u64, round u64, flags u8 (bit 0: done, bit 1: stage),
//!                         last_term u64, last_index u64,
//!                         configuration_index u64, size u64, id_len u16, id, config_len u32,
//!                         config (Configuration::encode), data_len u32, data
//!  InstallSnapshotResponse env, last_term u64, last_index u64, next_offset u64,
//!                         flags u8 (bit 0: done, bit 1: stage),
//!                         round u64
//! ```
//!
//! Entries travel as the storage crate's record bytes (`ringraft_storage::record`), the same
//! bytes the WAL journals, each with its own CRC-32C. Encoding passes payloads of
//! [`INLINE_MAX_BYTES`] or more by reference as separate [`Bytes`] parts (for a vectored
//! write) instead of copying them; decoding returns entries whose `data` and `extensions` are
//! slices of the received frame.
//!
//! The decoder validates before it trusts: header checks (magic, version, kind, flags, size
//! against the maximum) happen before a body buffer exists; every length is checked against
//! the bytes present; a pre-sized `Vec` is capped by what the body could hold.

use crate::frame::{FrameError, FrameHeader, FrameKind, FRAME_HEADER_SIZE};
use crate::handshake::Hello;
use crate::message::{
    AppendEntries, AppendEntriesResponse, AppendResult, Body, ConflictHint, InstallSnapshot,
    InstallSnapshotResponse, Message,
};
use bytes::{BufMut, Bytes, BytesMut};
use ringraft_storage::record::{self, HEADER_SIZE as RECORD_HEADER_SIZE};
use ringraft_storage::{Configuration, GroupId, Index, LogId, NodeId, SnapshotMeta, Term};
use zerocopy::little_endian::U32;
use zerocopy::IntoBytes;

/// Payloads at least this large are sent by reference, not copied into the frame buffer.
pub const INLINE_MAX_BYTES: usize = 4096;

/// Bytes of an AppendEntries body before its records; the frame checksum covers exactly these
/// (the records carry their own).
pub const APPEND_FIXED_BYTES: usize = 64;

/// A frame ready to write: one or more byte strings to be written in order (a vectored write).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedFrame {
    parts: Vec<Bytes>,
    len: usize,
}

impl EncodedFrame {
    /// The frame's parts, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The frame's total length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a frame has at least a header.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame as one contiguous buffer (copies when it has several parts).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [one] => one.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// Consumes the frame, returning its parts.
    pub fn into_parts(self) -> Vec<Bytes> {
        self.parts
    }
}

/// What a frame carries, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A handshake.
    Hello(Hello),
    /// A Raft message.
    Message(Message),
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's kind.
    pub kind: FrameKind,
    /// Its request id (or, for a response, the id of the request answered).
    pub request_id: u64,
    /// Its Raft group.
    pub group: GroupId,
    /// Its contents.
    pub payload: Payload,
}

/// The frame kind that carries `body`.
pub fn kind_of(body: &Body) -> FrameKind {
    match body {
        Body::AppendEntries(_) => FrameKind::AppendEntries,
        Body::AppendEntriesResponse(_) => FrameKind::AppendEntriesResponse,
        Body::Heartbeat { .. } => FrameKind::Heartbeat,
        Body::HeartbeatResponse { .. } => FrameKind::HeartbeatResponse,
        Body::RequestVote { .. } => FrameKind::RequestVote,
        Body::RequestVoteResponse { .. } => FrameKind::RequestVoteResponse,
        Body::PreVote { .. } => FrameKind::PreVote,
        Body::PreVoteResponse { .. } => FrameKind::PreVoteResponse,
        Body::TimeoutNow => FrameKind::TimeoutNow,
        Body::InstallSnapshot(_) => FrameKind::InstallSnapshot,
        Body::InstallSnapshotResponse(_) => FrameKind::InstallSnapshotResponse,
        Body::Quiesce { .. } => FrameKind::Quiesce,
        Body::NodePing => FrameKind::NodePing,
        Body::GroupStopped => FrameKind::GroupStopped,
    }
}

enum Segment {
    Owned(BytesMut),
    Shared(Bytes),
}

/// Builds a frame: the header placeholder and small fields go into owned buffers, large
/// payloads are appended by reference.
struct Builder {
    segments: Vec<Segment>,
    kind: FrameKind,
    len: usize,
}

impl Builder {
    fn new(kind: FrameKind, capacity: usize) -> Builder {
        let mut first = BytesMut::with_capacity(FRAME_HEADER_SIZE + capacity);
        first.put_bytes(0, FRAME_HEADER_SIZE);
        Builder {
            segments: vec![Segment::Owned(first)],
            kind,
            len: FRAME_HEADER_SIZE,
        }
    }

    fn owned(&mut self) -> &mut BytesMut {
        if !matches!(self.segments.last(), Some(Segment::Owned(_))) {
            self.segments
                .push(Segment::Owned(BytesMut::with_capacity(256)));
        }
        match self.segments.last_mut() {
            Some(Segment::Owned(b)) => b,
            // Just ensured the last segment is owned.
            _ => unreachable!("last segment is owned"),
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.owned().extend_from_slice(bytes);
    }

    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }

    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }

    fn shared(&mut self, bytes: &Bytes) {
        if bytes.len() < INLINE_MAX_BYTES {
            self.put(bytes);
        } else {
            self.len += bytes.len();
            self.segments.push(Segment::Shared(bytes.clone()));
        }
    }

    fn envelope(&mut self, m: &Message) {
        self.u64(m.from.0);
        self.u64(m.to.0);
        self.u64(m.term.0);
    }

    /// Fills in the header; `checked` limits how many body bytes the frame checksum covers.
    fn finish(
        mut self,
        request_id: u64,
        group: u64,
        checked: Option<usize>,
        max_frame_bytes: usize,
    ) -> Result<EncodedFrame, FrameError> {
        let body_len = self.len - FRAME_HEADER_SIZE;
        if self.len > max_frame_bytes || body_len > u32::MAX as usize {
            return Err(FrameError::MessageTooLarge {
                kind: self.kind,
                size: self.len as u64,
                max: max_frame_bytes,
            });
        }
        let mut header = FrameHeader::new(self.kind, request_id, group, body_len as u32);
        let mut remaining = checked.unwrap_or(body_len).min(body_len);
        let mut crc = header.compute_crc(&[]);
        for (i, segment) in self.segments.iter().enumerate() {
            let bytes: &[u8] = match segment {
                Segment::Owned(b) => b,
                Segment::Shared(b) => b,
            };
            let bytes = if i == 0 {
                &bytes[FRAME_HEADER_SIZE..]
            } else {
                bytes
            };
            let take = remaining.min(bytes.len());
            crc = ringraft_storage::crc::crc32c_append(crc, &bytes[..take]);
            remaining -= take;
        }
        header.crc = U32::new(crc);
        if let Some(Segment::Owned(first)) = self.segments.first_mut() {
            first[..FRAME_HEADER_SIZE].copy_from_slice(header.as_bytes());
        }
        let parts = self
            .segments
            .into_iter()
            .map(|s| match s {
                Segment::Owned(b) => b.freeze(),
                Segment::Shared(b) => b,
            })
            .filter(|b| !b.is_empty())
            .collect();
        Ok(EncodedFrame {
            parts,
            len: self.len,
        })
    }
}

/// Encodes `message` as one frame.
///
/// Fails with [`FrameError::MessageTooLarge`] if the frame would exceed `max_frame_bytes`, or
/// [`FrameError::BadRecord`] if an entry exceeds what a record can hold.
pub fn encode_message(
    message: &Message,
    request_id: u64,
    group: GroupId,
    max_frame_bytes: usize,
) -> Result<EncodedFrame, FrameError> {
    let kind = kind_of(&message.body);
    let mut b = Builder::new(kind, 64);
    b.envelope(message);
    let mut checked = None;
    match &message.body {
        Body::AppendEntries(ae) => {
            encode_append(&mut b, ae, group, max_frame_bytes)?;
            checked = Some(APPEND_FIXED_BYTES);
        }
        Body::AppendEntriesResponse(r) => {
            b.u64(r.round);
            let (tag, fields): (u8, &[u64]) = match r.result {
                AppendResult::Success { match_index } => (0, &[match_index.0]),
                AppendResult::Conflict {
                    rejected_prev_index,
                    hint: ConflictHint::LogTooShort { last_index },
                } => (1, &[rejected_prev_index.0, last_index.0]),
                AppendResult::Conflict {
                    rejected_prev_index,
                    hint: ConflictHint::TermMismatch { term, first_index },
                } => (2, &[rejected_prev_index.0, term.0, first_index.0]),
                AppendResult::StaleTerm => (3, &[]),
                AppendResult::Conflict {
                    rejected_prev_index,
                    hint: ConflictHint::MissingRestore { entry },
                } => (4, &[rejected_prev_index.0, entry.term.0, entry.index.0]),
            };
            b.u8(tag);
            b.put(&[0; 7]);
            for f in fields {
                b.u64(*f);
            }
        }
        Body::Heartbeat {
            leader_commit,
            round,
        }
        | Body::Quiesce {
            leader_commit,
            round,
        } => {
            b.u64(leader_commit.0);
            b.u64(*round);
        }
        Body::HeartbeatResponse { round } => b.u64(*round),
        Body::RequestVote {
            last_log_id,
            leadership_transfer,
        } => {
            log_id(&mut b, *last_log_id);
            b.u8(u8::from(*leadership_transfer));
        }
        Body::RequestVoteResponse { granted } | Body::PreVoteResponse { granted } => {
            b.u8(u8::from(*granted))
        }
        Body::PreVote { last_log_id } => log_id(&mut b, *last_log_id),
        Body::TimeoutNow | Body::NodePing | Body::GroupStopped => {}
        Body::InstallSnapshot(s) => encode_snapshot(&mut b, s, max_frame_bytes)?,
        Body::InstallSnapshotResponse(r) => {
            log_id(&mut b, r.last);
            b.u64(r.next_offset);
            b.u8(u8::from(r.done) | (u8::from(r.stage) << 1));
            b.u64(r.round);
        }
    }
    b.finish(request_id, group.0, checked, max_frame_bytes)
}

fn log_id(b: &mut Builder, id: LogId) {
    b.u64(id.term.0);
    b.u64(id.index.0);
}

fn encode_append(
    b: &mut Builder,
    ae: &AppendEntries,
    group: GroupId,
    max_frame_bytes: usize,
) -> Result<(), FrameError> {
    let count = u32::try_from(ae.entries.len()).map_err(|_| FrameError::MessageTooLarge {
        kind: FrameKind::AppendEntries,
        size: ae.entries.len() as u64 * RECORD_HEADER_SIZE as u64,
        max: max_frame_bytes,
    })?;
    log_id(b, ae.prev_log_id);
    b.u64(ae.leader_commit.0);
    b.u64(ae.round);
    b.u32(count);
    b.u32(0);
    for (position, entry) in ae.entries.iter().enumerate() {
        let header = record::record_header(
            entry.kind.code(),
            group,
            entry.id,
            &entry.data,
            &entry.extensions,
            // The frame-size check below is the binding limit; this only guards `u32` lengths.
            u32::MAX as usize,
        )
        .map_err(|error| FrameError::BadRecord {
            position: position as u32,
            error,
        })?;
        b.put(header.as_bytes());
        b.shared(&entry.data);
        b.shared(&entry.extensions);
        b.put(record::padding_for(entry.payload_len()));
        if b.len > max_frame_bytes {
            // Stop early rather than building a frame we will refuse.
            return Err(FrameError::MessageTooLarge {
                kind: FrameKind::AppendEntries,
                size: b.len as u64,
                max: max_frame_bytes,
            });
        }
    }
    Ok(())
}

fn encode_snapshot(
    b: &mut Builder,
    s: &InstallSnapshot,
    max_frame_bytes: usize,
) -> Result<(), FrameError> {
    let too_large = |size: usize| FrameError::MessageTooLarge {
        kind: FrameKind::InstallSnapshot,
        size: size as u64,
        max: max_frame_bytes,
    };
    let id_len = u16::try_from(s.meta.id.len()).map_err(|_| too_large(s.meta.id.len()))?;
    let config = s.meta.configuration.encode();
    let config_len = u32::try_from(config.len()).map_err(|_| too_large(config.len()))?;
    let data_len = u32::try_from(s.data.len()).map_err(|_| too_large(s.data.len()))?;
    b.u64(s.offset);
    b.u64(s.round);
    b.u8(u8::from(s.done) | (u8::from(s.stage) << 1));
    log_id(b, s.meta.last);
    b.u64(s.meta.configuration_index.0);
    b.u64(s.meta.size);
    b.u16(id_len);
    b.put(s.meta.id.as_bytes());
    b.u32(config_len);
    b.put(&config);
    b.u32(data_len);
    b.shared(&s.data);
    Ok(())
}

/// Decodes the frame at the start of `buf` (which may hold more after it); returns the frame
/// and the bytes it occupies. An incomplete frame is [`FrameError::TruncatedFrame`].
///
/// Entry payloads and snapshot data in the result are slices of `buf`.
pub fn decode_frame(buf: &Bytes, max_frame_bytes: usize) -> Result<(Frame, usize), FrameError> {
    let Some((header, kind)) = FrameHeader::parse(buf, max_frame_bytes)? else {
        return Err(FrameError::TruncatedFrame {
            needed: FRAME_HEADER_SIZE,
            available: buf.len(),
        });
    };
    let total = header.frame_len();
    if buf.len() < total {
        return Err(FrameError::TruncatedFrame {
            needed: total,
            available: buf.len(),
        });
    }
    let frame = decode_validated(
        &header,
        kind,
        buf.slice(FRAME_HEADER_SIZE..total),
        max_frame_bytes,
    )?;
    Ok((frame, total))
}

/// A stream decoder: feed it the bytes read from a connection, take out whole frames.
///
/// It never reserves more than one frame's worth (bounded by the maximum frame size) and says
/// how many more bytes it needs, so a reader can size its reads.
#[derive(Clone, Copy, Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder refusing frames larger than `max_frame_bytes` (header included).
    pub fn new(max_frame_bytes: usize) -> FrameDecoder {
        FrameDecoder { max_frame_bytes }
    }

    /// The configured maximum frame size.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes
    }

    /// Takes one whole frame off the front of `buf`, or returns `Ok(None)` if `buf` holds only
    /// part of one; in that case `buf` has been reserved up to the frame's full size, which the
    /// header has already validated against the maximum.
    ///
    /// After an error the stream is unusable (framing is lost): close the connection.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some((header, kind)) = FrameHeader::parse(buf, self.max_frame_bytes)? else {
            return Ok(None);
        };
        let total = header.frame_len();
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        decode_validated(
            &header,
            kind,
            frame.slice(FRAME_HEADER_SIZE..),
            self.max_frame_bytes,
        )
        .map(Some)
    }
}

fn decode_validated(
    header: &FrameHeader,
    kind: FrameKind,
    body: Bytes,
    max_frame_bytes: usize,
) -> Result<Frame, FrameError> {
    let checked = if kind == FrameKind::AppendEntries {
        body.len().min(APPEND_FIXED_BYTES)
    } else {
        body.len()
    };
    let computed = header.compute_crc(&body[..checked]);
    if computed != header.crc.get() {
        return Err(FrameError::ChecksumMismatch {
            stored: header.crc.get(),
            computed,
        });
    }
    let group = header.group.get();
    let mut r = Reader { body, pos: 0, kind };
    let payload = if kind == FrameKind::Hello {
        Payload::Hello(Hello::decode_body(&mut r)?)
    } else {
        Payload::Message(decode_message(&mut r, group, max_frame_bytes)?)
    };
    r.finish()?;
    Ok(Frame {
        kind,
        request_id: header.request_id.get(),
        group: GroupId(group),
        payload,
    })
}

/// Reads fields off a frame body, each checked against the bytes left.
pub(crate) struct Reader {
    body: Bytes,
    pos: usize,
    kind: FrameKind,
}

impl Reader {
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, FrameError> {
        let available = self.body.len() - self.pos;
        if n > available {
            return Err(FrameError::TruncatedBody {
                kind: self.kind,
                needed: n,
                available,
            });
        }
        let out = self.body.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let available = self.body.len() - self.pos;
        let Some(bytes) = self.body.get(self.pos..self.pos + N) else {
            return Err(FrameError::TruncatedBody {
                kind: self.kind,
                needed: N,
                available,
            });
        };
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        self.pos += N;
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(self.bad(field, u64::from(v))),
        }
    }

    pub(crate) fn zero(&mut self, field: &'static str, n: usize) -> Result<(), FrameError> {
        let bytes = self.take(n)?;
        match bytes.iter().find(|b| **b != 0) {
            Some(b) => Err(self.bad(field, u64::from(*b))),
            None => Ok(()),
        }
    }

    pub(crate) fn bad(&self, field: &'static str, value: u64) -> FrameError {
        FrameError::BadField {
            kind: self.kind,
            field,
            value,
        }
    }

    fn log_id(&mut self) -> Result<LogId, FrameError> {
        let term = Term(self.u64()?);
        Ok(LogId::new(term, Index(self.u64()?)))
    }

    fn finish(&self) -> Result<(), FrameError> {
        match self.body.len() - self.pos {
            0 => Ok(()),
            extra => Err(FrameError::TrailingBytes {
                kind: self.kind,
                extra,
            }),
        }
    }
}

fn decode_message(
    r: &mut Reader,
    group: u64,
    max_frame_bytes: usize,
) -> Result<Message, FrameError> {
    let from = NodeId(r.u64()?);
    let to = NodeId(r.u64()?);
    let term = Term(r.u64()?);
    let body = match r.kind {
        FrameKind::AppendEntries => Body::AppendEntries(decode_append(r, group, max_frame_bytes)?),
        FrameKind::AppendEntriesResponse => {
            let round = r.u64()?;
            let tag = r.u8()?;
            r.zero("reserved", 7)?;
            let result = match tag {
                0 => AppendResult::Success {
                    match_index: Index(r.u64()?),
                },
                1 => AppendResult::Conflict {
                    rejected_prev_index: Index(r.u64()?),
                    hint: ConflictHint::LogTooShort {
                        last_index: Index(r.u64()?),
                    },
                },
                2 => {
                    let rejected_prev_index = Index(r.u64()?);
                    let term = Term(r.u64()?);
                    AppendResult::Conflict {
                        rejected_prev_index,
                        hint: ConflictHint::TermMismatch {
                            term,
                            first_index: Index(r.u64()?),
                        },
                    }
                }
                3 => AppendResult::StaleTerm,
                4 => {
                    let rejected_prev_index = Index(r.u64()?);
                    AppendResult::Conflict {
                        rejected_prev_index,
                        hint: ConflictHint::MissingRestore { entry: r.log_id()? },
                    }
                }
                t => return Err(r.bad("result tag", u64::from(t))),
            };
            Body::AppendEntriesResponse(AppendEntriesResponse { result, round })
        }
        FrameKind::Heartbeat => Body::Heartbeat {
            leader_commit: Index(r.u64()?),
            round: r.u64()?,
        },
        FrameKind::HeartbeatResponse => Body::HeartbeatResponse { round: r.u64()? },
        FrameKind::RequestVote => {
            let last_log_id = r.log_id()?;
            let flags = r.u8()?;
            if flags & !1 != 0 {
                return Err(r.bad("flags", u64::from(flags)));
            }
            Body::RequestVote {
                last_log_id,
                leadership_transfer: flags & 1 == 1,
            }
        }
        FrameKind::RequestVoteResponse => Body::RequestVoteResponse {
            granted: r.bool("granted")?,
        },
        FrameKind::PreVote => Body::PreVote {
            last_log_id: r.log_id()?,
        },
        FrameKind::PreVoteResponse => Body::PreVoteResponse {
            granted: r.bool("granted")?,
        },
        FrameKind::TimeoutNow => Body::TimeoutNow,
        FrameKind::Quiesce => Body::Quiesce {
            leader_commit: Index(r.u64()?),
            round: r.u64()?,
        },
        FrameKind::NodePing => Body::NodePing,
        FrameKind::GroupStopped => Body::GroupStopped,
        FrameKind::InstallSnapshot => Body::InstallSnapshot(decode_snapshot(r)?),
        FrameKind::InstallSnapshotResponse => {
            let last = r.log_id()?;
            let next_offset = r.u64()?;
            let flags = r.u8()?;
            if flags & !3 != 0 {
                return Err(r.bad("flags", u64::from(flags)));
            }
            Body::InstallSnapshotResponse(InstallSnapshotResponse {
                last,
                next_offset,
                done: flags & 1 != 0,
                stage: flags & 2 != 0,
                round: r.u64()?,
            })
        }
        // Hello is decoded by the caller; any other kind is one this function does not know yet.
        other => return Err(FrameError::UnknownKind { code: other.code() }),
    };
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn decode_append(
    r: &mut Reader,
    group: u64,
    max_frame_bytes: usize,
) -> Result<AppendEntries, FrameError> {
    let prev_log_id = r.log_id()?;
    let leader_commit = Index(r.u64()?);
    let round = r.u64()?;
    let count = r.u32()?;
    r.zero("reserved", 4)?;
    let records = r.take(r.body.len() - r.pos)?;
    // Each record takes at least a header, so this bounds the allocation by the frame size.
    let mut entries = Vec::with_capacity((count as usize).min(records.len() / RECORD_HEADER_SIZE));
    let mut offset = 0;
    for position in 0..count {
        let (entry, record_group, used) =
            record::decode_entry(&records, offset, max_frame_bytes)
                .map_err(|error| FrameError::BadRecord { position, error })?;
        if record_group.0 != group {
            return Err(FrameError::RecordGroupMismatch {
                frame: group,
                record: record_group.0,
            });
        }
        entries.push(entry);
        offset += used;
    }
    if offset != records.len() {
        return Err(FrameError::TrailingBytes {
            kind: FrameKind::AppendEntries,
            extra: records.len() - offset,
        });
    }
    Ok(AppendEntries {
        prev_log_id,
        entries,
        leader_commit,
        round,
    })
}

fn decode_snapshot(r: &mut Reader) -> Result<InstallSnapshot, FrameError> {
    let offset = r.u64()?;
    let round = r.u64()?;
    let flags = r.u8()?;
    if flags & !3 != 0 {
        return Err(r.bad("flags", u64::from(flags)));
    }
    let (done, stage) = (flags & 1 != 0, flags & 2 != 0);
    let last = r.log_id()?;
    let configuration_index = Index(r.u64()?);
    let size = r.u64()?;
    let id_len = r.u16()? as usize;
    let id = r.take(id_len)?;
    let id = std::str::from_utf8(&id)
        .map_err(|_| FrameError::BadSnapshotId)?
        .to_owned();
    let config_len = r.u32()? as usize;
    let config = r.take(config_len)?;
    let configuration = Configuration::decode(&config).map_err(FrameError::BadConfiguration)?;
    let data_len = r.u32()? as usize;
    let data = r.take(data_len)?;
    Ok(InstallSnapshot {
        meta: SnapshotMeta {
            id,
            last,
            configuration,
            configuration_index,
            size,
        },
        offset,
        data,
        done,
        stage,
        round,
    })
}

/// Encodes a Hello frame (request id 0, group 0).
pub fn encode_hello(hello: &Hello) -> EncodedFrame {
    let mut b = Builder::new(FrameKind::Hello, 32);
    hello.encode_body(|bytes| b.put(bytes));
    // A Hello is a few dozen bytes: it always fits.
    match b.finish(0, 0, None, usize::MAX) {
        Ok(frame) => frame,
        Err(e) => unreachable!("a Hello always fits in a frame: {e}"),
    }
}
