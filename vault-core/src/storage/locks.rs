//! Locks that outlive a panic: kluis's shared state is only ever replaced or updated whole (a
//! cache entry, a counter, an `Arc`, the key store through methods that restore it on failure), so
//! a lock poisoned by a panic elsewhere still guards consistent data. Every caller says why at the
//! call site when the reason is specific to what the lock guards.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock()` that recovers a poisoned mutex.
pub(crate) trait LockUnpoisoned<T> {
    /// Locks, taking the guard back from a poisoned lock.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T> LockUnpoisoned<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `read()` / `write()` that recover a poisoned `RwLock`.
pub(crate) trait RwUnpoisoned<T> {
    /// Read-locks, taking the guard back from a poisoned lock.
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T>;
    /// Write-locks, taking the guard back from a poisoned lock.
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T> RwUnpoisoned<T> for RwLock<T> {
    fn read_unpoisoned(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write_unpoisoned(&self) -> RwLockWriteGuard<'_, T> {
        self.write().unwrap_or_else(|p| p.into_inner())
    }
}
