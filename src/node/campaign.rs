//! A node's campaign slots (ARCHITECTURE §14, "Herds"): at most `limit` of its groups
//! campaign, or lead without having settled, at once; the others wait in the order they
//! asked. The rules alone, without wakers or inboxes: the router keeps one of these per node,
//! and the simulator's hosts run the same rules (`src/sim/node.rs`).

use std::collections::{BTreeMap, VecDeque};

/// A group's place in its node's campaign pacing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Neither holds nor waits for a slot.
    #[default]
    None,
    /// In line for one.
    Waiting,
    /// Holds one.
    Held,
}

/// The slots of one node, shared by its groups (keyed by `G`).
#[derive(Debug)]
pub(crate) struct CampaignSlots<G> {
    limit: usize,
    held: usize,
    /// Groups in the order they asked; an entry whose group no longer waits is skipped.
    queue: VecDeque<G>,
}

/// Where a node's groups keep their places in line.
pub(crate) trait Places<G> {
    /// `group`'s place, or `None` if the group is gone from the node.
    fn place(&mut self, group: G) -> Option<&mut Slot>;
}

impl<G: Ord> Places<G> for BTreeMap<G, Slot> {
    fn place(&mut self, group: G) -> Option<&mut Slot> {
        self.get_mut(&group)
    }
}

/// What [`CampaignSlots::poll`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// The group holds a slot (it just got one, or already had it).
    Granted,
    /// The group joined the line.
    Queued,
    /// The group was already in line.
    Waiting,
}

impl<G: Copy> CampaignSlots<G> {
    /// Slots for `limit` groups at once (at least one).
    pub(crate) fn new(limit: usize) -> CampaignSlots<G> {
        CampaignSlots {
            limit: limit.max(1),
            held: 0,
            queue: VecDeque::new(),
        }
    }

    /// `group`, whose place is `slot`, asks for a slot.
    pub(crate) fn poll(&mut self, group: G, slot: &mut Slot) -> Asked {
        match *slot {
            Slot::Held => Asked::Granted,
            Slot::Waiting => Asked::Waiting,
            Slot::None if self.held < self.limit => {
                *slot = Slot::Held;
                self.held += 1;
                Asked::Granted
            }
            Slot::None => {
                *slot = Slot::Waiting;
                self.queue.push_back(group);
                Asked::Queued
            }
        }
    }

    /// Slots held now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Forgets every holder and everyone in line (their node's process died with its slots;
    /// only the simulator's nodes crash in place).
    #[cfg(feature = "sim")]
    pub(crate) fn clear(&mut self) {
        self.held = 0;
        self.queue.clear();
    }

    /// The group whose place is `slot` gives its slot back or leaves the line. True if a slot
    /// came free: the caller then hands free slots on with [`CampaignSlots::next_grant`].
    pub(crate) fn release(&mut self, slot: &mut Slot) -> bool {
        match std::mem::replace(slot, Slot::None) {
            Slot::Held => {
                self.held -= 1;
                true
            }
            // Its line entry is skipped when it comes up.
            Slot::Waiting | Slot::None => false,
        }
    }

    /// The next group in line to get a free slot, if a slot is free. Its place in `places`
    /// becomes `Held`; the caller wakes it. Call until `None`.
    pub(crate) fn next_grant(&mut self, places: &mut impl Places<G>) -> Option<G> {
        while self.held < self.limit {
            let Some(group) = self.queue.pop_front() else {
                break;
            };
            // An entry of a group that no longer waits (it left the line, or got its slot
            // through an earlier entry) is skipped.
            if let Some(slot) = places.place(group).filter(|s| **s == Slot::Waiting) {
                *slot = Slot::Held;
                self.held += 1;
                return Some(group);
            }
        }
        if self.queue.is_empty() && self.queue.capacity() > 64 {
            // Thousands may have waited once (a restart's herd): give the room back.
            self.queue = VecDeque::new();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_go_to_groups_in_the_order_they_asked() {
        let mut slots = CampaignSlots::new(1);
        let mut places: BTreeMap<u32, Slot> = (1..=4).map(|g| (g, Slot::None)).collect();
        let ask = |slots: &mut CampaignSlots<u32>, places: &mut BTreeMap<u32, Slot>, g| {
            let place = places.get_mut(&g).expect("group");
            slots.poll(g, place)
        };
        assert_eq!(ask(&mut slots, &mut places, 1), Asked::Granted);
        assert_eq!(
            ask(&mut slots, &mut places, 1),
            Asked::Granted,
            "still held"
        );
        assert_eq!(ask(&mut slots, &mut places, 3), Asked::Queued);
        assert_eq!(ask(&mut slots, &mut places, 2), Asked::Queued);
        assert_eq!(ask(&mut slots, &mut places, 4), Asked::Queued);
        assert_eq!(
            ask(&mut slots, &mut places, 3),
            Asked::Waiting,
            "asked once"
        );
        // Group 2 leaves the line (it heard from a leader): it is skipped.
        assert!(!slots.release(places.get_mut(&2).expect("group")));
        // Group 1's campaign ends: the slot goes to 3, the first in line.
        assert!(slots.release(places.get_mut(&1).expect("group")));
        let mut granted = Vec::new();
        while let Some(g) = slots.next_grant(&mut places) {
            granted.push(g);
        }
        assert_eq!(granted, [3]);
        assert_eq!(places[&3], Slot::Held);
        // Group 3 is removed from the node while holding it; 4 is next, not the gone 2.
        assert!(slots.release(places.get_mut(&3).expect("group")));
        places.remove(&3);
        while let Some(g) = slots.next_grant(&mut places) {
            granted.push(g);
        }
        assert_eq!(granted, [3, 4]);
        assert_eq!(places[&2], Slot::None);
    }

    #[test]
    fn no_more_than_the_limit_hold_slots() {
        let mut slots = CampaignSlots::new(2);
        let mut places: BTreeMap<u32, Slot> = (0..5).map(|g| (g, Slot::None)).collect();
        let asked: Vec<Asked> = (0..5)
            .map(|g| slots.poll(g, places.get_mut(&g).expect("group")))
            .collect();
        assert_eq!(
            asked,
            [
                Asked::Granted,
                Asked::Granted,
                Asked::Queued,
                Asked::Queued,
                Asked::Queued
            ]
        );
        assert!(slots.release(places.get_mut(&0).expect("group")));
        assert!(slots.release(places.get_mut(&1).expect("group")));
        let mut granted = Vec::new();
        while let Some(g) = slots.next_grant(&mut places) {
            granted.push(g);
        }
        assert_eq!(granted, [2, 3], "two free slots, two grants");
        assert_eq!(places[&4], Slot::Waiting);
    }
}
