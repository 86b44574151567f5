//! DANGER, tests only (feature `danger-fault-injection`): `KLUIS_DANGER_FAIL_SYNC=N` makes the
//! N-th sync of the data store fail once, counted from the open, through vault-core's
//! fault-injecting store wrapper. A build without the feature has no such variable.

use vault_core::danger_faults::{wrapper, FaultKind, FaultPlan};
use vault_core::VaultOptions;

/// `options` with the fault the environment asks for, if any.
pub fn from_env(options: VaultOptions) -> VaultOptions {
    let n = std::env::var("KLUIS_DANGER_FAIL_SYNC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    match n {
        Some(n) => {
            // A test build only; say so, in case one ever runs where it should not.
            crate::output::stderr_line(&format!(
                "DANGER: a test build; the data store's sync number {n} will fail"
            ));
            let plan = FaultPlan::new();
            plan.arm(FaultKind::Sync, n);
            options.danger_wrap_store(wrapper(plan))
        }
        None => options,
    }
}
