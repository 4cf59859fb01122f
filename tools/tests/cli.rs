//! The binaries' command lines (issue 14 §1, §3): `--help` lists every option with its default,
//! `--version` prints the version, a wrong flag or value is named in the error, a config file
//! with an unknown key is refused naming the key and its line, a node whose own `--peers` entry
//! disagrees with `--raft` or `--client` refuses to start, host names are accepted, and node
//! logs carry RFC 3339 UTC timestamps, as text or JSON lines.
//!
//! Waits poll with a deadline that only guards against hangs; nothing asserts on durations.

mod support;

use ringraft_tools::kv::local::free_ports;
use ringraft_tools::kv::logs::is_rfc3339_utc;
use std::process::{Command, Output};
use support::Cluster;

const KV: &str = env!("CARGO_BIN_EXE_ringraft-kv");
const LOAD: &str = env!("CARGO_BIN_EXE_ringraft-load");
const SIM: &str = env!("CARGO_BIN_EXE_ringraft-sim");
const WAL: &str = env!("CARGO_BIN_EXE_ringraft-wal");

fn run(binary: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .env_remove("RINGRAFT_CONFIG")
        .env_remove("RINGRAFT_LOG")
        .env_remove("RINGRAFT_LOG_FORMAT")
        .output()
        .unwrap_or_else(|e| panic!("running {binary}: {e}"))
}

