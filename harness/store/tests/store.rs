//! Round trips and error cases of run and sweep folders.

use std::collections::BTreeMap;
use std::path::Path;

use fuselab_core::{
    Arrivals, EngineInfo, LatencyStats, LengthDist, LoadKind, Metrics, Provenance, RequestRecord,
    RequestStatus, RunSummary, SCHEMA_VERSION, Slo, StepRecord, SweepPoint, SweepSummary,
    TokenChunk, WorkloadSpec,
};
use fuselab_store::{
    Error, FolderKind, RunFolder, StoredRun, create_folder, find_run_folders, folder_kind,
    read_run, read_summary, read_sweep, write_run, write_sweep,
};
use proptest::prelude::*;

fn summary(name: &str) -> RunSummary {
    let mut knobs = BTreeMap::new();
    knobs.insert("budget".to_string(), serde_json::json!(768));
    let mut ci95 = BTreeMap::new();
    ci95.insert("p50".to_string(), [0.1 + 0.2, 1.0 / 3.0]);
    let mut effective_throughput = BTreeMap::new();
    effective_throughput.insert("4".to_string(), 2.0 / 3.0);
    RunSummary {
        schema_version: SCHEMA_VERSION,
        name: name.to_string(),
        provenance: Provenance {
            fuselab_version: "0.1.0".into(),
            git_commit: Some("abc123".into()),
            host_cpu: fuselab_store::host_cpu(),
            host_gpu: None,
            engine: EngineInfo {
                engine: "sim".into(),
                hardware: Some("h200".into()),
                model: Some("llama3-8b".into()),
                policy: Some("splitfuse".into()),
                knobs,
            },
            workload: WorkloadSpec {
                name: "fastgen-2600".into(),
                n: 3,
                seed: 7,
                prompt: LengthDist::Normal {
                    mean: 2600.0,
                    std: 780.0,
                    min: 16,
                    max: 7800,
                },
                output: LengthDist::Fixed { value: 128 },
                arrivals: Arrivals::Poisson { rate: 2.0 },
                prefix: None,
                trace: None,
                conversation: None,
                lora: None,
            },
            workload_digest: "00ff".into(),
            seed: u64::MAX,
            command: Some("fuselab bench --n 3".into()),
            started_unix_s: Some(1_764_470_000),
        },
        metrics: Metrics {
            requests: 3,
            completed: 2,
            failed: 1,
            window_s: 1e-300,
            ttft_s: LatencyStats {
                count: 2,
                mean: 0.123_456_789_012_345_67,
                ci95,
                ..Default::default()
            },
            slo: Slo {
                ttft_s: Some(2.0),
                fastgen_rate: Some(4.0),
                ..Default::default()
            },
            effective_throughput,
            goodput: std::f64::consts::PI,
            ..Default::default()
        },
    }
}

fn chunk(index: u32, t: f64, n_tokens: u32) -> TokenChunk {
    TokenChunk { index, t, n_tokens }
}

fn hand_requests() -> Vec<RequestRecord> {
    vec![
        RequestRecord {
            id: 10,
            prompt_len: 2600,
            output_len: 4,
            t_scheduled: 0.0,
            t_sent: 0.000_123,
            tokens: vec![chunk(0, 0.5, 1), chunk(1, 0.7, 3)],
            t_done: Some(0.7),
            status: RequestStatus::Ok,
            error: None,
            server: None,
        },
        // No tokens, never finished.
        RequestRecord {
            id: 3,
            prompt_len: 1,
            output_len: 128,
            t_scheduled: 1.0 / 3.0,
            t_sent: 0.4,
            tokens: vec![],
            t_done: None,
            status: RequestStatus::Cancelled,
            error: None,
            server: None,
        },
        // Failed with a message containing quotes, commas, newlines and unicode.
        RequestRecord {
            id: u64::MAX,
            prompt_len: u32::MAX,
            output_len: 0,
            t_scheduled: 2.0,
            t_sent: 2.5,
            tokens: vec![chunk(0, 3.0, 1)],
            t_done: Some(3.25),
            status: RequestStatus::Failed,
            error: Some("engine said \"no\",\nKV exhausted — µ".into()),
            server: None,
        },
        RequestRecord {
            id: 4,
            prompt_len: 9,
            output_len: 9,
            t_scheduled: 0.0,
            t_sent: 0.0,
            tokens: vec![],
            t_done: Some(5.0),
            status: RequestStatus::Rejected,
            error: Some(String::new()),
            server: None,
        },
    ]
}

