//! Runs the `fuselab kernels` benchmark without the CLI crate:
//! `kernels_bench [--device cuda|cpu] [--quick] [--baseline FILE] [--only KERNEL] [--json FILE] [--markdown FILE]`.

use std::process::ExitCode;

use fuselab_kernels::cuda::bench::{Baseline, BenchOptions, run_cpu, run_cuda};

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some correctness checks failed");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut device = "cuda".to_string();
    let mut opts = BenchOptions {
        seed: 2026,
        ..Default::default()
    };
    let (mut json, mut md) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--device" => device = value("--device")?,
            "--quick" => opts.quick = true,
            "--baseline" => {
                let path = value("--baseline")?;
                let text =
                    std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))?;
                opts.baseline = Baseline::parse(&text).map_err(|e| e.to_string())?;
            }
            "--only" => opts.only = Some(value("--only")?),
            "--json" => json = Some(value("--json")?),
            "--markdown" => md = Some(value("--markdown")?),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let report = match device.as_str() {
        "cuda" => run_cuda(&opts),
        "cpu" => run_cpu(&opts),
        other => return Err(format!("--device must be cuda or cpu, got `{other}`")),
    }
    .map_err(|e| e.to_string())?;
    let table = report.markdown();
    println!("{table}");
    let command = format!("kernels_bench {}", args.join(" "));
    if let Some(p) = json {
        std::fs::write(
            &p,
            report.json(&command, &fuselab_kernels::cuda::bench::utc_now()),
        )
        .map_err(|e| format!("writing {p}: {e}"))?;
    }
    if let Some(p) = md {
        std::fs::write(&p, &table).map_err(|e| format!("writing {p}: {e}"))?;
    }
    Ok(report.all_checks_passed())
}
