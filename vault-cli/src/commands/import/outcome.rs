//! What became of each line of an import, as printed (text or `--json`). Lines are named by
//! number, records by type and label; never a value.

use vault_core::SubjectId;

use crate::commands::{out, out_json};

/// What became of a line.
pub enum Outcome {
    /// The first line of a new subject.
    Created {
        line: usize,
        subject: SubjectId,
    },
    /// A line of a customer an earlier line or an earlier run made, whose records the subject
    /// lacked were added; `left_out` names those kept as first given or as stored instead.
    Joined {
        line: usize,
        subject: SubjectId,
        left_out: Vec<String>,
    },
    /// A line of a customer an earlier run stored, with nothing new; `left_out` as for Joined.
    Known {
        line: usize,
        subject: SubjectId,
        left_out: Vec<String>,
    },
    Rejected {
        line: usize,
        reason: String,
    },
    /// A line the import stopped before storing (import again).
    NotStored {
        line: usize,
    },
}

impl Outcome {
    pub fn line(&self) -> usize {
        match self {
            Outcome::Created { line, .. }
            | Outcome::Joined { line, .. }
            | Outcome::Known { line, .. }
            | Outcome::Rejected { line, .. }
            | Outcome::NotStored { line } => *line,
        }
    }

    /// Prints the line's outcome; `confirmed`: it is durable.
    pub fn print(&self, json: bool, confirmed: bool) -> anyhow::Result<()> {
        let (line, key, subject, text, left_out): (_, _, _, _, &[String]) = match self {
            Outcome::Created { line, subject } => (*line, "created", subject, "new subject", &[]),
            Outcome::Joined {
                line,
                subject,
                left_out,
            } => (
                *line,
                "joined",
                subject,
                "same customer as subject",
                left_out,
            ),
            Outcome::Known {
                line,
                subject,
                left_out,
            } => (
                *line,
                "known",
                subject,
                "already imported as subject",
                left_out,
            ),
            Outcome::Rejected { line, reason } => {
                return match json {
                    true => out_json(&serde_json::json!({ "line": line, "rejected": reason })),
                    false => out(&format!("line {line}: rejected: {reason}")),
                };
            }
            Outcome::NotStored { line } => {
                return match json {
                    true => out_json(&serde_json::json!({ "line": line, "not_stored": true })),
                    false => out(&format!(
                        "line {line}: not stored (the import stopped first)"
                    )),
                };
            }
        };
        if json {
            let mut o = serde_json::json!({
                "line": line, key: subject.to_string(), "confirmed": confirmed
            });
            if !left_out.is_empty() {
                o["left_out"] = serde_json::json!(left_out);
            }
            return out_json(&o);
        }
        let mut note = String::new();
        if !left_out.is_empty() {
            note = format!(
                "; kept as first given or stored, not this line's: {}",
                left_out.join(", ")
            );
        }
        if !confirmed {
            note.push_str(" (applied, not confirmed durable)");
        }
        out(&format!("line {line}: {text} {subject}{note}"))
    }
}
