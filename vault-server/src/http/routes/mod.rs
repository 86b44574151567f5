//! One module per group of endpoints; each handler checks the token's operation, then calls the
//! token's purpose-bound handle.

pub(crate) mod admin;
pub(crate) mod meta;
pub(crate) mod records;
pub(crate) mod subjects;
