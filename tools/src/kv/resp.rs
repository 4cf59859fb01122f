//! RESP2 (the Redis serialization protocol, version 2): parsing requests and encoding replies.
//!
//! A request is either an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what every
//! client library sends) or an *inline* command (`GET k\r\n`, what a person types into
//! `telnet`). [`parse_request`] takes the bytes received so far and returns a whole request,
//! "need more bytes", or a [`ProtocolError`]; it never panics and never allocates more than
//! the request's declared sizes, which are bounded by [`MAX_ARGS`] and [`MAX_BULK_BYTES`]
//! before anything is reserved.

use std::fmt;

/// Most arguments in one request.
pub const MAX_ARGS: usize = 1024 * 1024;
/// Largest bulk string in a request (Redis allows 512 MiB; an example service needs less).
pub const MAX_BULK_BYTES: usize = 64 * 1024 * 1024;
/// Longest inline command or header line.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A request's arguments (the command name first).
pub type Request = Vec<Vec<u8>>;

/// A parsed request and the bytes it used, `None` if more bytes are needed, or an error.
pub type Parsed = Result<Option<(Request, usize)>, ProtocolError>;

/// Why a request could not be parsed. The connection it came on should answer `-ERR` and close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// The position just past the next `\r\n` at or after `from`, and the line before it.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, ProtocolError> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > MAX_LINE_BYTES => protocol("line too long"),
        Some(end) => Ok(Some((&rest[..end], from + end + 2))),
        None if rest.len() > MAX_LINE_BYTES => protocol("line too long"),
        None => Ok(None),
    }
}

fn number(digits: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .map_or_else(|| protocol(format!("invalid {what} length")), Ok)
}

/// Parses one request from the front of `buf`: `Ok(Some((args, consumed)))` when a whole one
/// is there, `Ok(None)` when more bytes are needed. An empty inline line yields no arguments.
pub fn parse_request(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf),
        Some(_) => parse_inline(buf),
    }
}

fn parse_array(buf: &[u8]) -> Parsed {
    let Some((header, mut at)) = line(buf, 1)? else {
        return Ok(None);
    };
    let count = number(header, "multibulk")?;
    if count <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > MAX_ARGS {
        return protocol("invalid multibulk length");
    }
    // Reserve only what the bytes present could hold: a header claiming a million arguments
    // must not allocate before they arrive.
    let mut args = Vec::with_capacity(count.min(buf.len() / 4 + 1));
    for _ in 0..count {
        match buf.get(at) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(&b) => {
                return protocol(format!(
                    "expected '$', got '{}'",
                    char::from(b).escape_default()
                ))
            }
        }
        let Some((header, start)) = line(buf, at + 1)? else {
            return Ok(None);
        };
        let len = number(header, "bulk")?;
        let len = usize::try_from(len).map_or_else(|_| protocol("invalid bulk length"), Ok)?;
        if len > MAX_BULK_BYTES {
            return protocol("invalid bulk length");
        }
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return protocol("bulk string not terminated by CRLF");
        }
        args.push(buf[start..end].to_vec());
        at = end + 2;
    }
    Ok(Some((args, at)))
}

fn parse_inline(buf: &[u8]) -> Parsed {
    // Inline commands may end in a bare `\n` (netcat without -C).
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > MAX_LINE_BYTES {
            return protocol("inline command too long");
        }
        return Ok(None);
    };
    if end > MAX_LINE_BYTES {
        return protocol("inline command too long");
    }
    let text = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let args = split_inline(text)?;
    Ok(Some((args, end + 1)))
}

/// Splits an inline command into words; double quotes group words and allow `\"`, `\\`,
/// `\n`, `\r`, `\t`; single quotes group words literally.
fn split_inline(text: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < text.len() {
        while i < text.len() && text[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == text.len() {
            break;
        }
        let mut word = Vec::new();
        match text[i] {
            quote @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    let Some(&c) = text.get(i) else {
                        return protocol("unbalanced quotes in request");
                    };
                    i += 1;
                    if c == quote {
                        break;
                    }
                    if c == b'\\' && quote == b'"' {
                        let Some(&e) = text.get(i) else {
                            return protocol("unbalanced quotes in request");
                        };
                        i += 1;
                        word.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        word.push(c);
                    }
                }
                if text.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return protocol("closing quote must be followed by a space");
                }
            }
            _ => {
                while i < text.len() && !text[i].is_ascii_whitespace() {
                    word.push(text[i]);
                    i += 1;
                }
            }
        }
        args.push(word);
    }
    Ok(args)
}

/// Encodes a request as a RESP array of bulk strings.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        bulk_into(&mut out, a.as_ref());
    }
    out
}

