//! Launch wrappers: argument checks, grid shapes and the cuBLAS GEMM.
#![allow(unsafe_code)]

use cudarc::cublas::{Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::{CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use half::bf16;
use std::sync::Arc;

use super::launch::KernelArgs;
use super::{CudaDevice, CudaError, HEAD_DIM};

/// Keys per attention tile (as `KV_TILE` in the CUDA source).
pub(crate) const KV_TILE: usize = 64;
/// Pipeline stages of the decode kernel (`DEC_STAGES`).
const DEC_STAGES: usize = 3;
/// Dynamic shared memory of the decode kernel: K and V tiles per stage.
pub(crate) const DECODE_SMEM_BYTES: usize = DEC_STAGES * 2 * KV_TILE * HEAD_DIM * 2;

/// The split prefill's partials, their log-sum-exps and one ticket per grid tile
/// (zero between calls: the last block of each tile resets its own).
pub(crate) struct SplitWorkspace {
    o: CudaSlice<f32>,
    lse: CudaSlice<f32>,
    tickets: CudaSlice<i32>,
}

/// How a prefill kernel's grid covers the query tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PrefillGrid {
    /// Block x takes the heavy tile n − 1 − x and then the light tile x.
    Paired,
    /// One block per tile, heaviest first.
    Unpaired,
    /// About two blocks per SM taking tiles from an atomic counter.
    Persistent,
    /// One block per (tile, part of its keys), heaviest tile first; partials merged.
    Split(usize),
}

/// Most parts [`CudaDevice::prefill_splits`] cuts a query tile's keys into.
pub const PREFILL_MAX_SPLITS: usize = 8;
/// Fewest keys per part worth a block of its own (as `SPLIT_MIN_TILES` in the source).
pub const PREFILL_SPLIT_MIN_KEYS: usize = 4 * KV_TILE;
/// f32 elements of the split prefill's output partials that the default tile choice
/// keeps within (64 MiB; a tile named explicitly allocates what it needs).
const PREFILL_SPLIT_WS_FLOATS: usize = 16 << 20;

/// A prefill attention kernel and its geometry.
pub(crate) struct PrefillLaunch<'a> {
    pub(crate) func: &'a cudarc::driver::CudaFunction,
    pub(crate) rows: usize,
    pub(crate) threads: usize,
    pub(crate) smem_bytes: usize,
    pub(crate) grid: PrefillGrid,
}

/// A paged decode kernel and its geometry.
pub(crate) struct DecodeLaunch<'a> {
    pub(crate) func: &'a cudarc::driver::CudaFunction,
    pub(crate) threads: usize,
    pub(crate) smem_bytes: usize,
    pub(crate) keys_per_tile: usize,
}

/// Tile shape of the prefill attention kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefillTile {
    /// 64 query rows per block: 4 warps of 16 rows.
    Rows64,
    /// 128 query rows per block: 4 warps of 32 rows (two m16 tiles each).
    Rows128,
    /// 128 query rows per block: 8 warps of 16 rows.
    Rows128W8,
    /// As [`PrefillTile::Rows128`], in a persistent grid of two blocks per SM taking
    /// tiles heaviest-first from an atomic counter.
    Rows128Persistent,
    /// 256 query rows per block: 8 warps of 32 rows (two m16 tiles each).
    Rows256,
    /// As [`PrefillTile::Rows256`], with three K/V stages in shared memory.
    Rows256Stages3,
    /// 128 query rows on two warpgroups with Hopper's `wgmma` (sm_90a only).
    Wgmma128,
    /// As [`PrefillTile::Wgmma128`], registers capped for two blocks per SM.
    Wgmma128Occ2,
    /// As [`PrefillTile::Wgmma128Occ2`], one block per query tile (no pairing of
    /// heavy and light tiles): twice the blocks, for chunks after a long prefix.
    Wgmma128Occ2Unpaired,
    /// As [`PrefillTile::Wgmma128Occ2Unpaired`] with each query tile's keys cut into
    /// parts, one block each, merged by log-sum-exp (as Flash-Decoding): for chunks
    /// after a long prefix whose unpaired grid still leaves SMs idle. At least two
    /// parts when asked for by name ([`CudaDevice::prefill_splits`]).
    Wgmma128Occ2Split,
    /// As [`PrefillTile::Wgmma128`] with K/V tiles of 128 keys.
    Wgmma128Keys128,
    /// 192 query rows on three warpgroups (`wgmma`).
    Wgmma192,
    /// As [`PrefillTile::Wgmma128`] with each warpgroup's softmax overlapped with its
    /// tensor-core work (FlashAttention-3's intra-warpgroup pipelining): K/V tiles of
    /// 128 keys in three stages.
    Wgmma128Pipelined,
    /// As [`PrefillTile::Wgmma128Pipelined`] with K/V tiles of 64 keys in four stages.
    Wgmma128PipelinedKeys64,
    /// As [`PrefillTile::Wgmma192`], pipelined, K/V tiles of 64 keys in three stages.
    Wgmma192Pipelined,
    /// As [`PrefillTile::Wgmma128PipelinedKeys64`] with a third, producer warpgroup
    /// that loads the K/V tiles into four stages handed over by mbarriers
    /// (FlashAttention-3's warp specialisation; no block-wide barrier per tile).
    Wgmma128WarpSpecialized,
    /// As [`PrefillTile::Wgmma128WarpSpecialized`] with K/V tiles of 128 keys in three
    /// stages; the producer gives most of its registers to the consumers (`setmaxnreg`).
    Wgmma128WarpSpecializedKeys128,
    /// As [`PrefillTile::Wgmma128WarpSpecializedKeys128`] with the two consumer
    /// warpgroups taking turns on the tensor cores, so one's softmax runs under the
    /// other's GEMMs (FlashAttention-3's ping-pong schedule). One block per SM.
    Wgmma128PingPong,
    /// As [`PrefillTile::Wgmma128PingPong`] with one block per query tile, heaviest
    /// first (no pairing of heavy and light tiles): for chunks after a long prefix.
    Wgmma128PingPongUnpaired,
    /// As [`PrefillTile::Wgmma128PingPong`] with K/V tiles of 64 keys in four stages.
    Wgmma128PingPongKeys64,
    /// As [`PrefillTile::Wgmma128Keys128`] with the query rows held in registers as the A
    /// operand of S = Q·Kᵀ (half its shared-memory reads), K/V in three stages.
    Wgmma128QueryRegs,
    /// As [`PrefillTile::Wgmma128QueryRegs`], pipelined as [`PrefillTile::Wgmma128Pipelined`].
    Wgmma128QueryRegsPipelined,
    /// As [`PrefillTile::Wgmma128WarpSpecialized`] with the query rows in registers and the
    /// producer's registers given to the consumers.
    Wgmma128QueryRegsWarpSpecialized,
}

impl PrefillTile {
    /// Every variant, for benchmarks and checks.
    pub const ALL: [PrefillTile; 23] = [
        PrefillTile::Rows64,
        PrefillTile::Rows128,
        PrefillTile::Rows128W8,
        PrefillTile::Rows128Persistent,
        PrefillTile::Rows256,
        PrefillTile::Rows256Stages3,
        PrefillTile::Wgmma128,
        PrefillTile::Wgmma128Occ2,
        PrefillTile::Wgmma128Occ2Unpaired,
        PrefillTile::Wgmma128Occ2Split,
        PrefillTile::Wgmma128Keys128,
        PrefillTile::Wgmma192,
        PrefillTile::Wgmma128Pipelined,
        PrefillTile::Wgmma128PipelinedKeys64,
        PrefillTile::Wgmma192Pipelined,
        PrefillTile::Wgmma128WarpSpecialized,
        PrefillTile::Wgmma128WarpSpecializedKeys128,
        PrefillTile::Wgmma128PingPong,
        PrefillTile::Wgmma128PingPongUnpaired,
        PrefillTile::Wgmma128PingPongKeys64,
        PrefillTile::Wgmma128QueryRegs,
        PrefillTile::Wgmma128QueryRegsPipelined,
        PrefillTile::Wgmma128QueryRegsWarpSpecialized,
    ];

    /// Whether the tile runs on Hopper's `wgmma` (a device compiled for `sm_90a`).
    pub const fn needs_sm90a(self) -> bool {
        !matches!(
            self,
            PrefillTile::Rows64
                | PrefillTile::Rows128
                | PrefillTile::Rows128W8
                | PrefillTile::Rows128Persistent
                | PrefillTile::Rows256
                | PrefillTile::Rows256Stages3
        )
    }

    /// Query rows per block.
    pub const fn rows(self) -> usize {
        match self {
            PrefillTile::Rows64 => 64,
            PrefillTile::Rows256 | PrefillTile::Rows256Stages3 => 256,
            PrefillTile::Wgmma192 | PrefillTile::Wgmma192Pipelined => 192,
            _ => 128,
        }
    }

    /// Threads per block.
    pub const fn threads(self) -> usize {
        match self {
            PrefillTile::Rows64 | PrefillTile::Rows128 | PrefillTile::Rows128Persistent => 128,
            PrefillTile::Wgmma192
            | PrefillTile::Wgmma192Pipelined
            | PrefillTile::Wgmma128WarpSpecialized
            | PrefillTile::Wgmma128WarpSpecializedKeys128
            | PrefillTile::Wgmma128PingPong
            | PrefillTile::Wgmma128PingPongUnpaired
            | PrefillTile::Wgmma128PingPongKeys64
            | PrefillTile::Wgmma128QueryRegsWarpSpecialized => 384,
            _ => 256,
        }
    }

