//! Hardware profiles (model shapes are `fuselab_engine::ModelShape`).
//!
//! Peaks are the vendors' *dense* bf16 tensor-core figures (the datasheets
//! print the 2:4-sparsity figure, twice as large, next to them; research/engine.md
//! §d.1 warns about tools that use the sparse one). Memory is what `nvidia-smi`
//! reports as total.

use fuselab_core::Error;

/// A GPU as the cost model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hardware {
    /// Profile name used on the command line.
    pub name: &'static str,
    /// Dense bf16 tensor-core peak, FLOP/s.
    pub peak_flops: f64,
    /// HBM (or GDDR) bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Device memory, bytes.
    pub memory_bytes: f64,
    /// Per-GPU, per-direction bandwidth of the link used for tensor-parallel
    /// all-reduce (NVLink, or PCIe where there is none), bytes/s.
    pub link_bw: f64,
    /// Per-direction bandwidth between host memory and the device (PCIe),
    /// bytes/s: what LoRA adapter loads travel over.
    pub host_bw: f64,
    /// Where the numbers come from.
    pub source: &'static str,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The hardware profiles.
pub const HARDWARE: [Hardware; 4] = [
    Hardware {
        name: "a100-80g",
        peak_flops: 312e12,
        mem_bw: 2.039e12,
        memory_bytes: 81920.0 * MIB,
        link_bw: 300e9,
        host_bw: 32e9,
        source: "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): BF16 312 TFLOPS dense (624 with sparsity), \
                 HBM2e 2,039 GB/s, NVLink 600 GB/s (300 GB/s per direction), \
                 PCIe Gen4 x16 64 GB/s (32 GB/s per direction)",
    },
    Hardware {
        name: "h100-sxm",
        peak_flops: 989e12,
        mem_bw: 3.35e12,
        memory_bytes: 81559.0 * MIB,
        link_bw: 450e9,
        host_bw: 64e9,
        source: "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity = 989 dense, \
                 80 GB HBM3 3.35 TB/s, NVLink 900 GB/s (450 GB/s per direction), \
                 PCIe Gen5 x16 128 GB/s (64 GB/s per direction)",
    },
    Hardware {
        name: "h200",
        peak_flops: 989e12,
        mem_bw: 4.8e12,
        memory_bytes: 143_771.0 * MIB,
        link_bw: 450e9,
        host_bw: 64e9,
        source: "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 TFLOPS with sparsity = 989 dense, \
                 141 GB HBM3e 4.8 TB/s, NVLink 900 GB/s (450 GB/s per direction), PCIe Gen5 x16 128 GB/s (64 GB/s per direction); measured here: \
                 cuBLAS bf16 GEMM 795 TFLOP/s, copy 3.94 TB/s (DESIGN.md §8)",
    },
    Hardware {
        name: "l40s",
        peak_flops: 362e12,
        mem_bw: 864e9,
        memory_bytes: 46068.0 * MIB,
        link_bw: 32e9,
        host_bw: 32e9,
        source: "NVIDIA L40S datasheet: BF16 tensor 362 TFLOPS dense (733 with sparsity), 48 GB GDDR6 864 GB/s, \
                 no NVLink: PCIe Gen4 x16 64 GB/s (32 GB/s per direction)",
    },
];

/// Looks a hardware profile up by name.
///
/// # Errors
/// An [`Error::Invalid`] for `--hardware` listing the valid names.
pub fn hardware(name: &str) -> Result<&'static Hardware, Error> {
    HARDWARE
        .iter()
        .find(|h| h.name == name.trim())
        .ok_or_else(|| {
            Error::invalid(
                "--hardware",
                format!("unknown hardware `{name}`"),
                format!(
                    "valid hardware profiles: {}",
                    HARDWARE.map(|h| h.name).join(", ")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = hardware("b200").unwrap_err().to_string();
        assert!(e.contains("a100-80g, h100-sxm, h200, l40s"), "{e}");
    }
}
