//! JSONL export, trace replay and the workload digest.
//!
//! One request a line, keys in this order:
//! `{"id":0,"arrival_s":0.000000,"prompt_len":2600,"output_len":60,"prefix_group":1,"prefix_len":512}`
//! (`prefix_group` and `prefix_len` only when the request has a prefix group;
//! `"conversation_id":4,"turn":1,"think_s":2.500000` only for a turn of a
//! multi-turn conversation; `"adapter":3` only for a request served with a
//! LoRA adapter).
//! `arrival_s` always has six decimals, so the text is stable.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use fuselab_core::{Arrivals, Error, LengthDist, RequestSpec, Result, Turn, WorkloadSpec};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::generate::{MAX_REQUESTS, quantise};

/// Appends the export line of one request (with its newline) to `out`.
fn push_line(out: &mut String, r: &RequestSpec) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"id\":{},\"arrival_s\":", r.id);
    push_seconds(out, r.arrival_s);
    let _ = write!(
        out,
        ",\"prompt_len\":{},\"output_len\":{}",
        r.prompt_len, r.output_len
    );
    if let Some(g) = r.prefix_group {
        let _ = write!(out, ",\"prefix_group\":{g},\"prefix_len\":{}", r.prefix_len);
    }
    if let Some(c) = &r.conversation {
        let _ = write!(
            out,
            ",\"conversation_id\":{},\"turn\":{},\"think_s\":",
            c.id, c.turn
        );
        push_seconds(out, c.think_s);
    }
    if let Some(a) = r.adapter {
        let _ = write!(out, ",\"adapter\":{a}");
    }
    out.push_str("}\n");
}

/// Appends seconds with exactly six decimals. Integer arithmetic on whole
/// microseconds is several times faster than `{:.6}` and prints the same
/// digits for every time this crate produces (already whole microseconds).
fn push_seconds(out: &mut String, t: f64) {
    let us = (t * 1e6).round();
    if t >= 0.0 && us < 1e15 {
        let us = us as u64;
        let _ = write!(out, "{}.{:06}", us / 1_000_000, us % 1_000_000);
    } else {
        let _ = write!(out, "{t:.6}");
    }
}

/// Writes requests as JSONL, one a line (see the module docs for the format).
///
/// # Errors
/// Whatever the writer returns.
pub fn write_jsonl<W: Write>(requests: &[RequestSpec], mut w: W) -> std::io::Result<()> {
    let mut buf = String::with_capacity(64 * 1024);
    for r in requests {
        push_line(&mut buf, r);
        if buf.len() >= 60 * 1024 {
            w.write_all(buf.as_bytes())?;
            buf.clear();
        }
    }
    w.write_all(buf.as_bytes())?;
    w.flush()
}

/// The JSONL export of requests as bytes.
///
/// # Example
/// ```
/// use fuselab_core::RequestSpec;
/// let r = RequestSpec { id: 3, arrival_s: 0.25, prompt_len: 10, output_len: 2, prefix_group: None, prefix_len: 0, conversation: None, adapter: None };
/// assert_eq!(
///     fuselab_workloads::export_jsonl(&[r]),
///     b"{\"id\":3,\"arrival_s\":0.250000,\"prompt_len\":10,\"output_len\":2}\n"
/// );
/// ```
pub fn export_jsonl(requests: &[RequestSpec]) -> Vec<u8> {
    let mut buf = String::with_capacity(requests.len() * 72);
    for r in requests {
        push_line(&mut buf, r);
    }
    buf.into_bytes()
}

/// Writes the JSONL export to a file, replacing it if it exists.
///
/// # Errors
/// [`Error::Io`] naming the path.
pub fn export_to_file(requests: &[RequestSpec], path: &Path) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    write_jsonl(requests, std::io::BufWriter::new(file)).map_err(|e| Error::io(path, e))
}

/// SHA-256 (lowercase hex) of the JSONL export: the workload's identity in
/// run provenance.
pub fn digest(requests: &[RequestSpec]) -> String {
    let mut hasher = Sha256::new();
    let mut buf = String::with_capacity(64 * 1024);
    for r in requests {
        push_line(&mut buf, r);
        if buf.len() >= 60 * 1024 {
            hasher.update(buf.as_bytes());
            buf.clear();
        }
    }
    hasher.update(buf.as_bytes());
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Reads a JSONL trace file (see [`parse_trace`]).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read, [`Error::Parse`] for a bad line.
pub fn read_trace(path: &Path) -> Result<Vec<RequestSpec>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_trace(&text, path)
}