    /// The kernel of a tile in the experimental module (compiled on first use, see
    /// `CudaDevice::experimental_prefill`), or `None` for the tiles of the main module.
    pub(crate) const fn experimental_kernel(self) -> Option<&'static str> {
        Some(match self {
            PrefillTile::Wgmma128Pipelined => "flash_prefill_wg128p",
            PrefillTile::Wgmma128PipelinedKeys64 => "flash_prefill_wg128p64",
            PrefillTile::Wgmma192Pipelined => "flash_prefill_wg192p",
            PrefillTile::Wgmma128WarpSpecialized => "flash_prefill_wg128ws",
            PrefillTile::Wgmma128WarpSpecializedKeys128 => "flash_prefill_wg128wsn",
            PrefillTile::Wgmma128PingPongKeys64 => "flash_prefill_wg128pp64",
            PrefillTile::Wgmma128QueryRegs => "flash_prefill_wg128q",
            PrefillTile::Wgmma128QueryRegsPipelined => "flash_prefill_wg128qp",
            PrefillTile::Wgmma128QueryRegsWarpSpecialized => "flash_prefill_wg128qws",
            _ => return None,
        })
    }

    /// Whether one warpgroup of the block only loads K/V (a producer) and computes no rows.
    pub const fn warp_specialized(self) -> bool {
        matches!(
            self,
            PrefillTile::Wgmma128WarpSpecialized
                | PrefillTile::Wgmma128WarpSpecializedKeys128
                | PrefillTile::Wgmma128PingPong
                | PrefillTile::Wgmma128PingPongUnpaired
                | PrefillTile::Wgmma128PingPongKeys64
                | PrefillTile::Wgmma128QueryRegsWarpSpecialized
        )
    }

    /// K/V stages in shared memory.
    const fn stages(self) -> usize {
        match self {
            PrefillTile::Rows256Stages3
            | PrefillTile::Wgmma128Pipelined
            | PrefillTile::Wgmma192Pipelined
            | PrefillTile::Wgmma128WarpSpecializedKeys128
            | PrefillTile::Wgmma128PingPong
            | PrefillTile::Wgmma128PingPongUnpaired
            | PrefillTile::Wgmma128QueryRegs
            | PrefillTile::Wgmma128QueryRegsPipelined => 3,
            PrefillTile::Wgmma128PipelinedKeys64
            | PrefillTile::Wgmma128WarpSpecialized
            | PrefillTile::Wgmma128PingPongKeys64
            | PrefillTile::Wgmma128QueryRegsWarpSpecialized => 4,
            _ => 2,
        }
    }

    /// Keys per K/V tile.
    const fn kv_tile(self) -> usize {
        match self {
            PrefillTile::Wgmma128Keys128
            | PrefillTile::Wgmma128Pipelined
            | PrefillTile::Wgmma128WarpSpecializedKeys128
            | PrefillTile::Wgmma128PingPong
            | PrefillTile::Wgmma128PingPongUnpaired
            | PrefillTile::Wgmma128QueryRegs
            | PrefillTile::Wgmma128QueryRegsPipelined => 128,
            _ => KV_TILE,
        }
    }

    /// Dynamic shared memory: the Q tile and `stages` K and V tiles (the wgmma
    /// tiles align their swizzled tiles to 1024 bytes inside the buffer).
    pub(crate) const fn smem_bytes(self) -> usize {
        let align = if self.needs_sm90a() { 1024 } else { 0 };
        let q_rows = match self {
            PrefillTile::Wgmma128QueryRegs
            | PrefillTile::Wgmma128QueryRegsPipelined
            | PrefillTile::Wgmma128QueryRegsWarpSpecialized => 0,
            _ => self.rows(),
        };
        (q_rows * HEAD_DIM + 2 * self.stages() * self.kv_tile() * HEAD_DIM) * 2 + align
    }

    /// The tile whose [`Self::label`] is `label`.
    pub fn from_label(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.label() == label)
    }

    /// Short label, e.g. `r128`.
    pub fn label(self) -> &'static str {
        match self {
            PrefillTile::Rows64 => "r64",
            PrefillTile::Rows128 => "r128",
            PrefillTile::Rows128W8 => "r128w8",
            PrefillTile::Rows128Persistent => "r128p",
            PrefillTile::Rows256 => "r256",
            PrefillTile::Rows256Stages3 => "r256s3",
            PrefillTile::Wgmma128 => "wg128",
            PrefillTile::Wgmma128Occ2 => "wg128x2",
            PrefillTile::Wgmma128Occ2Unpaired => "wg128x2u",
            PrefillTile::Wgmma128Occ2Split => "wg128x2s",
            PrefillTile::Wgmma128Keys128 => "wg128n",
            PrefillTile::Wgmma192 => "wg192",
            PrefillTile::Wgmma128Pipelined => "wg128p",
            PrefillTile::Wgmma128PipelinedKeys64 => "wg128p64",
            PrefillTile::Wgmma192Pipelined => "wg192p",
            PrefillTile::Wgmma128WarpSpecialized => "wg128ws",
            PrefillTile::Wgmma128WarpSpecializedKeys128 => "wg128wsn",
            PrefillTile::Wgmma128PingPong => "wg128pp",
            PrefillTile::Wgmma128PingPongUnpaired => "wg128ppu",
            PrefillTile::Wgmma128PingPongKeys64 => "wg128pp64",
            PrefillTile::Wgmma128QueryRegs => "wg128q",
            PrefillTile::Wgmma128QueryRegsPipelined => "wg128qp",
            PrefillTile::Wgmma128QueryRegsWarpSpecialized => "wg128qws",
        }
    }
}

/// The tile shape [`CudaDevice::prefill_attention`] uses without `wgmma`, below
/// [`LARGE_PREFILL_MIN_Q_LEN`] query rows (fastest of the 128-row tiles on the H200).
pub const DEFAULT_PREFILL_TILE: PrefillTile = PrefillTile::Rows128;

/// The tile shape [`CudaDevice::prefill_attention`] uses from [`LARGE_PREFILL_MIN_Q_LEN`]
/// query rows on (H200, causal 8k: 309–311 TFLOP/s against r128's 289–293).
pub const LARGE_PREFILL_TILE: PrefillTile = PrefillTile::Rows256;

/// The tile [`CudaDevice::prefill_attention`] uses on Hopper (`sm_90a`) for calls whose
/// paired grid fills the SMs (full prompts): H200, causal 2k / 8k / 16k / ragged 3 × 2560
/// at 406 / 485 / 495 / 409 TFLOP/s against wg128x2's 355 / 413 / 415 / 354 in the
/// same command (reports/results/h200/kernels_prefill_tiles.txt).
pub const WGMMA_PREFILL_TILE: PrefillTile = PrefillTile::Wgmma128PingPong;

/// Speed of one [`WGMMA_PREFILL_TILE`] block per SM over two `wg128x2` blocks per SM at
/// the same work, for the choice between the unpaired ping-pong tile and the split one
/// (H200: 1.14 / 1.17 / 1.19× at causal 2k / 8k / 16k; the lowest, rounded down).
const PING_PONG_OVER_OCC2: f64 = 1.1;

/// The longest sequence's new tokens from which [`LARGE_PREFILL_TILE`] is used (it was
/// measured faster from 2k causal up; below, most of its 256-row blocks would be padding).
pub const LARGE_PREFILL_MIN_Q_LEN: usize = 2048;

impl PrefillTile {
    /// The tile [`CudaDevice::prefill_attention`] uses when the longest sequence has
    /// `max_q_len` new tokens.
    pub const fn for_max_q_len(max_q_len: usize) -> PrefillTile {
        if max_q_len >= LARGE_PREFILL_MIN_Q_LEN {
            LARGE_PREFILL_TILE
        } else {
            DEFAULT_PREFILL_TILE
        }
    }
}

/// Shape and index buffers shared by the paged attention kernels.
#[derive(Clone, Copy, Debug)]
pub struct PagedAttention<'a> {
    /// Sequences in the batch.
    pub batch: usize,
    /// Query heads.
    pub num_q_heads: usize,
    /// KV heads (`num_q_heads` must be a multiple).
    pub num_kv_heads: usize,
    /// Tokens per cache block (a power of two).
    pub block_size: usize,
    /// Columns of the block table (blocks per sequence at most).
    pub max_blocks_per_seq: usize,
    /// Per sequence: keys to attend, i.e. the positions written into the cache
    /// so far, including this call's new tokens (`[batch]`).
    pub ctx_lens: &'a CudaSlice<i32>,
    /// Block ids per sequence (`[batch, max_blocks_per_seq]`); the caller
    /// guarantees that every id below `ceil(ctx_len / block_size)` is a valid block.
    pub block_tables: &'a CudaSlice<i32>,
    /// Softmax scale, usually `1/sqrt(128)`.
    pub scale: f32,
}

impl PagedAttention<'_> {
    pub(crate) fn validate(
        &self,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
    ) -> Result<u32, CudaError> {
        if self.batch == 0 {
            return Err(CudaError::invalid("batch", "must be at least 1"));
        }
        if self.num_kv_heads == 0 || !self.num_q_heads.is_multiple_of(self.num_kv_heads) {
            return Err(CudaError::invalid(
                "num_kv_heads",
                format!(
                    "{} query heads are not a positive multiple of {} kv heads",
                    self.num_q_heads, self.num_kv_heads
                ),
            ));
        }
        if !self.block_size.is_power_of_two() {
            return Err(CudaError::invalid(
                "block_size",
                format!(
                    "{} is not a power of two; use 16, 32 or 64",
                    self.block_size
                ),
            ));
        }
        let row = self.block_size * self.num_kv_heads * HEAD_DIM;
        for (name, c) in [("k_cache", k_cache), ("v_cache", v_cache)] {
            if !c.len().is_multiple_of(row) || c.is_empty() {
                return Err(CudaError::invalid(
                    name,
                    format!(
                        "{} elements is not a whole number of blocks of {} (block_size × kv heads × {HEAD_DIM})",
                        c.len(),
                        row
                    ),
                ));
            }
        }
        check_len("ctx_lens", self.ctx_lens.len(), self.batch)?;
        check_len(
            "block_tables",
            self.block_tables.len(),
            self.batch * self.max_blocks_per_seq,
        )?;
        Ok(self.block_size.trailing_zeros())
    }
}

/// The tile [`CudaDevice::default_prefill_tile`] takes on Hopper for `batch` sequences of
/// up to `max_q_len` new tokens after up to `max_ctx` keys over `heads` query heads, on
/// `sm_count` SMs: [`WGMMA_PREFILL_TILE`] where its paired grid gives every SM a block;
/// else whichever of the unpaired ping-pong tile (one block per SM) and the split
/// `wg128x2s` (two per SM, keys cut by [`split_count`]) takes fewer waves of equal work,
/// the former [`PING_PONG_OVER_OCC2`] times as fast per SM.
fn hopper_prefill_tile(
    max_q_len: usize,
    max_ctx: usize,
    batch: usize,
    heads: usize,
    sm_count: usize,
) -> PrefillTile {
    let q_tiles = max_q_len.div_ceil(WGMMA_PREFILL_TILE.rows());
    let tiles = q_tiles * batch * heads;
    let sm_count = sm_count.max(1);
    if q_tiles.div_ceil(2) * batch * heads >= sm_count {
        return WGMMA_PREFILL_TILE;
    }
    let parts = split_count(
        tiles,
        2 * sm_count,
        max_ctx,
        max_q_len * batch * heads * HEAD_DIM,
    );
    // In the time of one block's full tile on an SM running two wg128x2s blocks.
    let split_time = 2.0 * (tiles * parts).div_ceil(2 * sm_count) as f64 / parts as f64;
    let unpaired_time = tiles.div_ceil(sm_count) as f64 / PING_PONG_OVER_OCC2;
    if parts > 1 && split_time < unpaired_time {
        PrefillTile::Wgmma128Occ2Split
    } else {
        PrefillTile::Wgmma128PingPongUnpaired
    }
}

