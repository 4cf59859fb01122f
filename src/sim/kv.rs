//! The simulator's replicated state machine: a key-value map of `u64`s, with the command
//! encoding the simulated clients propose.

use super::linearizability::{KvOp, KvResult};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::BTreeMap;

/// Encodes `op` as a command (an op id keeps every command unique).
pub fn encode(op_id: u64, op: &KvOp) -> Bytes {
    let mut b = BytesMut::with_capacity(34);
    b.put_u64_le(op_id);
    match *op {
        KvOp::Put { key, value } => {
            b.put_u8(1);
            b.put_u64_le(key);
            b.put_u64_le(value);
        }
        KvOp::Get { key } => {
            b.put_u8(2);
            b.put_u64_le(key);
        }
        KvOp::Cas { key, expected, new } => {
            b.put_u8(3);
            b.put_u64_le(key);
            b.put_u8(u8::from(expected.is_some()));
            b.put_u64_le(expected.unwrap_or(0));
            b.put_u64_le(new);
        }
    }
    b.freeze()
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    let mut buf = [0u8; 8];
    buf.copy_from_slice(slice);
    Some(u64::from_le_bytes(buf))
}

/// Decodes a command; `None` for bytes that are not one.
pub fn decode(bytes: &[u8]) -> Option<(u64, KvOp)> {
    let op_id = u64_at(bytes, 0)?;
    let op = match *bytes.get(8)? {
        1 => KvOp::Put {
            key: u64_at(bytes, 9)?,
            value: u64_at(bytes, 17)?,
        },
        2 => KvOp::Get {
            key: u64_at(bytes, 9)?,
        },
        3 => KvOp::Cas {
            key: u64_at(bytes, 9)?,
            expected: (*bytes.get(17)? == 1).then_some(u64_at(bytes, 18)?),
            new: u64_at(bytes, 26)?,
        },
        _ => return None,
    };
    Some((op_id, op))
}

/// The key-value state machine. It also remembers each command's result by log index, so a
/// client waiting on a node that skipped ahead by installing a snapshot still gets its answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kv {
    map: BTreeMap<u64, u64>,
    results: BTreeMap<u64, (u64, KvResult)>,
}

impl Kv {
    /// Applies the command at `index` and returns its result.
    pub fn apply_at(&mut self, index: u64, op_id: u64, op: &KvOp) -> KvResult {
        let result = self.apply(op);
        self.results.insert(index, (op_id, result.clone()));
        result
    }

    /// The op id and result of the command applied at `index`.
    pub fn result_at(&self, index: u64) -> Option<&(u64, KvResult)> {
        self.results.get(&index)
    }

    /// Serializes the state (a snapshot's bytes).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u64_le(self.map.len() as u64);
        for (k, v) in &self.map {
            b.put_u64_le(*k);
            b.put_u64_le(*v);
        }
        b.put_u64_le(self.results.len() as u64);
        for (index, (op_id, result)) in &self.results {
            b.put_u64_le(*index);
            b.put_u64_le(*op_id);
            put_result(&mut b, result);
        }
        b.freeze()
    }

    /// Parses [`Kv::encode`]'s output; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Kv> {
        let mut at = 0usize;
        let mut next = |n: usize| -> Option<&[u8]> {
            let s = bytes.get(at..at + n)?;
            at += n;
            Some(s)
        };
        let word = |s: &[u8]| u64_at(s, 0);
        let mut kv = Kv::default();
        let entries = word(next(8)?)?;
        for _ in 0..entries {
            let k = word(next(8)?)?;
            let v = word(next(8)?)?;
            kv.map.insert(k, v);
        }
        let results = word(next(8)?)?;
        for _ in 0..results {
            let index = word(next(8)?)?;
            let op_id = word(next(8)?)?;
            let result = take_result(&mut next)?;
            kv.results.insert(index, (op_id, result));
        }
        (at == bytes.len()).then_some(kv)
    }

    /// Applies an operation and returns its result.
    pub fn apply(&mut self, op: &KvOp) -> KvResult {
        match *op {
            KvOp::Put { key, value } => {
                self.map.insert(key, value);
                KvResult::Written
            }
            KvOp::Get { key } => KvResult::Value(self.map.get(&key).copied()),
            KvOp::Cas { key, expected, new } => {
                let swapped = self.map.get(&key).copied() == expected;
                if swapped {
                    self.map.insert(key, new);
                }
                KvResult::Swapped(swapped)
            }
        }
    }

    /// Reads a key.
    pub fn get(&self, key: u64) -> Option<u64> {
        self.map.get(&key).copied()
    }
}

/// Appends a command's result (a tag byte, and the value for a read that found one).
pub(crate) fn put_result(b: &mut BytesMut, result: &KvResult) {
    match result {
        KvResult::Written => b.put_u8(0),
        KvResult::Value(None) => b.put_u8(1),
        KvResult::Value(Some(v)) => {
            b.put_u8(2);
            b.put_u64_le(*v);
        }
        KvResult::Swapped(s) => b.put_u8(3 + u8::from(*s)),
    }
}

/// Reads what [`put_result`] wrote, taking bytes from `next`; `None` if malformed.
pub(crate) fn take_result<'a>(
    next: &mut impl FnMut(usize) -> Option<&'a [u8]>,
) -> Option<KvResult> {
    Some(match next(1)?[0] {
        0 => KvResult::Written,
        1 => KvResult::Value(None),
        2 => KvResult::Value(Some(u64_at(next(8)?, 0)?)),
        3 => KvResult::Swapped(false),
        4 => KvResult::Swapped(true),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_rejected() {
        let ops = [
            KvOp::Put { key: 1, value: 2 },
            KvOp::Get { key: 3 },
            KvOp::Cas {
                key: 4,
                expected: None,
                new: 5,
            },
            KvOp::Cas {
                key: 4,
                expected: Some(6),
                new: 7,
            },
        ];
        for (i, op) in ops.iter().enumerate() {
            assert_eq!(decode(&encode(i as u64, op)), Some((i as u64, op.clone())));
        }
        assert_eq!(decode(b"short"), None);
        let mut kv = Kv::default();
        kv.apply_at(3, 9, &ops[0]);
        kv.apply_at(4, 10, &ops[3]);
        kv.apply_at(5, 11, &ops[1]);
        assert_eq!(Kv::decode(&kv.encode()), Some(kv.clone()));
        let bytes = kv.encode();
        for cut in 0..bytes.len() {
            assert_eq!(Kv::decode(&bytes[..cut]), None);
        }
        let mut bad = encode(1, &ops[0]).to_vec();
        bad[8] = 9;
        assert_eq!(decode(&bad), None);
    }
}
