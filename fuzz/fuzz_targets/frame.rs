//! Fuzzes the frame decoder: whole-buffer and streaming decoding must never panic, must agree
//! with each other, and whatever decodes must re-encode to a frame that decodes to the same
//! value. When the first input byte is odd, a valid frame header (with a correct checksum) is
//! put in front of the rest, so the fuzzer spends its time on bodies rather than on the CRC.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use ringraft_net::codec::{decode_frame, encode_hello, encode_message, FrameDecoder, Payload};
use ringraft_net::frame::{FrameHeader, FrameKind, FRAME_HEADER_SIZE};

const MAX_FRAME_BYTES: usize = 1 << 16;

fn with_valid_header(data: &[u8]) -> Vec<u8> {
    let kinds = FrameKind::ALL;
    let kind = kinds[usize::from(data.get(1).copied().unwrap_or(0)) % kinds.len()];
    let body = data.get(2..).unwrap_or(&[]);
    let mut header = FrameHeader::new(kind, 7, 0, body.len() as u32);
    let checked = if kind == FrameKind::AppendEntries {
        &body[..body.len().min(ringraft_net::codec::APPEND_FIXED_BYTES)]
    } else {
        body
    };
    header.crc = header.compute_crc(checked).into();
    let mut out = zerocopy::IntoBytes::as_bytes(&header).to_vec();
    out.extend_from_slice(body);
    out
}

fuzz_target!(|data: &[u8]| {
    let bytes = if data.first().is_some_and(|b| b & 1 == 1) {
        with_valid_header(data)
    } else {
        data.to_vec()
    };
    let buf = Bytes::from(bytes);
    let whole = decode_frame(&buf, MAX_FRAME_BYTES);
    let mut stream = BytesMut::from(&buf[..]);
    let streamed = FrameDecoder::new(MAX_FRAME_BYTES).decode(&mut stream);
    match (&whole, &streamed) {
        (Ok((frame, used)), Ok(Some(f))) => {
            assert_eq!(frame, f);
            assert!(*used >= FRAME_HEADER_SIZE && *used <= buf.len());
            let again = match &frame.payload {
                Payload::Message(m) => {
                    encode_message(m, frame.request_id, frame.group, MAX_FRAME_BYTES)
                        .expect("a decoded message re-encodes")
                }
                Payload::Hello(h) => encode_hello(h),
            };
            let (back, _) = decode_frame(&again.to_bytes(), MAX_FRAME_BYTES).expect("re-decodes");
            assert_eq!(back.payload, frame.payload);
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        // The stream decoder waits for more bytes where the whole-buffer one reports truncation.
        (Err(ringraft_net::frame::FrameError::TruncatedFrame { .. }), Ok(None)) => {}
        other => panic!("decoders disagree: {other:?}"),
    }
});
