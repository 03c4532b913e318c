//! Capacity under an SLO: the highest load whose SLO attainment reaches a
//! target, found by bracketing and bisection (DESIGN.md §5).
//!
//! Attainment is assumed to fall as load rises. The search first brackets the
//! answer — from the sweep's own points when given, otherwise by doubling or
//! halving from a start load — then bisects geometrically until the bracket is
//! narrower than a relative tolerance. Every probe is kept, so a report can
//! show how the answer was reached.

/// Settings of a search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchSettings {
    /// Attainment a load must reach to pass (0.9 by default).
    pub target: f64,
    /// Stop when `hi / lo − 1` is below this (0.05 by default).
    pub rel_tol: f64,
    /// Maximum number of loads evaluated, bracketing included (16 by default).
    pub max_probes: usize,
    /// Lowest load worth trying; below it the search gives up with `None`.
    pub min_load: f64,
    /// Highest load worth trying; above it the search stops with this as the answer.
    pub max_load: f64,
}

impl Default for SearchSettings {
    fn default() -> Self {
        Self {
            target: 0.9,
            rel_tol: 0.05,
            max_probes: 16,
            min_load: 1e-3,
            max_load: 1e4,
        }
    }
}

/// The outcome of a search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchResult {
    /// Highest passing load, `None` when no probed load passed.
    pub max_load: Option<f64>,
    /// Every `(load, attainment)` evaluated, in order.
    pub probes: Vec<(f64, f64)>,
}

/// Searches the highest load whose attainment (from `eval`) reaches
/// `settings.target`.
///
/// `known` are already measured `(load, attainment)` pairs (a sweep's points):
/// they seed the bracket without being evaluated again. `start` is used when
/// `known` is empty.
///
/// # Errors
/// The first error `eval` returns.
///
/// # Example
/// ```
/// use fuselab_harness::search::{SearchSettings, find_max_load};
/// // Attainment falls off a cliff at 3.0 requests/s.
/// let eval = |load: f64| -> Result<f64, ()> { Ok(if load <= 3.0 { 1.0 } else { 0.5 }) };
/// let r = find_max_load(eval, 1.0, &[], &SearchSettings::default()).unwrap();
/// let found = r.max_load.unwrap();
/// assert!((3.0 / 1.05..=3.0).contains(&found));
/// ```
pub fn find_max_load<E>(
    mut eval: impl FnMut(f64) -> Result<f64, E>,
    start: f64,
    known: &[(f64, f64)],
    settings: &SearchSettings,
) -> Result<SearchResult, E> {
    let passes = |a: f64| a >= settings.target;
    let mut probes: Vec<(f64, f64)> = Vec::new();
    let mut lo = known
        .iter()
        .filter(|(_, a)| passes(*a))
        .map(|(l, _)| *l)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    let mut hi = known
        .iter()
        .filter(|(l, a)| !passes(*a) && lo.is_none_or(|lo| *l > lo))
        .map(|(l, _)| *l)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.min(l))));

    let mut probe = |load: f64, probes: &mut Vec<(f64, f64)>| -> Result<bool, E> {
        let a = eval(load)?;
        probes.push((load, a));
        Ok(passes(a))
    };

    if lo.is_none() && hi.is_none() {
        if probe(start, &mut probes)? {
            lo = Some(start);
        } else {
            hi = Some(start);
        }
    }
    // Bracket upwards: double until a load fails.
    while let (Some(l), None) = (lo, hi) {
        if probes.len() >= settings.max_probes || l >= settings.max_load {
            return Ok(SearchResult {
                max_load: Some(l),
                probes,
            });
        }
        let next = (l * 2.0).min(settings.max_load);
        if probe(next, &mut probes)? {
            lo = Some(next);
        } else {
            hi = Some(next);
        }
    }
    // Bracket downwards: halve until a load passes.
    while let (None, Some(h)) = (lo, hi) {
        if probes.len() >= settings.max_probes || h <= settings.min_load {
            return Ok(SearchResult {
                max_load: None,
                probes,
            });
        }
        let next = (h / 2.0).max(settings.min_load);
        if probe(next, &mut probes)? {
            lo = Some(next);
        } else {
            hi = Some(next);
        }
    }
    let (Some(mut lo), Some(mut hi)) = (lo, hi) else {
        unreachable!("both loops exit only with a full bracket or by returning")
    };
    while hi / lo - 1.0 > settings.rel_tol && probes.len() < settings.max_probes {
        let mid = (lo * hi).sqrt();
        if probe(mid, &mut probes)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(SearchResult {
        max_load: Some(lo),
        probes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cliff(at: f64) -> impl FnMut(f64) -> Result<f64, ()> {
        move |l| Ok(if l <= at { 0.95 } else { 0.2 })
    }

    #[test]
    fn brackets_upwards_then_bisects() {
        let r = find_max_load(cliff(5.3), 1.0, &[], &SearchSettings::default()).unwrap();
        let m = r.max_load.unwrap();
        assert!((5.3 / 1.05..=5.3).contains(&m), "{m}");
        assert_eq!(
            r.probes[..4].iter().map(|p| p.0).collect::<Vec<_>>(),
            [1.0, 2.0, 4.0, 8.0]
        );
    }

    #[test]
    fn brackets_downwards() {
        let r = find_max_load(cliff(0.3), 4.0, &[], &SearchSettings::default()).unwrap();
        let m = r.max_load.unwrap();
        assert!((0.3 / 1.05..=0.3).contains(&m), "{m}");
    }

    #[test]
    fn seeds_the_bracket_from_known_points_without_reevaluating_them() {
        let known = [(1.0, 0.99), (2.0, 0.95), (4.0, 0.5), (8.0, 0.1)];
        let mut seen = Vec::new();
        let eval = |l: f64| -> Result<f64, ()> {
            seen.push(l);
            Ok(if l <= 3.0 { 0.95 } else { 0.2 })
        };
        let r = find_max_load(eval, 1.0, &known, &SearchSettings::default()).unwrap();
        assert!(seen.iter().all(|l| *l > 2.0 && *l < 4.0), "{seen:?}");
        let m = r.max_load.unwrap();
        assert!((3.0 / 1.05..=3.0).contains(&m), "{m}");
    }

    #[test]
    fn nothing_passes_gives_none_within_the_probe_limit() {
        let settings = SearchSettings {
            max_probes: 6,
            ..SearchSettings::default()
        };
        let r = find_max_load(|_| Ok::<_, ()>(0.0), 1.0, &[], &settings).unwrap();
        assert_eq!(r.max_load, None);
        assert_eq!(r.probes.len(), 6);
    }

    #[test]
    fn everything_passes_stops_at_the_cap() {
        let settings = SearchSettings {
            max_load: 64.0,
            ..SearchSettings::default()
        };
        let r = find_max_load(|_| Ok::<_, ()>(1.0), 1.0, &[], &settings).unwrap();
        assert_eq!(r.max_load, Some(64.0));
    }

    #[test]
    fn errors_propagate() {
        let r = find_max_load(
            |_| Err::<f64, _>("boom"),
            1.0,
            &[],
            &SearchSettings::default(),
        );
        assert_eq!(r, Err("boom"));
    }
}
