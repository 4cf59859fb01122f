//! Cluster configurations and their versioned binary encoding.
//!
//! A configuration is carried in the log as an entry of kind
//! [`EntryKind::Configuration`](crate::EntryKind::Configuration) and in snapshot metadata.
//! [`Configuration::encode`] writes a version byte, then MessagePack (through `serde` and
//! `rmp-serde`, as hashicorp encodes its configurations):
//!
//! ```text
//! version: u8 (= 2)
//! MessagePack array of servers, each the array [id: uint, address: str, suffrage: uint]
//!   (suffrage 1 voter, 2 non-voter)
//! ```
//!
//! [`Configuration::decode`] also reads version 1, the fixed little-endian layout that earlier
//! builds wrote (`count: u32`, then per server `id: u64, suffrage: u8, address_len: u32,
//! address`), so logs and snapshots written before the change still open; the version byte
//! tells the two apart. Any other version, and any malformed body, is a typed
//! [`ConfigurationError`]: the core decodes configurations that arrive from the network, so the
//! decoder never panics and reads from a borrowed slice (a declared length longer than the
//! input is an error before anything is allocated for it). docs/ARCHITECTURE.md §12 lists every
//! on-disk and wire format.

use crate::types::NodeId;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

/// Whether a server's vote counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Suffrage {
    /// Votes in elections and counts toward commit and read quorums.
    Voter,
    /// Receives the log but never votes, campaigns or counts toward any quorum.
    Nonvoter,
}

/// One member of a configuration.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    /// The server's id; never 0.
    pub id: NodeId,
    /// Where the server's Raft transport listens (opaque to the core).
    pub address: String,
    /// Voter or non-voter.
    pub suffrage: Suffrage,
}

impl Server {
    /// A voting server.
    pub fn voter(id: NodeId, address: impl Into<String>) -> Server {
        Server {
            id,
            address: address.into(),
            suffrage: Suffrage::Voter,
        }
    }

    /// A non-voting server.
    pub fn nonvoter(id: NodeId, address: impl Into<String>) -> Server {
        Server {
            id,
            address: address.into(),
            suffrage: Suffrage::Nonvoter,
        }
    }
}

/// The set of servers in the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Configuration {
    /// Members, in the order they were added.
    pub servers: Vec<Server>,
}

/// Why a configuration is invalid or could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigurationError {
    /// A server has id 0.
    EmptyId,
    /// A server has an empty address.
    EmptyAddress {
        /// The server.
        id: NodeId,
    },
    /// Two servers share an id.
    DuplicateId {
        /// The repeated id.
        id: NodeId,
    },
    /// Two servers share an address.
    DuplicateAddress {
        /// The repeated address.
        address: String,
    },
    /// No server is a voter.
    NoVoters,
    /// The encoding's version byte is not one this build understands.
    UnknownVersion {
        /// The version found.
        version: u8,
    },
    /// The encoding ends before its declared contents.
    Truncated,
    /// An unknown suffrage code.
    UnknownSuffrage {
        /// The code found.
        code: u8,
    },
    /// An address is not valid UTF-8.
    AddressNotUtf8,
    /// Bytes remain after the declared contents.
    TrailingBytes,
    /// The MessagePack body does not decode as a configuration.
    Malformed {
        /// What the decoder found wrong.
        reason: String,
    },
}