fn hand_steps() -> Vec<StepRecord> {
    vec![
        StepRecord {
            step: 0,
            t_start: 0.0,
            duration_s: 0.012_5,
            n_seqs: 2,
            prefill_tokens: 768,
            decode_tokens: 0,
            padding_tokens: 5,
            kv_blocks_used: 41,
            kv_blocks_total: 9000,
            preemptions: 0,
            waiting: 7,
            running: 2,
            prefix_query_tokens: 900,
            prefix_hit_tokens: 132,
            adapter_loads: 3,
            adapter_evictions: 2,
            adapters_in_batch: 5,
            adapter_slots_used: 8,
            adapter_slots: 8,
            draft_s: 0.002,
            decode_seqs: 1,
            spec_seqs: 1,
            spec_proposed: 4,
            spec_accepted: 3,
        },
        StepRecord {
            step: u64::MAX,
            t_start: 1e9,
            duration_s: f64::MIN_POSITIVE,
            n_seqs: u32::MAX,
            ..Default::default()
        },
    ]
}

#[test]
fn hand_run_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs").join("a");
    let s = summary("a");
    write_run(&path, false, &s, &hand_requests(), &hand_steps()).unwrap();
    for f in [
        "summary.json",
        "requests.parquet",
        "tokens.parquet",
        "steps.parquet",
    ] {
        assert!(path.join(f).is_file(), "{f}");
    }
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(&path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let back = read_run(&path).unwrap();
    assert_eq!(
        back,
        StoredRun {
            summary: s.clone(),
            requests: hand_requests(),
            steps: hand_steps()
        }
    );
    assert_eq!(read_summary(&path).unwrap(), s);
    assert_eq!(read_summary(&path.join("summary.json")).unwrap(), s);
    assert_eq!(folder_kind(&path).unwrap(), FolderKind::Run);
    // summary.json is pretty JSON.
    let text = std::fs::read_to_string(path.join("summary.json")).unwrap();
    assert!(
        text.starts_with(&format!("{{\n  \"schema_version\": {SCHEMA_VERSION},")),
        "{text}"
    );
}

#[test]
fn empty_tables_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunFolder::create(dir.path().join("empty"), false).unwrap();
    run.write_all(&summary("empty"), &[], &[]).unwrap();
    let back = RunFolder::open(run.path()).unwrap().read().unwrap();
    assert!(back.requests.is_empty() && back.steps.is_empty());
    // Requests with no chunks at all: tokens.parquet has 0 rows.
    let reqs: Vec<_> = hand_requests()
        .into_iter()
        .filter(|r| r.tokens.is_empty())
        .collect();
    run.write_requests(&reqs).unwrap();
    assert_eq!(run.read_requests().unwrap(), reqs);
}