/// Runs `binary args`, expecting success; its standard output.
fn succeeds(binary: &str, args: &[&str]) -> String {
    let out = run(binary, args);
    assert!(out.status.success(), "{binary} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `binary args`, expecting failure; its standard error.
fn fails(binary: &str, args: &[&str]) -> String {
    let out = run(binary, args);
    assert!(
        !out.status.success(),
        "{binary} {args:?} succeeded: {out:?}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that `help` describes each `(flag, default)`: the flag, followed on its line (or
/// its paragraph) by a sentence and `[default: ...]` where there is one.
fn assert_describes(help: &str, options: &[(&str, Option<&str>)]) {
    for (flag, default) in options {
        let at = help
            .find(&format!("{flag} "))
            .or_else(|| help.find(&format!("{flag}\n")))
            .unwrap_or_else(|| panic!("{flag} missing from:\n{help}"));
        let rest = &help[at + flag.len()..];
        let paragraph = rest.split("\n\n").next().unwrap_or_default();
        let description = paragraph.split_once('>').map_or(paragraph, |(_, d)| d);
        assert!(
            description.trim().len() > 10,
            "{flag} has no description:\n{help}"
        );
        if let Some(default) = default {
            assert!(
                paragraph.contains(&format!("[default: {default}]")),
                "{flag}: no [default: {default}] in {paragraph:?}"
            );
        }
    }
}

#[test]
fn every_binary_prints_its_version() {
    for (binary, name) in [
        (KV, "ringraft-kv"),
        (LOAD, "ringraft-load"),
        (SIM, "ringraft-sim"),
        (WAL, "ringraft-wal"),
    ] {
        let out = succeeds(binary, &["--version"]);
        assert_eq!(out.trim(), format!("{name} {}", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn ringraft_kv_help_describes_every_option_and_its_default() {
    let help = succeeds(KV, &["--help"]);
    assert_describes(
        &help,
        &[
            ("--config", None),
            ("--id", None),
            ("--client", None),
            ("--raft", None),
            ("--advertise-raft", Some("--raft")),
            ("--peers", None),
            ("--data", None),
            ("--join", None),
            ("--read-mode", Some("index")),
            ("--no-forward", None),
            ("--election-timeout-ms", Some("500")),
            ("--request-timeout-ms", Some("10000")),
            ("--wal-segment-mb", Some("64")),
            ("--snapshot-threshold", Some("8192")),
            ("--snapshot-interval-ms", Some("120000")),
            ("--trailing-logs", Some("10240")),
            ("--metrics", None),
            ("--log-level", Some("info")),
            ("--log-format", Some("text")),
        ],
    );
    assert!(
        help.contains("RINGRAFT_LOG") && help.contains("local"),
        "{help}"
    );
    // No arguments: the help, successfully.
    assert_eq!(succeeds(KV, &[]).lines().next(), help.lines().next());
    let local = succeeds(KV, &["local", "--help"]);
    assert_describes(&local, &[("--nodes", Some("3")), ("--dir", None)]);
}

#[test]
fn ringraft_load_help_describes_every_option_and_its_default() {
    let help = succeeds(LOAD, &["--help"]);
    assert_describes(
        &help,
        &[
            ("--inmem", None),
            ("--nodes", Some("3")),
            ("--clients", Some("64")),
            ("--duration", Some("10")),
            ("--ops", None),
            ("--warmup", Some("10000")),
            ("--rate", None),
            ("--payload-bytes", Some("64")),
            ("--dir", None),
            ("--json", None),
            ("--plot", None),
            ("--shared-thread", None),
            ("--apply-inline", None),
            ("--apply-thread", None),
            ("--client-threads", None),
        ],
    );
}

/// Clients on threads of their own (blocking waits) write, and every replica applies the same
/// entries (the tool fails otherwise); the open loop has no closed-loop clients to thread.
#[test]
fn ringraft_load_runs_its_clients_on_threads_of_their_own() {
    let out = succeeds(
        LOAD,
        &[
            "--inmem",
            "--clients",
            "3",
            "--ops",
            "3000",
            "--warmup",
            "300",
            "--client-threads",
            "--json",
        ],
    );
    assert!(out.contains("\"ops\":3000"), "{out}");
    assert!(!out.contains("\"writes_per_sec\":0"), "{out}");
    let e = fails(LOAD, &["--client-threads", "--rate", "100"]);
    assert!(e.contains("--rate"), "{e}");
}

#[test]
fn ringraft_sim_help_describes_every_option_and_its_default() {
    let help = succeeds(SIM, &["--help"]);
    assert_describes(
        &help,
        &[
            ("--seeds", Some("100")),
            ("--start", Some("0")),
            ("--nodes", Some("both")),
            ("--steps", None),
            ("--clients", None),
            ("--mutation", None),
            ("--no-faults", None),
            ("--no-churn", None),
            ("--no-transfers", None),
            ("--no-snapshots", None),
            ("--no-restores", None),
            ("--event-budget", Some("40 times --steps")),
            ("--jobs", Some("the number of CPUs")),
            ("--expect-failure", None),
        ],
    );
    assert!(help.contains("commit-old-term"), "mutations listed: {help}");
}

#[test]
fn ringraft_wal_help_describes_every_command_and_option() {
    let help = succeeds(WAL, &["--help"]);
    assert_describes(&help, &[("stat", None), ("dump", None), ("verify", None)]);
    let dump = succeeds(WAL, &["dump", "--help"]);
    assert_describes(
        &dump,
        &[
            ("--from", Some("0")),
            ("--to", Some("the last entry")),
            ("--json", None),
        ],
    );
}

#[test]
fn wrong_flags_and_bad_values_are_named() {
    for binary in [KV, LOAD, SIM, WAL] {
        let e = fails(binary, &["--no-such-flag"]);
        assert!(e.contains("--no-such-flag"), "{binary}: {e}");
    }
    for (binary, args, flag) in [
        (KV, &["--id", "one"][..], "--id"),
        (KV, &["--read-mode", "fast"][..], "--read-mode"),
        (KV, &["--log-format", "xml"][..], "--log-format"),
        (KV, &["local", "--nodes", "0"][..], "--nodes"),
        (LOAD, &["--clients", "0"][..], "--clients"),
        (LOAD, &["--duration", "0s"][..], "--duration"),
        (SIM, &["--seeds", "many"][..], "--seeds"),
        (SIM, &["--nodes", "12"][..], "--nodes"),
        (SIM, &["--mutation", "nope"][..], "--mutation"),
        (WAL, &["dump", "/tmp", "--from", "x"][..], "--from"),
    ] {
        let e = fails(binary, args);
        assert!(e.contains(flag), "{binary} {args:?}: {e}");
    }
    // Missing required settings are named too.
    let e = fails(KV, &["--id", "1"]);
    assert!(e.contains("--client is required"), "{e}");
}

/// A single node's flags on free loopback ports.
fn node_flags(dir: &std::path::Path, peers_raft: Option<&str>) -> Vec<String> {
    let ports = free_ports(2).expect("free ports");
    let (raft, client) = (
        format!("127.0.0.1:{}", ports[0]),
        format!("127.0.0.1:{}", ports[1]),
    );
    let peers = format!("1={}/{client}", peers_raft.unwrap_or(&raft));
    [
        "--id", "1", "--client", &client, "--raft", &raft, "--peers", &peers, "--data",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.join("node").display().to_string()])
    .collect()
}

#[test]
fn a_config_file_with_an_unknown_key_is_refused_naming_it_and_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "# node 1\nid = 1\nread_mode = \"lease\"\nsnapshot_treshold = 100\n",
    )
    .expect("write");
    let node = node_flags(dir.path(), None);
    let mut args: Vec<&str> = node.iter().map(String::as_str).collect();
    let path = file.display().to_string();
    args.extend(["--config", &path]);
    let e = fails(KV, &args);
    assert!(
        e.contains("snapshot_treshold") && e.contains("line 4"),
        "{e}"
    );
    // The same file named by the environment.
    let out = Command::new(KV)
        .args(&node)
        .env("RINGRAFT_CONFIG", &file)
        .output()
        .expect("running ringraft-kv");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("snapshot_treshold"),
        "{out:?}"
    );
    assert!(!dir.path().join("node").exists(), "the node started");
}

#[test]
fn a_peers_entry_disagreeing_with_raft_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = node_flags(dir.path(), Some("127.0.0.1:1"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let e = fails(KV, &args);
    assert!(
        e.contains("--peers gives node 1 the raft address 127.0.0.1:1, but --raft is"),
        "{e}"
    );
    assert!(!dir.path().join("node").exists(), "the node started");
}

/// Starts one node at `localhost` addresses with `extra` flags, waits until it leads, stops
/// it with SIGTERM and returns its log.
fn localhost_node_log(extra: &[&str]) -> String {
    let ports = free_ports(2).expect("free ports");
    let addresses = vec![(
        format!("localhost:{}", ports[0]),
        format!("localhost:{}", ports[1]),
    )];
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut cluster = Cluster::new(addresses, |_| extra.clone());
    cluster.spawn(1);
    assert_eq!(cluster.leader(), 1, "{}", cluster.log(1));
    let status = cluster.signal(1, libc::SIGTERM);
    let log = cluster.log(1);
    assert!(status.success(), "{status}: {log}");
    log
}

#[test]
fn a_node_at_host_names_logs_text_lines_with_utc_timestamps() {
    let log = localhost_node_log(&["--log-level", "warn,ringraft_kv=info"]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        let (timestamp, _) = line.split_once(' ').unwrap_or_default();
        assert!(is_rfc3339_utc(timestamp), "no timestamp: {line}");
    }
    assert!(log.contains("serving clients on "), "{log}");
    // The filter: the binary's own events at info, ringraft's at warn only.
    assert!(log.contains(" INFO ringraft_kv: "), "{log}");
    assert!(!log.contains(" INFO ringraft::"), "{log}");
}

#[test]
fn a_node_logs_json_lines_when_asked() {
    let log = localhost_node_log(&["--log-format", "json"]);
    let mut messages = Vec::new();
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let timestamp = v["timestamp"].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc(timestamp), "no timestamp: {line}");
        assert!(v["level"].is_string() && v["target"].is_string(), "{line}");
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m.contains("shutting down")),
        "{messages:?}"
    );
}
