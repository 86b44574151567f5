//! The write lease of a vault shared by several processes (issue 14: a vault on PostgreSQL):
//! one process at a time writes; within it, writers run concurrently as in a process-exclusive
//! vault. The first writer of the process takes the cross-process lock ([`SharedLock`]) and,
//! before anyone writes, brings the process's view up to date (`refresh`: what another process
//! changed while it held the lease); the last one out releases it.
//!
//! Fairness: a process that has held the lease for [`SLICE`] admits no new writer until its
//! current ones are done, then releases, so a busy instance cannot starve the others (PostgreSQL
//! grants a released advisory lock to a waiting session).
//!
//! For a process-exclusive vault (an embedded engine) there is no shared lock: [`Lease::enter`]
//! only counts.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::StorageError;
use crate::storage::locks::LockUnpoisoned;

/// How long a process keeps the lease while new writers keep arriving.
const SLICE: Duration = Duration::from_millis(20);

/// A lock shared by the processes of one vault.
pub(crate) trait SharedLock: Send + Sync {
    /// Blocks until this process holds the lock.
    fn acquire(&self) -> Result<(), StorageError>;
    /// Releases it (best effort: a broken connection released it already).
    fn release(&self);
}

#[derive(Default)]
struct State {
    /// Writers inside.
    holders: usize,
    /// Whether this process holds the shared lock (and its view is fresh).
    held: bool,
    /// A writer is taking the lock and refreshing: others wait for it.
    acquiring: bool,
    /// The slice is over: no new writer until the current ones are out and the lock released.
    draining: bool,
    since: Option<Instant>,
}

/// The lease of one vault in one process.
pub(crate) struct Lease {
    shared: Option<Arc<dyn SharedLock>>,
    /// Whether a long hold is given up between writers (see [`SLICE`]).
    fair: bool,
    state: Mutex<State>,
    changed: Condvar,
}

/// A [`SharedLock`] that locks nothing: debug builds give it to a vault of one process, so that
/// the lease's bookkeeping (and the check that every write is inside it) runs in every test.
pub(crate) struct Unshared;

impl SharedLock for Unshared {
    fn acquire(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn release(&self) {}
}

/// One writer inside the lease; dropping it lets the lease go when it was the last. Not `Send`:
/// it is dropped on the thread that entered (see [`HELD`]).
pub(crate) struct LeaseGuard<'a> {
    lease: &'a Lease,
    _not_send: std::marker::PhantomData<*const ()>,
}

