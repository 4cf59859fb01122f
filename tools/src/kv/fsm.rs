//! The replicated state machine: a byte-string key-value map plus the cluster's member
//! directory (node id → raft and client addresses), so that every node, including ones that
//! joined later, knows where to forward a client and where to dial a peer.
//!
//! A command entry is `tag: u8` followed by `count: u32` length-prefixed (`u32`, little-endian)
//! arguments. [`KvFsm::apply`] answers with the RESP reply the client will see, computed on the
//! apply thread, so every replica computes the same reply for the same entry (an `INCR` on a
//! non-integer is an `-ERR` reply on every replica, not a failed entry).
//!
//! Snapshot format (little-endian): `"RKV1"`, member count `u64`, each member (`id: u64`,
//! raft address, client address as length-prefixed strings), pair count `u64`, each pair (key,
//! value as length-prefixed bytes).

use super::resp;
use bytes::Bytes;
use ringraft::{Fsm, FsmError, FsmSnapshot};
use ringraft_storage::{Entry, EntryKind};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

/// A write the cluster replicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `SET key value [NX|XX]`.
    Set {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Only if the key is absent.
        nx: bool,
        /// Only if the key is present.
        xx: bool,
    },
    /// `DEL key...`.
    Del {
        /// The keys.
        keys: Vec<Vec<u8>>,
    },
    /// `INCRBY key by` (and `INCR`).
    IncrBy {
        /// The key.
        key: Vec<u8>,
        /// The increment.
        by: i64,
    },
    /// `CAS key expected new`.
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value it must hold.
        expected: Vec<u8>,
        /// The value written if it does.
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

const TAG_SET: u8 = 1;
const TAG_DEL: u8 = 2;
const TAG_INCRBY: u8 = 3;
const TAG_CAS: u8 = 4;
const TAG_MEMBER: u8 = 5;

impl Command {
    /// The entry bytes.
    pub fn encode(&self) -> Bytes {
        let flags = |nx: bool, xx: bool| vec![u8::from(nx) | (u8::from(xx) << 1)];
        let (tag, args): (u8, Vec<Vec<u8>>) = match self {
            Command::Set { key, value, nx, xx } => {
                (TAG_SET, vec![key.clone(), value.clone(), flags(*nx, *xx)])
            }
            Command::Del { keys } => (TAG_DEL, keys.clone()),
            Command::IncrBy { key, by } => (TAG_INCRBY, vec![key.clone(), by.to_le_bytes().into()]),
            Command::Cas { key, expected, new } => {
                (TAG_CAS, vec![key.clone(), expected.clone(), new.clone()])
            }
            Command::Member { id, raft, client } => (
                TAG_MEMBER,
                vec![
                    id.to_le_bytes().into(),
                    raft.clone().into_bytes(),
                    client.clone().into_bytes(),
                ],
            ),
        };
        let mut out = vec![tag];
        out.extend_from_slice(&(args.len() as u32).to_le_bytes());
        for a in &args {
            out.extend_from_slice(&(a.len() as u32).to_le_bytes());
            out.extend_from_slice(a);
        }
        Bytes::from(out)
    }

