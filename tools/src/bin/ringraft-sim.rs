//! `ringraft-sim`: runs deterministic simulation seeds against the real consensus core.
//!
//! ```text
//! ringraft-sim --seeds N [--start S] [--nodes 3|5] [--steps K] [--clients C]
//!              [--mutation NAME] [--no-faults] [--no-churn] [--no-transfers]
//!              [--no-snapshots] [--no-restores] [--event-budget E] [--jobs J]
//!              [--groups G [--campaign-slots K]] [--expect-failure]
//! ```
//!
//! Ends with `N passed, M failed`; prints every failing seed with the command that replays it;
//! exits non-zero on any failure. With `--nodes both`, seeds alternate between 3 and 5 nodes.

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser};
use ringraft::core::Mutation;
use ringraft::sim::{run, Report, SimConfig};
use std::process::ExitCode;
use std::time::Instant;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ringraft-sim",
    version,
    about = "Runs deterministic simulation seeds against the real consensus core; prints every \
             failing seed with the command that replays it and exits non-zero on any failure."
)]
struct Args {
    /// How many seeds to run.
    #[arg(long, value_name = "N", default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    start: u64,
    /// Cluster size, 1 to 9, or both: seeds alternate between 3 and 5 nodes.
    #[arg(long, value_name = "3|5|both", default_value = "both", value_parser = node_count)]
    nodes: NodeCount,
    /// Client operations per seed.
    #[arg(long, value_name = "K", default_value_t = SimConfig::new(0).steps)]
    steps: u64,
    /// Concurrent simulated clients.
    #[arg(long, value_name = "C", default_value_t = SimConfig::new(0).clients)]
    clients: usize,
    /// Inject a known bug (see the list below) to show that the simulator catches it.
    #[arg(long, value_name = "NAME", value_parser = mutation)]
    mutation: Option<Mutation>,
    /// No crashes, partitions, pauses, loss or duplication.
    #[arg(long = "no-faults", action = ArgAction::SetFalse)]
    faults: bool,
    /// No membership changes.
    #[arg(long = "no-churn", action = ArgAction::SetFalse)]
    churn: bool,
    /// No leadership transfers.
    #[arg(long = "no-transfers", action = ArgAction::SetFalse)]
    transfers: bool,
    /// No snapshots.
    #[arg(long = "no-snapshots", action = ArgAction::SetFalse)]
    snapshots: bool,
    /// No user restores.
    #[arg(long = "no-restores", action = ArgAction::SetFalse)]
    restores: bool,
    /// Events a seed may process before it fails as a livelock [default: 40 times --steps].
    #[arg(long, value_name = "E")]
    event_budget: Option<u64>,
    /// Raft groups on the same nodes: a node crash, pause or partition hits a replica of
    /// every group, a node's replicas share its disk queue and campaign slots, and every
    /// group is checked on its own.
    #[arg(long, value_name = "G", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    groups: u16,
    /// With --groups: how many of a node's groups may campaign at once.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    campaign_slots: u16,
    /// Threads running seeds [default: the number of CPUs].
    #[arg(long, value_name = "J")]
    jobs: Option<usize>,
    /// Stop at the first failing seed and succeed if there is one (proves that the simulator
    /// catches an injected --mutation within --seeds seeds).
    #[arg(long)]
    expect_failure: bool,
}

/// `--nodes`: a fixed size, or alternating 3 and 5.
#[derive(Clone, Copy, Debug)]
struct NodeCount(Option<usize>);

fn node_count(text: &str) -> Result<NodeCount, String> {
    match text {
        "both" => Ok(NodeCount(None)),
        n => match n.parse::<usize>() {
            Ok(n @ 1..=9) => Ok(NodeCount(Some(n))),
            _ => Err("expected 1 to 9, or both".into()),
        },
    }
}

fn mutation(text: &str) -> Result<Mutation, String> {
    Mutation::from_name(text).ok_or_else(|| format!("unknown mutation; known: {}", mutations()))
}

fn mutations() -> String {
    let names: Vec<&str> = Mutation::ALL.iter().map(|m| m.name()).collect();
    names.join(", ")
}

fn parse() -> Args {
    let after = format!("Mutations: {}.", mutations());
    let matches = Args::command().after_help(after).get_matches();
    match Args::from_arg_matches(&matches) {
        Ok(mut args) => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            args.jobs = Some(args.jobs.unwrap_or(cpus).max(1));
            args
        }
        Err(e) => e.exit(),
    }
}

impl Args {
    fn jobs(&self) -> usize {
        self.jobs.unwrap_or(1)
    }
}

fn config_for(args: &Args, seed: u64) -> SimConfig {
    let mut c = SimConfig::new(seed);
    c.nodes = args.nodes.0.unwrap_or(if seed % 2 == 0 { 3 } else { 5 });
    c.steps = args.steps;
    c.clients = args.clients;
    c.faults = args.faults;
    c.mutation = args.mutation;
    c.churn = args.churn;
    c.transfers = args.transfers;
    c.snapshots = args.snapshots;
    c.restores = args.restores;
    c.event_budget = args.event_budget;
    c.groups = usize::from(args.groups);
    c.campaign_slots = usize::from(args.campaign_slots);
    c
}

