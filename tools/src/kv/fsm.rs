//! The replicated state machine: a byte-string key-value map plus the cluster's member
//! directory (node id → raft and client addresses), so that every node, including ones that
//! joined later, knows where to forward a client and where to dial a peer.
//!
//! [`KvFsm::apply`] answers with the RESP reply the client will see, computed where the state
//! machine runs (the shard thread, or an apply thread), so every replica computes the same
//! reply for the same entry (an `INCR` on a
//! non-integer is an `-ERR` reply on every replica, not a failed entry).
//!
//! Formats, both a version byte ([`FORMAT_VERSION`]) then MessagePack through `serde` and
//! `rmp-serde` (as hashicorp's users encode their commands):
//! - a command entry: the [`Command`] as serde's derive writes it, an enum being a one-entry map
//!   from the variant's name to the array of its fields (keys and values as MessagePack `bin`);
//! - a snapshot: the array [members: map id → [raft, client], pairs: map key → value].
//!
//! Decoding never panics: an unknown version byte, an empty input and a malformed body are
//! each a [`FormatError`] (a declared length longer than the input fails without being
//! allocated; nesting is bounded). A command that does not decode is applied as an `-ERR`
//! reply, the same on every replica; a snapshot that does not decode fails the restore.

use super::resp;
use bytes::Bytes;
use ringraft::{Fsm, FsmError, FsmSnapshot};
use ringraft_storage::{Entry, EntryKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// A write the cluster replicates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `SET key value [NX|XX]`.
    Set {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Only if the key is absent.
        nx: bool,
        /// Only if the key is present.
        xx: bool,
    },
    /// `DEL key...`.
    Del {
        /// The keys.
        #[serde(with = "byte_strings")]
        keys: Vec<Vec<u8>>,
    },
    /// `INCRBY key by` (and `INCR`).
    IncrBy {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The increment.
        by: i64,
    },
    /// `CAS key expected new`.
    Cas {
        /// The key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The value it must hold.
        #[serde(with = "serde_bytes")]
        expected: Vec<u8>,
        /// The value written if it does.
        #[serde(with = "serde_bytes")]
        new: Vec<u8>,
    },
    /// Records a member's addresses (before `RAFT.ADD` changes the configuration).
    Member {
        /// The node.
        id: u64,
        /// Its raft transport address.
        raft: String,
        /// Its client (RESP) address.
        client: String,
    },
}

/// The version byte before every command entry and snapshot of this service. Not 1 to 5:
/// those bytes began the commands of the hand-written format before this one (its tags), and
/// `R` began its snapshots, so data of that format is refused as an unknown version instead of
/// misread.
pub const FORMAT_VERSION: u8 = 16;

/// Deepest MessagePack nesting a command or snapshot needs, with room.
const MAX_DEPTH: usize = 16;

