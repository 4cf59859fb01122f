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
//!    and restart from the head. Reaching a return means that operation's response time has come
//!    while it is still unlinearized, so pop the last choice, restore the register, relink, and try
//!    the next entry after the popped call. Success once every completed operation is linearized
//!    (unknown-outcome operations still pending simply never took effect); failure when a return
//!    is reached with nothing left to pop.
//! 4. **Memoization** (Lowe, "Testing for Linearizability", Concurrency and Computation: Practice
//!    and Experience 29(4), 2017). What can still happen depends only on *which* operations are
//!    linearized and the register's value, not on their order. Each configuration (bitset of
//!    linearized operations, register value) is recorded once reached; a step into a recorded
//!    configuration is skipped. This turns the factorial search into one bounded by the reachable
//!    configurations, which for moderate concurrency is close to linear in the history length.
//!    Porcupine (Athalye, <https://github.com/anishathalye/porcupine>) runs this search with this
//!    cache; Knossos (Kingsbury, <https://github.com/jepsen-io/knossos>) offers it next to Lowe's
//!    "just-in-time linearization", which linearizes operations only when a response forces them.
//! 5. **Unknown outcomes.** An unknown-outcome write is *optional*: it has no return entry, so it
//!    stays a candidate from its invocation to the end and may never be linearized. Porcupine and
//!    Knossos treat it the same way, and it is where their searches blow up: every such write may
//!    be taken or not at every point, doubling the configurations of a failing search each time.
//!    Three refinements, none of which changes a verdict, keep that in check here:
//!    - the cache records configurations up to *subsumption*: one that has linearized the same
//!      completed operations, reached the same register, and linearized a subset of the optional
//!      ones can do everything this one can, so this one is skipped (proof at `Memo`);
//!    - each scan tries completed operations before optional ones (Lowe's just-in-time idea
//!      applied to optional operations only), so the smaller variants come first and subsume the
//!      later ones;
//!    - an optional put is never linearized right after another optional operation, since
//!      linearizing it instead of that one reaches the same register with less (see
//!      `overwrites_optional`).
//!
//!    A differential test checks every verdict against brute-force enumeration of orders.
//!
//! The bitsets are `Vec<u64>`, and the completed operations' bitset has its hash maintained
//! incrementally (Zobrist hashing: one fixed random word per operation, XOR-ed in and out), so
//! probing the cache costs one word of hashing plus comparisons. Everything is deterministic: keys
//! are visited in `BTreeMap` order and the cache's hasher has no random seed.
//!
//! The search is exponential in the worst case (the problem is NP-complete: Gibbons & Korach,
//! "Testing Shared Memories", SIAM J. Comput. 26(4), 1997), chiefly in the number of operations
//! concurrent at one instant. On histories of a few hundred operations per key from eight clients,
//! with up to a fifth of them timing out, it explores a few configurations per operation when the
//! history is linearizable and a few dozen when it is not (see the tests). `max_states` bounds the
//! configurations explored per key; beyond it the check reports [`CheckError::TooLarge`] rather
//! than running unbounded.
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
    #[must_use]
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
/// `max_states` bounds the configurations explored for each key (see the module docs). Histories
/// of a few hundred operations per key from up to eight clients need a few per operation, or a
/// few dozen when the history is not linearizable and many outcomes are unknown. An explored
/// configuration costs a few hundred bytes and up to a few microseconds, so 1 000 000 leaves ample
/// room while bounding a pathological key to seconds and a few hundred megabytes.
///
/// # Errors
///
/// Keys are checked in ascending order and the first failure is returned:
/// [`CheckError::NotLinearizable`] if no linearization of a key's operations exists, and
/// [`CheckError::TooLarge`] if the search for a key explored more than `max_states`
/// configurations before deciding.
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
        match check_key(&ops, max_states) {
            (Verdict::Linearizable, _) => {}
            (Verdict::NotLinearizable, _) => {
                let ops = ops.into_iter().cloned().collect();
                return Err(CheckError::NotLinearizable { key, ops });
            }
            (Verdict::TooLarge, explored) => return Err(CheckError::TooLarge { key, explored }),
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

/// An operation as the search sees it.
#[derive(Clone, Copy, Debug)]
struct SearchOp<'a> {
    op: &'a KvOp,
    /// What the client saw; `None` if the outcome is unknown.
    result: Option<&'a KvResult>,
    invoke: u64,
    /// The response time, by which the operation must have been linearized; `None` if the outcome
    /// is unknown: the operation is *optional*, pending forever, and may never take effect.
    deadline: Option<u64>,
}

