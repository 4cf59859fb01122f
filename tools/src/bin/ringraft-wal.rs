//! `ringraft-wal`: inspect and verify a ringraft segment WAL without modifying it.
//!
//! ```text
//! ringraft-wal stat   DIR                          segments, index range, sizes
//! ringraft-wal dump   DIR [--from N] [--to N] [--json]   entries, human-readable or JSON lines
//! ringraft-wal verify DIR                          scan everything; exit 1 on corruption
//! ```
//!
//! Everything here reads the files with the same pure `scan` recovery uses, so `verify`
//! reports exactly what opening the log would (a torn last batch is reported, not an error).

use clap::{Parser, Subcommand};
use ringraft_storage::record::{decode_raw, DEFAULT_MAX_ENTRY_BYTES};
use ringraft_storage::wal::{list_segments, scan, RecordAction, SegmentScan};
use ringraft_storage::{EntryKind, Index};
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

/// Replays every segment's committed records; returns (first, last) and the problems found.
fn replay(segments: &[Segment]) -> (Option<(Index, Index)>, Vec<String>) {
    let mut problems = Vec::new();
    let mut range: Option<(Index, Index)> = None;
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
        let Some(header) = scan.header else {
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
        };
        let is_last_used = used.last().is_some_and(|last| last.id == segment.id);
        if scan.torn_end > scan.valid_len && !is_last_used {
            problems.push(format!(
                "{}: corruption at offset {}: incomplete batch in a sealed segment",
                segment.path.display(),
                scan.valid_len
            ));
        }
        let base = Index(header.base_index.get());
        let (mut first, mut last) = range.unwrap_or((base, base.prev()));
        if range.is_some() && base != last.next() {
            problems.push(format!(
                "{}: base index {base} does not follow last index {last}",
                segment.path.display()
            ));
        }
        for record in &scan.records {
            match record.action {
                RecordAction::Entry if record.index != last.next() => problems.push(format!(
                    "{}: corruption at offset {}: entry {} where {} was expected",
                    segment.path.display(),
                    record.offset,
                    record.index,
                    last.next()
                )),
                RecordAction::Entry => last = record.index,
                RecordAction::TruncateSuffix => last = last.min(record.index),
                RecordAction::TruncatePrefix if record.index > first => {
                    first = record.index;
                    last = last.max(first.prev());
                }
                RecordAction::TruncatePrefix => {}
                // Not an entry: the node's term, vote and commit index (see `stat`).
                RecordAction::HardState { .. } => {}
            }
        }
        range = Some((first, last));
    }
    (range, problems)
}

fn stat(dir: &Path) -> Result<bool, String> {
    let segments = load(dir)?;
    let (range, problems) = replay(&segments);
    println!(
        "{:>20} {:>12} {:>12} {:>12} {:>10}  state",
        "segment", "base", "size", "used", "records"
    );
    for s in &segments {
        match &s.scan {
            Ok(scan) => {
                let (base, state) = match &scan.header {
                    Some(h) if scan.torn_end > scan.valid_len => (h.base_index.get(), "torn tail"),
                    Some(h) => (h.base_index.get(), "ok"),
                    None => (0, "spare"),
                };
                println!(
                    "{:>20} {:>12} {:>12} {:>12} {:>10}  {state}",
                    s.id,
                    base,
                    s.bytes.len(),
                    scan.valid_len,
                    scan.records.len()
                );
            }
            Err(e) => println!(
                "{:>20} {:>12} {:>12} {:>12} {:>10}  corrupt: {e}",
                s.id,
                "?",
                s.bytes.len(),
                "?",
                "?"
            ),
        }
    }
    match range {
        Some((first, last)) => println!(
            "entries {}..={} ({} entries)",
            first.0,
            last.0,
            (last.0 + 1).saturating_sub(first.0)
        ),
        None => println!("no entries"),
    }
    // The newest hard-state record in log order (each segment starts with a copy).
    let hard_state = segments
        .iter()
        .filter_map(|s| s.scan.as_ref().ok())
        .flat_map(|scan| scan.records.iter())
        .filter_map(|r| match r.action {
            RecordAction::HardState { vote } => Some((r.term, vote, r.index)),
            _ => None,
        })
        .next_back();
    match hard_state {
        Some((term, vote, commit)) => println!(
            "hard state: term {} vote {} commit {}",
            term.0,
            vote.map_or("none".to_string(), |v| v.0.to_string()),
            commit.0
        ),
        None => println!("hard state: none in the log"),
    }
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

fn dump(dir: &Path, from: u64, to: u64, json: bool) -> Result<bool, String> {
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
            .filter(|r| r.action == RecordAction::Entry)
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
    let (range, _) = replay(&segments);
    let (first, last) = range.map_or((1, 0), |(f, l)| (f.0, l.0));
    for (_, entry) in entries.range(from.max(first)..=to.min(last)) {
        print_entry(entry, json);
    }
    Ok(ok)
}

fn verify(dir: &Path) -> Result<bool, String> {
    let segments = load(dir)?;
    let (range, problems) = replay(&segments);
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
        match range {
            Some((first, last)) => println!(
                "ok: {} segments, entries {}..={}",
                segments.len(),
                first.0,
                last.0
            ),
            None => println!("ok: {} segments, no entries", segments.len()),
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
            from,
            to,
            json,
        } => dump(&dir, from, to.unwrap_or(u64::MAX), json),
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
