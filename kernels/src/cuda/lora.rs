//! Batched LoRA on the GPU (BGMV: every token row gathers its own adapter's
//! `A` and `B`) and MeteoRA's per-token top-k gate, with the f64 references
//! their checks use.
//!
//! A token row carries `k_mix` mixture entries `(slot, weight)` in two device
//! buffers, `idx` (`[rows, k_mix]` i32, `-1`: no adapter) and `w`
//! (`[rows, k_mix]` f32). The adapters of one projection of one layer live
//! in slot storage: `A` `[slots, rank, d_in]` and `B` `[slots, d_out, rank]`,
//! bf16. A projection `y = x·W` becomes
//! `y += scale · Σ_e w_e · B_{slot_e} (A_{slot_e} x)` in two launches:
//! [`CudaDevice::lora_shrink`] (`t = A x`, f32, `[rows, k_mix, rank]`) and
//! [`CudaDevice::lora_expand`]. Under MeteoRA, [`CudaDevice::lora_gate`]
//! fills `idx` and `w` from the gate's logits first (slot = adapter id).
//! The kernels read the buffers at fixed addresses, so they can be captured
//! in a CUDA graph whose `idx` is uploaded before each replay.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::bf16;

use super::{CudaDevice, CudaError};

/// Threads per block of the LoRA kernels.
const THREADS: u32 = 256;

/// Adapters MeteoRA's gate kernel takes at most (its logits live in shared memory).
pub const MAX_GATE_ADAPTERS: usize = 8192;

/// The largest adapter rank the expand kernel takes (`LORA_MAX_RANK`: a
/// thread keeps one row of `B` in registers).
pub const MAX_RANK: usize = 64;

/// Token rows one expand block covers at most (`LORA_EXPAND_TILE`).
const EXPAND_TILE: usize = 16;

/// Token rows one shrink block covers at most (`LORA_SHRINK_TILE`).
const SHRINK_TILE: usize = 4;

/// From this many rows on, blocks cover tiles of rows (sharing the adapter
/// vectors they load when the rows share an adapter); below it, one row per
/// block keeps every SM busy.
const TILE_FROM_ROWS: usize = 512;

/// Rows per block for `rows` rows and a kernel whose tile is at most `tile`.
fn tile_for(rows: usize, tile: usize) -> usize {
    if rows >= TILE_FROM_ROWS { tile } else { 1 }
}

fn need(field: &'static str, found: usize, needed: usize) -> Result<(), CudaError> {
    if found < needed {
        return Err(CudaError::invalid(
            field,
            format!("has {found} elements but the shape needs {needed}"),
        ));
    }
    Ok(())
}

fn int(field: &'static str, v: usize) -> Result<i32, CudaError> {
    i32::try_from(v).map_err(|_| CudaError::invalid(field, format!("{v} does not fit in 32 bits")))
}

fn blocks(n: usize, field: &'static str) -> Result<u32, CudaError> {
    u32::try_from(n.max(1))
        .map_err(|_| CudaError::invalid(field, format!("{n} blocks is too many for one launch")))
}

fn multiple_of_8(field: &'static str, v: usize) -> Result<(), CudaError> {
    if v == 0 || !v.is_multiple_of(8) {
        return Err(CudaError::invalid(
            field,
            format!("{v} must be a positive multiple of 8 (16-byte loads)"),
        ));
    }
    Ok(())
}

/// The shape of one batched LoRA application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraShape {
    /// Token rows.
    pub rows: usize,
    /// Input width of the projection (a multiple of 8).
    pub d_in: usize,
    /// Output width of the projection.
    pub d_out: usize,
    /// Adapter rank.
    pub rank: usize,
    /// Mixture entries per row (1 for multi-LoRA, MeteoRA's top-k).
    pub k_mix: usize,
    /// Slots in the adapter storage (every `idx` must be `-1` or below it).
    pub slots: usize,
}