/// [`CudaDevice::prefill_splits`] for `blocks` unsplit blocks on `slots` resident
/// blocks, `max_ctx` keys and `partial_floats` f32 values per part: the fewest parts
/// with the least `waves / parts`.
fn split_count(blocks: usize, slots: usize, max_ctx: usize, partial_floats: usize) -> usize {
    let (blocks, slots) = (blocks.max(1), slots.max(1));
    let by_keys = (max_ctx / PREFILL_SPLIT_MIN_KEYS).max(1);
    let by_workspace = (PREFILL_SPLIT_WS_FLOATS / partial_floats.max(1)).max(1);
    let cap = PREFILL_MAX_SPLITS.min(by_keys).min(by_workspace);
    let cost = |s: usize| (blocks * s).div_ceil(slots) as f64 / s as f64;
    (1..=cap)
        .min_by(|&a, &b| cost(a).total_cmp(&cost(b)).then(a.cmp(&b)))
        .unwrap_or(1)
}

/// Rows up to which [`CudaDevice::gemm`] and [`CudaDevice::gemm_acc`] take the skinny
/// path (decode steps) where it is enabled.
pub const SKINNY_MAX_TOKENS: usize = 64;
/// k splits of the skinny GEMM's clusters, one kernel each (`skinny_gemm_c{1,2,4,8}`).
pub const SKINNY_SPLITS: [usize; 4] = [1, 2, 4, 8];
/// Shared memory of one skinny-GEMM stage: 128 w rows and 64 x rows of 64 bf16
/// (`SKN_STAGE`).
const SKINNY_STAGE_BYTES: usize = (128 + 64) * 128;
/// Stages of the skinny GEMM at most; its plans take half, for two blocks per SM.
const SKINNY_STAGES: usize = 8;
/// Stages of a planned skinny block: two blocks per SM.
const SKINNY_PLAN_STAGES: usize = SKINNY_STAGES / 2;
/// Dynamic shared memory the skinny GEMM is allowed (its deepest pipeline).
pub(crate) const SKINNY_SMEM_BYTES: usize = skinny_smem_bytes(SKINNY_STAGES);

/// Dynamic shared memory of a skinny block of `stages` stages (and 1024 bytes for the
/// swizzle's alignment).
const fn skinny_smem_bytes(stages: usize) -> usize {
    stages * SKINNY_STAGE_BYTES + 1024
}

/// A TMA descriptor (`CUtensorMap`), passed to a kernel by value.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub(crate) struct TmaMap(cudarc::driver::sys::CUtensorMap);

// SAFETY: plain bytes that the kernel reads as its `TmaMap` parameter.
unsafe impl cudarc::driver::DeviceRepr for TmaMap {}

/// A 2-D TMA descriptor of a row-major bf16 matrix at `ptr` of `rows × inner`, read in
/// boxes of 64 columns × `box_rows` rows with the 128-byte swizzle; rows past the end read
/// as zeros.
fn tma_map_2d(ptr: u64, inner: usize, rows: usize, box_rows: usize) -> Result<TmaMap, CudaError> {
    use cudarc::driver::sys;
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let dims = [inner as u64, rows as u64];
    let strides = [(inner * 2) as u64];
    let boxes = [64u32, box_rows as u32];
    let steps = [1u32, 1];
    // SAFETY: every array holds the rank's entries (strides one fewer) and `map` is
    // writable; the driver only encodes (no access to `ptr`).
    unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
            2,
            ptr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            steps.as_ptr(),
            sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
            sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
            sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
        .result()
        .map_err(CudaError::driver(format!(
            "encoding a TMA descriptor of {rows}×{inner} bf16"
        )))?;
        Ok(TmaMap(map.assume_init()))
    }
}

/// How [`CudaDevice::gemm_skinny`] runs one shape: k splits per cluster and pipeline depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkinnyPlan {
    /// Blocks of a cluster, each over its share of k, summed in shared memory.
    pub splits: usize,
    /// Stages of 64-wide k chunks in flight per block.
    pub stages: usize,
}

/// Clusters of each of [`SKINNY_SPLITS`] that fit on the GPU at once with the planned
/// stages (two blocks per SM), as the driver reports them; 0 where it cannot (no
/// `sm_90a`).
pub(crate) fn skinny_cluster_capacity(
    k: &super::device::Kernels,
    stream: &Arc<CudaStream>,
    sm_count: usize,
) -> [usize; 4] {
    let mut out = [0; 4];
    for (slot, (func, splits)) in out.iter_mut().zip(k.skinny_gemm.iter().zip(SKINNY_SPLITS)) {
        let cfg = LaunchConfig {
            grid_dim: (splits as u32, (sm_count * 2) as u32, 1),
            block_dim: (SKINNY_THREADS, 1, 1),
            shared_mem_bytes: skinny_smem_bytes(SKINNY_PLAN_STAGES) as u32,
        };
        *slot = func
            .occupancy_max_active_clusters(cfg, stream)
            .map_or(0, |c| c as usize);
    }
    out
}

/// [`CudaDevice::skinny_plan`] for a GPU of `sms` SMs that holds `clusters[i]` clusters
/// of `SKINNY_SPLITS[i]` blocks at once: the most k splits whose blocks all fit in one
/// wave at two per SM, in whole 64-wide chunks.
pub fn skinny_plan_for(k: usize, n: usize, sms: usize, clusters: [usize; 4]) -> SkinnyPlan {
    let tiles = (n / 128).max(1);
    let chunks = (k / 64).max(1);
    let splits = SKINNY_SPLITS
        .iter()
        .zip(clusters)
        .rev()
        .find(|&(&splits, fit)| splits <= chunks && tiles * splits <= 2 * sms && tiles <= fit)
        .map_or(1, |(&splits, _)| splits);
    SkinnyPlan {
        splits,
        stages: SKINNY_PLAN_STAGES,
    }
}

/// Threads of a skinny block: a consumer warpgroup and a producer warp.
const SKINNY_THREADS: u32 = 160;

/// Where [`CudaDevice::gemm_ex`] writes its `[tokens, n]` result inside `y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmOut {
    /// Elements between the starts of consecutive output rows (≥ n).
    pub ld: usize,
    /// Element offset of the first output value in `y`.
    pub offset: usize,
    /// Add into `y` (β = 1) instead of overwriting it.
    pub accumulate: bool,
}

impl GemmOut {
    /// A dense `[tokens, n]` result at the start of `y`, overwritten.
    pub const fn dense(n: usize) -> Self {
        Self {
            ld: n,
            offset: 0,
            accumulate: false,
        }
    }
}

/// Scratch space of the split-KV decode: per (sequence, head, split) partial
/// outputs and log-sum-exps.
#[derive(Debug)]
pub struct DecodeWorkspace {
    o_part: CudaSlice<f32>,
    lse: CudaSlice<f32>,
}

impl DecodeWorkspace {
    /// An empty workspace; it grows on first use.
    pub fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        Self::with_rows(dev, 1)
    }

    /// Partial-output rows it holds (batch × query heads × splits); it only grows,
    /// so an unchanged count means unchanged buffers.
    pub fn rows(&self) -> usize {
        self.lse.len()
    }

    /// A workspace for `rows` partial rows (batch × query heads × splits), so
    /// that a later launch of that size does not allocate (e.g. while a CUDA
    /// graph is being captured).
    pub fn with_rows(dev: &CudaDevice, rows: usize) -> Result<Self, CudaError> {
        let o_part = dev
            .stream
            .alloc_zeros::<f32>(rows * HEAD_DIM)
            .map_err(CudaError::driver("allocating the decode workspace"))?;
        let lse = dev
            .stream
            .alloc_zeros::<f32>(rows)
            .map_err(CudaError::driver("allocating the decode workspace"))?;
        Ok(Self { o_part, lse })
    }
}

fn check_len(field: &'static str, found: usize, needed: usize) -> Result<(), CudaError> {
    if found < needed {
        return Err(CudaError::invalid(
            field,
            format!("has {found} elements but the shape needs {needed}"),
        ));
    }
    Ok(())
}

fn to_i32(field: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::invalid(field, format!("{v} does not fit in 32 bits")))
}

fn grid(n: usize, field: &'static str) -> Result<u32, CudaError> {
    u32::try_from(n.max(1))
        .map_err(|_| CudaError::invalid(field, format!("{n} blocks is too many for one launch")))
}

impl CudaDevice {
    fn launched<T>(
        &self,
        r: Result<T, cudarc::driver::DriverError>,
        name: &str,
    ) -> Result<(), CudaError> {
        r.map(|_| ())
            .map_err(CudaError::driver(format!("launching `{name}`")))
    }

    /// Launches `func` with `args`, as a programmatic dependent of the stream's previous
    /// kernel where [`Self::set_programmatic_launch`] is on; a failure names `name`.
    ///
    /// # Safety
    /// As [`KernelArgs::launch`] with programmatic launch on: the arguments are the
    /// kernel's parameters, it stays inside its buffers, and it waits for its predecessor
    /// (`griddepcontrol.wait`) before it touches memory an earlier kernel reads or writes.
    unsafe fn launch_chained(
        &self,
        args: &KernelArgs<'_>,
        func: &CudaFunction,
        cfg: LaunchConfig,
        name: &str,
    ) -> Result<(), CudaError> {
        // SAFETY: the caller's contract, as above.
        self.launched(
            unsafe { args.launch(func, cfg, self.programmatic_launch()) },
            name,
        )
    }

    /// Allocates `n` bf16 values on the device, uninitialised (zeroed).
    pub fn alloc_bf16(&self, n: usize) -> Result<CudaSlice<bf16>, CudaError> {
        self.stream
            .alloc_zeros::<bf16>(n)
            .map_err(CudaError::driver("allocating device memory"))
    }

