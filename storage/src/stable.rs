//! [`FileStableStore`]: hard state in a small file of two alternating checksummed slots.
//!
//! ```text
//!  offset 0    slot A ┐  each slot: magic "RRHS", version, vote flag, sequence number,
//!  offset 512  slot B ┘  term, vote, commit, crc32c of the slot (crc field zeroed)
//! ```
//!
//! Each save writes the slot *not* holding the current state with the next sequence number,
//! then fdatasyncs. A torn write can damage only the slot being written, whose checksum then
//! fails, so the other slot (the previous state) is used on open. The slots sit in separate
//! 512-byte sectors so one torn sector cannot touch both.

use crate::error::StableError;
use crate::store::{HardState, StableStore};
use crate::types::{Index, NodeId, Term};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

const MAGIC: [u8; 4] = *b"RRHS";
const VERSION: u8 = 1;
const SLOT_SPACING: u64 = 512;

#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Slot {
    magic: [u8; 4],
    version: u8,
    has_vote: u8,
    reserved: U16,
    crc: U32,
    reserved2: U32,
    sequence: U64,
    term: U64,
    vote: U64,
    commit: U64,
}
const SLOT_SIZE: usize = 48;
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_SIZE);

impl Slot {
    fn checksum(&self) -> u32 {
        let mut copy = *self;
        copy.crc = U32::new(0);
        crate::crc::crc32c(copy.as_bytes())
    }

    fn decode(bytes: &[u8]) -> Option<(u64, HardState)> {
        let (slot, _) = Slot::read_from_prefix(bytes).ok()?;
        if slot.magic != MAGIC || slot.version != VERSION || slot.crc.get() != slot.checksum() {
            return None;
        }
        let vote = match slot.has_vote {
            0 => None,
            1 => Some(NodeId(slot.vote.get())),
            _ => return None,
        };
        let state = HardState {
            term: Term(slot.term.get()),
            vote,
            commit: Index(slot.commit.get()),
        };
        Some((slot.sequence.get(), state))
    }
}

/// A [`StableStore`] in one file; see the module docs for the format.
#[derive(Debug)]
pub struct FileStableStore {
    file: File,
    path: PathBuf,
    state: HardState,
    sequence: u64,
    failed: Option<StableError>,
}

impl FileStableStore {
    /// Opens the store at `path`, creating it (and making its directory entry durable) if absent.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStableStore, StableError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StableError::io("open", &path, e))?;
        // Even if it existed: a process killed between creating the file and syncing it left
        // both in the page cache only.
        file.sync_all()
            .map_err(|e| StableError::io("fsync", &path, e))?;
        if let Some(dir) = path.parent() {
            crate::create_dir_durable(dir)
                .map_err(|e| StableError::io("fsync directory", dir, e))?;
        }
        let mut bytes = vec![0u8; SLOT_SPACING as usize + SLOT_SIZE];
        let len = read_up_to(&file, &mut bytes).map_err(|e| StableError::io("read", &path, e))?;
        let bytes = &bytes[..len];
        let a = Slot::decode(bytes);
        let b = bytes.get(SLOT_SPACING as usize..).and_then(Slot::decode);
        let (sequence, state) = match (a, b) {
            (Some(a), Some(b)) => {
                if a.0 >= b.0 {
                    a
                } else {
                    b
                }
            }
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) if bytes.iter().all(|&b| b == 0) => (0, HardState::default()),
            (None, None) => {
                return Err(StableError::Corruption {
                    path,
                    reason: "neither hard-state slot has a valid checksum".into(),
                })
            }
        };
        Ok(FileStableStore {
            file,
            path,
            state,
            sequence,
            failed: None,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_up_to(file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

impl StableStore for FileStableStore {
    fn hard_state(&self) -> HardState {
        self.state
    }

    fn save(&mut self, state: &HardState) -> Result<(), StableError> {
        crate::blocking::check("FileStableStore::save (fsync)");
        if let Some(cause) = &self.failed {
            return Err(StableError::Failed {
                cause: Box::new(cause.clone()),
            });
        }
        let sequence = self.sequence + 1;
        let mut slot = Slot {
            magic: MAGIC,
            version: VERSION,
            has_vote: u8::from(state.vote.is_some()),
            reserved: U16::new(0),
            crc: U32::new(0),
            reserved2: U32::new(0),
            sequence: U64::new(sequence),
            term: U64::new(state.term.0),
            vote: U64::new(state.vote.map_or(0, |v| v.0)),
            commit: U64::new(state.commit.0),
        };
        slot.crc = U32::new(slot.checksum());
        let offset = (sequence % 2) * SLOT_SPACING;
        let result = self
            .file
            .write_all_at(slot.as_bytes(), offset)
            .map_err(|e| StableError::io("write", &self.path, e))
            .and_then(|()| {
                self.file
                    .sync_data()
                    .map_err(|e| StableError::io("fdatasync", &self.path, e))
            });
        if let Err(e) = result {
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.sequence = sequence;
        self.state = *state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hardstate");
        let mut store = FileStableStore::open(&path).expect("open");
        assert_eq!(store.hard_state(), HardState::default());
        for term in 1..=5 {
            let state = HardState {
                term: Term(term),
                vote: Some(NodeId(term)),
                commit: Index(7),
            };
            store.save(&state).expect("save");
        }
        drop(store);
        let store = FileStableStore::open(&path).expect("reopen");
        assert_eq!(
            store.hard_state(),
            HardState {
                term: Term(5),
                vote: Some(NodeId(5)),
                commit: Index(7)
            }
        );
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_previous_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hardstate");
        let mut store = FileStableStore::open(&path).expect("open");
        store
            .save(&HardState {
                term: Term(1),
                vote: None,
                commit: Index(0),
            })
            .expect("save");
        store
            .save(&HardState {
                term: Term(2),
                vote: Some(NodeId(3)),
                commit: Index(1),
            })
            .expect("save");
        drop(store);
        // Sequence 2 lives in slot A (offset 0); damage it.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let store = FileStableStore::open(&path).expect("reopen");
        assert_eq!(
            store.hard_state(),
            HardState {
                term: Term(1),
                vote: None,
                commit: Index(0)
            }
        );
        // Both slots bad is corruption, not a silent reset.
        bytes[SLOT_SPACING as usize + 20] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        assert!(matches!(
            FileStableStore::open(&path),
            Err(StableError::Corruption { .. })
        ));
    }
}
