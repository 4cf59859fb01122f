//! `ringraft-load`: a load generator for a local ringraft cluster (issue 6 §4).
//!
//! ```text
//! ringraft-load [--inmem] [--nodes N] [--clients C] [--duration SECS | --ops N] [--warmup N]
//!               [--rate R] [--payload-bytes B] [--dir DIR] [--json] [--plot FILE]
//!               [--shared-thread] [--apply-inline | --apply-thread] [--client-threads]
//!               [--groups N [--active M] [--idle-secs SECS] [--restart | --failover]]
//! ```
//!
//! With no arguments: a 3-node cluster in this process, talking TCP on loopback, each node
//! with its segment WAL, stable store and snapshot store in a temporary directory; 64
//! closed-loop clients apply 64-byte commands on the leader for 10 s, with a progress line per
//! second; then throughput and latency percentiles (p50, p90, p99, p99.9, max, from an HDR
//! histogram), and a check that every replica applied the same entries.
//!
//! - `--inmem`: in-memory stores and in-process delivery (what peers publish numbers for).
//! - `--ops N`: stop after `N` writes instead of after `--duration`.
//! - `--warmup N`: unmeasured writes first, by the same clients (default 10 000, as the
//!   peers' harnesses do; 0 for none).
//! - `--rate R`: open loop at `R` writes/s, latency measured from each write's intended send
//!   time (coordinated-omission corrected); runs for `--duration` or `--ops`.
//! - `--json`: print only one line: `{"system":"ringraft","clients":..,"ops":..,
//!   "writes_per_sec":..,"p50_us":..,"p99_us":..,"p999_us":..,"cpu_us_per_write":..,
//!   "steal_pct":..}` (CPU: the whole process, user plus system, over the measured run;
//!   steal: the percent of the machine's CPU time over the run that its hypervisor gave to
//!   others, from `/proc/stat`, `null` where unknown: figures from runs with much steal are
//!   not comparable with figures from quiet ones).
//! - `--plot FILE`: write the latency percentile curve as an SVG.
//! - `--dir DIR`: keep the durable cluster's files under `DIR` (default: a temporary
//!   directory, removed at the end).
//! - `--shared-thread`: every node's shard loop on one shard thread (`ringraft::ShardHost`)
//!   instead of a thread each.
//! - `--client-threads`: each closed-loop client on a thread of its own, blocking in
//!   `RaftFuture::wait` (which spins briefly while answers come quickly), instead of every
//!   client as a task on one tokio runtime thread awaiting its futures.
//! - `--apply-inline`: state machines always on the shard threads
//!   (`ApplyPlacement::ShardThread`); `--apply-thread`: always on an apply thread each
//!   (`ApplyPlacement::OwnThread`, hashicorp's layout). Default: `ApplyPlacement::Adaptive`,
//!   the library's default (on the shard thread while the state machine is fast).
//! - `--groups N`: N Raft groups, each node a `MultiRaft` hosting a replica of every group
//!   (with `--inmem` in memory; otherwise TCP and one `SharedWal` per node for all its
//!   groups); reports the time until every group has a leader, idle CPU and resident memory
//!   per replica, and the writes to `--active M` groups (with the CPU per write, as above).
//!   `--restart` (durable) then stops every node, starts them again from their WALs and
//!   checks every group's committed state.
//!   `--campaign-slots K` sets how many groups per node may campaign at once, `--shards S`
//!   how many shard threads each node runs its groups on, `--ping-ms MS` how often each node
//!   pings its peers. `--failover` then cuts off the node leading the most groups, its
//!   connections left open (a frozen node: in memory a partition, over TCP a transport that
//!   drops what it sends and receives), and reports how long until every group it led has a
//!   leader among the others (`failover_s`).

