//! `spec.window` of a NodeTask: a weekly window (days, start, end, time zone — kured's
//! `--reboot-days`, `--start-time`, `--end-time`, `--time-zone`) in which a node may start. Pure:
//! the clock is an argument.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};
use opsplane_resources::node_task::{TimeWindow, Weekday};

/// Where `now` stands against a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowState {
    /// Inside: a node may start.
    Open,
    /// Outside; the window opens next at this time (in the window's zone).
    Closed {
        /// The next opening.
        opens_at: Zoned,
    },
}

/// Why a window cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `timeZone` is not in the time zone database.
    #[error("spec.window.timeZone {zone:?} is not a known time zone ({reason})")]
    UnknownZone {
        /// The zone as written.
        zone: String,
        /// What jiff said.
        reason: String,
    },
    /// `start` or `end` is not `HH:MM` (the CRD schema refuses this; kept for old objects).
    #[error("spec.window.{field} {value:?} is not a time written HH:MM")]
    BadTime {
        /// `start` or `end`.
        field: &'static str,
        /// The value.
        value: String,
    },
}

fn hh_mm(field: &'static str, value: &str) -> Result<(i8, i8), WindowError> {
    let bad = || WindowError::BadTime {
        field,
        value: value.to_string(),
    };
    let (h, m) = value.split_once(':').ok_or_else(bad)?;
    let h: i8 = h.parse().map_err(|_| bad())?;
    let m: i8 = m.parse().map_err(|_| bad())?;
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    Ok((h, m))
}

fn weekday(day: jiff::civil::Weekday) -> Weekday {
    use jiff::civil::Weekday as J;
    match day {
        J::Monday => Weekday::Mon,
        J::Tuesday => Weekday::Tue,
        J::Wednesday => Weekday::Wed,
        J::Thursday => Weekday::Thu,
        J::Friday => Weekday::Fri,
        J::Saturday => Weekday::Sat,
        J::Sunday => Weekday::Sun,
    }
}