    /// Copies host values to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(
        &self,
        host: &[T],
    ) -> Result<CudaSlice<T>, CudaError> {
        self.stream
            .clone_htod(host)
            .map_err(CudaError::driver("copying to the device"))
    }

    /// Copies a device buffer back to the host (synchronising).
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        dev: &CudaSlice<T>,
    ) -> Result<Vec<T>, CudaError> {
        self.stream
            .clone_dtoh(dev)
            .map_err(CudaError::driver("copying from the device"))
    }

    /// Fills `buf` with values uniform in `[-scale, scale)` from a counter-based hash of `seed`.
    pub fn fill_uniform(
        &self,
        buf: &mut CudaSlice<bf16>,
        seed: u64,
        scale: f32,
    ) -> Result<(), CudaError> {
        let n = buf.len() as u64;
        let cfg = LaunchConfig {
            grid_dim: (
                grid(
                    (self.info().sm_count * 16).min(buf.len().div_ceil(256)),
                    "fill",
                )?,
                1,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.fill_uniform_bf16);
        b.arg(buf).arg(&n).arg(&seed).arg(&scale);
        // SAFETY: the kernel writes `n` = buf.len() elements of `buf` and nothing else.
        self.launched(unsafe { b.launch(cfg) }, "fill_uniform_bf16")
    }

    /// Copies `src` into `dst` with a grid-stride float4 kernel (the bandwidth probe).
    pub fn copy(&self, src: &CudaSlice<bf16>, dst: &mut CudaSlice<bf16>) -> Result<(), CudaError> {
        if src.len() != dst.len() || !src.len().is_multiple_of(8) {
            return Err(CudaError::invalid(
                "dst",
                format!(
                    "copy needs equal lengths divisible by 8, got {} and {}",
                    src.len(),
                    dst.len()
                ),
            ));
        }
        let n4 = (src.len() / 8) as u64;
        let cfg = LaunchConfig {
            grid_dim: (grid(self.info().sm_count * 8, "copy")?, 1, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.copy_f4);
        b.arg(src).arg(dst).arg(&n4);
        // SAFETY: both buffers hold n4 16-byte vectors (checked above); the kernel reads and writes only those.
        self.launched(unsafe { b.launch(cfg) }, "copy_f4")
    }

    /// Reads `src` once with a grid-stride float4 kernel that writes nothing but one
    /// word per block into `sink` (the read-only bandwidth probe; `sink` needs
    /// [`Self::read_probe_blocks`] words).
    pub fn read_probe(
        &self,
        src: &CudaSlice<bf16>,
        sink: &mut CudaSlice<u32>,
    ) -> Result<(), CudaError> {
        if !src.len().is_multiple_of(8) || src.is_empty() {
            return Err(CudaError::invalid(
                "src",
                format!("{} elements is not a positive multiple of 8", src.len()),
            ));
        }
        let blocks = self.read_probe_blocks();
        check_len("sink", sink.len(), blocks)?;
        let n4 = (src.len() / 8) as u64;
        let cfg = LaunchConfig {
            grid_dim: (grid(blocks, "read_probe")?, 1, 1),
            block_dim: (512, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.read_probe_f4);
        b.arg(src).arg(sink).arg(&n4);
        // SAFETY: reads n4 16-byte vectors of `src` and XORs into sink[block] for
        // `blocks` blocks, both lengths checked above.
        self.launched(unsafe { b.launch(cfg) }, "read_probe_f4")
    }

    /// Blocks of [`Self::read_probe`]'s grid (words its sink needs).
    pub fn read_probe_blocks(&self) -> usize {
        self.info().sm_count * 8
    }

    /// `y = rmsnorm(x) · w` over rows of `hidden` values (`x`, `y`: `[tokens, hidden]`).
    pub fn rms_norm(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        hidden: usize,
        eps: f32,
    ) -> Result<(), CudaError> {
        if hidden == 0 || !hidden.is_multiple_of(8) {
            return Err(CudaError::invalid(
                "hidden",
                format!("{hidden} must be a positive multiple of 8"),
            ));
        }
        check_len("x", x.len(), tokens * hidden)?;
        check_len("y", y.len(), tokens * hidden)?;
        check_len("w", w.len(), hidden)?;
        if tokens == 0 {
            return Ok(());
        }
        let hidden_i = to_i32("hidden", hidden)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(tokens, "tokens")?, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(x).buf(w).buf_mut(y).val(&hidden_i).val(&eps);
        // SAFETY: one block per token row; buffer lengths checked above; the kernel
        // waits for its predecessor first (programmatic launch).
        unsafe { self.launch_chained(&b, &self.k.rms_norm, cfg, "rms_norm") }
    }

    /// Rotates `q` (`[tokens, hq, 128]`) and `k` (`[tokens, hkv, 128]`) in place,
    /// token `t` at position `positions[t]`, with the 64 inverse frequencies `inv_freq`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope(
        &self,
        q: &mut CudaSlice<bf16>,
        k: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        inv_freq: &CudaSlice<f32>,
        tokens: usize,
        hq: usize,
        hkv: usize,
    ) -> Result<(), CudaError> {
        check_len("q", q.len(), tokens * hq * HEAD_DIM)?;
        check_len("k", k.len(), tokens * hkv * HEAD_DIM)?;
        check_len("positions", positions.len(), tokens)?;
        check_len("inv_freq", inv_freq.len(), HEAD_DIM / 2)?;
        if tokens == 0 {
            return Ok(());
        }
        let (hq_i, hkv_i) = (to_i32("hq", hq)?, to_i32("hkv", hkv)?);
        let cfg = LaunchConfig {
            grid_dim: (grid(tokens, "tokens")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.rope);
        b.arg(q)
            .arg(k)
            .arg(positions)
            .arg(inv_freq)
            .arg(&hq_i)
            .arg(&hkv_i);
        // SAFETY: one block per token; each touches its own q/k rows, lengths checked above.
        self.launched(unsafe { b.launch(cfg) }, "rope")
    }

    /// `out[t, i] = silu(gate_up[t, i]) · gate_up[t, ffn + i]` (`gate_up`: `[tokens, 2·ffn]`).
    pub fn silu_mul(
        &self,
        gate_up: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        tokens: usize,
        ffn: usize,
    ) -> Result<(), CudaError> {
        if ffn == 0 || !ffn.is_multiple_of(8) {
            return Err(CudaError::invalid(
                "ffn",
                format!("{ffn} must be a positive multiple of 8"),
            ));
        }
        check_len("gate_up", gate_up.len(), tokens * 2 * ffn)?;
        check_len("out", out.len(), tokens * ffn)?;
        if tokens == 0 {
            return Ok(());
        }
        let (t, f) = (tokens as u64, to_i32("ffn", ffn)?);
        let blocks = (tokens * ffn / 8)
            .div_ceil(256)
            .min(self.info().sm_count * 16);
        let cfg = LaunchConfig {
            grid_dim: (grid(blocks, "tokens")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(gate_up).buf_mut(out).val(&t).val(&f);
        // SAFETY: grid-stride over tokens·ffn/8 vectors; lengths checked above; the
        // kernel waits for its predecessor first (programmatic launch).
        unsafe { self.launch_chained(&b, &self.k.silu_mul, cfg, "silu_mul") }
    }

    /// Writes `k`, `v` (`[tokens, hkv, 128]`) into the paged caches at `slots[t] =
    /// block · block_size + offset` (a negative slot skips the token).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_write(
        &self,
        k: &CudaSlice<bf16>,
        v: &CudaSlice<bf16>,
        k_cache: &mut CudaSlice<bf16>,
        v_cache: &mut CudaSlice<bf16>,
        slots: &CudaSlice<i64>,
        tokens: usize,
        hkv: usize,
    ) -> Result<(), CudaError> {
        let w = hkv * HEAD_DIM;
        check_len("k", k.len(), tokens * w)?;
        check_len("v", v.len(), tokens * w)?;
        check_len("slots", slots.len(), tokens)?;
        if !k_cache.len().is_multiple_of(w.max(1)) || v_cache.len() != k_cache.len() {
            return Err(CudaError::invalid(
                "k_cache",
                format!(
                    "caches of {} and {} elements are not whole token rows of {w}",
                    k_cache.len(),
                    v_cache.len()
                ),
            ));
        }
        if tokens == 0 {
            return Ok(());
        }
        let hkv_i = to_i32("hkv", hkv)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(tokens, "tokens")?, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.kv_write);
        b.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(slots)
            .arg(&hkv_i);
        // SAFETY: one block per token row; the caller guarantees every non-negative slot
        // is below the cache's token capacity (documented contract).
        self.launched(unsafe { b.launch(cfg) }, "kv_write")
    }

    /// The fused projection's rows `qkv` (`[tokens, (hq + 2·hkv)·128]`: q heads, then
    /// k, then v) rotated by RoPE at `positions` with the 64 `inv_freq`: the rotated q
    /// goes to `q_out` (`[tokens, hq, 128]`), the rotated k and the v into the paged
    /// caches at `slots[t] = block · block_size + offset` (negative: not written).
    /// One kernel for what [`Self::rope`] and [`Self::kv_write`] do in two.
    #[allow(clippy::too_many_arguments)]
    pub fn qkv_rope_cache(
        &self,
        qkv: &CudaSlice<bf16>,
        q_out: &mut CudaSlice<bf16>,
        k_cache: &mut CudaSlice<bf16>,
        v_cache: &mut CudaSlice<bf16>,
        positions: &CudaSlice<i32>,
        slots: &CudaSlice<i32>,
        inv_freq: &CudaSlice<f32>,
        tokens: usize,
        hq: usize,
        hkv: usize,
    ) -> Result<(), CudaError> {
        let w = hkv * HEAD_DIM;
        check_len("qkv", qkv.len(), tokens * (hq + 2 * hkv) * HEAD_DIM)?;
        check_len("q_out", q_out.len(), tokens * hq * HEAD_DIM)?;
        check_len("positions", positions.len(), tokens)?;
        check_len("slots", slots.len(), tokens)?;
        check_len("inv_freq", inv_freq.len(), HEAD_DIM / 2)?;
        if w == 0 || !k_cache.len().is_multiple_of(w) || v_cache.len() != k_cache.len() {
            return Err(CudaError::invalid(
                "k_cache",
                format!(
                    "caches of {} and {} elements are not whole token rows of {w}",
                    k_cache.len(),
                    v_cache.len()
                ),
            ));
        }
        if tokens == 0 {
            return Ok(());
        }
        let (hq_i, hkv_i) = (to_i32("hq", hq)?, to_i32("hkv", hkv)?);
        let cfg = LaunchConfig {
            grid_dim: (grid(tokens, "tokens")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(qkv)
            .buf_mut(q_out)
            .buf_mut(k_cache)
            .buf_mut(v_cache)
            .buf(positions)
            .buf(slots)
            .buf(inv_freq)
            .val(&hq_i)
            .val(&hkv_i);
        // SAFETY: one block per token row of the checked buffers; the caller guarantees
        // every non-negative slot is below the caches' token capacity (as for kv_write);
        // the kernel waits for its predecessor first (programmatic launch).
        unsafe { self.launch_chained(&b, &self.k.qkv_rope_cache, cfg, "qkv_rope_cache") }
    }

    /// Ragged causal flash attention for new tokens whose K/V are already in the cache.
    ///
    /// `q`, `out`: `[total_tokens, hq, 128]`; `cu_q`: `[batch + 1]` offsets of each
    /// sequence's new tokens; sequence `b`'s queries sit at positions
    /// `ctx_lens[b] - q_len .. ctx_lens[b]` and attend keys `0 ..= position`.
    /// The tile shape follows `max_q_len` ([`PrefillTile::for_max_q_len`]).
    #[allow(clippy::too_many_arguments)]
    pub fn prefill_attention(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        cu_q: &CudaSlice<i32>,
        total_tokens: usize,
        max_q_len: usize,
    ) -> Result<(), CudaError> {
        self.prefill_attention_with(
            p,
            q,
            k_cache,
            v_cache,
            out,
            cu_q,
            total_tokens,
            max_q_len,
            None,
        )
    }

    /// [`Self::prefill_attention_tile`] with `tile`, or without one the tuned
    /// kernel for `max_q_len` ([`Self::use_tuning`]) where there is one, else
    /// [`Self::default_prefill_tile`].
    #[allow(clippy::too_many_arguments)]
    pub fn prefill_attention_with(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        cu_q: &CudaSlice<i32>,
        total_tokens: usize,
        max_q_len: usize,
        tile: Option<PrefillTile>,
    ) -> Result<(), CudaError> {
        if tile.is_none()
            && let Some(k) = self.tuned_prefill(max_q_len)
        {
            return self.prefill_attention_compiled(
                p,
                q,
                k_cache,
                v_cache,
                out,
                cu_q,
                total_tokens,
                max_q_len,
                k,
            );
        }
        let tile = tile.unwrap_or_else(|| {
            self.default_prefill_tile(
                max_q_len,
                p.max_blocks_per_seq * p.block_size,
                p.batch,
                p.num_q_heads,
            )
        });
        self.prefill_attention_tile(
            p,
            q,
            k_cache,
            v_cache,
            out,
            cu_q,
            total_tokens,
            max_q_len,
            tile,
        )
    }

    /// The tile [`Self::prefill_attention`] uses for `batch` sequences of up to
    /// `max_q_len` new tokens after up to `max_ctx` keys in all, over `heads` query
    /// heads: where the kernels were built for `sm_90a`, [`WGMMA_PREFILL_TILE`], or,
    /// when its paired grid would leave SMs without a block, the unpaired ping-pong
    /// tile or the split `wg128x2s`, whichever fills the SMs in less time (chunks after a
    /// prefix); else [`PrefillTile::for_max_q_len`].
    pub fn default_prefill_tile(
        &self,
        max_q_len: usize,
        max_ctx: usize,
        batch: usize,
        heads: usize,
    ) -> PrefillTile {
        if !self.has_wgmma() {
            return PrefillTile::for_max_q_len(max_q_len);
        }
        hopper_prefill_tile(max_q_len, max_ctx, batch, heads, self.info().sm_count)
    }

    /// Parts the keys of each query tile are cut into for [`PrefillTile::Wgmma128Occ2Split`]
    /// at `batch` sequences of up to `max_q_len` new tokens over up to `max_ctx` keys:
    /// the fewest parts that fill the GPU's two blocks per SM in the fewest waves
    /// (1 when the unpaired grid already does, or when the parts would be shorter than
    /// [`PREFILL_SPLIT_MIN_KEYS`]); at most [`PREFILL_MAX_SPLITS`], and no more than
    /// the partials' workspace holds.
    pub fn prefill_splits(
        &self,
        max_q_len: usize,
        max_ctx: usize,
        batch: usize,
        heads: usize,
    ) -> usize {
        let blocks = max_q_len.div_ceil(PrefillTile::Wgmma128Occ2Split.rows()) * batch * heads;
        split_count(
            blocks,
            2 * self.info().sm_count,
            max_ctx,
            max_q_len * batch * heads * HEAD_DIM,
        )
    }

    /// [`Self::prefill_attention`] with an explicit tile shape.
    #[allow(clippy::too_many_arguments)]
    pub fn prefill_attention_tile(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        cu_q: &CudaSlice<i32>,
        total_tokens: usize,
        max_q_len: usize,
        tile: PrefillTile,
    ) -> Result<(), CudaError> {
        let shift = p.validate(k_cache, v_cache)?;
        if tile.needs_sm90a() && !self.has_wgmma() {
            return Err(CudaError::invalid(
                "tile",
                format!(
                    "{} needs Hopper's wgmma (sm_90a) but the kernels were built for {}",
                    tile.label(),
                    self.info().arch
                ),
            ));
        }
        let experimental;
        let func = match tile {
            PrefillTile::Rows64 => &self.k.flash_prefill_r64,
            PrefillTile::Rows128 => &self.k.flash_prefill_r128,
            PrefillTile::Rows128W8 => &self.k.flash_prefill_r128w8,
            PrefillTile::Rows128Persistent => &self.k.flash_prefill_r128p,
            PrefillTile::Rows256 => &self.k.flash_prefill_r256,
            PrefillTile::Rows256Stages3 => &self.k.flash_prefill_r256s3,
            PrefillTile::Wgmma128 => &self.k.flash_prefill_wg128,
            PrefillTile::Wgmma128Occ2 => &self.k.flash_prefill_wg128x2,
            PrefillTile::Wgmma128Occ2Unpaired => &self.k.flash_prefill_wg128x2u,
            PrefillTile::Wgmma128Occ2Split => &self.k.flash_prefill_wg128x2s,
            PrefillTile::Wgmma128Keys128 => &self.k.flash_prefill_wg128n,
            PrefillTile::Wgmma192 => &self.k.flash_prefill_wg192,
            PrefillTile::Wgmma128PingPong => &self.k.flash_prefill_wg128pp,
            PrefillTile::Wgmma128PingPongUnpaired => &self.k.flash_prefill_wg128ppu,
            _ => {
                experimental = self.experimental_prefill(tile)?;
                &experimental
            }
        };
        let grid = if tile == PrefillTile::Rows128Persistent {
            PrefillGrid::Persistent
        } else if matches!(
            tile,
            PrefillTile::Wgmma128Occ2Unpaired | PrefillTile::Wgmma128PingPongUnpaired
        ) {
            PrefillGrid::Unpaired
        } else if tile == PrefillTile::Wgmma128Occ2Split {
            let max_ctx = p.max_blocks_per_seq * p.block_size;
            PrefillGrid::Split(
                self.prefill_splits(max_q_len, max_ctx, p.batch, p.num_q_heads)
                    .max(2),
            )
        } else {
            PrefillGrid::Paired
        };
        let launch = PrefillLaunch {
            func,
            rows: tile.rows(),
            threads: tile.threads(),
            smem_bytes: tile.smem_bytes(),
            grid,
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

    /// Launches a prefill attention kernel of the geometry `l` (checked shapes).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prefill_launch(
        &self,
        p: &PagedAttention<'_>,
        shift: u32,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        cu_q: &CudaSlice<i32>,
        total_tokens: usize,
        max_q_len: usize,
        l: &PrefillLaunch<'_>,
    ) -> Result<(), CudaError> {
        check_len("q", q.len(), total_tokens * p.num_q_heads * HEAD_DIM)?;
        check_len("out", out.len(), total_tokens * p.num_q_heads * HEAD_DIM)?;
        check_len("cu_q", cu_q.len(), p.batch + 1)?;
        if max_q_len == 0 {
            return Ok(());
        }
        let rows = l.rows;
        let (mb, sh, hq, hkv) = (
            to_i32("max_blocks_per_seq", p.max_blocks_per_seq)?,
            shift as i32,
            to_i32("num_q_heads", p.num_q_heads)?,
            to_i32("num_kv_heads", p.num_kv_heads)?,
        );
        let scale_log2 = p.scale * std::f32::consts::LOG2_E;
        let max_tiles = max_q_len.div_ceil(rows);
        let persistent = l.grid == PrefillGrid::Persistent;
        let splits = match l.grid {
            PrefillGrid::Split(n) => n.clamp(1, PREFILL_MAX_SPLITS),
            _ => 1,
        };
        let grid_dim = if persistent {
            let items = max_tiles * p.num_q_heads * p.batch;
            (grid(items.min(2 * self.info().sm_count), "batch")?, 1, 1)
        } else {
            (
                grid(
                    match l.grid {
                        PrefillGrid::Paired => max_tiles.div_ceil(2),
                        _ => max_tiles * splits,
                    },
                    "max_q_len",
                )?,
                grid(p.num_q_heads, "num_q_heads")?,
                grid(p.batch, "batch")?,
            )
        };
        let cfg = LaunchConfig {
            grid_dim,
            block_dim: (l.threads as u32, 1, 1),
            shared_mem_bytes: l.smem_bytes as u32,
        };
        let (batch_i, tiles_i) = (to_i32("batch", p.batch)?, to_i32("max_q_len", max_tiles)?);
        let mut counter = self.counter.lock().map_err(|_| {
            CudaError::invalid("device", "the work-counter lock was poisoned by a panic")
        })?;
        let mut split_ws = self.prefill_split_ws.lock().map_err(|_| {
            CudaError::invalid(
                "device",
                "the split-prefill workspace lock was poisoned by a panic",
            )
        })?;
        let split = matches!(l.grid, PrefillGrid::Split(_));
        let parts = total_tokens * p.num_q_heads * splits;
        if split {
            let tickets = max_tiles * p.num_q_heads * p.batch;
            if split_ws
                .as_ref()
                .is_none_or(|w| w.o.len() < parts * HEAD_DIM || w.tickets.len() < tickets)
            {
                *split_ws = None;
                let alloc = |n: usize| {
                    self.stream
                        .alloc_zeros::<f32>(n)
                        .map_err(CudaError::driver("allocating the split-prefill partials"))
                };
                let o = alloc(PREFILL_SPLIT_WS_FLOATS.max(parts * HEAD_DIM))?;
                let lse = alloc(o.len() / HEAD_DIM)?;
                let tickets = self
                    .stream
                    .alloc_zeros::<i32>(tickets.max(4096))
                    .map_err(CudaError::driver("allocating the split-prefill tickets"))?;
                *split_ws = Some(SplitWorkspace { o, lse, tickets });
            }
        }
        if persistent {
            self.stream
                .memset_zeros(&mut *counter)
                .map_err(CudaError::driver("zeroing the prefill work counter"))?;
        }
        let mut b = self.stream.launch_builder(l.func);
        b.arg(q)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&mut *out)
            .arg(cu_q)
            .arg(p.ctx_lens)
            .arg(p.block_tables)
            .arg(&mb)
            .arg(&sh)
            .arg(&hq)
            .arg(&hkv)
            .arg(&scale_log2);
        if persistent {
            b.arg(&mut *counter).arg(&batch_i).arg(&tiles_i);
        }
        let splits_i = to_i32("splits", splits)?;
        if let (true, Some(w)) = (split, split_ws.as_mut()) {
            b.arg(&mut w.o)
                .arg(&mut w.lse)
                .arg(&mut w.tickets)
                .arg(&splits_i);
        }
        // SAFETY: shapes checked above; cu_q, ctx_lens and block tables index valid rows
        // and blocks by the documented contract of `PagedAttention`; the persistent
        // variant's counter is one zeroed i32 on this stream; the split variant writes
        // total_tokens·hq·splits partial rows and takes one ticket per (tile, head,
        // sequence), which its workspace holds (checked), and leaves the tickets zero.
        self.launched(unsafe { b.launch(cfg) }, "flash_prefill")
    }

    /// Whether the kernels were compiled for `sm_90a` (Hopper's `wgmma`).
    pub fn has_wgmma(&self) -> bool {
        self.info().arch == "sm_90a"
    }

    /// The prefill tiles this device can run, in [`PrefillTile::ALL`] order.
    pub fn prefill_tiles(&self) -> Vec<PrefillTile> {
        PrefillTile::ALL
            .into_iter()
            .filter(|t| !t.needs_sm90a() || self.has_wgmma())
            .collect()
    }

    /// The split count the decode kernel uses by default for this shape: a tuned
    /// kernel's for its batch sizes ([`Self::use_tuning`]), else about two blocks per SM.
    pub fn decode_splits(&self, batch: usize, num_kv_heads: usize, max_ctx: usize) -> usize {
        if let Some(t) = self.tuned_decode(batch) {
            return t.config.splits.clamp(1, 64);
        }
        let base = (batch * num_kv_heads).max(1);
        let target = self.info().sm_count * 2;
        let tiles = max_ctx.div_ceil(KV_TILE).max(1);
        target.div_ceil(base).clamp(1, tiles.min(64))
    }

    /// Paged decode attention, one query token per sequence (`q`, `out`:
    /// `[batch, hq, 128]`), split over the context (Flash-Decoding) and merged by
    /// log-sum-exp. `num_splits` `None` picks [`Self::decode_splits`]. Returns the
    /// split count used.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        ws: &mut DecodeWorkspace,
        max_ctx: usize,
        num_splits: Option<usize>,
    ) -> Result<usize, CudaError> {
        let shift = p.validate(k_cache, v_cache)?;
        let splits_wanted =
            num_splits.unwrap_or_else(|| self.decode_splits(p.batch, p.num_kv_heads, max_ctx));
        if splits_wanted == 0 {
            return Err(CudaError::invalid("num_splits", "must be at least 1"));
        }
        let kernel = self.decode_kernel(p.batch);
        let kt = kernel.keys_per_tile;
        let split_len = max_ctx.max(1).div_ceil(splits_wanted).div_ceil(kt) * kt;
        let splits = max_ctx.max(1).div_ceil(split_len);
        self.decode_launch(
            p, q, k_cache, v_cache, out, ws, shift, splits, split_len, &kernel,
        )?;
        Ok(splits)
    }

    /// Paged decode attention with every sequence cut into `num_splits` equal parts
    /// of whole 64-key tiles (its own length, not the batch's longest): the grid and
    /// arguments do not depend on the contexts, so the launch can be replayed from a
    /// CUDA graph while the lengths change.
    #[allow(clippy::too_many_arguments)]
    pub fn decode_attention_balanced(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        ws: &mut DecodeWorkspace,
        num_splits: usize,
    ) -> Result<(), CudaError> {
        let shift = p.validate(k_cache, v_cache)?;
        if num_splits == 0 || num_splits > 64 {
            return Err(CudaError::invalid(
                "num_splits",
                format!("{num_splits} must be in 1..=64"),
            ));
        }
        let kernel = self.decode_kernel(p.batch);
        self.decode_launch(
            p, q, k_cache, v_cache, out, ws, shift, num_splits, 0, &kernel,
        )
    }

    /// Launches `paged_decode` (`split_len` 0: per-sequence splits) and, with more
    /// than one split, `decode_merge`; one split writes `out` directly.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn decode_launch(
        &self,
        p: &PagedAttention<'_>,
        q: &CudaSlice<bf16>,
        k_cache: &CudaSlice<bf16>,
        v_cache: &CudaSlice<bf16>,
        out: &mut CudaSlice<bf16>,
        ws: &mut DecodeWorkspace,
        shift: u32,
        splits: usize,
        split_len: usize,
        kernel: &DecodeLaunch<'_>,
    ) -> Result<(), CudaError> {
        let group = p.num_q_heads / p.num_kv_heads;
        if group > 8 {
            return Err(CudaError::invalid(
                "num_q_heads",
                format!("decode supports up to 8 query heads per kv head, got {group}"),
            ));
        }
        check_len("q", q.len(), p.batch * p.num_q_heads * HEAD_DIM)?;
        check_len("out", out.len(), p.batch * p.num_q_heads * HEAD_DIM)?;
        let rows = p.batch * p.num_q_heads * splits;
        if ws.lse.len() < rows {
            *ws = DecodeWorkspace::with_rows(self, rows)?;
        }
        let (mb, sh, hq, hkv, sl) = (
            to_i32("max_blocks_per_seq", p.max_blocks_per_seq)?,
            shift as i32,
            to_i32("num_q_heads", p.num_q_heads)?,
            to_i32("num_kv_heads", p.num_kv_heads)?,
            to_i32("max_ctx", split_len)?,
        );
        let scale_log2 = p.scale * std::f32::consts::LOG2_E;
        let cfg = LaunchConfig {
            grid_dim: (
                grid(splits, "num_splits")?,
                grid(p.num_kv_heads, "num_kv_heads")?,
                grid(p.batch, "batch")?,
            ),
            block_dim: (kernel.threads as u32, 1, 1),
            shared_mem_bytes: kernel.smem_bytes as u32,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(q)
            .buf(k_cache)
            .buf(v_cache)
            .buf_mut(&mut ws.o_part)
            .buf_mut(&mut ws.lse)
            .buf(p.ctx_lens)
            .buf(p.block_tables)
            .val(&mb)
            .val(&sh)
            .val(&hq)
            .val(&hkv)
            .val(&sl)
            .val(&scale_log2);
        let direct = splits == 1;
        let null: u64 = 0;
        if direct {
            b.buf_mut(&mut *out);
        } else {
            b.val(&null);
        }
        // SAFETY: shapes checked above; the workspace holds batch·hq·splits rows; keys
        // beyond a sequence's ctx_len are never read, and the caller guarantees the
        // block table covers ctx_len (and, with a fixed split_len, ctx_len ≤ max_ctx).
        // With one split the kernel writes batch·hq·128 bf16 outputs (checked) instead.
        // It waits for its predecessor first (programmatic launch).
        unsafe { self.launch_chained(&b, kernel.func, cfg, "paged_decode") }?;
        if direct {
            return Ok(());
        }
        let n_splits = to_i32("num_splits", splits)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(p.batch * p.num_q_heads, "batch")?, 1, 1),
            block_dim: (HEAD_DIM as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(&ws.o_part).buf(&ws.lse).buf_mut(out).val(&n_splits);
        // SAFETY: reads the rows written above and writes batch·hq·128 outputs (checked),
        // after waiting for them (programmatic launch).
        unsafe { self.launch_chained(&b, &self.k.decode_merge, cfg, "decode_merge") }
    }

    /// `y[t, n] = Σ_k x[t, k] · w[n, k]` in bf16 with f32 accumulation (cuBLAS);
    /// `x`: `[tokens, k]`, `w`: `[n, k]` (a linear layer's weight), `y`: `[tokens, n]`.
    /// Up to [`SKINNY_MAX_TOKENS`] rows run on [`Self::gemm_skinny`] where it is
    /// enabled ([`Self::set_skinny_gemm`]; off by default: on the H200 at 64 rows, on
    /// tiled weights, it is 0.98-1.01× cuBLAS's time on gate_up and down and 1.15-1.26×
    /// on qkv and o)
    /// and the shape allows it; everything else on cuBLAS.
    pub fn gemm(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        if self.skinny_applies(tokens, k, n) {
            return self.gemm_skinny(x, w, y, tokens, k, n, GemmOut::dense(n));
        }
        self.gemm_ex(x, w, y, tokens, k, n, GemmOut::dense(n))
    }

    /// Whether [`Self::gemm`] takes the skinny path for this shape.
    pub fn skinny_applies(&self, tokens: usize, k: usize, n: usize) -> bool {
        self.skinny.load(std::sync::atomic::Ordering::Relaxed)
            && (1..=SKINNY_MAX_TOKENS).contains(&tokens)
            && k.is_multiple_of(64)
            && n.is_multiple_of(128)
            && k > 0
            && n > 0
    }

    /// Turns the skinny path of [`Self::gemm`] on or off (it needs `sm_90a`); returns
    /// whether it is on.
    pub fn set_skinny_gemm(&self, on: bool) -> bool {
        let on = on && self.has_wgmma();
        self.skinny.store(on, std::sync::atomic::Ordering::Relaxed);
        on
    }

    /// Turns programmatic dependent launch on or off (it needs sm_90): the kernels that
    /// wait for their predecessor in their own code (norms, SiLU·mul, the fused RoPE
    /// and cache write, decode attention, the skinny GEMM, gathers and argmax) may
    /// then start while the kernel before them finishes, e.g. inside a captured
    /// decode graph; returns whether it is on. Off by default.
    pub fn set_programmatic_launch(&self, on: bool) -> bool {
        let on = on && self.info().compute_capability.0 >= 9;
        self.programmatic
            .store(on, std::sync::atomic::Ordering::Relaxed);
        on
    }

    /// Whether [`Self::set_programmatic_launch`] is on.
    pub fn programmatic_launch(&self) -> bool {
        self.programmatic.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How the skinny GEMM runs `k × n` ([`skinny_plan_for`] on this GPU).
    pub fn skinny_plan(&self, k: usize, n: usize) -> SkinnyPlan {
        skinny_plan_for(k, n, self.info().sm_count, self.skinny_clusters)
    }

    /// Keeps a copy of the `[n, k]` weight `w` in the skinny GEMM's tiled layout (each
    /// 128-row × 64-column tile contiguous, pre-swizzled), which [`Self::gemm_skinny`]
    /// then streams as one 16 KB bulk copy a stage instead of a strided TMA box of `w`
    /// (the same values, so the same products). The copy is found by `w`'s address and
    /// the shape `(n, k)` (it holds w's first n·k values) for as long as it is kept: call
    /// [`Self::clear_skinny_tiles`] before `w` is freed. `k` a multiple of 64, `n` of 128.
    pub fn tile_for_skinny(
        &self,
        w: &CudaSlice<bf16>,
        n: usize,
        k: usize,
    ) -> Result<(), CudaError> {
        if !k.is_multiple_of(64) || k == 0 || !n.is_multiple_of(128) || n == 0 {
            return Err(CudaError::invalid(
                "w",
                format!(
                    "the skinny GEMM's tiled layout needs k a multiple of 64 and n of 128; got k {k}, n {n}"
                ),
            ));
        }
        check_len("w", w.len(), n * k)?;
        let mut tiled = self.alloc_bf16(n * k)?;
        let (n_i, k_i) = (to_i32("n", n)?, to_i32("k", k)?);
        let blocks = (n * k / 8).div_ceil(256).min(self.info().sm_count * 16);
        let cfg = LaunchConfig {
            grid_dim: (grid(blocks, "n")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.skinny_tile_weight);
        b.arg(w).arg(&mut tiled).arg(&n_i).arg(&k_i);
        // SAFETY: grid-stride over the n·k/8 16-byte chunks of both buffers (lengths
        // checked; n and k whole tiles, so every source chunk is inside w).
        self.launched(unsafe { b.launch(cfg) }, "skinny_tile_weight")?;
        let key = (w.device_ptr(&self.stream).0, n, k);
        self.skinny_tiles
            .lock()
            .map_err(|_| CudaError::invalid("device", "the skinny tile lock was poisoned"))?
            .insert(key, tiled);
        Ok(())
    }

    /// Drops every copy [`Self::tile_for_skinny`] made; the skinny GEMM then reads the
    /// row-major weights by TMA again.
    pub fn clear_skinny_tiles(&self) {
        if let Ok(mut tiles) = self.skinny_tiles.lock() {
            tiles.clear();
        }
    }

    /// Bytes of device memory the copies of [`Self::tile_for_skinny`] hold.
    pub fn skinny_tiled_bytes(&self) -> u64 {
        self.skinny_tiles
            .lock()
            .map_or(0, |t| t.values().map(|w| (w.len() * 2) as u64).sum())
    }

    /// The TMA descriptor of `rows × inner` bf16 at `ptr` in boxes of `box_rows` rows,
    /// encoded once per matrix (the same four values always encode the same descriptor).
    fn tma_map(
        &self,
        ptr: u64,
        inner: usize,
        rows: usize,
        box_rows: usize,
    ) -> Result<TmaMap, CudaError> {
        let key = (ptr, inner, rows, box_rows);
        let mut maps = self.tma_maps.lock().map_err(|_| {
            CudaError::invalid("device", "the TMA descriptor cache lock was poisoned")
        })?;
        if let Some(map) = maps.get(&key) {
            return Ok(*map);
        }
        if maps.len() >= 4096 {
            maps.clear();
        }
        let map = tma_map_2d(ptr, inner, rows, box_rows)?;
        maps.insert(key, map);
        Ok(map)
    }

    /// `y (+)= x · wᵀ` for at most [`SKINNY_MAX_TOKENS`] rows, the weight streamed once
    /// by TMA into wgmma (a memory-bound shape where cuBLAS reaches 2.7-3.9 TB/s of
    /// 4.4): blocks of 128 outputs, k split over a cluster whose partials meet in shared
    /// memory ([`Self::skinny_plan`]); one rounding, deterministic.
    /// `k` a multiple of 64, `n` of 128, `out.ld` and `out.offset` even; needs `sm_90a`.
    /// With [`Self::set_programmatic_launch`] on it reads `w` before the kernel before it
    /// has finished, so `w` must be a weight, not an earlier kernel's output.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_skinny(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
        out: GemmOut,
    ) -> Result<(), CudaError> {
        self.gemm_skinny_planned(x, w, y, tokens, k, n, out, self.skinny_plan(k, n))
    }

    /// [`Self::gemm_skinny`] with the plan given: `splits` one of [`SKINNY_SPLITS`] and at
    /// most k / 64, 2 to 8 stages; the same shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_skinny_planned(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
        out: GemmOut,
        plan: SkinnyPlan,
    ) -> Result<(), CudaError> {
        if !self.has_wgmma() {
            return Err(CudaError::invalid(
                "device",
                format!("the skinny GEMM needs sm_90a, not {}", self.info().arch),
            ));
        }
        if !(1..=SKINNY_MAX_TOKENS).contains(&tokens)
            || !k.is_multiple_of(64)
            || k == 0
            || !n.is_multiple_of(128)
            || n == 0
            || !out.ld.is_multiple_of(2)
            || !out.offset.is_multiple_of(2)
            || out.ld < n
        {
            return Err(CudaError::invalid(
                "tokens",
                format!(
                    "the skinny GEMM takes 1..={SKINNY_MAX_TOKENS} rows, k a multiple of 64, n of 128 and an even row stride and offset; got {tokens} rows, k {k}, n {n}, ld {}, offset {}",
                    out.ld, out.offset
                ),
            ));
        }
        check_len("x", x.len(), tokens * k)?;
        check_len("w", w.len(), n * k)?;
        check_len("y", y.len(), out.offset + (tokens - 1) * out.ld + n)?;
        let Some(slot) = SKINNY_SPLITS
            .iter()
            .position(|&s| s == plan.splits && s <= k / 64)
        else {
            return Err(CudaError::invalid(
                "splits",
                format!(
                    "the skinny GEMM splits k into one of {SKINNY_SPLITS:?} parts of at least 64; got {} for k {k}",
                    plan.splits
                ),
            ));
        };
        if !(2..=SKINNY_STAGES).contains(&plan.stages) {
            return Err(CudaError::invalid(
                "stages",
                format!(
                    "the skinny GEMM runs 2..={SKINNY_STAGES} stages; got {}",
                    plan.stages
                ),
            ));
        }
        let (x_ptr, _x_sync) = x.device_ptr(&self.stream);
        let (w_ptr, _w_sync) = w.device_ptr(&self.stream);
        let (x_map, w_map) = (
            self.tma_map(x_ptr, k, tokens, 64)?,
            self.tma_map(w_ptr, k, n, 128)?,
        );
        let tiles = self
            .skinny_tiles
            .lock()
            .map_err(|_| CudaError::invalid("device", "the skinny tile lock was poisoned"))?;
        let w_tiled: u64 = tiles
            .get(&(w_ptr, n, k))
            .map_or(0, |t| t.device_ptr(&self.stream).0);
        let mut yv = y.slice_mut(out.offset..);
        let (t_i, k_i, ld_i, acc, st_i) = (
            to_i32("tokens", tokens)?,
            to_i32("k", k)?,
            to_i32("ld", out.ld)?,
            i32::from(out.accumulate),
            to_i32("stages", plan.stages)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (grid(plan.splits, "splits")?, grid(n / 128, "n")?, 1),
            block_dim: (SKINNY_THREADS, 1, 1),
            shared_mem_bytes: skinny_smem_bytes(plan.stages) as u32,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.val(&w_map)
            .val(&x_map)
            .buf_mut(&mut yv)
            .val(&t_i)
            .val(&k_i)
            .val(&ld_i)
            .val(&acc)
            .val(&st_i)
            .val(&w_tiled);
        // SAFETY: the descriptors cover x's tokens rows of k and w's n rows of k (lengths
        // checked; x rows beyond `tokens` read as zeros), and `w_tiled`, null or a kept
        // tiled copy of w (n·k values, held while `tiles` is locked); block (split, tile) of a cluster
        // of `splits` writes its share of the tile's `tokens` rows × 128 columns of y at
        // stride ld (extent checked); the stages fit the dynamic shared memory given.
        // Before its wait for the predecessor (programmatic launch) it reads only `w`.
        unsafe { self.launch_chained(&b, &self.k.skinny_gemm[slot], cfg, "skinny_gemm") }
    }

    /// `y[t, n] += Σ_k x[t, k] · w[n, k]`: [`Self::gemm`] adding into `y` (cuBLAS
    /// β = 1, one rounding), e.g. a projection folded into the residual stream.
    pub fn gemm_acc(
        &self,
        x: &CudaSlice<bf16>,
        w: &CudaSlice<bf16>,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
    ) -> Result<(), CudaError> {
        let out = GemmOut {
            accumulate: true,
            ..GemmOut::dense(n)
        };
        if self.skinny_applies(tokens, k, n) {
            return self.gemm_skinny(x, w, y, tokens, k, n, out);
        }
        self.gemm_ex(x, w, y, tokens, k, n, out)
    }

    /// [`Self::gemm`] with `w` any `[n, k]` device matrix (e.g. rows of a fused
    /// weight) and the output placed by `out` (row stride, column offset, β); through
    /// the cuBLASLt algorithm [`Self::tune_gemm`] picked for the shape where it did.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_ex<W: DevicePtr<bf16>>(
        &self,
        x: &CudaSlice<bf16>,
        w: &W,
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
        out: GemmOut,
    ) -> Result<(), CudaError> {
        check_len("x", x.len(), tokens * k)?;
        check_len("w", w.len(), n * k)?;
        if out.ld < n {
            return Err(CudaError::invalid(
                "ld",
                format!(
                    "row stride {} is shorter than the {n} output columns",
                    out.ld
                ),
            ));
        }
        if tokens == 0 || n == 0 {
            return Ok(());
        }
        check_len("y", y.len(), out.offset + (tokens - 1) * out.ld + n)?;
        if out.offset == 0 {
            let key = super::lt::GemmKey {
                tokens,
                k,
                n,
                ld: out.ld,
                accumulate: out.accumulate,
            };
            if let Some(launched) = self.tuned_gemm(x, w, y, key) {
                return launched;
            }
        }
        let mut yv = y.slice_mut(out.offset..);
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: to_i32("n", n)?,
            n: to_i32("tokens", tokens)?,
            k: to_i32("k", k)?,
            alpha: bf16::ONE,
            lda: to_i32("k", k)?,
            ldb: to_i32("k", k)?,
            beta: if out.accumulate {
                bf16::ONE
            } else {
                bf16::ZERO
            },
            ldc: to_i32("ld", out.ld)?,
        };
        // SAFETY: column-major view: C (n × tokens, ld `out.ld`) = op(A) · B with
        // op(A) = Wᵀ of the k × n column-major W buffer and B the k × tokens
        // column-major X buffer; all three extents checked above.
        unsafe { self.blas.gemm(cfg, w, x, &mut yv) }.map_err(|source| CudaError::Blas {
            context: format!("running a {tokens}×{k}×{n} bf16 GEMM"),
            source,
        })
    }
}

/// Engine helpers: embedding gather, row gather, residual add, greedy argmax.
impl CudaDevice {
    /// `x[t, :] = table[tokens[t], :]` (`table`: `[vocab, hidden]`, `x`: `[n, hidden]`).
    ///
    /// Every token id must be below `vocab` (the caller checks it on the host).
    pub fn embed_gather(
        &self,
        table: &CudaSlice<bf16>,
        tokens: &CudaSlice<i32>,
        x: &mut CudaSlice<bf16>,
        n: usize,
        hidden: usize,
    ) -> Result<(), CudaError> {
        self.gather_impl(table, tokens, x, n, hidden, true)
    }

    /// `out[r, :] = x[rows[r], :]` for `n` rows of `width` values; every row id
    /// must index a row of `x` (the caller checks it on the host).
    pub fn gather_rows(
        &self,
        x: &CudaSlice<bf16>,
        rows: &CudaSlice<i32>,
        out: &mut CudaSlice<bf16>,
        n: usize,
        width: usize,
    ) -> Result<(), CudaError> {
        self.gather_impl(x, rows, out, n, width, false)
    }

    fn gather_impl(
        &self,
        src: &CudaSlice<bf16>,
        idx: &CudaSlice<i32>,
        out: &mut CudaSlice<bf16>,
        n: usize,
        width: usize,
        embed: bool,
    ) -> Result<(), CudaError> {
        if width == 0 || !width.is_multiple_of(8) {
            return Err(CudaError::invalid(
                "width",
                format!("{width} must be a positive multiple of 8"),
            ));
        }
        check_len("indices", idx.len(), n)?;
        check_len("out", out.len(), n * width)?;
        check_len("src", src.len(), width)?;
        if n == 0 {
            return Ok(());
        }
        let w = to_i32("width", width)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(n, "rows")?, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        let (func, name) = if embed {
            (&self.k.embed_gather, "embed_gather")
        } else {
            (&self.k.gather_rows, "gather_rows")
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(src).buf(idx).buf_mut(out).val(&w);
        // SAFETY: one block per output row (n rows of `width`, checked); the caller
        // guarantees every index addresses a whole row of `src` (documented contract);
        // the kernel waits for its predecessor first (programmatic launch).
        unsafe { self.launch_chained(&b, func, cfg, name) }
    }

    /// `x[i] += y[i]` for the first `n` elements (`n` a multiple of 8).
    pub fn add_inplace(
        &self,
        x: &mut CudaSlice<bf16>,
        y: &CudaSlice<bf16>,
        n: usize,
    ) -> Result<(), CudaError> {
        if !n.is_multiple_of(8) {
            return Err(CudaError::invalid(
                "n",
                format!("{n} must be a multiple of 8"),
            ));
        }
        check_len("x", x.len(), n)?;
        check_len("y", y.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let n8 = (n / 8) as u64;
        let blocks = (n / 8).div_ceil(256).min(self.info().sm_count * 16);
        let cfg = LaunchConfig {
            grid_dim: (grid(blocks, "n")?, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.add_inplace);
        b.arg(x).arg(y).arg(&n8);
        // SAFETY: grid-stride over n/8 vectors of both buffers (lengths checked).
        self.launched(unsafe { b.launch(cfg) }, "add_inplace")
    }

    /// Greedy sampling: `out[r]` = index of the largest of `logits[r, 0..vocab)`
    /// (the first on ties) for `rows` rows.
    pub fn argmax_rows(
        &self,
        logits: &CudaSlice<bf16>,
        out: &mut CudaSlice<i32>,
        rows: usize,
        vocab: usize,
    ) -> Result<(), CudaError> {
        if vocab == 0 {
            return Err(CudaError::invalid("vocab", "must be positive"));
        }
        check_len("logits", logits.len(), rows * vocab)?;
        check_len("out", out.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let v = to_i32("vocab", vocab)?;
        let cfg = LaunchConfig {
            grid_dim: (grid(rows, "rows")?, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = KernelArgs::new(&self.stream);
        b.buf(logits).buf_mut(out).val(&v);
        // SAFETY: one block per row, reading `vocab` values of it and writing out[row],
        // after waiting for its predecessor (programmatic launch).
        unsafe { self.launch_chained(&b, &self.k.argmax_rows, cfg, "argmax_rows") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_prompts_take_the_256_row_tile() {
        assert_eq!(PrefillTile::for_max_q_len(1), DEFAULT_PREFILL_TILE);
        assert_eq!(
            PrefillTile::for_max_q_len(LARGE_PREFILL_MIN_Q_LEN - 1),
            DEFAULT_PREFILL_TILE
        );
        assert_eq!(PrefillTile::for_max_q_len(8192), PrefillTile::Rows256);
        for tile in PrefillTile::ALL {
            // Every tile's dynamic shared memory fits the H200's 227 KiB per block.
            assert!(tile.smem_bytes() <= 227 * 1024, "{}", tile.label());
            assert_eq!(tile.threads() % 32, 0);
            let producer = if tile.warp_specialized() { 128 } else { 0 };
            assert_eq!(tile.rows() % (16 * ((tile.threads() - producer) / 32)), 0);
        }
        assert_eq!(PrefillTile::Rows256Stages3.smem_bytes(), 160 * 1024);
    }

    #[test]
    fn experimental_tiles_name_their_kernel_and_the_default_is_not_one() {
        let experimental: Vec<_> = PrefillTile::ALL
            .into_iter()
            .filter_map(|t| t.experimental_kernel().map(|k| (t, k)))
            .collect();
        assert_eq!(experimental.len(), 9);
        for (tile, kernel) in experimental {
            assert_eq!(kernel, format!("flash_prefill_{}", tile.label()));
            assert!(tile.needs_sm90a(), "{}", tile.label());
        }
        for default in [
            DEFAULT_PREFILL_TILE,
            WGMMA_PREFILL_TILE,
            PrefillTile::Wgmma128PingPongUnpaired,
            PrefillTile::Wgmma128Occ2Split,
        ] {
            assert_eq!(default.experimental_kernel(), None, "{}", default.label());
        }
    }

    #[test]
    fn chunks_after_a_prefix_split_their_keys_until_the_gpu_is_full() {
        let slots = 2 * 132; // H200: two wg128x2s blocks on each of 132 SMs
        let floats = |q: usize| q * 32 * HEAD_DIM;
        // A 512-token chunk (4 tiles × 32 heads = 128 blocks) after 7680 keys: two
        // parts fill the GPU in one wave; more would add waves, not speed.
        assert_eq!(split_count(128, slots, 8192, floats(512)), 2);
        // The first chunk, 512 keys: still two parts of 256 keys each.
        assert_eq!(split_count(128, slots, 512, floats(512)), 2);
        // Too few keys for a part of their own: no split.
        assert_eq!(
            split_count(128, slots, PREFILL_SPLIT_MIN_KEYS + 1, floats(512)),
            1
        );
        // A 768-token chunk (192 blocks): four parts, 768 blocks in three waves of 264.
        assert_eq!(split_count(192, slots, 4096, floats(768)), 4);
        // A grid that already fills the GPU is never split.
        assert_eq!(split_count(2048, slots, 8192, floats(8192)), 1);
        // The partials' workspace bounds the parts.
        assert_eq!(
            split_count(1, slots, 1 << 20, PREFILL_SPLIT_WS_FLOATS / 3),
            3
        );
        assert_eq!(split_count(1, 1000, 1 << 20, 1), PREFILL_MAX_SPLITS);
    }

    #[test]
    fn skinny_plans_split_k_while_the_clusters_fit_in_one_wave() {
        let h200 = [264, 132, 66, 33];
        let plan = |k, n| skinny_plan_for(k, n, 132, h200).splits;
        assert_eq!(plan(4096, 4096), 8, "o: 32 tiles in 32 clusters of 8");
        assert_eq!(plan(14336, 4096), 8, "down");
        assert_eq!(
            plan(4096, 6144),
            4,
            "qkv: 48 tiles, 8 splits would take two waves"
        );
        assert_eq!(plan(4096, 28672), 1, "gate_up: 224 tiles");
        assert_eq!(plan(4096, 128256), 1, "the head: several waves");
        assert_eq!(plan(128, 4096), 2, "k of two chunks splits at most in two");
        let fewer = skinny_plan_for(4096, 4096, 132, [264, 132, 66, 31]);
        assert_eq!(
            fewer.splits, 4,
            "a second wave of clusters is never planned"
        );
        assert_eq!(fewer.stages, SKINNY_PLAN_STAGES);
        assert_eq!(skinny_plan_for(4096, 4096, 132, [0; 4]).splits, 1);
    }

    #[test]
    fn hopper_calls_take_ping_pong_unless_splitting_fills_the_gpu_sooner() {
        let tile = |q, ctx| hopper_prefill_tile(q, ctx, 1, 32, 132);
        // Full prompts and 2048-token chunks: 8 × 32 paired blocks fill 132 SMs.
        assert_eq!(tile(8192, 8192), PrefillTile::Wgmma128PingPong);
        assert_eq!(tile(2048, 8192), PrefillTile::Wgmma128PingPong);
        assert_eq!(
            hopper_prefill_tile(2560, 2560, 3, 32, 132),
            PrefillTile::Wgmma128PingPong
        );
        // A 512-token chunk: 128 unpaired blocks in one wave beat two parts each.
        assert_eq!(tile(512, 8192), PrefillTile::Wgmma128PingPongUnpaired);
        // 768 tokens: 192 blocks take two waves unpaired, 4 parts in 3 of 264 are sooner.
        assert_eq!(tile(768, 4096), PrefillTile::Wgmma128Occ2Split);
        // 256 tokens after 8k keys: 64 blocks would leave half the SMs idle.
        assert_eq!(tile(256, 8192), PrefillTile::Wgmma128Occ2Split);
        // Too few keys to split: unpaired.
        assert_eq!(tile(128, 200), PrefillTile::Wgmma128PingPongUnpaired);
    }
}
