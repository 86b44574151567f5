//! One module per subcommand; each is thin and calls into `vault_core`.

pub mod demo;
