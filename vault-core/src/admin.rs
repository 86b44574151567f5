//! Administrative key operations: data-key and blind-index rotation, backup, key-store export.

/// Errors of administrative operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] crate::error::StorageError),
}
