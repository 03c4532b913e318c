//! Parsing and printing service-level objectives (the CLI's `--slo`).

use fuselab_core::{Error, Result, Slo};

const SYNTAX: &str = "write comma-separated parts such as `ttft=2s,tpot=100ms,e2e=30s` \
     (units s, ms or us) and/or `fastgen:4` (FastGen SLA at 4 tok/s), or `none`";

/// Parses an SLO string: comma-separated parts, each `ttft=DUR`, `tpot=DUR`,
/// `e2e=DUR` (durations with a unit `s`, `ms` or `us`) or `fastgen:RATE`
/// (FastGen prompt and cumulative generation SLA at `RATE` tok/s; `fastgen=RATE`
/// is accepted too). `none` gives the empty SLO. Errors name the bad part and
/// show the valid syntax.
///
/// # Example
/// ```
/// let slo = fuselab_metrics::parse_slo("ttft=2s,tpot=100ms,fastgen:4").unwrap();
/// assert_eq!((slo.ttft_s, slo.tpot_s, slo.e2e_s, slo.fastgen_rate), (Some(2.0), Some(0.1), None, Some(4.0)));
/// assert!(fuselab_metrics::parse_slo("ttft=2").unwrap_err().to_string().contains("ttft=2"));
/// ```
pub fn parse_slo(s: &str) -> Result<Slo> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") {
        return Ok(Slo::default());
    }
    if s.is_empty() {
        return Err(bad("the SLO is empty"));
    }
    let mut slo = Slo::default();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(format!("`{s}` has an empty part")));
        }
        let (key, value) = part
            .split_once('=')
            .or_else(|| part.split_once(':'))
            .ok_or_else(|| {
                bad(format!(
                    "`{part}` is neither `NAME=DURATION` nor `fastgen:RATE`"
                ))
            })?;
        let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
        let slot = match key.as_str() {
            "ttft" => &mut slo.ttft_s,
            "tpot" => &mut slo.tpot_s,
            "e2e" | "e2el" => &mut slo.e2e_s,
            "fastgen" => &mut slo.fastgen_rate,
            _ => {
                return Err(bad(format!(
                    "`{part}`: unknown objective `{key}` (known: ttft, tpot, e2e, fastgen)"
                )));
            }
        };
        if slot.is_some() {
            return Err(bad(format!("`{part}`: `{key}` is given twice")));
        }
        *slot = Some(if key == "fastgen" {
            parse_rate(part, value)?
        } else {
            parse_duration(part, value)?
        });
    }
    Ok(slo)
}

fn parse_rate(part: &str, value: &str) -> Result<f64> {
    let v = value.strip_suffix("tok/s").unwrap_or(value).trim();
    match v.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(bad(format!(
            "`{part}`: the FastGen rate must be a number of tokens/s > 0, e.g. `fastgen:4`"
        ))),
    }
}

fn parse_duration(part: &str, value: &str) -> Result<f64> {
    let split = value
        .find(|c: char| c.is_ascii_alphabetic() || c == 'µ')
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(split);
    let scale = match unit.trim() {
        "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "" => {
            return Err(bad(format!(
                "`{part}`: the duration has no unit; write e.g. `{key}=2s` or `{key}=500ms`",
                key = part.split(['=', ':']).next().unwrap_or("ttft").trim()
            )));
        }
        other => {
            return Err(bad(format!(
                "`{part}`: unknown unit `{other}` (use s, ms or us)"
            )));
        }
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v * scale),
        _ => Err(bad(format!(
            "`{part}`: `{}` is not a positive number",
            num.trim()
        ))),
    }
}

fn bad(problem: impl Into<String>) -> Error {
    Error::invalid("--slo", problem, SYNTAX)
}

/// Formats an SLO in the syntax [`parse_slo`] reads (`none` when empty), with
/// durations in milliseconds below one second.
///
/// # Example
/// ```
/// let slo = fuselab_metrics::parse_slo("tpot=100ms,ttft=2s,fastgen:4").unwrap();
/// assert_eq!(fuselab_metrics::format_slo(&slo), "ttft=2s,tpot=100ms,fastgen:4");
/// ```
pub fn format_slo(slo: &Slo) -> String {
    let dur = |v: f64| {
        if v >= 1.0 {
            format!("{}s", v)
        } else {
            // Round away binary noise such as 0.1 * 1000 = 100.00000000000001.
            format!("{}ms", (v * 1e3 * 1e6).round() / 1e6)
        }
    };
    let mut parts = Vec::new();
    if let Some(v) = slo.ttft_s {
        parts.push(format!("ttft={}", dur(v)));
    }
    if let Some(v) = slo.tpot_s {
        parts.push(format!("tpot={}", dur(v)));
    }
    if let Some(v) = slo.e2e_s {
        parts.push(format!("e2e={}", dur(v)));
    }
    if let Some(v) = slo.fastgen_rate {
        parts.push(format!("fastgen:{v}"));
    }
    if parts.is_empty() {
        "none".to_string()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let s = parse_slo(" ttft=2s, tpot=100ms ,e2e=30s ").unwrap();
        assert_eq!(s.ttft_s, Some(2.0));
        assert!((s.tpot_s.unwrap() - 0.1).abs() < 1e-15);
        assert_eq!(s.e2e_s, Some(30.0));
        assert_eq!(s.fastgen_rate, None);
        assert_eq!(parse_slo("fastgen:4").unwrap().fastgen_rate, Some(4.0));
        assert_eq!(parse_slo("fastgen=2.5").unwrap().fastgen_rate, Some(2.5));
        assert_eq!(parse_slo("TTFT=250us").unwrap().ttft_s, Some(250e-6));
        assert_eq!(parse_slo("none").unwrap(), Slo::default());
        let both = parse_slo("fastgen:6,e2e=1.5s").unwrap();
        assert_eq!((both.fastgen_rate, both.e2e_s), (Some(6.0), Some(1.5)));
    }

    #[test]
    fn errors_name_the_bad_part_and_show_syntax() {
        let cases = [
            ("ttft=2", "no unit"),
            ("ttft=2h", "unknown unit `h`"),
            ("ttft=-1s", "not a positive number"),
            ("ttft=0s", "not a positive number"),
            ("latency=2s", "unknown objective `latency`"),
            ("ttft=1s,ttft=2s", "given twice"),
            ("fastgen:fast", "FastGen rate"),
            ("fastgen:0", "FastGen rate"),
            ("ttft", "neither"),
            ("ttft=1s,,", "empty part"),
            ("", "empty"),
        ];
        for (input, want) in cases {
            let msg = parse_slo(input).unwrap_err().to_string();
            assert!(msg.contains("--slo"), "{input}: {msg}");
            assert!(msg.contains(want), "{input}: {msg}");
            assert!(msg.contains("ttft=2s,tpot=100ms"), "{input}: {msg}");
        }
    }

    #[test]
    fn format_round_trips() {
        for s in [
            "ttft=2s,tpot=100ms,e2e=30s",
            "fastgen:4",
            "none",
            "ttft=1.5s,e2e=250ms,fastgen:2.5",
        ] {
            assert_eq!(format_slo(&parse_slo(s).unwrap()), s);
        }
    }
}