/// The window's zone (UTC when unset).
pub fn zone(window: &TimeWindow) -> Result<TimeZone, WindowError> {
    match window.time_zone.as_deref() {
        None | Some("UTC") => Ok(TimeZone::UTC),
        Some(name) => TimeZone::get(name).map_err(|e| WindowError::UnknownZone {
            zone: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Where `now` stands: open, or closed with the next opening. A window whose end is before its
/// start spans midnight and belongs to the day it opens; an end equal to the start is a whole
/// day. Times that do not exist on a day (a DST gap) move forward, as jiff's `compatible` rule.
pub fn state(window: &TimeWindow, now: Timestamp) -> Result<WindowState, WindowError> {
    let tz = zone(window)?;
    let (sh, sm) = hh_mm("start", &window.start)?;
    let (eh, em) = hh_mm("end", &window.end)?;
    let start_minute = i64::from(sh) * 60 + i64::from(sm);
    let end_minute = i64::from(eh) * 60 + i64::from(em);
    let length = match (end_minute - start_minute).rem_euclid(24 * 60) {
        0 => 24 * 60,
        n => n,
    };
    let today: Date = now.to_zoned(tz.clone()).date();
    let allowed =
        |date: Date| window.days.is_empty() || window.days.contains(&weekday(date.weekday()));
    let at = |dt: DateTime| -> Option<Zoned> { tz.to_ambiguous_zoned(dt).compatible().ok() };
    // The window that opened yesterday may still be open; then the next 7 days' openings.
    for offset in -1..=7 {
        let Ok(date) = today.checked_add(Span::new().days(offset)) else {
            continue;
        };
        if !allowed(date) {
            continue;
        }
        let opening = date.at(sh, sm, 0, 0);
        let Ok(closing) = opening.checked_add(Span::new().minutes(length)) else {
            continue;
        };
        let (Some(opens), Some(closes)) = (at(opening), at(closing)) else {
            continue;
        };
        if opens.timestamp() <= now && now < closes.timestamp() {
            return Ok(WindowState::Open);
        }
        if opens.timestamp() > now {
            return Ok(WindowState::Closed { opens_at: opens });
        }
    }
    // Only reachable with no allowed day, which the schema's enum makes impossible; say so
    // rather than claim an opening.
    Ok(WindowState::Closed {
        opens_at: now
            .to_zoned(tz)
            .checked_add(Span::new().days(7))
            .unwrap_or_else(|_| now.to_zoned(TimeZone::UTC)),
    })
}

/// `mon,tue 01:00-05:00 Europe/Berlin`, for messages.
pub fn describe(window: &TimeWindow) -> String {
    let days = if window.days.is_empty() {
        "every day".to_string()
    } else {
        window
            .days
            .iter()
            .map(|d| format!("{d:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{days} {}-{} {}",
        window.start,
        window.end,
        window.time_zone.as_deref().unwrap_or("UTC")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(days: &[Weekday], start: &str, end: &str, zone: Option<&str>) -> TimeWindow {
        TimeWindow {
            days: days.to_vec(),
            start: start.into(),
            end: end.into(),
            time_zone: zone.map(str::to_string),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn opens(state: WindowState) -> String {
        match state {
            WindowState::Open => "open".into(),
            WindowState::Closed { opens_at } => opens_at.timestamp().to_string(),
        }
    }

    #[test]
    fn a_daily_window_is_open_inside_and_names_the_next_opening_outside() {
        let w = window(&[], "01:00", "05:00", None);
        // 2027-01-15 is a Friday.
        assert_eq!(
            opens(state(&w, at("2027-01-15T03:00:00Z")).unwrap()),
            "open"
        );
        assert_eq!(
            opens(state(&w, at("2027-01-15T01:00:00Z")).unwrap()),
            "open"
        );
        assert_eq!(
            opens(state(&w, at("2027-01-15T05:00:00Z")).unwrap()),
            "2027-01-16T01:00:00Z",
            "the end is outside"
        );
        assert_eq!(
            opens(state(&w, at("2027-01-15T00:59:00Z")).unwrap()),
            "2027-01-15T01:00:00Z"
        );
    }

    #[test]
    fn days_time_zones_and_windows_across_midnight() {
        // Weekdays only, 22:00-02:00 in Berlin (UTC+1 in January).
        let w = window(
            &[
                Weekday::Mon,
                Weekday::Tue,
                Weekday::Wed,
                Weekday::Thu,
                Weekday::Fri,
            ],
            "22:00",
            "02:00",
            Some("Europe/Berlin"),
        );
        // Friday 23:30 Berlin = 22:30Z: open (Friday's window).
        assert_eq!(
            opens(state(&w, at("2027-01-15T22:30:00Z")).unwrap()),
            "open"
        );
        // Saturday 01:30 Berlin = 00:30Z: still Friday's window.
        assert_eq!(
            opens(state(&w, at("2027-01-16T00:30:00Z")).unwrap()),
            "open"
        );
        // Saturday 03:00 Berlin: closed until Monday 22:00 Berlin = 21:00Z.
        assert_eq!(
            opens(state(&w, at("2027-01-16T02:00:00Z")).unwrap()),
            "2027-01-18T21:00:00Z"
        );
        // Equal start and end: the whole (allowed) day.
        let w = window(&[Weekday::Sun], "00:00", "00:00", None);
        assert_eq!(
            opens(state(&w, at("2027-01-17T12:00:00Z")).unwrap()),
            "open"
        );
        assert_eq!(
            opens(state(&w, at("2027-01-18T00:00:00Z")).unwrap()),
            "2027-01-24T00:00:00Z"
        );
    }

    #[test]
    fn an_unknown_zone_is_an_error_naming_it() {
        let w = window(&[], "01:00", "02:00", Some("Mars/Olympus"));
        let error = state(&w, at("2027-01-15T03:00:00Z")).unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
        assert_eq!(
            describe(&window(
                &[Weekday::Mon, Weekday::Fri],
                "01:00",
                "02:00",
                None
            )),
            "mon,fri 01:00-02:00 UTC"
        );
    }
}
