//! Several Raft groups on the same hosts, as a `MultiRaft` node runs them (ARCHITECTURE §8,
//! §14).
//!
//! Each group is a world of its own (its replicas' shards, clients, history and checkers),
//! and the worlds share what the hosts share:
//!
//! - **Time**: one clock; the next event of all worlds runs next (ties: the lower group).
//! - **The process**: a crash of a host in any group's world crashes that host's replica of
//!   every group at the same instant (torn unsynced writes in each), its restart restarts
//!   them all, and a pause pauses them all.
//! - **The network**: group 0's world draws the partitions, loss and duplication; every
//!   other world takes its network as it is after each event, so a partition cuts every
//!   group's traffic between two hosts.
//! - **The disk**: a host's replicas share one disk with group commit, as they share one WAL:
//!   a write joins the next flush, which covers every group's writes issued before it.
//! - **Campaign slots**: at most `campaign_slots` of a host's groups campaign at once; the
//!   others wait in order for a slot given back, by the router's own rules
//!   (`node::campaign`) and the shards' real campaign-slot code.
//!
//! Every group is checked by the same checkers as a world alone: election, commit and
//! state-machine safety, durability of what was said, log matching, acknowledged writes,
//! linearizability, and liveness after healing.

use super::*;

/// Runs one seed of `config.groups` groups on the same hosts.
pub(super) fn run(config: &SimConfig) -> Report {
    let hosts = config.nodes + usize::from(config.churn);
    let shared = Hosts {
        campaign_pools: (0..hosts)
            .map(|_| Arc::new(Mutex::new(CampaignPool::new(config.campaign_slots.max(1)))))
            .collect(),
        disks: (0..hosts).map(|_| Arc::default()).collect(),
    };
    let pools = shared.campaign_pools.clone();
    // A host runs quiescence for all its groups or for none.
    let quiesce = Rng::new(config.seed ^ 0x0051_E5CE).chance(1, 3);
    let mut worlds: Vec<World> = (0..config.groups)
        .map(|g| {
            let mut own = config.clone();
            own.groups = 1;
            if g > 0 {
                own.seed = config.seed ^ (g as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            }
            World::new_in(own, g, shared.clone(), Some(quiesce))
        })
        .collect();
    let mut host_crashes = 0;
    let failure = failure_of(|| drive(&mut worlds, &pools, &mut host_crashes));
    let sum = |f: fn(&World) -> u64| worlds.iter().map(f).sum::<u64>();
    let mut trace = 0xcbf2_9ce4_8422_2325u64;
    for w in &worlds {
        trace = (trace ^ w.trace).wrapping_mul(0x100_0000_01b3);
    }
    Report {
        seed: config.seed,
        failure,
        trace_hash: trace,
        events: sum(|w| w.events),
        sim_time: Duration::from_nanos(worlds.iter().map(|w| w.now.0).max().unwrap_or(0)),
        ops_completed: sum(|w| w.history.iter().filter(|o| o.completion.is_some()).count() as u64),
        ops_unknown: sum(|w| w.ops_unknown),
        leader_terms: worlds.iter().map(|w| w.checker.leader_terms()).sum(),
        snapshots: sum(|w| w.snapshots),
        installs: sum(|w| w.installs),
        installs_over_matching_suffix: sum(|w| w.installs_over_matching_suffix),
        restores: sum(|w| w.restores),
        restores_applied: sum(|w| w.restores_applied),
        restores_streamed: sum(|w| w.restores_streamed),
        quiesce,
        quiesces: sum(|w| w.quiesces),
        groups: config.groups,
        host_crashes,
        campaign_waits: pools.iter().map(|p| lock(p).waits).sum(),
    }
}

/// Names the group a failure happened in.
fn in_group(group: usize, failure: String) -> String {
    format!("group {group}: {failure}")
}

/// Runs every world's events in time order until each group's clients are done after the
/// healing (or something fails), then each world's final checks.
fn drive(
    worlds: &mut [World],
    pools: &[Arc<Mutex<CampaignPool>>],
    host_crashes: &mut u64,
) -> Result<(), String> {
    for (g, world) in worlds.iter_mut().enumerate() {
        world.boot_all().map_err(|e| in_group(g, e))?;
    }
    grant_waiting(worlds, pools, Time(0));
    let steps = worlds[0].config.steps;
    let mut deadline = None;
    loop {
        let next = worlds
            .iter()
            .enumerate()
            .filter_map(|(g, w)| w.next_at().map(|at| (at, g)))
            .min();
        let Some((at, g)) = next else {
            break;
        };
        let Some(ev) = worlds[g].pop_event().map_err(|e| in_group(g, e))? else {
            break;
        };
        if deadline.is_none() && worlds[0].events >= steps {
            // Group 0's fault phase is over: every host heals at once.
            for (h, world) in worlds.iter_mut().enumerate() {
                world.now = world.now.max(at);
                if !world.healed {
                    world.heal_everything().map_err(|e| in_group(h, e))?;
                }
            }
            deadline = Some(at.plus_nanos(LIVENESS_WINDOW_NANOS));
        }
        if deadline.is_some_and(|d| at > d) {
            let late = worlds.iter().position(|w| !w.clients_done()).unwrap_or(0);
            return Err(in_group(late, worlds[late].liveness_failure()));
        }
        worlds[g].process(ev).map_err(|e| in_group(g, e))?;
        share(worlds, g, pools, host_crashes)?;
        if deadline.is_some() && worlds.iter().all(World::clients_done) {
            break;
        }
    }
    for (g, world) in worlds.iter_mut().enumerate() {
        world.final_checks().map_err(|e| in_group(g, e))?;
    }
    Ok(())
}

/// After an event of group `g`'s world: what happened to whole hosts happens in every world,
/// group 0's network is everyone's, a host's disk queue is shared, and replicas granted a
/// campaign slot are turned to take it.
fn share(
    worlds: &mut [World],
    g: usize,
    pools: &[Arc<Mutex<CampaignPool>>],
    host_crashes: &mut u64,
) -> Result<(), String> {
    let now = worlds[g].now;
    for event in std::mem::take(&mut worlds[g].host_events) {
        for (k, world) in worlds.iter_mut().enumerate() {
            if k == g {
                continue;
            }
            world.now = world.now.max(now);
            match event {
                HostEvent::Crashed(n) => {
                    if world.nodes[n].is_up() {
                        world.crash(n).map_err(|e| in_group(k, e))?;
                    }
                }
                HostEvent::Restarted(n) => {
                    if !world.nodes[n].is_up() {
                        world.boot(n).map_err(|e| in_group(k, e))?;
                    }
                }
                HostEvent::Paused(n, until) => {
                    let node = &mut world.nodes[n];
                    if node.paused_until < until {
                        node.paused_until = until;
                        world.schedule(until, Ev::Resume { node: n });
                    }
                }
            }
        }
        if let HostEvent::Crashed(n) = event {
            *host_crashes += 1;
            // The router died with the process: nobody holds or waits for a slot.
            lock(&pools[n]).reset();
        }
    }
    if g == 0 {
        let (blocked, drop, duplicate) = {
            let w = &worlds[0];
            (w.blocked.clone(), w.drop_per_mille, w.duplicate_per_mille)
        };
        for world in &mut worlds[1..] {
            world.blocked.clone_from(&blocked);
            world.drop_per_mille = drop;
            world.duplicate_per_mille = duplicate;
        }
    }
    grant_waiting(worlds, pools, now);
    Ok(())
}

/// Turns the replicas that were granted a campaign slot while they waited, so they take it.
fn grant_waiting(worlds: &mut [World], pools: &[Arc<Mutex<CampaignPool>>], now: Time) {
    for (n, pool) in pools.iter().enumerate() {
        let granted = std::mem::take(&mut lock(pool).granted);
        for group in granted {
            let world = &mut worlds[group];
            let at = world.now.max(now);
            world.schedule(at, Ev::Timer { node: n });
        }
    }
}

impl World {
    /// Every client of this group completed three operations since the healing.
    fn clients_done(&self) -> bool {
        self.healed && self.clients.iter().all(|c| c.ok_since_heal >= 3)
    }
}
