use super::*;
use crate::configuration::Server;
use crate::types::NodeId;

fn configuration() -> Configuration {
    Configuration::new(vec![
        Server::voter(NodeId(1), "a:1"),
        Server::nonvoter(NodeId(2), "a:2"),
    ])
}

fn write(store: &dyn SnapshotStore, term: u64, index: u64, data: &[u8]) -> SnapshotMeta {
    let mut sink = store
        .create(
            LogId::new(Term(term), Index(index)),
            &configuration(),
            Index(index / 2),
        )
        .expect("create");
    sink.write_all(data).expect("write");
    sink.commit().expect("commit")
}

fn read(store: &dyn SnapshotStore, id: &str) -> Result<(SnapshotMeta, Vec<u8>), SnapshotError> {
    let (meta, mut reader) = store.open(id)?;
    let mut data = Vec::new();
    reader.read_to_end(&mut data).expect("read");
    Ok((meta, data))
}

/// The behaviours every store that keeps snapshots shares.
fn keeps_the_latest_snapshot(store: &dyn SnapshotStore) {
    assert!(store.list().expect("list").is_empty());
    let first = write(store, 1, 10, b"first");
    let second = write(store, 2, 20, b"second snapshot");
    assert_eq!(second.size, 15);
    assert_eq!(second.configuration, configuration());
    assert_eq!(second.configuration_index, Index(10));
    let listed = store.list().expect("list");
    assert_eq!(listed.first(), Some(&second), "newest first");
    let (meta, data) = read(store, &second.id).expect("open");
    assert_eq!(
        (meta, data.as_slice()),
        (second.clone(), &b"second snapshot"[..])
    );
    // Cancelled snapshots leave nothing behind.
    let mut sink = store
        .create(LogId::new(Term(3), Index(30)), &configuration(), Index(1))
        .expect("c");
    sink.write_all(b"never").expect("write");
    sink.cancel().expect("cancel");
    assert_eq!(store.list().expect("list").first(), Some(&second));
    let _ = first;
}

#[test]
fn the_in_memory_store_keeps_the_latest_snapshot() {
    keeps_the_latest_snapshot(&InmemSnapshotStore::new());
}

#[test]
fn the_file_store_keeps_snapshots_and_retains_n() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::new(dir.path(), 2).expect("store");
    keeps_the_latest_snapshot(&store);
    write(&store, 2, 25, b"third");
    let listed = store.list().expect("list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].last, LogId::new(Term(2), Index(25)));
    assert_eq!(listed[1].last, LogId::new(Term(2), Index(20)));
    // Reaped on commit: only two directories remain.
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 2);
    // A reopened store sees the same snapshots and ignores (and removes) temp directories.
    std::fs::create_dir(dir.path().join("x.tmp")).expect("tmp");
    let reopened = FileSnapshotStore::new(dir.path(), 2).expect("reopen");
    assert_eq!(reopened.list().expect("list"), listed);
    assert!(!dir.path().join("x.tmp").exists());
    // New ids never collide with old ones.
    let newest = write(&reopened, 2, 25, b"fourth");
    assert!(listed.iter().all(|m| m.id != newest.id));
}

#[test]
fn the_file_store_detects_damaged_data_and_skips_damaged_metadata() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::new(dir.path(), 3).expect("store");
    let good = write(&store, 1, 5, b"good data");
    let bad = write(&store, 1, 6, b"will be damaged");
    let state = dir.path().join(&bad.id).join(STATE_FILE);
    let mut bytes = std::fs::read(&state).expect("read");
    bytes[3] ^= 0x20;
    std::fs::write(&state, &bytes).expect("write");
    assert!(matches!(
        read(&store, &bad.id),
        Err(SnapshotError::Corruption { .. })
    ));
    let meta = dir.path().join(&bad.id).join(META_FILE);
    let mut bytes = std::fs::read(&meta).expect("read");
    bytes[2] ^= 0x20;
    std::fs::write(&meta, &bytes).expect("write");
    assert_eq!(store.list().expect("list"), vec![good.clone()]);
    assert!(matches!(
        read(&store, "missing"),
        Err(SnapshotError::NotFound { .. })
    ));
    assert!(matches!(
        read(&store, "../etc"),
        Err(SnapshotError::NotFound { .. })
    ));
    assert!(read(&store, &good.id).is_ok());
}

#[test]
fn dropping_a_sink_cancels_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::new(dir.path(), 1).expect("store");
    let mut sink = store
        .create(LogId::new(Term(1), Index(1)), &configuration(), Index(1))
        .expect("c");
    sink.write_all(b"abandoned").expect("write");
    drop(sink);
    assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 0);
    assert!(matches!(
        FileSnapshotStore::new(dir.path(), 0),
        Err(SnapshotError::Config { .. })
    ));
}

#[test]
fn the_discard_store_keeps_nothing() {
    let store = DiscardSnapshotStore;
    let meta = write(&store, 1, 1, b"gone");
    assert_eq!(meta.size, 4);
    assert!(store.list().expect("list").is_empty());
    assert!(matches!(
        store.open(&meta.id),
        Err(SnapshotError::NotSupported)
    ));
}

