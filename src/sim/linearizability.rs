//! Linearizability checking for key-value client histories.
//!
//! The simulator records what every client asked of the cluster and what it was told. This module
//! decides whether those answers could have come from one atomic register per key: a history is
//! *linearizable* when each operation can be given a single instant, between its invocation and
//! its response, at which it took effect, such that replaying the operations in the order of those
//! instants through a sequential register produces exactly the results the clients saw (Herlihy &
//! Wing, "Linearizability: A Correctness Condition for Concurrent Objects", TOPLAS 12(3), 1990).
//!
//! # Model
//!
//! Every key starts absent. `Put` sets it and returns `Written`; `Get` returns `Value(current)`;
//! `Cas` swaps iff the current value equals `expected` (`None` = absent) and returns whether it did.
//! An operation whose outcome the client never learned (timeout, lost leadership, crash) has no
//! response: it may take effect at any instant after its invocation, or never. An unknown `Get`
//! constrains nothing and is dropped. Operation A precedes B in real time iff A completed strictly
//! before B was invoked; equal timestamps count as concurrent.
//!
//! # Algorithm
//!
//! 1. **Split by key.** Linearizability is local (Herlihy & Wing, Theorem 1): a history is
//!    linearizable iff its restriction to each object is. Keys are independent registers, so each is
//!    checked alone. This "P-compositionality" (Horn & Kroening, "Faster Linearizability Checking
//!    via P-Compositionality", FORTE 2015) turns one search exponential in the whole history into
//!    several small ones.
//! 2. **Entry list.** Each operation contributes a call event at its invocation and, if it
//!    completed, a return event at its response. Events are sorted by time; at equal times calls
//!    go first, so an operation invoked at the instant another completes counts as concurrent with
//!    it. The list is doubly linked so entries can be unlinked and relinked in O(1):
//!
//!    ```text
//!    time ────────────────────────────────────────────────────────────▶
//!    client 1  [──── put(7, 1) ────]
//!    client 2        [────────── get(7) → 1 ──────────]
//!    client 3                                             [── get(7) → 1 ──]
//!    client 4     [── cas(7, absent → 2) … outcome unknown
//!
//!    entries:  call₁  call₄  call₂  ret₁  ret₂  call₃  ret₃     (no ret₄)
//!    ```
//!
//! 3. **Wing & Gong search** (Wing & Gong, "Testing and Verifying Concurrent Objects", JPDC 17,
//!    1993). The calls before the first return in the list are exactly the operations that may be
//!    linearized next. Depth-first: scan from the head; at a call whose operation the register
//!    accepts (its recorded result matches), apply it, unlink its call and return, push the choice,
//!    and restart from the head. Reaching a return means that operation's deadline passed while it
//!    was still unlinearized, so pop the last choice, restore the register, relink, and try the next
//!    entry after the popped call. Success once every completed operation is linearized (pending
//!    unknown-outcome operations simply never took effect); failure when a return is reached with
//!    nothing left to pop.
//! 4. **Memoization** (Lowe, "Testing for Linearizability", Concurrency and Computation: Practice
//!    and Experience 29(4), 2017). What can still happen depends only on *which* operations are
//!    linearized and the register's value, not on their order. Each configuration (bitset of
//!    linearized operations, register value) is recorded once reached; a step into a known
//!    configuration is skipped. This turns the factorial search into one bounded by the reachable
//!    configurations, which for moderate concurrency is close to linear in the history length. The
//!    same search, with the same cache, is what Porcupine (Athalye,
//!    <https://github.com/anishathalye/porcupine>) runs; Knossos (Kingsbury,
//!    <https://github.com/jepsen-io/knossos>) offers it and Lowe's "just-in-time linearization",
//!    which linearizes an operation only when a response forces it; both inform this module.
//!
//! The bitset is a `Vec<u64>`, and its hash is maintained incrementally (Zobrist hashing: one fixed
//! random word per operation, XORed in and out), so probing the cache costs one word of hashing
//! plus a comparison. Everything is deterministic: keys are visited in `BTreeMap` order and the
//! cache's hasher has no random seed.
//!
//! The search is exponential in the worst case (the problem is NP-complete: Gibbons & Korach,
//! SIAM J. Comput. 26(4), 1997), chiefly in the number of operations that are concurrent at one
//! instant and in the number of unknown-outcome writes, which stay pending forever. `max_states`
//! bounds the configurations explored per key; beyond it the check reports
//! [`CheckError::TooLarge`] rather than running unbounded.
//!
//! # Example
//!
//! ```
//! use ringraft::sim::linearizability::{check_kv_history, CheckError, KvOp, KvResult, Operation};
//!
//! let history = [
//!     Operation {
//!         client: 1,
//!         op: KvOp::Put { key: 7, value: 1 },
//!         invoke: 0,
//!         completion: Some((10, KvResult::Written)),
//!     },
//!     // Invoked after the put completed, yet it did not see it: a stale read.
//!     Operation {
//!         client: 2,
//!         op: KvOp::Get { key: 7 },
//!         invoke: 11,
//!         completion: Some((12, KvResult::Value(None))),
//!     },
//! ];
//! let error = check_kv_history(&history, 100_000).unwrap_err();
//! assert!(matches!(error, CheckError::NotLinearizable { key: 7, .. }));
//! ```

// The memo is a HashMap with a fixed, deterministic hasher (MixHasher); it is only looked up,
// never iterated, so its order cannot leak into results.
#[allow(clippy::disallowed_types)]
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

