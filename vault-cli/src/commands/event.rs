//! `kluis event`: record an anchor event (e.g. `delivered`) for a subject.

use super::{now, out, out_json, parse_time, show_time, subject, Global};

/// Arguments of `kluis event`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The subject id.
    #[arg(allow_hyphen_values = true)] // ids are base64url: 1 in 64 starts with '-'
    pub subject: String,
    /// The event, as the schema's retention rules and ceilings name it (delivered, invoiced,
    /// last_order, ...).
    pub name: String,
    /// When it happened: RFC 3339, a date, or Unix seconds (default: now).
    #[arg(long, value_name = "T")]
    pub at: Option<String>,
    /// Record the event for one record (e.g. `--record address --label 42`, order 42's
    /// delivery) instead of for the customer: purposes with `scope = "record"` count only events
    /// of their own record.
    #[arg(long, value_name = "TYPE")]
    pub record: Option<String>,
    /// The label of the `--record` (e.g. the order number); empty when not given.
    #[arg(long, value_name = "L", requires = "record")]
    pub label: Option<String>,
    /// Why, for the audit log.
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// Runs `kluis event`. An event time that does not count is reported, not refused (exit 0): the
/// event was already recorded at that time or later, or the data it would start the retention of
/// is newer than it.
pub fn run(g: &Global, a: Args) -> anyhow::Result<()> {
    let s = subject(&a.subject)?;
    let at = match &a.at {
        Some(t) => parse_time(t)?,
        None => now(),
    };
    let v = g.open()?;
    let req = g.request(&a.reason);
    let r = match &a.record {
        Some(t) => {
            let key = vault_core::RecordKey::labelled(t, a.label.as_deref().unwrap_or(""));
            v.record_event_for(&s, &key, &a.name, at, &req)?
        }
        None => v.record_event(&s, &a.name, at, &req)?,
    };
    if g.json {
        return out_json(&serde_json::json!({
            "event": a.name,
            "subject": s,
            "at": at,
            "recorded": r.recorded,
            "already_recorded": r.already_recorded,
            "counted_for": r.counted_for,
            "not_counted_for": r.not_counted_for,
            "no_data": r.no_data,
            "other_scope": r.other_scope,
            "record": a.record.as_ref().map(|t| serde_json::json!({
                "type": t, "label": a.label.as_deref().unwrap_or("")
            })),
        }));
    }
    let (name, when) = (&a.name, show_time(at));
    if let Some(t) = r.already_recorded {
        return out(&format!(
            "ignored {name} for {s} at {when}: it is already recorded at {}, and only a later time \
             moves an event; nothing changed",
            show_time(t)
        ));
    }
    let names_it = !(r.counted_for.is_empty()
        && r.not_counted_for.is_empty()
        && r.no_data.is_empty()
        && r.other_scope.is_empty());
    if r.counted_for.is_empty() && names_it {
        out(&format!(
            "ignored {name} for {s} at {when}: recorded, but it starts no retention period"
        ))?;
    } else {
        out(&format!("recorded {name} for {s} at {when}"))?;
    }
    for n in &r.not_counted_for {
        out(&format!(
            "  not counted for {}: its data is newer (written from {}), and an event older than \
             the data does not count for it; to start its retention, record {name} again with a \
             time at or after that",
            n.purpose,
            show_time(n.data_since)
        ))?;
    }
    for p in &r.no_data {
        out(&format!(
            "  not counted for {p}: no {p} data is stored, and data written later is newer than \
             this event; record {name} again after storing it"
        ))?;
    }
    for p in &r.other_scope {
        let hint = match a.record {
            Some(_) => "its retention is counted per customer: record the event without --record",
            None => {
                "its retention is counted per record: record the event with --record TYPE --label L"
            }
        };
        out(&format!("  not counted for {p}: {hint}"))?;
    }
    if !names_it {
        out(&format!(
            "  no retention rule or ceiling of the schema names {name}, so it starts nothing \
             (check the spelling against `kluis schema show`)"
        ))?;
    }
    Ok(())
}
