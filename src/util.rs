//! Small std idioms every layer shares: locks that survive a panicked holder, and an error's
//! chain of causes.

use std::error::Error;
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, even when a thread panicked while holding it. For locks whose critical sections
/// leave the data whole whatever happens (one insert, one swap, one read): a poisoned lock of
/// that kind still holds sound data.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// [`lock`] for readers of an `RwLock`.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// [`lock`] for writers of an `RwLock`.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn error_chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether an I/O error in the cause chain is a refused connection.
pub fn is_connection_refused(e: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot save")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_chain_names_every_cause_and_finds_a_refused_connection() {
        let refused = Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused by peer"));
        assert_eq!(error_chain(&refused), "cannot save: refused by peer");
        assert!(is_connection_refused(&refused));
        assert!(!is_connection_refused(&Outer(std::io::Error::other("disk full"))));
    }

    #[test]
    fn a_lock_poisoned_by_a_panic_still_opens() {
        let m = Mutex::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _held = m.lock();
            panic!("poison it");
        });
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }
}
