//! Command-line and config-file options of a `ringraft-kv` node.
//!
//! ```text
//! ringraft-kv --id N --client ADDR --raft ADDR --peers 1=RAFT/CLIENT,2=RAFT/CLIENT,...
//!             --data DIR [--join LEADER_CLIENT_ADDR] [--read-mode index|lease|stale]
//!             [--no-forward] [--election-timeout-ms MS] [--request-timeout-ms MS]
//!             [--wal-segment-mb MB] [--metrics ADDR] [--config FILE]
//! ```
//!
//! `--config FILE` reads the same settings from `key = value` lines (a TOML subset: strings in
//! double quotes, integers, `true`/`false`, `#` comments): `id`, `client`, `raft`, `peers`,
//! `data`, `join`, `read_mode`, `no_forward`, `election_timeout_ms`, `request_timeout_ms`,
//! `wal_segment_mb`, `metrics`.
//! Command-line flags override the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// ReadIndex: one quorum round per read (linearizable; the default).
    Index,
    /// Leader lease: no quorum round while the lease holds (linearizable given bounded drift).
    Lease,
    /// The local state as it is, on any node (may be stale).
    Stale,
}

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Node id.
    pub id: u64,
    /// Raft transport address.
    pub raft: SocketAddr,
    /// Client (RESP) address.
    pub client: SocketAddr,
}

/// A node's settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's id (never 0).
    pub id: u64,
    /// Where clients connect.
    pub client: SocketAddr,
    /// Where the raft transport listens.
    pub raft: SocketAddr,
    /// The initial members (bootstrapped the first time), and where they listen.
    pub peers: Vec<PeerSpec>,
    /// The data directory.
    pub data: PathBuf,
    /// Join through this leader's client address instead of bootstrapping.
    pub join: Option<String>,
    /// How reads are served.
    pub read_mode: ReadMode,
    /// Forward commands to the leader (else answer `-NOTLEADER`).
    pub forward: bool,
    /// Raft heartbeat and election timeout.
    pub election_timeout: Duration,
    /// How long a client request may wait for its outcome before `-UNKNOWN` / `-ERR`.
    pub request_timeout: Duration,
    /// Size of each WAL segment file (default 64 MiB). Small segments let a test fill a tiny
    /// file system quickly; the largest entry is limited to a quarter of a segment.
    pub wal_segment_size_bytes: u64,
    /// Serve Prometheus text metrics at `GET /metrics` on this address.
    pub metrics: Option<SocketAddr>,
}

/// The usage line.
pub const USAGE: &str = "usage: ringraft-kv --id N --client ADDR --raft ADDR \
--peers 1=RAFT/CLIENT,... --data DIR [--join LEADER_CLIENT_ADDR] [--read-mode index|lease|stale] \
[--no-forward] [--election-timeout-ms MS] [--request-timeout-ms MS] [--wal-segment-mb MB] \
[--metrics ADDR] [--config FILE]\n       \
ringraft-kv local [--nodes N] [--dir DIR]";

#[derive(Default)]
struct Raw {
    id: Option<String>,
    client: Option<String>,
    raft: Option<String>,
    peers: Option<String>,
    data: Option<String>,
    join: Option<String>,
    read_mode: Option<String>,
    no_forward: Option<String>,
    election_timeout_ms: Option<String>,
    request_timeout_ms: Option<String>,
    wal_segment_mb: Option<String>,
    metrics: Option<String>,
}

impl Raw {
    fn set(&mut self, key: &str, value: String) -> Result<(), String> {
        let slot = match key {
            "id" => &mut self.id,
            "client" => &mut self.client,
            "raft" => &mut self.raft,
            "peers" => &mut self.peers,
            "data" => &mut self.data,
            "join" => &mut self.join,
            "read_mode" | "read-mode" => &mut self.read_mode,
            "no_forward" | "no-forward" => &mut self.no_forward,
            "election_timeout_ms" | "election-timeout-ms" => &mut self.election_timeout_ms,
            "request_timeout_ms" | "request-timeout-ms" => &mut self.request_timeout_ms,
            "wal_segment_mb" | "wal-segment-mb" => &mut self.wal_segment_mb,
            "metrics" => &mut self.metrics,
            other => return Err(format!("unknown setting {other}")),
        };
        *slot = Some(value);
        Ok(())
    }
}

/// Parses `key = value` lines (see the module docs).
fn parse_config_file(text: &str, raw: &mut Raw) -> Result<(), String> {
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected key = value", n + 1));
        };
        let value = value.trim();
        let value = if let Some(quoted) = value.strip_prefix('"') {
            match quoted.split_once('"') {
                Some((inner, rest)) if rest.trim().is_empty() || rest.trim().starts_with('#') => {
                    inner.to_string()
                }
                _ => return Err(format!("line {}: unterminated string", n + 1)),
            }
        } else {
            value
                .split('#')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        raw.set(key.trim(), value)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
    }
    Ok(())
}