/// A key-value operation a client invoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Write `value` to `key`.
    Put {
        /// The key written.
        key: u64,
        /// The value written.
        value: u64,
    },
    /// Read `key`.
    Get {
        /// The key read.
        key: u64,
    },
    /// Compare-and-set: if key's current value == expected (None = absent), set it to `new`.
    Cas {
        /// The key compared and maybe written.
        key: u64,
        /// The value the key must hold for the swap to happen (`None` = absent).
        expected: Option<u64>,
        /// The value written if the swap happens.
        new: u64,
    },
}

impl KvOp {
    /// The key this operation acts on.
    pub fn key(&self) -> u64 {
        match *self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Cas { key, .. } => key,
        }
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Put { key, value } => write!(f, "put({key}, {value})"),
            KvOp::Get { key } => write!(f, "get({key})"),
            KvOp::Cas { key, expected, new } => {
                write!(f, "cas({key}, {} -> {new})", DisplayValue(*expected))
            }
        }
    }
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResult {
    /// A Put completed.
    Written,
    /// A Get returned this value (None = key absent).
    Value(Option<u64>),
    /// A Cas returned whether it swapped.
    Swapped(bool),
}

impl fmt::Display for KvResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvResult::Written => f.write_str("written"),
            KvResult::Value(value) => write!(f, "{}", DisplayValue(*value)),
            KvResult::Swapped(true) => f.write_str("swapped"),
            KvResult::Swapped(false) => f.write_str("not swapped"),
        }
    }
}

/// Shows a register value, spelling out `None` as "absent".
struct DisplayValue(Option<u64>);

impl fmt::Display for DisplayValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => write!(f, "{value}"),
            None => f.write_str("absent"),
        }
    }
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client that invoked the operation.
    pub client: u64,
    /// What the client asked for.
    pub op: KvOp,
    /// Invocation time (any monotonic unit, e.g. simulated nanoseconds).
    pub invoke: u64,
    /// Completion: Some((time, result)) if the client saw a result; None if the outcome is unknown
    /// (timeout, leadership lost, crash): the operation may have taken effect at any time after
    /// `invoke`, or never.
    pub completion: Option<(u64, KvResult)>,
}

impl Operation {
    /// The recorded result, if the client saw one.
    fn result(&self) -> Option<&KvResult> {
        self.completion.as_ref().map(|(_, result)| result)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client {} invoked {} at {}",
            self.client, self.op, self.invoke
        )?;
        match &self.completion {
            Some((done, result)) => write!(f, ", returned {result} at {done}"),
            None => f.write_str(", outcome unknown"),
        }
    }
}

/// Why a history is not linearizable, or why the check gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckError {
    /// No linearization exists for the operations on `key`; `ops` lists them (in invoke order) for
    /// the report.
    NotLinearizable {
        /// The key whose operations admit no linearization.
        key: u64,
        /// Every operation of the history on `key`, in invoke order.
        ops: Vec<Operation>,
    },
    /// The search for `key` exceeded `max_states` explored states: the history is too large to
    /// judge.
    TooLarge {
        /// The key whose search was abandoned.
        key: u64,
        /// How many configurations the search had explored when it gave up.
        explored: u64,
    },
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::NotLinearizable { key, ops } => {
                write!(
                    f,
                    "history is not linearizable: no order of the {} operations on key {key} \
                     explains their results; in invoke order:",
                    ops.len()
                )?;
                for operation in ops {
                    write!(f, "\n  {operation}")?;
                }
                Ok(())
            }
            CheckError::TooLarge { key, explored } => write!(
                f,
                "linearizability check gave up on key {key} after exploring {explored} states; \
                 raise max_states or check a shorter or less concurrent history"
            ),
        }
    }
}

impl std::error::Error for CheckError {}

/// Checks the history; keys are independent registers (P-compositionality), so each key is checked
/// alone.
///
/// Keys are checked in ascending order and the first failure is returned. `max_states` bounds the
/// configurations explored for each key (see the module docs); a few hundred operations per key
/// with up to about eight concurrent clients typically need a small multiple of the operation
/// count.
///
/// # Panics
///
/// If an operation completed before it was invoked: the recorder is broken, not the system under
/// test.
pub fn check_kv_history(history: &[Operation], max_states: u64) -> Result<(), CheckError> {
    let mut by_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for operation in history {
        if let Some((done, _)) = &operation.completion {
            assert!(
                *done >= operation.invoke,
                "operation completed before it was invoked: {operation}"
            );
        }
        by_key
            .entry(operation.op.key())
            .or_default()
            .push(operation);
    }
    for (key, mut ops) in by_key {
        // Stable: operations invoked at the same instant stay in history order.
        ops.sort_by_key(|operation| operation.invoke);
        let outcome = check_key(&ops, max_states);
        match outcome.verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => {
                let ops = ops.into_iter().cloned().collect();
                return Err(CheckError::NotLinearizable { key, ops });
            }
            Verdict::TooLarge => {
                return Err(CheckError::TooLarge {
                    key,
                    explored: outcome.explored,
                });
            }
        }
    }
    Ok(())
}

/// The value of one key's register: `None` while absent.
type Register = Option<u64>;

/// The register's sequential specification: the state after `op`, or `None` if `op` cannot have
/// returned `result` from `register`. An unknown `result` (`None`) matches any outcome.
fn step(op: &KvOp, result: Option<&KvResult>, register: Register) -> Option<Register> {
    match (op, result) {
        (KvOp::Put { value, .. }, None | Some(KvResult::Written)) => Some(Some(*value)),
        (KvOp::Get { .. }, None) => Some(register),
        (KvOp::Get { .. }, Some(KvResult::Value(seen))) => (*seen == register).then_some(register),
        (KvOp::Cas { expected, new, .. }, None | Some(KvResult::Swapped(_))) => {
            let swapped = register == *expected;
            if matches!(result, Some(KvResult::Swapped(claimed)) if *claimed != swapped) {
                return None;
            }
            Some(if swapped { Some(*new) } else { register })
        }
        // A result of the wrong kind (a put that returned a value, ...) fits no state.
        _ => None,
    }
}

