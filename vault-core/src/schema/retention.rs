//! Retention clauses of a purpose: how long data collected for it may be kept
//! (GDPR Art. 5(1)(e), storage limitation; AVG: "opslagbeperking").
//!
//! Grammar (whitespace-separated, lower case):
//!
//! ```text
//! none                      kept until the data subject is forgotten
//! until <event>             kept until the shop records <event>
//! <period> after <event>    kept for <period> after the shop records <event>
//! ```
//!
//! A period is one or more `<number><unit>` parts, units in descending order and
//! each at most once: `y` (years), `mo` or `m` (months), `w` (weeks, stored as
//! 7 days), `d` (days). Examples: `30d`, `2w`, `6mo`, `7y`, `1y6mo`.

use std::fmt;
use std::str::FromStr;

use super::is_valid_name;

/// Events kluis records itself: `created` (when the subject was created) and `last_update` (when
/// data of the purpose was last written; before any write, the subject's creation).
pub const BUILTIN_EVENTS: [&str; 2] = ["created", "last_update"];

/// A calendar period: years, months and days (weeks are folded into days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Period {
    /// Whole years.
    pub years: u32,
    /// Whole months.
    pub months: u32,
    /// Whole days (a week counts as 7 days).
    pub days: u32,
}

impl Period {
    /// Largest accepted number of years (keeps date arithmetic in range).
    pub const MAX_YEARS: u32 = 1000;
    /// Largest accepted number of months.
    pub const MAX_MONTHS: u32 = 12 * Self::MAX_YEARS;
    /// Largest accepted number of days (weeks included).
    pub const MAX_DAYS: u32 = 366 * Self::MAX_YEARS;

    /// True when all components are zero (such a period is never accepted by the parser).
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0
    }
}

impl fmt::Display for Period {
    /// Canonical text: `{years}y{months}mo{days}d`, zero components left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0d");
        }
        if self.years > 0 {
            write!(f, "{}y", self.years)?;
        }
        if self.months > 0 {
            write!(f, "{}mo", self.months)?;
        }
        if self.days > 0 {
            write!(f, "{}d", self.days)?;
        }
        Ok(())
    }
}

impl FromStr for Period {
    type Err = RetentionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RetentionParseError::new("empty period"));
        }
        let mut period = Period::default();
        let mut weeks: u32 = 0;
        // Rank of the last unit seen: units must strictly descend (y > mo > w > d).
        let mut last_rank = u8::MAX;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(RetentionParseError::new(format!(
                    "period `{s}`: expected a number before each unit"
                )));
            }
            let number: u32 = rest[..digits]
                .parse()
                .map_err(|_| RetentionParseError::new(format!("period `{s}`: number too large")))?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let (rank, slot, max) = match unit {
                "y" => (3, &mut period.years, Period::MAX_YEARS),
                "mo" | "m" => (2, &mut period.months, Period::MAX_MONTHS),
                "w" => (1, &mut weeks, Period::MAX_DAYS / 7),
                "d" => (0, &mut period.days, Period::MAX_DAYS),
                "" => {
                    return Err(RetentionParseError::new(format!(
                        "period `{s}`: missing unit (use y, mo, w or d)"
                    )))
                }
                other => {
                    return Err(RetentionParseError::new(format!(
                        "period `{s}`: unknown unit `{other}` (use y, mo, w or d)"
                    )))
                }
            };
            if rank >= last_rank {
                return Err(RetentionParseError::new(format!(
                    "period `{s}`: units must appear once each, largest first (y, mo, w, d)"
                )));
            }
            last_rank = rank;
            if number > max {
                return Err(RetentionParseError::new(format!(
                    "period `{s}`: too long (at most {} years)",
                    Period::MAX_YEARS
                )));
            }
            *slot = number;
        }
        period.days = weeks
            .checked_mul(7)
            .and_then(|w| w.checked_add(period.days))
            .filter(|d| *d <= Period::MAX_DAYS)
            .ok_or_else(|| {
                RetentionParseError::new(format!(
                    "period `{s}`: too long (at most {} years)",
                    Period::MAX_YEARS
                ))
            })?;
        if period.is_zero() {
            return Err(RetentionParseError::new(format!(
                "period `{s}` is zero; use `none` or `until <event>` instead"
            )));
        }
        Ok(period)
    }
}

/// How long data collected for a purpose may be kept.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Retention {
    /// `none`: kept until the subject is forgotten.
    None,
    /// `until consent_withdrawn`: kept until the named event is recorded.
    UntilEvent {
        /// The event that ends retention.
        event: String,
    },
    /// `30d after delivered`, `7y after invoiced`, `2y after last_order`, `6mo after created`, `2w after last_update`.
    After {
        /// How long after the event the data is still kept.
        period: Period,
        /// The event the period starts at.
        event: String,
    },
}

impl Retention {
    /// The event this clause depends on, if any.
    pub fn event(&self) -> Option<&str> {
        match self {
            Retention::None => None,
            Retention::UntilEvent { event } | Retention::After { event, .. } => Some(event),
        }
    }

    /// The period of an `<period> after <event>` clause.
    pub fn period(&self) -> Option<Period> {
        match self {
            Retention::After { period, .. } => Some(*period),
            _ => None,
        }
    }

