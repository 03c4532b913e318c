//! Number formatting shared by the views.

use std::time::{Duration, SystemTime};

/// Seconds with a unit that keeps about three significant digits: `850µs`,
/// `12.3ms`, `1.25s`; `-` for non-finite values.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s == 0.0 {
        "0".into()
    } else if s.abs() < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s.abs() < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else if s.abs() < 100.0 {
        format!("{s:.2}s")
    } else {
        format!("{s:.0}s")
    }
}

/// A number in at most about six characters: `0.123`, `12.35`, `1234`,
/// `1.2e6`; `-` for non-finite values.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.1e}")
    } else if a < 1.0 {
        format!("{v:.3}")
    } else if a < 100.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.0}")
    }
}

/// A ratio as `×1.234`.
pub fn ratio(r: f64) -> String {
    if r.is_finite() {
        format!("×{r:.3}")
    } else {
        "-".into()
    }
}

/// A signed percentage, `+4.1%`.
pub fn pct(change: f64) -> String {
    if change.is_finite() {
        format!("{:+.1}%", 100.0 * change)
    } else {
        "-".into()
    }
}

/// How long ago `then` was at `now`: `12s`, `5m`, `3h`, `2d`; empty when unknown.
pub fn age(then: Option<SystemTime>, now: SystemTime) -> String {
    let Some(then) = then else {
        return String::new();
    };
    let d = now.duration_since(then).unwrap_or(Duration::ZERO).as_secs();
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86_400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86_400),
    }
}

/// `s` cut to `width` characters with an ellipsis.
pub fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(width - 1).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(secs(0.0123), "12.3ms");
        assert_eq!(secs(0.000_85), "850µs");
        assert_eq!(secs(1.254), "1.25s");
        assert_eq!(secs(f64::NAN), "-");
        assert_eq!(num(2.98053), "2.98");
        assert_eq!(num(1234.4), "1234");
        assert_eq!(num(0.01234), "0.012");
        assert_eq!(num(2.5e7), "2.5e7");
        assert_eq!(ratio(0.8123), "×0.812");
        assert_eq!(pct(-0.041), "-4.1%");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(age(Some(SystemTime::UNIX_EPOCH), t), "16m");
        assert_eq!(age(None, t), "");
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
