//! `shop DIR [ADDR]`: the example shop on a vault in DIR (created with `examples/webshop.toml` when
//! DIR holds none), listening on ADDR (default 127.0.0.1:8080). The passphrase is the first line
//! of the file named by `KLUIS_PASSPHRASE_FILE` (never on the command line).
#![forbid(unsafe_code)]

use anyhow::Context;
use kluis_example_shop::{router, Shop, SCHEMA};
use vault_core::schema::Schema;
use vault_core::{Credentials, Passphrase, Vault, VaultOptions, VaultPaths};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: shop DIR [ADDR]")?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let file = std::env::var_os("KLUIS_PASSPHRASE_FILE")
        .context("set KLUIS_PASSPHRASE_FILE to a file holding the vault's passphrase")?;
    let creds = Credentials::passphrase(Passphrase::read_file(file.as_ref())?);
    let paths = VaultPaths::in_dir(&dir);
    let schema = Schema::from_toml(SCHEMA)?;
    // Argon2id and the first open's checks take a moment: off the runtime's threads.
    let vault = tokio::task::spawn_blocking(move || {
        Vault::open_or_create(
            &paths,
            &creds,
            schema,
            VaultOptions::default().actor("shop"),
        )
    })
    .await??;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("kluis example shop on http://{}", listener.local_addr()?);
    }
    axum::serve(listener, router(Shop::new(vault)?)).await?;
    Ok(())
}
