//! One table of behaviours run against every [`LogStore`] implementation.

use crate::store::LogStore;
use crate::types::{Entry, EntryKind, Index, LogId, Term};
use bytes::Bytes;

/// An entry whose payload is derived from its index and term, so content can be checked.
pub(crate) fn entry(index: u64, term: u64) -> Entry {
    let data = format!("entry {index} term {term}").repeat((index % 5 + 1) as usize);
    Entry {
        id: LogId::new(Term(term), Index(index)),
        kind: EntryKind::Command,
        data: Bytes::from(data),
        extensions: if index % 3 == 0 {
            Bytes::from_static(b"ext")
        } else {
            Bytes::new()
        },
    }
}

pub(crate) fn entries(from: u64, to_inclusive: u64, term: u64) -> Vec<Entry> {
    (from..=to_inclusive).map(|i| entry(i, term)).collect()
}

/// Checks the contract every store must meet. `store` must be new and empty.
pub(crate) fn log_store_conformance(store: &mut dyn LogStore) {
    assert_eq!(store.first_index(), Index(1));
    assert_eq!(store.last_index(), Index(0));
    assert_eq!(store.entry(Index(1)).expect("entry"), None);
    assert_eq!(store.last_log_id().expect("last"), None);

    // Appends must be contiguous.
    let err = store.append(&entries(2, 3, 1)).expect_err("gap");
    assert!(
        matches!(err, crate::LogError::NotContiguous { .. }),
        "{err}"
    );
    let err = store
        .append_owned(entries(2, 3, 1))
        .expect_err("gap, entries given away");
    assert!(
        matches!(err, crate::LogError::NotContiguous { .. }),
        "{err}"
    );
    assert_eq!(
        store.last_index(),
        Index(0),
        "a refused append adds nothing"
    );

    store.append_and_wait(&entries(1, 10, 1)).expect("append");
    assert_eq!(
        (store.first_index(), store.last_index()),
        (Index(1), Index(10))
    );
    assert_eq!(store.entry(Index(4)).expect("entry"), Some(entry(4, 1)));
    assert_eq!(store.term(Index(10)).expect("term"), Some(Term(1)));
    assert_eq!(store.term(Index(11)).expect("term"), None);
    assert_eq!(
        store
            .entries(Index(2), Index(6), usize::MAX)
            .expect("range"),
        entries(2, 5, 1)
    );
    // A byte budget stops early but always returns at least one entry.
    assert_eq!(
        store.entries(Index(2), Index(6), 1).expect("range"),
        entries(2, 2, 1)
    );
    // Out-of-range starts return nothing.
    assert!(store
        .entries(Index(11), Index(20), usize::MAX)
        .expect("range")
        .is_empty());

    // Asynchronous path: tickets increase and become durable in order.
    let t1 = store.append(&entries(11, 12, 2)).expect("append");
    let t2 = store
        .append_owned(entries(13, 13, 2))
        .expect("append owned");
    assert!(t2 > t1);
    assert_eq!(
        store.entry(Index(13)).expect("visible before durable"),
        Some(entry(13, 2))
    );
    store.wait_durable(t2).expect("wait");
    assert!(store.durable().expect("durable") >= t2);

    // Tail truncation, then re-append with a new term.
    let t = store.truncate_suffix(Index(8)).expect("truncate suffix");
    assert_eq!(store.last_index(), Index(8));
    assert_eq!(store.entry(Index(9)).expect("entry"), None);
    store
        .append_and_wait(&entries(9, 9, 3))
        .expect("append after truncate");
    assert!(store.durable().expect("durable") > t);
    assert_eq!(store.entry(Index(9)).expect("entry"), Some(entry(9, 3)));
    assert_eq!(
        store.last_log_id().expect("last"),
        Some(LogId::new(Term(3), Index(9)))
    );

    // Head truncation.
    store.truncate_prefix(Index(4)).expect("truncate prefix");
    assert_eq!(
        (store.first_index(), store.last_index()),
        (Index(4), Index(9))
    );
    assert_eq!(store.entry(Index(3)).expect("entry"), None);
    assert_eq!(
        store
            .entries(Index(1), Index(6), usize::MAX)
            .expect("range"),
        vec![]
    );
    assert_eq!(
        store
            .entries(Index(4), Index(6), usize::MAX)
            .expect("range"),
        entries(4, 5, 1)
    );
    let err = store.truncate_suffix(Index(2)).expect_err("below first");
    assert!(
        matches!(err, crate::LogError::TruncateOutOfRange { .. }),
        "{err}"
    );

    // Head truncation past the end resets the log (snapshot install).
    let t = store.truncate_prefix(Index(100)).expect("reset");
    store.wait_durable(t).expect("wait");
    assert_eq!(
        (store.first_index(), store.last_index()),
        (Index(100), Index(99))
    );
    assert_eq!(store.last_log_id().expect("last"), None);
    store
        .append_and_wait(&entries(100, 101, 4))
        .expect("append after reset");
    assert_eq!(
        store.entries(Index(99), Index(200), usize::MAX).expect("r"),
        vec![]
    );
    assert_eq!(
        store
            .entries(Index(100), Index(200), usize::MAX)
            .expect("r"),
        entries(100, 101, 4)
    );
    // Truncating everything after a reset leaves an empty log at the same first index.
    store.truncate_suffix(Index(99)).expect("truncate all");
    assert_eq!(
        (store.first_index(), store.last_index()),
        (Index(100), Index(99))
    );
    store
        .append_and_wait(&entries(100, 100, 5))
        .expect("append");
    assert_eq!(store.entry(Index(100)).expect("entry"), Some(entry(100, 5)));
}

#[test]
fn inmem_store_meets_the_log_store_contract() {
    log_store_conformance(&mut crate::InmemStore::new());
}

#[test]
fn log_cache_meets_the_log_store_contract() {
    log_store_conformance(&mut crate::LogCache::new(4, crate::InmemStore::new()));
}
