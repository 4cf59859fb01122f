//! The connection handshake: who is talking, in which cluster, in which protocol version.
//!
//! ```text
//!   dialer                                   listener
//!     ── Hello{versions, cluster, me, you, lane} ──►   checks cluster, version overlap, `you`
//!     ◄── Hello{versions, cluster, me, -, lane} ──     (always answers, then closes on mismatch)
//!   checks cluster, version overlap, `me` is who it dialled
//! ```
//!
//! The listener answers even when it is about to refuse, so the dialer can report *why* (a
//! typed [`HandshakeError`]) instead of seeing a bare closed socket. Both sides pick the highest
//! version both support. Hello frames are always written in protocol version 1, so nodes of
//! different versions can still read each other's Hello.

use crate::codec::{decode_frame, encode_hello, Payload, Reader};
use crate::frame::{
    FrameError, FrameHeader, FrameKind, MAX_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION,
};
use bytes::BytesMut;
use ringraft_storage::NodeId;
use std::fmt;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Identifies a cluster. Nodes refuse connections from other clusters, so a misconfigured
/// address list cannot splice two clusters together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClusterId(pub u64);

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:#x}", self.0)
    }
}

/// Which of a peer pair's two connections this is.
///
/// Small latency-critical messages (heartbeats, votes, TimeoutNow) and bulk transfers
/// (AppendEntries, snapshot chunks) travel on separate TCP connections, so a heartbeat never
/// queues behind megabytes of entries in a socket buffer (ARCHITECTURE §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Heartbeats, votes, pre-votes, TimeoutNow and their responses.
    Control,
    /// AppendEntries, snapshot chunks and their responses.
    Bulk,
}

impl Lane {
    /// Both lanes.
    pub const ALL: [Lane; 2] = [Lane::Control, Lane::Bulk];

    fn code(self) -> u8 {
        match self {
            Lane::Control => 0,
            Lane::Bulk => 1,
        }
    }

    /// The lane a frame kind travels on. A response travels back on its request's connection.
    pub fn of(kind: FrameKind) -> Lane {
        match kind {
            FrameKind::AppendEntries
            | FrameKind::AppendEntriesResponse
            | FrameKind::InstallSnapshot
            | FrameKind::InstallSnapshotResponse => Lane::Bulk,
            _ => Lane::Control,
        }
    }
}

/// The body of a Hello frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The oldest protocol version the sender speaks.
    pub min_version: u8,
    /// The newest protocol version the sender speaks.
    pub max_version: u8,
    /// The lane the connection serves.
    pub lane: Lane,
    /// The sender's cluster.
    pub cluster_id: ClusterId,
    /// The sender's node id.
    pub node_id: NodeId,
    /// From a dialer: the node it means to reach. From a listener: `NodeId(0)`.
    pub target: NodeId,
}

const HELLO_BODY_BYTES: usize = 32;

impl Hello {
    /// A Hello advertising every version this build speaks.
    pub fn new(cluster_id: ClusterId, node_id: NodeId, target: NodeId, lane: Lane) -> Hello {
        Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: MAX_PROTOCOL_VERSION,
            lane,
            cluster_id,
            node_id,
            target,
        }
    }

    pub(crate) fn encode_body(&self, mut put: impl FnMut(&[u8])) {
        let mut body = [0u8; HELLO_BODY_BYTES];
        body[0] = self.min_version;
        body[1] = self.max_version;
        body[2] = self.lane.code();
        body[8..16].copy_from_slice(&self.cluster_id.0.to_le_bytes());
        body[16..24].copy_from_slice(&self.node_id.0.to_le_bytes());
        body[24..32].copy_from_slice(&self.target.0.to_le_bytes());
        put(&body);
    }

    pub(crate) fn decode_body(r: &mut Reader) -> Result<Hello, FrameError> {
        let min_version = r.u8()?;
        let max_version = r.u8()?;
        let lane = match r.u8()? {
            0 => Lane::Control,
            1 => Lane::Bulk,
            v => return Err(r.bad("lane", u64::from(v))),
        };
        r.zero("reserved", 5)?;
        if min_version > max_version {
            return Err(r.bad("max_version", u64::from(max_version)));
        }
        Ok(Hello {
            min_version,
            max_version,
            lane,
            cluster_id: ClusterId(r.u64()?),
            node_id: NodeId(r.u64()?),
            target: NodeId(r.u64()?),
        })
    }

    /// Checks the other side's Hello against ours; returns the protocol version to speak.
    ///
    /// `expected_peer` is the node a dialer meant to reach (listeners pass `None`).
    pub fn negotiate(
        &self,
        theirs: &Hello,
        expected_peer: Option<NodeId>,
    ) -> Result<u8, HandshakeError> {
        if theirs.cluster_id != self.cluster_id {
            return Err(HandshakeError::ClusterMismatch {
                ours: self.cluster_id,
                theirs: theirs.cluster_id,
            });
        }
        let version = self.max_version.min(theirs.max_version);
        if version < self.min_version.max(theirs.min_version) {
            return Err(HandshakeError::NoCommonVersion {
                ours: (self.min_version, self.max_version),
                theirs: (theirs.min_version, theirs.max_version),
            });
        }
        if let Some(expected) = expected_peer {
            if theirs.node_id != expected {
                return Err(HandshakeError::WrongNode {
                    expected,
                    found: theirs.node_id,
                });
            }
        } else if theirs.target != self.node_id {
            // A dialer that reached the wrong node: refuse, so it does not deliver another
            // node's messages here.
            return Err(HandshakeError::WrongNode {
                expected: theirs.target,
                found: self.node_id,
            });
        }
        if theirs.lane != self.lane {
            return Err(HandshakeError::LaneMismatch {
                ours: self.lane,
                theirs: theirs.lane,
            });
        }
        Ok(version)
    }
}

