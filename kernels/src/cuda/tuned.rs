//! Configurable attention kernels: the configuration spaces of the wgmma prefill
//! kernel and the paged decode kernel, their validity rules (checked before a
//! launch), modules compiled by NVRTC per configuration, and the tuned kernels a
//! device uses in place of its defaults ([`CudaDevice::use_tuning`]).
//!
//! A configuration is compiled into a small module of its own
//! (`FUSELAB_TUNE_ONLY`: only the candidate and the split merge), so a trial
//! costs well under a second of NVRTC instead of the whole kernel source.
//!
//! * Prefill ([`PrefillConfig`]): `warpgroups` of 64 query rows each,
//!   `kv_tile` keys per K/V tile (64 or 128), `stages` cp.async stages,
//!   `min_blocks` per SM for the register cap, and `paired` (heavy and light
//!   query tiles per block) or one tile per block. The default is the
//!   hand-picked `wg128x2`: 2, 64, 2, 2, paired.
//! * Decode ([`DecodeConfig`]): `warps` (16 keys each per tile), `stages` and
//!   `splits` of the context; the default is 4 warps, 3 stages and the
//!   device's split heuristic.

#![allow(unsafe_code)]

use std::collections::BTreeMap;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaFunction, CudaSlice};
use half::bf16;

use super::ops::{DecodeLaunch, PrefillGrid, PrefillLaunch};
use super::{CudaDevice, CudaError, DecodeWorkspace, HEAD_DIM, PagedAttention};
use crate::tunable::{TuningEntry, TuningTable};

/// A configuration of the wgmma prefill attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefillConfig {
    /// Warpgroups per block (64 query rows each).
    pub warpgroups: usize,
    /// Keys per K/V tile (64 or 128).
    pub kv_tile: usize,
    /// cp.async stages of K/V tiles in shared memory.
    pub stages: usize,
    /// Blocks per SM the compiler caps registers for (`__launch_bounds__`).
    pub min_blocks: usize,
    /// Heavy and light query tiles paired per block (else one tile per block).
    pub paired: bool,
}

impl Default for PrefillConfig {
    /// The hand-picked `wg128x2`.
    fn default() -> Self {
        Self {
            warpgroups: 2,
            kv_tile: 64,
            stages: 2,
            min_blocks: 2,
            paired: true,
        }
    }
}

/// A configuration of the paged decode attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeConfig {
    /// Warps per block; each takes 16 keys of a tile of `16 · warps` keys.
    pub warps: usize,
    /// cp.async stages of K/V tiles in shared memory.
    pub stages: usize,
    /// Parts the context is split into (merged by log-sum-exp).
    pub splits: usize,
}

fn knob(config: &BTreeMap<String, i64>, name: &str) -> Result<usize, CudaError> {
    let v = *config.get(name).ok_or_else(|| {
        CudaError::invalid("config", format!("the configuration has no `{name}`"))
    })?;
    usize::try_from(v)
        .map_err(|_| CudaError::invalid("config", format!("{name} = {v} is negative")))
}

/// `bytes` of dynamic shared memory per block fit the device's opt-in limit.
fn check_shared(dev: &CudaDevice, bytes: usize) -> Result<(), CudaError> {
    let limit = dev
        .ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(CudaError::driver("reading the shared-memory limit"))?
        .max(0) as usize;
    if bytes > limit {
        return Err(CudaError::invalid(
            "config",
            format!("needs {bytes} bytes of shared memory per block, the device allows {limit}"),
        ));
    }
    Ok(())
}

impl PrefillConfig {
    /// The knob names, in the tuner's `--space` syntax with their domains.
    pub const SPACE: &'static str =
        "warpgroups=1..4,kv_tile=64|128,stages=2..4,min_blocks=1|2,paired=0|1";