thread_local! {
    /// The leases (by address) this thread is inside, once per guard: a writer that enters again
    /// (an operation calling another) never waits for a drain it would itself hold up.
    static HELD: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl<'a> LeaseGuard<'a> {
    fn new(lease: &'a Lease) -> LeaseGuard<'a> {
        HELD.with(|h| h.borrow_mut().push(lease.addr()));
        LeaseGuard {
            lease,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Lease {
    /// A lease over `shared` (`None`: the vault is this process's alone), `fair` when other
    /// processes wait for it.
    pub(crate) fn new(shared: Option<Arc<dyn SharedLock>>, fair: bool) -> Lease {
        Lease {
            shared,
            fair,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }
    }

    fn addr(&self) -> usize {
        self as *const Lease as usize
    }

    fn held_by_this_thread(&self) -> bool {
        HELD.with(|h| h.borrow().contains(&self.addr()))
    }

    /// Whether a writer of this process is inside (so this process holds the shared lock).
    pub(crate) fn is_held(&self) -> bool {
        let st = self.state.lock_unpoisoned();
        self.shared.is_none() || (st.held && st.holders > 0)
    }

    /// Enters as a writer. The first writer takes the shared lock and runs `refresh` before any
    /// writer of this process goes on; a failed lock or refresh lets the lock go and is returned.
    pub(crate) fn enter(
        &self,
        refresh: &dyn Fn() -> Result<(), StorageError>,
    ) -> Result<LeaseGuard<'_>, StorageError> {
        let Some(shared) = &self.shared else {
            return Ok(LeaseGuard::new(self));
        };
        let mut st = self.state.lock_unpoisoned();
        if self.held_by_this_thread() {
            st.holders += 1;
            return Ok(LeaseGuard::new(self));
        }
        loop {
            if self.fair && st.held && !st.draining && st.since.is_some_and(|t| t.elapsed() > SLICE)
            {
                st.draining = true;
            }
            if st.held && !st.draining {
                st.holders += 1;
                return Ok(LeaseGuard::new(self));
            }
            if !st.held && !st.acquiring && st.holders == 0 {
                break;
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.acquiring = true;
        drop(st);
        // Should the refresh panic, the guard lets the lock go and wakes the waiters, so that
        // neither this process's writers nor other processes wait for ever.
        let mut unwinding = AcquireGuard {
            lease: self,
            shared: shared.as_ref(),
            armed: true,
        };
        let taken = shared
            .acquire()
            .and_then(|()| refresh().inspect_err(|_| shared.release()));
        unwinding.armed = false;
        let mut st = self.state.lock_unpoisoned();
        st.acquiring = false;
        if taken.is_ok() {
            st.held = true;
            st.draining = false;
            st.since = Some(Instant::now());
            st.holders += 1;
        }
        drop(st);
        self.changed.notify_all();
        taken.map(|()| LeaseGuard::new(self))
    }

    fn leave(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let mut st = self.state.lock_unpoisoned();
        st.holders -= 1;
        if st.holders > 0 {
            return;
        }
        // The last writer out releases (at once when draining; also when idle, so that another
        // process never waits on one that has nothing to write).
        shared.release();
        st.held = false;
        st.draining = false;
        st.since = None;
        drop(st);
        self.changed.notify_all();
    }
}

/// Undoes a half-done acquisition when its refresh panics (see [`Lease::enter`]).
struct AcquireGuard<'a> {
    lease: &'a Lease,
    shared: &'a dyn SharedLock,
    armed: bool,
}

impl Drop for AcquireGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.release();
            self.lease.state.lock_unpoisoned().acquiring = false;
            self.lease.changed.notify_all();
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        let addr = self.lease.addr();
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|a| *a == addr) {
                h.swap_remove(i);
            }
        });
        self.lease.leave();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A shared lock that counts, and fails when told to.
    #[derive(Default)]
    struct Counting {
        acquired: AtomicUsize,
        released: AtomicUsize,
        inside: AtomicUsize,
    }

    impl SharedLock for Counting {
        fn acquire(&self) -> Result<(), StorageError> {
            assert_eq!(self.inside.fetch_add(1, Ordering::SeqCst), 0, "taken twice");
            self.acquired.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn release(&self) {
            self.inside.fetch_sub(1, Ordering::SeqCst);
            self.released.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Writers of one process share one acquisition and one refresh; the last one out releases.
    #[test]
    fn writers_share_the_lease_and_the_last_releases() {
        let lock = Arc::new(Counting::default());
        let lease = Lease::new(Some(lock.clone()), true);
        let refreshed = AtomicUsize::new(0);
        let refresh = || {
            refreshed.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        let a = lease.enter(&refresh).unwrap();
        let b = lease.enter(&refresh).unwrap();
        assert!(lease.is_held());
        assert_eq!(refreshed.load(Ordering::SeqCst), 1);
        drop(a);
        assert_eq!(lock.released.load(Ordering::SeqCst), 0);
        drop(b);
        assert_eq!(lock.released.load(Ordering::SeqCst), 1);
        assert!(!lease.is_held());
        drop(lease.enter(&refresh).unwrap());
        assert_eq!(lock.acquired.load(Ordering::SeqCst), 2);
        assert_eq!(refreshed.load(Ordering::SeqCst), 2);
    }

    /// A failed refresh lets the lock go and the error reach the writer; the next one retries.
    #[test]
    fn a_failed_refresh_releases_and_is_returned() {
        let lock = Arc::new(Counting::default());
        let lease = Lease::new(Some(lock.clone()), true);
        let failing = || {
            Err(StorageError::corrupted(
                crate::error::Component::DataStore,
                "x",
            ))
        };
        assert!(lease.enter(&failing).is_err());
        assert_eq!(lock.released.load(Ordering::SeqCst), 1);
        assert!(!lease.is_held());
        drop(lease.enter(&|| Ok(())).unwrap());
    }

    /// After its slice, a busy process lets the lease go between writers (so a waiting process
    /// gets a turn) instead of admitting writers forever.
    #[test]
    fn a_long_hold_is_given_up_between_writers() {
        let lock = Arc::new(Counting::default());
        let lease = Arc::new(Lease::new(Some(lock.clone()), true));
        let first = lease.enter(&|| Ok(())).unwrap();
        std::thread::sleep(SLICE + Duration::from_millis(5));
        let l2 = lease.clone();
        let next = std::thread::spawn(move || drop(l2.enter(&|| Ok(())).unwrap()));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            lock.acquired.load(Ordering::SeqCst),
            1,
            "waits for the drain"
        );
        drop(first);
        next.join().unwrap();
        assert_eq!(
            lock.acquired.load(Ordering::SeqCst),
            2,
            "released and taken again"
        );
    }

    /// A writer entering again on its own thread (an operation calling another) is let in even
    /// while the lease drains: waiting there would wait for itself.
    #[test]
    fn a_writer_entering_again_never_waits_for_itself() {
        let lock = Arc::new(Counting::default());
        let lease = Lease::new(Some(lock.clone()), true);
        let outer = lease.enter(&|| Ok(())).unwrap();
        std::thread::sleep(SLICE + Duration::from_millis(5));
        let inner = lease.enter(&|| Ok(())).unwrap();
        drop(inner);
        drop(outer);
        assert_eq!(lock.acquired.load(Ordering::SeqCst), 1);
        assert_eq!(lock.released.load(Ordering::SeqCst), 1);
    }

    /// A refresh that panics lets the lock go and the next writer in (nothing waits for ever).
    #[test]
    fn a_panicking_refresh_does_not_block_the_lease() {
        let lock = Arc::new(Counting::default());
        let lease = Lease::new(Some(lock.clone()), true);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = lease.enter(&|| panic!("damaged file"));
        }));
        assert!(r.is_err());
        assert_eq!(lock.released.load(Ordering::SeqCst), 1);
        drop(lease.enter(&|| Ok(())).unwrap());
    }

    /// A vault of one process has no shared lock: entering only counts.
    #[test]
    fn an_exclusive_vault_has_no_shared_lock() {
        let lease = Lease::new(None, false);
        let g = lease
            .enter(&|| panic!("no refresh without a shared lock"))
            .unwrap();
        assert!(lease.is_held());
        drop(g);
    }
}
