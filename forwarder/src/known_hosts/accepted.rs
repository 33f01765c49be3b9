//! Host keys this process trusted that no known_hosts file may list: accepted under
//! `accept-new` or `no` and then not written (a read-only file such as a Kubernetes
//! ConfigMap mount, or `UserKnownHostsFile none`), or written and later removed.
//!
//! known_hosts is read afresh on every connection attempt, so without this memory a key
//! that could not be recorded would be "new" again on every reconnect, and a different key
//! offered after a reconnect (by someone in the middle) would be accepted as new too. With
//! it, the first key trusted for a name stands for the rest of the process as if its line
//! had been written: another key for that name is refused as changed, and the refusal is
//! permanent like every host key refusal (`supervisor::is_permanent`).
//!
//! The memory is process-wide ([`AcceptedKeys::process`]), not per connector: a fleet makes
//! a connector per session (one per tunnel when sessions are not shared, and a new one when
//! a tunnel is restarted by a reload), and they must all agree. Entries are scoped by the
//! file the key would have been recorded in, since that is the line they stand for: tunnels
//! that keep separate known_hosts files keep separate memories, as separate files would.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ssh_transport::hostkey::PublicKey;

use super::{HostKeyStatus, lookup_name};

/// Where a key trusted by this process was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Appended to this known_hosts file (which may have lost the line since).
    In(PathBuf),
    /// Appending to this file failed.
    Failed(PathBuf),
    /// There was no file to record it in (`UserKnownHostsFile none`).
    Nowhere,
}

/// A key this process trusted for a host, as shown in a refusal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedKey {
    /// Its type name (`ssh-ed25519`).
    pub key_type: String,
    /// `SHA256:...`.
    pub fingerprint: String,
    /// Where it was recorded.
    pub record: Record,
}

/// One remembered key.
#[derive(Debug)]
struct Entry {
    /// The record file the key would be in (`None` for `UserKnownHostsFile none`).
    scope: Option<PathBuf>,
    /// `host` or `[host]:port`, lowercased.
    name: String,
    blob: Vec<u8>,
    shown: AcceptedKey,
}

/// The keys this process trusted without a known_hosts file to vouch for them. See the
/// module docs.
#[derive(Debug, Default)]
pub struct AcceptedKeys {
    entries: Mutex<Vec<Entry>>,
}

static PROCESS: AcceptedKeys = AcceptedKeys::new();

impl AcceptedKeys {
    /// An empty memory (tests; the forwarder uses [`Self::process`]).
    pub const fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
        }
    }

    /// The memory every connector of this process shares.
    pub fn process() -> &'static AcceptedKeys {
        &PROCESS
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // The list stays consistent whatever panicked while holding it (each change is one
        // push or one field write).
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Completes a lookup in the files: a host the files know nothing about
    /// (`Unknown` with no keys of other types) becomes [`HostKeyStatus::AcceptedEarlier`]
    /// when this key was trusted for it before, [`HostKeyStatus::ChangedSinceAccepted`]
    /// when other keys were; any other status is the files' answer and stands.
    pub fn recall(
        &self,
        status: HostKeyStatus,
        record_file: Option<&Path>,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> HostKeyStatus {
        let nothing_listed =
            matches!(&status, HostKeyStatus::Unknown { other_types } if other_types.is_empty());
        if !nothing_listed {
            return status;
        }
        let name = lookup_name(host, port);
        let entries = self.lock();
        let mut others = Vec::new();
        for e in entries.iter().filter(|e| e.is_for(record_file, &name)) {
            if e.blob == key.blob() {
                return HostKeyStatus::AcceptedEarlier;
            }
            others.push(e.shown.clone());
        }
        if others.is_empty() {
            status
        } else {
            HostKeyStatus::ChangedSinceAccepted { accepted: others }
        }
    }

    /// Remembers that `key` is trusted for `host`/`port`, unless another key already is (a
    /// concurrent attempt got there first): then those keys are returned and nothing
    /// changes. Called before the key is written, so that two attempts cannot each trust
    /// a different key.
    pub fn accept(
        &self,
        record_file: Option<&Path>,
        host: &str,
        port: u16,
        key: &PublicKey,
        record: Record,
    ) -> Result<(), Vec<AcceptedKey>> {
        let name = lookup_name(host, port);
        let mut entries = self.lock();
        let mut others = Vec::new();
        for e in entries.iter_mut().filter(|e| e.is_for(record_file, &name)) {
            if e.blob == key.blob() {
                e.shown.record = record;
                return Ok(());
            }
            others.push(e.shown.clone());
        }
        if !others.is_empty() {
            return Err(others);
        }
        entries.push(Entry {
            scope: record_file.map(Path::to_path_buf),
            name,
            blob: key.blob().to_vec(),
            shown: AcceptedKey {
                key_type: key.key_type().name().to_owned(),
                fingerprint: key.fingerprint(),
                record,
            },
        });
        Ok(())
    }
}

impl Entry {
    fn is_for(&self, record_file: Option<&Path>, name: &str) -> bool {
        self.scope.as_deref() == record_file && self.name == name
    }
}
