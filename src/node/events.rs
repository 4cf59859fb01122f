//! The shard's event queue: what the apply loop, the snapshot worker and the stable-store
//! worker tell the shard (`ShardEvent`), drained once per turn.
//!
//! A mutex-guarded deque rather than a std channel: a channel allocates a block of 31 slots
//! per node on its first message and keeps it, which a host of thousands of groups pays for
//! in every replica (ARCHITECTURE §14); this queue grows with use and gives the room back once
//! drained. Producers notify the shard's signal themselves after sending, as before.

use super::apply::ShardEvent;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// An empty queue keeps at most this much room.
const KEPT: usize = 4;

struct Inner {
    queue: Mutex<VecDeque<ShardEvent>>,
    /// False once the shard dropped its receiver: sends fail, as a channel's would.
    open: AtomicBool,
}

/// A new queue: the senders for the producers, the receiver for the shard.
pub(crate) fn channel() -> (EventSender, EventReceiver) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(VecDeque::new()),
        open: AtomicBool::new(true),
    });
    (EventSender(inner.clone()), EventReceiver(inner))
}

/// A producer's end; clones share the queue.
#[derive(Clone)]
pub(crate) struct EventSender(Arc<Inner>);

/// The receiver is gone (the node stopped); the event is dropped.
#[derive(Debug)]
pub(crate) struct Closed;

impl EventSender {
    /// Queues `event` for the shard; fails once the shard stopped.
    pub(crate) fn send(&self, event: ShardEvent) -> Result<(), Closed> {
        if !self.0.open.load(Ordering::Acquire) {
            drop(event);
            return Err(Closed);
        }
        self.0
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(event);
        Ok(())
    }
}

/// The shard's end.
pub(crate) struct EventReceiver(Arc<Inner>);

impl EventReceiver {
    /// The oldest queued event, if any.
    pub(crate) fn try_recv(&self) -> Option<ShardEvent> {
        let mut queue = self.0.queue.lock().unwrap_or_else(|p| p.into_inner());
        let event = queue.pop_front();
        if event.is_none() && queue.capacity() > KEPT {
            *queue = VecDeque::new();
        }
        event
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        self.0.open.store(false, Ordering::Release);
        let drained: VecDeque<ShardEvent> =
            std::mem::take(&mut *self.0.queue.lock().unwrap_or_else(|p| p.into_inner()));
        // Dropped outside the lock (an event may own a snapshot or a reader).
        drop(drained);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringraft_storage::Index;

    #[test]
    fn events_arrive_in_order_and_sends_fail_once_the_receiver_is_gone() {
        let (tx, rx) = channel();
        let tx2 = tx.clone();
        tx.send(ShardEvent::Applied(Index(1))).expect("open");
        tx2.send(ShardEvent::Applied(Index(2))).expect("open");
        assert!(matches!(rx.try_recv(), Some(ShardEvent::Applied(Index(1)))));
        assert!(matches!(rx.try_recv(), Some(ShardEvent::Applied(Index(2)))));
        assert!(rx.try_recv().is_none());
        drop(rx);
        assert!(tx.send(ShardEvent::Applied(Index(3))).is_err());
    }
}
