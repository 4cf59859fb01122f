//! Command-line and config-file options of a `ringraft-kv` node.
//!
//! ```text
//! ringraft-kv --id N --client HOST:PORT --raft HOST:PORT --peers 1=RAFT/CLIENT,2=RAFT/CLIENT,...
//!             --data DIR [--join LEADER_CLIENT_ADDR] [--config FILE] [...]
//! ringraft-kv local [--nodes N] [--dir DIR]
//! ```
//!
//! One struct, [`Settings`], serves the flags and the `--config FILE` (TOML, parsed by `serde`):
//! a file key is the flag's name with `_` for `-` (`read_mode = "lease"`,
//! `election_timeout_ms = 300`, `peers = "1=127.0.0.1:7001/127.0.0.1:6001"` or a list of such
//! entries). An unknown key is an error naming it and its line. Flags and the `RINGRAFT_*`
//! environment variables (`RINGRAFT_CONFIG` names the file; `RINGRAFT_LOG`,
//! `RINGRAFT_LOG_FORMAT`) override the file. `ringraft-kv --help` lists every option with its
//! default.
//!
//! Addresses may name hosts (`localhost:6001`): they are resolved once, at start, and a name
//! that does not resolve stops the node with an error naming the flag. A node refuses to start
//! when its own `--peers` entry disagrees with `--raft` (or `--advertise-raft`) or `--client`:
//! the cluster would dial, and clients be redirected to, an address the node does not serve.

use super::logs::{LogFormat, LogSettings};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
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

/// Default `--election-timeout-ms`.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 500;
/// Default `--request-timeout-ms`.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 10_000;
/// Default `--wal-segment-mb`.
pub const DEFAULT_WAL_SEGMENT_MB: u64 = 64;

/// `ringraft-kv`'s command line.
#[derive(Debug, Parser)]
#[command(
    name = "ringraft-kv",
    version,
    about = "An example replicated key-value service on ringraft, speaking RESP (redis-cli, \
             redis-benchmark).",
    after_help = "Settings come from the flags, then RINGRAFT_* environment variables, then \
                  --config FILE (TOML; a key is the flag's name with '_' for '-').",
    args_conflicts_with_subcommands = true,
    args_override_self = true
)]
pub struct Cli {
    /// `local`, or none to run a node.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Read settings from this TOML file (keys as the flags, '_' for '-'); flags and
    /// environment variables override it.
    #[arg(long, value_name = "FILE", env = "RINGRAFT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The node's settings.
    #[command(flatten)]
    pub settings: Settings,
}

/// `ringraft-kv`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local cluster of child processes on free loopback ports until Ctrl-C.
    Local(super::local::LocalArgs),
}

