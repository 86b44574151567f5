//! When data expires: retention rules evaluated against a subject's anchor events, and the
//! retention epoch (and so the KEK) an expiry falls in.

use std::collections::BTreeMap;

use chrono::{DateTime, Months, TimeDelta, Utc};

use crate::schema::{Period, Retention};

/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// The retention epoch a KEK serves: data keys are wrapped under the KEK of the epoch in which their
/// data expires, so destroying that one KEK shreds every copy of those data keys, backups included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Epoch {
    /// Data with no expiry date (kept until forgotten or consent withdrawn).
    OpenEnded,
    /// Data expiring in the epoch starting at this Unix time (seconds).
    Starting(i64),
}

/// Retention epochs: fixed-length windows of Unix time. Each data key is wrapped under the KEK of
/// the epoch its expiry falls in; once an epoch has ended (plus `grace`), its KEK is destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPolicy {
    /// Epoch length in seconds (default 30 days).
    pub length: i64,
    /// How long after an epoch ends its KEK is kept (default 7 days): covers late expiry sweeps.
    pub grace: i64,
}

impl Default for EpochPolicy {
    fn default() -> Self {
        EpochPolicy {
            length: 30 * DAY,
            grace: 7 * DAY,
        }
    }
}

impl EpochPolicy {
    /// The epoch of a data key whose data expires at `expiry` (`None`: open-ended).
    pub fn epoch_of(&self, expiry: Option<i64>) -> Epoch {
        match expiry {
            None => Epoch::OpenEnded,
            Some(t) => Epoch::Starting(t.div_euclid(self.length) * self.length),
        }
    }

    /// When the KEK of `epoch` may be destroyed (`None`: never, for the open-ended epoch).
    pub fn destroy_after(&self, epoch: Epoch) -> Option<i64> {
        match epoch {
            Epoch::OpenEnded => None,
            Epoch::Starting(start) => {
                Some(start.saturating_add(self.length).saturating_add(self.grace))
            }
        }
    }
}

/// Adds a calendar period to a Unix time (years and months by the calendar, clamping to the end of
/// shorter months; days as 24-hour days). Saturates far in the future on overflow.
pub fn add_period(t: i64, p: &Period) -> i64 {
    let Some(dt) = DateTime::<Utc>::from_timestamp(t, 0) else {
        return i64::MAX;
    };
    let months = p.years.saturating_mul(12).saturating_add(p.months);
    dt.checked_add_months(Months::new(months))
        .and_then(|d| d.checked_add_signed(TimeDelta::days(i64::from(p.days))))
        .map_or(i64::MAX, |d| d.timestamp())
}

/// The anchor events of one (subject, purpose): the subject's recorded events plus the built-ins.
pub struct Anchors<'a> {
    /// Events the shop recorded for the subject, name → latest time.
    pub events: &'a BTreeMap<String, i64>,
    /// When the subject was created (`created`).
    pub created: i64,
    /// When data of this purpose was last written (`last_update`).
    pub last_update: Option<i64>,
}

impl Anchors<'_> {
    fn time_of(&self, event: &str) -> Option<i64> {
        match event {
            "created" => Some(self.created),
            "last_update" => self.last_update.or(Some(self.created)),
            other => self.events.get(other).copied(),
        }
    }
}

/// When data under `rule` expires, given its anchors. `None`: no expiry yet (kept until forgotten,
/// or until the anchor event is recorded).
pub fn expiry(rule: &Retention, anchors: &Anchors<'_>) -> Option<i64> {
    match rule {
        Retention::None => None,
        Retention::UntilEvent { event } => anchors.time_of(event),
        Retention::After { period, event } => anchors.time_of(event).map(|t| add_period(t, period)),
    }
}

/// The earlier of two expiries, where `None` means "none yet" (so it never wins): how a ceiling
/// bounds a retention rule.
pub fn earlier(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn calendar_periods() {
        let p = |y, m, d| Period {
            years: y,
            months: m,
            days: d,
        };
        assert_eq!(
            add_period(ts("2024-02-29T12:00:00Z"), &p(7, 0, 0)),
            ts("2031-02-28T12:00:00Z")
        );
        assert_eq!(
            add_period(ts("2026-01-31T00:00:00Z"), &p(0, 1, 0)),
            ts("2026-02-28T00:00:00Z")
        );
        assert_eq!(
            add_period(ts("2026-11-23T10:00:00Z"), &p(0, 0, 30)),
            ts("2026-12-23T10:00:00Z")
        );
        assert_eq!(add_period(i64::MAX - 10, &p(1, 0, 0)), i64::MAX);
    }

    #[test]
    fn expiry_by_rule_and_anchor() {
        let mut events = BTreeMap::new();
        let created = ts("2026-01-01T00:00:00Z");
        let a = Anchors {
            events: &events,
            created,
            last_update: None,
        };
        let after = |e: &str, d| Retention::After {
            period: Period {
                years: 0,
                months: 0,
                days: d,
            },
            event: e.into(),
        };
        assert_eq!(expiry(&Retention::None, &a), None);
        assert_eq!(
            expiry(&after("delivered", 30), &a),
            None,
            "not delivered yet: no expiry"
        );
        assert_eq!(expiry(&after("created", 1), &a), Some(created + DAY));
        assert_eq!(
            expiry(&after("last_update", 1), &a),
            Some(created + DAY),
            "last_update defaults to created"
        );
        events.insert("delivered".to_string(), created + 5 * DAY);
        events.insert("consent_withdrawn".to_string(), created + 9);
        let a = Anchors {
            events: &events,
            created,
            last_update: Some(created + 100),
        };
        assert_eq!(
            expiry(&after("delivered", 30), &a),
            Some(created + 35 * DAY)
        );
        assert_eq!(
            expiry(&after("last_update", 1), &a),
            Some(created + 100 + DAY)
        );
        assert_eq!(
            expiry(
                &Retention::UntilEvent {
                    event: "consent_withdrawn".into()
                },
                &a
            ),
            Some(created + 9)
        );
    }

    #[test]
    fn earlier_ignores_a_missing_expiry() {
        assert_eq!(earlier(Some(5), Some(3)), Some(3));
        assert_eq!(earlier(Some(3), Some(5)), Some(3));
        assert_eq!(earlier(None, Some(5)), Some(5));
        assert_eq!(earlier(Some(5), None), Some(5));
        assert_eq!(earlier(None, None), None);
    }

    #[test]
    fn epochs() {
        let e = EpochPolicy {
            length: 10,
            grace: 3,
        };
        assert_eq!(e.epoch_of(None), Epoch::OpenEnded);
        assert_eq!(e.epoch_of(Some(25)), Epoch::Starting(20));
        assert_eq!(e.epoch_of(Some(-5)), Epoch::Starting(-10));
        assert_eq!(e.destroy_after(Epoch::Starting(20)), Some(33));
        assert_eq!(e.destroy_after(Epoch::OpenEnded), None);
    }
}