const KNOWN_KEYS: [&str; 11] = [
    "id",
    "arrival_s",
    "prompt_len",
    "prompt_tokens",
    "output_len",
    "prefix_group",
    "prefix_len",
    "adapter",
    "conversation_id",
    "turn",
    "think_s",
];

/// Parses a JSONL trace: one object a line,
/// `{"id"?, "arrival_s", "prompt_len" | "prompt_tokens": [...], "output_len",
/// "prefix_group"?, "prefix_len"?, "adapter"?, "conversation_id"?, "turn"?, "think_s"?}`.
/// Blank lines are skipped.
///
/// - `prompt_tokens` only contributes its length: engines synthesise token ids
///   from the request id (see `RequestSpec::prompt_tokens`).
/// - `id` is given on every line or on none; missing ids are numbered from 0
///   in arrival order. Ids must be unique.
/// - Requests are sorted by `arrival_s` (stable), which must be finite and ≥ 0.
/// - `prefix_len` needs `prefix_group` and is capped at the prompt length.
/// - A turn of a multi-turn conversation gives `conversation_id` and its
///   0-based `turn`, and optionally `think_s` (seconds after the previous turn
///   completes, default 0); its prompt is the conversation so far. Every turn
///   `k > 0` needs turn `k − 1` of its conversation in the trace.
///
/// `path` only names the file in error messages.
///
/// # Errors
/// [`Error::Parse`] with the 1-based line number and the field at fault.
///
/// # Example
/// ```
/// let text = "{\"arrival_s\": 0.5, \"prompt_len\": 10, \"output_len\": 3}\n{\"arrival_s\": 0.1, \"prompt_tokens\": [1,2], \"output_len\": 1}\n";
/// let reqs = fuselab_workloads::parse_trace(text, "t.jsonl".as_ref())?;
/// assert_eq!((reqs[0].id, reqs[0].prompt_len, reqs[1].arrival_s), (0, 2, 0.5));
/// let bad = fuselab_workloads::parse_trace("{\"arrival_s\": 1}\n", "t.jsonl".as_ref()).unwrap_err();
/// assert_eq!(bad.to_string(), "t.jsonl:1: missing field `prompt_len` (or `prompt_tokens`): every request needs its prompt length");
/// # Ok::<(), fuselab_core::Error>(())
/// ```
pub fn parse_trace(text: &str, path: &Path) -> Result<Vec<RequestSpec>> {
    let err = |line: usize, message: String| Error::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    // (line number, explicit id, request)
    let mut parsed: Vec<(usize, Option<u64>, RequestSpec)> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        if raw.trim().is_empty() {
            continue;
        }
        if parsed.len() as u64 >= MAX_REQUESTS {
            return Err(err(
                line_no,
                format!("more than {MAX_REQUESTS} requests; split the trace"),
            ));
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| err(line_no, format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(err(
                line_no,
                format!("expected a JSON object, found {}", kind(&value)),
            ));
        };
        let (id, req) = parse_object(&obj).map_err(|m| err(line_no, m))?;
        parsed.push((line_no, id, req));
    }
    let Some(&(_, first_id, _)) = parsed.first() else {
        return Err(err(
            1,
            "the trace holds no requests; give one JSON object a line".into(),
        ));
    };
    check_turns(&parsed).map_err(|(line, m)| err(line, m))?;
    let explicit = first_id.is_some();
    let mut seen = HashSet::new();
    for (line_no, id, _) in &parsed {
        match (explicit, id) {
            (true, None) => {
                return Err(err(
                    *line_no,
                    "missing field `id`: earlier lines give ids, so every line must".into(),
                ));
            }
            (false, Some(_)) => {
                return Err(err(
                    *line_no,
                    "field `id` given, but earlier lines have none; give ids on every line or on none".into(),
                ));
            }
            (true, Some(id)) => {
                if !seen.insert(*id) {
                    return Err(err(
                        *line_no,
                        format!("field `id`: {id} appears twice; ids must be unique"),
                    ));
                }
            }
            (false, None) => {}
        }
    }
    let mut requests: Vec<RequestSpec> = parsed.into_iter().map(|(_, _, r)| r).collect();
    // Stable: equal arrival times keep file order.
    requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    if !explicit {
        for (i, r) in requests.iter_mut().enumerate() {
            r.id = i as u64;
        }
    }
    Ok(requests)
}