/// A node's settings as given, by flags or in the config file: every field optional, so that
/// a flag overrides the file ([`Settings::or`]); defaults apply afterwards
/// ([`Settings::resolve`]).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// This node's id (not 0). Required.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub id: Option<u64>,
    /// Where clients connect (RESP), HOST:PORT; a host name is resolved at start. Required.
    #[arg(long, value_name = "HOST:PORT")]
    pub client: Option<String>,
    /// Where the raft transport listens, HOST:PORT. Required.
    #[arg(long, value_name = "HOST:PORT")]
    pub raft: Option<String>,
    /// The raft address peers dial, when not --raft (a proxy in front of the node); this
    /// node's --peers entry must name it. [default: --raft]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise_raft: Option<String>,
    /// The initial members, bootstrapped the first time: ID=RAFT/CLIENT,... including this
    /// node, whose entry must match --raft and --client. Required unless --join.
    #[arg(long, value_name = "ID=RAFT/CLIENT,...")]
    pub peers: Option<PeerList>,
    /// The data directory (WAL, stable store, snapshots). Required.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Join a running cluster through a member's client address instead of bootstrapping.
    #[arg(long, value_name = "HOST:PORT")]
    pub join: Option<String>,
    /// How reads are served: index (ReadIndex, a quorum round per read), lease (no round
    /// while the leader lease holds) or stale (local state, any node). [default: index]
    #[arg(long, value_name = "MODE")]
    #[serde(alias = "read-mode")]
    pub read_mode: Option<ReadMode>,
    /// Answer -NOTLEADER on a follower instead of forwarding commands to the leader.
    #[arg(long)]
    #[serde(default, alias = "no-forward")]
    pub no_forward: bool,
    /// Raft heartbeat, election and lease timeout, in milliseconds. [default: 500]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "election-timeout-ms")]
    pub election_timeout_ms: Option<u64>,
    /// How long a client request may wait for its outcome before -UNKNOWN or -ERR, in
    /// milliseconds. [default: 10000]
    #[arg(long, value_name = "MS")]
    #[serde(alias = "request-timeout-ms")]
    pub request_timeout_ms: Option<u64>,
    /// Size of each WAL segment file in MiB, 1 to 4095; the largest entry is a quarter of a
    /// segment. [default: 64]
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..=4095))]
    #[serde(alias = "wal-segment-mb")]
    pub wal_segment_mb: Option<u64>,
    /// Log entries since the latest snapshot that trigger an automatic snapshot.
    /// [default: 8192]
    #[arg(long, value_name = "N")]
    pub snapshot_threshold: Option<u64>,
    /// How often (randomised up to twice) to check whether to snapshot, in milliseconds.
    /// [default: 120000]
    #[arg(long, value_name = "MS")]
    pub snapshot_interval_ms: Option<u64>,
    /// Log entries kept behind a snapshot, so slightly-behind followers catch up from the
    /// log. [default: 10240]
    #[arg(long, value_name = "N")]
    pub trailing_logs: Option<u64>,
    /// Serve Prometheus text metrics at GET /metrics on this address (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
    /// Which logs to print: a level (off, error, warn, info, debug, trace) or filter
    /// directives such as info,ringraft::core=debug. [default: info]
    #[arg(long, value_name = "FILTER", env = "RINGRAFT_LOG")]
    pub log_level: Option<String>,
    /// Log lines as text or as JSON objects, one per line. [default: text]
    #[arg(long, value_name = "FORMAT", env = "RINGRAFT_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// `--peers`: `ID=RAFT/CLIENT` entries, comma-separated on the command line; in the config
/// file, either such a string or a list of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "PeerListRepr")]
pub struct PeerList(pub Vec<String>);

#[derive(Deserialize)]
#[serde(untagged)]
enum PeerListRepr {
    Text(String),
    List(Vec<String>),
}

impl From<PeerListRepr> for PeerList {
    fn from(repr: PeerListRepr) -> PeerList {
        match repr {
            PeerListRepr::Text(text) => PeerList::split(&text),
            PeerListRepr::List(items) => PeerList(items),
        }
    }
}

impl PeerList {
    /// The comma-separated entries of `text`.
    pub fn split(text: &str) -> PeerList {
        PeerList(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        )
    }
}

impl std::str::FromStr for PeerList {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<PeerList, Self::Err> {
        Ok(PeerList::split(text))
    }
}

/// A node's settings, resolved: defaults applied, host names looked up, checked.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's id (never 0).
    pub id: u64,
    /// Where clients connect.
    pub client: SocketAddr,
    /// Where the raft transport listens.
    pub raft: SocketAddr,
    /// The raft address peers dial (`raft` unless `--advertise-raft`).
    pub advertise_raft: SocketAddr,
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
    /// Log entries since the latest snapshot that trigger an automatic snapshot.
    pub snapshot_threshold: u64,
    /// How often to check whether to snapshot.
    pub snapshot_interval: Duration,
    /// Log entries kept behind a snapshot.
    pub trailing_logs: u64,
    /// Serve Prometheus text metrics at `GET /metrics` on this address.
    pub metrics: Option<SocketAddr>,
    /// What to log and how.
    pub log: LogSettings,
}

