//! An unbounded queue from the transport's tasks to one receiver that gives back the room of a
//! burst once it is drained.
//!
//! What arrives is already bounded elsewhere (the receive budget, the sending window), so the
//! queue need not bound it; but a host of thousands of groups sees bursts (a herd of
//! elections after a restart) tens of thousands of messages deep, and a queue that kept a
//! burst's room for the rest of its life would hold megabytes the node never needs again.
//! tokio's unbounded channel does keep it: its blocks of slots are recycled, not freed, so its
//! size is its deepest backlog so far. This queue keeps at most [`KEEP`] slots of room once it
//! is empty (ARCHITECTURE §6, "Memory after a burst").
//!
//! The tasks and the receiver share one runtime thread, so the lock is uncontended; the
//! receiver takes everything queued in one locking and hands it out from its own buffer.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Slots of room an empty queue keeps (each side): enough for a busy node's steady flow
/// without allocating every turn, little beside thousands of groups.
pub(crate) const KEEP: usize = 1024;

struct State<T> {
    items: VecDeque<T>,
    waker: Option<Waker>,
    senders: usize,
    receiving: bool,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing in the critical sections panics; a poisoned lock still holds valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A queue's sending side; clones send to the same receiver.
pub(crate) struct Sender<T> {
    inner: Arc<Inner<T>>,
}

/// A queue's receiving side.
pub(crate) struct Receiver<T> {
    inner: Arc<Inner<T>>,
    /// What the last locking took, handed out in order.
    taken: VecDeque<T>,
}

/// A new queue.
pub(crate) fn queue<T>() -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            items: VecDeque::new(),
            waker: None,
            senders: 1,
            receiving: true,
        }),
    });
    (
        Sender {
            inner: inner.clone(),
        },
        Receiver {
            inner,
            taken: VecDeque::new(),
        },
    )
}

/// Frees the room of an empty buffer beyond [`KEEP`] slots.
fn trim<T>(q: &mut VecDeque<T>) {
    if q.is_empty() && q.capacity() > KEEP {
        *q = VecDeque::new();
    }
}

impl<T> Sender<T> {
    /// Queues `item`; gives it back if the receiver is gone.
    pub(crate) fn send(&self, item: T) -> Result<(), T> {
        let waker = {
            let mut s = self.inner.lock();
            if !s.receiving {
                return Err(item);
            }
            s.items.push_back(item);
            s.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.inner.lock().senders += 1;
        Sender {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    /// The last sender gone ends the queue: the receiver gets `None` once it has taken the rest.
    fn drop(&mut self) {
        let waker = {
            let mut s = self.inner.lock();
            s.senders -= 1;
            if s.senders == 0 {
                s.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item: from what the last locking took, else from everything queued now
    /// (taken in one locking). `Err` holds the lock when nothing was queued.
    fn next(&mut self) -> Result<T, MutexGuard<'_, State<T>>> {
        if let Some(item) = self.taken.pop_front() {
            return Ok(item);
        }
        trim(&mut self.taken);
        let Receiver { inner, taken } = self;
        let mut s = inner.lock();
        if !s.items.is_empty() {
            // The senders get this side's empty (trimmed) buffer; the taken one is trimmed
            // here once it is drained.
            std::mem::swap(&mut s.items, taken);
        }
        match taken.pop_front() {
            Some(item) => Ok(item),
            None => {
                trim(&mut s.items);
                Err(s)
            }
        }
    }

    /// The next item; `Ready(None)` once every sender is gone and the queue is empty;
    /// `Pending` (keeping `cx`'s waker) otherwise.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = match self.next() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(s) => s,
        };
        if s.senders == 0 {
            return Poll::Ready(None);
        }
        match &s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next item if one is queued now.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        self.next().ok()
    }

    /// The next item, waiting for one; `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Slots of room the queue holds now, both sides (for tests).
    #[cfg(test)]
    fn room(&self) -> usize {
        self.taken.capacity() + self.inner.lock().items.capacity()
    }
}

impl<T> Drop for Receiver<T> {
    /// Senders fail from now on; what was queued is dropped (outside the lock: dropping an
    /// item may give back a receive-budget share).
    fn drop(&mut self) {
        let left = {
            let mut s = self.inner.lock();
            s.receiving = false;
            s.waker = None;
            std::mem::take(&mut s.items)
        };
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting_waker() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn items_arrive_in_order_and_the_end_comes_after_the_last_sender() {
        let (tx, mut rx) = queue();
        let tx2 = tx.clone();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
        tx.send(1).unwrap();
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            1,
            "a send wakes a waiting receiver"
        );
        tx2.send(2).unwrap();
        tx.send(3).unwrap();
        drop(tx);
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(1)));
        tx2.send(4).unwrap();
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(2)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(3)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(4)));
        assert_eq!(rx.poll_recv(&mut cx), Poll::Pending, "one sender is left");
        drop(tx2);
        assert!(
            woken.0.load(Ordering::SeqCst) >= 2,
            "the last sender's drop wakes"
        );
        assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn sends_fail_once_the_receiver_is_gone_and_its_items_are_dropped() {
        let (tx, rx) = queue();
        let item = Arc::new(());
        tx.send(item.clone()).unwrap();
        drop(rx);
        assert_eq!(Arc::strong_count(&item), 1, "the queued item was dropped");
        let back = tx.send(item.clone()).unwrap_err();
        assert!(Arc::ptr_eq(&back, &item), "the item comes back");
    }

    #[test]
    fn a_drained_queue_gives_back_the_room_of_a_burst() {
        let (tx, mut rx) = queue();
        let (_, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        for round in 0..3 {
            for i in 0..50_000u64 {
                tx.send(i).unwrap();
            }
            for i in 0..50_000u64 {
                assert_eq!(rx.poll_recv(&mut cx), Poll::Ready(Some(i)), "round {round}");
            }
            assert!(
                rx.room() >= 50_000,
                "the burst's room is still held while taken"
            );
            assert_eq!(rx.poll_recv(&mut cx), Poll::Pending);
            assert!(
                rx.room() <= 2 * KEEP,
                "round {round}: {} slots kept after the burst",
                rx.room()
            );
        }
        // A steady flow keeps its room rather than allocating each time.
        for i in 0..100u64 {
            tx.send(i).unwrap();
        }
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut cx) {}
        assert!(rx.room() > 0);
    }
}