fn bulk_into(out: &mut Vec<u8>, value: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", value.len()).as_bytes());
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `+text\r\n` (text must not contain CR or LF; they are replaced by spaces).
pub fn simple(text: &str) -> Vec<u8> {
    line_reply(b'+', text)
}

/// `-text\r\n`: an error reply (CR and LF are replaced by spaces).
pub fn error(text: &str) -> Vec<u8> {
    line_reply(b'-', text)
}

fn line_reply(kind: u8, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
    out
}

/// `:n\r\n`.
pub fn integer(n: i64) -> Vec<u8> {
    format!(":{n}\r\n").into_bytes()
}

/// A bulk string, or the null bulk string for `None`.
pub fn bulk(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        None => b"$-1\r\n".to_vec(),
        Some(v) => {
            let mut out = Vec::with_capacity(v.len() + 16);
            bulk_into(&mut out, v);
            out
        }
    }
}

/// An array of bulk strings (null elements for `None`).
pub fn bulk_array(values: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", values.len()).into_bytes();
    for v in values {
        out.extend_from_slice(&bulk(v.as_deref()));
    }
    out
}

/// A reply as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...` (the text after the dash).
    Error(String),
    /// `:n`.
    Integer(i64),
    /// `$n` or the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n` or the null array.
    Array(Option<Vec<Reply>>),
}

/// Parses one reply from the front of `buf` (`Ok(None)`: need more bytes).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_reply_at(buf, 0, 0)
}

fn parse_reply_at(
    buf: &[u8],
    at: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > 32 {
        return protocol("reply nested too deeply");
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some((text, next)) = line(buf, at + 1)? else {
        return Ok(None);
    };
    let text_str = || String::from_utf8_lossy(text).into_owned();
    match kind {
        b'+' => Ok(Some((Reply::Simple(text_str()), next))),
        b'-' => Ok(Some((Reply::Error(text_str()), next))),
        b':' => Ok(Some((Reply::Integer(number(text, "integer")?), next))),
        b'$' => {
            let len = number(text, "bulk")?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), next)));
            }
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_BULK_BYTES {
                return protocol("invalid bulk length");
            }
            if buf.len() < next + len + 2 {
                return Ok(None);
            }
            let value = buf[next..next + len].to_vec();
            Ok(Some((Reply::Bulk(Some(value)), next + len + 2)))
        }
        b'*' => {
            let count = number(text, "multibulk")?;
            if count < 0 {
                return Ok(Some((Reply::Array(None), next)));
            }
            let count = usize::try_from(count).unwrap_or(usize::MAX);
            if count > MAX_ARGS {
                return protocol("invalid multibulk length");
            }
            let mut items = Vec::with_capacity(count.min(1024));
            let mut at = next;
            for _ in 0..count {
                match parse_reply_at(buf, at, depth + 1)? {
                    None => return Ok(None),
                    Some((item, after)) => {
                        items.push(item);
                        at = after;
                    }
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => protocol(format!(
            "unknown reply type '{}'",
            char::from(other).escape_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn arrays_and_inline_commands_parse_and_partial_input_waits() {
        let req = encode_request(&["SET", "k", "v"]);
        assert_eq!(
            parse_request(&req),
            Ok(Some((args(&["SET", "k", "v"]), req.len())))
        );
        for cut in 0..req.len() {
            assert_eq!(parse_request(&req[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_request(b"get  \"a b\" 'c\\n'\r\nrest"),
            Ok(Some((args(&["get", "a b", "c\\n"]), 18)))
        );
        assert_eq!(parse_request(b"PING\n"), Ok(Some((args(&["PING"]), 5))));
        assert_eq!(parse_request(b"\r\n"), Ok(Some((vec![], 2))));
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            b"*x\r\n",
            b"*2\r\n:1\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$999999999999\r\n",
            b"*99999999999\r\n",
            b"*1\r\n$1\r\nab\r\n",
            b"get \"unterminated\r\n",
            b"get \"a\"b\r\n",
        ];
        for b in bad {
            assert!(
                parse_request(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
        assert!(parse_request(&vec![b'a'; MAX_LINE_BYTES + 10]).is_err());
    }

    #[test]
    fn every_prefix_and_mutation_of_a_request_parses_without_panicking() {
        let req = encode_request(&["MGET", "a", "bb", "ccc"]);
        for i in 0..req.len() {
            for b in [0u8, b'\r', b'\n', b'*', b'$', b'-', b'9', 0xff] {
                let mut m = req.clone();
                m[i] = b;
                let _ = parse_request(&m);
                let _ = parse_reply(&m);
            }
        }
    }

    #[test]
    fn replies_round_trip() {
        let mut buf = simple("OK");
        buf.extend(error("ERR no\r\nway"));
        buf.extend(integer(-3));
        buf.extend(bulk(None));
        buf.extend(bulk_array(&[Some(b"x".to_vec()), None]));
        let mut at = 0;
        let mut got = Vec::new();
        while let Some((r, n)) = parse_reply(&buf[at..]).expect("valid") {
            got.push(r);
            at += n;
        }
        assert_eq!(
            got,
            vec![
                Reply::Simple("OK".into()),
                Reply::Error("ERR no  way".into()),
                Reply::Integer(-3),
                Reply::Bulk(None),
                Reply::Array(Some(vec![
                    Reply::Bulk(Some(b"x".to_vec())),
                    Reply::Bulk(None)
                ])),
            ]
        );
    }
}