/// How the search for one key ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Linearizable,
    NotLinearizable,
    TooLarge,
}

/// The verdict for one key and the configurations explored to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyOutcome {
    verdict: Verdict,
    explored: u64,
}

/// Runs the memoized Wing & Gong search over the operations on one key, sorted by invocation.
fn check_key(ops: &[&Operation], max_states: u64) -> KeyOutcome {
    // An unknown read changes nothing and promised nothing: it cannot constrain the search.
    let ops: Vec<&Operation> = ops
        .iter()
        .copied()
        .filter(|operation| {
            operation.completion.is_some() || !matches!(operation.op, KvOp::Get { .. })
        })
        .collect();
    let zobrist: Vec<u64> = (0..ops.len() as u64)
        .map(|index| mix64(index.wrapping_mul(GOLDEN) ^ GOLDEN))
        .collect();
    let mut list = EntryList::new(&ops);
    let mut config = Config::new(ops.len());
    let mut memo = Memo::default();
    // The linearized operations, in order, each with the register value before it.
    let mut stack: Vec<(usize, Register)> = Vec::new();
    // Completed operations not yet linearized; the search succeeds when none remain.
    let mut unlinearized_completed = ops
        .iter()
        .filter(|operation| operation.completion.is_some())
        .count();
    let mut explored: u64 = 0;
    // Each scan of the candidates (the calls before the first return) runs twice: first trying
    // only completed operations, then only unknown-outcome ones. Both passes together try every
    // candidate, so the order changes no verdict; it makes the search reach each (completed set,
    // register) with as few unknown operations as possible first, so that the cache's subsumption
    // check prunes the later, larger variants (see `Memo`).
    let mut pass = Pass::Completed;
    let mut entry = list.first();
    loop {
        if unlinearized_completed == 0 {
            return KeyOutcome {
                verdict: Verdict::Linearizable,
                explored,
            };
        }
        match list.event(entry) {
            Event::Call(index) if Pass::of(ops[index]) != pass => entry = list.next(entry),
            Event::Call(index) => {
                let operation = ops[index];
                if let Some(after) =
                    step(&operation.op, operation.result(), config.settled.register)
                {
                    let before = config.settled.register;
                    config.toggle(index, operation, zobrist[index]);
                    config.settled.register = after;
                    if memo.maybe_record(&config) {
                        explored += 1;
                        if explored > max_states {
                            return KeyOutcome {
                                verdict: Verdict::TooLarge,
                                explored,
                            };
                        }
                        stack.push((index, before));
                        list.lift(index);
                        if operation.completion.is_some() {
                            unlinearized_completed -= 1;
                        }
                        pass = Pass::Completed;
                        entry = list.first();
                        continue;
                    }
                    config.toggle(index, operation, zobrist[index]);
                    config.settled.register = before;
                }
                entry = list.next(entry);
            }
            Event::Return(_) if pass == Pass::Completed => {
                pass = Pass::Unknown;
                entry = list.first();
            }
            Event::Return(_) => {
                // This operation's response time has come and it is still not linearized: the
                // choices so far cannot be extended. Undo the most recent one and try the entry
                // after it instead, in the pass that chose it.
                let Some((index, before)) = stack.pop() else {
                    return KeyOutcome {
                        verdict: Verdict::NotLinearizable,
                        explored,
                    };
                };
                let operation = ops[index];
                list.unlift(index);
                config.toggle(index, operation, zobrist[index]);
                config.settled.register = before;
                if operation.completion.is_some() {
                    unlinearized_completed += 1;
                }
                pass = Pass::of(operation);
                entry = list.next(list.call_entry[index]);
            }
        }
    }
}

/// Which candidates a scan of the entry list is trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Operations whose client saw a result.
    Completed,
    /// Operations whose outcome is unknown.
    Unknown,
}

impl Pass {
    fn of(operation: &Operation) -> Pass {
        match operation.completion {
            Some(_) => Pass::Completed,
            None => Pass::Unknown,
        }
    }
}

/// One event of the entry list; the payload is the operation's index in the key's operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Call(usize),
    Return(usize),
}

/// The time-ordered call and return events of one key's operations, as a doubly linked list whose
/// entries can be unlinked and later relinked in O(1) (Knuth's dancing links).
///
/// Entry `events.len()` is the head sentinel and `events.len() + 1` the tail sentinel; neither is
/// ever unlinked. Relinking must undo unlinking in exactly the reverse order, which the search's
/// stack discipline guarantees.
struct EntryList {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// For each operation, the entry of its call.
    call_entry: Vec<usize>,
    /// For each operation, the entry of its return; `None` if its outcome is unknown.
    return_entry: Vec<Option<usize>>,
}

