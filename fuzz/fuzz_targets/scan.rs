//! Fuzzes WAL recovery: `scan` must never panic, and what it returns must be self-consistent.
//! When the first input byte is odd, a valid segment header is put in front of the rest, so the
//! fuzzer spends its time on records rather than on the header checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringraft_storage::record::decode_raw;
use ringraft_storage::wal::{scan, SegmentHeader};

const MAX_ENTRY_BYTES: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut bytes = Vec::with_capacity(data.len() + 64);
    if data.first().is_some_and(|b| b & 1 == 1) {
        let header = SegmentHeader::new(1, 0);
        bytes.extend_from_slice(&header.to_bytes());
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    if let Ok(result) = scan(&bytes, MAX_ENTRY_BYTES) {
        assert!(result.valid_len <= result.torn_end);
        assert!(result.torn_end as usize <= bytes.len().max(64));
        let mut previous_end = 0;
        for record in &result.records {
            assert!(record.offset >= previous_end, "records overlap");
            previous_end = record.offset + u64::from(record.len);
            assert!(
                previous_end <= result.valid_len,
                "record beyond the valid prefix"
            );
            assert!(decode_raw(&bytes[record.offset as usize..], MAX_ENTRY_BYTES).is_ok());
        }
    }
    let _ = decode_raw(data, MAX_ENTRY_BYTES);
});