use clap::Parser;
use ringraft::ApplyPlacement;
use ringraft_tools::load::cluster::{Cluster, Engine, Mode};
use ringraft_tools::load::drive::{self, Load};
use ringraft_tools::load::groups;
use ringraft_tools::load::report::{json_number, svg_plot, CpuMark, Summary};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ringraft-load",
    version,
    about = "Starts a local ringraft cluster and measures write throughput and latency \
             percentiles, then checks that every replica applied the same entries."
)]
struct Cli {
    /// In-memory stores and in-process delivery, instead of TCP on loopback with each node's
    /// WAL, stable store and snapshot store in a directory.
    #[arg(long)]
    inmem: bool,
    /// Nodes in the cluster.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = at_least_one)]
    nodes: u64,
    /// Closed-loop clients applying commands on the leader.
    #[arg(long, value_name = "C", default_value_t = 64, value_parser = at_least_one)]
    clients: u64,
    /// How long the measured run lasts, in seconds (`5` or `5s`), unless --ops is given.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = seconds)]
    duration: Duration,
    /// Stop after N writes instead of after --duration.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    ops: Option<u64>,
    /// Unmeasured writes first, by the same clients, as the peers' harnesses do (0 for none).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    warmup: u64,
    /// Open loop at R writes/s, latency measured from each write's intended send time
    /// (coordinated-omission corrected); runs for --duration or --ops.
    #[arg(long, value_name = "R", value_parser = positive)]
    rate: Option<f64>,
    /// Size of each command.
    #[arg(long, value_name = "B", default_value_t = 64)]
    payload_bytes: usize,
    /// Keep the durable cluster's files under DIR [default: a temporary directory, removed at
    /// the end].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Print only one JSON line: system, clients, ops, writes_per_sec, p50_us, p99_us, p999_us,
    /// cpu_us_per_write (CPU: the whole process, user plus system, over the measured run),
    /// steal_pct (the machine's CPU time over the run that its hypervisor gave to others).
    #[arg(long)]
    json: bool,
    /// Write the latency percentile curve as an SVG to FILE.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Every node's shard loop on one shard thread (ringraft::ShardHost) instead of a thread
    /// each.
    #[arg(long)]
    shared_thread: bool,
    /// Each closed-loop client on a thread of its own, blocking in RaftFuture::wait, instead
    /// of every client as a task on one tokio runtime awaiting its futures.
    #[arg(long, conflicts_with = "rate")]
    client_threads: bool,
    /// State machines always on the shard threads (ApplyPlacement::ShardThread) [default:
    /// ApplyPlacement::Adaptive, on the shard thread while the state machine is fast].
    #[arg(long, conflicts_with = "apply_thread")]
    apply_inline: bool,
    /// State machines always on an apply thread each (ApplyPlacement::OwnThread, hashicorp's
    /// layout).
    #[arg(long)]
    apply_thread: bool,
    /// Run N Raft groups of --nodes nodes each in this process (each node one MultiRaft; with
    /// --inmem in memory, otherwise TCP on loopback and one WAL per node shared by its
    /// groups) and report how long until all have leaders, their idle CPU and resident memory
    /// per replica, and the writes of the --active ones.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    groups: Option<u64>,
    /// With --groups: how many groups the clients write to, spread evenly (client c's k-th
    /// write goes to active group (c + k × clients) mod M, so with more groups than clients
    /// every active group gets writes) [default: the smaller of --groups and --clients].
    #[arg(long, value_name = "M", requires = "groups")]
    active: Option<u64>,
    /// With --groups: the quiet window over which idle CPU is measured, in seconds.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds, requires = "groups")]
    idle_secs: Duration,
    /// With durable --groups: after the writes, stop every node, start them again from their
    /// WALs, and report how long until every group has a leader and how many recovered their
    /// committed state.
    #[arg(long, requires = "groups", conflicts_with = "inmem")]
    restart: bool,
    /// With --groups: how many groups per node may campaign, or lead without having settled,
    /// at once (MultiRaftConfig::campaign_slots) [default: the library's].
    #[arg(long, value_name = "K", requires = "groups", value_parser = at_least_one)]
    campaign_slots: Option<u64>,
    /// With --groups: shard threads per node, the groups spread over them
    /// (MultiRaftConfig::shards) [default: the library's].
    #[arg(long, value_name = "S", requires = "groups", value_parser = at_least_one)]
    shards: Option<u64>,
    /// With --groups: how often each node pings its peers, in milliseconds
    /// (MultiRaftConfig::ping_interval) [default: a quarter of the silence timeout, as the
    /// library's default]
    #[arg(long, value_name = "MS", requires = "groups", value_parser = at_least_one)]
    ping_ms: Option<u64>,
    /// With --groups: after the writes, cut off the node that leads the most groups (its
    /// messages lost, no connection broken: a frozen node; over TCP its transport drops what
    /// it sends and receives) and report how long until every group it led has a leader among
    /// the others.
    #[arg(long, requires = "groups")]
    failover: bool,
}

