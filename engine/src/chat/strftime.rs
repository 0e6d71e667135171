//! `strftime` over UTC for the templates' `strftime_now` (Llama 3.x prints "Today Date: 26 Jul
//! 2024"). The output follows Python's `datetime.strftime` on glibc in the C locale for a naive
//! datetime, so `%Z` and `%z` print nothing.

const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time.
#[derive(Clone, Copy, Debug)]
struct Civil {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 1..=366
    yday: u32,
}

fn civil_from_unix(t: i64) -> Civil {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400) as u32;
    // Howard Hinnant's days-to-civil: eras of 400 years, with years starting in March so the
    // leap day falls at the end.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUMULATIVE[(month - 1) as usize] + day + u32::from(leap && month > 2);
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as u32,
        yday,
    }
}

/// Formats the UTC time `unix` seconds after the epoch. Unknown conversions are copied through
/// unchanged, as glibc does.
pub fn strftime_utc(format: &str, unix: i64) -> String {
    let t = civil_from_unix(unix);
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // glibc's `%-d` style flag: no padding.
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let Some(spec) = chars.next() else {
            out.push('%');
            if unpadded {
                out.push('-');
            }
            break;
        };
        let num = |out: &mut String, v: i64, width: usize, pad: char| {
            let s = v.to_string();
            if !unpadded {
                out.extend(std::iter::repeat_n(pad, width.saturating_sub(s.len())));
            }
            out.push_str(&s);
        };
        let hour12 = if t.hour.is_multiple_of(12) {
            12
        } else {
            t.hour % 12
        };
        match spec {
            'Y' => num(&mut out, t.year, 1, '0'),
            'y' => num(&mut out, t.year.rem_euclid(100), 2, '0'),
            'C' => num(&mut out, t.year.div_euclid(100), 2, '0'),
            'm' => num(&mut out, t.month.into(), 2, '0'),
            'd' => num(&mut out, t.day.into(), 2, '0'),
            'e' => num(&mut out, t.day.into(), 2, ' '),
            'j' => num(&mut out, t.yday.into(), 3, '0'),
            'H' => num(&mut out, t.hour.into(), 2, '0'),
            'I' => num(&mut out, hour12.into(), 2, '0'),
            'M' => num(&mut out, t.minute.into(), 2, '0'),
            'S' => num(&mut out, t.second.into(), 2, '0'),
            'u' => num(
                &mut out,
                if t.weekday == 0 { 7 } else { t.weekday.into() },
                1,
                '0',
            ),
            'w' => num(&mut out, t.weekday.into(), 1, '0'),
            'p' => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            'a' => out.push_str(&DAYS[t.weekday as usize][..3]),
            'A' => out.push_str(DAYS[t.weekday as usize]),
            'b' | 'h' => out.push_str(&MONTHS[(t.month - 1) as usize][..3]),
            'B' => out.push_str(MONTHS[(t.month - 1) as usize]),
            'c' => out.push_str(&strftime_utc("%a %b %e %H:%M:%S %Y", unix)),
            'D' | 'x' => out.push_str(&strftime_utc("%m/%d/%y", unix)),
            'F' => out.push_str(&strftime_utc("%Y-%m-%d", unix)),
            'T' | 'X' => out.push_str(&strftime_utc("%H:%M:%S", unix)),
            'R' => out.push_str(&strftime_utc("%H:%M", unix)),
            'n' => out.push('\n'),
            't' => out.push('\t'),
            '%' => out.push('%'),
            'Z' | 'z' => {}
            other => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_cross_leap_days_and_centuries() {
        let c = civil_from_unix(951_782_400); // 2000-02-29
        assert_eq!(
            (c.year, c.month, c.day, c.yday, c.weekday),
            (2000, 2, 29, 60, 2)
        );
        let c = civil_from_unix(-1); // 1969-12-31 23:59:59
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.second, c.weekday),
            (1969, 12, 31, 23, 59, 3)
        );
    }
}