/// Why a handshake failed. The connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The other node belongs to another cluster.
    ClusterMismatch {
        /// Our cluster.
        ours: ClusterId,
        /// Theirs.
        theirs: ClusterId,
    },
    /// The version ranges do not overlap.
    NoCommonVersion {
        /// Our supported range (inclusive).
        ours: (u8, u8),
        /// Theirs.
        theirs: (u8, u8),
    },
    /// The dialled address is served by another node than expected.
    WrongNode {
        /// The node that was meant.
        expected: NodeId,
        /// The node that answered.
        found: NodeId,
    },
    /// The two sides disagree on the connection's lane (a bug or a foreign implementation).
    LaneMismatch {
        /// Our lane.
        ours: Lane,
        /// Theirs.
        theirs: Lane,
    },
    /// The first frame was not a Hello.
    NotHello {
        /// What it was.
        kind: FrameKind,
    },
    /// The first frame was malformed.
    Frame(FrameError),
    /// The connection closed before the handshake completed.
    Closed,
    /// An I/O error during the handshake.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
    /// The other side did not complete the handshake in time.
    TimedOut,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::ClusterMismatch { ours, theirs } => {
                write!(f, "peer is in {theirs}, we are in {ours}")
            }
            HandshakeError::NoCommonVersion { ours, theirs } => write!(
                f,
                "no common protocol version: we speak {}..={}, the peer {}..={}",
                ours.0, ours.1, theirs.0, theirs.1
            ),
            HandshakeError::WrongNode { expected, found } => {
                write!(f, "expected node {expected}, but {found} answered")
            }
            HandshakeError::LaneMismatch { ours, theirs } => {
                write!(f, "lane mismatch: we opened {ours:?}, the peer {theirs:?}")
            }
            HandshakeError::NotHello { kind } => {
                write!(f, "expected a Hello frame first, got {kind}")
            }
            HandshakeError::Frame(e) => write!(f, "malformed handshake frame: {e}"),
            HandshakeError::Closed => write!(f, "connection closed during the handshake"),
            HandshakeError::Io { kind, message } => {
                write!(f, "I/O error during the handshake ({kind:?}): {message}")
            }
            HandshakeError::TimedOut => write!(f, "handshake timed out"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> HandshakeError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return HandshakeError::Closed;
        }
        HandshakeError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

/// Writes our Hello.
pub(crate) async fn send_hello<S: AsyncWrite + Unpin>(
    stream: &mut S,
    hello: &Hello,
) -> io::Result<()> {
    let frame = encode_hello(hello);
    for part in frame.parts() {
        stream.write_all(part).await?;
    }
    stream.flush().await
}

/// Reads the other side's Hello. Bytes read past it stay in `buf` for the frame reader.
pub(crate) async fn read_hello<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Hello, HandshakeError> {
    loop {
        match FrameHeader::parse(buf, max_frame_bytes) {
            Err(e) => return Err(HandshakeError::Frame(e)),
            Ok(Some((header, kind))) if buf.len() >= header.frame_len() => {
                if kind != FrameKind::Hello {
                    return Err(HandshakeError::NotHello { kind });
                }
                let frame = buf.split_to(header.frame_len()).freeze();
                let (frame, _) =
                    decode_frame(&frame, max_frame_bytes).map_err(HandshakeError::Frame)?;
                match frame.payload {
                    Payload::Hello(hello) => return Ok(hello),
                    Payload::Message(_) => {
                        return Err(HandshakeError::NotHello { kind: frame.kind })
                    }
                }
            }
            Ok(_) => {}
        }
        if buf.capacity() - buf.len() < 64 {
            buf.reserve(256);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: u64, node: u64, target: u64) -> Hello {
        Hello::new(ClusterId(cluster), NodeId(node), NodeId(target), Lane::Bulk)
    }

    #[test]
    fn matching_hellos_agree_on_the_highest_common_version() {
        let mut ours = hello(7, 1, 0);
        let mut theirs = hello(7, 2, 1);
        ours.max_version = 5;
        theirs.min_version = 1;
        theirs.max_version = 3;
        assert_eq!(ours.negotiate(&theirs, None), Ok(3));
        assert_eq!(theirs.negotiate(&ours, Some(NodeId(1))), Ok(3));
    }

    #[test]
    fn every_mismatch_is_a_distinct_error() {
        let ours = hello(7, 1, 0);
        assert!(matches!(
            ours.negotiate(&hello(8, 2, 1), None),
            Err(HandshakeError::ClusterMismatch { .. })
        ));
        let mut future = hello(7, 2, 1);
        future.min_version = 9;
        future.max_version = 9;
        assert!(matches!(
            ours.negotiate(&future, None),
            Err(HandshakeError::NoCommonVersion { .. })
        ));
        assert!(matches!(
            ours.negotiate(&hello(7, 2, 3), None),
            Err(HandshakeError::WrongNode { .. })
        ));
        assert!(matches!(
            hello(7, 2, 1).negotiate(&ours, Some(NodeId(5))),
            Err(HandshakeError::WrongNode { .. })
        ));
        let mut control = hello(7, 2, 1);
        control.lane = Lane::Control;
        assert!(matches!(
            ours.negotiate(&control, None),
            Err(HandshakeError::LaneMismatch { .. })
        ));
    }
}