impl EntryList {
    fn new(ops: &[&Operation]) -> EntryList {
        // (time, calls before returns, operation) orders the events totally and deterministically.
        let mut keyed: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, operation) in ops.iter().enumerate() {
            keyed.push((operation.invoke, 0, index));
            if let Some((done, _)) = operation.completion {
                keyed.push((done, 1, index));
            }
        }
        keyed.sort_unstable();
        let len = keyed.len();
        let (head, tail) = (len, len + 1);
        let mut list = EntryList {
            events: Vec::with_capacity(len),
            next: vec![tail; len + 2],
            prev: vec![head; len + 2],
            call_entry: vec![usize::MAX; ops.len()],
            return_entry: vec![None; ops.len()],
        };
        let chain: Vec<usize> = [head].into_iter().chain(0..len).chain([tail]).collect();
        for pair in chain.windows(2) {
            list.next[pair[0]] = pair[1];
            list.prev[pair[1]] = pair[0];
        }
        for (entry, &(_, kind, index)) in keyed.iter().enumerate() {
            if kind == 0 {
                list.call_entry[index] = entry;
                list.events.push(Event::Call(index));
            } else {
                list.return_entry[index] = Some(entry);
                list.events.push(Event::Return(index));
            }
        }
        list
    }

    fn first(&self) -> usize {
        self.next[self.events.len()]
    }

    fn next(&self, entry: usize) -> usize {
        self.next[entry]
    }

    fn event(&self, entry: usize) -> Event {
        // While some completed operation is unlinearized its return is still linked, and every
        // scan starts at or before it (see the module docs), so the tail is never reached.
        assert!(
            entry < self.events.len(),
            "linearizability search ran off the entry list"
        );
        self.events[entry]
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        self.prev[next] = entry;
    }

    /// Removes a just-linearized operation's call and return.
    fn lift(&mut self, index: usize) {
        self.unlink(self.call_entry[index]);
        if let Some(entry) = self.return_entry[index] {
            self.unlink(entry);
        }
    }

    /// Undoes [`EntryList::lift`] of the most recently lifted operation.
    fn unlift(&mut self, index: usize) {
        if let Some(entry) = self.return_entry[index] {
            self.relink(entry);
        }
        self.relink(self.call_entry[index]);
    }
}

/// A search configuration: which operations are linearized and the register they leave behind.
#[derive(Clone, Debug)]
struct Config {
    /// The completed operations linearized, and the register.
    settled: Settled,
    /// Bit `i` is set iff operation `i` has an unknown outcome and is linearized.
    unknown: Vec<u64>,
}

/// The part of a [`Config`] that must match exactly for one configuration to subsume another.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settled {
    /// XOR of the Zobrist words of the set bits of `completed`: its hash, kept up to date in O(1).
    /// First, so that comparisons of distinct values usually stop at one word.
    zobrist: u64,
    /// Bit `i` is set iff operation `i` completed and is linearized.
    completed: Vec<u64>,
    register: Register,
}

impl Config {
    fn new(ops: usize) -> Config {
        let words = ops.div_ceil(64);
        let settled = Settled {
            zobrist: 0,
            completed: vec![0; words],
            register: None,
        };
        Config {
            settled,
            unknown: vec![0; words],
        }
    }

    /// Adds operation `index` to the linearized set, or removes it.
    fn toggle(&mut self, index: usize, operation: &Operation, zobrist: u64) {
        let bit = 1 << (index % 64);
        if operation.completion.is_some() {
            self.settled.completed[index / 64] ^= bit;
            self.settled.zobrist ^= zobrist;
        } else {
            self.unknown[index / 64] ^= bit;
        }
    }
}

impl Hash for Settled {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Equal values have equal Zobrist words, so this agrees with the derived `Eq`.
        let register = match self.register {
            Some(value) => mix64(value),
            None => ABSENT,
        };
        state.write_u64(self.zobrist ^ register);
    }
}

/// The configurations explored so far, compared by subsumption rather than equality.
///
/// Configuration A *subsumes* B when both have linearized the same completed operations and left
/// the register equal, and A's linearized unknown-outcome operations are a subset of B's. Every
/// way to finish from B also finishes from A: the operations B has left are A's minus some unknown
/// ones, which have no return entry and so never block another, and which need not be linearized
/// at all. Hence once A is recorded, B can be skipped. (Soundness: if the search failed while some
/// recorded configuration could still finish, take one with the shortest way to finish; it was
/// expanded, so the first step of that way led to a configuration that was either recorded, or
/// skipped because a recorded one subsumed it, and either can finish in one step fewer.)
///
/// With equality alone, each unknown-outcome write that is never observed doubles the
/// configurations of a failing search, since the write stays pending forever and may be taken or
/// not at every point; a failing search of a few hundred operations with dozens of timeouts never
/// ends. Subsumption keeps only the minimal sets, and without unknown-outcome operations it is
/// exactly Lowe's equality cache.
#[derive(Default)]
struct Memo {
    #[allow(clippy::disallowed_types)]
    seen: HashMap<Settled, Vec<Box<[u64]>>, BuildHasherDefault<MixHasher>>,
}

impl Memo {
    /// Records `config` unless a recorded configuration subsumes it; returns whether it recorded.
    fn maybe_record(&mut self, config: &Config) -> bool {
        let Some(minimal) = self.seen.get_mut(&config.settled) else {
            self.seen
                .insert(config.settled.clone(), vec![config.unknown.clone().into()]);
            return true;
        };
        if minimal.iter().any(|seen| is_subset(seen, &config.unknown)) {
            return false;
        }
        minimal.retain(|seen| !is_subset(&config.unknown, seen));
        minimal.push(config.unknown.clone().into());
        true
    }
}

/// Whether every bit set in `small` is set in `large`.
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .zip(large)
        .all(|(small, large)| small & !large == 0)
}

/// The 64-bit golden ratio, splitmix64's increment.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;
/// An arbitrary word standing for the absent register in hashes.
const ABSENT: u64 = 0x6a09_e667_f3bc_c908;