/// Resolves `HOST:PORT` (or `IP:PORT`) given to `--flag` to its first address.
pub fn resolve(flag: &str, text: &str) -> Result<SocketAddr, String> {
    let mut addresses = text.trim().to_socket_addrs().map_err(|e| {
        format!("--{flag} {text}: cannot resolve (expected HOST:PORT or IP:PORT): {e}")
    })?;
    addresses
        .next()
        .ok_or_else(|| format!("--{flag} {text}: the name resolves to no address"))
}

/// Parses and resolves `ID=RAFT/CLIENT` entries.
pub fn parse_peers(entries: &[String]) -> Result<Vec<PeerSpec>, String> {
    let mut peers: Vec<PeerSpec> = Vec::new();
    for item in entries {
        let bad = || format!("--peers: expected ID=RAFT/CLIENT, got {item}");
        let (id, addresses) = item.split_once('=').ok_or_else(bad)?;
        let (raft, client) = addresses.split_once('/').ok_or_else(bad)?;
        let id: u64 = id.trim().parse().map_err(|_| bad())?;
        if id == 0 || peers.iter().any(|p| p.id == id) {
            return Err(format!("--peers: id {id} is zero or repeated"));
        }
        let entry = |what: &str, text: &str| {
            resolve("peers", text).map_err(|e| format!("{e} (the {what} address of node {id})"))
        };
        peers.push(PeerSpec {
            id,
            raft: entry("raft", raft)?,
            client: entry("client", client)?,
        });
    }
    Ok(peers)
}

/// Field by field, the first of two [`Settings`] that has the field set.
macro_rules! first_set {
    ($a:ident, $b:ident; $($field:ident),*) => {
        Settings {
            $( $field: $a.$field.or($b.$field), )*
            no_forward: $a.no_forward || $b.no_forward,
        }
    };
}

impl Settings {
    /// These settings, with `fallback`'s where these have none (flags over the file).
    pub fn or(self, fallback: Settings) -> Settings {
        first_set!(self, fallback; id, client, raft, advertise_raft, peers, data, join,
            read_mode, election_timeout_ms, request_timeout_ms, wal_segment_mb,
            snapshot_threshold, snapshot_interval_ms, trailing_logs, metrics, log_level,
            log_format)
    }

    /// Reads a TOML config file: every key must be a setting.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        Settings::from_toml(&text).map_err(|e| format!("--config {}: {e}", path.display()))
    }

    /// Parses TOML text (see [`Settings::from_file`]); the error names the line.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Applies the defaults, resolves the addresses and checks the whole.
    pub fn resolve(self) -> Result<Options, String> {
        let required = |flag: &str| format!("--{flag} is required (or `{flag}` in --config)");
        let id = self.id.ok_or_else(|| required("id"))?;
        if id == 0 {
            return Err("--id must not be 0".into());
        }
        let address = |flag: &str, v: Option<&String>| -> Result<SocketAddr, String> {
            resolve(flag, v.ok_or_else(|| required(flag))?)
        };
        let client = address("client", self.client.as_ref())?;
        let raft = address("raft", self.raft.as_ref())?;
        let advertise_raft = match &self.advertise_raft {
            Some(text) => resolve("advertise-raft", text)?,
            None => raft,
        };
        let peers = parse_peers(&self.peers.unwrap_or_default().0)?;
        let config = ringraft::Config::new(ringraft_storage::NodeId(id));
        let options = Options {
            id,
            client,
            raft,
            advertise_raft,
            peers,
            data: self.data.ok_or_else(|| required("data"))?,
            join: self.join,
            read_mode: self.read_mode.unwrap_or(ReadMode::Index),
            forward: !self.no_forward,
            election_timeout: Duration::from_millis(
                self.election_timeout_ms
                    .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS),
            ),
            request_timeout: Duration::from_millis(
                self.request_timeout_ms
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            ),
            wal_segment_size_bytes: match self.wal_segment_mb.unwrap_or(DEFAULT_WAL_SEGMENT_MB) {
                mb @ 1..=4095 => mb << 20,
                mb => return Err(format!("--wal-segment-mb {mb}: expected 1 to 4095")),
            },
            snapshot_threshold: self.snapshot_threshold.unwrap_or(config.snapshot_threshold),
            snapshot_interval: self
                .snapshot_interval_ms
                .map_or(config.snapshot_interval, Duration::from_millis),
            trailing_logs: self.trailing_logs.unwrap_or(config.trailing_logs),
            metrics: match &self.metrics {
                Some(text) => Some(resolve("metrics", text)?),
                None => None,
            },
            log: LogSettings {
                filter: self.log_level.unwrap_or_else(|| "info".into()),
                format: self.log_format.unwrap_or_default(),
            },
        };
        options.check_own_entry()?;
        Ok(options)
    }
}

