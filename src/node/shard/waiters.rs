//! The requests a shard's core holds, by token (ARCHITECTURE §10, step 2).
//!
//! Tokens come from one counter and the core answers most requests in about the order it got
//! them (proposals commit in log order), so the waiters live in a deque indexed by
//! `token - base`: an insert is a push at the back, an answer a take from near the front, and
//! the answered front is popped. A waiter that stays while [`WINDOW`] later tokens were issued
//! (a membership change waiting on a slow catch-up, a restore being staged) moves to a
//! map of stragglers, so the deque never grows past the window however long one request waits.
//!
//! Why not a `BTreeMap` alone, as before: with 256 writes in flight on one leader, its inserts
//! at the end and removals at the front were 5.8 % of the in-memory cluster's shard thread
//! (docs/PERFORMANCE.md, session 26).

use crate::core::Token;
use std::collections::{BTreeMap, VecDeque};

/// How many tokens the deque spans at most; older waiters move to the stragglers.
const WINDOW: u64 = 4096;

/// Values by token; see the module docs. Holds no memory while empty, and takes one word in
/// its shard: a `MultiRaft` host keeps tens of thousands of shards, most of them idle.
pub(super) struct Waiters<W>(Option<Box<Held<W>>>);

/// What a non-empty [`Waiters`] holds.
struct Held<W> {
    /// The token of `slots[0]`.
    base: u64,
    /// `slots[i]` is the waiter of token `base + i`, if it has one. Never starts with `None`,
    /// so it is empty exactly when none of its slots holds a waiter.
    slots: VecDeque<Option<W>>,
    /// Waiters whose tokens are below `base`.
    stragglers: BTreeMap<Token, W>,
}

impl<W> Default for Waiters<W> {
    fn default() -> Self {
        Waiters(None)
    }
}

impl<W> Waiters<W> {
    /// Holds `waiter` for `token`, replacing (and returning) one held for it already.
    pub(super) fn insert(&mut self, token: Token, waiter: W) -> Option<W> {
        let held = self.0.get_or_insert_with(|| {
            Box::new(Held {
                base: token.0,
                slots: VecDeque::new(),
                stragglers: BTreeMap::new(),
            })
        });
        held.insert(token, waiter)
    }

    /// Takes the waiter of `token`.
    pub(super) fn remove(&mut self, token: Token) -> Option<W> {
        let held = self.0.as_mut()?;
        let taken = held.remove(token);
        if held.slots.is_empty() && held.stragglers.is_empty() {
            self.0 = None;
        }
        taken
    }

    /// The waiter of `token`, to change in place.
    pub(super) fn get_mut(&mut self, token: Token) -> Option<&mut W> {
        self.0.as_mut()?.get_mut(token)
    }

    /// How many waiters are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |h| {
            h.stragglers.len() + h.slots.iter().filter(|s| s.is_some()).count()
        })
    }

    /// Takes every waiter, in token order.
    pub(super) fn take_all(&mut self) -> Vec<(Token, W)> {
        let Some(held) = self.0.take() else {
            return Vec::new();
        };
        let Held {
            base,
            slots,
            stragglers,
        } = *held;
        let mut all: Vec<(Token, W)> = stragglers.into_iter().collect();
        all.extend(
            slots
                .into_iter()
                .zip(base..)
                .filter_map(|(slot, token)| slot.map(|w| (Token(token), w))),
        );
        all
    }

    /// Drops every waiter.
    pub(super) fn clear(&mut self) {
        self.0 = None;
    }
}

impl<W> Held<W> {
    fn insert(&mut self, token: Token, waiter: W) -> Option<W> {
        // `base` never decreases, so every straggler's token stays below it.
        if self.slots.is_empty() {
            self.base = self.base.max(token.0);
        }
        if token.0 < self.base {
            return self.stragglers.insert(token, waiter);
        }
        let at = token.0 - self.base;
        if at >= WINDOW {
            // A jump of a window or more: the current slots become stragglers.
            self.retire_front(at - WINDOW + 1);
            if self.slots.is_empty() {
                self.base = self.base.max(token.0);
            }
        }
        let at = (token.0 - self.base) as usize;
        if at >= self.slots.len() {
            self.slots.resize_with(at, || None);
            self.slots.push_back(Some(waiter));
            None
        } else {
            self.slots[at].replace(waiter)
        }
    }

    fn remove(&mut self, token: Token) -> Option<W> {
        if token.0 < self.base {
            return self.stragglers.remove(&token);
        }
        let at = usize::try_from(token.0 - self.base).ok()?;
        let taken = self.slots.get_mut(at)?.take();
        if at == 0 {
            self.pop_answered();
        }
        taken
    }

    fn get_mut(&mut self, token: Token) -> Option<&mut W> {
        if token.0 < self.base {
            return self.stragglers.get_mut(&token);
        }
        let at = usize::try_from(token.0 - self.base).ok()?;
        self.slots.get_mut(at)?.as_mut()
    }

    /// Moves the first `n` slots' waiters to the stragglers.
    fn retire_front(&mut self, n: u64) {
        for _ in 0..n {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if let Some(waiter) = slot {
                self.stragglers.insert(Token(self.base), waiter);
            }
            self.base += 1;
        }
        self.pop_answered();
    }

