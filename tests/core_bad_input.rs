//! Bad input never panics the core: thousands of random, often malformed or malicious messages
//! and inputs, with the invariants checked after every step.

use bytes::Bytes;
use ringraft::core::{Core, CoreConfig, Input, Rng, Time, Token};
use ringraft_net::message::{
    AppendEntries, AppendEntriesResponse, AppendResult, Body, ConflictHint, InstallSnapshot,
    InstallSnapshotResponse, Message,
};
use ringraft_storage::{Configuration, Entry, EntryKind, Index, LogId, NodeId, SnapshotMeta, Term};

fn random_id(rng: &mut Rng) -> NodeId {
    NodeId(rng.below(6))
}

fn random_log_id(rng: &mut Rng) -> LogId {
    LogId::new(Term(rng.below(8)), Index(rng.below(40)))
}

fn random_entries(rng: &mut Rng, prev: LogId) -> Vec<Entry> {
    let n = rng.below(6);
    let mut index = prev.index;
    let mut term = prev.term;
    (0..n)
        .map(|_| {
            // Mostly well-formed, sometimes gaps, decreasing terms or garbage configurations.
            index = if rng.chance(1, 10) {
                Index(rng.below(50))
            } else {
                index.next()
            };
            term = if rng.chance(1, 10) {
                Term(rng.below(8))
            } else {
                term.max(Term(rng.below(8)))
            };
            let kind = match rng.below(9) {
                0 => EntryKind::Configuration,
                1 => EntryKind::Noop,
                2 => EntryKind::Barrier,
                3 => EntryKind::Restore,
                _ => EntryKind::Command,
            };
            let data = if kind == EntryKind::Configuration && rng.chance(1, 2) {
                Configuration::voters_with_default_addresses([NodeId(1), NodeId(2), NodeId(3)])
                    .encode()
            } else {
                Bytes::from(vec![rng.below(256) as u8; rng.below(16) as usize])
            };
            Entry::new(LogId::new(term, index), kind, data)
        })
        .collect()
}

fn random_body(rng: &mut Rng) -> Body {
    let round = rng.below(10);
    match rng.below(11) {
        0 | 1 => {
            let prev_log_id = random_log_id(rng);
            let entries = random_entries(rng, prev_log_id);
            Body::AppendEntries(AppendEntries {
                prev_log_id,
                entries,
                leader_commit: Index(rng.below(50)),
                round,
            })
        }
        2 => Body::AppendEntriesResponse(AppendEntriesResponse {
            result: match rng.below(5) {
                0 => AppendResult::Success {
                    match_index: Index(rng.below(60)),
                },
                1 => AppendResult::Conflict {
                    rejected_prev_index: Index(rng.below(50)),
                    hint: ConflictHint::LogTooShort {
                        last_index: Index(rng.below(50)),
                    },
                },
                2 => AppendResult::Conflict {
                    rejected_prev_index: Index(rng.below(50)),
                    hint: ConflictHint::TermMismatch {
                        term: Term(rng.below(8)),
                        first_index: Index(rng.below(50)),
                    },
                },
                3 => AppendResult::Conflict {
                    rejected_prev_index: Index(rng.below(50)),
                    hint: ConflictHint::MissingRestore {
                        entry: random_log_id(rng),
                    },
                },
                _ => AppendResult::StaleTerm,
            },
            round,
        }),
        3 => Body::Heartbeat {
            leader_commit: Index(rng.below(50)),
            round,
        },
        4 => Body::HeartbeatResponse { round },
        5 => Body::RequestVote {
            last_log_id: random_log_id(rng),
            leadership_transfer: rng.chance(1, 4),
        },
        6 => Body::RequestVoteResponse {
            granted: rng.chance(1, 2),
        },
        7 => Body::PreVote {
            last_log_id: random_log_id(rng),
        },
        8 => Body::PreVoteResponse {
            granted: rng.chance(1, 2),
        },
        9 => Body::InstallSnapshot(InstallSnapshot {
            meta: SnapshotMeta {
                id: "x".into(),
                last: random_log_id(rng),
                configuration: Configuration::voters_with_default_addresses([
                    NodeId(1),
                    NodeId(2),
                    NodeId(3),
                ]),
                configuration_index: Index(rng.below(40)),
                size: rng.below(100),
            },
            offset: rng.below(100),
            data: Bytes::from_static(b"chunk"),
            done: rng.chance(1, 3),
            stage: rng.chance(1, 3),
            round,
        }),
        _ => {
            if rng.chance(1, 2) {
                Body::TimeoutNow
            } else {
                Body::InstallSnapshotResponse(InstallSnapshotResponse {
                    last: random_log_id(rng),
                    next_offset: rng.below(100),
                    done: rng.chance(1, 2),
                    stage: rng.chance(1, 3),
                    round,
                })
            }
        }
    }
}