/// Why bytes are not a command entry or snapshot of this service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// No bytes at all.
    Empty,
    /// The version byte is not [`FORMAT_VERSION`].
    UnknownVersion {
        /// The byte found.
        version: u8,
    },
    /// The MessagePack body does not decode.
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::Empty => write!(f, "empty"),
            FormatError::UnknownVersion { version } => write!(
                f,
                "format version {version} is not supported (this build reads {FORMAT_VERSION})"
            ),
            FormatError::Malformed { reason } => write!(f, "malformed: {reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// The version byte checked and the MessagePack value after it decoded, from `source` (which
/// must end right after the value).
fn decode_versioned<T: DeserializeOwned>(mut source: impl Read) -> Result<T, FormatError> {
    let mut version = [0u8; 1];
    match source.read(&mut version) {
        Ok(0) => return Err(FormatError::Empty),
        Ok(_) => {}
        Err(e) => {
            return Err(FormatError::Malformed {
                reason: e.to_string(),
            })
        }
    }
    if version[0] != FORMAT_VERSION {
        return Err(FormatError::UnknownVersion {
            version: version[0],
        });
    }
    let malformed = |reason: String| FormatError::Malformed { reason };
    // rmp-serde's reader grows a string's buffer as bytes arrive, never to a declared length.
    let mut deserializer = rmp_serde::Deserializer::new(&mut source);
    deserializer.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut deserializer).map_err(|e| malformed(e.to_string()))?;
    match source.read(&mut version) {
        Ok(0) => Ok(value),
        Ok(_) => Err(malformed("bytes after the value".into())),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// `value` as the version byte then MessagePack, into `sink`.
fn encode_versioned<T: Serialize>(value: &T, sink: &mut dyn Write) -> std::io::Result<()> {
    sink.write_all(&[FORMAT_VERSION])?;
    rmp_serde::encode::write(sink, value).map_err(std::io::Error::other)
}

/// Serde for lists of byte strings as MessagePack `bin`s (`serde_bytes` covers one).
mod byte_strings {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    pub fn serialize<S: Serializer>(list: &[Vec<u8>], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(|b| Bytes::new(b)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<ByteBuf>::deserialize(deserializer)?;
        Ok(list.into_iter().map(ByteBuf::into_vec).collect())
    }
}

impl Command {
    /// The entry bytes: [`FORMAT_VERSION`], then MessagePack.
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(32);
        // Writing into a Vec fails only on a bug in the encoder; such a command would be
        // refused by every replica's decoder, never misapplied.
        if let Err(e) = encode_versioned(self, &mut out) {
            debug_assert!(false, "encoding a command: {e}");
        }
        Bytes::from(out)
    }

    /// Decodes entry bytes.
    pub fn decode(data: &[u8]) -> Result<Command, FormatError> {
        decode_versioned(data)
    }
}

/// A member's addresses, as the replicated directory records them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft transport address.
    pub raft: String,
    /// Client (RESP) address.
    pub client: String,
}

/// The replicated state.
#[derive(Clone, Debug, Default)]
pub struct KvState {
    /// The key-value pairs.
    pub data: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The member directory.
    pub members: BTreeMap<u64, Member>,
}

impl KvState {
    /// Applies `command`; returns the RESP reply.
    pub fn apply(&mut self, command: Command) -> Vec<u8> {
        match command {
            Command::Set { key, value, nx, xx } => {
                let present = self.data.contains_key(&key);
                if (nx && present) || (xx && !present) {
                    return resp::bulk(None);
                }
                self.data.insert(key, value);
                resp::simple("OK")
            }
            Command::Del { keys } => {
                let removed = keys
                    .iter()
                    .filter(|k| self.data.remove(k.as_slice()).is_some())
                    .count();
                resp::integer(removed as i64)
            }
            Command::IncrBy { key, by } => {
                let current = match self.data.get(&key) {
                    None => 0,
                    Some(v) => match std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()) {
                        Some(n) => n,
                        None => return resp::error("ERR value is not an integer or out of range"),
                    },
                };
                let Some(next) = i64::checked_add(current, by) else {
                    return resp::error("ERR increment or decrement would overflow");
                };
                self.data.insert(key, next.to_string().into_bytes());
                resp::integer(next)
            }
            Command::Cas { key, expected, new } => {
                if self.data.get(&key) == Some(&expected) {
                    self.data.insert(key, new);
                    resp::integer(1)
                } else {
                    resp::integer(0)
                }
            }
            Command::Member { id, raft, client } => {
                self.members.insert(id, Member { raft, client });
                resp::simple("OK")
            }
        }
    }

    fn encode(&self, sink: &mut dyn Write) -> std::io::Result<()> {
        encode_versioned(
            &SnapshotOut {
                members: &self.members,
                data: &self.data,
            },
            sink,
        )
    }

    fn decode(source: &mut dyn Read) -> Result<KvState, FormatError> {
        let snapshot: SnapshotIn = decode_versioned(source)?;
        Ok(KvState {
            data: snapshot
                .data
                .into_iter()
                .map(|(k, v)| (k.into_vec(), v.into_vec()))
                .collect(),
            members: snapshot.members,
        })
    }
}

/// A snapshot as it is written (borrowing the state).
#[derive(Serialize)]
struct SnapshotOut<'a> {
    members: &'a BTreeMap<u64, Member>,
    #[serde(serialize_with = "bytes_map")]
    data: &'a BTreeMap<Vec<u8>, Vec<u8>>,
}

