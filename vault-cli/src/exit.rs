//! Documented exit codes and the mapping from library errors to them.

use std::process::ExitCode;

use vault_core::{Error, OpenError, ReadError, StorageError, WriteError};

/// Other failure.
pub const FAILURE: u8 = 1;
/// Usage error.
pub const USAGE: u8 = 2;
/// Wrong credentials.
pub const WRONG_CREDENTIALS: u8 = 3;
/// Integrity failure.
pub const INTEGRITY: u8 = 4;
/// Not found.
pub const NOT_FOUND: u8 = 5;
/// Vault in use.
pub const IN_USE: u8 = 6;
/// Invalid input.
pub const INVALID_INPUT: u8 = 7;

/// The exit code for an error.
pub fn code(e: &anyhow::Error) -> u8 {
    let Some(e) = e.downcast_ref::<Error>() else {
        return FAILURE;
    };
    match e {
        Error::Open(
            OpenError::WrongCredentials | OpenError::WrongFactors { .. } | OpenError::KeyFile(_),
        ) => WRONG_CREDENTIALS,
        Error::Open(OpenError::AlreadyOpen { .. }) => IN_USE,
        Error::Open(OpenError::NotAVault { .. }) => NOT_FOUND,
        Error::Open(
            OpenError::Storage(StorageError::Corrupted { .. }) | OpenError::VaultMismatch,
        ) => INTEGRITY,
        Error::Read(ReadError::Integrity(_)) | Error::Write(WriteError::Integrity(_)) => INTEGRITY,
        Error::Read(ReadError::NotFound { .. } | ReadError::SubjectNotFound) => NOT_FOUND,
        Error::Write(WriteError::Field(_) | WriteError::Record(_)) | Error::Schema(_) => {
            INVALID_INPUT
        }
        _ => FAILURE,
    }
}

/// Prints the error chain (messages never contain values or keys) and returns its exit code.
pub fn report(e: &anyhow::Error) -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("kluis: error: {e:#}");
    }
    ExitCode::from(code(e))
}
