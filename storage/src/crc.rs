//! CRC-32C: of one buffer, and of three buffers at once. Every checksum of the record, frame,
//! segment, stable-file and snapshot formats goes through here (the formats are CRC-32C,
//! exactly as the `crc32c` crate computes it; the property tests compare).
//!
//! The CRC-32C instruction has a latency of three cycles and a throughput of one per cycle,
//! so one buffer's checksum (each step depends on the previous) uses a third of what the
//! instruction can do. A WAL batch of small records checksums many short, independent
//! buffers: interleaving three of them keeps the unit busy (ARCHITECTURE §12, the record
//! format). Results are exactly `crc32c::crc32c` of each buffer.

/// Below this many bytes one instruction stream beats the `crc32c` crate, whose three
/// interleaved streams cost a set-up per call (measured on this VM: 104 bytes 5.9 ns against
/// 10.6 ns, a 40-byte header 3.7 ns against 8.2 ns; even at 512 bytes, 1 KiB the other way).
const SHORT_MAX: usize = 512;

/// The CRC-32C of `bytes`: exactly `crc32c::crc32c`, faster for the short buffers (record
/// headers, small records) checksummed once or more per entry.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_append(0, bytes)
}

/// The CRC-32C of the bytes whose CRC-32C is `crc` followed by `bytes`: exactly
/// `crc32c::crc32c_append` (which it calls for long buffers).
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if bytes.len() < SHORT_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2 (checked just above).
            return unsafe { tail(u64::from(!crc), bytes) };
        }
    }
    crc32c::crc32c_append(crc, bytes)
}

/// The CRC-32C of `a`, `b` and `c`.
pub fn crc32c_3(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2 (checked just above).
            return unsafe { crc32c_3_sse42(a, b, c) };
        }
    }
    [crc32c::crc32c(a), crc32c::crc32c(b), crc32c::crc32c(c)]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_3_sse42(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    use std::arch::x86_64::_mm_crc32_u64;
    // The raw register state: the inverted CRC, as `crc32c_append` defines it.
    let (mut x, mut y, mut z) = (u64::from(!0u32), u64::from(!0u32), u64::from(!0u32));
    let words = a.len().min(b.len()).min(c.len()) / 8;
    for i in 0..words {
        let at = i * 8;
        // SAFETY: `at + 8 <= len` of each slice (`words` counts whole words of the shortest);
        // unaligned reads of plain bytes; x86-64 is little-endian, as CRC-32C consumes them.
        let (wa, wb, wc) = unsafe {
            (
                std::ptr::read_unaligned(a.as_ptr().add(at).cast::<u64>()),
                std::ptr::read_unaligned(b.as_ptr().add(at).cast::<u64>()),
                std::ptr::read_unaligned(c.as_ptr().add(at).cast::<u64>()),
            )
        };
        x = _mm_crc32_u64(x, wa);
        y = _mm_crc32_u64(y, wb);
        z = _mm_crc32_u64(z, wc);
    }
    let done = words * 8;
    // The rest of each buffer (usually nothing: records are multiples of 8 bytes, and an
    // append's are mostly of one size) one at a time. Not through `crc32c_append`: its set-up
    // for long buffers cost more than the whole interleaved loop on 104-byte records.
    // SAFETY: SSE 4.2 is enabled for this function, as for the callee.
    unsafe {
        [
            tail(x, &a[done..]),
            tail(y, &b[done..]),
            tail(z, &c[done..]),
        ]
    }
}

/// Finishes a CRC-32C from the raw register state `state` over `rest`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn tail(mut state: u64, rest: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = rest.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        state = _mm_crc32_u64(state, u64::from_le_bytes(w));
    }
    let mut small = state as u32;
    for &byte in words.remainder() {
        small = _mm_crc32_u8(small, byte);
    }
    !small
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn equals_three_separate_checksums(
            a in proptest::collection::vec(any::<u8>(), 0..300),
            b in proptest::collection::vec(any::<u8>(), 0..300),
            c in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let got = crc32c_3(&a, &b, &c);
            prop_assert_eq!(got, [crc32c::crc32c(&a), crc32c::crc32c(&b), crc32c::crc32c(&c)]);
        }

        #[test]
        fn one_buffer_equals_the_crate(
            a in proptest::collection::vec(any::<u8>(), 0..1200),
            b in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(crc32c(&a), crc32c::crc32c(&a));
            let seeded = crc32c::crc32c(&a);
            prop_assert_eq!(crc32c_append(seeded, &b), crc32c::crc32c_append(seeded, &b));
        }
    }

    #[test]
    fn known_values() {
        // CRC-32C check value (RFC 3720 appendix B.4): "123456789" -> 0xE3069283.
        let [x, y, z] = crc32c_3(b"123456789", b"", &[0u8; 32]);
        assert_eq!(x, 0xE306_9283);
        assert_eq!(y, 0);
        assert_eq!(z, 0x8A91_36AA);
    }
}
