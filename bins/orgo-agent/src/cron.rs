//! Five-field cron schedules (`minute hour day-of-month month
//! day-of-week`), as orgo-template validates them: `*`, `N`, `A-B`, each
//! with an optional `/STEP` (`N/STEP` runs from N to the field's end),
//! comma-separated lists, three-letter month and day names; day-of-week 0
//! and 7 are Sunday. When both day fields are restricted, a day matching
//! either runs (as in Vixie cron). Times are UTC.
//!
//! A small parser rather than a crate: the `cron` crate wants six or seven
//! fields with seconds, and `croner` brings `chrono` into a static PID 1
//! for one function; this one is about a hundred lines, tested below.

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Whether day-of-month / day-of-week were `*`.
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(text: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + name_base);
        }
        s.parse::<u32>()
            .ok()
            .filter(|n| (lo..=hi).contains(n) && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("`{s}` is not a value from {lo} to {hi}"))
    };
    let mut bits = 0u64;
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s >= 1)
                    .ok_or_else(|| format!("`{item}`: bad step"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else if item.contains('/') {
            (value(range)?, hi)
        } else {
            let v = value(range)?;
            (v, v)
        };
        if a > b {
            return Err(format!("`{item}`: the range is backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    /// Parses a five-field expression.
    pub(crate) fn parse(text: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [min, hour, dom, month, dow] = parts[..] else {
            return Err(format!("`{text}` does not have 5 fields"));
        };
        let mut weekdays = field(dow, 0, 7, &DAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes: field(min, 0, 59, &[], 0)?,
            hours: field(hour, 0, 23, &[], 0)?,
            days: field(dom, 1, 31, &[], 0)?,
            months: field(month, 1, 12, &MONTHS, 1)?,
            weekdays,
            any_day: dom.starts_with('*'),
            any_weekday: dow.starts_with('*'),
        })
    }

    fn day_matches(&self, day_of_month: u32, weekday: u32) -> bool {
        let dom = self.days & (1 << day_of_month) != 0;
        let dow = self.weekdays & (1 << weekday) != 0;
        match (self.any_day, self.any_weekday) {
            (false, false) => dom || dow,
            _ => dom && dow,
        }
    }

    /// The first minute (Unix seconds, a multiple of 60) strictly after
    /// `unix_secs` that the schedule runs at; `None` within five years.
    pub(crate) fn next_after(&self, unix_secs: u64) -> Option<u64> {
        let start_min = unix_secs / 60 + 1;
        let first_day = start_min / 1440;
        for day in first_day..first_day + 5 * 366 {
            let (_, month, dom) = civil_from_days(day as i64);
            let weekday = ((day + 4) % 7) as u32;
            if self.months & (1 << month) == 0 || !self.day_matches(dom, weekday) {
                continue;
            }
            for hour in 0..24u64 {
                if self.hours & (1 << hour) == 0 {
                    continue;
                }
                for minute in 0..60u64 {
                    let at = day * 1440 + hour * 60 + minute;
                    if at >= start_min && self.minutes & (1 << minute) != 0 {
                        return Some(at * 60);
                    }
                }
            }
        }
        None
    }
}

/// (year, month 1-12, day 1-31) of a day counted from 1970-01-01
/// (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// 2024-03-15 10:17:30 UTC, a Friday.
    const T: u64 = 1_710_497_850;

    fn utc(secs: u64) -> String {
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
        let rest = secs % 86_400;
        format!(
            "{y}-{m:02}-{d:02} {:02}:{:02}",
            rest / 3600,
            rest % 3600 / 60
        )
    }

    #[test]
    fn next_runs() {
        let table = [
            ("* * * * *", "2024-03-15 10:18"),
            ("*/5 * * * *", "2024-03-15 10:20"),
            ("0 * * * *", "2024-03-15 11:00"),
            ("17 10 * * *", "2024-03-16 10:17"),
            ("30 9 * * mon-fri", "2024-03-18 09:30"),
            ("0 0 1 * *", "2024-04-01 00:00"),
            ("0 0 29 feb *", "2028-02-29 00:00"),
            ("0 0 * * 7", "2024-03-17 00:00"),
            ("0 0 13 * fri", "2024-03-22 00:00"),
            ("5/20 10 * * *", "2024-03-15 10:25"),
            ("0,45 10,12 * JAN,mar *", "2024-03-15 10:45"),
            ("0 12 1-7 * 1", "2024-03-18 12:00"),
        ];
        for (cron, want) in table {
            let next = Cron::parse(cron).unwrap().next_after(T).unwrap();
            assert_eq!(utc(next), want, "`{cron}`");
            assert_eq!(next % 60, 0);
        }
    }

    #[test]
    fn a_minute_boundary_is_not_run_twice() {
        let every = Cron::parse("* * * * *").unwrap();
        let at = every.next_after(T).unwrap();
        assert_eq!(every.next_after(at).unwrap(), at + 60);
    }

    #[test]
    fn bad_expressions() {
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 8",
            "5-1 * * * *",
            "*/0 * * * *",
            "x * * * *",
            "-1 * * * *",
        ] {
            assert!(Cron::parse(bad).is_err(), "`{bad}`");
        }
        assert_eq!(Cron::parse("0 0 30 2 *").unwrap().next_after(T), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_797), (2024, 3, 15));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