#[test]
fn parquet_columns_have_the_documented_types() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let run = write_run(
        dir.path().join("r"),
        false,
        &summary("r"),
        &hand_requests(),
        &hand_steps(),
    )
    .unwrap();
    let read = |f: &str| {
        ParquetReader::new(std::fs::File::open(run.path().join(f)).unwrap())
            .finish()
            .unwrap()
    };
    let req = read("requests.parquet");
    let want = [
        ("id", DataType::UInt64),
        ("prompt_len", DataType::UInt32),
        ("output_len", DataType::UInt32),
        ("t_scheduled", DataType::Float64),
        ("t_sent", DataType::Float64),
        ("t_done", DataType::Float64),
        ("status", DataType::String),
        ("error", DataType::String),
    ];
    for (name, dtype) in want {
        assert_eq!(req.column(name).unwrap().dtype(), &dtype, "{name}");
    }
    assert_eq!(req.column("t_done").unwrap().null_count(), 1);
    assert_eq!(
        req.column("status").unwrap().str().unwrap().get(1),
        Some("cancelled")
    );
    let tok = read("tokens.parquet");
    assert_eq!(tok.height(), 3);
    assert_eq!(
        tok.get_column_names()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>(),
        ["id", "index", "t", "n_tokens"]
    );
    let steps = read("steps.parquet");
    assert_eq!(steps.width(), 24);
    assert_eq!(
        steps
            .column("adapter_evictions")
            .unwrap()
            .u32()
            .unwrap()
            .get(0),
        Some(2)
    );
    assert_eq!(
        steps.column("spec_accepted").unwrap().u32().unwrap().get(0),
        Some(3)
    );
    assert_eq!(steps.column("draft_s").unwrap().dtype(), &DataType::Float64);
    // A steps table from before speculative decoding reads as no speculation.
    let mut legacy = steps.drop_many([
        "decode_seqs",
        "spec_seqs",
        "spec_proposed",
        "spec_accepted",
        "draft_s",
    ]);
    ParquetWriter::new(std::fs::File::create(run.path().join("steps.parquet")).unwrap())
        .finish(&mut legacy)
        .unwrap();
    let old = fuselab_store::RunFolder::open(run.path())
        .unwrap()
        .read_steps()
        .unwrap();
    assert_eq!(old[0].prefix_hit_tokens, 132);
    assert_eq!((old[0].spec_accepted, old[0].draft_s), (0, 0.0));
    assert_eq!(
        steps
            .column("prefix_hit_tokens")
            .unwrap()
            .u32()
            .unwrap()
            .get(0),
        Some(132)
    );
    assert_eq!(
        steps
            .column("kv_blocks_total")
            .unwrap()
            .u32()
            .unwrap()
            .get(0),
        Some(9000)
    );
}