/// Each conversation's turns are unique and start at 0 without gaps.
fn check_turns(
    parsed: &[(usize, Option<u64>, RequestSpec)],
) -> std::result::Result<(), (usize, String)> {
    let mut turns: std::collections::HashMap<(u64, u32), usize> = Default::default();
    for (line, _, r) in parsed {
        if let Some(c) = &r.conversation
            && let Some(first) = turns.insert((c.id, c.turn), *line)
        {
            return Err((
                *line,
                format!(
                    "field `turn`: turn {} of conversation {} already appears on line {first}",
                    c.turn, c.id
                ),
            ));
        }
    }
    for (line, _, r) in parsed {
        if let Some(c) = &r.conversation
            && c.turn > 0
            && !turns.contains_key(&(c.id, c.turn - 1))
        {
            return Err((
                *line,
                format!(
                    "field `turn`: turn {} of conversation {} has no turn {} in the trace; number each conversation's turns from 0",
                    c.turn,
                    c.id,
                    c.turn - 1
                ),
            ));
        }
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn get_u32(obj: &Map<String, Value>, key: &str) -> std::result::Result<Option<u32>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| {
                format!(
                    "field `{key}`: expected a whole number from 0 to {}, found {v}",
                    u32::MAX
                )
            }),
    }
}

