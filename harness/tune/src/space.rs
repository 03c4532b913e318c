//! Typed search spaces: knobs, their domains, constraints between knobs, the
//! text syntax for `--space`, and the encoding to the unit cube the Gaussian
//! process works in.
//!
//! # Syntax
//!
//! A space is a comma-separated list of knobs, each `name=DOMAIN`:
//!
//! | domain | meaning |
//! |---|---|
//! | `lo..hi` | integers `lo ≤ v ≤ hi` when both bounds are written as integers (`-3..3`), otherwise floats (`-3.0..3`, `1e-3..1`) |
//! | `lo..hi:log` | the same, searched on a log scale (needs `lo > 0`) |
//! | `lo..hi:float` / `lo..hi:int` | force floats / integers (`x=-3..3:float` is continuous) |
//! | `lo..hi:pow2` | the powers of two in `[lo, hi]` (an ordered choice) |
//! | `a\|b\|c` | a choice; ordered (ordinal) when every choice is a number, unordered (one-hot) otherwise |
//!
//! Example: `budget=256..8192:log,max_seqs=16..512:log,block=16|32|64|128,x=-3.0..3`.
//!
//! A knob can be **conditional**: `splits=1..16 if decode=balanced` is searched
//! only where the earlier knob `decode` takes one of the listed values
//! (`if PARENT=V1|V2`); elsewhere it is inactive and fixed at its domain's
//! first value, so the configurations that differ only in an inactive knob are
//! one configuration (a grid and the enumeration list it once; the GP sees
//! a constant coordinate).
//!
//! Constraints between knobs are written `LHS OP RHS` where each side is a
//! product of knob names and numbers (`budget >= block`, `max_seqs*block <= 65536`)
//! and `OP` is one of `<`, `<=`, `>`, `>=`, `==`, `!=`.
//!
//! # Encoding
//!
//! Every numeric knob maps to one coordinate in `[0, 1]`; an unordered choice
//! maps to one coordinate per choice (one-hot). Integer and ordinal knobs are
//! encoded at the centre of their value's bin, so decoding a uniform sample
//! gives every value the same probability and `decode(encode(c)) == c`.

use std::collections::BTreeMap;
use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const SPACE_EXAMPLE: &str = "budget=256..8192:log,block=16|32|64|128,x=-3.0..3.0";
const CONSTRAINT_EXAMPLE: &str = "budget >= block, or max_seqs*block <= 65536";

/// One knob value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A categorical label.
    Str(String),
}

impl Value {
    /// The value as a number, if it is one (labels that parse as numbers count).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            Value::Str(s) => s.parse().ok(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// The set of values a knob can take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Domain {
    /// Integers in `[lo, hi]`, optionally on a log scale.
    Int {
        /// Smallest value.
        lo: i64,
        /// Largest value.
        hi: i64,
        /// Search on a log scale.
        log: bool,
    },
    /// Reals in `[lo, hi]`, optionally on a log scale.
    Float {
        /// Smallest value.
        lo: f64,
        /// Largest value.
        hi: f64,
        /// Search on a log scale.
        log: bool,
    },
    /// Ordered numeric choices (encoded by rank).
    Ordinal {
        /// The choices, ascending.
        values: Vec<Value>,
    },
    /// Unordered labels (one-hot encoded).
    Categorical {
        /// The labels.
        choices: Vec<String>,
    },
}

impl Domain {
    /// Number of encoded coordinates.
    pub fn width(&self) -> usize {
        match self {
            Domain::Categorical { choices } => choices.len(),
            _ => 1,
        }
    }

    /// Number of distinct values, `None` for a continuous range.
    pub fn cardinality(&self) -> Option<u64> {
        match self {
            Domain::Int { lo, hi, .. } => Some((hi - lo) as u64 + 1),
            Domain::Float { .. } => None,
            Domain::Ordinal { values } => Some(values.len() as u64),
            Domain::Categorical { choices } => Some(choices.len() as u64),
        }
    }

    /// The bin edges `(a, b)` of an integer range in its (log) coordinate.
    fn int_edges(lo: i64, hi: i64, log: bool) -> (f64, f64) {
        let (a, b) = (lo as f64 - 0.5, hi as f64 + 0.5);
        if log { (a.ln(), b.ln()) } else { (a, b) }
    }

    /// The `i`-th of all values (for enumeration); `None` for floats.
    fn nth(&self, i: u64) -> Option<Value> {
        match self {
            Domain::Int { lo, .. } => Some(Value::Int(lo + i as i64)),
            Domain::Float { .. } => None,
            Domain::Ordinal { values } => values.get(i as usize).cloned(),
            Domain::Categorical { choices } => choices.get(i as usize).cloned().map(Value::Str),
        }
    }

