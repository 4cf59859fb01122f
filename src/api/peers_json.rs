//! [`read_peers_json`]: hashicorp's `peers.json` (peersjson.go), used with
//! [`recover_cluster`](crate::recover_cluster) to force a configuration after losing quorum.
//!
//! Both of hashicorp's formats are read:
//!
//! ```text
//! legacy:  ["1", "2", "3"]                         every server a voter, its address = its id
//! current: [{"id": 1, "address": "10.0.0.1:8300", "non_voter": false}, ...]
//! ```
//!
//! ringraft's server ids are numbers ([`NodeId`]), so an `id` must be a JSON number or a string
//! of decimal digits (a legacy entry is both the id and the address, so it must be numeric
//! too); anything else is [`PeersJsonError::BadId`]. The parser is a small hand-written one for
//! these two shapes (any valid JSON value is tokenised; unknown object fields are ignored, as
//! Go's decoder does).

use ringraft_storage::{Configuration, ConfigurationError, NodeId, Server};
use std::fmt;
use std::path::Path;

/// Why [`read_peers_json`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeersJsonError {
    /// The file could not be read.
    Io(String),
    /// The file is not JSON, or not one of the two shapes.
    Syntax {
        /// Byte offset of the problem.
        offset: usize,
        /// What was expected.
        reason: &'static str,
    },
    /// A server id is neither a number nor a string of decimal digits (or is 0).
    BadId {
        /// The id as written.
        id: String,
    },
    /// The servers do not form a valid configuration (duplicates, no voter...).
    Invalid(ConfigurationError),
}

impl fmt::Display for PeersJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeersJsonError::Io(e) => write!(f, "cannot read peers.json: {e}"),
            PeersJsonError::Syntax { offset, reason } => {
                write!(f, "peers.json: {reason} at byte {offset}")
            }
            PeersJsonError::BadId { id } => {
                write!(f, "peers.json: server id {id:?} is not a non-zero number")
            }
            PeersJsonError::Invalid(e) => write!(f, "peers.json: {e}"),
        }
    }
}

impl std::error::Error for PeersJsonError {}

/// Reads a `peers.json` file in either of hashicorp's formats (hashicorp's `ReadPeersJSON`
/// and `ReadConfigJSON` in one) and validates the configuration it describes.
pub fn read_peers_json(path: impl AsRef<Path>) -> Result<Configuration, PeersJsonError> {
    let text =
        std::fs::read_to_string(path.as_ref()).map_err(|e| PeersJsonError::Io(e.to_string()))?;
    parse_peers_json(&text)
}

/// [`read_peers_json`] on the file's contents.
pub fn parse_peers_json(text: &str) -> Result<Configuration, PeersJsonError> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        at: 0,
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at != parser.bytes.len() {
        return Err(parser.error("trailing characters"));
    }
    let Json::Array(items) = value else {
        return Err(PeersJsonError::Syntax {
            offset: 0,
            reason: "expected an array of servers",
        });
    };
    let mut servers = Vec::with_capacity(items.len());
    for (item, offset) in items {
        servers.push(match item {
            Json::String(address) => Server::voter(parse_id(&address)?, address),
            Json::Object(fields) => server(fields, offset)?,
            _ => {
                return Err(PeersJsonError::Syntax {
                    offset,
                    reason: "expected a server address or object",
                })
            }
        });
    }
    let configuration = Configuration::new(servers);
    configuration.validate().map_err(PeersJsonError::Invalid)?;
    Ok(configuration)
}

fn server(fields: Vec<(String, Json)>, offset: usize) -> Result<Server, PeersJsonError> {
    let syntax = |reason| PeersJsonError::Syntax { offset, reason };
    let (mut id, mut address, mut non_voter) = (None, None, false);
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("id", Json::Number(n) | Json::String(n)) => id = Some(parse_id(&n)?),
            ("id", _) => return Err(syntax("\"id\" must be a number or a string")),
            ("address", Json::String(a)) => address = Some(a),
            ("address", _) => return Err(syntax("\"address\" must be a string")),
            ("non_voter", Json::Bool(b)) => non_voter = b,
            ("non_voter", Json::Null) => {}
            ("non_voter", _) => return Err(syntax("\"non_voter\" must be a boolean")),
            _ => {}
        }
    }
    let id = id.ok_or_else(|| syntax("server without \"id\""))?;
    let address = address.ok_or_else(|| syntax("server without \"address\""))?;
    Ok(if non_voter {
        Server::nonvoter(id, address)
    } else {
        Server::voter(id, address)
    })
}

