//! The Parquet tables of a run folder, written and read with polars.
//!
//! | file | columns (type) |
//! |---|---|
//! | `requests.parquet` | `id` u64, `prompt_len` u32, `output_len` u32, `t_scheduled` f64, `t_sent` f64, `t_done` f64?, `status` str, `error` str? |
//! | `tokens.parquet` | `id` u64, `index` u32, `t` f64, `n_tokens` u32 — one row per streamed chunk, in arrival order |
//! | `requests.parquet`, HTTP engines only | also `x_request_id` str?, `usage_prompt_tokens` u32?, `usage_completion_tokens` u32?, `usage_cached_tokens` u32?, `prompt_exact` bool? |
//! | `server_metrics.parquet` (HTTP engines, when scraped) | `t` f64, `name` str, `labels` str, `value` f64 — one row per Prometheus sample |
//! | `steps.parquet` | every [`StepRecord`] field: `step` u64, `t_start` f64, `duration_s` f64, then u32 counts (`prefix_query_tokens`, `prefix_hit_tokens` since schema 2; the speculative-decoding `decode_seqs`, `spec_seqs`, `spec_proposed`, `spec_accepted` and the multi-LoRA `adapter_loads`, `adapter_evictions`, `adapters_in_batch`, `adapter_slots_used`, `adapter_slots`, read as 0 when absent), then `draft_s` f64 (0 when absent) |
//!
//! (`?` marks nullable columns.) Times are seconds from the run's start.
//! Every table is written even when it has no rows, so readers never have to
//! guess whether a file is missing or empty.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use fuselab_core::{
    RequestRecord, RequestStatus, ServerMetricSample, ServerSide, StepRecord, TokenChunk,
};
use polars::prelude::*;

use crate::error::{Error, Result};
use crate::folder::write_atomic;

