//! Time, injectable so retention can be tested with a mock clock.

use std::fmt;
#[cfg(any(test, feature = "danger-test-hooks"))]
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in whole seconds since the Unix epoch (UTC): when an event happened (an order
/// delivered), when data expires, when an audit entry was written. Whole seconds because retention
/// periods are days and years, and every time kluis stores is seconds.
///
/// Serialised (JSON exports, reports) as the bare number of seconds, as before it had a type.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp(0);

    /// `secs` seconds after (or, negative, before) the Unix epoch.
    pub const fn from_unix_seconds(secs: i64) -> Self {
        Timestamp(secs)
    }

    /// Seconds since the Unix epoch.
    pub const fn unix_seconds(self) -> i64 {
        self.0
    }

    /// The system clock's time now (the Unix epoch if the clock is set before it).
    pub fn now() -> Self {
        Timestamp::from(SystemTime::now())
    }

    /// Parses an RFC 3339 time with an offset (`2026-12-06T13:05:00+01:00`); sub-seconds are
    /// dropped. `None` for anything else.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| Timestamp(t.timestamp()))
    }

    /// This time plus `d` (saturating; sub-second parts dropped).
    pub fn saturating_add(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(secs))
    }

    /// This time minus `d` (saturating; sub-second parts dropped).
    pub fn saturating_sub(self, d: Duration) -> Self {
        let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(secs))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            Err(before) => {
                Timestamp(i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s))
            }
        }
    }
}

impl From<chrono::DateTime<chrono::Utc>> for Timestamp {
    fn from(t: chrono::DateTime<chrono::Utc>) -> Self {
        Timestamp(t.timestamp())
    }
}

/// RFC 3339 in UTC, e.g. `2026-12-06T12:05:00Z` (the seconds as a number when out of range).
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp(self.0, 0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%SZ")),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that only moves when told to (for tests and simulations).
#[cfg(any(test, feature = "danger-test-hooks"))]
#[derive(Debug, Default)]
pub struct MockClock(AtomicI64);

#[cfg(any(test, feature = "danger-test-hooks"))]
impl MockClock {
    /// A mock clock at `now`.
    pub fn new(now: i64) -> Self {
        MockClock(AtomicI64::new(now))
    }
    /// Sets the time.
    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

#[cfg(any(test, feature = "danger-test-hooks"))]
impl Clock for MockClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_conversions_and_display() {
        let t = Timestamp::parse_rfc3339("2026-12-06T13:05:00+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-12-06T12:05:00Z");
        assert_eq!(Timestamp::from_unix_seconds(t.unix_seconds()), t);
        assert_eq!(Timestamp::parse_rfc3339("2026-12-06 13:05"), None);
        let before = UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from(before).unix_seconds(), -5);
        assert_eq!(
            t.saturating_add(Duration::from_secs(60)).unix_seconds(),
            t.unix_seconds() + 60
        );
        assert_eq!(
            Timestamp::from_unix_seconds(i64::MAX)
                .saturating_add(Duration::from_secs(1))
                .unix_seconds(),
            i64::MAX
        );
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            t.unix_seconds().to_string()
        );
        assert_eq!(
            Timestamp::from_unix_seconds(i64::MAX).to_string(),
            format!("@{}", i64::MAX)
        );
    }
}