    /// Whether `v` belongs to the domain.
    pub fn contains(&self, v: &Value) -> bool {
        match (self, v) {
            (Domain::Int { lo, hi, .. }, Value::Int(i)) => lo <= i && i <= hi,
            (Domain::Float { lo, hi, .. }, v) => v.as_f64().is_some_and(|x| *lo <= x && x <= *hi),
            (Domain::Ordinal { values }, v) => values.contains(v),
            (Domain::Categorical { choices }, Value::Str(s)) => choices.contains(s),
            _ => false,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sc = |log: &bool| if *log { " (log)" } else { "" };
        match self {
            Domain::Int { lo, hi, log } => write!(f, "int [{lo}, {hi}]{}", sc(log)),
            Domain::Float { lo, hi, log } => write!(f, "float [{lo}, {hi}]{}", sc(log)),
            Domain::Ordinal { values } => {
                let v: Vec<String> = values.iter().map(ToString::to_string).collect();
                write!(f, "ordinal {{{}}}", v.join(", "))
            }
            Domain::Categorical { choices } => write!(f, "categorical {{{}}}", choices.join(", ")),
        }
    }
}

/// A named knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    /// Knob name (also the `{name}` placeholder in `--objective-cmd`).
    pub name: String,
    /// Its values.
    pub domain: Domain,
    /// Where it is active (`None`: everywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_if: Option<Condition>,
}

/// A conditional knob's condition: an earlier knob takes one of `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The earlier knob.
    pub parent: String,
    /// Its values that make the knob active.
    pub values: Vec<Value>,
}

impl Domain {
    /// The value an inactive knob is fixed at: the domain's first.
    fn first(&self) -> Value {
        match self {
            Domain::Int { lo, .. } => Value::Int(*lo),
            Domain::Float { lo, .. } => Value::Float(*lo),
            Domain::Ordinal { values } => values[0].clone(),
            Domain::Categorical { choices } => Value::Str(choices[0].clone()),
        }
    }
}

/// A value as written in a condition: an integer, a number or a label.
fn literal(s: &str) -> Value {
    if is_int_literal(s) {
        s.parse().map_or_else(|_| Value::Str(s.into()), Value::Int)
    } else if let Ok(x) = s.parse::<f64>() {
        Value::Float(x)
    } else {
        Value::Str(s.into())
    }
}

/// A point of the space: one value per knob, in the space's knob order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config(pub Vec<Value>);

/// Comparison operator of a [`Constraint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Factor {
    Knob(usize),
    Num(f64),
}

/// A known constraint between knobs, e.g. `budget >= block`. Points that
/// violate it are never proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    text: String,
    lhs: Vec<Factor>,
    op: Cmp,
    rhs: Vec<Factor>,
}

impl Constraint {
    /// The text the constraint was parsed from.
    pub fn text(&self) -> &str {
        &self.text
    }

    fn side(side: &[Factor], c: &Config) -> f64 {
        side.iter()
            .map(|f| match f {
                Factor::Knob(i) => c.0[*i].as_f64().unwrap_or(f64::NAN),
                Factor::Num(x) => *x,
            })
            .product()
    }

    /// Whether `c` satisfies the constraint.
    pub fn holds(&self, c: &Config) -> bool {
        let (l, r) = (Self::side(&self.lhs, c), Self::side(&self.rhs, c));
        match self.op {
            Cmp::Lt => l < r,
            Cmp::Le => l <= r,
            Cmp::Gt => l > r,
            Cmp::Ge => l >= r,
            Cmp::Eq => l == r,
            Cmp::Ne => l != r,
        }
    }
}

/// A search space: knobs plus constraints between them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    params: Vec<Param>,
    constraints: Vec<Constraint>,
}