impl fmt::Display for ConfigurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigurationError::EmptyId => write!(f, "configuration has a server with id 0"),
            ConfigurationError::EmptyAddress { id } => {
                write!(f, "configuration server {id} has an empty address")
            }
            ConfigurationError::DuplicateId { id } => {
                write!(f, "configuration lists server id {id} twice")
            }
            ConfigurationError::DuplicateAddress { address } => {
                write!(f, "configuration lists address {address:?} twice")
            }
            ConfigurationError::NoVoters => write!(f, "configuration has no voters"),
            ConfigurationError::UnknownVersion { version } => {
                write!(
                    f,
                    "configuration encoding version {version} is not supported"
                )
            }
            ConfigurationError::Truncated => write!(f, "configuration encoding is truncated"),
            ConfigurationError::UnknownSuffrage { code } => {
                write!(f, "configuration has unknown suffrage code {code}")
            }
            ConfigurationError::AddressNotUtf8 => {
                write!(f, "configuration has an address that is not UTF-8")
            }
            ConfigurationError::TrailingBytes => {
                write!(f, "configuration encoding has trailing bytes")
            }
            ConfigurationError::Malformed { reason } => {
                write!(f, "configuration encoding is malformed: {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigurationError {}

/// The fixed little-endian layout of earlier builds: still decoded, never written.
const LEGACY_VERSION: u8 = 1;
/// The version byte before a MessagePack configuration.
const ENCODING_VERSION: u8 = 2;
/// Nesting a configuration needs (array of arrays), with room; deeper input is malformed.
const MAX_DEPTH: usize = 8;

/// One server as MessagePack carries it (a struct of its own, so that the public types carry
/// no serde implementations and the format cannot change by accident).
#[derive(Serialize, Deserialize)]
pub(crate) struct WireServer<'a> {
    id: u64,
    address: Cow<'a, str>,
    suffrage: u8,
}

impl Configuration {
    /// The servers as the MessagePack body carries them (also inside snapshot metadata).
    pub(crate) fn to_wire(&self) -> Vec<WireServer<'_>> {
        self.servers
            .iter()
            .map(|s| WireServer {
                id: s.id.0,
                address: Cow::Borrowed(&s.address),
                suffrage: match s.suffrage {
                    Suffrage::Voter => 1,
                    Suffrage::Nonvoter => 2,
                },
            })
            .collect()
    }

    /// The configuration a MessagePack body carried.
    pub(crate) fn from_wire(servers: Vec<WireServer<'_>>) -> Result<Self, ConfigurationError> {
        let servers = servers
            .into_iter()
            .map(|s| {
                let suffrage = match s.suffrage {
                    1 => Suffrage::Voter,
                    2 => Suffrage::Nonvoter,
                    code => return Err(ConfigurationError::UnknownSuffrage { code }),
                };
                Ok(Server {
                    id: NodeId(s.id),
                    address: s.address.into_owned(),
                    suffrage,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Configuration { servers })
    }
}

/// Decodes one MessagePack value that must fill `bytes` exactly. A declared length beyond the
/// input fails without being allocated (rmp-serde reads strings as far as the input goes),
/// and nesting deeper than [`MAX_DEPTH`] fails instead of recursing.
pub(crate) fn from_msgpack<T: DeserializeOwned>(mut bytes: &[u8]) -> Result<T, String> {
    let mut deserializer = rmp_serde::Deserializer::new(&mut bytes);
    deserializer.set_max_depth(MAX_DEPTH);
    let value = T::deserialize(&mut deserializer).map_err(|e| e.to_string())?;
    let rest = deserializer.get_ref().len();
    if rest != 0 {
        return Err(format!("{rest} bytes after the value"));
    }
    Ok(value)
}

/// MessagePack of `value` appended to `out`.
pub(crate) fn to_msgpack<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // Writing our own plain structs into a Vec cannot fail (no maps with non-string keys, no
    // I/O): an error here would be a bug in this module, kept from panicking all the same.
    if let Err(e) = rmp_serde::encode::write(out, value) {
        debug_assert!(false, "MessagePack encoding failed: {e}");
    }
}

impl Configuration {
    /// A configuration of the given servers (not validated; see [`Configuration::validate`]).
    pub fn new(servers: Vec<Server>) -> Configuration {
        Configuration { servers }
    }

    /// A configuration where every id in `ids` is a voter at address `"n<id>"`.
    pub fn voters_with_default_addresses(ids: impl IntoIterator<Item = NodeId>) -> Configuration {
        Configuration::new(
            ids.into_iter()
                .map(|id| Server::voter(id, format!("n{}", id.0)))
                .collect(),
        )
    }

    /// Checks hashicorp's rules: non-empty ids and addresses, no duplicate id or address, at
    /// least one voter.
    pub fn validate(&self) -> Result<(), ConfigurationError> {
        let mut ids = BTreeSet::new();
        let mut addresses = BTreeSet::new();
        for server in &self.servers {
            if server.id.0 == 0 {
                return Err(ConfigurationError::EmptyId);
            }
            if server.address.is_empty() {
                return Err(ConfigurationError::EmptyAddress { id: server.id });
            }
            if !ids.insert(server.id) {
                return Err(ConfigurationError::DuplicateId { id: server.id });
            }
            if !addresses.insert(server.address.as_str()) {
                return Err(ConfigurationError::DuplicateAddress {
                    address: server.address.clone(),
                });
            }
        }
        if self.voters().next().is_none() {
            return Err(ConfigurationError::NoVoters);
        }
        Ok(())
    }

    /// The voters' ids, in configuration order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.servers
            .iter()
            .filter(|s| s.suffrage == Suffrage::Voter)
            .map(|s| s.id)
    }

    /// Every member's id, in configuration order.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.servers.iter().map(|s| s.id)
    }

    /// The member with this id.
    pub fn server(&self, id: NodeId) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// True if `id` is a voter here.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.server(id)
            .is_some_and(|s| s.suffrage == Suffrage::Voter)
    }

    /// Encodes the configuration (version 2, see the module docs).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::with_capacity(
            2 + self
                .servers
                .iter()
                .map(|s| 16 + s.address.len())
                .sum::<usize>(),
        );
        out.push(ENCODING_VERSION);
        to_msgpack(&self.to_wire(), &mut out);
        Bytes::from(out)
    }

    /// Decodes an encoded configuration of version 2 or of the legacy version 1. Never panics
    /// and never allocates more than the input can justify; every malformation is a typed
    /// error. Does not validate (see [`Configuration::validate`]).
    pub fn decode(bytes: &[u8]) -> Result<Configuration, ConfigurationError> {
        let Some((&version, body)) = bytes.split_first() else {
            return Err(ConfigurationError::Truncated);
        };
        match version {
            ENCODING_VERSION => {
                let servers: Vec<WireServer<'static>> = from_msgpack(body)
                    .map_err(|reason| ConfigurationError::Malformed { reason })?;
                Configuration::from_wire(servers)
            }
            LEGACY_VERSION => Configuration::decode_legacy(body),
            version => Err(ConfigurationError::UnknownVersion { version }),
        }
    }

    /// The body of a version 1 configuration (the layout in the module docs).
    fn decode_legacy(mut bytes: &[u8]) -> Result<Configuration, ConfigurationError> {
        fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], ConfigurationError> {
            if bytes.len() < n {
                return Err(ConfigurationError::Truncated);
            }
            let (head, tail) = bytes.split_at(n);
            *bytes = tail;
            Ok(head)
        }
        fn u32_le(bytes: &mut &[u8]) -> Result<u32, ConfigurationError> {
            let b = take(bytes, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        }
        let count = u32_le(&mut bytes)? as usize;
        // Each server takes at least 13 bytes: bound the allocation by the input.
        if count > bytes.len() / 13 {
            return Err(ConfigurationError::Truncated);
        }
        let mut servers = Vec::with_capacity(count);
        for _ in 0..count {
            let id = take(&mut bytes, 8)?;
            let mut id_bytes = [0u8; 8];
            id_bytes.copy_from_slice(id);
            let suffrage = match take(&mut bytes, 1)?[0] {
                1 => Suffrage::Voter,
                2 => Suffrage::Nonvoter,
                code => return Err(ConfigurationError::UnknownSuffrage { code }),
            };
            let len = u32_le(&mut bytes)? as usize;
            let address = std::str::from_utf8(take(&mut bytes, len)?)
                .map_err(|_| ConfigurationError::AddressNotUtf8)?;
            servers.push(Server {
                id: NodeId(u64::from_le_bytes(id_bytes)),
                address: address.to_owned(),
                suffrage,
            });
        }
        if !bytes.is_empty() {
            return Err(ConfigurationError::TrailingBytes);
        }
        Ok(Configuration { servers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Configuration {
        Configuration::new(vec![
            Server::voter(NodeId(1), "a:1"),
            Server::voter(NodeId(2), "a:2"),
            Server::nonvoter(NodeId(3), "a:3"),
        ])
    }

    #[test]
    fn configurations_round_trip_through_the_encoding() {
        let c = three();
        assert_eq!(Configuration::decode(&c.encode()), Ok(c));
        let empty = Configuration::default();
        assert_eq!(Configuration::decode(&empty.encode()), Ok(empty));
    }

    /// `three()` in the version 1 layout, as builds before the MessagePack format wrote it.
    fn three_legacy() -> Vec<u8> {
        let mut v = vec![1u8, 3, 0, 0, 0];
        for (id, suffrage, address) in [(1u64, 1u8, "a:1"), (2, 1, "a:2"), (3, 2, "a:3")] {
            v.extend_from_slice(&id.to_le_bytes());
            v.push(suffrage);
            v.extend_from_slice(&(address.len() as u32).to_le_bytes());
            v.extend_from_slice(address.as_bytes());
        }
        v
    }

    #[test]
    fn the_encoding_is_a_version_byte_then_messagepack() {
        let c = Configuration::new(vec![Server::voter(NodeId(1), "a")]);
        // 2, array(1) of array(3) [1, "a", 1].
        assert_eq!(&c.encode()[..], &[2, 0x91, 0x93, 1, 0xa1, b'a', 1]);
    }

    #[test]
    fn version_1_configurations_still_decode() {
        let legacy = three_legacy();
        assert_eq!(Configuration::decode(&legacy), Ok(three()));
        for cut in 0..legacy.len() {
            assert!(
                Configuration::decode(&legacy[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = legacy.clone();
        bad[13] = 7;
        assert_eq!(
            Configuration::decode(&bad),
            Err(ConfigurationError::UnknownSuffrage { code: 7 })
        );
        let mut long = legacy;
        long.push(0);
        assert_eq!(
            Configuration::decode(&long),
            Err(ConfigurationError::TrailingBytes)
        );
        // A huge count with no bodies must not allocate for the count.
        let huge = [1u8, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Configuration::decode(&huge),
            Err(ConfigurationError::Truncated)
        );
    }

    #[test]
    fn every_truncation_and_corruption_is_a_typed_error() {
        let bytes = three().encode();
        for cut in 0..bytes.len() {
            assert!(
                Configuration::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        for version in [0u8, 3, 9, 255] {
            let mut bad = bytes.to_vec();
            bad[0] = version;
            assert_eq!(
                Configuration::decode(&bad),
                Err(ConfigurationError::UnknownVersion { version })
            );
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(matches!(
            Configuration::decode(&long),
            Err(ConfigurationError::Malformed { .. })
        ));
        // [[1, "a", 7]]: suffrage 7.
        let bad = [2u8, 0x91, 0x93, 1, 0xa1, b'a', 7];
        assert_eq!(
            Configuration::decode(&bad),
            Err(ConfigurationError::UnknownSuffrage { code: 7 })
        );
        // An array claiming 2^32 - 1 servers, and a string claiming 4 GiB, with nothing after.
        for huge in [
            &[2u8, 0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[2, 0x91, 0x93, 1, 0xdb, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(matches!(
                Configuration::decode(huge),
                Err(ConfigurationError::Malformed { .. })
            ));
        }
        // Deep nesting is refused, not recursed into.
        let mut deep = vec![2u8];
        deep.extend(std::iter::repeat_n(0x91, 100_000));
        assert!(matches!(
            Configuration::decode(&deep),
            Err(ConfigurationError::Malformed { .. })
        ));
    }

    use proptest::prelude::{any, Just};

    proptest::proptest! {
        #[test]
        fn random_bytes_decode_to_a_value_or_a_typed_error(
            version in proptest::prop_oneof![Just(2u8), Just(1u8), any::<u8>()],
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![version];
            bytes.extend_from_slice(&body);
            // Never panics; a value that decodes encodes back to a value equal to it.
            if let Ok(c) = Configuration::decode(&bytes) {
                proptest::prop_assert_eq!(Configuration::decode(&c.encode()), Ok(c));
            }
        }

        #[test]
        fn configurations_round_trip(
            servers in proptest::collection::vec(
                (any::<u64>(), ".{0,12}", any::<bool>()),
                0..8,
            ),
        ) {
            let c = Configuration::new(
                servers
                    .into_iter()
                    .map(|(id, address, voter)| Server {
                        id: NodeId(id),
                        address,
                        suffrage: if voter { Suffrage::Voter } else { Suffrage::Nonvoter },
                    })
                    .collect(),
            );
            proptest::prop_assert_eq!(Configuration::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn validation_names_each_rule() {
        assert_eq!(three().validate(), Ok(()));
        let mut c = three();
        c.servers[0].id = NodeId(0);
        assert_eq!(c.validate(), Err(ConfigurationError::EmptyId));
        let mut c = three();
        c.servers[1].address.clear();
        assert_eq!(
            c.validate(),
            Err(ConfigurationError::EmptyAddress { id: NodeId(2) })
        );
        let mut c = three();
        c.servers[1].id = NodeId(1);
        assert_eq!(
            c.validate(),
            Err(ConfigurationError::DuplicateId { id: NodeId(1) })
        );
        let mut c = three();
        c.servers[1].address = "a:1".into();
        assert_eq!(
            c.validate(),
            Err(ConfigurationError::DuplicateAddress {
                address: "a:1".into()
            })
        );
        let c = Configuration::new(vec![Server::nonvoter(NodeId(1), "x")]);
        assert_eq!(c.validate(), Err(ConfigurationError::NoVoters));
    }
}
