//! Retry policy: exponential backoff with jitter, and `Retry-After` parsing (RFC 9110 §10.2.3).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How the client waits between attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Cap on a single backoff delay.
    pub max: Duration,
    /// Cap on a server-requested `Retry-After` wait (a server asking for an hour is not obeyed
    /// blindly; the wait is clamped to this).
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0-based): `min(max, base·2^attempt)` scaled by
    /// a uniform jitter factor in [0.5, 1.0) ("equal jitter"), so that many workers hit by the
    /// same 429 do not retry in lockstep. A server `Retry-After` overrides it (clamped to
    /// `max_retry_after`; never shorter than the server asked).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.max_retry_after);
        }
        let exp = self.base.saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX));
        let capped = exp.min(self.max);
        capped.mul_f64(0.5 + 0.5 * unit_random())
    }
}

/// A uniform number in [0, 1) from the workspace's SplitMix64 mixer ([`amp_io::rng::mix`]) over
/// the time and a global counter. Retry jitter only: it decides when a request is resent, never
/// what any output contains, so it is deliberately not tied to the run's seed.
pub(crate) fn unit_random() -> f64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let z = amp_io::rng::mix(&[t, COUNTER.fetch_add(1, Ordering::Relaxed)]);
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses a `Retry-After` value: either delay-seconds (`"120"`) or an HTTP-date
/// (IMF-fixdate `"Sun, 06 Nov 1994 08:49:37 GMT"`, also the obsolete RFC 850
/// `"Sunday, 06-Nov-94 08:49:37 GMT"` and asctime `"Sun Nov  6 08:49:37 1994"` forms).
/// A date in the past gives zero. `now` is passed in for testability.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    // Fractional seconds are not standard but some proxies send them.
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f >= 0.0 {
            return Some(Duration::from_secs_f64(f));
        }
        return None;
    }
    let when = parse_http_date(v)?;
    let now_s = now.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64;
    Some(Duration::from_secs((when - now_s).max(0) as u64))
}

/// Seconds since the Unix epoch for an HTTP-date (the three forms of RFC 9110 §5.6.7).
pub fn parse_http_date(v: &str) -> Option<i64> {
    let toks: Vec<&str> = v.split([' ', ',']).filter(|t| !t.is_empty()).collect();
    let (day, month, year, time) = match toks.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [_, d, m, y, t, "GMT"] if y.len() == 4 => (d.parse().ok()?, *m, y.parse().ok()?, *t),
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [_, dmy, t, "GMT"] => {
            let p: Vec<&str> = dmy.split('-').collect();
            if p.len() != 3 {
                return None;
            }
            let yy: i64 = p[2].parse().ok()?;
            // RFC 9110: a two-digit year more than 50 years in the future is in the past century.
            let y = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (p[0].parse().ok()?, p[1], y, *t)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (d.parse().ok()?, *m, y.parse().ok()?, *t),
        _ => return None,
    };
    let month = match month {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let hms: Vec<i64> = time.split(':').map(|x| x.parse().ok()).collect::<Option<_>>()?;
    if hms.len() != 3 || !(1..=31).contains(&day) || hms[0] > 23 || hms[1] > 59 || hms[2] > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2])
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats seconds since the epoch as an IMF-fixdate (used by tests and mock servers).
pub fn format_http_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // civil_from_days (Hinnant)
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mn = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        [(m - 1) as usize];
    format!("{wd}, {d:02} {mn} {y} {:02}:{:02}:{:02} GMT", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        // 1994-11-06T08:49:37Z = 784111777 (RFC 9110's example; `date -u -d ... +%s`).
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(format_http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn retry_after_values() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("0.25", now), Some(Duration::from_millis(250)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:42 GMT", now),
            Some(Duration::from_secs(5))
        );
        // In the past: no wait.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
            max_retry_after: Duration::from_secs(2),
        };
        for _ in 0..50 {
            let d0 = b.delay(0, None);
            assert!(d0 >= Duration::from_millis(50) && d0 < Duration::from_millis(100));
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(100) && d1 < Duration::from_millis(200));
            let d5 = b.delay(5, None); // 3200 ms capped at 350
            assert!(d5 >= Duration::from_millis(175) && d5 < Duration::from_millis(350));
            assert!(b.delay(40, None) <= Duration::from_millis(350));
        }
        assert_eq!(b.delay(0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(b.delay(0, Some(Duration::from_secs(100))), Duration::from_secs(2));
    }
}