fn replay_command(args: &Args, c: &SimConfig) -> String {
    let mut cmd = format!(
        "cargo run --release -p ringraft-tools --bin ringraft-sim -- --seeds 1 --start {} \
         --nodes {} --steps {} --clients {}",
        c.seed, c.nodes, c.steps, c.clients
    );
    if let Some(m) = args.mutation {
        cmd.push_str(&format!(" --mutation {}", m.name()));
    }
    if let Some(budget) = args.event_budget {
        cmd.push_str(&format!(" --event-budget {budget}"));
    }
    if c.groups > 1 {
        cmd.push_str(&format!(
            " --groups {} --campaign-slots {}",
            c.groups, c.campaign_slots
        ));
    }
    for (on, flag) in [
        (args.faults, " --no-faults"),
        (args.churn, " --no-churn"),
        (args.transfers, " --no-transfers"),
        (args.snapshots, " --no-snapshots"),
        (args.restores, " --no-restores"),
    ] {
        if !on {
            cmd.push_str(flag);
        }
    }
    cmd
}

fn run_parallel(args: &Args, seeds: &[u64]) -> Vec<(SimConfig, Report)> {
    let chunks: Vec<Vec<u64>> = (0..args.jobs())
        .map(|j| seeds.iter().copied().skip(j).step_by(args.jobs()).collect())
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|&seed| {
                            let c = config_for(args, seed);
                            let r = run(&c);
                            (c, r)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

fn main() -> ExitCode {
    // Help, --version and command-line errors (naming the flag) exit here.
    let args = parse();
    // Wall-clock time only feeds the seeds-per-second line; it never affects a seed's run.
    #[allow(clippy::disallowed_methods)]
    let started = Instant::now();
    let all: Vec<u64> = (args.start..args.start + args.seeds).collect();
    // Seeds run in rounds so that --expect-failure can stop soon after the first failure.
    let round = if args.expect_failure {
        16 * args.jobs()
    } else {
        all.len().max(1)
    };
    let mut reports: Vec<(SimConfig, Report)> = Vec::new();
    for seeds in all.chunks(round) {
        reports.extend(run_parallel(&args, seeds));
        if args.expect_failure && reports.iter().any(|(_, r)| r.failure.is_some()) {
            break;
        }
    }
    reports.sort_by_key(|(c, _)| c.seed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut failed = 0u64;
    let (mut events, mut ops, mut unknown, mut sim_secs) = (0u64, 0u64, 0u64, 0f64);
    let mut terms = 0usize;
    let (mut snapshots, mut installs, mut matching) = (0u64, 0u64, 0u64);
    let (mut restores, mut restores_applied, mut restores_streamed) = (0u64, 0u64, 0u64);
    let (mut quiesce_seeds, mut quiesces) = (0u64, 0u64);
    let (mut host_crashes, mut campaign_waits) = (0u64, 0u64);
    for (c, r) in &reports {
        host_crashes += r.host_crashes;
        campaign_waits += r.campaign_waits;
        quiesce_seeds += u64::from(r.quiesce);
        quiesces += r.quiesces;
        events += r.events;
        ops += r.ops_completed;
        unknown += r.ops_unknown;
        sim_secs += r.sim_time.as_secs_f64();
        terms += r.leader_terms;
        snapshots += r.snapshots;
        installs += r.installs;
        matching += r.installs_over_matching_suffix;
        restores += r.restores;
        restores_applied += r.restores_applied;
        restores_streamed += r.restores_streamed;
        if let Some(f) = &r.failure {
            failed += 1;
            println!("FAIL seed {} ({} nodes): {f}", c.seed, c.nodes);
            println!("  replay: {}", replay_command(&args, c));
        }
    }
    let passed = reports.len() as u64 - failed;
    if args.groups > 1 {
        println!(
            "{} groups per seed: {host_crashes} node crashes took a replica of every group \
             down, {campaign_waits} times a replica waited for a campaign slot",
            args.groups
        );
    }
    println!(
        "simulated {:.0} s of cluster time, {events} events, {ops} client ops completed, \
         {unknown} with unknown outcome, {terms} leader terms, {snapshots} snapshots ({installs} \
         installed from a leader, {matching} of them over a matching suffix), {restores} user restores requested ({restores_streamed} \
         streamed to a follower for staging, {restores_applied} restore entries applied), \
         {quiesce_seeds} seeds with quiescence ({quiesces} times a node quiesced); {:.1} seeds/s on {} threads",
        sim_secs,
        reports.len() as f64 / elapsed.max(1e-9),
        args.jobs()
    );
    println!("{passed} passed, {failed} failed");
    if args.expect_failure {
        return match reports.iter().find(|(_, r)| r.failure.is_some()) {
            Some((c, _)) => {
                println!(
                    "caught: first failing seed {} (after {} seeds)",
                    c.seed,
                    c.seed - args.start + 1
                );
                ExitCode::SUCCESS
            }
            None => {
                println!("NOT caught within {} seeds", args.seeds);
                ExitCode::FAILURE
            }
        };
    }
    if failed > 0 || reports.len() as u64 != args.seeds {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
