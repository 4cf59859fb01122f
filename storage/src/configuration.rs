//! Cluster configurations and their versioned binary encoding.
//!
//! A configuration is carried in the log as an entry of kind
//! [`EntryKind::Configuration`](crate::EntryKind::Configuration) and in snapshot metadata.
//! Encoding (little-endian):
//!
//! ```text
//! version: u8 (= 1)
//! count:   u32
//! count × { id: u64, suffrage: u8 (1 voter, 2 non-voter), address_len: u32, address: utf-8 }
//! ```
//!
//! The version byte lets the format evolve; a decoder rejects versions it does not know. Why
//! not MessagePack (as hashicorp and ARCHITECTURE §5 suggest): the core decodes configurations that
//! arrive from the network, and a fixed layout with explicit length checks is simpler to make
//! panic-free and allocation-bounded than a general serializer; nothing else needs the format.

use crate::types::NodeId;
use bytes::{BufMut, Bytes, BytesMut};
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
        }
    }
}

impl std::error::Error for ConfigurationError {}

const ENCODING_VERSION: u8 = 1;

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

    /// Encodes the configuration (see the module docs for the layout).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(
            5 + self
                .servers
                .iter()
                .map(|s| 13 + s.address.len())
                .sum::<usize>(),
        );
        out.put_u8(ENCODING_VERSION);
        out.put_u32_le(self.servers.len() as u32);
        for server in &self.servers {
            out.put_u64_le(server.id.0);
            out.put_u8(match server.suffrage {
                Suffrage::Voter => 1,
                Suffrage::Nonvoter => 2,
            });
            out.put_u32_le(server.address.len() as u32);
            out.put_slice(server.address.as_bytes());
        }
        out.freeze()
    }

    /// Decodes an encoded configuration. Never panics and never allocates more than the input
    /// can justify; every malformation is a typed error. Does not validate (see
    /// [`Configuration::validate`]).
    pub fn decode(mut bytes: &[u8]) -> Result<Configuration, ConfigurationError> {
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
        let version = take(&mut bytes, 1)?[0];
        if version != ENCODING_VERSION {
            return Err(ConfigurationError::UnknownVersion { version });
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

    #[test]
    fn every_truncation_and_corruption_is_a_typed_error() {
        let bytes = three().encode();
        for cut in 0..bytes.len() {
            assert!(
                Configuration::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut bad = bytes.to_vec();
        bad[0] = 9;
        assert_eq!(
            Configuration::decode(&bad),
            Err(ConfigurationError::UnknownVersion { version: 9 })
        );
        let mut bad = bytes.to_vec();
        bad[13] = 7;
        assert_eq!(
            Configuration::decode(&bad),
            Err(ConfigurationError::UnknownSuffrage { code: 7 })
        );
        let mut long = bytes.to_vec();
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
