//! Reading frames from and writing frames to one connection.

use crate::codec::{EncodedFrame, Frame, FrameDecoder};
use crate::transport::PeerError;
use bytes::{Buf, Bytes, BytesMut};
use std::io::IoSlice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Reads into `buf` until it holds a whole frame, then returns it.
///
/// The decoder checks each header (and its size against the maximum) before the buffer is
/// grown to hold the body, so a hostile length never causes an allocation.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
) -> Result<Frame, PeerError> {
    loop {
        if let Some(frame) = decoder.decode(buf).map_err(PeerError::Frame)? {
            return Ok(frame);
        }
        if buf.capacity() - buf.len() < 4096 {
            // Small frames: read in 64 KiB steps. A large frame's body was already reserved
            // exactly by the decoder.
            buf.reserve(64 << 10);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(PeerError::Closed);
        }
    }
}

/// Most parts handed to one `writev` (Linux allows 1024; more gains nothing).
const IOV_MAX_PARTS: usize = 64;

/// Coalesced frames are written once they reach this many bytes.
pub(crate) const COALESCE_BYTES: usize = 256 << 10;

/// Writes `parts` with vectored writes, handling partial writes.
pub(crate) async fn write_parts<W: AsyncWrite + Unpin>(
    stream: &mut W,
    parts: &mut Vec<Bytes>,
) -> Result<(), PeerError> {
    let mut first = 0;
    while first < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[first..]
            .iter()
            .take(IOV_MAX_PARTS)
            .map(|b| IoSlice::new(b))
            .collect();
        let mut written = stream.write_vectored(&slices).await?;
        if written == 0 {
            return Err(PeerError::Closed);
        }
        while written > 0 {
            let part = &mut parts[first];
            if written >= part.len() {
                written -= part.len();
                first += 1;
            } else {
                part.advance(written);
                written = 0;
            }
        }
    }
    parts.clear();
    stream.flush().await?;
    Ok(())
}

/// Writes every frame from `rx` until it closes or a write fails, coalescing whatever is queued
/// at the moment of writing into one vectored write.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    stream: &mut W,
    rx: &mut mpsc::UnboundedReceiver<EncodedFrame>,
) -> Result<(), PeerError> {
    let mut parts = Vec::new();
    while let Some(frame) = rx.recv().await {
        let mut bytes = frame.len();
        parts.extend(frame.into_parts());
        while bytes < COALESCE_BYTES {
            let Ok(frame) = rx.try_recv() else { break };
            bytes += frame.len();
            parts.extend(frame.into_parts());
        }
        write_parts(stream, &mut parts).await?;
    }
    Ok(())
}
