//! Snapshot transfer in chunks, as the simulated glue and the test cluster perform it.

use bytes::Bytes;
use ringraft_storage::SnapshotMeta;

/// The chunk of `bytes` at `offset`, at most `max_bytes` long, and whether it is the last.
pub fn read_chunk(bytes: &Bytes, offset: u64, max_bytes: u64) -> (Bytes, bool) {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let len = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let end = start.saturating_add(len).min(bytes.len());
    (bytes.slice(start..end), end == bytes.len())
}

/// A whole received snapshot: its metadata and bytes.
pub type Received = (SnapshotMeta, Vec<u8>);

/// A snapshot being received, one chunk after the other.
#[derive(Debug, Default)]
pub struct Receiver {
    receiving: Option<Received>,
}

impl Receiver {
    /// Takes the chunk at `offset` (0 starts over). Returns the next offset, and when `done`
    /// the whole snapshot. Errors describe a core that sent chunks out of order or a size
    /// mismatch.
    pub fn accept(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
    ) -> Result<(u64, Option<Received>), String> {
        if offset == 0 {
            self.receiving = Some((meta.clone(), Vec::new()));
        }
        let Some((receiving, buffer)) = self.receiving.as_mut() else {
            return Err(format!("snapshot chunk at {offset} without a start"));
        };
        if receiving.last != meta.last || buffer.len() as u64 != offset {
            return Err(format!(
                "snapshot chunk for {} out of order at {offset}",
                meta.last
            ));
        }
        buffer.extend_from_slice(data);
        let next_offset = buffer.len() as u64;
        if !done {
            return Ok((next_offset, None));
        }
        let whole = self.receiving.take();
        if let Some((meta, buffer)) = &whole {
            if buffer.len() as u64 != meta.size {
                return Err(format!(
                    "snapshot of {} bytes, expected {}",
                    buffer.len(),
                    meta.size
                ));
            }
        }
        Ok((next_offset, whole))
    }
}
