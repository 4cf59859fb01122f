//! `ringraft-kv --metrics ADDR`: a real single-node process serves ringraft's metrics as
//! Prometheus text, and they count the writes clients made.
//!
//! Waits poll with a deadline that only guards against hangs; nothing asserts on durations.

use ringraft_tools::kv::client::Client;
use ringraft_tools::kv::metrics::fetch;
use ringraft_tools::kv::resp::Reply;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HANG_GUARD: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(50);

/// Kills the node when the test ends, however it ends.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address that was free a moment ago.
fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local address")
}

/// Polls `attempt` until it returns `Some`; panics with `what` after the hang guard.
fn wait_for<T>(what: &str, mut attempt: impl FnMut() -> Option<T>) -> T {
    let mut waited = Duration::ZERO;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(waited < HANG_GUARD, "timed out waiting for {what}");
        std::thread::sleep(STEP);
        waited += STEP;
    }
}

/// The value of the first sample line of `name` (any labels) in Prometheus text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_endpoint_counts_a_single_nodes_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client, raft, metrics) = (free_address(), free_address(), free_address());
    let peers = format!("1={raft}/{client}");
    let child = Command::new(env!("CARGO_BIN_EXE_ringraft-kv"))
        .args(["--id", "1", "--client", &client.to_string()])
        .args(["--raft", &raft.to_string(), "--peers", &peers])
        .args(["--metrics", &metrics.to_string()])
        .arg("--data")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ringraft-kv");
    let _node = Node(child);

    let mut c = wait_for("the client port", || {
        Client::connect(client, Duration::from_secs(5)).ok()
    });
    for i in 0..10 {
        let key = format!("k{i}");
        wait_for("a write to succeed", || {
            match c.call(&["SET", key.as_str(), "v"]) {
                Ok(Reply::Simple(s)) if s == "OK" => Some(()),
                Ok(_) => None,
                Err(_) => {
                    c = Client::connect(client, Duration::from_secs(5)).ok()?;
                    None
                }
            }
        });
    }

    let text = wait_for("the metrics to count the writes", || {
        let text = fetch(metrics, Duration::from_secs(5)).ok()?;
        let applies = sample(&text, "raft_apply")?;
        let commits = sample(&text, "raft_commitTime_count")?;
        (applies >= 10.0 && commits > 0.0).then_some(text)
    });
    for name in [
        "raft_state_leader",
        "raft_leader_dispatchLog_count",
        "raft_fsm_applyBatch_count",
        "raft_commit_index",
        "raft_applied_index",
        "raft_peers",
    ] {
        let value = sample(&text, name);
        assert!(
            value.is_some_and(|v| v > 0.0),
            "{name} missing or zero in:\n{text}"
        );
    }
    assert!(
        text.contains("raft_apply{node_id=\"1\"}"),
        "metrics are labelled with the node id:\n{text}"
    );
}
