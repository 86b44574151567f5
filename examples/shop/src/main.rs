//! `shop DIR [ADDR]`: the example shop on a vault in DIR (created with `examples/webshop.toml` when
//! DIR holds none), listening on ADDR (default 127.0.0.1:8080). The passphrase comes from the
//! file named by `KLUIS_PASSPHRASE_FILE` (never from the command line).
#![forbid(unsafe_code)]

use anyhow::Context;
use kluis_example_shop::{router, schema_source, Shop};
use vault_core::schema::Schema;
use vault_core::{AsyncVault, Credentials, Error, OpenError, VaultOptions, VaultPaths};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().context("usage: shop DIR [ADDR]")?;
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let file = std::env::var("KLUIS_PASSPHRASE_FILE")
        .context("set KLUIS_PASSPHRASE_FILE to a file holding the vault's passphrase")?;
    let passphrase = std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?;
    let creds = || Credentials::passphrase(passphrase.trim_end_matches(['\r', '\n']));
    let paths = VaultPaths::in_dir(&dir);
    let options = VaultOptions::default().actor("shop");
    let vault = match AsyncVault::open(paths.clone(), creds(), options.clone()).await {
        Ok(v) => v,
        Err(Error::Open(OpenError::NotAVault { .. })) => {
            let schema = Schema::from_toml(&schema_source().map_err(anyhow::Error::msg)?)?;
            AsyncVault::create(paths, creds(), schema, options).await?
        }
        Err(e) => return Err(e.into()),
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!("kluis example shop on http://{}", listener.local_addr()?);
    }
    axum::serve(listener, router(Shop::new(vault))).await?;
    Ok(())
}