    /// Decodes entry bytes; `None` if they are not a valid command.
    pub fn decode(data: &[u8]) -> Option<Command> {
        let (&tag, mut rest) = data.split_first()?;
        let count = take_u32(&mut rest)? as usize;
        let mut args = Vec::with_capacity(count.min(rest.len() / 4));
        for _ in 0..count {
            let len = take_u32(&mut rest)? as usize;
            if rest.len() < len {
                return None;
            }
            let (a, r) = rest.split_at(len);
            args.push(a.to_vec());
            rest = r;
        }
        if !rest.is_empty() {
            return None;
        }
        let eight = |a: &[u8]| -> Option<[u8; 8]> { a.try_into().ok() };
        let text = |a: Vec<u8>| String::from_utf8(a).ok();
        let mut it = args.into_iter();
        let command = match (tag, count) {
            (TAG_SET, 3) => {
                let (key, value) = (it.next()?, it.next()?);
                let flags = *it.next()?.first()?;
                Command::Set {
                    key,
                    value,
                    nx: flags & 1 != 0,
                    xx: flags & 2 != 0,
                }
            }
            (TAG_DEL, _) => Command::Del { keys: it.collect() },
            (TAG_INCRBY, 2) => Command::IncrBy {
                key: it.next()?,
                by: i64::from_le_bytes(eight(&it.next()?)?),
            },
            (TAG_CAS, 3) => Command::Cas {
                key: it.next()?,
                expected: it.next()?,
                new: it.next()?,
            },
            (TAG_MEMBER, 3) => Command::Member {
                id: u64::from_le_bytes(eight(&it.next()?)?),
                raft: text(it.next()?)?,
                client: text(it.next()?)?,
            },
            _ => return None,
        };
        Some(command)
    }
}

fn take_u32(rest: &mut &[u8]) -> Option<u32> {
    let (head, tail) = rest.split_at_checked(4)?;
    *rest = tail;
    Some(u32::from_le_bytes(head.try_into().ok()?))
}

/// A member's addresses, as the replicated directory records them.
#[derive(Clone, Debug, PartialEq, Eq)]
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
        let bytes = |sink: &mut dyn Write, b: &[u8]| -> std::io::Result<()> {
            sink.write_all(&(b.len() as u64).to_le_bytes())?;
            sink.write_all(b)
        };
        sink.write_all(b"RKV1")?;
        sink.write_all(&(self.members.len() as u64).to_le_bytes())?;
        for (id, m) in &self.members {
            sink.write_all(&id.to_le_bytes())?;
            bytes(sink, m.raft.as_bytes())?;
            bytes(sink, m.client.as_bytes())?;
        }
        sink.write_all(&(self.data.len() as u64).to_le_bytes())?;
        for (k, v) in &self.data {
            bytes(sink, k)?;
            bytes(sink, v)?;
        }
        Ok(())
    }

    fn decode(source: &mut dyn Read) -> Result<KvState, FsmError> {
        fn word(source: &mut dyn Read) -> Result<u64, FsmError> {
            let mut b = [0u8; 8];
            source.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn bytes(source: &mut dyn Read) -> Result<Vec<u8>, FsmError> {
            let len = word(source)?;
            if len > resp::MAX_BULK_BYTES as u64 {
                return Err(format!("snapshot: length {len} too large").into());
            }
            let mut b = vec![0u8; len as usize];
            source.read_exact(&mut b)?;
            Ok(b)
        }
        let mut magic = [0u8; 4];
        source.read_exact(&mut magic)?;
        if &magic != b"RKV1" {
            return Err("snapshot: not a ringraft-kv snapshot".into());
        }
        let mut state = KvState::default();
        for _ in 0..word(source)? {
            let id = word(source)?;
            let raft = String::from_utf8(bytes(source)?)?;
            let client = String::from_utf8(bytes(source)?)?;
            state.members.insert(id, Member { raft, client });
        }
        for _ in 0..word(source)? {
            let k = bytes(source)?;
            let v = bytes(source)?;
            state.data.insert(k, v);
        }
        Ok(state)
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
        if entry.kind != EntryKind::Command {
            return Bytes::new();
        }
        let Some(command) = Command::decode(&entry.data) else {
            return Bytes::from(resp::error("ERR undecodable command entry"));
        };
        Bytes::from(self.state.lock().apply(command))
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(KvSnapshot(self.state.lock().clone())))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let restored = KvState::decode(snapshot)?;
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
            assert_eq!(Command::decode(&bytes), Some(c));
            for cut in 0..bytes.len() {
                assert_eq!(Command::decode(&bytes[..cut]), None);
            }
        }
        assert_eq!(Command::decode(&[9, 0, 0, 0, 0]), None);
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
    }
}
