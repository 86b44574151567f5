//! Applying a new schema version without orphaning stored data.

/// Why a new schema cannot be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaChangeError {
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] crate::error::StorageError),
}