fn parse_object(
    obj: &Map<String, Value>,
) -> std::result::Result<(Option<u64>, RequestSpec), String> {
    if let Some(k) = obj.keys().find(|k| !KNOWN_KEYS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{k}`; expected one of {}",
            KNOWN_KEYS.map(|k| format!("`{k}`")).join(", ")
        ));
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("field `id`: expected a whole number >= 0, found {v}"))?,
        ),
    };
    let arrival_s = match obj.get("arrival_s") {
        None => {
            return Err(
                "missing field `arrival_s`: give the arrival time in seconds from the start".into(),
            );
        }
        Some(v) => v
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| format!("field `arrival_s`: expected seconds >= 0, found {v}"))?,
    };
    let from_len = get_u32(obj, "prompt_len")?;
    let from_tokens = match obj.get("prompt_tokens") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            if let Some(bad) = a
                .iter()
                .find(|t| t.as_u64().is_none_or(|x| x > u64::from(u32::MAX)))
            {
                return Err(format!(
                    "field `prompt_tokens`: expected token ids (whole numbers >= 0), found {bad}"
                ));
            }
            Some(
                u32::try_from(a.len())
                    .map_err(|_| "field `prompt_tokens`: too many tokens".to_string())?,
            )
        }
        Some(v) => {
            return Err(format!(
                "field `prompt_tokens`: expected an array of token ids, found {}",
                kind(v)
            ));
        }
    };
    let prompt_len = match (from_len, from_tokens) {
        (None, None) => {
            return Err("missing field `prompt_len` (or `prompt_tokens`): every request needs its prompt length".into());
        }
        (Some(a), Some(b)) if a != b => {
            return Err(format!(
                "field `prompt_len`: {a} disagrees with the {b} entries of `prompt_tokens`; give one of them"
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
    };
    if prompt_len == 0 {
        return Err(
            "field `prompt_len`: 0 tokens; every request needs at least 1 prompt token".into(),
        );
    }
    let output_len = get_u32(obj, "output_len")?
        .ok_or("missing field `output_len`: give the number of tokens to generate")?;
    if output_len == 0 {
        return Err(
            "field `output_len`: 0 tokens; every request generates at least 1 token".into(),
        );
    }
    let prefix_group = get_u32(obj, "prefix_group")?;
    let prefix_len = get_u32(obj, "prefix_len")?;
    if prefix_len.is_some_and(|l| l > 0) && prefix_group.is_none() {
        return Err(
            "field `prefix_len` is given without `prefix_group`; add the group or drop the length"
                .into(),
        );
    }
    let conversation = match obj.get("conversation_id") {
        None | Some(Value::Null) => {
            if let Some(k) = ["turn", "think_s"]
                .into_iter()
                .find(|k| obj.get(*k).is_some_and(|v| !v.is_null()))
            {
                return Err(format!(
                    "field `{k}` is given without `conversation_id`; add the conversation or drop it"
                ));
            }
            None
        }
        Some(v) => {
            let conv = v.as_u64().ok_or_else(|| {
                format!("field `conversation_id`: expected a whole number >= 0, found {v}")
            })?;
            let turn = get_u32(obj, "turn")?.ok_or_else(|| {
                format!(
                    "missing field `turn`: a request of conversation {conv} needs its 0-based turn"
                )
            })?;
            let think_s = match obj.get("think_s") {
                None | Some(Value::Null) => 0.0,
                Some(v) => v
                    .as_f64()
                    .filter(|t| t.is_finite() && *t >= 0.0)
                    .ok_or_else(|| format!("field `think_s`: expected seconds >= 0, found {v}"))?,
            };
            Some(Turn {
                id: conv,
                turn,
                think_s: quantise(think_s),
            })
        }
    };
    Ok((
        id,
        RequestSpec {
            id: id.unwrap_or(0),
            arrival_s: quantise(arrival_s),
            prompt_len,
            output_len,
            prefix_group,
            prefix_len: if prefix_group.is_some() {
                prefix_len.unwrap_or(0).min(prompt_len)
            } else {
                0
            },
            conversation,
            adapter: get_u32(obj, "adapter")?,
        },
    ))
}

/// Replays a trace file: its first `n` requests (all when `n` is `None`)
/// and the [`trace_spec`] that regenerates exactly them.
///
/// # Errors
/// Those of [`read_trace`]; [`Error::Invalid`] when `n` is 0 or more than
/// the file holds.
pub fn replay(path: &Path, n: Option<u64>) -> Result<(WorkloadSpec, Vec<RequestSpec>)> {
    let mut requests = read_trace(path)?;
    if let Some(n) = n {
        truncate(&mut requests, n, path)?;
    }
    Ok((trace_spec(path, &requests), requests))
}

/// Keeps the first `n` requests of a trace read from `path`.
pub(crate) fn truncate(requests: &mut Vec<RequestSpec>, n: u64, path: &Path) -> Result<()> {
    let have = requests.len() as u64;
    if n == 0 {
        return Err(Error::invalid(
            "n",
            "0 requests",
            "give at least 1 request (--n N)",
        ));
    }
    if have < n {
        return Err(Error::invalid(
            "n",
            format!(
                "{n} requests asked for, but {} holds only {have}",
                path.display()
            ),
            format!("use --n {have} or less"),
        ));
    }
    requests.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    Ok(())
}

/// The [`WorkloadSpec`] recorded for a replayed trace: `name` "trace",
/// arrivals [`Arrivals::Trace`], the file in `trace`, and the observed
/// prompt and output ranges as `uniform` distributions (informational only;
/// the digest identifies the exact requests), and, when requests name
/// adapters, `max id + 1` adapters of rank [`DEFAULT_TRACE_RANK`] (their
/// popularity recorded as uniform: the ids come from the file).
pub fn trace_spec(path: &Path, requests: &[RequestSpec]) -> WorkloadSpec {
    let range = |f: fn(&RequestSpec) -> u32| {
        let min = requests.iter().map(f).min().unwrap_or(1);
        let max = requests.iter().map(f).max().unwrap_or(1);
        LengthDist::Uniform { min, max }
    };
    WorkloadSpec {
        name: "trace".into(),
        n: requests.len() as u64,
        seed: 0,
        prompt: range(|r| r.prompt_len),
        output: range(|r| r.output_len),
        arrivals: Arrivals::Trace,
        prefix: None,
        trace: Some(path.display().to_string()),
        conversation: None,
        lora: requests
            .iter()
            .filter_map(|r| r.adapter)
            .max()
            .map(|max| fuselab_core::LoraSpec {
                adapters: max + 1,
                rank: DEFAULT_TRACE_RANK,
                popularity: fuselab_core::Popularity::Uniform,
            }),
    }
}

/// LoRA rank recorded for a trace whose requests name adapters (the file
/// carries ids only; `--lora-rank` overrides it).
pub const DEFAULT_TRACE_RANK: u32 = 16;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<RequestSpec>> {
        parse_trace(s, Path::new("t.jsonl"))
    }

    fn msg(s: &str) -> String {
        parse(s).unwrap_err().to_string()
    }

    #[test]
    fn export_import_export_is_identity() {
        let mut spec = crate::preset("sharegpt-like").unwrap();
        spec.n = 500;
        spec.prefix = Some(fuselab_core::PrefixSpec { groups: 4, len: 64 });
        spec.arrivals = Arrivals::Gamma {
            rate: 7.0,
            burstiness: 0.3,
        };
        let reqs = crate::generate(&spec).unwrap();
        let bytes = export_jsonl(&reqs);
        let back = parse(std::str::from_utf8(&bytes).unwrap()).unwrap();
        assert_eq!(back, reqs);
        assert_eq!(export_jsonl(&back), bytes);
        assert_eq!(digest(&back), digest(&reqs));
        let mut w = Vec::new();
        write_jsonl(&reqs, &mut w).unwrap();
        assert_eq!(w, bytes);
    }

    #[test]
    fn seconds_format_matches_fixed_six_decimals() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for i in 0..20_000 {
            let t = if i % 2 == 0 {
                crate::generate::quantise(rng.random_range(0.0..1e7))
            } else {
                crate::generate::quantise(rng.random_range(0.0..10.0))
            };
            let mut s = String::new();
            push_seconds(&mut s, t);
            assert_eq!(s, format!("{t:.6}"));
        }
        let mut s = String::new();
        push_seconds(&mut s, -1.5);
        assert_eq!(s, "-1.500000");
    }

    #[test]
    fn digest_is_sha256_of_export() {
        // SHA-256 of the empty string.
        assert_eq!(
            digest(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn ids_sorting_and_prefix() {
        let r = parse("{\"id\":9,\"arrival_s\":2,\"prompt_len\":5,\"output_len\":1,\"prefix_group\":2,\"prefix_len\":99}\n\n{\"id\":4,\"arrival_s\":1.0000004,\"prompt_tokens\":[1,2,3],\"output_len\":2}\n").unwrap();
        assert_eq!(r[0].id, 4);
        assert_eq!(r[0].arrival_s, 1.0);
        assert_eq!(r[0].prompt_len, 3);
        assert_eq!((r[1].prefix_group, r[1].prefix_len), (Some(2), 5));
    }

    #[test]
    fn malformed_lines_name_line_and_field() {
        let ok = "{\"arrival_s\":0,\"prompt_len\":5,\"output_len\":1}\n";
        let cases = [
            (
                "{\"arrival_s\":\"x\",\"prompt_len\":5,\"output_len\":1}",
                "t.jsonl:2: field `arrival_s`: expected seconds >= 0, found \"x\"",
            ),
            (
                "{\"arrival_s\":-1,\"prompt_len\":5,\"output_len\":1}",
                "t.jsonl:2: field `arrival_s`",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":5}",
                "t.jsonl:2: missing field `output_len`",
            ),
            (
                "{\"arrival_s\":1,\"output_len\":5}",
                "t.jsonl:2: missing field `prompt_len`",
            ),
            (
                "{\"prompt_len\":1,\"output_len\":5}",
                "t.jsonl:2: missing field `arrival_s`",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":-5,\"output_len\":1}",
                "t.jsonl:2: field `prompt_len`: expected a whole number",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":2.5,\"output_len\":1}",
                "t.jsonl:2: field `prompt_len`",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":0,\"output_len\":1}",
                "t.jsonl:2: field `prompt_len`: 0 tokens",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":3,\"output_len\":0}",
                "t.jsonl:2: field `output_len`: 0 tokens",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":3,\"prompt_tokens\":[1],\"output_len\":1}",
                "t.jsonl:2: field `prompt_len`: 3 disagrees",
            ),
            (
                "{\"arrival_s\":1,\"prompt_tokens\":[1,\"a\"],\"output_len\":1}",
                "t.jsonl:2: field `prompt_tokens`",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":3,\"output_len\":1,\"bogus\":1}",
                "t.jsonl:2: unknown field `bogus`",
            ),
            (
                "{\"arrival_s\":1,\"prompt_len\":3,\"output_len\":1,\"prefix_len\":2}",
                "t.jsonl:2: field `prefix_len` is given without `prefix_group`",
            ),
            ("{\"arrival_s\":1,", "t.jsonl:2: not valid JSON"),
            ("[1,2]", "t.jsonl:2: expected a JSON object, found an array"),
            (
                "{\"id\":1,\"arrival_s\":1,\"prompt_len\":3,\"output_len\":1}",
                "t.jsonl:2: field `id` given, but earlier lines have none",
            ),
        ];
        for (line, want) in cases {
            let m = msg(&format!("{ok}{line}\n"));
            assert!(m.starts_with(want), "{m:?} does not start with {want:?}");
        }
        assert!(msg("").starts_with("t.jsonl:1: the trace holds no requests"));
        let dup = "{\"id\":1,\"arrival_s\":0,\"prompt_len\":5,\"output_len\":1}\n{\"id\":1,\"arrival_s\":1,\"prompt_len\":5,\"output_len\":1}\n";
        assert!(msg(dup).starts_with("t.jsonl:2: field `id`: 1 appears twice"));
    }

    #[test]
    fn trace_spec_regenerates_the_trace() {
        let dir = std::env::temp_dir().join(format!("fuselab-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.jsonl");
        let mut spec = crate::preset("fastgen-1200").unwrap();
        spec.n = 20;
        let reqs = crate::generate(&spec).unwrap();
        export_to_file(&reqs, &path).unwrap();
        let back = read_trace(&path).unwrap();
        let mut tspec = trace_spec(&path, &back);
        assert_eq!(crate::generate(&tspec).unwrap(), reqs);
        tspec.n = 5;
        assert_eq!(crate::generate(&tspec).unwrap(), reqs[..5]);
        tspec.n = 21;
        assert!(
            crate::generate(&tspec)
                .unwrap_err()
                .to_string()
                .contains("holds only 20")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conversations_round_trip_and_bad_turns_are_named() {
        let mut spec = crate::preset("multiturn-chat").unwrap();
        spec.n = 60;
        let reqs = crate::generate(&spec).unwrap();
        let bytes = export_jsonl(&reqs);
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(text.contains("\"conversation_id\":0,\"turn\":1,\"think_s\":"));
        let back = parse(text).unwrap();
        assert_eq!(back, reqs);
        assert_eq!(export_jsonl(&back), bytes);

        let line =
            |extra: &str| format!("{{\"arrival_s\":0,\"prompt_len\":5,\"output_len\":1{extra}}}\n");
        let t0 = line(",\"conversation_id\":3,\"turn\":0");
        let cases = [
            (
                format!("{t0}{}", line(",\"conversation_id\":3,\"turn\":2")),
                "t.jsonl:2: field `turn`: turn 2 of conversation 3 has no turn 1",
            ),
            (
                format!("{t0}{t0}"),
                "t.jsonl:2: field `turn`: turn 0 of conversation 3 already appears on line 1",
            ),
            (
                line(",\"turn\":1"),
                "t.jsonl:1: field `turn` is given without `conversation_id`",
            ),
            (
                line(",\"conversation_id\":3"),
                "t.jsonl:1: missing field `turn`",
            ),
            (
                line(",\"conversation_id\":3,\"turn\":0,\"think_s\":-2"),
                "t.jsonl:1: field `think_s`: expected seconds >= 0, found -2",
            ),
            (
                line(",\"conversation_id\":\"a\",\"turn\":0"),
                "t.jsonl:1: field `conversation_id`: expected a whole number",
            ),
        ];
        for (text, want) in cases {
            let m = msg(&text);
            assert!(m.starts_with(want), "{m:?} does not start with {want:?}");
        }
        let ok = parse(&format!(
            "{t0}{}",
            line(",\"conversation_id\":3,\"turn\":1,\"think_s\":1.5")
        ))
        .unwrap();
        assert_eq!(
            ok[1].conversation,
            Some(Turn {
                id: 3,
                turn: 1,
                think_s: 1.5
            })
        );
    }
}