fn parse_id(text: &str) -> Result<NodeId, PeersJsonError> {
    let bad = || PeersJsonError::BadId {
        id: text.to_string(),
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(id) => Ok(NodeId(id)),
    }
}

/// A JSON value; array items and objects keep the byte offset of each item for errors.
enum Json {
    Null,
    Bool(bool),
    /// The number as written (ids are compared as digits, never as floats).
    Number(String),
    String(String),
    Array(Vec<(Json, usize)>),
    Object(Vec<(String, Json)>),
}

/// Nesting deeper than this is refused (a stack guard; peers.json nests two levels).
const DEPTH_MAX: usize = 64;

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error(&self, reason: &'static str) -> PeersJsonError {
        PeersJsonError::Syntax {
            offset: self.at,
            reason,
        }
    }

    fn skip_whitespace(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    fn expect_literal(
        &mut self,
        literal: &'static str,
        value: Json,
    ) -> Result<Json, PeersJsonError> {
        if self.bytes[self.at..].starts_with(literal.as_bytes()) {
            self.at += literal.len();
            Ok(value)
        } else {
            Err(self.error("unknown literal"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, PeersJsonError> {
        if depth > DEPTH_MAX {
            return Err(self.error("nested too deeply"));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'[') => self.array(depth),
            Some(b'{') => self.object(depth),
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.expect_literal("true", Json::Bool(true)),
            Some(b'f') => self.expect_literal("false", Json::Bool(false)),
            Some(b'n') => self.expect_literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, PeersJsonError> {
        self.at += 1;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            let offset = self.at;
            items.push((self.value(depth + 1)?, offset));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, PeersJsonError> {
        self.at += 1;
        let mut fields = Vec::new();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Json::Object(fields));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a field name"));
            }
            let name = self.string()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected ':'"));
            }
            self.at += 1;
            fields.push((name, self.value(depth + 1)?));
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Json::Object(fields));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn number(&mut self) -> Result<Json, PeersJsonError> {
        let start = self.at;
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            self.at += 1;
        }
        // The slice is ASCII by construction.
        let text = String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned();
        Ok(Json::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, PeersJsonError> {
        let digits = self
            .bytes
            .get(self.at..self.at + 4)
            .ok_or_else(|| self.error("truncated \\u escape"))?;
        let text = std::str::from_utf8(digits).map_err(|_| self.error("bad \\u escape"))?;
        let code = u32::from_str_radix(text, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.at += 4;
        Ok(code)
    }

    fn string(&mut self) -> Result<String, PeersJsonError> {
        self.at += 1; // the opening quote
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(self.error("unterminated string"));
            };
            self.at += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.bytes.get(self.at) else {
                        return Err(self.error("unterminated string"));
                    };
                    self.at += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high)
                                && self.bytes[self.at..].starts_with(b"\\u")
                            {
                                self.at += 2;
                                let low = self.hex4()?;
                                0x10000
                                    + ((high - 0xD800) << 10)
                                    + (low.wrapping_sub(0xDC00) & 0x3FF)
                            } else {
                                high
                            };
                            char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        _ => return Err(self.error("bad escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                b if b < 0x20 => return Err(self.error("control character in string")),
                b => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_escapes_and_rejects_garbage() {
        let c =
            parse_peers_json(r#" [ {"id":"7","address":"a\"b\u00e9","extra":[1,{"x":null}]} ] "#)
                .expect("parse");
        assert_eq!(c.servers, vec![Server::voter(NodeId(7), "a\"bé")]);
        for bad in ["", "[", "[1,]", "{}", "[\"1\"] x", "[{\"id\":1}]", "[tru]"] {
            assert!(
                matches!(parse_peers_json(bad), Err(PeersJsonError::Syntax { .. })),
                "{bad:?}"
            );
        }
    }
}
