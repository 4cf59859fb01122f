//! Starting a shard thread: pin it (optionally), build its tokio current-thread runtime,
//! create the transport inside that runtime, then run the shard loop on it.
//!
//! ```text
//!  Raft::new ──spawn──► shard thread: pin to a core? ─► runtime ─► IntoTransport ─► Shard::run
//!      ▲                                                                  │
//!      └──────── started: Ok / the error (bind, pin, runtime) ────────────┘
//! ```

use super::host::{HostSeat, ShardHost};
use super::shard::Applier;
use super::shard::{Shard, ShardParts};
use super::StopGuard;
use crate::api::error::StartError;
use crate::api::transport::IntoTransport;
use std::sync::mpsc;

/// Runs the node's shard loop as a task on `host`'s thread.
///
/// With `wait`, returns once the node's loop runs on the host (or failed to start). Without
/// it, returns at once: a transport that fails to start then stops the node, as a shutdown
/// does (a `MultiRaft` group, whose start can fail only when its node is stopping;
/// ARCHITECTURE §14, "Starting thousands of groups").
pub(crate) fn spawn_on_host(
    host: &ShardHost,
    parts: ShardParts,
    transport: impl IntoTransport,
    guard: StopGuard,
    seat: Option<HostSeat>,
    wait: bool,
) -> Result<(), StartError> {
    if transport.runs_tasks() && !host.has_io_driver() {
        // Its tasks would panic on the host thread, taking every node there down.
        return Err(StartError::Transport(
            "this transport needs an I/O driver: create the ShardHost with io_driver = true".into(),
        ));
    }
    // No channel when nobody waits (it would be a few hundred bytes per queued loop); the
    // loop counts as queued instead, so that a caller adding thousands waits only while the
    // host is that far behind.
    let (started_tx, started_rx, queued) = match wait {
        true => {
            let (tx, rx) = mpsc::sync_channel::<Result<(), StartError>>(1);
            (Some(tx), Some(rx), None)
        }
        false => (None, None, Some(host.queue_start())),
    };
    // The parts are boxed so the task's future holds a pointer, not a second copy of the
    // shard's state beside the loop's own (a host of thousands of groups pays for every byte
    // of it, ARCHITECTURE §14).
    let parts = Box::new(parts);
    let io_driver = host.has_io_driver();
    host.submit(Box::new(move || {
        Box::pin(async move {
            let _guard = guard;
            let _seat = seat;
            let made = transport.into_transport().await;
            let transport = match made {
                Ok(t) => t,
                Err(e) => return fail(*parts, started_tx, StartError::Transport(e)),
            };
            // Other nodes' loops share this thread: yield after every turn.
            let mut shard = {
                // Moved out of the captured box here, so the box is freed now, not when the
                // node stops.
                let parts = parts;
                Box::new(Shard::new(*parts, transport, true, false))
            };
            if io_driver {
                // A shard thread shared by many groups (a `MultiRaft` node's) reaps its WAL's
                // writes itself; one alone on its thread does better with the WAL's writer
                // thread (docs/PERFORMANCE.md, session 21).
                shard.watch_write_completions();
            }
            drop(queued);
            // Dropped here, not held for the node's life (its channel's memory with it).
            if let Some(started) = started_tx {
                let _ = started.send(Ok(()));
            }
            shard.run().await;
        })
    }));
    let Some(started_rx) = started_rx else {
        return Ok(());
    };
    started_rx
        .recv()
        .unwrap_or_else(|_| Err(StartError::Thread("the shard host thread exited".into())))
}

/// Spawns the shard thread and waits until it runs (or failed to start).
pub(crate) fn spawn_shard(
    parts: ShardParts,
    transport: impl IntoTransport,
    guard: StopGuard,
    cpu: Option<usize>,
) -> Result<(), StartError> {
    let (started_tx, started_rx) = mpsc::sync_channel::<Result<(), StartError>>(1);
    let id = parts.shared.id.0;
    let spawned = std::thread::Builder::new()
        .name(format!("ringraft-shard-{id}"))
        .spawn(move || {
            // Dropped last: whatever happens below, the node ends up stopped.
            let _guard = guard;
            let yield_every_turn = transport.runs_tasks();
            let runtime = match prepare(cpu, yield_every_turn) {
                Ok(runtime) => runtime,
                Err(e) => return fail(parts, Some(started_tx), e),
            };
            let made = runtime.block_on(transport.into_transport());
            let transport = match made {
                Ok(t) => t,
                Err(e) => return fail(parts, Some(started_tx), StartError::Transport(e)),
            };
            let shard = Box::new(Shard::new(parts, transport, yield_every_turn, true));
            let _ = started_tx.send(Ok(()));
            runtime.block_on(shard.run());
        });
    if let Err(e) = spawned {
        return Err(StartError::Thread(e.to_string()));
    }
    started_rx
        .recv()
        .unwrap_or_else(|_| Err(StartError::Thread("the shard thread exited".into())))
}

/// Pins the calling thread (if asked) and builds its runtime: with an I/O driver only for a
/// transport that needs one. Without it the runtime parks on a futex, which is cheaper to
/// wake than epoll (an eventfd write) and to sleep on.
pub(crate) fn prepare(cpu: Option<usize>, io: bool) -> Result<tokio::runtime::Runtime, StartError> {
    // This thread runs shard loops: in debug builds, any storage call that would block it
    // panics (see `ringraft_storage::blocking`).
    ringraft_storage::blocking::forbid_on_this_thread();
    if let Some(cpu) = cpu {
        pin_current_thread(cpu)
            .map_err(|e| StartError::Thread(format!("pin to cpu {cpu}: {e}")))?;
    }
    let mut builder = tokio::runtime::Builder::new_current_thread();
    if !io {
        // In-process nodes (no sockets): spin briefly before parking when requests arrive
        // back to back (`signal::spin_before_park`). Not with an I/O driver: beside TCP tasks
        // and the log store's writer threads, spinning measured slower (docs/PERFORMANCE.md).
        builder
            .on_thread_park(super::signal::spin_before_park)
            .on_thread_unpark(super::signal::note_unpark);
    }
    if io {
        builder.enable_all();
    } else {
        builder.enable_time();
    }
    builder
        .build()
        .map_err(|e| StartError::Thread(format!("tokio runtime: {e}")))
}

/// Answers `Raft::new` with `error` (if it waits) and stops the apply thread the parts own.
fn fail(
    parts: ShardParts,
    started: Option<mpsc::SyncSender<Result<(), StartError>>>,
    error: StartError,
) {
    if let Applier::Thread { tx, thread } = parts.applier {
        drop(tx);
        let _ = thread.join();
    }
    match started {
        Some(started) => {
            let _ = started.send(Err(error));
        }
        // A group of a `MultiRaft` whose node is stopping: it stops as if shut down.
        None => drop(error),
    }
}

/// Restricts the calling thread to `cpu` (Linux `sched_setaffinity`).
#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // `cpu_set_t` holds CPU_SETSIZE (1024) bits.
    let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpu >= bits {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond the {bits} a cpu set holds"),
        ));
    }
    // SAFETY: `cpu_set_t` is plain bits (all-zero is the empty set), `cpu` is in range (checked
    // above), and the pointer and size describe that local set; pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pinning is only implemented on Linux.
#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "pinning threads is only supported on Linux",
    ))
}