/// A snapshot as it is read.
#[derive(Deserialize)]
struct SnapshotIn {
    members: BTreeMap<u64, Member>,
    data: BTreeMap<ByteBuf, ByteBuf>,
}

fn bytes_map<S: serde::Serializer>(
    map: &&BTreeMap<Vec<u8>, Vec<u8>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_map(
        map.iter()
            .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))),
    )
}

/// Applies one entry to `state`; returns the RESP reply.
fn apply_entry(state: &mut KvState, entry: &Entry) -> Bytes {
    if entry.kind != EntryKind::Command {
        return Bytes::new();
    }
    match Command::decode(&entry.data) {
        Ok(command) => Bytes::from(state.apply(command)),
        Err(e) => Bytes::from(resp::error(&format!("ERR command entry: {e}"))),
    }
}

/// The state shared by the apply thread (writes) and the client server (reads).
#[derive(Clone, Default)]
pub struct SharedState(Arc<Mutex<KvState>>);

impl SharedState {
    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, KvState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The [`Fsm`] the node runs.
pub struct KvFsm {
    state: SharedState,
}

impl KvFsm {
    /// A state machine over `state`.
    pub fn new(state: SharedState) -> KvFsm {
        KvFsm { state }
    }
}

impl Fsm for KvFsm {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        apply_entry(&mut self.state.lock(), entry)
    }

    /// One lock for a batch of entries (a pipelined client's writes arrive together).
    fn apply_batch(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        let mut state = self.state.lock();
        entries.iter().map(|e| apply_entry(&mut state, e)).collect()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(KvSnapshot(self.state.lock().clone())))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let restored =
            KvState::decode(snapshot).map_err(|e| format!("ringraft-kv snapshot: {e}"))?;
        *self.state.lock() = restored;
        Ok(())
    }
}

struct KvSnapshot(KvState);

