//! Deliberate durability bugs for the power-loss tests to catch (feature `mutations`, never in
//! a normal build): with the feature compiled in, `RINGRAFT_STORAGE_MUTATION` names one.
//! `tools/scripts/powerloss.sh` shows each is caught; without the feature every check is a
//! constant `false`.

/// A durability bug that can be switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// The WAL reports a batch durable without its fdatasync.
    SkipWalFdatasync,
    /// A file snapshot's commit skips the fsync of the store directory after the rename.
    SkipSnapshotDirSync,
}

impl Mutation {
    /// The name `RINGRAFT_STORAGE_MUTATION` uses.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::SkipWalFdatasync => "skip-wal-fdatasync",
            Mutation::SkipSnapshotDirSync => "skip-snapshot-dir-sync",
        }
    }
}

/// Whether `mutation` is switched on in this process.
#[cfg(feature = "mutations")]
pub fn enabled(mutation: Mutation) -> bool {
    static CHOSEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CHOSEN.get_or_init(|| std::env::var("RINGRAFT_STORAGE_MUTATION").unwrap_or_default())
        == mutation.name()
}

/// Whether `mutation` is switched on in this process: never without the `mutations` feature.
#[cfg(not(feature = "mutations"))]
pub fn enabled(_mutation: Mutation) -> bool {
    false
}