    /// The configuration of `knobs` (`warpgroups`, `kv_tile`, `stages`,
    /// `min_blocks`, `paired`).
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] naming a missing or negative knob.
    pub fn from_knobs(knobs: &BTreeMap<String, i64>) -> Result<Self, CudaError> {
        Ok(Self {
            warpgroups: knob(knobs, "warpgroups")?,
            kv_tile: knob(knobs, "kv_tile")?,
            stages: knob(knobs, "stages")?,
            min_blocks: knob(knobs, "min_blocks")?,
            paired: knob(knobs, "paired")? != 0,
        })
    }

    /// The knobs of this configuration.
    pub fn knobs(&self) -> BTreeMap<String, i64> {
        BTreeMap::from([
            ("warpgroups".into(), self.warpgroups as i64),
            ("kv_tile".into(), self.kv_tile as i64),
            ("stages".into(), self.stages as i64),
            ("min_blocks".into(), self.min_blocks as i64),
            ("paired".into(), i64::from(self.paired)),
        ])
    }

    /// Query rows per block.
    pub fn rows(&self) -> usize {
        64 * self.warpgroups
    }

    /// Threads per block.
    pub fn threads(&self) -> usize {
        128 * self.warpgroups
    }

    /// Dynamic shared memory: 1024 bytes of alignment, the Q tile and
    /// `stages` K and V tiles.
    pub fn smem_bytes(&self) -> usize {
        1024 + (self.rows() * HEAD_DIM + 2 * self.stages * self.kv_tile * HEAD_DIM) * 2
    }

    /// Checks the configuration against the kernel's and the device's limits.
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] saying which limit it breaks.
    pub fn validate(&self, dev: &CudaDevice) -> Result<(), CudaError> {
        let bad = |r: String| Err(CudaError::invalid("config", r));
        if !dev.has_wgmma() {
            return bad(format!(
                "the wgmma prefill kernel needs sm_90a; this device's kernels are built for {}",
                dev.info().arch
            ));
        }
        if !(1..=4).contains(&self.warpgroups) {
            return bad(format!("warpgroups = {} is not in 1..=4", self.warpgroups));
        }
        if self.kv_tile != 64 && self.kv_tile != 128 {
            return bad(format!("kv_tile = {} is not 64 or 128", self.kv_tile));
        }
        if !(2..=4).contains(&self.stages) {
            return bad(format!("stages = {} is not in 2..=4", self.stages));
        }
        if !(1..=4).contains(&self.min_blocks) {
            return bad(format!("min_blocks = {} is not in 1..=4", self.min_blocks));
        }
        check_shared(dev, self.smem_bytes())
    }

    fn defines(&self) -> Vec<String> {
        vec![
            "FUSELAB_TUNE_ONLY=1".into(),
            "FUSELAB_TUNE_PREFILL=1".into(),
            format!("FUSELAB_PF_NWG={}", self.warpgroups),
            format!("FUSELAB_PF_BN={}", self.kv_tile),
            format!("FUSELAB_PF_ST={}", self.stages),
            format!("FUSELAB_PF_MINB={}", self.min_blocks),
        ]
    }

    /// `warpgroups=2,kv_tile=64,…`.
    pub fn label(&self) -> String {
        label(&self.knobs())
    }
}

impl DecodeConfig {
    /// The knob names, in the tuner's `--space` syntax with their domains.
    pub const SPACE: &'static str = "splits=1|2|3|4|6|8|12|16,warps=2|4|8,stages=2..6";