/// Drives a fresh core of a 3-node cluster to leadership with votes from node 2.
fn make_leader(core: &mut Core, now: &mut Time, issued: &mut u64) {
    let persist_all = |core: &mut Core, now: Time, issued: &mut u64| {
        for effect in core.take_effects() {
            if let ringraft::core::Effect::Persist(batch) = effect {
                *issued = batch.seq;
                core.step(now, Input::Persisted { seq: batch.seq });
            }
        }
    };
    *now = Time(5_000_000_000);
    core.step(*now, Input::Tick);
    persist_all(core, *now, issued);
    let term = core.term().next();
    let grant = |body| Message {
        from: NodeId(2),
        to: NodeId(1),
        term,
        body,
    };
    core.step(
        *now,
        Input::Message(grant(Body::PreVoteResponse { granted: true })),
    );
    persist_all(core, *now, issued);
    core.step(
        *now,
        Input::Message(grant(Body::RequestVoteResponse { granted: true })),
    );
    persist_all(core, *now, issued);
    assert_eq!(core.role(), ringraft::core::Role::Leader);
}

#[test]
fn random_and_malformed_input_never_panics_and_keeps_invariants() {
    let config = Configuration::voters_with_default_addresses([NodeId(1), NodeId(2), NodeId(3)]);
    let seeds = std::env::var("RINGRAFT_BAD_INPUT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok());
    for seed in 0..seeds.unwrap_or(400u64) {
        let mut rng = Rng::new(seed);
        let state = Core::bootstrap_state(&config).expect("bootstrap");
        let mut core = Core::new(CoreConfig::new(NodeId(1)), state, Time(0)).expect("core");
        let mut now = Time(0);
        let mut issued = 0u64;
        if seed % 2 == 1 {
            make_leader(&mut core, &mut now, &mut issued);
        }
        for step in 0..400u64 {
            now = now.plus_nanos(rng.below(200_000_000));
            let input = match rng.below(12) {
                0 => Input::Tick,
                1 => Input::Propose {
                    token: Token(step),
                    commands: vec![Bytes::from_static(b"c"); rng.below(3) as usize],
                    extensions: vec![Bytes::from_static(b"x"); rng.below(3) as usize],
                },
                2 => Input::ReadIndex { token: Token(step) },
                3 => Input::Persisted {
                    seq: rng.below(issued + 3),
                },
                4 => Input::Applied {
                    index: Index(rng.below(50)),
                },
                _ => Input::Message(Message {
                    from: random_id(&mut rng),
                    to: if rng.chance(1, 10) {
                        random_id(&mut rng)
                    } else {
                        NodeId(1)
                    },
                    term: Term(rng.below(8)),
                    body: random_body(&mut rng),
                }),
            };
            core.step(now, input);
            for effect in core.take_effects() {
                if let ringraft::core::Effect::Persist(batch) = effect {
                    issued = batch.seq;
                }
            }
            if let Err(e) = core.check_invariants() {
                panic!("seed {seed} step {step}: {e}");
            }
        }
    }
}
