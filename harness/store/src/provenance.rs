//! Provenance helpers for `summary.json`: host CPU and git commit.

/// The host CPU's model name from `/proc/cpuinfo` (`model name`, or
/// `Hardware`/`Processor` on some ARM kernels), falling back to the target
/// architecture (`x86_64`, `aarch64`, …) where that file is absent.
pub fn host_cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| cpu_model(&text))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Hardware", "Processor", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
            })
        })
}

/// The git commit the binary was built from: the `FUSELAB_GIT_COMMIT`
/// environment variable at build time (CI and release scripts set it), or
/// `None` when it was not set.
pub fn git_commit() -> Option<String> {
    option_env!("FUSELAB_GIT_COMMIT")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo_model() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t: fpu\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) Platinum 8480+")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\nHardware\t: BCM2835\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("BCM2835"));
        assert_eq!(cpu_model("processor\t: 0\nmodel name\t:   \n"), None);
        assert!(!host_cpu().is_empty());
    }
}
