//! `ringraft-wal`: inspect and verify a ringraft segment WAL without modifying it.
//!
//! ```text
//! ringraft-wal stat   DIR                          segments, each group's range, sizes
//! ringraft-wal dump   DIR [--group G] [--from N] [--to N] [--json]   one group's entries
//! ringraft-wal verify DIR                          scan everything; exit 1 on corruption
//! ```
//!
//! A WAL holds one group's log (group 0 unless configured otherwise) or, shared by a
//! `MultiRaft` node, many groups' logs; every record names its group.
//!
//! Everything here reads the files with the same pure `scan` recovery uses, so `verify`
//! reports exactly what opening the log would (a torn last batch is reported, not an error).

use clap::{Parser, Subcommand};
use ringraft_storage::record::{decode_raw, DEFAULT_MAX_ENTRY_BYTES};
use ringraft_storage::wal::{list_segments, scan, RecordAction, SegmentScan};
use ringraft_storage::{EntryKind, GroupId, HardState, Index};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "ringraft-wal",
    version,
    about = "Inspects and verifies a ringraft segment WAL without modifying it.",
    after_help = "Exit status: 0 if the log is sound, 1 if it has problems, 2 if it cannot be \
                  read."
)]
struct Cli {
    #[command(subcommand)]
    command: WalCommand,
}

/// What to do with the WAL directory.
#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Segments, index range, sizes and the newest hard state.
    Stat {
        /// The WAL directory (a node's DATA/wal).
        dir: PathBuf,
    },
    /// The entries, human-readable or as JSON lines.
    Dump {
        /// The WAL directory (a node's DATA/wal).
        dir: PathBuf,
        /// The group whose entries to print.
        #[arg(long, value_name = "G", default_value_t = 0)]
        group: u64,
        /// The first index to print.
        #[arg(long, value_name = "N", default_value_t = 0)]
        from: u64,
        /// The last index to print [default: the last entry].
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// One JSON object per entry.
        #[arg(long)]
        json: bool,
    },
    /// Scan everything, as opening the log would; exit 1 on corruption.
    Verify {
        /// The WAL directory (a node's DATA/wal).
        dir: PathBuf,
    },
}

struct Segment {
    id: u64,
    path: PathBuf,
    bytes: Vec<u8>,
    scan: Result<SegmentScan, String>,
}