impl FsmSnapshot for KvSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(self.0.encode(sink)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_round_trip_and_garbage_does_not_decode() {
        let commands = [
            Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                nx: true,
                xx: false,
            },
            Command::Del {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
            },
            Command::IncrBy {
                key: b"n".to_vec(),
                by: -7,
            },
            Command::Cas {
                key: b"k".to_vec(),
                expected: b"1".to_vec(),
                new: b"2".to_vec(),
            },
            Command::Member {
                id: 4,
                raft: "127.0.0.1:1".into(),
                client: "127.0.0.1:2".into(),
            },
        ];
        for c in commands {
            let bytes = c.encode();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(Command::decode(&bytes), Ok(c));
            for cut in 0..bytes.len() {
                assert!(Command::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut long = bytes.to_vec();
            long.push(0xc0);
            assert_eq!(
                Command::decode(&long),
                Err(FormatError::Malformed {
                    reason: "bytes after the value".into()
                })
            );
        }
        assert_eq!(Command::decode(&[]), Err(FormatError::Empty));
        // A SET of the hand-written format before MessagePack: tag 1, three arguments.
        let old = [
            1u8, 3, 0, 0, 0, 1, 0, 0, 0, b'k', 1, 0, 0, 0, b'v', 1, 0, 0, 0, 0,
        ];
        assert_eq!(
            Command::decode(&old),
            Err(FormatError::UnknownVersion { version: 1 })
        );
        // {"Del": [[bin of 4 GiB]]} with nothing after the length: an error, not an allocation.
        let mut huge = vec![
            FORMAT_VERSION,
            0x81,
            0xa3,
            b'D',
            b'e',
            b'l',
            0x91,
            0x91,
            0xc6,
        ];
        huge.extend_from_slice(&[0xff; 4]);
        assert!(matches!(
            Command::decode(&huge),
            Err(FormatError::Malformed { .. })
        ));
        // Deep nesting is refused, not recursed into.
        let mut deep = vec![FORMAT_VERSION];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        assert!(matches!(
            Command::decode(&deep),
            Err(FormatError::Malformed { .. })
        ));
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..12)
    }

    fn command() -> impl Strategy<Value = Command> {
        prop_oneof![
            (bytes(), bytes(), any::<bool>(), any::<bool>())
                .prop_map(|(key, value, nx, xx)| Command::Set { key, value, nx, xx }),
            proptest::collection::vec(bytes(), 0..4).prop_map(|keys| Command::Del { keys }),
            (bytes(), any::<i64>()).prop_map(|(key, by)| Command::IncrBy { key, by }),
            (bytes(), bytes(), bytes()).prop_map(|(key, expected, new)| Command::Cas {
                key,
                expected,
                new
            }),
            (any::<u64>(), ".{0,8}", ".{0,8}").prop_map(|(id, raft, client)| Command::Member {
                id,
                raft,
                client
            }),
        ]
    }

    proptest! {
        #[test]
        fn commands_round_trip(c in command()) {
            prop_assert_eq!(Command::decode(&c.encode()), Ok(c));
        }

        #[test]
        fn random_bytes_are_a_command_or_a_typed_error(
            version in prop_oneof![Just(FORMAT_VERSION), any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut data = vec![version];
            data.extend_from_slice(&body);
            // Never panics; whatever decodes encodes back to the same command.
            if let Ok(c) = Command::decode(&data) {
                prop_assert_eq!(Command::decode(&c.encode()), Ok(c));
            }
        }

        #[test]
        fn damaged_commands_are_a_command_or_a_typed_error(
            c in command(),
            at in any::<usize>(),
            xor in 1..=255u8,
        ) {
            let mut data = c.encode().to_vec();
            let at = at % data.len();
            data[at] ^= xor;
            if let Ok(c) = Command::decode(&data) {
                prop_assert_eq!(Command::decode(&c.encode()), Ok(c));
            }
        }

        #[test]
        fn snapshots_round_trip_and_random_bytes_are_a_typed_error(
            commands in proptest::collection::vec(command(), 0..16),
            noise in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut state = KvState::default();
            for c in commands {
                state.apply(c);
            }
            let mut bytes = Vec::new();
            state.encode(&mut bytes).expect("encode");
            let back = KvState::decode(&mut bytes.as_slice()).expect("decode");
            prop_assert_eq!(&back.data, &state.data);
            prop_assert_eq!(&back.members, &state.members);
            let mut noisy = vec![FORMAT_VERSION];
            noisy.extend_from_slice(&noise);
            let _ = KvState::decode(&mut noisy.as_slice());
            let _ = KvState::decode(&mut noise.as_slice());
        }
    }

    #[test]
    fn state_machine_semantics_and_snapshot_round_trip() {
        let mut s = KvState::default();
        let set = |nx, xx| Command::Set {
            key: b"k".to_vec(),
            value: b"5".to_vec(),
            nx,
            xx,
        };
        assert_eq!(s.apply(set(false, true)), resp::bulk(None));
        assert_eq!(s.apply(set(true, false)), resp::simple("OK"));
        assert_eq!(s.apply(set(true, false)), resp::bulk(None));
        let incr = Command::IncrBy {
            key: b"k".to_vec(),
            by: 2,
        };
        assert_eq!(s.apply(incr), resp::integer(7));
        let cas = |e: &[u8]| Command::Cas {
            key: b"k".to_vec(),
            expected: e.to_vec(),
            new: b"x".to_vec(),
        };
        assert_eq!(s.apply(cas(b"6")), resp::integer(0));
        assert_eq!(s.apply(cas(b"7")), resp::integer(1));
        let incr = Command::IncrBy {
            key: b"k".to_vec(),
            by: 1,
        };
        assert!(s.apply(incr).starts_with(b"-ERR"));
        let mut bytes = Vec::new();
        s.encode(&mut bytes).expect("encode");
        let back = KvState::decode(&mut bytes.as_slice()).expect("decode");
        assert_eq!(back.data, s.data);
        for cut in 0..bytes.len() {
            assert!(KvState::decode(&mut &bytes[..cut]).is_err());
        }
        // A snapshot of the hand-written format before MessagePack began with "RKV1".
        assert_eq!(
            KvState::decode(&mut &b"RKV1\0\0\0\0\0\0\0\0"[..]).map(|_| ()),
            Err(FormatError::UnknownVersion { version: b'R' })
        );
    }
}