impl LoraShape {
    fn check(&self) -> Result<(), CudaError> {
        multiple_of_8("d_in", self.d_in)?;
        for (field, v) in [
            ("d_out", self.d_out),
            ("rank", self.rank),
            ("k_mix", self.k_mix),
            ("slots", self.slots),
        ] {
            if v == 0 {
                return Err(CudaError::invalid(field, "must be positive"));
            }
        }
        if self.rank > MAX_RANK {
            return Err(CudaError::invalid(
                "rank",
                format!(
                    "{} is above the kernels' largest rank {MAX_RANK}",
                    self.rank
                ),
            ));
        }
        Ok(())
    }
}

impl CudaDevice {
    fn lora_launched(
        &self,
        r: Result<(), cudarc::driver::DriverError>,
        name: &str,
    ) -> Result<(), CudaError> {
        r.map_err(CudaError::driver(format!("launching `{name}`")))
    }

    /// BGMV shrink: `t[row, e, :] = A[idx[row, e]] · x[row, :]` (f32; zeros
    /// for `idx = -1`), with `A` `[slots, rank, d_in]`, over tiles of up to 4 rows
    /// that read `A` once while their slot repeats. Every `idx` must be
    /// `-1` or a slot below `shape.slots` (the caller's contract).
    pub fn lora_shrink(
        &self,
        x: &CudaSlice<bf16>,
        a: &CudaSlice<bf16>,
        idx: &CudaSlice<i32>,
        t: &mut CudaSlice<f32>,
        shape: &LoraShape,
    ) -> Result<(), CudaError> {
        shape.check()?;
        let s = shape;
        need("x", x.len(), s.rows * s.d_in)?;
        need("a", a.len(), s.slots * s.rank * s.d_in)?;
        need("idx", idx.len(), s.rows * s.k_mix)?;
        need("t", t.len(), s.rows * s.k_mix * s.rank)?;
        if s.rows == 0 {
            return Ok(());
        }
        let (rows, d_in, rank, k_mix) = (
            int("rows", s.rows)?,
            int("d_in", s.d_in)?,
            int("rank", s.rank)?,
            int("k_mix", s.k_mix)?,
        );
        let shrink_tile = tile_for(s.rows, SHRINK_TILE);
        let tile = int("tile", shrink_tile)?;
        let cfg = LaunchConfig {
            grid_dim: (
                blocks(s.rows.div_ceil(shrink_tile), "rows")?,
                blocks(s.k_mix, "k_mix")?,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&self.k.lora_shrink);
        b.arg(x)
            .arg(a)
            .arg(idx)
            .arg(t)
            .arg(&rows)
            .arg(&d_in)
            .arg(&rank)
            .arg(&k_mix)
            .arg(&tile);
        // SAFETY: one block per (tile of up to 4 rows below `rows`, entry), reading those
        // rows of x, rank rows of A at each row's slot (lengths checked; slots below
        // `slots` by contract) and writing `rank` values of t per row.
        self.lora_launched(unsafe { b.launch(cfg) }.map(|_| ()), "lora_shrink")
    }

    /// BGMV expand: `y[row, :] += scale · Σ_e w[row, e] · B[idx[row, e]] ·
    /// t[row, e, :]` with `B` `[slots, d_out, rank]`; rows whose entries are
    /// all `-1` are left as they are.
    #[allow(clippy::too_many_arguments)]
    pub fn lora_expand(
        &self,
        t: &CudaSlice<f32>,
        b: &CudaSlice<bf16>,
        idx: &CudaSlice<i32>,
        w: &CudaSlice<f32>,
        y: &mut CudaSlice<bf16>,
        shape: &LoraShape,
        scale: f32,
    ) -> Result<(), CudaError> {
        shape.check()?;
        let s = shape;
        need("t", t.len(), s.rows * s.k_mix * s.rank)?;
        need("b", b.len(), s.slots * s.d_out * s.rank)?;
        need("idx", idx.len(), s.rows * s.k_mix)?;
        need("w", w.len(), s.rows * s.k_mix)?;
        need("y", y.len(), s.rows * s.d_out)?;
        if s.rows == 0 {
            return Ok(());
        }
        let (rows, d_out, rank, k_mix) = (
            int("rows", s.rows)?,
            int("d_out", s.d_out)?,
            int("rank", s.rank)?,
            int("k_mix", s.k_mix)?,
        );
        let expand_tile = tile_for(s.rows, EXPAND_TILE);
        let tile = int("tile", expand_tile)?;
        let cfg = LaunchConfig {
            grid_dim: (
                blocks(s.d_out.div_ceil(THREADS as usize), "d_out")?,
                blocks(s.rows.div_ceil(expand_tile), "rows")?,
                1,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = self.stream.launch_builder(&self.k.lora_expand);
        l.arg(t)
            .arg(b)
            .arg(idx)
            .arg(w)
            .arg(y)
            .arg(&rows)
            .arg(&d_out)
            .arg(&rank)
            .arg(&k_mix)
            .arg(&scale)
            .arg(&tile);
        // SAFETY: one thread per (output column below d_out, tile of up to 16 rows below
        // `rows`), reading the rows' entries, their B rows (slots below `slots` by
        // contract, rank <= MAX_RANK checked) and t; lengths checked.
        self.lora_launched(unsafe { l.launch(cfg) }.map(|_| ()), "lora_expand")
    }

    /// MeteoRA's gate: per row, logits `wg · x[row, :] + bias` over `adapters`
    /// (`wg` `[adapters, d_in]`), the `top_k` largest (ties to the lower id)
    /// into `idx[row, :]` and their softmax weights into `w[row, :]`.
    #[allow(clippy::too_many_arguments)]
    pub fn lora_gate(
        &self,
        x: &CudaSlice<bf16>,
        wg: &CudaSlice<bf16>,
        bias: &CudaSlice<f32>,
        idx: &mut CudaSlice<i32>,
        w: &mut CudaSlice<f32>,
        rows: usize,
        d_in: usize,
        adapters: usize,
        top_k: usize,
    ) -> Result<(), CudaError> {
        multiple_of_8("d_in", d_in)?;
        if adapters == 0 || adapters > MAX_GATE_ADAPTERS {
            return Err(CudaError::invalid(
                "adapters",
                format!("{adapters} must be between 1 and {MAX_GATE_ADAPTERS}"),
            ));
        }
        if top_k == 0 || top_k > adapters {
            return Err(CudaError::invalid(
                "top_k",
                format!("{top_k} must be between 1 and the {adapters} adapters"),
            ));
        }
        need("x", x.len(), rows * d_in)?;
        need("wg", wg.len(), adapters * d_in)?;
        need("bias", bias.len(), adapters)?;
        need("idx", idx.len(), rows * top_k)?;
        need("w", w.len(), rows * top_k)?;
        if rows == 0 {
            return Ok(());
        }
        let (di, n, k) = (
            int("d_in", d_in)?,
            int("adapters", adapters)?,
            int("top_k", top_k)?,
        );
        let cfg = LaunchConfig {
            grid_dim: (blocks(rows, "rows")?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: (adapters * 5).next_multiple_of(16) as u32,
        };
        let mut b = self.stream.launch_builder(&self.k.lora_gate);
        b.arg(x)
            .arg(wg)
            .arg(bias)
            .arg(idx)
            .arg(w)
            .arg(&di)
            .arg(&n)
            .arg(&k);
        // SAFETY: one block per row reading x's row and every gate row (lengths
        // checked), `adapters` floats and flags of dynamic shared memory (≤ 40 KiB),
        // writing top_k entries of the row.
        self.lora_launched(unsafe { b.launch(cfg) }.map(|_| ()), "lora_gate")
    }
}

/// The reference of [`CudaDevice::lora_shrink`] then
/// [`CudaDevice::lora_expand`] in f64: `y` (`[rows, d_out]`) plus each row's
/// mixture, with `a` `[slots, rank, d_in]`, `b` `[slots, d_out, rank]` and
/// per row `k_mix` entries of `idx` (`< 0`: none) and `w`.
#[allow(clippy::too_many_arguments)]
pub fn bgmv_reference(
    x: &[f32],
    a: &[f32],
    b: &[f32],
    idx: &[i32],
    w: &[f32],
    y: &[f32],
    shape: &LoraShape,
    scale: f32,
) -> Vec<f32> {
    let s = shape;
    let mut out = y.to_vec();
    for row in 0..s.rows {
        let xr = &x[row * s.d_in..(row + 1) * s.d_in];
        let mut delta = vec![0f64; s.d_out];
        for e in 0..s.k_mix {
            let Ok(slot) = usize::try_from(idx[row * s.k_mix + e]) else {
                continue;
            };
            let we = f64::from(w[row * s.k_mix + e]);
            let t: Vec<f64> = (0..s.rank)
                .map(|j| {
                    let ar = &a[(slot * s.rank + j) * s.d_in..(slot * s.rank + j + 1) * s.d_in];
                    ar.iter()
                        .zip(xr)
                        .map(|(&p, &q)| f64::from(p) * f64::from(q))
                        .sum()
                })
                .collect();
            for (o, d) in delta.iter_mut().enumerate() {
                let br = &b[(slot * s.d_out + o) * s.rank..(slot * s.d_out + o + 1) * s.rank];
                let v: f64 = br.iter().zip(&t).map(|(&p, &q)| f64::from(p) * q).sum();
                *d += we * v;
            }
        }
        for (o, d) in delta.iter().enumerate() {
            out[row * s.d_out + o] += (f64::from(scale) * d) as f32;
        }
    }
    out
}

/// The reference of [`CudaDevice::lora_gate`] for one row: the `top_k`
/// adapters of the largest logits `wg · x + bias` (ties to the lower id) and
/// their softmax weights.
pub fn gate_reference(x: &[f32], wg: &[f32], bias: &[f32], top_k: usize) -> Vec<(usize, f32)> {
    let d_in = x.len();
    let mut logits: Vec<(f64, usize)> = bias
        .iter()
        .enumerate()
        .map(|(a, &bv)| {
            let g = &wg[a * d_in..(a + 1) * d_in];
            let l: f64 = g
                .iter()
                .zip(x)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            (l + f64::from(bv), a)
        })
        .collect();
    logits.sort_by(|p, q| q.0.total_cmp(&p.0).then(p.1.cmp(&q.1)));
    logits.truncate(top_k);
    let top = logits.first().map_or(0.0, |l| l.0);
    let e: Vec<f64> = logits.iter().map(|(l, _)| (l - top).exp()).collect();
    let sum: f64 = e.iter().sum();
    logits
        .iter()
        .zip(e)
        .map(|(&(_, a), v)| (a, (v / sum) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_references_apply_each_rows_mixture_and_pick_the_top_k() {
        let shape = LoraShape {
            rows: 2,
            d_in: 2,
            d_out: 2,
            rank: 1,
            k_mix: 1,
            slots: 2,
        };
        // A: slot 0 = [1, 0], slot 1 = [0, 1]; B: slot 0 = [1, 2], slot 1 = [3, 4].
        let a = [1.0, 0.0, 0.0, 1.0];
        let b = [1.0, 2.0, 3.0, 4.0];
        let x = [2.0, 5.0, 2.0, 5.0];
        let y = [1.0, 1.0, 0.0, 0.0];
        let out = bgmv_reference(&x, &a, &b, &[0, -1], &[1.0, 1.0], &y, &shape, 0.5);
        assert_eq!(out, [2.0, 3.0, 0.0, 0.0]);
        let out = bgmv_reference(&x, &a, &b, &[1, 0], &[1.0, 1.0], &y, &shape, 1.0);
        assert_eq!(out, [16.0, 21.0, 2.0, 4.0]);
        let top = gate_reference(&[1.0, 0.0], &[0.0, 0.0, 1.0, 0.0, 1.0, 0.0], &[0.0; 3], 2);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
        assert!((top[0].1 - 0.5).abs() < 1e-6);
        let one = gate_reference(&[0.0, 0.0], &[0.0; 6], &[0.0, 1.0, 0.0], 1);
        assert_eq!(one, [(1, 1.0)]);
    }
}