#[test]
fn refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    write_run(&path, false, &summary("r"), &hand_requests(), &hand_steps()).unwrap();
    let err = write_run(&path, false, &summary("r"), &[], &[]).unwrap_err();
    assert!(matches!(err, Error::Exists { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("--force") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    // With force: fuselab's files are replaced, other files are kept.
    std::fs::write(path.join("notes.txt"), "keep me").unwrap();
    write_run(&path, true, &summary("r2"), &[], &[]).unwrap();
    let back = read_run(&path).unwrap();
    assert_eq!(back.summary.name, "r2");
    assert!(back.requests.is_empty());
    assert_eq!(
        std::fs::read_to_string(path.join("notes.txt")).unwrap(),
        "keep me"
    );
    // An existing empty folder is fine without force.
    let empty = dir.path().join("e");
    std::fs::create_dir(&empty).unwrap();
    create_folder(&empty, false).unwrap();
    // A file in the way is an error naming it.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let msg = create_folder(&file, true).unwrap_err().to_string();
    assert!(msg.contains(&file.display().to_string()), "{msg}");
}

#[test]
fn schema_mismatch_names_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    write_run(&path, false, &summary("r"), &[], &[]).unwrap();
    let file = path.join("summary.json");
    let text = std::fs::read_to_string(&file).unwrap();
    // A future version may also have fields this one does not know.
    let newer = text.replacen(
        &format!("\"schema_version\": {SCHEMA_VERSION},"),
        "\"schema_version\": 99, \"new_field\": 1,",
        1,
    );
    std::fs::write(&file, newer).unwrap();
    let err = read_run(&path).unwrap_err();
    match err.as_core() {
        Some(fuselab_core::Error::SchemaMismatch {
            path: p,
            found,
            expected,
        }) => {
            assert_eq!((*found, *expected), (99, SCHEMA_VERSION));
            assert_eq!(p, &file);
        }
        other => panic!("expected SchemaMismatch, got {other:?} ({err})"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("99") && msg.contains(&SCHEMA_VERSION.to_string()),
        "{msg}"
    );
}

#[test]
fn missing_folder_and_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let msg = read_run(&missing).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");

    let path = dir.path().join("r");
    write_run(&path, false, &summary("r"), &hand_requests(), &[]).unwrap();
    for f in ["tokens.parquet", "steps.parquet", "requests.parquet"] {
        std::fs::rename(path.join(f), dir.path().join(f)).unwrap();
        let msg = read_run(&path).unwrap_err().to_string();
        assert!(
            msg.contains(&path.join(f).display().to_string()),
            "{f}: {msg}"
        );
        std::fs::rename(dir.path().join(f), path.join(f)).unwrap();
    }
    std::fs::remove_file(path.join("summary.json")).unwrap();
    let err = read_run(&path).unwrap_err();
    assert!(matches!(err, Error::NotAFolderOfRuns { .. }), "{err}");
    assert!(err.to_string().contains("summary.json"));
}

#[test]
fn steps_written_before_the_adapter_columns_read_them_as_zero() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    write_run(&path, false, &summary("r"), &hand_requests(), &hand_steps()).unwrap();
    let file = path.join("steps.parquet");
    let mut df = ParquetReader::new(std::fs::File::open(&file).unwrap())
        .finish()
        .unwrap();
    for c in [
        "adapter_loads",
        "adapter_evictions",
        "adapters_in_batch",
        "adapter_slots_used",
        "adapter_slots",
    ] {
        df = df.drop(c).unwrap();
    }
    ParquetWriter::new(std::fs::File::create(&file).unwrap())
        .finish(&mut df)
        .unwrap();
    let back = RunFolder::open(&path).unwrap().read_steps().unwrap();
    let want: Vec<StepRecord> = hand_steps()
        .into_iter()
        .map(|s| StepRecord {
            adapter_loads: 0,
            adapter_evictions: 0,
            adapters_in_batch: 0,
            adapter_slots_used: 0,
            adapter_slots: 0,
            ..s
        })
        .collect();
    assert_eq!(back, want);
}

#[test]
fn corrupt_tables_give_clear_errors() {
    use polars::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    write_run(&path, false, &summary("r"), &hand_requests(), &[]).unwrap();
    let write = |file: &str, mut df: DataFrame| {
        ParquetWriter::new(std::fs::File::create(path.join(file)).unwrap())
            .finish(&mut df)
            .unwrap();
    };
    // Wrong type for `n_tokens`.
    let df = DataFrame::new(
        1,
        vec![
            Column::new("id".into(), [10u64]),
            Column::new("index".into(), [0u32]),
            Column::new("t".into(), [0.5f64]),
            Column::new("n_tokens".into(), [1i64]),
        ],
    )
    .unwrap();
    write("tokens.parquet", df);
    let msg = read_run(&path).unwrap_err().to_string();
    assert!(
        msg.contains("`n_tokens`") && msg.contains("expected u32"),
        "{msg}"
    );
    // A chunk for an unknown request.
    let df = DataFrame::new(
        1,
        vec![
            Column::new("id".into(), [999u64]),
            Column::new("index".into(), [0u32]),
            Column::new("t".into(), [0.5f64]),
            Column::new("n_tokens".into(), [1u32]),
        ],
    )
    .unwrap();
    write("tokens.parquet", df);
    let msg = read_run(&path).unwrap_err().to_string();
    assert!(
        msg.contains("999") && msg.contains("tokens.parquet"),
        "{msg}"
    );
    // A missing column.
    let df = DataFrame::new(1, vec![Column::new("step".into(), [0u64])]).unwrap();
    write("steps.parquet", df);
    let msg = RunFolder::open(&path)
        .unwrap()
        .read_steps()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing column `t_start`"), "{msg}");
    // Not Parquet at all.
    std::fs::write(path.join("requests.parquet"), "garbage").unwrap();
    let msg = read_run(&path).unwrap_err().to_string();
    assert!(msg.contains("requests.parquet"), "{msg}");
}

