//! Loopback addresses for a local cluster whose every node's address must be known before any
//! node binds its listener (tests, benchmarks, a local demo cluster).
//!
//! Binding port 0 and releasing it is not enough: the port then lies in the kernel's ephemeral
//! range, and until the node binds it again any outgoing connection may take it as its source
//! port, including the node's own peers dialling each other (the transport binds its source
//! address, ARCHITECTURE §6). The node then fails to start with "address already in use". The
//! ports chosen here lie below that range, where the kernel never picks one by itself.

use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::ops::Range;

/// Where ports are picked when the ephemeral range cannot be read (Linux's default range
/// starts at 32768; the IANA range at 49152).
const DEFAULT_EPHEMERAL_START: u16 = 32768;

/// The lowest port handed out: well clear of the registered services below it.
const LOWEST: u16 = 16384;

/// `n` distinct loopback addresses (127.0.0.1) whose ports are free now and lie outside the
/// kernel's ephemeral range, so no outgoing connection takes one before a node binds it.
///
/// Each port is probed by binding it; all are released together when this returns. The search
/// starts at a random port, so concurrent callers rarely probe the same ones. Meant for tests
/// and local clusters: production nodes have configured addresses.
///
/// # Errors
/// An I/O error if fewer than `n` such ports are free.
pub fn free_loopback_addresses(n: usize) -> io::Result<Vec<SocketAddr>> {
    let range = candidate_range(ephemeral_start());
    let offset = RandomState::new().hash_one(std::process::id());
    pick(range, offset, n)
}

/// `n` free loopback ports from `range`, searched from `offset` (modulo the range's width).
fn pick(range: Range<u16>, offset: u64, n: usize) -> io::Result<Vec<SocketAddr>> {
    let width = u32::from(range.end - range.start).max(1);
    let offset = (offset % u64::from(width)) as u32;
    let mut held = Vec::with_capacity(n);
    for step in 0..width {
        if held.len() == n {
            break;
        }
        let port = range.start + ((offset + step) % width) as u16;
        // A port in use in any state, TIME_WAIT included, fails this bind: it is skipped.
        if let Ok(listener) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(listener);
        }
    }
    if held.len() < n {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "only {} of {n} loopback ports in {}..{} are free",
                held.len(),
                range.start,
                range.end
            ),
        ));
    }
    held.iter().map(TcpListener::local_addr).collect()
}

/// The first port of the kernel's ephemeral range (Linux), or a common default.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

/// Ports below the ephemeral range, or (when that range starts too low to leave room) the
/// ports from `LOWEST` up anyway.
fn candidate_range(ephemeral_start: u16) -> Range<u16> {
    if ephemeral_start >= LOWEST + 1024 {
        LOWEST..ephemeral_start
    } else {
        LOWEST..u16::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_free_loopback_ports_below_the_ephemeral_range() {
        let start = ephemeral_start();
        let addresses = free_loopback_addresses(8).expect("free ports");
        assert_eq!(addresses.len(), 8);
        let mut ports: Vec<u16> = addresses.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 8, "{addresses:?}");
        for address in &addresses {
            assert!(address.ip().is_loopback());
            assert!(
                candidate_range(start).contains(&address.port()),
                "{address}"
            );
            // Released: a node can bind it.
            TcpListener::bind(address).expect("the port is free again");
        }
    }

    #[test]
    fn a_port_in_use_is_skipped_and_a_full_range_is_an_error() {
        let address = free_loopback_addresses(1).expect("a free port")[0];
        let _taken = TcpListener::bind(address).expect("bind");
        let port = address.port();
        // The search starts at the taken port: it moves on to the next free one.
        let picked = pick(port..port + 64, 0, 2).expect("free ports");
        assert!(picked.iter().all(|a| a.port() != port), "{picked:?}");
        // A range of only the taken port has nothing to give.
        let err = pick(port..port + 1, 0, 1).expect_err("the only port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn the_range_leaves_the_ephemeral_ports_alone() {
        assert_eq!(candidate_range(32768), 16384..32768);
        assert_eq!(candidate_range(49152), 16384..49152);
        // A range that starts too low leaves no room below it.
        assert_eq!(candidate_range(1024), 16384..u16::MAX);
    }
}
