//! When a write is acknowledged: the durability modes and the group committer.

use std::sync::{Condvar, Mutex};

use crate::error::StorageError;
use crate::storage::locks::LockUnpoisoned;

/// When a write call returns, how safe is the write?
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// Every write is flushed and fsynced before its call returns (the safest, slowest mode).
    PerOperation,
    /// Writers that arrive while an fsync runs share the next one: each call still returns only
    /// once its write is fsynced, but N concurrent writers pay for far fewer than N fsyncs.
    /// The default.
    #[default]
    GroupCommit,
    /// Calls return once the write is applied in memory; sled flushes in the background (every
    /// 500 ms by default). A crash can lose the last writes. For bulk imports and tests.
    Relaxed,
}

#[derive(Default)]
struct State {
    /// Writes applied so far (sequence of the last applied write).
    applied: u64,
    /// All writes up to this sequence are durable.
    synced: u64,
    /// An fsync is running.
    syncing: bool,
    /// The last sync failed (up to which write, and how): writers waiting on it fail the same way.
    failed_at: Option<(u64, StorageError)>,
}

/// Coordinates fsyncs between writer threads (leader/follower group commit).
pub(crate) struct Committer {
    mode: Durability,
    state: Mutex<State>,
    done: Condvar,
}

impl Committer {
    pub(crate) fn new(mode: Durability) -> Self {
        Committer {
            mode,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        }
    }

    pub(crate) fn mode(&self) -> Durability {
        self.mode
    }

    /// Call after a write was applied; returns once it is durable under the configured mode.
    /// `sync` makes everything applied so far durable.
    pub(crate) fn commit(
        &self,
        sync: &dyn Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        match self.mode {
            Durability::Relaxed => Ok(()),
            Durability::PerOperation => sync(),
            Durability::GroupCommit => self.group_commit(sync),
        }
    }

    fn group_commit(
        &self,
        sync: &dyn Fn() -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        // A poisoned mutex means a syncing thread panicked; the counters are still consistent
        // (they are only changed under the lock, after the sync returns).
        let mut st = self.state.lock_unpoisoned();
        st.applied += 1;
        let mine = st.applied;
        loop {
            if st.synced >= mine {
                return Ok(());
            }
            if let Some((f, e)) = &st.failed_at {
                if *f >= mine {
                    // The shared fsync failed: an I/O failure, not damage on disk.
                    return Err(e.clone());
                }
            }
            if !st.syncing {
                st.syncing = true;
                let target = st.applied;
                drop(st);
                let result = sync();
                st = self.state.lock_unpoisoned();
                st.syncing = false;
                match &result {
                    Ok(()) => st.synced = st.synced.max(target),
                    Err(e) => st.failed_at = Some((target, e.clone())),
                }
                self.done.notify_all();
                if mine <= target {
                    return result;
                }
            } else {
                st = self.done.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Component;
    use std::sync::{mpsc, Arc};

    fn io_error() -> StorageError {
        StorageError::io(Component::DataStore, &std::io::Error::other("fsync failed"))
    }

    /// A writer whose write rode on another writer's failed group fsync gets that fsync's I/O
    /// error, not a misleading `Corrupted`.
    #[test]
    fn a_waiter_on_a_failed_group_fsync_gets_the_io_error() {
        let c = Arc::new(Committer::new(Durability::GroupCommit));
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let leader = {
            let c = c.clone();
            std::thread::spawn(move || {
                c.commit(&|| {
                    let _ = gate.lock().unwrap().recv();
                    Ok(())
                })
            })
        };
        // Wait until the leader's fsync runs, then queue two writers behind it.
        while !c.state.lock().unwrap().syncing {
            std::thread::yield_now();
        }
        let followers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || c.commit(&|| Err(io_error())))
            })
            .collect();
        while c.state.lock().unwrap().applied < 3 {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert!(leader.join().unwrap().is_ok());
        // One follower leads the next fsync (which fails), the other waits on it: both see I/O.
        for f in followers {
            let e = f.join().unwrap().unwrap_err();
            assert!(matches!(e, StorageError::Io { .. }), "{e:?}");
        }
    }
}