fn load(dir: &Path) -> Result<Vec<Segment>, String> {
    let listing = list_segments(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for (id, path) in listing {
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let scan = scan(&bytes, DEFAULT_MAX_ENTRY_BYTES).map_err(|e| e.to_string());
        out.push(Segment {
            id,
            path,
            bytes,
            scan,
        });
    }
    Ok(out)
}

/// One group's log as replayed.
#[derive(Clone, Copy, Debug, Default)]
struct GroupRange {
    first: Index,
    last: Index,
    hard_state: Option<HardState>,
}

/// Replays every segment's committed records; returns each group's range and hard state,
/// and the problems found (the same checks recovery makes).
fn replay(segments: &[Segment]) -> (BTreeMap<GroupId, GroupRange>, Vec<String>) {
    let mut problems = Vec::new();
    let mut groups: BTreeMap<GroupId, GroupRange> = BTreeMap::new();
    // Entries of a group whose records were in segments before the oldest one.
    let mut missing: BTreeMap<GroupId, (Index, Index)> = BTreeMap::new();
    // Rewrites in progress: (the first copy's index, the next one's, the last one's).
    let mut rewriting: BTreeMap<GroupId, (Index, Index, Index)> = BTreeMap::new();
    let used: Vec<&Segment> = segments
        .iter()
        .filter(|s| s.scan.as_ref().is_ok_and(|s| s.header.is_some()))
        .collect();
    for (k, segment) in segments.iter().enumerate() {
        let scan = match &segment.scan {
            Ok(scan) => scan,
            Err(e) => {
                problems.push(format!("{}: corruption {e}", segment.path.display()));
                continue;
            }
        };
        if scan.header.is_none() {
            // Unused segments may end the list (the spare; two after some power losses).
            let used_after = segments[k + 1..]
                .iter()
                .any(|s| s.scan.as_ref().is_ok_and(|s| s.header.is_some()));
            if used_after {
                problems.push(format!(
                    "{}: unused segment before used ones",
                    segment.path.display()
                ));
            }
            continue;
        }
        let is_first_used = used.first().is_some_and(|first| first.id == segment.id);
        let is_last_used = used.last().is_some_and(|last| last.id == segment.id);
        if scan.torn_end > scan.valid_len && !is_last_used {
            problems.push(format!(
                "{}: corruption at offset {}: incomplete batch in a sealed segment",
                segment.path.display(),
                scan.valid_len
            ));
        }
        for record in &scan.records {
            let at = || format!("{}: offset {}", segment.path.display(), record.offset);
            if let RecordAction::Checkpoint {
                first,
                vote,
                commit,
            } = record.action
            {
                let hs = HardState {
                    term: record.term,
                    vote,
                    commit,
                };
                let hard_state = (hs != HardState::default()).then_some(hs);
                match groups.get_mut(&record.group) {
                    None if is_first_used => {
                        let start = record.index.next().max(first);
                        groups.insert(
                            record.group,
                            GroupRange {
                                first: start,
                                last: start.prev(),
                                hard_state,
                            },
                        );
                        if first <= record.index {
                            missing.insert(record.group, (first, record.index));
                        }
                    }
                    None => problems.push(format!(
                        "{}: checkpoint of group {} which no earlier record names",
                        at(),
                        record.group.0
                    )),
                    Some(range) => {
                        let held = missing.get(&record.group).map_or(range.first, |m| m.0);
                        if held != first || range.last != record.index {
                            problems.push(format!(
                                "{}: corruption: checkpoint of group {} says {}..={}, the log \
                                 holds {}..={}",
                                at(),
                                record.group.0,
                                first,
                                record.index,
                                held,
                                range.last
                            ));
                        }
                        range.hard_state = hard_state.or(range.hard_state);
                    }
                }
                continue;
            }
            if record.action == RecordAction::RemoveGroup {
                // The group's log so far is gone; later records start a new one.
                groups.remove(&record.group);
                missing.remove(&record.group);
                rewriting.remove(&record.group);
                continue;
            }
            if let Some((start, next, until)) = rewriting.get_mut(&record.group) {
                // Copies of the group's log; a rewrite cut short by a crash is ignored.
                match record.action {
                    RecordAction::Entry if *next <= *until && record.index == *next => {
                        *next = next.next();
                        continue;
                    }
                    RecordAction::RewriteEnd if *next == until.next() && record.index == *until => {
                        // The whole log, now complete from its copies.
                        if let Some(range) = groups.get_mut(&record.group) {
                            range.first = *start;
                            range.last = *until;
                        }
                        rewriting.remove(&record.group);
                        missing.remove(&record.group);
                        continue;
                    }
                    _ => {
                        rewriting.remove(&record.group);
                    }
                }
            }
            let range = groups.entry(record.group).or_insert(GroupRange {
                first: Index(1),
                last: Index(0),
                hard_state: None,
            });
            match record.action {
                RecordAction::Entry if record.index != range.last.next() => problems.push(format!(
                    "{}: corruption: entry {} of group {} where {} was expected",
                    at(),
                    record.index,
                    record.group.0,
                    range.last.next()
                )),
                RecordAction::Entry => range.last = record.index,
                RecordAction::TruncateSuffix => {
                    range.last = range.last.min(record.index);
                    if let Some(m) = missing.get_mut(&record.group) {
                        m.1 = m.1.min(record.index);
                        if m.1 < m.0 {
                            missing.remove(&record.group);
                        }
                    }
                }
                RecordAction::TruncatePrefix => {
                    if let Some(m) = missing.get_mut(&record.group) {
                        m.0 = m.0.max(record.index);
                        if m.0 > m.1 {
                            missing.remove(&record.group);
                        }
                    }
                    if record.index > range.first {
                        range.first = record.index;
                        range.last = range.last.max(range.first.prev());
                    }
                }
                RecordAction::HardState { vote } => {
                    range.hard_state = Some(HardState {
                        term: record.term,
                        vote,
                        commit: record.index,
                    })
                }
                RecordAction::RewriteBegin { last } => {
                    let held = missing.get(&record.group).map_or(range.first, |m| m.0);
                    if record.index != held || last != range.last {
                        problems.push(format!(
                            "{}: corruption: rewrite of group {} of {}..={} where the log holds \
                             {}..={}",
                            at(),
                            record.group.0,
                            record.index,
                            last,
                            held,
                            range.last
                        ));
                    }
                    rewriting.insert(record.group, (record.index, record.index, last));
                }
                RecordAction::RewriteEnd => problems.push(format!(
                    "{}: corruption: rewrite end of group {} without its beginning",
                    at(),
                    record.group.0
                )),
                RecordAction::Checkpoint { .. } | RecordAction::RemoveGroup => {}
            }
        }
    }
    for (group, (first, last)) in missing {
        problems.push(format!(
            "corruption: entries {first}..={last} of group {} were in segments that are gone",
            group.0
        ));
    }
    (groups, problems)
}

/// "group G: entries F..=L (N entries), hard state …" for each group.
fn describe_groups(groups: &BTreeMap<GroupId, GroupRange>) {
    if groups.is_empty() {
        println!("no entries");
        println!("hard state: none in the log");
    }
    for (group, range) in groups {
        let entries = (range.last.0 + 1).saturating_sub(range.first.0);
        let hard_state = match range.hard_state {
            Some(hs) => format!(
                "term {} vote {} commit {}",
                hs.term.0,
                hs.vote.map_or("none".to_string(), |v| v.0.to_string()),
                hs.commit.0
            ),
            None => "none in the log".into(),
        };
        if entries == 0 {
            println!(
                "group {}: no entries (next index {}); hard state: {hard_state}",
                group.0, range.first.0
            );
        } else {
            println!(
                "group {}: entries {}..={} ({entries} entries); hard state: {hard_state}",
                group.0, range.first.0, range.last.0
            );
        }
    }
}

fn stat(dir: &Path) -> Result<bool, String> {
    let segments = load(dir)?;
    let (groups, problems) = replay(&segments);
    println!(
        "{:>20} {:>12} {:>12} {:>10}  state",
        "segment", "size", "used", "records"
    );
    for s in &segments {
        match &s.scan {
            Ok(scan) => {
                let state = match &scan.header {
                    Some(_) if scan.torn_end > scan.valid_len => "torn tail",
                    Some(_) => "ok",
                    None => "spare",
                };
                println!(
                    "{:>20} {:>12} {:>12} {:>10}  {state}",
                    s.id,
                    s.bytes.len(),
                    scan.valid_len,
                    scan.records.len()
                );
            }
            Err(e) => println!(
                "{:>20} {:>12} {:>12} {:>10}  corrupt: {e}",
                s.id,
                s.bytes.len(),
                "?",
                "?"
            ),
        }
    }
    describe_groups(&groups);
    println!(
        "total bytes {}",
        segments.iter().map(|s| s.bytes.len() as u64).sum::<u64>()
    );
    for p in &problems {
        println!("problem: {p}");
    }
    Ok(problems.is_empty())
}

fn json_string(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kind_name(code: u8) -> &'static str {
    match EntryKind::from_code(code) {
        Some(EntryKind::Command) => "command",
        Some(EntryKind::Noop) => "noop",
        Some(EntryKind::Barrier) => "barrier",
        Some(EntryKind::Configuration) => "configuration",
        _ => "unknown",
    }
}

/// One decoded entry record, owned.
struct Dumped {
    index: u64,
    term: u64,
    kind: u8,
    data: Vec<u8>,
    extensions_len: usize,
}

fn print_entry(entry: &Dumped, json: bool) {
    if json {
        println!(
            "{{\"index\":{},\"term\":{},\"kind\":\"{}\",\"data_len\":{},\"data\":{},\"extensions_len\":{}}}",
            entry.index,
            entry.term,
            kind_name(entry.kind),
            entry.data.len(),
            json_string(&entry.data),
            entry.extensions_len
        );
    } else {
        let preview: String = String::from_utf8_lossy(&entry.data[..entry.data.len().min(48)])
            .chars()
            .map(|c| if c.is_control() { '.' } else { c })
            .collect();
        println!(
            "{:>10} t{:<6} {:<13} {:>8} B  {preview}",
            entry.index,
            entry.term,
            kind_name(entry.kind),
            entry.data.len()
        );
    }
}

fn dump(dir: &Path, group: GroupId, from: u64, to: u64, json: bool) -> Result<bool, String> {
    let segments = load(dir)?;
    let mut ok = true;
    // Later records supersede earlier ones at the same index (after a tail truncation), so
    // collect the final entry for each index before printing.
    let mut entries = std::collections::BTreeMap::new();
    for s in &segments {
        let Ok(scan) = &s.scan else {
            ok = false;
            continue;
        };
        for record in scan
            .records
            .iter()
            .filter(|r| r.action == RecordAction::Entry && r.group == group)
        {
            let at = s.bytes.get(record.offset as usize..).unwrap_or(&[]);
            match decode_raw(at, DEFAULT_MAX_ENTRY_BYTES) {
                Ok(r) => {
                    let entry = Dumped {
                        index: r.index().0,
                        term: r.term().0,
                        kind: r.kind_code(),
                        data: r.data.to_vec(),
                        extensions_len: r.extensions.len(),
                    };
                    entries.insert(entry.index, entry);
                }
                Err(e) => {
                    eprintln!("{}: offset {}: {e}", s.path.display(), record.offset);
                    ok = false;
                }
            }
        }
    }
    let (groups, _) = replay(&segments);
    let (first, last) = groups.get(&group).map_or((1, 0), |r| (r.first.0, r.last.0));
    for (_, entry) in entries.range(from.max(first)..=to.min(last)) {
        print_entry(entry, json);
    }
    Ok(ok)
}

fn verify(dir: &Path) -> Result<bool, String> {
    let segments = load(dir)?;
    let (groups, problems) = replay(&segments);
    for s in &segments {
        if let Ok(scan) = &s.scan {
            if scan.torn_end > scan.valid_len {
                println!(
                    "{}: torn last batch at offsets {}..{} (never acknowledged; recovery discards it)",
                    s.path.display(),
                    scan.valid_len,
                    scan.torn_end
                );
            }
        }
    }
    for p in &problems {
        println!("{p}");
    }
    if problems.is_empty() {
        match (groups.len(), groups.values().next()) {
            (1, Some(range)) if range.last >= range.first => println!(
                "ok: {} segments, entries {}..={}",
                segments.len(),
                range.first.0,
                range.last.0
            ),
            (0 | 1, _) => println!("ok: {} segments, no entries", segments.len()),
            (n, _) => println!("ok: {} segments, {n} groups", segments.len()),
        }
    }
    Ok(problems.is_empty())
}

fn main() -> ExitCode {
    // Help, --version and command-line errors (naming the flag) exit here.
    let result = match Cli::parse().command {
        WalCommand::Stat { dir } => stat(&dir),
        WalCommand::Dump {
            dir,
            group,
            from,
            to,
            json,
        } => dump(&dir, GroupId(group), from, to.unwrap_or(u64::MAX), json),
        WalCommand::Verify { dir } => verify(&dir),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("ringraft-wal: {message}");
            ExitCode::from(2)
        }
    }
}