/// Parses `1=RAFT/CLIENT,2=RAFT/CLIENT`.
pub fn parse_peers(text: &str) -> Result<Vec<PeerSpec>, String> {
    let mut peers = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || format!("--peers: expected ID=RAFTADDR/CLIENTADDR, got {item}");
        let (id, addresses) = item.split_once('=').ok_or_else(bad)?;
        let (raft, client) = addresses.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || peers.iter().any(|p: &PeerSpec| p.id == id) {
            return Err(format!("--peers: id {id} is zero or repeated"));
        }
        peers.push(PeerSpec {
            id,
            raft: raft.trim().parse().map_err(|_| bad())?,
            client: client.trim().parse().map_err(|_| bad())?,
        });
    }
    Ok(peers)
}

fn address(name: &str, v: Option<String>) -> Result<SocketAddr, String> {
    let v = v.ok_or_else(|| format!("--{name} is required"))?;
    v.parse().map_err(|e| format!("--{name} {v}: {e}"))
}

fn millis(name: &str, v: Option<String>, default: u64) -> Result<Duration, String> {
    match v {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .parse()
            .map(Duration::from_millis)
            .map_err(|e| format!("--{name} {v}: {e}")),
    }
}

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut raw = Raw::default();
        let mut flags = Raw::default();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--no-forward" {
                flags.no_forward = Some("true".into());
                continue;
            }
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a}"));
            };
            let value = it.next().ok_or_else(|| format!("{a} needs a value"))?;
            if name == "config" {
                let text =
                    std::fs::read_to_string(&value).map_err(|e| format!("reading {value}: {e}"))?;
                parse_config_file(&text, &mut raw).map_err(|e| format!("{value}: {e}"))?;
            } else {
                flags.set(name, value)?;
            }
        }
        // Flags override the file.
        macro_rules! merge {
            ($($f:ident),*) => { $( if flags.$f.is_some() { raw.$f = flags.$f.take(); } )* };
        }
        merge!(
            id,
            client,
            raft,
            peers,
            data,
            join,
            read_mode,
            no_forward,
            election_timeout_ms,
            request_timeout_ms,
            wal_segment_mb,
            metrics
        );
        let id_text = raw.id.ok_or("--id is required")?;
        let id: u64 = id_text
            .parse()
            .map_err(|e| format!("--id {id_text}: {e}"))?;
        if id == 0 {
            return Err("--id must not be 0".into());
        }
        let peers = parse_peers(raw.peers.as_deref().unwrap_or_default())?;
        let read_mode = match raw.read_mode.as_deref().unwrap_or("index") {
            "index" => ReadMode::Index,
            "lease" => ReadMode::Lease,
            "stale" => ReadMode::Stale,
            other => {
                return Err(format!(
                    "--read-mode {other}: expected index, lease or stale"
                ))
            }
        };
        let forward = match raw.no_forward.as_deref() {
            None | Some("false") => true,
            Some("true") => false,
            Some(other) => return Err(format!("no_forward {other}: expected true or false")),
        };
        let wal_segment_mb: u64 = match raw.wal_segment_mb.as_deref() {
            None => 64,
            Some(v) => match v.parse() {
                Ok(mb) if (1..=4095).contains(&mb) => mb,
                _ => return Err(format!("--wal-segment-mb {v}: expected 1 to 4095")),
            },
        };
        let options = Options {
            id,
            client: address("client", raw.client)?,
            raft: address("raft", raw.raft)?,
            peers,
            data: PathBuf::from(raw.data.ok_or("--data is required")?),
            join: raw.join,
            read_mode,
            forward,
            election_timeout: millis("election-timeout-ms", raw.election_timeout_ms, 500)?,
            request_timeout: millis("request-timeout-ms", raw.request_timeout_ms, 10_000)?,
            wal_segment_size_bytes: wal_segment_mb << 20,
            metrics: match raw.metrics {
                None => None,
                Some(v) => Some(address("metrics", Some(v))?),
            },
        };
        if options.join.is_none() && !options.peers.iter().any(|p| p.id == id) {
            return Err("--peers must list this node (or use --join)".into());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_parse_and_override_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "# node 1\nid = 1\nclient = \"127.0.0.1:6001\"\nraft = \"127.0.0.1:7001\" # raft\n\
             peers = \"1=127.0.0.1:7001/127.0.0.1:6001\"\ndata = \"/tmp/x\"\nno_forward = true\n\
             metrics = \"127.0.0.1:9100\"\n",
        )
        .expect("write");
        let o = Options::parse(strings(&[
            "--config",
            file.to_str().expect("utf-8"),
            "--client",
            "127.0.0.1:6002",
            "--read-mode",
            "lease",
        ]))
        .expect("valid");
        assert_eq!(o.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(o.id, 1);
        assert_eq!(o.client, "127.0.0.1:6002".parse().expect("addr"));
        assert_eq!(o.peers.len(), 1);
        assert_eq!(o.read_mode, ReadMode::Lease);
        assert!(!o.forward);
        assert!(Options::parse(strings(&["--id", "0"])).is_err());
        assert!(parse_peers("1=a/b").is_err());
        assert!(parse_peers("1=127.0.0.1:1/127.0.0.1:2,1=127.0.0.1:1/127.0.0.1:2").is_err());
    }
}
