//! `ringraft-kv local [--nodes N] [--dir DIR]`: a local cluster of child processes on free
//! loopback ports, in the foreground until Ctrl-C (or SIGTERM), which stops every node with
//! SIGTERM.

use super::signals;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// `n` free loopback ports, outside the ephemeral range so that no connection takes one
/// before its node binds it.
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    let addresses = ringraft_net::tcp::free_loopback_addresses(n)
        .map_err(|e| format!("finding free ports: {e}"))?;
    Ok(addresses.iter().map(|a| a.port()).collect())
}

/// The `--peers` value and each node's (raft, client) address for `n` nodes.
pub fn cluster_addresses(n: usize) -> Result<(String, Vec<(String, String)>), String> {
    let ports = free_ports(2 * n)?;
    let nodes: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("127.0.0.1:{}", ports[2 * i]),
                format!("127.0.0.1:{}", ports[2 * i + 1]),
            )
        })
        .collect();
    let peers = nodes
        .iter()
        .enumerate()
        .map(|(i, (raft, client))| format!("{}={raft}/{client}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    Ok((peers, nodes))
}

/// `ringraft-kv local`'s options.
#[derive(Clone, Debug, clap::Args)]
pub struct LocalArgs {
    /// How many nodes to start (each a child process with its own data directory).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=99))]
    pub nodes: u64,
    /// Keep the nodes' data directories under DIR [default: a temporary directory, removed at
    /// the end].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Runs `ringraft-kv local`.
pub fn run(args: LocalArgs) -> Result<(), String> {
    let nodes = usize::try_from(args.nodes).map_err(|e| format!("--nodes {}: {e}", args.nodes))?;
    let dir = args.dir;
    let temporary = match dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?),
    };
    let base = dir
        .or_else(|| temporary.as_ref().map(|t| t.path().to_path_buf()))
        .ok_or("no data directory")?;
    let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
    let (peers, addresses) = cluster_addresses(nodes)?;
    signals::install();
    let mut children: Vec<Child> = Vec::new();
    // The foreground cluster keeps its terminal for the addresses and errors: its nodes log
    // warnings and errors only, unless the caller chose a level.
    let quiet = std::env::var_os(super::logs::LEVEL_VARIABLE).is_none();
    for (i, (raft, client)) in addresses.iter().enumerate() {
        let id = i + 1;
        let mut command = Command::new(&exe);
        if quiet {
            command.env(super::logs::LEVEL_VARIABLE, "warn");
        }
        let spawned = command
            .args(["--id", &id.to_string(), "--client", client, "--raft", raft])
            .args(["--peers", &peers, "--data"])
            .arg(base.join(format!("node-{id}")))
            .spawn();
        match spawned {
            Ok(c) => children.push(c),
            Err(e) => {
                stop(&mut children);
                return Err(format!("starting node {id}: {e}"));
            }
        }
    }
    println!("ringraft-kv: {nodes} nodes, data under {}", base.display());
    for (i, (raft, client)) in addresses.iter().enumerate() {
        println!("  node {}: client {client}  raft {raft}", i + 1);
    }
    if let Some((_, client)) = addresses.first() {
        let port = client.rsplit(':').next().unwrap_or_default();
        println!("try:  redis-cli -p {port}   (then: set a 1, get a, incr a, raft.info)");
    }
    println!("Ctrl-C stops every node.");
    while !signals::received() {
        for (i, c) in children.iter_mut().enumerate() {
            if let Ok(Some(status)) = c.try_wait() {
                eprintln!("ringraft-kv: node {} exited: {status}", i + 1);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopping...");
    stop(&mut children);
    Ok(())
}

/// SIGTERM to every child, then waits (SIGKILL for one that takes more than 10 s).
fn stop(children: &mut [Child]) {
    for c in children.iter() {
        if let Ok(pid) = libc::pid_t::try_from(c.id()) {
            // SAFETY: sending a signal to our own child process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    for c in children.iter_mut() {
        let mut waited = Duration::ZERO;
        while matches!(c.try_wait(), Ok(None)) {
            if waited > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            waited += Duration::from_millis(20);
        }
    }
}