    /// True for the events that need not be recorded by the shop (see [`BUILTIN_EVENTS`]).
    pub fn is_builtin_event(event: &str) -> bool {
        BUILTIN_EVENTS.contains(&event)
    }

    /// True when data under this clause can be kept forever without anyone deciding so: `none`,
    /// or a clause waiting for an event the shop records (which it may never do). A clause on a
    /// built-in event always has an end, because kluis knows those times itself.
    pub fn is_open_ended(&self) -> bool {
        self.event().is_none_or(|e| !Self::is_builtin_event(e))
    }
}

impl fmt::Display for Retention {
    /// Canonical text; parsing it again gives an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::None => f.write_str("none"),
            Retention::UntilEvent { event } => write!(f, "until {event}"),
            Retention::After { period, event } => write!(f, "{period} after {event}"),
        }
    }
}

impl FromStr for Retention {
    type Err = RetentionParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let tokens: Vec<&str> = s.split_whitespace().collect();
        match tokens.as_slice() {
            ["none"] => Ok(Retention::None),
            ["until", event] => Ok(Retention::UntilEvent {
                event: check_event(event)?,
            }),
            [period, "after", event] => Ok(Retention::After {
                period: period.parse()?,
                event: check_event(event)?,
            }),
            [] => Err(RetentionParseError::new("empty retention")),
            _ => Err(RetentionParseError::new(format!(
                "`{s}`: expected `none`, `until <event>` or `<period> after <event>`"
            ))),
        }
    }
}

fn check_event(event: &str) -> Result<String, RetentionParseError> {
    if is_valid_name(event) {
        Ok(event.to_owned())
    } else {
        Err(RetentionParseError::new(format!(
            "invalid event name `{event}` (lower-case letters, digits and '_', starting with a letter)"
        )))
    }
}

/// Why a retention clause or period could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retention: {reason}")]
pub struct RetentionParseError {
    reason: String,
}

impl RetentionParseError {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    /// Human-readable explanation (schema text only, never customer data).
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(years: u32, months: u32, days: u32) -> Period {
        Period {
            years,
            months,
            days,
        }
    }

    #[test]
    fn parses_examples() {
        let cases = [
            ("none", Retention::None),
            (
                "until consent_withdrawn",
                Retention::UntilEvent {
                    event: "consent_withdrawn".into(),
                },
            ),
            (
                "30d after delivered",
                Retention::After {
                    period: p(0, 0, 30),
                    event: "delivered".into(),
                },
            ),
            (
                "7y after invoiced",
                Retention::After {
                    period: p(7, 0, 0),
                    event: "invoiced".into(),
                },
            ),
            (
                "6mo after created",
                Retention::After {
                    period: p(0, 6, 0),
                    event: "created".into(),
                },
            ),
            (
                "6m after created",
                Retention::After {
                    period: p(0, 6, 0),
                    event: "created".into(),
                },
            ),
            (
                "2w after last_update",
                Retention::After {
                    period: p(0, 0, 14),
                    event: "last_update".into(),
                },
            ),
            (
                "  1y6mo2w3d   after   last_order ",
                Retention::After {
                    period: p(1, 6, 17),
                    event: "last_order".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Retention>().unwrap(), want, "{text}");
        }
    }

    #[test]
    fn display_is_canonical() {
        let r: Retention = "2w after last_update".parse().unwrap();
        assert_eq!(r.to_string(), "14d after last_update");
        let r: Retention = "1y6m after created".parse().unwrap();
        assert_eq!(r.to_string(), "1y6mo after created");
        assert_eq!(Retention::None.to_string(), "none");
        assert_eq!(
            "until  x".parse::<Retention>().unwrap().to_string(),
            "until x"
        );
        assert_eq!(r.event(), Some("created"));
        assert_eq!(r.period(), Some(p(1, 6, 0)));
        assert!(Retention::is_builtin_event("created"));
        assert!(!Retention::is_builtin_event("delivered"));
    }

    #[test]
    fn open_ended_clauses() {
        for (text, open) in [
            ("none", true),
            ("until consent_withdrawn", true),
            ("2y after last_order", true),
            ("7y after invoiced", true),
            ("5y after created", false),
            ("2w after last_update", false),
            ("until created", false),
        ] {
            let r: Retention = text.parse().unwrap();
            assert_eq!(r.is_open_ended(), open, "{text}");
        }
    }

    #[test]
    fn rejects_bad_clauses() {
        for bad in [
            "",
            "forever",
            "until",
            "until Bad",
            "until a b",
            "30d delivered",
            "30d after",
            "0d after created",
            "0y0mo after created",
            "30 after created",
            "d after created",
            "30x after created",
            "3d1y after created",
            "1y1y after created",
            "1m1mo after created",
            "1001y after created",
            "99999999999d after created",
            "30D after created",
            "30d after 9lives",
            "30d before created",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "accepted {bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(years in 0u32..=1000, months in 0u32..=12000, days in 0u32..=366000,
                      event in "[a-z][a-z0-9_]{0,20}") {
            let period = p(years, months, days);
            prop_assume!(!period.is_zero());
            let r = Retention::After { period, event };
            let text = r.to_string();
            prop_assert_eq!(text.parse::<Retention>().unwrap(), r.clone());
            prop_assert_eq!(period.to_string().parse::<Period>().unwrap(), period);
        }
    }
}