fn parquet_err(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |source| Error::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

fn write_frame(path: &Path, height: usize, columns: Vec<Column>) -> Result<()> {
    let mut df = DataFrame::new(height, columns).map_err(parquet_err(path))?;
    write_atomic(path, |file| {
        ParquetWriter::new(file)
            .finish(&mut df)
            .map(|_| ())
            .map_err(parquet_err(path))
    })
}

fn read_frame(path: &Path) -> Result<DataFrame> {
    let file = File::open(path).map_err(|e| fuselab_core::Error::io(path, e))?;
    ParquetReader::new(file).finish().map_err(parquet_err(path))
}

pub(crate) fn write_requests(
    requests_path: &Path,
    tokens_path: &Path,
    requests: &[RequestRecord],
) -> Result<()> {
    let mut seen = HashMap::with_capacity(requests.len());
    for r in requests {
        if seen.insert(r.id, ()).is_some() {
            return Err(Error::InvalidRecords {
                what: "requests",
                problem: format!("request id {} appears twice; ids must be unique", r.id),
            });
        }
    }
    let n = requests.len();
    let mut columns = vec![
        Column::new(
            "id".into(),
            requests.iter().map(|r| r.id).collect::<Vec<_>>(),
        ),
        Column::new(
            "prompt_len".into(),
            requests.iter().map(|r| r.prompt_len).collect::<Vec<_>>(),
        ),
        Column::new(
            "output_len".into(),
            requests.iter().map(|r| r.output_len).collect::<Vec<_>>(),
        ),
        Column::new(
            "t_scheduled".into(),
            requests.iter().map(|r| r.t_scheduled).collect::<Vec<_>>(),
        ),
        Column::new(
            "t_sent".into(),
            requests.iter().map(|r| r.t_sent).collect::<Vec<_>>(),
        ),
        Column::new(
            "t_done".into(),
            requests.iter().map(|r| r.t_done).collect::<Vec<_>>(),
        ),
        Column::new(
            "status".into(),
            requests
                .iter()
                .map(|r| r.status.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "error".into(),
            requests
                .iter()
                .map(|r| r.error.as_deref())
                .collect::<Vec<_>>(),
        ),
    ];
    if requests.iter().any(|r| r.server.is_some()) {
        let server = |f: fn(&ServerSide) -> Option<u32>| {
            requests
                .iter()
                .map(|r| r.server.as_ref().and_then(f))
                .collect::<Vec<_>>()
        };
        columns.extend([
            Column::new(
                "x_request_id".into(),
                requests
                    .iter()
                    .map(|r| r.server.as_ref().map(|s| s.request_id.as_str()))
                    .collect::<Vec<_>>(),
            ),
            Column::new("usage_prompt_tokens".into(), server(|s| s.prompt_tokens)),
            Column::new(
                "usage_completion_tokens".into(),
                server(|s| s.completion_tokens),
            ),
            Column::new("usage_cached_tokens".into(), server(|s| s.cached_tokens)),
            Column::new(
                "prompt_exact".into(),
                requests
                    .iter()
                    .map(|r| r.server.as_ref().map(|s| s.prompt_exact))
                    .collect::<Vec<_>>(),
            ),
        ]);
    }
    let chunks = || {
        requests
            .iter()
            .flat_map(|r| r.tokens.iter().map(move |c| (r.id, c)))
    };
    let m = chunks().count();
    let token_columns = vec![
        Column::new("id".into(), chunks().map(|(id, _)| id).collect::<Vec<_>>()),
        Column::new(
            "index".into(),
            chunks().map(|(_, c)| c.index).collect::<Vec<_>>(),
        ),
        Column::new("t".into(), chunks().map(|(_, c)| c.t).collect::<Vec<_>>()),
        Column::new(
            "n_tokens".into(),
            chunks().map(|(_, c)| c.n_tokens).collect::<Vec<_>>(),
        ),
    ];
    write_frame(tokens_path, m, token_columns)?;
    write_frame(requests_path, n, columns)
}

/// Typed access to a frame's columns with errors that name file and column.
struct Table<'a> {
    path: &'a Path,
    df: DataFrame,
}

impl<'a> Table<'a> {
    fn read(path: &'a Path) -> Result<Self> {
        Ok(Self {
            path,
            df: read_frame(path)?,
        })
    }

    fn problem(&self, problem: String) -> Error {
        Error::Table {
            path: self.path.to_path_buf(),
            problem,
        }
    }

    fn column(&self, name: &str) -> Result<&Column> {
        self.df.column(name).map_err(|_| {
            self.problem(format!(
                "missing column `{name}` (found: {})",
                self.df
                    .get_column_names()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    fn wrong_type(&self, name: &str, want: &str) -> Error {
        let found = self
            .df
            .column(name)
            .map(|c| c.dtype().to_string())
            .unwrap_or_default();
        self.problem(format!("column `{name}` has type {found}, expected {want}"))
    }

    fn nullable<T>(
        &self,
        name: &str,
        want: &str,
        get: impl FnOnce(&Column) -> PolarsResult<Vec<Option<T>>>,
    ) -> Result<Vec<Option<T>>> {
        let c = self.column(name)?;
        get(c).map_err(|_| self.wrong_type(name, want))
    }

    fn required<T>(
        &self,
        name: &str,
        want: &str,
        get: impl FnOnce(&Column) -> PolarsResult<Vec<Option<T>>>,
    ) -> Result<Vec<T>> {
        self.nullable(name, want, get)?
            .into_iter()
            .enumerate()
            .map(|(row, v)| {
                v.ok_or_else(|| self.problem(format!("column `{name}` is null in row {row}")))
            })
            .collect()
    }

    fn u64(&self, name: &str) -> Result<Vec<u64>> {
        self.required(name, "u64", |c| Ok(c.u64()?.iter().collect()))
    }

    fn u32(&self, name: &str) -> Result<Vec<u32>> {
        self.required(name, "u32", |c| Ok(c.u32()?.iter().collect()))
    }

    fn f64(&self, name: &str) -> Result<Vec<f64>> {
        self.required(name, "f64", |c| Ok(c.f64()?.iter().collect()))
    }

    fn f64_opt(&self, name: &str) -> Result<Vec<Option<f64>>> {
        self.nullable(name, "f64", |c| Ok(c.f64()?.iter().collect()))
    }

    fn u32_opt(&self, name: &str) -> Result<Vec<Option<u32>>> {
        self.nullable(name, "u32", |c| Ok(c.u32()?.iter().collect()))
    }

    fn bool_opt(&self, name: &str) -> Result<Vec<Option<bool>>> {
        self.nullable(name, "bool", |c| Ok(c.bool()?.iter().collect()))
    }

    fn has(&self, name: &str) -> bool {
        self.df.column(name).is_ok()
    }

    fn str_opt(&self, name: &str) -> Result<Vec<Option<String>>> {
        self.nullable(name, "str", |c| {
            Ok(c.str()?.iter().map(|s| s.map(str::to_string)).collect())
        })
    }
}

pub(crate) fn read_requests(
    requests_path: &Path,
    tokens_path: &Path,
) -> Result<Vec<RequestRecord>> {
    let t = Table::read(requests_path)?;
    let ids = t.u64("id")?;
    let prompt_len = t.u32("prompt_len")?;
    let output_len = t.u32("output_len")?;
    let t_scheduled = t.f64("t_scheduled")?;
    let t_sent = t.f64("t_sent")?;
    let t_done = t.f64_opt("t_done")?;
    let status = t.str_opt("status")?;
    let error = t.str_opt("error")?;
    let server: Vec<Option<ServerSide>> = if t.has("x_request_id") {
        let request_id = t.str_opt("x_request_id")?;
        let prompt = t.u32_opt("usage_prompt_tokens")?;
        let completion = t.u32_opt("usage_completion_tokens")?;
        let cached = t.u32_opt("usage_cached_tokens")?;
        let exact = t.bool_opt("prompt_exact")?;
        (0..ids.len())
            .map(|row| {
                request_id[row].clone().map(|request_id| ServerSide {
                    request_id,
                    prompt_tokens: prompt[row],
                    completion_tokens: completion[row],
                    cached_tokens: cached[row],
                    prompt_exact: exact[row].unwrap_or(false),
                })
            })
            .collect()
    } else {
        vec![None; ids.len()]
    };

    let mut by_id = HashMap::with_capacity(ids.len());
    let mut records = Vec::with_capacity(ids.len());
    for (row, id) in ids.iter().copied().enumerate() {
        if by_id.insert(id, row).is_some() {
            return Err(t.problem(format!("request id {id} appears twice (row {row})")));
        }
        let status = match status[row].as_deref() {
            Some(s) => RequestStatus::parse(s).ok_or_else(|| {
                t.problem(format!(
                    "row {row}: unknown status `{s}` (expected ok, failed, timeout, cancelled or rejected)"
                ))
            })?,
            None => return Err(t.problem(format!("column `status` is null in row {row}"))),
        };
        records.push(RequestRecord {
            id,
            prompt_len: prompt_len[row],
            output_len: output_len[row],
            t_scheduled: t_scheduled[row],
            t_sent: t_sent[row],
            tokens: Vec::new(),
            t_done: t_done[row],
            status,
            error: error[row].clone(),
            server: server[row].clone(),
        });
    }

    let k = Table::read(tokens_path)?;
    let chunk_ids = k.u64("id")?;
    let index = k.u32("index")?;
    let time = k.f64("t")?;
    let n_tokens = k.u32("n_tokens")?;
    for (row, id) in chunk_ids.into_iter().enumerate() {
        let Some(&pos) = by_id.get(&id) else {
            return Err(k.problem(format!(
                "row {row}: request id {id} is not in {}",
                requests_path.display()
            )));
        };
        records[pos].tokens.push(TokenChunk {
            index: index[row],
            t: time[row],
            n_tokens: n_tokens[row],
        });
    }
    Ok(records)
}

/// `steps.parquet` columns of type u32, in order, with their accessors.
/// A u32 column of `steps.parquet`: its name and the field it stores.
type StepField = (&'static str, fn(&StepRecord) -> u32);

const STEP_U32: [StepField; 11] = [
    ("n_seqs", |s| s.n_seqs),
    ("prefill_tokens", |s| s.prefill_tokens),
    ("decode_tokens", |s| s.decode_tokens),
    ("padding_tokens", |s| s.padding_tokens),
    ("kv_blocks_used", |s| s.kv_blocks_used),
    ("kv_blocks_total", |s| s.kv_blocks_total),
    ("preemptions", |s| s.preemptions),
    ("waiting", |s| s.waiting),
    ("running", |s| s.running),
    ("prefix_query_tokens", |s| s.prefix_query_tokens),
    ("prefix_hit_tokens", |s| s.prefix_hit_tokens),
];

/// The speculative-decoding u32 columns of `steps.parquet`; files written
/// before speculation existed lack them and read as 0.
const STEP_SPEC_U32: [StepField; 4] = [
    ("decode_seqs", |s| s.decode_seqs),
    ("spec_seqs", |s| s.spec_seqs),
    ("spec_proposed", |s| s.spec_proposed),
    ("spec_accepted", |s| s.spec_accepted),
];

/// The multi-LoRA u32 columns of `steps.parquet`; files written before
/// multi-LoRA existed lack them and read as 0.
const STEP_LORA_U32: [StepField; 5] = [
    ("adapter_loads", |s| s.adapter_loads),
    ("adapter_evictions", |s| s.adapter_evictions),
    ("adapters_in_batch", |s| s.adapters_in_batch),
    ("adapter_slots_used", |s| s.adapter_slots_used),
    ("adapter_slots", |s| s.adapter_slots),
];

pub(crate) fn write_steps(path: &Path, steps: &[StepRecord]) -> Result<()> {
    let mut columns = vec![
        Column::new(
            "step".into(),
            steps.iter().map(|s| s.step).collect::<Vec<_>>(),
        ),
        Column::new(
            "t_start".into(),
            steps.iter().map(|s| s.t_start).collect::<Vec<_>>(),
        ),
        Column::new(
            "duration_s".into(),
            steps.iter().map(|s| s.duration_s).collect::<Vec<_>>(),
        ),
    ];
    for (name, get) in STEP_U32
        .into_iter()
        .chain(STEP_SPEC_U32)
        .chain(STEP_LORA_U32)
    {
        columns.push(Column::new(
            name.into(),
            steps.iter().map(get).collect::<Vec<_>>(),
        ));
    }
    columns.push(Column::new(
        "draft_s".into(),
        steps.iter().map(|s| s.draft_s).collect::<Vec<_>>(),
    ));
    write_frame(path, steps.len(), columns)
}

pub(crate) fn read_steps(path: &Path) -> Result<Vec<StepRecord>> {
    let t = Table::read(path)?;
    let step = t.u64("step")?;
    let t_start = t.f64("t_start")?;
    let duration_s = t.f64("duration_s")?;
    let mut u32s = Vec::with_capacity(STEP_U32.len());
    for (name, _) in STEP_U32 {
        u32s.push(t.u32(name)?);
    }
    let n = step.len();
    for (name, _) in STEP_SPEC_U32.into_iter().chain(STEP_LORA_U32) {
        u32s.push(if t.has(name) {
            t.u32(name)?
        } else {
            vec![0; n]
        });
    }
    let draft_s = if t.has("draft_s") {
        t.f64("draft_s")?
    } else {
        vec![0.0; n]
    };
    Ok((0..step.len())
        .map(|i| StepRecord {
            step: step[i],
            t_start: t_start[i],
            duration_s: duration_s[i],
            n_seqs: u32s[0][i],
            prefill_tokens: u32s[1][i],
            decode_tokens: u32s[2][i],
            padding_tokens: u32s[3][i],
            kv_blocks_used: u32s[4][i],
            kv_blocks_total: u32s[5][i],
            preemptions: u32s[6][i],
            waiting: u32s[7][i],
            running: u32s[8][i],
            prefix_query_tokens: u32s[9][i],
            prefix_hit_tokens: u32s[10][i],
            decode_seqs: u32s[11][i],
            spec_seqs: u32s[12][i],
            spec_proposed: u32s[13][i],
            spec_accepted: u32s[14][i],
            draft_s: draft_s[i],
            adapter_loads: u32s[15][i],
            adapter_evictions: u32s[16][i],
            adapters_in_batch: u32s[17][i],
            adapter_slots_used: u32s[18][i],
            adapter_slots: u32s[19][i],
        })
        .collect())
}

pub(crate) fn write_server_metrics(path: &Path, samples: &[ServerMetricSample]) -> Result<()> {
    let columns = vec![
        Column::new("t".into(), samples.iter().map(|s| s.t).collect::<Vec<_>>()),
        Column::new(
            "name".into(),
            samples.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "labels".into(),
            samples
                .iter()
                .map(|s| s.labels.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "value".into(),
            samples.iter().map(|s| s.value).collect::<Vec<_>>(),
        ),
    ];
    write_frame(path, samples.len(), columns)
}

pub(crate) fn read_server_metrics(path: &Path) -> Result<Vec<ServerMetricSample>> {
    let t = Table::read(path)?;
    let time = t.f64("t")?;
    let name = t.str_opt("name")?;
    let labels = t.str_opt("labels")?;
    let value = t.f64("value")?;
    Ok((0..time.len())
        .map(|row| ServerMetricSample {
            t: time[row],
            name: name[row].clone().unwrap_or_default(),
            labels: labels[row].clone().unwrap_or_default(),
            value: value[row],
        })
        .collect())
}