    /// Pops answered slots off the front.
    fn pop_answered(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_in_any_order_find_their_waiters() {
        let mut w = Waiters::default();
        for t in 1..=10u64 {
            assert!(w.insert(Token(t), t * 10).is_none());
        }
        assert_eq!(w.remove(Token(3)), Some(30));
        assert_eq!(w.remove(Token(3)), None);
        assert_eq!(w.remove(Token(1)), Some(10));
        assert_eq!(w.remove(Token(11)), None);
        assert_eq!(w.remove(Token(0)), None);
        *w.get_mut(Token(5)).expect("held") += 1;
        assert_eq!(w.remove(Token(5)), Some(51));
        assert_eq!(w.len(), 7);
        let rest: Vec<u64> = w
            .take_all()
            .into_iter()
            .map(|(t, v)| t.0 * 1000 + v)
            .collect();
        assert_eq!(
            rest,
            vec![2020, 4040, 6060, 7070, 8080, 9090, 10100],
            "the rest, in token order"
        );
        assert_eq!(w.len(), 0);
        assert_eq!(w.remove(Token(2)), None);
    }

    #[test]
    fn tokens_without_waiters_leave_gaps_that_are_skipped() {
        let mut w = Waiters::default();
        w.insert(Token(100), 'a');
        w.insert(Token(104), 'b');
        assert_eq!(w.remove(Token(102)), None);
        assert_eq!(w.remove(Token(100)), Some('a'));
        assert_eq!(
            w.0.as_ref().map(|h| h.base),
            Some(104),
            "the front gap is popped"
        );
        assert_eq!(w.remove(Token(104)), Some('b'));
        assert!(w.0.is_none(), "empty, it holds no memory");
        w.insert(Token(200), 'c');
        assert_eq!(w.0.as_ref().map(|h| h.base), Some(200));
        assert_eq!(w.get_mut(Token(200)), Some(&mut 'c'));
    }

    #[test]
    fn a_waiter_left_behind_moves_aside_and_the_deque_stays_within_its_window() {
        let mut w = Waiters::default();
        w.insert(Token(1), 1u64);
        for t in 2..=3 * WINDOW {
            w.insert(Token(t), t);
            assert_eq!(w.remove(Token(t)), Some(t));
            let held = w.0.as_ref().expect("token 1 is held");
            assert!(held.slots.len() as u64 <= WINDOW, "token {t}");
        }
        assert_eq!(w.0.as_ref().map(|h| h.stragglers.len()), Some(1));
        assert_eq!(w.get_mut(Token(1)), Some(&mut 1));
        assert_eq!(w.remove(Token(1)), Some(1));
        assert_eq!(w.len(), 0);
        assert!(w.0.is_none());
    }

    #[test]
    fn a_jump_past_the_window_keeps_every_waiter() {
        let mut w = Waiters::default();
        for t in 1..=5 {
            w.insert(Token(t), t);
        }
        w.insert(Token(5 + 10 * WINDOW), 0);
        assert_eq!(
            w.insert(Token(3), 33),
            Some(3),
            "a straggler can be replaced"
        );
        let all: Vec<(u64, u64)> = w.take_all().into_iter().map(|(t, v)| (t.0, v)).collect();
        assert_eq!(
            all,
            vec![
                (1, 1),
                (2, 2),
                (3, 33),
                (4, 4),
                (5, 5),
                (5 + 10 * WINDOW, 0)
            ]
        );
    }

    #[test]
    fn matches_a_map_under_random_operations() {
        let mut w = Waiters::default();
        let mut model = BTreeMap::new();
        let mut next = 1u64;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                0..=3 => {
                    next += 1 + (x >> 8) % 3;
                    assert_eq!(w.insert(Token(next), next), model.insert(next, next));
                }
                4..=6 => {
                    // Mostly near the oldest held, sometimes anywhere.
                    let token = if x % 16 < 12 {
                        model.keys().next().copied().unwrap_or(0) + (x >> 20) % 4
                    } else {
                        (x >> 20) % (next + 2)
                    };
                    assert_eq!(w.remove(Token(token)), model.remove(&token));
                }
                7 if x % 32 == 7 => {
                    // A token from the past (the shard never does this; the map still holds).
                    let token = (x >> 20) % (next + 2);
                    assert_eq!(w.insert(Token(token), !token), model.insert(token, !token));
                }
                _ => {
                    let token = (x >> 20) % (next + 2);
                    assert_eq!(w.get_mut(Token(token)).copied(), model.get(&token).copied());
                }
            }
            assert_eq!(w.0.is_none(), model.is_empty());
            if let Some(held) = &w.0 {
                assert!(held.slots.len() as u64 <= WINDOW);
                assert!(!matches!(held.slots.front(), Some(None)));
                if step % 1000 == 0 {
                    assert!(held.stragglers.keys().all(|t| t.0 < held.base));
                }
            }
        }
        assert_eq!(w.len(), model.len());
        let all: Vec<(u64, u64)> = w.take_all().into_iter().map(|(t, v)| (t.0, v)).collect();
        assert_eq!(all, model.into_iter().collect::<Vec<_>>());
    }
}