impl Options {
    /// Parses a node's arguments (after the program name), reading `--config` if given.
    pub fn parse<I, S>(args: I) -> Result<Options, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let cli = Cli::try_parse_from(
            std::iter::once("ringraft-kv".into()).chain(args.into_iter().map(Into::into)),
        )
        .map_err(|e| e.to_string().trim_end().to_string())?;
        if cli.command.is_some() {
            return Err("expected a node's flags, not a subcommand".into());
        }
        Options::from_cli(cli.config.as_deref(), cli.settings)
    }

    /// The options from the flags and, under them, the config file.
    pub fn from_cli(config: Option<&Path>, flags: Settings) -> Result<Options, String> {
        let file = match config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        flags.or(file).resolve()
    }

    /// A bootstrapping node must be in `--peers`, and its entry must name the addresses it
    /// serves: peers would otherwise dial, and redirect clients to, somewhere else.
    fn check_own_entry(&self) -> Result<(), String> {
        let Some(own) = self.peers.iter().find(|p| p.id == self.id) else {
            return match self.join {
                Some(_) => Ok(()),
                None => Err(format!(
                    "--peers must list this node (id {}), or use --join",
                    self.id
                )),
            };
        };
        let raft_flag = if self.advertise_raft == self.raft {
            "--raft"
        } else {
            "--advertise-raft"
        };
        if own.raft != self.advertise_raft {
            return Err(format!(
                "--peers gives node {} the raft address {}, but {raft_flag} is {}: refusing to \
                 start with an address peers cannot reach",
                self.id, own.raft, self.advertise_raft
            ));
        }
        if own.client != self.client {
            return Err(format!(
                "--peers gives node {} the client address {}, but --client is {}: refusing to \
                 start with an address clients would be sent to in vain",
                self.id, own.client, self.client
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    const NODE: [&str; 8] = [
        "--id",
        "1",
        "--client",
        "127.0.0.1:6001",
        "--raft",
        "127.0.0.1:7001",
        "--data",
        "/tmp/x",
    ];

    fn with_peers(peers: &str, extra: &[&str]) -> Result<Options, String> {
        let mut args: Vec<&str> = NODE.to_vec();
        args.extend(["--peers", peers]);
        args.extend(extra);
        Options::parse(args)
    }

    #[test]
    fn flags_parse_and_override_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "# node 1\nid = 1\nclient = \"127.0.0.1:6002\"\nraft = \"127.0.0.1:7001\" # raft\n\
             peers = [\"1=127.0.0.1:7001/127.0.0.1:6002\"]\ndata = \"/tmp/x\"\n\
             no_forward = true\nmetrics = \"127.0.0.1:9100\"\nsnapshot_threshold = 100\n\
             [ignored]\n",
        )
        .expect("write");
        // A table is a key too: rejected with its line.
        let e = Options::parse(["--config", file.to_str().expect("utf-8")]).expect_err("table");
        assert!(e.contains("ignored") && e.contains("line 10"), "{e}");
        let text = std::fs::read_to_string(&file).expect("read");
        std::fs::write(&file, text.replace("[ignored]\n", "")).expect("write");
        let o = Options::parse([
            "--config",
            file.to_str().expect("utf-8"),
            "--read-mode",
            "lease",
            "--trailing-logs",
            "7",
        ])
        .expect("valid");
        assert_eq!(o.metrics, Some("127.0.0.1:9100".parse().expect("addr")));
        assert_eq!(o.id, 1);
        assert_eq!(o.client, "127.0.0.1:6002".parse().expect("addr"));
        assert_eq!(o.peers.len(), 1);
        assert_eq!(o.read_mode, ReadMode::Lease);
        assert_eq!((o.snapshot_threshold, o.trailing_logs), (100, 7));
        assert!(!o.forward);
        // The flag wins over the file, and is then checked against the file's peers.
        let e = Options::parse([
            "--config",
            file.to_str().expect("utf-8"),
            "--client",
            "127.0.0.1:6003",
        ])
        .expect_err("client disagrees with peers");
        assert!(e.contains("--client is 127.0.0.1:6003"), "{e}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let e = Options::parse(["--id", "0"]).expect_err("id 0");
        assert!(e.contains("--id"), "{e}");
        let e = with_peers(
            "1=127.0.0.1:7001/127.0.0.1:6001",
            &["--wal-segment-mb", "0"],
        )
        .expect_err("segment size");
        assert!(e.contains("--wal-segment-mb"), "{e}");
        let e = with_peers("1=a/b", &[]).expect_err("bad peers");
        assert!(e.contains("--peers"), "{e}");
        let e = with_peers(
            "1=127.0.0.1:7001/127.0.0.1:6001,1=127.0.0.1:7001/127.0.0.1:6001",
            &[],
        )
        .expect_err("repeated id");
        assert!(e.contains("repeated"), "{e}");
        let e = with_peers("2=127.0.0.1:7002/127.0.0.1:6002", &[]).expect_err("not listed");
        assert!(e.contains("--peers must list this node"), "{e}");
        let e = with_peers(
            "1=127.0.0.1:7001/127.0.0.1:6001",
            &["--client", "nohost.invalid:1"],
        )
        .expect_err("unresolvable");
        assert!(e.contains("--client nohost.invalid:1"), "{e}");
    }

    #[test]
    fn the_own_peers_entry_must_match_raft_and_client() {
        let e = with_peers("1=127.0.0.1:7009/127.0.0.1:6001", &[]).expect_err("raft differs");
        assert!(e.contains("--raft is 127.0.0.1:7001"), "{e}");
        let e = with_peers("1=127.0.0.1:7001/127.0.0.1:6009", &[]).expect_err("client differs");
        assert!(e.contains("--client is 127.0.0.1:6001"), "{e}");
        // Behind a proxy: the entry names the advertised address.
        let o = with_peers(
            "1=127.0.0.1:7009/127.0.0.1:6001",
            &["--advertise-raft", "127.0.0.1:7009"],
        )
        .expect("advertised");
        assert_eq!(o.raft, "127.0.0.1:7001".parse().expect("addr"));
        assert_eq!(o.advertise_raft, "127.0.0.1:7009".parse().expect("addr"));
        // Host names resolve, in the flags and in the entries.
        let o = Options::parse([
            "--id",
            "1",
            "--client",
            "localhost:6001",
            "--raft",
            "localhost:7001",
            "--data",
            "/tmp/x",
            "--peers",
            "1=localhost:7001/localhost:6001",
        ])
        .expect("host names");
        assert_eq!(o.peers[0].raft, o.raft);
        assert!(o.raft.ip().is_loopback());
        // A joining node need not be in --peers.
        let o = Options::parse(NODE.iter().copied().chain(["--join", "127.0.0.1:6002"]));
        assert!(o.is_ok(), "{o:?}");
    }

    #[test]
    fn help_states_every_default() {
        let help = Cli::command().render_help().to_string();
        let config = ringraft::Config::new(ringraft_storage::NodeId(1));
        for default in [
            DEFAULT_ELECTION_TIMEOUT_MS,
            DEFAULT_REQUEST_TIMEOUT_MS,
            DEFAULT_WAL_SEGMENT_MB,
            config.snapshot_threshold,
            config.snapshot_interval.as_millis() as u64,
            config.trailing_logs,
        ] {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{default}: {help}"
            );
        }
        for default in ["index", "info", "text"] {
            assert!(
                help.contains(&format!("[default: {default}]")),
                "{default}: {help}"
            );
        }
    }
}