fn at_least_one(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        Ok(_) => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn seconds(text: &str) -> Result<Duration, String> {
    positive(text.trim_end_matches('s')).map(Duration::from_secs_f64)
}

struct Args {
    inmem: bool,
    nodes: u64,
    load: Load,
    payload_bytes: usize,
    dir: Option<PathBuf>,
    json: bool,
    plot: Option<PathBuf>,
    engine: Engine,
    /// Unmeasured writes before the measured run.
    warmup: u64,
    /// `--groups`, `--active` and `--idle-secs`.
    groups: Option<(usize, usize, Duration)>,
    /// `--restart`.
    restart: bool,
    /// `--campaign-slots`.
    campaign_slots: Option<usize>,
    /// `--shards`.
    shards: Option<usize>,
    /// `--ping-ms`.
    ping_interval: Option<Duration>,
    /// `--failover`.
    failover: bool,
}

impl Cli {
    fn into_args(self) -> Result<Args, String> {
        let clients = usize::try_from(self.clients)
            .map_err(|e| format!("--clients {}: {e}", self.clients))?;
        let apply = match (self.apply_inline, self.apply_thread) {
            (true, _) => ApplyPlacement::ShardThread,
            (_, true) => ApplyPlacement::OwnThread,
            _ => Engine::default().apply,
        };
        Ok(Args {
            inmem: self.inmem,
            nodes: self.nodes,
            load: Load {
                clients,
                ops: self.ops,
                duration: self.duration,
                payload_bytes: self.payload_bytes,
                rate: self.rate,
                progress: !self.json,
                threads: self.client_threads,
            },
            payload_bytes: self.payload_bytes,
            dir: self.dir,
            json: self.json,
            plot: self.plot,
            engine: Engine {
                shared_thread: self.shared_thread,
                apply,
            },
            warmup: self.warmup,
            groups: match self.groups {
                None => None,
                Some(n) => {
                    let n = usize::try_from(n).map_err(|e| format!("--groups {n}: {e}"))?;
                    let active = match self.active {
                        Some(m) => usize::try_from(m).map_err(|e| format!("--active {m}: {e}"))?,
                        None => n.min(clients),
                    };
                    if active > n {
                        return Err(format!("--active {active} is more than --groups {n}"));
                    }
                    Some((n, active, self.idle_secs))
                }
            },
            restart: self.restart,
            campaign_slots: self
                .campaign_slots
                .map(|k| usize::try_from(k).map_err(|e| format!("--campaign-slots {k}: {e}")))
                .transpose()?,
            shards: self
                .shards
                .map(|s| usize::try_from(s).map_err(|e| format!("--shards {s}: {e}")))
                .transpose()?,
            ping_interval: self.ping_ms.map(Duration::from_millis),
            failover: self.failover,
        })
    }
}

/// `--groups`: many groups; prints what `load::groups::run` measured.
fn run_groups(args: &Args, groups: usize, active: usize, idle: Duration) -> Result<bool, String> {
    // The temporary directory lives until the end of the run, then is removed.
    let (durable, _temp) = match (&args.dir, args.inmem) {
        (_, true) => (None, None),
        (Some(dir), false) => (Some(dir.clone()), None),
        (None, false) => {
            let temp = tempfile::Builder::new()
                .prefix("ringraft-load-")
                .tempdir()
                .map_err(|e| format!("temporary directory: {e}"))?;
            (Some(temp.path().to_path_buf()), Some(temp))
        }
    };
    let run = groups::GroupsRun {
        groups,
        nodes: args.nodes,
        active,
        warmup: args.warmup,
        idle_window: idle,
        elect_limit: Duration::from_secs(120),
        durable: durable.clone(),
        restart: args.restart,
        campaign_slots: args.campaign_slots,
        shards: args.shards,
        ping_interval: args.ping_interval,
        failover: args.failover,
    };
    let out = groups::run(&run, &args.load)?;
    let summary = out.load.as_ref().map(|(o, cpu)| {
        Summary::new(
            args.load.clients,
            &o.histogram,
            o.errors,
            o.elapsed_secs,
            cpu.process_secs,
        )
        .with_steal(cpu.steal_pct)
    });
    if args.json {
        println!(
            "{{\"system\":\"ringraft\",\"groups\":{},\"active\":{},\"clients\":{},\
\"writes_per_sec\":{},\"p50_us\":{},\"p99_us\":{},\"cpu_us_per_write\":{},\"steal_pct\":{},\
\"start_s\":{:.3},\"elect_all_s\":{},\
\"elected\":{},\"campaigns_deferred\":{},\"idle_cpu_pct\":{:.1},\"rss_per_replica_bytes\":{},\
\"threads\":{},\"durable\":{},\"restart_open_s\":{},\"restart_start_s\":{},\
\"restart_elect_all_s\":{},\"restart_campaigns_deferred\":{},\"restart_recovered\":{},\
\"failover_led\":{},\"failover_moved\":{},\"failover_s\":{}}}",
            out.groups,
            active,
            args.load.clients,
            json_number(summary.as_ref().map(|s| s.writes_per_sec()), 0),
            json_number(summary.as_ref().map(|s| s.p50_us), 1),
            json_number(summary.as_ref().map(|s| s.p99_us), 1),
            json_number(summary.as_ref().map(|s| s.cpu_us_per_write), 2),
            json_number(summary.as_ref().and_then(|s| s.steal_pct), 1),
            out.start_secs,
            json_number(out.elect_all_secs, 3),
            out.elected,
            out.campaigns_deferred,
            out.idle_cpu_pct,
            out.rss_per_replica_bytes,
            out.threads,
            durable.is_some(),
            json_number(out.restart.as_ref().map(|r| r.open_secs), 3),
            json_number(out.restart.as_ref().map(|r| r.start_secs), 3),
            json_number(out.restart.as_ref().and_then(|r| r.elect_all_secs), 3),
            out.restart
                .as_ref()
                .map_or_else(|| "null".to_string(), |r| r.campaigns_deferred.to_string()),
            out.restart
                .as_ref()
                .map_or_else(|| "null".to_string(), |r| r.recovered.to_string()),
            json_number(out.failover.as_ref().map(|f| f.led as f64), 0),
            json_number(out.failover.as_ref().map(|f| f.moved as f64), 0),
            json_number(out.failover.as_ref().and_then(|f| f.secs), 3),
        );
    } else {
        let place = match &durable {
            None => "in memory".to_string(),
            Some(dir) => format!("TCP on loopback, one WAL per node in {}", dir.display()),
        };
        println!(
            "ringraft-load: {groups} groups of {} nodes, {place}, {active} active",
            args.nodes
        );
        match out.elect_all_secs {
            Some(s) => println!(
                "  every group had a leader after {s:.2} s (starting them took {:.2} s; {} \
                 campaigns waited for a slot)",
                out.start_secs, out.campaigns_deferred
            ),
            None => println!(
                "  only {} of {groups} groups had a leader within 120 s",
                out.elected
            ),
        }
        println!(
            "  idle: {:.1} % of one core, {} bytes resident per replica, {} threads",
            out.idle_cpu_pct, out.rss_per_replica_bytes, out.threads
        );
        if let Some(s) = &summary {
            println!(
                "  writes: {:.0} writes/s, latency µs p50 {:.1} p99 {:.1}, {:.1} µs of CPU \
                 per write ({} failed){}",
                s.writes_per_sec(),
                s.p50_us,
                s.p99_us,
                s.cpu_us_per_write,
                s.errors,
                steal_note(s.steal_pct)
            );
        }
    }
    if let Some(r) = &out.restart {
        if !args.json {
            println!(
                "  restart: WALs opened in {:.2} s; groups started in {:.2} s; every group had a \
                 leader after {}; {} of {groups} groups recovered their committed state",
                r.open_secs,
                r.start_secs,
                r.elect_all_secs
                    .map_or_else(|| "(not within 120 s)".to_string(), |s| format!("{s:.2} s")),
                r.recovered
            );
        }
    }
    if let Some(f) = &out.failover {
        if !args.json {
            println!(
                "  failover: node {} (leading {} groups) cut off; {}",
                f.node,
                f.led,
                f.secs.map_or_else(
                    || format!("only {} of them had another leader within 120 s", f.moved),
                    |s| format!("every one of them had another leader after {s:.2} s"),
                )
            );
        }
    }
    let failed_over = out.failover.as_ref().is_none_or(|f| f.secs.is_some());
    let restarted = out
        .restart
        .as_ref()
        .is_none_or(|r| r.recovered == out.groups);
    if args.restart && out.restart.is_none() {
        return Err("--restart: no restart was made (not every group had a leader)".into());
    }
    Ok(out.elected == out.groups
        && summary.is_none_or(|s| s.errors == 0)
        && restarted
        && failed_over)
}

fn run(args: &Args) -> Result<bool, String> {
    if let Some((groups, active, idle)) = args.groups {
        return run_groups(args, groups, active, idle);
    }
    // The temporary directory lives until the end of the run, then is removed.
    let (mode, _temp) = if args.inmem {
        (Mode::Inmem, None)
    } else if let Some(dir) = &args.dir {
        (Mode::Durable(dir.clone()), None)
    } else {
        let temp = tempfile::Builder::new()
            .prefix("ringraft-load-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        (Mode::Durable(temp.path().to_path_buf()), Some(temp))
    };
    let description = match &mode {
        Mode::Inmem => "in memory".to_string(),
        Mode::Durable(dir) => format!("TCP on loopback, WAL in {}", dir.display()),
    };
    let cluster = Cluster::start(&mode, args.nodes, args.load.clients, args.engine)?;
    let result = measure(args, &cluster, &description);
    cluster.shutdown();
    result
}

fn measure(args: &Args, cluster: &Cluster, description: &str) -> Result<bool, String> {
    let leader = cluster.leader(Duration::from_secs(30))?;
    let load = &args.load;
    if !args.json {
        let what = match (load.rate, load.ops) {
            (Some(r), _) => format!("open loop at {r} writes/s"),
            (None, _) => format!("{} closed-loop clients", load.clients),
        };
        let until = match load.ops {
            Some(n) => format!("{n} writes"),
            None => format!("{:.1} s", load.duration.as_secs_f64()),
        };
        println!(
            "ringraft-load: {} nodes ({description}), {what}, {}-byte commands, {until}",
            args.nodes, args.payload_bytes
        );
    }
    if args.warmup > 0 {
        // Unmeasured, like the peers' harnesses: allocations, caches and queues reach their
        // working size first.
        let warmup = Load {
            ops: Some(args.warmup),
            rate: None,
            progress: false,
            ..load.clone()
        };
        drive::run(std::slice::from_ref(&leader), &warmup)?;
    }
    let mark = CpuMark::now();
    let outcome = drive::run(std::slice::from_ref(&leader), load)?;
    let cpu = mark.end();
    let summary = Summary::new(
        load.clients,
        &outcome.histogram,
        outcome.errors,
        outcome.elapsed_secs,
        cpu.process_secs,
    )
    .with_steal(cpu.steal_pct);
    let digests = cluster.digests_after_catch_up(&leader, Duration::from_secs(60))?;
    let consistent = digests.windows(2).all(|w| w[0] == w[1]);
    if let Some(path) = &args.plot {
        let title = format!(
            "ringraft-load: {} clients, {:.0} writes/s",
            load.clients,
            summary.writes_per_sec()
        );
        std::fs::write(path, svg_plot(&outcome.histogram, &title))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if args.json {
        println!("{}", summary.json());
    } else {
        println!(
            "  writes: {} ok, {} failed, {:.0} writes/s over {:.2} s",
            summary.ops,
            summary.errors,
            summary.writes_per_sec(),
            summary.elapsed_secs
        );
        println!(
            "  latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            summary.p50_us, summary.p90_us, summary.p99_us, summary.p999_us, summary.max_us
        );
        println!(
            "  CPU: {:.2} µs per write (the whole process: nodes and clients){}",
            summary.cpu_us_per_write,
            steal_note(summary.steal_pct)
        );
        if consistent {
            println!(
                "  replicas: all {} applied the same {} entries (digest {:016x})",
                args.nodes, digests[0].count, digests[0].hash
            );
        } else {
            println!("  replicas DIFFER: {digests:?}");
        }
        if let Some(path) = &args.plot {
            println!("  plot: {}", path.display());
        }
    }
    if !consistent && args.json {
        eprintln!("ringraft-load: replicas differ: {digests:?}");
    }
    Ok(consistent)
}

/// "; N % of the machine's CPU time went to other guests (steal)" when the run saw any.
fn steal_note(steal_pct: Option<f64>) -> String {
    match steal_pct {
        Some(p) if p >= 0.05 => {
            format!("; {p:.1} % of the machine's CPU time went to other guests (steal)")
        }
        _ => String::new(),
    }
}

fn main() -> ExitCode {
    // Help, --version and command-line errors (naming the flag) exit here.
    let args = match Cli::parse().into_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringraft-load: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ringraft-load: {e}");
            ExitCode::FAILURE
        }
    }
}