#[test]
fn duplicate_ids_are_refused_on_write() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunFolder::create(dir.path().join("r"), false).unwrap();
    let mut reqs = hand_requests();
    reqs[1].id = reqs[0].id;
    let msg = run.write_requests(&reqs).unwrap_err().to_string();
    assert!(msg.contains("id 10 appears twice"), "{msg}");
}

#[test]
fn sweep_folder_round_trips_and_is_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("sweep");
    create_folder(&root, false).unwrap();
    let mut points = Vec::new();
    for (i, policy) in ["chunked", "splitfuse"].into_iter().enumerate() {
        let run = format!("{policy}-rate-2");
        write_run(
            root.join(&run),
            false,
            &summary(&run),
            &hand_requests(),
            &hand_steps(),
        )
        .unwrap();
        points.push(SweepPoint {
            policy: policy.into(),
            load: 2.0 + i as f64 / 3.0,
            run,
            metrics: summary("x").metrics,
            spec_k: None,
        });
    }
    let sweep = SweepSummary {
        schema_version: SCHEMA_VERSION,
        name: "sweep".into(),
        load_kind: LoadKind::Rate,
        points,
        max_under_slo: vec![],
    };
    write_sweep(&root, &sweep).unwrap();
    assert_eq!(read_sweep(&root).unwrap(), sweep);
    assert_eq!(folder_kind(&root).unwrap(), FolderKind::Sweep);
    assert!(RunFolder::open(&root).is_err());
    let runs = find_run_folders(dir.path()).unwrap();
    assert_eq!(
        runs,
        vec![root.join("chunked-rate-2"), root.join("splitfuse-rate-2")]
    );
    let err = folder_kind(dir.path()).unwrap_err();
    assert!(matches!(err, Error::NotAFolderOfRuns { .. }));
}

#[test]
fn error_is_send_sync_static() {
    // The CLI wraps store errors in anyhow, which needs all three.
    fn check<T: std::error::Error + Send + Sync + 'static>() {}
    check::<Error>();
}

#[test]
fn git_commit_is_none_or_non_empty() {
    assert!(fuselab_store::git_commit().is_none_or(|c| !c.is_empty()));
}

fn arb_chunk() -> impl Strategy<Value = TokenChunk> {
    (any::<u32>(), any::<f64>(), any::<u32>()).prop_map(|(index, t, n_tokens)| TokenChunk {
        index,
        t,
        n_tokens,
    })
}

fn arb_status() -> impl Strategy<Value = RequestStatus> {
    prop_oneof![
        Just(RequestStatus::Ok),
        Just(RequestStatus::Failed),
        Just(RequestStatus::Timeout),
        Just(RequestStatus::Cancelled),
        Just(RequestStatus::Rejected),
    ]
}

fn arb_request() -> impl Strategy<Value = RequestRecord> {
    (
        (any::<u32>(), any::<u32>(), -1e6f64..1e6, any::<f64>()),
        prop::collection::vec(arb_chunk(), 0..5),
        prop::option::of(any::<f64>()),
        arb_status(),
        prop::option::of(".{0,12}"),
    )
        .prop_map(
            |((prompt_len, output_len, t_scheduled, t_sent), tokens, t_done, status, error)| {
                RequestRecord {
                    id: 0,
                    prompt_len,
                    output_len,
                    t_scheduled,
                    t_sent,
                    tokens,
                    t_done,
                    status,
                    error,
                    server: None,
                }
            },
        )
}

