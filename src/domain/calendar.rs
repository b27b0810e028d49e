//! Advance windows: the days and hours, in an IANA time zone, inside which the controller may
//! advance a flag or start a scheduled one. Rollbacks ignore them.

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};
use serde::{Deserialize, Serialize};

/// `{"days": ["mon","tue","wed","thu"], "from": "09:00", "to": "16:00", "time_zone": "Europe/Berlin"}`:
/// open on those days from `from` (included) to `to` (excluded), local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceWindow {
    /// `mon` … `sun`; every day when empty.
    #[serde(default)]
    pub days: Vec<Day>,
    /// `HH:MM`, local time.
    pub from: String,
    /// `HH:MM`, local time, after `from`.
    pub to: String,
    /// An IANA time zone name (`Europe/Berlin`, `UTC`).
    #[serde(default = "utc")]
    pub time_zone: String,
}

fn utc() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// A window checked once: its zone found and its hours parsed.
#[derive(Debug, Clone)]
pub struct Window {
    days: Vec<Weekday>,
    from: Time,
    to: Time,
    zone: TimeZone,
}

impl AdvanceWindow {
    /// Checks the window; the message names the field at fault.
    pub fn resolve(&self) -> Result<Window, (&'static str, String)> {
        let time = |field: &'static str, text: &str| {
            text.parse::<Time>()
                .ok()
                .filter(|t| text.len() == 5 && t.second() == 0)
                .ok_or((field, format!("{text:?} is not a time of day as HH:MM")))
        };
        let (from, to) = (time("from", &self.from)?, time("to", &self.to)?);
        if from >= to {
            return Err(("to", "must be after from (a window does not cross midnight)".into()));
        }
        let zone = TimeZone::get(&self.time_zone)
            .map_err(|_| ("time_zone", format!("{:?} is not an IANA time zone", self.time_zone)))?;
        let days = self.days.iter().map(|d| d.weekday()).collect();
        Ok(Window { days, from, to, zone })
    }
}

impl Window {
    fn zoned(&self, at_ms: i64) -> Option<ZonedDateTime> {
        Some(Timestamp::from_millisecond(at_ms).ok()?.to_zoned_datetime(self.zone.clone()))
    }

    fn open_day(&self, day: Weekday) -> bool {
        self.days.is_empty() || self.days.contains(&day)
    }

    /// Whether `at_ms` falls inside the window.
    pub fn is_open(&self, at_ms: i64) -> bool {
        let Some(local) = self.zoned(at_ms) else { return false };
        let time = local.time();
        self.open_day(local.weekday()) && self.from <= time && time < self.to
    }

    /// The first instant at or after `at_ms` inside the window (`at_ms` itself when open). Local
    /// times a daylight-saving change skips resolve to the instant after the gap.
    pub fn next_opening(&self, at_ms: i64) -> Option<i64> {
        if self.is_open(at_ms) {
            return Some(at_ms);
        }
        let local = self.zoned(at_ms)?;
        let mut date = local.date();
        for _ in 0..8 {
            if self.open_day(date.weekday()) {
                let opening = date.to_datetime(self.from).to_zoned_datetime(self.zone.clone()).ok()?;
                let ms = opening.timestamp().as_millisecond();
                if ms > at_ms {
                    return Some(ms);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin_weekdays() -> Window {
        AdvanceWindow {
            days: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu],
            from: "09:00".into(),
            to: "16:00".into(),
            time_zone: "Europe/Berlin".into(),
        }
        .resolve()
        .expect("a valid window")
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().expect("a timestamp").as_millisecond()
    }

    #[test]
    fn open_inside_the_local_hours_of_the_listed_days_only() {
        let w = berlin_weekdays();
        // Tuesday 2026-12-01: CET is UTC+1.
        assert!(!w.is_open(ms("2026-12-01T07:59:59Z")));
        assert!(w.is_open(ms("2026-12-01T08:00:00Z")));
        assert!(w.is_open(ms("2026-12-01T14:59:59Z")));
        assert!(!w.is_open(ms("2026-12-01T15:00:00Z")));
        // Friday is not listed.
        assert!(!w.is_open(ms("2026-12-04T10:00:00Z")));
    }

    #[test]
    fn the_next_opening_after_a_weekend_follows_the_daylight_saving_change() {
        let w = berlin_weekdays();
        // Thursday 2026-03-26 16:30 CET: closed; Friday to Sunday closed; clocks go forward on
        // Sunday 2026-03-29, so Monday 09:00 local is 07:00 UTC, not 08:00.
        assert_eq!(w.next_opening(ms("2026-03-26T15:30:00Z")), Some(ms("2026-03-30T07:00:00Z")));
        // And back in October: Monday 2026-10-26 09:00 CET is 08:00 UTC.
        assert_eq!(w.next_opening(ms("2026-10-22T15:30:00Z")), Some(ms("2026-10-26T08:00:00Z")));
        // Open now: now.
        let now = ms("2026-12-01T09:00:00Z");
        assert_eq!(w.next_opening(now), Some(now));
    }

    #[test]
    fn a_window_that_opens_in_a_skipped_hour_opens_after_the_gap() {
        let w =
            AdvanceWindow { days: vec![], from: "02:30".into(), to: "05:00".into(), time_zone: "Europe/Berlin".into() }
                .resolve()
                .expect("valid");
        // 2026-03-29 02:30 local does not exist (02:00 → 03:00): the window opens at 03:30 CEST.
        assert_eq!(w.next_opening(ms("2026-03-28T23:00:00Z")), Some(ms("2026-03-29T01:30:00Z")));
    }

    #[test]
    fn bad_windows_name_their_field() {
        let bad = |from: &str, to: &str, zone: &str| {
            AdvanceWindow { days: vec![], from: from.into(), to: to.into(), time_zone: zone.into() }
                .resolve()
                .err()
                .map(|e| e.0)
        };
        assert_eq!(bad("9:00", "16:00", "UTC"), Some("from"));
        assert_eq!(bad("09:00", "25:00", "UTC"), Some("to"));
        assert_eq!(bad("16:00", "09:00", "UTC"), Some("to"));
        assert_eq!(bad("09:00", "16:00", "Mars/Olympus"), Some("time_zone"));
        assert_eq!(bad("09:00", "16:00", "America/New_York"), None);
    }
}