/// splitmix64's finalizer: a fast, seedless bijection that spreads every input bit.
fn mix64(mut word: u64) -> u64 {
    word = (word ^ (word >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    word = (word ^ (word >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    word ^ (word >> 31)
}

/// A seedless hasher for the memo: deterministic, and fast for the single pre-mixed word that
/// [`Config`] feeds it.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = mix64(self.0 ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = mix64(self.0 ^ word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_STATES: u64 = 1_000_000;

    fn put(client: u64, key: u64, value: u64, invoke: u64, done: u64) -> Operation {
        let op = KvOp::Put { key, value };
        Operation {
            client,
            op,
            invoke,
            completion: Some((done, KvResult::Written)),
        }
    }

    fn get(client: u64, key: u64, seen: Option<u64>, invoke: u64, done: u64) -> Operation {
        let op = KvOp::Get { key };
        Operation {
            client,
            op,
            invoke,
            completion: Some((done, KvResult::Value(seen))),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn cas(
        client: u64,
        key: u64,
        expected: Option<u64>,
        new: u64,
        swapped: bool,
        invoke: u64,
        done: u64,
    ) -> Operation {
        let op = KvOp::Cas { key, expected, new };
        Operation {
            client,
            op,
            invoke,
            completion: Some((done, KvResult::Swapped(swapped))),
        }
    }

    fn unknown(client: u64, op: KvOp, invoke: u64) -> Operation {
        Operation {
            client,
            op,
            invoke,
            completion: None,
        }
    }

    fn assert_not_linearizable(history: &[Operation], key: u64) {
        match check_kv_history(history, MAX_STATES) {
            Err(CheckError::NotLinearizable { key: bad, ops }) => {
                assert_eq!(bad, key);
                let mut expected: Vec<Operation> = history
                    .iter()
                    .filter(|operation| operation.op.key() == key)
                    .cloned()
                    .collect();
                expected.sort_by_key(|operation| operation.invoke);
                assert_eq!(ops, expected);
            }
            other => panic!("expected key {key} to be not linearizable, got {other:?}"),
        }
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_kv_history(&[], 0), Ok(()));
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let history = [
            get(1, 1, None, 0, 1),
            put(1, 1, 10, 2, 3),
            get(2, 1, Some(10), 4, 5),
            cas(1, 1, Some(10), 11, true, 6, 7),
            get(2, 1, Some(11), 8, 9),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let history = [
            put(1, 1, 10, 0, 5),
            put(1, 1, 20, 6, 10),
            get(2, 1, Some(10), 11, 12),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn concurrent_write_and_read_may_see_either_value() {
        for seen in [None, Some(10)] {
            let history = [put(1, 1, 10, 0, 10), get(2, 1, seen, 2, 8)];
            assert_eq!(
                check_kv_history(&history, MAX_STATES),
                Ok(()),
                "read saw {seen:?}"
            );
        }
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        // The read is invoked at the instant the write completes: either order is allowed.
        let history = [put(1, 1, 10, 0, 5), get(2, 1, None, 5, 6)];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
        // One tick later the write strictly precedes the read.
        let history = [put(1, 1, 10, 0, 5), get(2, 1, None, 6, 7)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn unknown_put_observed_by_later_read_is_linearizable() {
        let history = [
            put(1, 1, 10, 0, 1),
            unknown(2, KvOp::Put { key: 1, value: 20 }, 2),
            get(3, 1, Some(10), 3, 4),
            get(3, 1, Some(20), 100, 101),
            get(1, 1, Some(20), 200, 201),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
    }

    #[test]
    fn unknown_put_never_observed_is_linearizable() {
        let history = [
            put(1, 1, 10, 0, 1),
            unknown(2, KvOp::Put { key: 1, value: 20 }, 2),
            get(3, 1, Some(10), 3, 4),
            get(3, 1, Some(10), 100, 101),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_invocation() {
        let history = [
            get(1, 1, Some(20), 0, 1),
            unknown(2, KvOp::Put { key: 1, value: 20 }, 2),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn unknown_put_takes_effect_at_most_once() {
        // Once overwritten, the unknown write cannot reappear.
        let history = [
            unknown(1, KvOp::Put { key: 1, value: 20 }, 0),
            get(2, 1, Some(20), 1, 2),
            put(2, 1, 30, 3, 4),
            get(2, 1, Some(20), 5, 6),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn unknown_get_imposes_no_constraint() {
        let history = [unknown(1, KvOp::Get { key: 1 }, 0), put(2, 1, 10, 5, 6)];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
    }

    #[test]
    fn read_of_value_never_written_is_not_linearizable() {
        let history = [put(1, 1, 10, 0, 10), get(2, 1, Some(99), 2, 8)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn read_of_absent_key_after_write_completed_is_not_linearizable() {
        let history = [put(1, 1, 10, 0, 1), get(2, 1, None, 2, 3)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn cas_swaps_when_current_value_matches_expected() {
        let history = [
            cas(1, 1, None, 5, true, 0, 1),
            cas(1, 1, Some(5), 6, true, 2, 3),
            get(2, 1, Some(6), 4, 5),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
    }

    #[test]
    fn cas_reporting_a_swap_that_could_not_happen_is_not_linearizable() {
        let history = [put(1, 1, 10, 0, 1), cas(2, 1, Some(9), 11, true, 2, 3)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn cas_failure_leaves_the_value_unchanged() {
        let history = [
            put(1, 1, 10, 0, 1),
            cas(2, 1, Some(9), 11, false, 2, 3),
            get(3, 1, Some(10), 4, 5),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
        let history = [
            put(1, 1, 10, 0, 1),
            cas(2, 1, Some(9), 11, false, 2, 3),
            get(3, 1, Some(11), 4, 5),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn cas_failure_when_value_matched_is_not_linearizable() {
        let history = [put(1, 1, 10, 0, 1), cas(2, 1, Some(10), 11, false, 2, 3)];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn concurrent_cas_contention_has_one_winner() {
        // Two concurrent CASes from the same expected value: exactly one may win.
        let both_win = [
            put(1, 1, 0, 0, 1),
            cas(2, 1, Some(0), 2, true, 2, 10),
            cas(3, 1, Some(0), 3, true, 2, 10),
        ];
        assert_not_linearizable(&both_win, 1);
        let one_wins = [
            put(1, 1, 0, 0, 1),
            cas(2, 1, Some(0), 2, true, 2, 10),
            cas(3, 1, Some(0), 3, false, 2, 10),
            get(1, 1, Some(2), 11, 12),
        ];
        assert_eq!(check_kv_history(&one_wins, MAX_STATES), Ok(()));
    }

    #[test]
    fn unknown_cas_may_or_may_not_have_swapped() {
        let swapped = [
            put(1, 1, 10, 0, 1),
            unknown(
                2,
                KvOp::Cas {
                    key: 1,
                    expected: Some(10),
                    new: 11,
                },
                2,
            ),
            get(3, 1, Some(11), 50, 51),
        ];
        assert_eq!(check_kv_history(&swapped, MAX_STATES), Ok(()));
        let not_swapped = [
            swapped[0].clone(),
            swapped[1].clone(),
            get(3, 1, Some(10), 50, 51),
        ];
        assert_eq!(check_kv_history(&not_swapped, MAX_STATES), Ok(()));
        // It could only ever have written 11, and only over 10.
        let impossible = [
            put(1, 1, 9, 0, 1),
            unknown(
                2,
                KvOp::Cas {
                    key: 1,
                    expected: Some(10),
                    new: 11,
                },
                2,
            ),
            get(3, 1, Some(11), 50, 51),
        ];
        assert_not_linearizable(&impossible, 1);
    }

    #[test]
    fn lost_acknowledged_write_is_not_linearizable() {
        let history = [
            put(1, 1, 10, 0, 1),
            get(2, 1, Some(10), 2, 3),
            put(1, 1, 20, 4, 5),
            // Nothing is concurrent with this read, yet the acknowledged write of 20 is gone.
            get(2, 1, Some(10), 6, 7),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn result_of_the_wrong_kind_is_not_linearizable() {
        let mut history = [put(1, 1, 10, 0, 1)];
        history[0].completion = Some((1, KvResult::Value(Some(10))));
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn keys_are_checked_independently() {
        // Key 1 alone and key 2 alone are fine, interleaved in time.
        let history = [
            put(1, 1, 10, 0, 10),
            put(2, 2, 10, 1, 2),
            get(3, 2, Some(10), 3, 4),
            get(3, 1, None, 5, 6),
            get(3, 1, Some(10), 11, 12),
        ];
        assert_eq!(check_kv_history(&history, MAX_STATES), Ok(()));
        // A stale read on key 2 is reported for key 2, listing only key 2's operations.
        let mut history = history.to_vec();
        history.push(get(3, 2, None, 20, 21));
        assert_not_linearizable(&history, 2);
    }

    #[test]
    fn first_failing_key_in_ascending_order_is_reported() {
        let history = [get(1, 9, Some(1), 0, 1), get(1, 3, Some(1), 0, 1)];
        assert_not_linearizable(&history, 3);
    }

    #[test]
    fn report_lists_the_operations_of_the_failing_key() {
        let history = [put(1, 4, 10, 0, 1), get(2, 4, None, 2, 3)];
        let error = check_kv_history(&history, MAX_STATES).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("key 4"), "{text}");
        assert!(
            text.contains("client 1 invoked put(4, 10) at 0, returned written at 1"),
            "{text}"
        );
        assert!(
            text.contains("client 2 invoked get(4) at 2, returned absent at 3"),
            "{text}"
        );
        let unknown_cas = unknown(
            3,
            KvOp::Cas {
                key: 4,
                expected: None,
                new: 5,
            },
            7,
        );
        assert_eq!(
            unknown_cas.to_string(),
            "client 3 invoked cas(4, absent -> 5) at 7, outcome unknown"
        );
    }

    #[test]
    #[should_panic(expected = "completed before it was invoked")]
    fn completion_before_invocation_is_a_recorder_bug() {
        let _ = check_kv_history(&[put(1, 1, 10, 5, 4)], MAX_STATES);
    }

    #[test]
    fn search_gives_up_with_too_large_when_max_states_is_tiny() {
        // Sixteen concurrent writes then a read of a value none wrote: every subset of the writes
        // is a distinct configuration, far more than the bound.
        let mut history: Vec<Operation> = (0..16).map(|c| put(c, 1, c + 1, 0, 100)).collect();
        history.push(get(99, 1, Some(1000), 200, 201));
        let max_states = 50;
        assert_eq!(
            check_kv_history(&history, max_states),
            Err(CheckError::TooLarge {
                key: 1,
                explored: max_states + 1
            })
        );
    }

    // ---- Randomized histories from a real register --------------------------------------------

    /// splitmix64 (Steele, Lea & Flood, OOPSLA 2014): tiny, seedable and good enough for tests.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(GOLDEN);
            mix64(self.0)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next_u64() % bound
        }

        fn percent(&mut self, chance: u64) -> bool {
            self.below(100) < chance
        }
    }

    /// The register's sequential behaviour written out a second time, independently of [`step`],
    /// to generate histories and to judge them by brute force.
    fn reference_apply(op: &KvOp, register: Register) -> (KvResult, Register) {
        match *op {
            KvOp::Put { value, .. } => (KvResult::Written, Some(value)),
            KvOp::Get { .. } => (KvResult::Value(register), register),
            KvOp::Cas { expected, new, .. } if register == expected => {
                (KvResult::Swapped(true), Some(new))
            }
            KvOp::Cas { .. } => (KvResult::Swapped(false), register),
        }
    }

    #[derive(Clone, Copy)]
    struct Shape {
        clients: u64,
        keys: u64,
        ops_per_client: usize,
        duration_max: u64,
        gap_max: u64,
        unknown_percent: u64,
    }

    /// Clients each issue operations one at a time; each operation takes effect on a real register
    /// at a random instant inside its interval (an unknown-outcome write: at any instant after its
    /// invocation, or never). Results are what the register returned, so the history is
    /// linearizable by construction. Written values are 1, 2, 3, ... in generation order.
    fn random_history(seed: u64, shape: Shape) -> Vec<Operation> {
        let mut rng = SplitMix64(seed);
        let mut history: Vec<Operation> = Vec::new();
        let mut effects: Vec<(u64, usize)> = Vec::new(); // (instant, index into history)
        let mut written: Vec<Vec<u64>> = vec![Vec::new(); shape.keys as usize];
        let mut next_value = 1;
        for client in 0..shape.clients {
            let mut now = rng.below(shape.gap_max + 1);
            for _ in 0..shape.ops_per_client {
                let key = rng.below(shape.keys);
                let op = match rng.below(10) {
                    0..=3 => {
                        let value = next_value;
                        next_value += 1;
                        written[key as usize].push(value);
                        KvOp::Put { key, value }
                    }
                    4..=7 => KvOp::Get { key },
                    _ => {
                        let recent = &written[key as usize];
                        let pick = rng.below(recent.len().min(3) as u64 + 1) as usize;
                        let expected = (pick > 0).then(|| recent[recent.len() - pick]);
                        let new = next_value;
                        next_value += 1;
                        written[key as usize].push(new);
                        KvOp::Cas { key, expected, new }
                    }
                };
                let duration = rng.below(shape.duration_max + 1);
                let done = now + duration;
                let index = history.len();
                if rng.percent(shape.unknown_percent) {
                    if !matches!(op, KvOp::Get { .. }) && rng.percent(50) {
                        effects.push((now + rng.below(3 * duration + 1), index));
                    }
                    history.push(Operation {
                        client,
                        op,
                        invoke: now,
                        completion: None,
                    });
                } else {
                    effects.push((now + rng.below(duration + 1), index));
                    let placeholder = Some((done, KvResult::Written));
                    history.push(Operation {
                        client,
                        op,
                        invoke: now,
                        completion: placeholder,
                    });
                }
                now = done + rng.below(shape.gap_max + 1);
            }
        }
        // Equal instants only occur between concurrent operations, so any tie-break is valid.
        effects.sort_unstable();
        let mut registers: BTreeMap<u64, u64> = BTreeMap::new();
        for (_, index) in effects {
            let key = history[index].op.key();
            let (result, after) = reference_apply(&history[index].op, registers.get(&key).copied());
            if let Some(value) = after {
                registers.insert(key, value);
            }
            if let Some((_, recorded)) = &mut history[index].completion {
                *recorded = result;
            }
        }
        history
    }

    const MODERATE: Shape = Shape {
        clients: 8,
        keys: 3,
        ops_per_client: 25,
        duration_max: 20,
        gap_max: 10,
        unknown_percent: 5,
    };

    #[test]
    fn random_register_histories_are_linearizable() {
        for seed in 0..300 {
            let history = random_history(seed, MODERATE);
            assert_eq!(
                check_kv_history(&history, MAX_STATES),
                Ok(()),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn random_history_with_a_read_of_a_value_never_written_is_not_linearizable() {
        for seed in 0..300 {
            let mut history = random_history(seed, MODERATE);
            let reads: Vec<usize> = (0..history.len())
                .filter(|&index| {
                    let operation = &history[index];
                    matches!(operation.op, KvOp::Get { .. }) && operation.completion.is_some()
                })
                .collect();
            assert!(!reads.is_empty(), "seed {seed} produced no completed read");
            let victim = reads[SplitMix64(seed).below(reads.len() as u64) as usize];
            if let Some((_, result)) = &mut history[victim].completion {
                *result = KvResult::Value(Some(u64::MAX));
            }
            let key = history[victim].op.key();
            match check_kv_history(&history, MAX_STATES) {
                Err(CheckError::NotLinearizable { key: bad, .. }) => assert_eq!(bad, key),
                other => panic!("seed {seed}: corrupted read on key {key} gave {other:?}"),
            }
        }
    }

    /// Every total order of the operations that respects real time, with unknown-outcome
    /// operations optionally left out, tried by exhaustive recursion without any of the entry
    /// list's or the cache's machinery.
    fn brute_force_linearizable(history: &[Operation]) -> bool {
        fn extend(ops: &[&Operation], placed: &mut [bool], registers: &BTreeMap<u64, u64>) -> bool {
            let complete = (0..ops.len()).all(|i| placed[i] || ops[i].completion.is_none());
            if complete {
                return true;
            }
            for i in 0..ops.len() {
                let waits_for_another = (0..ops.len()).any(|j| {
                    !placed[j]
                        && matches!(ops[j].completion, Some((done, _)) if done < ops[i].invoke)
                });
                if placed[i] || waits_for_another {
                    continue;
                }
                let key = ops[i].op.key();
                let (result, after) = reference_apply(&ops[i].op, registers.get(&key).copied());
                if ops[i].result().is_some_and(|recorded| *recorded != result) {
                    continue;
                }
                let mut registers = registers.clone();
                if let Some(value) = after {
                    registers.insert(key, value);
                }
                placed[i] = true;
                if extend(ops, placed, &registers) {
                    return true;
                }
                placed[i] = false;
            }
            false
        }
        let ops: Vec<&Operation> = history.iter().collect();
        extend(&ops, &mut vec![false; ops.len()], &BTreeMap::new())
    }

    #[test]
    fn search_agrees_with_brute_force_on_small_random_histories() {
        let shape = Shape {
            clients: 3,
            keys: 2,
            ops_per_client: 3,
            duration_max: 4,
            gap_max: 2,
            unknown_percent: 20,
        };
        let (mut linearizable, mut not_linearizable) = (0, 0);
        for seed in 0..3000 {
            let mut history = random_history(seed, shape);
            // Corrupt one result in most histories, to a plausible value so that some
            // corruptions are still explainable by another order.
            let mut rng = SplitMix64(!seed);
            if rng.percent(70) {
                let victim = rng.below(history.len() as u64) as usize;
                let corrupted = match history[victim].op {
                    KvOp::Get { .. } => KvResult::Value(match rng.below(4) {
                        0 => None,
                        value => Some(value),
                    }),
                    KvOp::Cas { .. } => KvResult::Swapped(rng.percent(50)),
                    KvOp::Put { .. } => KvResult::Swapped(true),
                };
                if let Some((_, result)) = &mut history[victim].completion {
                    *result = corrupted;
                }
            }
            let expected = brute_force_linearizable(&history);
            let verdict = check_kv_history(&history, MAX_STATES);
            match (&verdict, expected) {
                (Ok(()), true) => linearizable += 1,
                (Err(CheckError::NotLinearizable { .. }), false) => not_linearizable += 1,
                _ => panic!("seed {seed}: brute force says {expected}, search says {verdict:?}"),
            }
        }
        assert!(
            linearizable > 500 && not_linearizable > 500,
            "{linearizable} vs {not_linearizable}"
        );
    }

    #[test]
    fn moderate_concurrency_needs_few_states_per_operation() {
        // Five keys, a few hundred operations each, eight clients: the shape the simulator
        // produces. Wall-clock time is not asserted; explored states stand in for it.
        let shape = Shape {
            keys: 5,
            ops_per_client: 190,
            ..MODERATE
        };
        for seed in 0..5 {
            let history = random_history(seed, shape);
            let mut by_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
            for operation in &history {
                by_key
                    .entry(operation.op.key())
                    .or_default()
                    .push(operation);
            }
            for (key, mut ops) in by_key {
                ops.sort_by_key(|operation| operation.invoke);
                let outcome = check_key(&ops, MAX_STATES);
                assert_eq!(
                    outcome.verdict,
                    Verdict::Linearizable,
                    "seed {seed} key {key}"
                );
                assert!(
                    outcome.explored <= 20 * ops.len() as u64,
                    "seed {seed} key {key}: {} states for {} operations",
                    outcome.explored,
                    ops.len()
                );
            }
        }
    }

    #[test]
    fn zz_stats() {
        for (unknown_percent, clients) in [(0, 8), (5, 8), (10, 8), (20, 8), (5, 12)] {
            let shape = Shape {
                keys: 5,
                ops_per_client: 190,
                unknown_percent,
                clients,
                ..MODERATE
            };
            for seed in 0..3 {
                let history = random_history(seed, shape);
                let start = std::time::Instant::now();
                let r = check_kv_history(&history, 10_000_000);
                let elapsed = start.elapsed();
                let mut by_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
                for operation in &history {
                    by_key
                        .entry(operation.op.key())
                        .or_default()
                        .push(operation);
                }
                let mut ex = vec![];
                for (_, mut ops) in by_key {
                    ops.sort_by_key(|o| o.invoke);
                    ex.push((ops.len(), check_key(&ops, 10_000_000).explored));
                }
                eprintln!(
                    "u{unknown_percent} c{clients} seed {seed}: {:?} {:?} {:?}",
                    r.is_ok(),
                    elapsed,
                    ex
                );
            }
        }
    }

    #[test]
    fn zz_stats_bad() {
        for (unknown_percent, clients) in [(0, 8), (5, 8), (20, 8), (5, 12)] {
            let shape = Shape {
                keys: 5,
                ops_per_client: 190,
                unknown_percent,
                clients,
                ..MODERATE
            };
            for seed in 0..4 {
                let mut history = random_history(seed, shape);
                // make a late read stale: return a value written long before
                let reads: Vec<usize> = (0..history.len())
                    .filter(|&i| {
                        matches!(history[i].op, KvOp::Get { .. }) && history[i].completion.is_some()
                    })
                    .collect();
                let victim = reads[reads.len() - 1 - (seed as usize * 7) % 20];
                let key = history[victim].op.key();
                let old = history
                    .iter()
                    .find_map(|o| match o.op {
                        KvOp::Put { key: k, value } if k == key => Some(value),
                        _ => None,
                    })
                    .unwrap();
                if let Some((_, r)) = &mut history[victim].completion {
                    *r = KvResult::Value(Some(old));
                }
                let start = std::time::Instant::now();
                let r = check_kv_history(&history, 10_000_000);
                let elapsed = start.elapsed();
                let mut ops: Vec<&Operation> =
                    history.iter().filter(|o| o.op.key() == key).collect();
                ops.sort_by_key(|o| o.invoke);
                let out = check_key(&ops, 10_000_000);
                eprintln!(
                    "BAD u{unknown_percent} c{clients} seed {seed}: {:?} {:?} {} ops {:?}",
                    matches!(r, Err(CheckError::NotLinearizable { .. })),
                    elapsed,
                    ops.len(),
                    out
                );
            }
        }
    }
}