impl SearchOp<'_> {
    fn required(&self) -> bool {
        self.deadline.is_some()
    }
}

/// Runs the memoized Wing & Gong search over the operations on one key, sorted by invocation.
/// Returns the verdict and the number of configurations explored.
fn check_key(ops: &[&Operation], max_states: u64) -> (Verdict, u64) {
    let ops: Vec<SearchOp<'_>> = ops
        .iter()
        // An unknown read changes nothing and promised nothing: it cannot constrain the search.
        .filter(|operation| {
            operation.completion.is_some() || !matches!(operation.op, KvOp::Get { .. })
        })
        .map(|operation| SearchOp {
            op: &operation.op,
            result: operation.result(),
            invoke: operation.invoke,
            deadline: operation.completion.as_ref().map(|(done, _)| *done),
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
    // Required operations not yet linearized; the search succeeds when none remain.
    let mut unlinearized_required = ops.iter().filter(|op| op.required()).count();
    let mut explored: u64 = 0;
    // Each scan of the candidates (the calls before the first return) runs twice: first trying
    // only required operations, then only optional ones. Both passes together try every
    // candidate, so the order changes no verdict; it makes the search reach each (required set,
    // register) with as few optional operations as possible first, so that the cache's
    // subsumption check prunes the later, larger variants (see `Memo`).
    let mut pass = Pass::Required;
    let mut entry = list.first();
    loop {
        if unlinearized_required == 0 {
            return (Verdict::Linearizable, explored);
        }
        match list.event(entry) {
            Event::Call(index) if Pass::of(&ops[index]) != pass => entry = list.next(entry),
            Event::Call(index) if overwrites_optional(&ops, &stack, index) => {
                entry = list.next(entry);
            }
            Event::Call(index) => {
                let op = ops[index];
                if let Some(after) = step(op.op, op.result, config.settled.register) {
                    let before = config.settled.register;
                    config.toggle(index, op.required(), zobrist[index]);
                    config.settled.register = after;
                    if memo.maybe_record(&config) {
                        explored += 1;
                        if explored > max_states {
                            return (Verdict::TooLarge, explored);
                        }
                        stack.push((index, before));
                        list.lift(index);
                        if op.required() {
                            unlinearized_required -= 1;
                        }
                        pass = Pass::Required;
                        entry = list.first();
                        continue;
                    }
                    config.toggle(index, op.required(), zobrist[index]);
                    config.settled.register = before;
                }
                entry = list.next(entry);
            }
            Event::Return(_) if pass == Pass::Required => {
                pass = Pass::Optional;
                entry = list.first();
            }
            Event::Return(_) => {
                // This operation's response time has come and it is still not linearized: the
                // choices so far cannot be extended. Undo the most recent one and try the entry
                // after it instead, in the pass that chose it.
                let Some((index, before)) = stack.pop() else {
                    return (Verdict::NotLinearizable, explored);
                };
                let op = ops[index];
                list.unlift(index);
                config.toggle(index, op.required(), zobrist[index]);
                config.settled.register = before;
                if op.required() {
                    unlinearized_required += 1;
                }
                pass = Pass::of(&op);
                entry = list.next(list.call_entry[index]);
            }
        }
    }
}

/// Whether linearizing `index` next is redundant because it is an optional put and the last
/// operation linearized was optional too.
///
/// The put overwrites whatever that optional operation left, so the same register results from
/// linearizing the put *instead* of it, from the configuration before it, with fewer optional
/// operations linearized: a configuration that subsumes this one (see `Memo`), which the search
/// tries anyway, because an optional operation has no return and linearizing one leaves the
/// candidates unchanged. By induction down a run of optional operations, the put is tried right
/// after the last required one. Without this, every ordered run of optional puts is a distinct
/// configuration, and a failing search with dozens of timed-out writes explodes.
fn overwrites_optional(ops: &[SearchOp<'_>], stack: &[(usize, Register)], index: usize) -> bool {
    let op = &ops[index];
    !op.required()
        && matches!(op.op, KvOp::Put { .. })
        && stack.last().is_some_and(|&(last, _)| !ops[last].required())
}

/// Which candidates a scan of the entry list is trying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    /// Operations with a deadline.
    Required,
    /// Operations that may also never take effect.
    Optional,
}

impl Pass {
    fn of(op: &SearchOp<'_>) -> Pass {
        if op.required() {
            Pass::Required
        } else {
            Pass::Optional
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
    /// For each operation, the entry of its return (its deadline); `None` if it is optional.
    return_entry: Vec<Option<usize>>,
}

impl EntryList {
    fn new(ops: &[SearchOp<'_>]) -> EntryList {
        // (time, calls before returns, operation) orders the events totally and deterministically.
        let mut keyed: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
        for (index, op) in ops.iter().enumerate() {
            keyed.push((op.invoke, 0, index));
            if let Some(deadline) = op.deadline {
                keyed.push((deadline, 1, index));
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
        // Scans start at the head, or right after a call just put back, which was a candidate
        // when chosen and so precedes every return linked then; while a completed operation is
        // unlinearized its return is linked, so a scan meets a return before the tail.
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
#[derive(Debug)]
struct Config {
    /// The required operations linearized, and the register.
    settled: Settled,
    /// Bit `i` is set iff operation `i` is optional and linearized.
    optional: Vec<u64>,
}

/// The part of a [`Config`] that must match exactly for one configuration to subsume another.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settled {
    /// XOR of the Zobrist words of the set bits of `required`: its hash, kept up to date in O(1).
    /// First, so that comparisons of distinct values usually stop at one word.
    zobrist: u64,
    /// Bit `i` is set iff operation `i` is required and linearized.
    required: Vec<u64>,
    register: Register,
}

impl Config {
    fn new(ops: usize) -> Config {
        let words = ops.div_ceil(64);
        let settled = Settled {
            zobrist: 0,
            required: vec![0; words],
            register: None,
        };
        Config {
            settled,
            optional: vec![0; words],
        }
    }

    /// Adds operation `index` to the linearized set, or removes it.
    fn toggle(&mut self, index: usize, required: bool, zobrist: u64) {
        let bit = 1 << (index % 64);
        if required {
            self.settled.required[index / 64] ^= bit;
            self.settled.zobrist ^= zobrist;
        } else {
            self.optional[index / 64] ^= bit;
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
/// Configuration A *subsumes* B when both have linearized the same required operations and left
/// the register equal, and A's linearized optional operations are a subset of B's. Every way to
/// finish from B also finishes from A: the operations B has left are A's minus some optional ones,
/// which have no return entry and so never block another, and which need not be linearized at
/// all. Hence once A is recorded, B can be skipped. (Soundness: if the search failed while some
/// recorded configuration could still finish, take one with the shortest way to finish; it was
/// expanded, so the first step of that way led to a configuration that was either recorded, or
/// skipped because a recorded one subsumed it, and either can finish in one step fewer.)
///
/// With equality alone, every optional write doubles the configurations of a failing search,
/// since it stays pending forever and may be taken or not at every point; a failing search of a
/// few hundred operations with a dozen timeouts does not finish. Subsumption keeps only the
/// minimal sets; without optional operations it is exactly Lowe's equality cache.
#[derive(Default)]
struct Memo {
    #[allow(clippy::disallowed_types)]
    seen: HashMap<Settled, Vec<Box<[u64]>>, BuildHasherDefault<MixHasher>>,
}

impl Memo {
    /// Records `config` unless a recorded configuration subsumes it; returns whether it recorded.
    fn maybe_record(&mut self, config: &Config) -> bool {
        // Trailing zero words are dropped, so that the common empty set costs no allocation.
        let used = config
            .optional
            .iter()
            .rposition(|word| *word != 0)
            .map_or(0, |last| last + 1);
        let optional = &config.optional[..used];
        let Some(minimal) = self.seen.get_mut(&config.settled) else {
            self.seen
                .insert(config.settled.clone(), vec![optional.into()]);
            return true;
        };
        if minimal.iter().any(|seen| is_subset(seen, optional)) {
            return false;
        }
        minimal.retain(|seen| !is_subset(optional, seen));
        minimal.push(optional.into());
        true
    }
}

/// Whether every bit set in `small` is set in `large`; missing words are zero.
fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small
        .iter()
        .enumerate()
        .all(|(index, word)| word & !large.get(index).unwrap_or(&0) == 0)
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

/// A seedless hasher for the memo: deterministic, and fast for the single word that [`Settled`]
/// feeds it.
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

    fn cas(
        client: u64,
        (key, expected, new): (u64, Option<u64>, u64),
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

    fn unknown_put(client: u64, key: u64, value: u64, invoke: u64) -> Operation {
        Operation {
            client,
            op: KvOp::Put { key, value },
            invoke,
            completion: None,
        }
    }

    fn unknown_cas(
        client: u64,
        (key, expected, new): (u64, Option<u64>, u64),
        invoke: u64,
    ) -> Operation {
        Operation {
            client,
            op: KvOp::Cas { key, expected, new },
            invoke,
            completion: None,
        }
    }

    fn assert_linearizable(history: &[Operation]) {
        assert_eq!(check_kv_history(history, MAX_STATES), Ok(()));
    }

    /// Asserts that `key` is reported, with all its operations in invoke order.
    fn assert_not_linearizable(history: &[Operation], key: u64) {
        let mut expected: Vec<Operation> = history
            .iter()
            .filter(|operation| operation.op.key() == key)
            .cloned()
            .collect();
        expected.sort_by_key(|operation| operation.invoke);
        assert_eq!(
            check_kv_history(history, MAX_STATES),
            Err(CheckError::NotLinearizable { key, ops: expected })
        );
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_kv_history(&[], 0), Ok(()));
    }

    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable(&[
            get(1, 1, None, 0, 1),
            put(1, 1, 10, 2, 3),
            get(2, 1, Some(10), 4, 5),
            cas(1, (1, Some(10), 11), true, 6, 7),
            get(2, 1, Some(11), 8, 9),
        ]);
    }

    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let history = [
            put(1, 1, 10, 0, 5),
            put(1, 1, 20, 6, 10),
            get(2, 1, Some(10), 11, 12),
        ];
        assert_not_linearizable(&history, 1);
        assert_not_linearizable(&[put(1, 1, 10, 0, 1), get(2, 1, None, 2, 3)], 1);
    }

    #[test]
    fn concurrent_write_and_read_may_see_either_value() {
        assert_linearizable(&[put(1, 1, 10, 0, 10), get(2, 1, None, 2, 8)]);
        assert_linearizable(&[put(1, 1, 10, 0, 10), get(2, 1, Some(10), 2, 8)]);
    }

    #[test]
    fn operations_touching_at_one_instant_are_concurrent() {
        // The read is invoked at the instant the write completes: either order is allowed.
        assert_linearizable(&[put(1, 1, 10, 0, 5), get(2, 1, None, 5, 6)]);
        // One tick later the write strictly precedes the read.
        assert_not_linearizable(&[put(1, 1, 10, 0, 5), get(2, 1, None, 6, 7)], 1);
    }

    #[test]
    fn unknown_put_observed_by_later_read_is_linearizable() {
        assert_linearizable(&[
            put(1, 1, 10, 0, 1),
            unknown_put(2, 1, 20, 2),
            get(3, 1, Some(10), 3, 4),
            get(3, 1, Some(20), 100, 101),
            get(1, 1, Some(20), 200, 201),
        ]);
    }

    #[test]
    fn unknown_put_never_observed_is_linearizable() {
        assert_linearizable(&[
            put(1, 1, 10, 0, 1),
            unknown_put(2, 1, 20, 2),
            get(3, 1, Some(10), 3, 4),
            get(3, 1, Some(10), 100, 101),
        ]);
    }

    #[test]
    fn unknown_put_cannot_take_effect_before_its_invocation() {
        assert_not_linearizable(&[get(1, 1, Some(20), 0, 1), unknown_put(2, 1, 20, 2)], 1);
    }

    #[test]
    fn unknown_put_takes_effect_at_most_once() {
        let history = [
            unknown_put(1, 1, 20, 0),
            get(2, 1, Some(20), 1, 2),
            put(2, 1, 30, 3, 4),
            get(2, 1, Some(20), 5, 6),
        ];
        assert_not_linearizable(&history, 1);
    }

    #[test]
    fn unknown_writes_may_take_effect_back_to_back_in_any_order() {
        // 2 lands, then 1, with nothing acknowledged in between.
        assert_linearizable(&[
            unknown_put(1, 1, 1, 0),
            unknown_put(2, 1, 2, 0),
            get(3, 1, Some(2), 10, 11),
            get(3, 1, Some(1), 12, 13),
        ]);
        // A swap that can only follow another unknown write.
        assert_linearizable(&[
            unknown_put(1, 1, 1, 0),
            unknown_cas(2, (1, Some(1), 2), 0),
            unknown_put(3, 1, 3, 0),
            get(4, 1, Some(2), 10, 11),
        ]);
    }

    #[test]
    fn unknown_get_imposes_no_constraint() {
        let unknown_get = Operation {
            client: 1,
            op: KvOp::Get { key: 1 },
            invoke: 0,
            completion: None,
        };
        assert_linearizable(&[unknown_get, put(2, 1, 10, 5, 6)]);
    }

    #[test]
    fn read_of_value_never_written_is_not_linearizable() {
        assert_not_linearizable(&[put(1, 1, 10, 0, 10), get(2, 1, Some(99), 2, 8)], 1);
    }

    #[test]
    fn cas_swaps_only_when_current_value_matches_expected() {
        assert_linearizable(&[
            cas(1, (1, None, 5), true, 0, 1),
            cas(1, (1, Some(5), 6), true, 2, 3),
            cas(1, (1, Some(5), 7), false, 4, 5),
            get(2, 1, Some(6), 6, 7),
        ]);
        // Reporting a swap that could not happen, or no swap when it had to.
        assert_not_linearizable(
            &[put(1, 1, 10, 0, 1), cas(2, (1, Some(9), 11), true, 2, 3)],
            1,
        );
        assert_not_linearizable(
            &[put(1, 1, 10, 0, 1), cas(2, (1, Some(10), 11), false, 2, 3)],
            1,
        );
    }

    #[test]
    fn failed_cas_leaves_the_value_unchanged() {
        let failed = cas(2, (1, Some(9), 11), false, 2, 3);
        assert_linearizable(&[
            put(1, 1, 10, 0, 1),
            failed.clone(),
            get(3, 1, Some(10), 4, 5),
        ]);
        assert_not_linearizable(&[put(1, 1, 10, 0, 1), failed, get(3, 1, Some(11), 4, 5)], 1);
    }

    #[test]
    fn concurrent_cas_contention_has_one_winner() {
        let both_win = [
            put(1, 1, 0, 0, 1),
            cas(2, (1, Some(0), 2), true, 2, 10),
            cas(3, (1, Some(0), 3), true, 2, 10),
        ];
        assert_not_linearizable(&both_win, 1);
        assert_linearizable(&[
            put(1, 1, 0, 0, 1),
            cas(2, (1, Some(0), 2), true, 2, 10),
            cas(3, (1, Some(0), 3), false, 2, 10),
            get(1, 1, Some(2), 11, 12),
        ]);
    }

    #[test]
    fn unknown_cas_may_or_may_not_have_swapped() {
        let maybe = unknown_cas(2, (1, Some(10), 11), 2);
        assert_linearizable(&[
            put(1, 1, 10, 0, 1),
            maybe.clone(),
            get(3, 1, Some(11), 50, 51),
        ]);
        assert_linearizable(&[
            put(1, 1, 10, 0, 1),
            maybe.clone(),
            get(3, 1, Some(10), 50, 51),
        ]);
        // It could only ever have written 11 over 10.
        assert_not_linearizable(&[put(1, 1, 9, 0, 1), maybe, get(3, 1, Some(11), 50, 51)], 1);
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
        // Either key's operations would be a stale read if they were one register.
        let history = [
            put(1, 1, 10, 0, 10),
            put(2, 2, 10, 1, 2),
            get(3, 2, Some(10), 3, 4),
            get(3, 1, None, 5, 6),
            get(3, 1, Some(10), 11, 12),
        ];
        assert_linearizable(&history);
        // A stale read on key 2 is reported for key 2, listing only key 2's operations.
        let mut history = history.to_vec();
        history.push(get(3, 2, None, 20, 21));
        assert_not_linearizable(&history, 2);
    }

    #[test]
    fn first_failing_key_in_ascending_order_is_reported() {
        assert_not_linearizable(&[get(1, 9, Some(1), 0, 1), get(1, 3, Some(1), 0, 1)], 3);
    }

    #[test]
    fn report_lists_the_operations_of_the_failing_key() {
        let history = [
            put(1, 4, 10, 0, 1),
            get(2, 4, None, 2, 3),
            unknown_cas(3, (4, None, 5), 7),
        ];
        let text = check_kv_history(&history, MAX_STATES)
            .unwrap_err()
            .to_string();
        let expected =
            "history is not linearizable: no order of the 3 operations on key 4 explains \
                        their results; in invoke order:\n  \
                        client 1 invoked put(4, 10) at 0, returned written at 1\n  \
                        client 2 invoked get(4) at 2, returned absent at 3\n  \
                        client 3 invoked cas(4, absent -> 5) at 7, outcome unknown";
        assert_eq!(text, expected);
    }

    #[test]
    #[should_panic(expected = "completed before it was invoked")]
    fn completion_before_invocation_is_a_recorder_bug() {
        let _ = check_kv_history(&[put(1, 1, 10, 5, 4)], MAX_STATES);
    }

    #[test]
    fn search_gives_up_with_too_large_when_max_states_is_tiny() {
        // Sixteen concurrent writes, then a read of a value none wrote: every subset of the
        // writes is a distinct configuration, far more than the bound.
        let mut history: Vec<Operation> = (0..16).map(|c| put(c, 1, c + 1, 0, 100)).collect();
        history.push(get(99, 1, Some(1000), 200, 201));
        assert_eq!(
            check_kv_history(&history, 50),
            Err(CheckError::TooLarge {
                key: 1,
                explored: 51
            })
        );
        assert!(matches!(
            check_kv_history(&history, MAX_STATES),
            Err(CheckError::NotLinearizable { key: 1, .. })
        ));
    }

    // ---- Randomized histories from a real register ---------------------------------------------

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

    const MODERATE: Shape = Shape {
        clients: 8,
        keys: 3,
        ops_per_client: 25,
        duration_max: 20,
        gap_max: 10,
        unknown_percent: 5,
    };

    /// Clients each issue operations one at a time; each takes effect on a real register at a
    /// random instant inside its interval (an unknown-outcome write: at any instant after its
    /// invocation, often after the client gave up, or never). Results are what the register
    /// returned, so the history is linearizable by construction. Written values are 1, 2, 3, ...
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
                let recent = &mut written[key as usize];
                let op = match rng.below(10) {
                    0..=3 => KvOp::Put {
                        key,
                        value: next_value,
                    },
                    4..=7 => KvOp::Get { key },
                    _ => {
                        // Expect absent or one of the last few values written, so both outcomes
                        // are common.
                        let back = rng.below(recent.len().min(3) as u64 + 1) as usize;
                        let expected = (back > 0).then(|| recent[recent.len() - back]);
                        KvOp::Cas {
                            key,
                            expected,
                            new: next_value,
                        }
                    }
                };
                if !matches!(op, KvOp::Get { .. }) {
                    recent.push(next_value);
                    next_value += 1;
                }
                let duration = rng.below(shape.duration_max + 1);
                let index = history.len();
                let completion = if rng.percent(shape.unknown_percent) {
                    if rng.percent(50) {
                        effects.push((now + rng.below(3 * duration + 1), index));
                    }
                    None
                } else {
                    effects.push((now + rng.below(duration + 1), index));
                    Some((now + duration, KvResult::Written)) // result filled in below
                };
                history.push(Operation {
                    client,
                    op,
                    invoke: now,
                    completion,
                });
                now += duration + rng.below(shape.gap_max + 1);
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

    fn is_completed_get(operation: &Operation) -> bool {
        matches!(operation.op, KvOp::Get { .. }) && operation.completion.is_some()
    }

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
                .filter(|&index| is_completed_get(&history[index]))
                .collect();
            let victim = reads[SplitMix64(!seed).below(reads.len() as u64) as usize];
            history[victim].completion.as_mut().unwrap().1 = KvResult::Value(Some(u64::MAX));
            let key = history[victim].op.key();
            match check_kv_history(&history, MAX_STATES) {
                Err(CheckError::NotLinearizable { key: reported, .. }) => assert_eq!(reported, key),
                other => panic!("seed {seed}: corrupted read on key {key} gave {other:?}"),
            }
        }
    }

    /// Every total order of the operations that respects real time, with unknown-outcome
    /// operations optionally left out, tried by exhaustive recursion: none of the entry list's,
    /// the cache's or the pruning's machinery.
    fn brute_force_linearizable(history: &[Operation]) -> bool {
        fn extend(ops: &[Operation], placed: &mut [bool], registers: &BTreeMap<u64, u64>) -> bool {
            if (0..ops.len()).all(|i| placed[i] || ops[i].completion.is_none()) {
                return true;
            }
            for i in 0..ops.len() {
                let must_wait = (0..ops.len()).any(|j| {
                    !placed[j]
                        && matches!(ops[j].completion, Some((done, _)) if done < ops[i].invoke)
                });
                if placed[i] || must_wait {
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
        extend(history, &mut vec![false; history.len()], &BTreeMap::new())
    }

    #[test]
    fn search_agrees_with_brute_force_on_small_random_histories() {
        let one_key = Shape {
            clients: 3,
            keys: 1,
            ops_per_client: 3,
            duration_max: 4,
            gap_max: 2,
            unknown_percent: 35,
        };
        let (mut linearizable, mut not_linearizable) = (0, 0);
        for seed in 0..4000 {
            let shape = Shape {
                keys: 1 + seed % 2,
                ..one_key
            };
            let mut history = random_history(seed, shape);
            // Corrupt one result in most histories, to a plausible value, so that some
            // corruptions are still explained by another order.
            let mut rng = SplitMix64(!seed);
            let victim = rng.below(history.len() as u64) as usize;
            let corrupted = match history[victim].op {
                KvOp::Get { .. } => KvResult::Value(rng.below(4).checked_sub(1)),
                KvOp::Cas { .. } => KvResult::Swapped(rng.percent(50)),
                KvOp::Put { .. } => KvResult::Swapped(true),
            };
            if let (true, Some((_, result))) = (rng.percent(70), &mut history[victim].completion) {
                *result = corrupted;
            }
            let expected = brute_force_linearizable(&history);
            match check_kv_history(&history, MAX_STATES) {
                Ok(()) if expected => linearizable += 1,
                Err(CheckError::NotLinearizable { .. }) if !expected => not_linearizable += 1,
                verdict => panic!("seed {seed}: brute force says {expected}, search {verdict:?}"),
            }
        }
        assert!(
            linearizable > 1000 && not_linearizable > 1000,
            "{linearizable}, {not_linearizable}"
        );
    }

    /// Explored configurations per key, via the private per-key search.
    fn explored_per_key(history: &[Operation]) -> Vec<(Verdict, u64, usize)> {
        let mut by_key: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
        for operation in history {
            by_key
                .entry(operation.op.key())
                .or_default()
                .push(operation);
        }
        let mut outcomes = Vec::new();
        for (_, mut ops) in by_key {
            ops.sort_by_key(|operation| operation.invoke);
            let (verdict, explored) = check_key(&ops, MAX_STATES);
            outcomes.push((verdict, explored, ops.len()));
        }
        outcomes
    }

    /// Five keys, about three hundred operations each, eight clients: the shape the simulator
    /// produces. Wall-clock time is not asserted; explored configurations stand in for it (the
    /// largest of these searches takes about a millisecond in a release build).
    const SIMULATOR_SIZED: Shape = Shape {
        keys: 5,
        ops_per_client: 190,
        ..MODERATE
    };

    #[test]
    fn simulator_sized_linearizable_histories_need_few_states_per_operation() {
        for seed in 0..4 {
            let unknown_percent = [0, 5, 10, 20][seed as usize];
            let history = random_history(
                seed,
                Shape {
                    unknown_percent,
                    ..SIMULATOR_SIZED
                },
            );
            for (verdict, explored, ops) in explored_per_key(&history) {
                assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
                assert!(
                    explored <= 10 * ops as u64,
                    "seed {seed}: {explored} for {ops} ops"
                );
            }
        }
    }

    /// Makes the last completed read of `key` return the value of the completed put that the
    /// completed put preceding the read overwrote: a lost acknowledged write, which the search
    /// can only rule out near the end of the history.
    fn lose_a_write(history: &mut [Operation], key: u64) {
        let latest_completed = |kind: fn(&KvOp) -> bool, before: u64| {
            (0..history.len())
                .filter(|&index| {
                    let operation = &history[index];
                    operation.op.key() == key
                        && kind(&operation.op)
                        && operation
                            .completion
                            .as_ref()
                            .is_some_and(|(done, _)| *done < before)
                })
                .max_by_key(|&index| history[index].invoke)
                .expect("history too short to lose a write")
        };
        let is_put = |op: &KvOp| matches!(op, KvOp::Put { .. });
        let read = latest_completed(|op| matches!(op, KvOp::Get { .. }), u64::MAX);
        let overwriting = latest_completed(is_put, history[read].invoke);
        let lost = latest_completed(is_put, history[overwriting].invoke);
        let KvOp::Put { value, .. } = history[lost].op else {
            unreachable!()
        };
        history[read].completion.as_mut().unwrap().1 = KvResult::Value(Some(value));
    }

    #[test]
    fn simulator_sized_lost_write_with_many_timeouts_is_found_quickly() {
        for seed in 0..4 {
            let unknown_percent = [0, 5, 10, 20][seed as usize];
            let mut history = random_history(
                seed,
                Shape {
                    unknown_percent,
                    ..SIMULATOR_SIZED
                },
            );
            lose_a_write(&mut history, 0);
            let (verdict, explored, ops) = explored_per_key(&history)[0];
            assert_eq!(verdict, Verdict::NotLinearizable, "seed {seed}");
            assert!(
                explored <= 50 * ops as u64,
                "seed {seed}: {explored} for {ops} ops"
            );
        }
    }
}