    /// The configuration of `knobs` (`warps`, `stages`, `splits`).
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] naming a missing or negative knob.
    pub fn from_knobs(knobs: &BTreeMap<String, i64>) -> Result<Self, CudaError> {
        Ok(Self {
            warps: knob(knobs, "warps")?,
            stages: knob(knobs, "stages")?,
            splits: knob(knobs, "splits")?,
        })
    }

    /// The knobs of this configuration.
    pub fn knobs(&self) -> BTreeMap<String, i64> {
        BTreeMap::from([
            ("warps".into(), self.warps as i64),
            ("stages".into(), self.stages as i64),
            ("splits".into(), self.splits as i64),
        ])
    }

    /// Keys per K/V tile.
    pub fn keys_per_tile(&self) -> usize {
        16 * self.warps
    }

    /// Dynamic shared memory: `stages` K and V tiles.
    pub fn smem_bytes(&self) -> usize {
        self.stages * 2 * self.keys_per_tile() * HEAD_DIM * 2
    }

    /// Checks the configuration against the kernel's and the device's limits.
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] saying which limit it breaks.
    pub fn validate(&self, dev: &CudaDevice) -> Result<(), CudaError> {
        let bad = |r: String| Err(CudaError::invalid("config", r));
        if ![1, 2, 4, 8, 16].contains(&self.warps) {
            return bad(format!("warps = {} is not 1, 2, 4, 8 or 16", self.warps));
        }
        if !(2..=8).contains(&self.stages) {
            return bad(format!("stages = {} is not in 2..=8", self.stages));
        }
        if !(1..=64).contains(&self.splits) {
            return bad(format!("splits = {} is not in 1..=64", self.splits));
        }
        check_shared(dev, self.smem_bytes())
    }

    fn defines(&self) -> Vec<String> {
        vec![
            "FUSELAB_TUNE_ONLY=1".into(),
            "FUSELAB_TUNE_DECODE=1".into(),
            format!("FUSELAB_DEC_NW={}", self.warps),
            format!("FUSELAB_DEC_ST={}", self.stages),
        ]
    }

    /// `splits=1,stages=3,warps=4`.
    pub fn label(&self) -> String {
        label(&self.knobs())
    }
}

fn label(knobs: &BTreeMap<String, i64>) -> String {
    knobs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What the compiler made of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelResources {
    /// Registers per thread.
    pub registers: usize,
    /// Local memory per thread (register spills), bytes.
    pub local_bytes: usize,
}

fn resources(f: &CudaFunction, threads: usize, smem: usize) -> Result<KernelResources, CudaError> {
    let get = |a: CUfunction_attribute, what: &str| {
        f.get_attribute(a)
            .map_err(CudaError::driver(format!("reading the kernel's {what}")))
    };
    let max_threads = get(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
        "thread limit",
    )?;
    let registers = get(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS,
        "registers",
    )?;
    if (max_threads as usize) < threads {
        return Err(CudaError::invalid(
            "config",
            format!(
                "{registers} registers per thread allow {max_threads} threads per block, the configuration needs {threads}"
            ),
        ));
    }
    f.set_attribute(
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
        smem as i32,
    )
    .map_err(CudaError::driver("raising a kernel's shared-memory limit"))?;
    Ok(KernelResources {
        registers: registers.max(0) as usize,
        local_bytes: get(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
            "local memory",
        )?
        .max(0) as usize,
    })
}

/// A prefill configuration compiled for a device.
#[derive(Debug)]
pub struct CompiledPrefill {
    /// The configuration.
    pub config: PrefillConfig,
    /// What the compiler made of it (the paired entry; the unpaired one is alike).
    pub resources: KernelResources,
    paired: CudaFunction,
    unpaired: CudaFunction,
}

impl CompiledPrefill {
    /// The same module with the other grid (pairing is a launch choice).
    pub(crate) fn with_pairing(&self, paired: bool) -> Self {
        Self {
            config: PrefillConfig {
                paired,
                ..self.config
            },
            resources: self.resources,
            paired: self.paired.clone(),
            unpaired: self.unpaired.clone(),
        }
    }
}

/// A decode configuration compiled for a device.
#[derive(Debug)]
pub struct CompiledDecode {
    /// The configuration.
    pub config: DecodeConfig,
    /// What the compiler made of it.
    pub resources: KernelResources,
    func: CudaFunction,
}

/// A tuned kernel and the shapes it applies to.
#[derive(Debug)]
struct Tuned<K> {
    /// Prefill: the step's longest new-token count; decode: the batch.
    range: (usize, usize),
    kernel: K,
}

/// What [`CudaDevice::use_tuning`] did with a table's entries, a line each.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TuningApplied {
    /// Entries now used, with their configuration and bucket.
    pub applied: Vec<String>,
    /// Entries of other devices, drivers or kernels, with the reason.
    pub skipped: Vec<String>,
}

