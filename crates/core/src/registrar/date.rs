//! The `Date` header value (RFC 3261 §20.17: RFC 1123 form, always GMT), computed from Unix
//! seconds by hand so the registrar needs no calendar crate and reads no clock.

use std::fmt::Write as _;

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats Unix seconds as `Sat, 13 Nov 2010 23:29:00 GMT`.
pub(crate) fn rfc1123(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = String::with_capacity(29);
    // Written piece by piece rather than with `write!`: one per 200 OK to a REGISTER.
    let two = |out: &mut String, n: u64| {
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    };
    // 1970-01-01 was a Thursday; WEEKDAYS starts there. Indexing is in range by `% 7`.
    out.push_str(WEEKDAYS[(days % 7) as usize]);
    out.push_str(", ");
    two(&mut out, day);
    out.push(' ');
    out.push_str(MONTHS[(month - 1) as usize]);
    out.push(' ');
    if !(1000..10_000).contains(&year) {
        let _ = write!(out, "{year}");
    } else {
        two(&mut out, year / 100);
        two(&mut out, year % 100);
    }
    out.push(' ');
    two(&mut out, secs / 3600);
    out.push(':');
    two(&mut out, secs % 3600 / 60);
    out.push(':');
    two(&mut out, secs % 60);
    out.push_str(" GMT");
    out
}

/// Proleptic Gregorian date of a day count since 1970-01-01: (year, month 1..=12, day 1..=31).
///
/// Works in 400-year eras (146,097 days each) with years starting on 1 March, so the leap day is
/// the last day of the shifted year and months need no table.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01: 719,468 days before 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March .. 11 = February
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch() {
        assert_eq!(rfc1123(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn rfc3261_example_date() {
        // RFC 3261 §20.17 example "Sat, 13 Nov 2010 23:29:00 GMT".
        assert_eq!(rfc1123(1_289_690_940), "Sat, 13 Nov 2010 23:29:00 GMT");
    }

    #[test]
    fn leap_days_and_century_rules() {
        assert_eq!(rfc1123(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(rfc1123(1_709_164_800), "Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(rfc1123(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(rfc1123(1_709_251_200), "Fri, 01 Mar 2024 00:00:00 GMT");
        // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
        assert_eq!(rfc1123(4_107_456_000), "Sun, 28 Feb 2100 00:00:00 GMT");
        assert_eq!(rfc1123(4_107_542_400), "Mon, 01 Mar 2100 00:00:00 GMT");
        assert_eq!(rfc1123(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 GMT");
    }

    #[test]
    fn years_of_other_lengths() {
        // 10000-01-01 and 0999 are out of SIP's range, but must still come out whole.
        assert_eq!(rfc1123(253_402_300_800), "Sat, 01 Jan 10000 00:00:00 GMT");
        assert!(rfc1123(0).contains(" 1970 "));
    }
}