fn is_name(s: &str) -> bool {
    let mut ch = s.chars();
    ch.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && ch.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn is_int_literal(s: &str) -> bool {
    let d = s.strip_prefix(['-', '+']).unwrap_or(s);
    !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
}

impl SearchSpace {
    /// A space from explicit knobs (names must be unique and domains non-empty).
    pub fn new(params: Vec<Param>) -> Result<Self> {
        if params.is_empty() {
            return Err(Error::space("", "the space has no knobs", SPACE_EXAMPLE));
        }
        for (i, p) in params.iter().enumerate() {
            if !is_name(&p.name) {
                return Err(Error::space(
                    &p.name,
                    format!(
                        "`{}` is not a valid knob name (letters, digits, `_`, `-`, `.`; starting with a letter)",
                        p.name
                    ),
                    SPACE_EXAMPLE,
                ));
            }
            if params[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::space(&p.name, "knob given twice", SPACE_EXAMPLE));
            }
            check_domain(&p.name, &p.domain)?;
            if let Some(c) = &p.active_if {
                let hint = "e.g. decode=auto|balanced,splits=1..16 if decode=balanced";
                let Some(parent) = params[..i].iter().find(|q| q.name == c.parent) else {
                    return Err(Error::space(
                        &p.name,
                        format!(
                            "its condition names `{}`, which is not a knob before it",
                            c.parent
                        ),
                        hint,
                    ));
                };
                if matches!(parent.domain, Domain::Float { .. }) {
                    return Err(Error::space(
                        &p.name,
                        format!(
                            "its condition's knob `{}` is continuous; condition on a choice or an integer",
                            c.parent
                        ),
                        hint,
                    ));
                }
                if let Some(v) = c.values.iter().find(|v| !parent.domain.contains(v)) {
                    return Err(Error::space(
                        &p.name,
                        format!("`{}` never takes the value {v} of its condition", c.parent),
                        hint,
                    ));
                }
            }
        }
        Ok(Self {
            params,
            constraints: Vec::new(),
        })
    }

    /// `c` with every inactive knob at its domain's first value.
    pub fn canonical(&self, mut c: Config) -> Config {
        for (i, p) in self.params.iter().enumerate() {
            let Some(cond) = &p.active_if else { continue };
            let active = self.params[..i]
                .iter()
                .position(|q| q.name == cond.parent)
                .is_some_and(|j| {
                    let v = &c.0[j];
                    cond.values
                        .iter()
                        .any(|w| w == v || w.as_f64().is_some_and(|x| v.as_f64() == Some(x)))
                });
            if !active {
                c.0[i] = p.domain.first();
            }
        }
        c
    }

    /// Parses the `--space` syntax described in the module docs.
    ///
    /// # Example
    /// ```
    /// let s = fuselab_tune::SearchSpace::parse("budget=256..8192:log,block=16|32|64|128,x=-3.0..3").unwrap();
    /// assert_eq!(s.params().len(), 3);
    /// assert!(fuselab_tune::SearchSpace::parse("x=3..1").is_err());
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let mut params = Vec::new();
        for item in spec.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(Error::space(
                    spec,
                    "empty knob (two commas in a row, or a trailing comma?)",
                    SPACE_EXAMPLE,
                ));
            }
            let (item, condition) = match item.split_once(" if ") {
                Some((knob, cond)) => {
                    let Some((parent, values)) = cond.trim().split_once('=') else {
                        return Err(Error::space(
                            item,
                            "expected `name=DOMAIN if PARENT=V1|V2`",
                            "e.g. splits=1..16 if decode=balanced",
                        ));
                    };
                    let values = values.split('|').map(|v| literal(v.trim())).collect();
                    (
                        knob.trim(),
                        Some(Condition {
                            parent: parent.trim().to_string(),
                            values,
                        }),
                    )
                }
                None => (item, None),
            };
            let Some((name, rhs)) = item.split_once('=') else {
                return Err(Error::space(item, "expected `name=DOMAIN`", SPACE_EXAMPLE));
            };
            let name = name.trim();
            let domain = parse_domain(name, rhs.trim())?;
            params.push(Param {
                name: name.to_string(),
                domain,
                active_if: condition,
            });
        }
        Self::new(params)
    }

    /// Adds a constraint such as `budget >= block` (see the module docs).
    pub fn with_constraint(mut self, text: &str) -> Result<Self> {
        let c = self.parse_constraint(text)?;
        self.constraints.push(c);
        Ok(self)
    }

    fn parse_constraint(&self, text: &str) -> Result<Constraint> {
        let t = text.trim();
        let ops = [
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ];
        let Some((pos, sym, op)) = ops
            .iter()
            .find_map(|(s, op)| t.find(s).map(|p| (p, *s, *op)))
        else {
            return Err(Error::space(
                t,
                "no comparison operator (<, <=, >, >=, ==, !=)",
                CONSTRAINT_EXAMPLE,
            ));
        };
        let side = |s: &str| -> Result<Vec<Factor>> {
            let mut out = Vec::new();
            for f in s.split('*') {
                let f = f.trim();
                if let Ok(x) = f.parse::<f64>() {
                    out.push(Factor::Num(x));
                } else if let Some(i) = self.params.iter().position(|p| p.name == f) {
                    if let Domain::Categorical { .. } = self.params[i].domain {
                        return Err(Error::space(
                            t,
                            format!("knob `{f}` is categorical and has no numeric value"),
                            CONSTRAINT_EXAMPLE,
                        ));
                    }
                    out.push(Factor::Knob(i));
                } else {
                    let known: Vec<&str> = self.params.iter().map(|p| p.name.as_str()).collect();
                    return Err(Error::space(
                        t,
                        format!(
                            "`{f}` is neither a number nor a knob (knobs: {})",
                            known.join(", ")
                        ),
                        CONSTRAINT_EXAMPLE,
                    ));
                }
            }
            Ok(out)
        };
        let lhs = side(&t[..pos])?;
        let rhs = side(&t[pos + sym.len()..])?;
        Ok(Constraint {
            text: t.to_string(),
            lhs,
            op,
            rhs,
        })
    }

    /// The knobs, in order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The constraints.
    pub fn constraints(&self) -> &[Constraint] {
        &self.constraints
    }

    /// Number of encoded coordinates.
    pub fn dim(&self) -> usize {
        self.params.iter().map(|p| p.domain.width()).sum()
    }

    /// Number of distinct points ignoring constraints, `None` if some knob is
    /// continuous or the count overflows.
    pub fn cardinality(&self) -> Option<u64> {
        self.params.iter().try_fold(1u64, |acc, p| {
            p.domain.cardinality().and_then(|c| acc.checked_mul(c))
        })
    }

    /// Whether `c` satisfies every constraint.
    pub fn feasible(&self, c: &Config) -> bool {
        self.constraints.iter().all(|k| k.holds(c))
    }

    /// Encodes a configuration into `[0, 1]^dim`.
    pub fn encode(&self, c: &Config) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.dim());
        for (p, v) in self.params.iter().zip(&c.0) {
            match &p.domain {
                Domain::Int { lo, hi, log } => {
                    let (a, b) = Domain::int_edges(*lo, *hi, *log);
                    let x = v.as_f64().unwrap_or(*lo as f64);
                    let x = if *log { x.ln() } else { x };
                    out.push(((x - a) / (b - a)).clamp(0.0, 1.0));
                }
                Domain::Float { lo, hi, log } => {
                    let x = v.as_f64().unwrap_or(*lo);
                    let u = if *log {
                        (x.ln() - lo.ln()) / (hi.ln() - lo.ln())
                    } else {
                        (x - lo) / (hi - lo)
                    };
                    out.push(u.clamp(0.0, 1.0));
                }
                Domain::Ordinal { values } => {
                    let i = values.iter().position(|w| w == v).unwrap_or(0);
                    out.push((i as f64 + 0.5) / values.len() as f64);
                }
                Domain::Categorical { choices } => {
                    for ch in choices {
                        out.push(if matches!(v, Value::Str(s) if s == ch) {
                            1.0
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
        out
    }

    /// Decodes (and snaps) a point of `[0, 1]^dim` to the nearest configuration.
    pub fn decode(&self, u: &[f64]) -> Config {
        let mut k = 0;
        let mut out = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let w = p.domain.width();
            let x = u[k].clamp(0.0, 1.0);
            out.push(match &p.domain {
                Domain::Int { lo, hi, log } => {
                    let (a, b) = Domain::int_edges(*lo, *hi, *log);
                    let t = a + x * (b - a);
                    let t = if *log { t.exp() } else { t };
                    Value::Int((t.round() as i64).clamp(*lo, *hi))
                }
                Domain::Float { lo, hi, log } => Value::Float(if *log {
                    (lo.ln() + x * (hi.ln() - lo.ln())).exp().clamp(*lo, *hi)
                } else {
                    lo + x * (hi - lo)
                }),
                Domain::Ordinal { values } => {
                    let i = ((x * values.len() as f64) as usize).min(values.len() - 1);
                    values[i].clone()
                }
                Domain::Categorical { choices } => {
                    let seg = &u[k..k + w];
                    let mut best = 0;
                    for (j, v) in seg.iter().enumerate() {
                        if *v > seg[best] {
                            best = j;
                        }
                    }
                    Value::Str(choices[best].clone())
                }
            });
            k += w;
        }
        self.canonical(Config(out))
    }

    /// Snaps a point of the cube to the encoding of its nearest configuration.
    pub fn snap(&self, u: &[f64]) -> Vec<f64> {
        self.encode(&self.decode(u))
    }

    /// A uniform random configuration (uniform in the encoded space, so log
    /// knobs are log-uniform). Ignores constraints.
    pub fn sample_unconstrained<R: Rng>(&self, rng: &mut R) -> Config {
        let u: Vec<f64> = (0..self.dim()).map(|_| rng.random::<f64>()).collect();
        self.decode(&u)
    }

    /// A random configuration that satisfies the constraints, or `None` if
    /// 10 000 draws all violated them.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Option<Config> {
        (0..10_000)
            .map(|_| self.sample_unconstrained(rng))
            .find(|c| self.feasible(c))
    }

    /// Every feasible configuration, when the space is finite and has at most
    /// `limit` points (before constraints); `None` otherwise.
    pub fn enumerate(&self, limit: u64) -> Option<Vec<Config>> {
        let total = self.cardinality()?;
        if total > limit {
            return None;
        }
        let cards: Vec<u64> = self
            .params
            .iter()
            .filter_map(|p| p.domain.cardinality())
            .collect();
        let mut out = Vec::new();
        for mut idx in 0..total {
            let mut vals = vec![Value::Int(0); self.params.len()];
            for j in (0..self.params.len()).rev() {
                vals[j] = self.params[j].domain.nth(idx % cards[j])?;
                idx /= cards[j];
            }
            let c = self.canonical(Config(vals));
            if self.feasible(&c) && !out.contains(&c) {
                out.push(c);
            }
        }
        Some(out)
    }

    /// Up to `levels` evenly spaced values of knob `i` (all values when the
    /// knob has at most `levels`).
    pub fn grid_values(&self, i: usize, levels: usize) -> Vec<Value> {
        let d = &self.params[i].domain;
        if let Some(card) = d.cardinality()
            && card <= levels as u64
        {
            return (0..card).filter_map(|j| d.nth(j)).collect();
        }
        let levels = levels.max(2);
        let mut out: Vec<Value> = Vec::new();
        for j in 0..levels {
            let x = j as f64 / (levels - 1) as f64;
            let v = match d {
                Domain::Float { .. } => Value::Float(match d {
                    Domain::Float { lo, hi, log: true } => {
                        (lo.ln() + x * (hi.ln() - lo.ln())).exp().clamp(*lo, *hi)
                    }
                    Domain::Float { lo, hi, .. } => lo + x * (hi - lo),
                    _ => 0.0,
                }),
                Domain::Int { lo, hi, log } => {
                    let t = if *log {
                        ((*lo as f64).ln() + x * ((*hi as f64).ln() - (*lo as f64).ln())).exp()
                    } else {
                        *lo as f64 + x * (*hi - *lo) as f64
                    };
                    Value::Int((t.round() as i64).clamp(*lo, *hi))
                }
                Domain::Ordinal { values } => {
                    values[((x * (values.len() - 1) as f64).round()) as usize].clone()
                }
                Domain::Categorical { choices } => {
                    Value::Str(choices[(x * (choices.len() - 1) as f64).round() as usize].clone())
                }
            };
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// The configuration as a name → value map (the journal's `knobs`).
    pub fn to_map(&self, c: &Config) -> BTreeMap<String, Value> {
        self.params
            .iter()
            .zip(&c.0)
            .map(|(p, v)| (p.name.clone(), v.clone()))
            .collect()
    }

    /// The configuration from a name → value map, checking every knob is
    /// present, known and in its domain.
    pub fn from_map(&self, m: &BTreeMap<String, Value>) -> Result<Config> {
        if let Some(k) = m
            .keys()
            .find(|k| !self.params.iter().any(|p| &p.name == *k))
        {
            return Err(Error::invalid(
                "knobs",
                format!("unknown knob `{k}`"),
                "the journal was written for a different space; use a new --out folder",
            ));
        }
        let mut out = Vec::new();
        for p in &self.params {
            let Some(v) = m.get(&p.name) else {
                return Err(Error::invalid(
                    "knobs",
                    format!("knob `{}` is missing", p.name),
                    "the journal was written for a different space; use a new --out folder",
                ));
            };
            // Integers read back from JSON as floats (e.g. `2.0`) are accepted.
            let v = match (&p.domain, v) {
                (Domain::Float { .. }, Value::Int(i)) => Value::Float(*i as f64),
                (Domain::Int { .. }, Value::Float(x)) if x.fract() == 0.0 => Value::Int(*x as i64),
                _ => v.clone(),
            };
            if !p.domain.contains(&v) {
                return Err(Error::invalid(
                    "knobs",
                    format!("`{}={v}` is outside {}", p.name, p.domain),
                    "the journal was written for a different space; use a new --out folder",
                ));
            }
            out.push(v);
        }
        Ok(Config(out))
    }

    /// `name=value` pairs, comma-separated.
    pub fn describe(&self, c: &Config) -> String {
        self.params
            .iter()
            .zip(&c.0)
            .map(|(p, v)| format!("{}={v}", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for SearchSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", p.name, p.domain)?;
            if let Some(c) = &p.active_if {
                let values: Vec<String> = c.values.iter().map(ToString::to_string).collect();
                write!(f, " if {}={}", c.parent, values.join("|"))?;
            }
        }
        for c in &self.constraints {
            write!(f, "; {}", c.text)?;
        }
        Ok(())
    }
}

fn check_domain(name: &str, d: &Domain) -> Result<()> {
    let bad = |problem: String| Err(Error::space(name, problem, SPACE_EXAMPLE));
    match d {
        Domain::Int { lo, hi, log } => {
            if lo >= hi {
                return bad(format!(
                    "empty range {lo}..{hi}: the lower bound must be below the upper bound"
                ));
            }
            if *log && *lo <= 0 {
                return bad(format!("`:log` needs a positive lower bound, got {lo}"));
            }
        }
        Domain::Float { lo, hi, log } => {
            if !lo.is_finite() || !hi.is_finite() {
                return bad("bounds must be finite numbers".into());
            }
            if lo >= hi {
                return bad(format!(
                    "empty range {lo}..{hi}: the lower bound must be below the upper bound"
                ));
            }
            if *log && *lo <= 0.0 {
                return bad(format!("`:log` needs a positive lower bound, got {lo}"));
            }
        }
        Domain::Ordinal { values } => {
            if values.len() < 2 {
                return bad("a choice needs at least two values".into());
            }
        }
        Domain::Categorical { choices } => {
            if choices.len() < 2 {
                return bad("a choice needs at least two values".into());
            }
            for c in choices {
                if c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_.+-".contains(ch))
                {
                    return bad(format!(
                        "choice `{c}` must be non-empty and use only letters, digits, `_`, `.`, `+`, `-`"
                    ));
                }
            }
            for (i, c) in choices.iter().enumerate() {
                if choices[..i].contains(c) {
                    return bad(format!("choice `{c}` is listed twice"));
                }
            }
        }
    }
    Ok(())
}

fn parse_domain(name: &str, rhs: &str) -> Result<Domain> {
    let bad = |problem: String| Error::space(name, problem, SPACE_EXAMPLE);
    if name.is_empty() {
        return Err(Error::space(
            rhs,
            "missing knob name before `=`",
            SPACE_EXAMPLE,
        ));
    }
    if rhs.is_empty() {
        return Err(bad("missing domain after `=`".into()));
    }
    if let Some((lo_s, rest)) = rhs.split_once("..") {
        let mut mods = rest.split(':');
        let hi_s = mods.next().unwrap_or("").trim();
        let lo_s = lo_s.trim();
        let (mut log, mut force_int, mut force_float, mut pow2) = (false, false, false, false);
        for m in mods {
            match m.trim() {
                "log" => log = true,
                "int" => force_int = true,
                "float" => force_float = true,
                "pow2" => pow2 = true,
                other => {
                    return Err(bad(format!(
                        "unknown modifier `:{other}` (known: :log, :int, :float, :pow2)"
                    )));
                }
            }
        }
        let lo: f64 = lo_s
            .parse()
            .map_err(|_| bad(format!("lower bound `{lo_s}` is not a number")))?;
        let hi: f64 = hi_s
            .parse()
            .map_err(|_| bad(format!("upper bound `{hi_s}` is not a number")))?;
        if force_int && force_float {
            return Err(bad("`:int` and `:float` contradict each other".into()));
        }
        let ints = is_int_literal(lo_s) && is_int_literal(hi_s);
        if pow2 {
            if lo.is_nan() || lo <= 0.0 || lo > hi {
                return Err(bad(format!(
                    "`:pow2` needs 0 < lo <= hi, got {lo_s}..{hi_s}"
                )));
            }
            let mut values = Vec::new();
            let mut p: i64 = 1;
            while (p as f64) <= hi && p < (1 << 52) {
                if p as f64 >= lo {
                    values.push(Value::Int(p));
                }
                p *= 2;
            }
            if values.len() < 2 {
                return Err(bad(format!(
                    "{lo_s}..{hi_s} holds fewer than two powers of two"
                )));
            }
            return Ok(Domain::Ordinal { values });
        }
        if force_int && !(lo.fract() == 0.0 && hi.fract() == 0.0) {
            return Err(bad(format!(
                "`:int` needs integer bounds, got {lo_s}..{hi_s}"
            )));
        }
        let d = if (ints || force_int) && !force_float {
            Domain::Int {
                lo: lo as i64,
                hi: hi as i64,
                log,
            }
        } else {
            Domain::Float { lo, hi, log }
        };
        check_domain(name, &d)?;
        return Ok(d);
    }
    if rhs.contains('|') {
        let parts: Vec<&str> = rhs.split('|').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad(format!("empty choice in `{rhs}`")));
        }
        let nums: Option<Vec<Value>> = parts
            .iter()
            .map(|p| {
                if is_int_literal(p) {
                    p.parse().ok().map(Value::Int)
                } else {
                    p.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .map(Value::Float)
                }
            })
            .collect();
        let d = match nums {
            Some(mut values) => {
                values.sort_by(|a, b| {
                    a.as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&b.as_f64().unwrap_or(0.0))
                });
                for w in values.windows(2) {
                    if w[0].as_f64() == w[1].as_f64() {
                        return Err(bad(format!("choice `{}` is listed twice", w[0])));
                    }
                }
                Domain::Ordinal { values }
            }
            None => Domain::Categorical {
                choices: parts.iter().map(|s| s.to_string()).collect(),
            },
        };
        check_domain(name, &d)?;
        return Ok(d);
    }
    Err(bad(format!(
        "`{rhs}` is neither a range `lo..hi` nor a choice `a|b|c`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn parses_the_documented_example() {
        let s = SearchSpace::parse(
            "budget=256..8192:log,max_seqs=16..512:log,block=16|32|64|128,x=-3..3,y=-1.5..2",
        )
        .unwrap();
        assert_eq!(
            s.params()[0].domain,
            Domain::Int {
                lo: 256,
                hi: 8192,
                log: true
            }
        );
        assert_eq!(
            s.params()[2].domain,
            Domain::Ordinal {
                values: vec![
                    Value::Int(16),
                    Value::Int(32),
                    Value::Int(64),
                    Value::Int(128)
                ]
            }
        );
        assert_eq!(
            s.params()[3].domain,
            Domain::Int {
                lo: -3,
                hi: 3,
                log: false
            }
        );
        assert_eq!(
            s.params()[4].domain,
            Domain::Float {
                lo: -1.5,
                hi: 2.0,
                log: false
            }
        );
        assert_eq!(s.dim(), 5);
        let f = SearchSpace::parse("x=-3..3:float,b=64..1024:pow2,m=fcfs|lifo").unwrap();
        assert!(matches!(f.params()[0].domain, Domain::Float { .. }));
        assert_eq!(f.params()[1].domain.cardinality(), Some(5));
        assert_eq!(f.dim(), 1 + 1 + 2);
    }

    #[test]
    fn malformed_specs_name_the_knob_and_show_valid_syntax() {
        for (spec, needle) in [
            ("x=3..1", "empty range"),
            ("x=1.0..1.0", "empty range"),
            ("x", "expected `name=DOMAIN`"),
            ("x=a..3", "lower bound `a`"),
            ("x=0..3:log", "positive lower bound"),
            ("x=1..3:cubic", "unknown modifier"),
            ("x=1..3,x=2..4", "twice"),
            ("x=7", "neither a range"),
            ("x=1|", "empty choice"),
            ("x=1..3,,y=1..2", "empty knob"),
            ("9x=1..2", "not a valid knob name"),
            ("m=a;b|c", "must be non-empty"),
        ] {
            let e = SearchSpace::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle), "{spec}: {e}");
            assert!(e.contains("valid syntax"), "{spec}: {e}");
        }
    }

    #[test]
    fn encode_decode_round_trips() {
        let s = SearchSpace::parse(
            "a=1..10,b=256..8192:log,c=16|32|64,d=-1.0..1,e=x|y|z,f=1e-3..1:log",
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..500 {
            let c = s.sample_unconstrained(&mut rng);
            let u = s.encode(&c);
            assert!(u.iter().all(|x| (0.0..=1.0).contains(x)));
            let back = s.decode(&u);
            for (x, y) in c.0.iter().zip(&back.0) {
                match (x, y) {
                    (Value::Float(a), Value::Float(b)) => {
                        assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0))
                    }
                    _ => assert_eq!(x, y),
                }
            }
        }
    }

    #[test]
    fn int_sampling_covers_the_ends_evenly() {
        let s = SearchSpace::parse("a=0..3").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut counts = [0; 4];
        for _ in 0..4000 {
            if let Value::Int(i) = s.sample_unconstrained(&mut rng).0[0] {
                counts[i as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn constraints_filter_enumeration_and_sampling() {
        let s = SearchSpace::parse("budget=16|32|64,block=16|32|64")
            .unwrap()
            .with_constraint("budget >= block")
            .unwrap();
        let all = s.enumerate(1000).unwrap();
        assert_eq!(all.len(), 6);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..100 {
            let c = s.sample(&mut rng).unwrap();
            assert!(c.0[0].as_f64() >= c.0[1].as_f64());
        }
        let p = SearchSpace::parse("a=1..8,b=1..8")
            .unwrap()
            .with_constraint("a*b <= 8")
            .unwrap();
        assert_eq!(p.enumerate(100).unwrap().len(), 20);
        let e = SearchSpace::parse("a=1..8")
            .unwrap()
            .with_constraint("a >= zz")
            .unwrap_err()
            .to_string();
        assert!(e.contains("zz") && e.contains("knobs: a"), "{e}");
        assert!(
            SearchSpace::parse("a=1..8")
                .unwrap()
                .with_constraint("a 3")
                .is_err()
        );
    }

    #[test]
    fn map_round_trip_and_validation() {
        let s = SearchSpace::parse("a=1..10,x=0.0..1").unwrap();
        let c = Config(vec![Value::Int(3), Value::Float(2.0 / 3.0)]);
        let m = s.to_map(&c);
        let json = serde_json::to_string(&m).unwrap();
        let back: BTreeMap<String, Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(s.from_map(&back).unwrap(), c);
        let mut bad = back.clone();
        bad.insert("a".into(), Value::Int(11));
        assert!(s.from_map(&bad).is_err());
        bad.remove("a");
        assert!(
            s.from_map(&bad)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
    }

    #[test]
    fn grid_values_are_spread_and_deduplicated() {
        let s = SearchSpace::parse("a=1..3,x=0.0..1,b=1..1000:log").unwrap();
        assert_eq!(s.grid_values(0, 5).len(), 3);
        assert_eq!(
            s.grid_values(1, 3),
            vec![Value::Float(0.0), Value::Float(0.5), Value::Float(1.0)]
        );
        assert_eq!(
            s.grid_values(2, 4),
            vec![
                Value::Int(1),
                Value::Int(10),
                Value::Int(100),
                Value::Int(1000)
            ]
        );
    }
}

#[cfg(test)]
mod conditional_tests {
    use super::*;

    #[test]
    fn a_conditional_knob_is_fixed_where_inactive_and_counted_once() {
        let s = SearchSpace::parse("decode=auto|balanced,splits=1..4 if decode=balanced,x=0..1")
            .unwrap();
        let all = s.enumerate(1000).unwrap();
        // auto × x (2) + balanced × splits (4) × x (2)
        assert_eq!(all.len(), 2 + 8, "{all:?}");
        let auto_splits: Vec<&Value> = all
            .iter()
            .filter(|c| c.0[0] == Value::Str("auto".into()))
            .map(|c| &c.0[1])
            .collect();
        assert!(
            auto_splits.iter().all(|v| **v == Value::Int(1)),
            "{auto_splits:?}"
        );
        // Decoding any point gives the canonical form.
        let mut rng = rand::rng();
        for _ in 0..200 {
            let c = s.sample_unconstrained(&mut rng);
            assert_eq!(s.canonical(c.clone()), c);
        }
        assert!(
            s.to_string()
                .contains("splits: int [1, 4] if decode=balanced"),
            "{s}"
        );
        let back: SearchSpace = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        // An ordinal parent, several values.
        let s = SearchSpace::parse("tile=64|128|256,stages=2..4 if tile=128|256").unwrap();
        assert_eq!(s.enumerate(100).unwrap().len(), 1 + 3 + 3);
    }

    #[test]
    fn bad_conditions_name_the_knob_and_the_problem() {
        for (spec, want) in [
            (
                "splits=1..4 if decode=balanced,decode=auto|balanced",
                "not a knob before it",
            ),
            ("x=0.0..1,splits=1..4 if x=0.5", "continuous"),
            (
                "decode=auto|balanced,splits=1..4 if decode=fast",
                "never takes the value fast",
            ),
            ("decode=auto|balanced,splits=1..4 if decode", "PARENT=V1|V2"),
        ] {
            let e = SearchSpace::parse(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
        }
    }
}