/// The tuned kernels of a device ([`CudaDevice::use_tuning`]).
#[derive(Debug, Default)]
pub(crate) struct TunedKernels {
    prefill: Vec<Tuned<CompiledPrefill>>,
    decode: Vec<Tuned<CompiledDecode>>,
}

impl CudaDevice {
    /// Checks `config` and compiles it (NVRTC; no cache: see the tuning
    /// evaluator, which keeps one module per configuration).
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] for a configuration outside the kernel's
    /// or the device's limits (shared memory, registers), [`CudaError::Compile`]
    /// when NVRTC refuses it.
    pub fn compile_prefill(&self, config: &PrefillConfig) -> Result<CompiledPrefill, CudaError> {
        config.validate(self)?;
        let module =
            super::device::compile_module(&self.ctx, &self.info().arch, &config.defines())?;
        let load = |name: &str| {
            module
                .load_function(name)
                .map_err(CudaError::driver(format!("loading kernel `{name}`")))
        };
        let (paired, unpaired) = (load("flash_prefill_tuned")?, load("flash_prefill_tuned_u")?);
        let res = resources(&paired, config.threads(), config.smem_bytes())?;
        resources(&unpaired, config.threads(), config.smem_bytes())?;
        Ok(CompiledPrefill {
            config: *config,
            resources: res,
            paired,
            unpaired,
        })
    }

    /// Checks `config` and compiles it.
    ///
    /// # Errors
    /// As [`Self::compile_prefill`].
    pub fn compile_decode(&self, config: &DecodeConfig) -> Result<CompiledDecode, CudaError> {
        config.validate(self)?;
        let module =
            super::device::compile_module(&self.ctx, &self.info().arch, &config.defines())?;
        let func = module
            .load_function("paged_decode_tuned")
            .map_err(CudaError::driver("loading kernel `paged_decode_tuned`"))?;
        let res = resources(&func, 32 * config.warps, config.smem_bytes())?;
        Ok(CompiledDecode {
            config: *config,
            resources: res,
            func,
        })
    }

    /// [`Self::prefill_attention`] on the compiled configuration `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn prefill_attention_compiled(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        cu_q: &CudaSlice<i32>,
        total_tokens: usize,
        max_q_len: usize,
        k: &CompiledPrefill,
    ) -> Result<(), CudaError> {
        let shift = p.validate(k_cache, v_cache)?;
        let c = &k.config;
        let launch = PrefillLaunch {
            func: if c.paired { &k.paired } else { &k.unpaired },
            rows: c.rows(),
            threads: c.threads(),
            smem_bytes: c.smem_bytes(),
            grid: if c.paired {
                PrefillGrid::Paired
            } else {
                PrefillGrid::Unpaired
            },
        };
        self.prefill_launch(
            p,
            shift,
            q,
            k_cache,
            v_cache,
            out,
            cu_q,
            total_tokens,
            max_q_len,
            &launch,
        )
    }

    /// Paged decode attention on the compiled configuration `k` with `splits`
    /// parts of the batch's longest context `max_ctx`; returns the split count
    /// used (fewer where the context has fewer tiles).
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention_compiled(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        ws: &mut DecodeWorkspace,
        max_ctx: usize,
        k: &CompiledDecode,
        splits: usize,
    ) -> Result<usize, CudaError> {
        let shift = p.validate(k_cache, v_cache)?;
        if splits == 0 {
            return Err(CudaError::invalid("splits", "must be at least 1"));
        }
        let launch = decode_launch_of(k);
        let kt = launch.keys_per_tile;
        let split_len = max_ctx.max(1).div_ceil(splits).div_ceil(kt) * kt;
        let splits = max_ctx.max(1).div_ceil(split_len);
        self.decode_launch(
            p, q, k_cache, v_cache, out, ws, shift, splits, split_len, &launch,
        )?;
        Ok(splits)
    }

    /// The decode kernel for a batch of `batch` sequences: the tuned one whose
    /// batch range holds it, else the built-in one.
    pub(crate) fn decode_kernel(&self, batch: usize) -> DecodeLaunch<'_> {
        match self.tuned_decode(batch) {
            Some(k) => decode_launch_of(k),
            None => DecodeLaunch {
                func: &self.k.paged_decode,
                threads: 128,
                smem_bytes: super::ops::DECODE_SMEM_BYTES,
                keys_per_tile: super::ops::KV_TILE,
            },
        }
    }

    /// The tuned prefill kernel for steps whose longest new-token count is `max_q_len`.
    pub fn tuned_prefill(&self, max_q_len: usize) -> Option<&CompiledPrefill> {
        self.tuned
            .prefill
            .iter()
            .find(|t| (t.range.0..=t.range.1).contains(&max_q_len))
            .map(|t| &t.kernel)
    }

    /// The tuned decode kernel for a batch of `batch` sequences.
    pub fn tuned_decode(&self, batch: usize) -> Option<&CompiledDecode> {
        self.tuned
            .decode
            .iter()
            .find(|t| (t.range.0..=t.range.1).contains(&batch))
            .map(|t| &t.kernel)
    }

    /// Compiles the CUDA entries of `table` measured on this GPU and driver and
    /// uses them in place of the defaults for the shapes of their buckets
    /// ([`TuningEntry::bucket`]); entries of other devices or drivers are
    /// skipped. Returns a line per entry: what was applied, or why not.
    ///
    /// # Errors
    /// [`CudaError::InvalidArgument`] for an entry of this device whose
    /// configuration is malformed or outside the limits; a compile error.
    pub fn use_tuning(&mut self, table: &TuningTable) -> Result<TuningApplied, CudaError> {
        let name = self.info().name.clone();
        let driver = self.info().driver_release.clone();
        let mut done = TuningApplied::default();
        for e in &table.entries {
            if e.device != name {
                done.skipped.push(format!(
                    "{}: skipped (measured on {}, this is {name})",
                    e.kernel, e.device
                ));
                continue;
            }
            if e.driver.is_some() && e.driver != driver {
                done.skipped.push(format!(
                    "{}: skipped (driver {} in the table, {} here)",
                    e.kernel,
                    e.driver.as_deref().unwrap_or("?"),
                    driver.as_deref().unwrap_or("unknown")
                ));
                continue;
            }
            let range = bucket_range(e);
            match e.kernel.as_str() {
                "prefill_attention" => {
                    let k = self.compile_prefill(&PrefillConfig::from_knobs(&e.config)?)?;
                    done.applied.push(format!(
                        "prefill_attention: {} for longest chunks of {}..={} tokens",
                        k.config.label(),
                        range.0,
                        range.1
                    ));
                    self.tuned.prefill.push(Tuned { range, kernel: k });
                }
                "decode_attention" => {
                    let k = self.compile_decode(&DecodeConfig::from_knobs(&e.config)?)?;
                    done.applied.push(format!(
                        "decode_attention: {} for batches of {}..={}",
                        k.config.label(),
                        range.0,
                        range.1
                    ));
                    self.tuned.decode.push(Tuned { range, kernel: k });
                }
                other => done.skipped.push(format!(
                    "{other}: skipped (not a CUDA kernel with a tuned form)"
                )),
            }
        }
        Ok(done)
    }
}

/// An entry's bucket as an inclusive range (every shape without one).
fn bucket_range(e: &TuningEntry) -> (usize, usize) {
    e.bucket
        .as_ref()
        .map_or((0, usize::MAX), |b| (b.min, b.max))
}

fn decode_launch_of(k: &CompiledDecode) -> DecodeLaunch<'_> {
    DecodeLaunch {
        func: &k.func,
        threads: 32 * k.config.warps,
        smem_bytes: k.config.smem_bytes(),
        keys_per_tile: k.config.keys_per_tile(),
    }
}