fn arb_step() -> impl Strategy<Value = StepRecord> {
    (
        any::<u64>(),
        any::<f64>(),
        any::<f64>(),
        prop::array::uniform20(any::<u32>()),
        any::<f64>(),
    )
        .prop_map(|(step, t_start, duration_s, u, draft_s)| StepRecord {
            step,
            t_start,
            duration_s,
            n_seqs: u[0],
            prefill_tokens: u[1],
            decode_tokens: u[2],
            padding_tokens: u[3],
            kv_blocks_used: u[4],
            kv_blocks_total: u[5],
            preemptions: u[6],
            waiting: u[7],
            running: u[8],
            prefix_query_tokens: u[9],
            prefix_hit_tokens: u[10],
            decode_seqs: u[11],
            spec_seqs: u[12],
            spec_proposed: u[13],
            spec_accepted: u[14],
            draft_s,
            adapter_loads: u[15],
            adapter_evictions: u[16],
            adapters_in_batch: u[17],
            adapter_slots_used: u[18],
            adapter_slots: u[19],
        })
}

/// Compares with NaN equal to NaN (bit-exact comparison of every float).
fn same_bits(a: &[RequestRecord], b: &[RequestRecord]) -> bool {
    format!("{a:?}") == format!("{b:?}")
        && a.iter().zip(b).all(|(x, y)| {
            x.t_sent.to_bits() == y.t_sent.to_bits()
                && x.t_done.map(f64::to_bits) == y.t_done.map(f64::to_bits)
                && x.tokens
                    .iter()
                    .zip(&y.tokens)
                    .all(|(c, d)| c.t.to_bits() == d.t.to_bits())
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn random_tables_round_trip_bit_exactly(
        reqs in prop::collection::vec(arb_request(), 0..12),
        ids in prop::collection::hash_set(any::<u64>(), 12),
        steps in prop::collection::vec(arb_step(), 0..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let run = RunFolder::create(dir.path().join("r"), false).unwrap();
        let reqs: Vec<RequestRecord> = reqs.into_iter().zip(ids).map(|(r, id)| RequestRecord { id, ..r }).collect();
        run.write_requests(&reqs).unwrap();
        run.write_steps(&steps).unwrap();
        let back = run.read_requests().unwrap();
        prop_assert!(same_bits(&reqs, &back), "{reqs:?}\n{back:?}");
        let back_steps = run.read_steps().unwrap();
        prop_assert_eq!(format!("{steps:?}"), format!("{back_steps:?}"));
    }
}

#[test]
fn store_paths_in_errors_are_displayed_plainly() {
    // The CLI prints errors with `{}`: the message must carry the path itself.
    let e = Error::Exists {
        path: Path::new("runs/x").to_path_buf(),
    };
    assert_eq!(
        e.to_string(),
        "runs/x already exists and is not empty; pass --force to overwrite it, or choose another output folder"
    );
}

#[test]
fn server_side_fields_and_server_metrics_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunFolder::create(dir.path().join("http"), false).unwrap();
    let mut reqs = hand_requests();
    reqs[0].server = Some(fuselab_core::ServerSide {
        request_id: "fuselab-1a-0".into(),
        prompt_tokens: Some(512),
        completion_tokens: Some(3),
        cached_tokens: Some(128),
        prompt_exact: true,
    });
    reqs[1].server = Some(fuselab_core::ServerSide {
        request_id: "fuselab-1a-3".into(),
        ..Default::default()
    });
    run.write_all(&summary("http"), &reqs, &[]).unwrap();
    assert_eq!(run.read_requests().unwrap(), reqs);
    let samples = vec![
        fuselab_core::ServerMetricSample {
            t: 0.5,
            name: "vllm:num_requests_running".into(),
            labels: "model_name=\"m\"".into(),
            value: 3.0,
        },
        fuselab_core::ServerMetricSample {
            t: 1.5,
            name: "vllm:kv_cache_usage_perc".into(),
            labels: String::new(),
            value: 0.25,
        },
    ];
    assert!(run.read_server_metrics().unwrap().is_empty());
    run.write_server_metrics(&samples).unwrap();
    assert_eq!(run.read_server_metrics().unwrap(), samples);
}
