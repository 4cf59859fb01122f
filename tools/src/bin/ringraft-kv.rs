//! `ringraft-kv`: an example replicated key-value service speaking RESP (see
//! `ringraft_tools::kv` and `ringraft-kv --help`).
//!
//! ```text
//! ringraft-kv --id 1 --client 127.0.0.1:6001 --raft 127.0.0.1:7001 \
//!     --peers 1=127.0.0.1:7001/127.0.0.1:6001,2=127.0.0.1:7002/127.0.0.1:6002,3=... \
//!     --data /var/lib/kv1
//! ringraft-kv local --nodes 3
//! ```

use clap::{CommandFactory, Parser};
use ringraft::RaftState;
use ringraft_tools::kv::client::{info_field, Client};
use ringraft_tools::kv::node::Node;
use ringraft_tools::kv::options::{Cli, Command, Options};
use ringraft_tools::kv::resp::Reply;
use ringraft_tools::kv::{local, logs, metrics as kv_metrics, server, signals};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    if std::env::args_os().len() <= 1 {
        // No arguments: the help, as a first try deserves.
        let _ = Cli::command().print_help();
        return ExitCode::SUCCESS;
    }
    // Help, --version and command-line errors (naming the flag) exit here.
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Local(args)) => local::run(args),
        None => Options::from_cli(cli.config.as_deref(), cli.settings).and_then(run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if tracing::dispatcher::has_been_set() {
                tracing::error!("{e}");
            } else {
                eprintln!("ringraft-kv: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(options: Options) -> Result<(), String> {
    signals::install();
    // Bind the client port before starting raft so a taken port fails fast.
    let listener = std::net::TcpListener::bind(options.client)
        .map_err(|e| format!("binding the client address {}: {e}", options.client))?;
    let id = options.id;
    logs::install(&options.log)?;
    // Before the node starts: it registers its metrics with the recorder in force then.
    if let Some(address) = options.metrics {
        let bound = kv_metrics::serve(address, kv_metrics::install()?)?;
        tracing::info!("node {id} serving metrics on http://{bound}/metrics");
    }
    let node = Arc::new(Node::start(options)?);
    let stop = Arc::new(AtomicBool::new(false));
    let server = server::spawn(node.clone(), listener, stop.clone())
        .map_err(|e| format!("starting the client server: {e}"))?;
    tracing::info!(
        "node {id} serving clients on {} (raft {})",
        node.options.client,
        node.options.advertise_raft
    );
    if let Some(leader) = node.options.join.clone() {
        let joining = node.clone();
        std::thread::spawn(move || {
            if let Err(e) = join(&joining, &leader) {
                tracing::error!("joining through {leader}: {e}");
            }
        });
    }
    // A node stopped by a storage failure (a full disk, say) exits non-zero, so a supervisor
    // restarts it once the cause is fixed; recovery then starts from what is on disk.
    let mut fatal = None;
    while !signals::received() {
        if let Some(e) = node.raft.fatal_error() {
            tracing::error!("node {id} stopped: {e}");
            fatal = Some(e);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!("node {id} shutting down");
    stop.store(true, Ordering::Release);
    let _ = server.join();
    let _ = node.raft.shutdown().wait();
    match fatal {
        Some(e) => Err(format!("node {id} exits after a storage failure: {e}")),
        None => Ok(()),
    }
}

/// Asks the leader (through `leader`'s client port, which forwards) to add this node as a
/// non-voter, waits until it has caught up with the leader's commit index, then asks for its
/// promotion to voter.
fn join(node: &Node, leader: &str) -> Result<(), String> {
    let o = &node.options;
    let (id, raft) = (o.id.to_string(), o.advertise_raft.to_string());
    let client = o.client.to_string();
    let call = |args: &[&str]| -> Result<Reply, String> {
        let mut c = Client::connect(leader, o.request_timeout).map_err(|e| e.to_string())?;
        c.call(args).map_err(|e| e.to_string())
    };
    let retry = |args: &[&str]| -> Result<(), String> {
        let mut last = String::new();
        for _ in 0..100 {
            match call(args) {
                Ok(Reply::Simple(_)) => return Ok(()),
                Ok(r) => last = format!("{r:?}"),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(last)
    };
    retry(&["RAFT.ADD", &id, &raft, &client, "nonvoter"])?;
    tracing::info!("node {id} added as a non-voter; catching up");
    for _ in 0..600 {
        let commit = match call(&["RAFT.INFO"]) {
            Ok(r) => r
                .text()
                .and_then(|t| info_field(&t, "commit"))
                .and_then(|c| c.parse::<u64>().ok()),
            Err(_) => None,
        };
        if commit.is_some_and(|c| node.raft.applied_index().0 >= c) {
            retry(&["RAFT.ADD", &id, &raft, &client])?;
            tracing::info!("node {id} promoted to voter");
            return Ok(());
        }
        if node.raft.state() == RaftState::Shutdown {
            return Err("the node shut down".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("did not catch up".into())
}
