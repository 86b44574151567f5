//! `kluis status`: what the vault holds, its keys, its size, and the data still waiting for the
//! anchor event of its retention rule.

use vault_core::admin::{Epoch, KekState};

use super::{out, out_json, show_time, waiting, Global};

/// Arguments of `kluis status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub waiting: waiting::WaitingArgs,
}

fn state(s: KekState) -> &'static str {
    match s {
        KekState::Active => "active",
        KekState::DecryptOnly => "decrypt-only",
        KekState::Retiring => "retiring",
        KekState::Destroyed => "destroyed",
    }
}

fn epoch(e: Epoch) -> String {
    match e {
        Epoch::OpenEnded => "open-ended".to_owned(),
        Epoch::Starting(t) => format!(
            "from {}",
            show_time(vault_core::Timestamp::from_unix_seconds(t))
        ),
    }
}

/// Runs `kluis status`.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let v = g.open()?;
    let st = v.admin().stats()?;
    let waiting = waiting::report(&v, &a.waiting)?;
    let kdf = v.admin().kdf_params();
    let keks = v.admin().keks();
    let pending = v.admin().pending_retirements();
    if g.json {
        let keks: Vec<_> = keks
            .iter()
            .map(|k| {
                serde_json::json!({
                    "id": k.id,
                    "state": state(k.state),
                    "epoch": match k.epoch { Epoch::OpenEnded => None, Epoch::Starting(t) => Some(t) },
                    "created_at": k.created_at,
                    "uses": k.uses,
                    "use_limit": k.use_limit,
                })
            })
            .collect();
        let mut obj = serde_json::to_value(&st)?;
        if let Some(m) = obj.as_object_mut() {
            m.insert("kek_list".into(), serde_json::Value::Array(keks));
            m.insert("pending_retirements".into(), serde_json::json!(pending));
            m.insert(
                "kdf".into(),
                serde_json::json!({"m_kib": kdf.m_kib, "t": kdf.t, "p": kdf.p}),
            );
            m.insert(
                "key_store_generation".into(),
                serde_json::json!(v.admin().key_store_generation()),
            );
        }
        waiting::add_json(&mut obj, &waiting)?;
        return out_json(&obj);
    }
    let p = v.paths();
    match p.data_dir() {
        Some(_) => out(&format!("vault       {}", g.vault_dir()?.display()))?,
        None => out(&format!("vault       {}", p.data))?,
    }
    out(&format!(
        "format      data v{}, schema v{}",
        st.data_format_version, st.schema_version
    ))?;
    if st.index_rebuild_pending {
        out(
            "warning     a blind-index rebuild after a schema change did not finish: records not \
             reached are not found by their phone number; run `kluis rotate index`",
        )?;
    }
    out(&format!(
        "subjects    {} ({} forgotten, {} under legal hold)",
        st.subjects, st.forgotten, st.held
    ))?;
    out(&format!("records     {}", st.records))?;
    out(&format!(
        "data keys   {} live, {} shredded",
        st.live_data_keys, st.shredded_data_keys
    ))?;
    let next = st.next_expiry.map_or_else(|| "none".to_owned(), show_time);
    out(&format!(
        "expiries    {} pending, next {next}",
        st.pending_expiries
    ))?;
    waiting::print(&waiting, "waiting     ")?;
    out(&format!("audit log   {} entries", st.audit_entries))?;
    out(&format!(
        "argon2id    m={} KiB, t={}, p={}",
        kdf.m_kib, kdf.t, kdf.p
    ))?;
    out(&format!(
        "disk        data {} bytes ({}), key store {} bytes ({})",
        st.data_bytes,
        p.data,
        st.key_store_bytes,
        p.key_store.display()
    ))?;
    out("KEKs        id    state         epoch                     uses / limit")?;
    for k in &keks {
        out(&format!(
            "            {:<5} {:<13} {:<25} {} / {}",
            k.id,
            state(k.state),
            epoch(k.epoch),
            k.uses,
            k.use_limit
        ))?;
    }
    if !pending.is_empty() {
        out(&format!(
            "interrupted KEK retirement(s): {:?}; run `kluis rotate kek` to finish",
            pending
        ))?;
    }
    Ok(())
}
