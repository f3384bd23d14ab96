//! RFC 3339 timestamps to and from microseconds since the Unix epoch, without a date library:
//! exports format one per event, so formatting writes into a caller's buffer and never
//! allocates.

use std::fmt;

/// The text form of a timestamp in microseconds: `2026-11-27T14:03:00.123456Z` (always UTC,
/// always six fractional digits, so that the strings sort like the times).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Micros(pub i64);

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; FORMATTED_LEN_MAX];
        f.write_str(format_micros(self.0, &mut buf))
    }
}

impl serde::Serialize for Micros {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; FORMATTED_LEN_MAX];
        serializer.serialize_str(format_micros(self.0, &mut buf))
    }
}

/// The longest output of [`format_micros`] (a year of up to six digits and a sign).
pub const FORMATTED_LEN_MAX: usize = 34;

/// Formats `micros` into `buf`, returning the text. Years outside 0..=9999 are written with a
/// sign and six digits (ISO 8601 expanded years); a timestamp from a real clock never is.
pub fn format_micros(micros: i64, buf: &mut [u8; FORMATTED_LEN_MAX]) -> &str {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    if (0..=9999).contains(&year) {
        put(&digits::<4>(year as u32));
    } else {
        put(if year < 0 { b"-" } else { b"+" });
        put(&digits::<6>(year.unsigned_abs().min(999_999) as u32));
    }
    put(b"-");
    put(&digits::<2>(month));
    put(b"-");
    put(&digits::<2>(day));
    put(b"T");
    put(&digits::<2>(sod / 3600));
    put(b":");
    put(&digits::<2>(sod / 60 % 60));
    put(b":");
    put(&digits::<2>(sod % 60));
    put(b".");
    put(&digits::<6>(frac));
    put(b"Z");
    // Only ASCII digits and punctuation were written.
    std::str::from_utf8(&buf[..at]).unwrap_or("")
}

fn digits<const N: usize>(mut value: u32) -> [u8; N] {
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A string that is not an RFC 3339 timestamp.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not an RFC 3339 time ({reason}); expected e.g. 2026-11-27T14:03:00Z or \
     2026-11-27T14:03:00.5+01:00"
)]
pub struct ParseError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)` (`t`, `z` and a space for `T` are
/// accepted) into microseconds since the Unix epoch. A fraction finer than a microsecond is
/// truncated. A bare date `YYYY-MM-DD` means its midnight UTC.
pub fn parse(input: &str) -> Result<i64, ParseError> {
    let fail = |reason| ParseError {
        input: input.to_owned(),
        reason,
    };
    let s = input.trim().as_bytes();
    let number = |range: std::ops::Range<usize>, what| -> Result<u32, ParseError> {
        let bytes = s.get(range).ok_or_else(|| fail(what))?;
        if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(fail(what));
        }
        Ok(bytes.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0')))
    };
    let expect = |at: usize, chars: &[u8], what| -> Result<(), ParseError> {
        match s.get(at) {
            Some(c) if chars.contains(c) => Ok(()),
            _ => Err(fail(what)),
        }
    };
    let year = number(0..4, "bad year")?;
    expect(4, b"-", "expected '-' after the year")?;
    let month = number(5..7, "bad month")?;
    expect(7, b"-", "expected '-' after the month")?;
    let day = number(8..10, "bad day")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(i64::from(year), month) {
        return Err(fail("no such date"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    if s.len() == 10 {
        return Ok(days * 86_400_000_000);
    }
    expect(10, b"Tt ", "expected 'T' between date and time")?;
    let hour = number(11..13, "bad hour")?;
    expect(13, b":", "expected ':' after the hour")?;
    let minute = number(14..16, "bad minute")?;
    expect(16, b":", "expected ':' after the minutes")?;
    // 60 is a leap second: it is read as the next second's start.
    let second = number(17..19, "bad seconds")?;
    if hour > 23 || minute > 59 || second > 60 {
        return Err(fail("time out of range"));
    }
    let mut at = 19;
    let mut micros = 0u32;
    if s.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while s.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 6 {
                micros = micros * 10 + u32::from(s[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(fail("empty fraction of a second"));
        }
        for _ in (at - start)..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match s.get(at) {
        Some(b'Z' | b'z') if at + 1 == s.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == s.len() => {
            let hours = number(at + 1..at + 3, "bad offset hours")?;
            expect(at + 3, b":", "expected ':' in the offset")?;
            let minutes = number(at + 4..at + 6, "bad offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err(fail("offset out of range"));
            }
            let secs = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -secs } else { secs }
        }
        None => return Err(fail("missing time zone (Z or an offset such as +01:00)")),
        _ => return Err(fail("bad time zone")),
    };
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    Ok(secs * 1_000_000 + i64::from(micros))
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(micros: i64) -> String {
        Micros(micros).to_string()
    }

    #[test]
    fn formats_the_epoch_and_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(fmt(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(fmt(1_700_000_000_123_456), "2023-11-14T22:13:20.123456Z");
        assert_eq!(fmt(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn parses_what_it_formats_and_common_variants() {
        for micros in [
            0,
            -1,
            1_700_000_000_123_456,
            951_782_400_000_000,
            4_102_444_800_000_000,
        ] {
            assert_eq!(parse(&fmt(micros)), Ok(micros));
        }
        assert_eq!(parse("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000));
        assert_eq!(
            parse("2023-11-14 23:13:20.5+01:00"),
            Ok(1_700_000_000_500_000)
        );
        assert_eq!(
            parse("2023-11-14T21:13:20.1234567-01:00"),
            Ok(1_700_000_000_123_456)
        );
        assert_eq!(parse("2023-11-14"), Ok(1_699_920_000_000_000));
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0100",
            "2023-11-14T22:13:20Zjunk",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        for days in -146_097..146_097i64 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