/// Staged snapshots: kept apart from the retained ones (never counted against `retain`),
/// listed and opened from the staging area, removed one by one, and durable across reopen.
fn stages_apart_from_retained_snapshots(store: &dyn SnapshotStore) {
    let staging = store.staging().expect("the store stages");
    let a = write(staging, 2, 10, b"restore-a");
    let b = write(staging, 3, 20, b"restore-b");
    write(store, 1, 5, b"regular-1");
    write(store, 1, 6, b"regular-2");
    write(store, 1, 7, b"regular-3");
    let staged: Vec<_> = staging
        .list()
        .unwrap()
        .into_iter()
        .map(|m| m.last)
        .collect();
    assert_eq!(
        staged,
        vec![b.last, a.last],
        "every staged snapshot, newest first"
    );
    assert!(store.list().unwrap().iter().all(|m| m.last.index.0 < 10));
    assert_eq!(read(staging, &a.id).unwrap().1, b"restore-a");
    staging.remove(&a.id).unwrap();
    assert!(matches!(
        staging.remove(&a.id),
        Err(SnapshotError::NotFound { .. })
    ));
    assert!(matches!(
        read(staging, &a.id),
        Err(SnapshotError::NotFound { .. })
    ));
    assert_eq!(read(staging, &b.id).unwrap().1, b"restore-b");
}

#[test]
fn the_in_memory_store_stages_restores() {
    stages_apart_from_retained_snapshots(&InmemSnapshotStore::new());
    stages_apart_from_retained_snapshots(&InmemSnapshotStore::default());
}

#[test]
fn the_file_store_stages_restores_durably() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileSnapshotStore::new(dir.path(), 2).unwrap();
    stages_apart_from_retained_snapshots(&store);
    assert_eq!(
        store.list().unwrap().len(),
        2,
        "retain counts only regular snapshots"
    );
    drop(store);
    let reopened = FileSnapshotStore::new(dir.path(), 2).unwrap();
    let staged = reopened.staging().unwrap().list().unwrap();
    assert_eq!(staged.len(), 1);
    assert_eq!(staged[0].last.index.0, 20);
    assert!(matches!(
        reopened.remove("../escape"),
        Err(SnapshotError::NotFound { .. })
    ));
}

/// `meta` in the version 1 layout earlier builds wrote, with the configuration in its own
/// version 1 layout.
fn legacy_meta(meta: &SnapshotMeta, data_crc: u32) -> Vec<u8> {
    let mut configuration = vec![1u8];
    configuration.put_u32_le(meta.configuration.servers.len() as u32);
    for server in &meta.configuration.servers {
        configuration.put_u64_le(server.id.0);
        configuration.put_u8(match server.suffrage {
            crate::Suffrage::Voter => 1,
            crate::Suffrage::Nonvoter => 2,
        });
        configuration.put_u32_le(server.address.len() as u32);
        configuration.put_slice(server.address.as_bytes());
    }
    let mut out = vec![1u8];
    out.put_u64_le(meta.last.index.0);
    out.put_u64_le(meta.last.term.0);
    out.put_u64_le(meta.configuration_index.0);
    out.put_u64_le(meta.size);
    out.put_u32_le(data_crc);
    out.put_u32_le(configuration.len() as u32);
    out.put_slice(&configuration);
    let crc = crc32c::crc32c(&out);
    out.put_u32_le(crc);
    out
}

#[test]
fn version_1_metadata_still_opens_and_unknown_versions_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FileSnapshotStore::new(dir.path(), 3).expect("store");
    let data = b"state from an earlier build";
    let written = write(&store, 3, 40, data);
    let meta_path = dir.path().join(&written.id).join(META_FILE);
    let current = std::fs::read(&meta_path).expect("read");
    assert_eq!(current[0], META_VERSION);
    assert_eq!(
        decode_meta(&written.id, &current).expect("decode").0,
        written
    );

    std::fs::write(&meta_path, legacy_meta(&written, crc32c::crc32c(data))).expect("write");
    assert_eq!(store.list().expect("list"), vec![written.clone()]);
    let (meta, read_back) = read(&store, &written.id).expect("open a version 1 snapshot");
    assert_eq!((meta, read_back.as_slice()), (written.clone(), &data[..]));

    // A version this build does not know, with a valid checksum: refused, and the reason
    // names the version.
    let mut future = current.clone();
    future[0] = 3;
    let body = future.len() - 4;
    let crc = crc32c::crc32c(&future[..body]);
    future[body..].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&meta_path, &future).expect("write");
    match read(&store, &written.id) {
        Err(SnapshotError::Corruption { reason, .. }) => {
            assert_eq!(reason, "unsupported metadata version 3");
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    assert!(store.list().expect("list").is_empty());
}

#[test]
fn every_truncation_of_metadata_is_a_typed_error() {
    let meta = SnapshotMeta {
        id: "x".into(),
        last: LogId::new(Term(2), Index(9)),
        configuration: configuration(),
        configuration_index: Index(4),
        size: 77,
    };
    for bytes in [encode_meta(&meta, 5), legacy_meta(&meta, 5)] {
        assert_eq!(decode_meta("x", &bytes).expect("decode"), (meta.clone(), 5));
        for cut in 0..bytes.len() {
            assert!(decode_meta("x", &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
