//! The paged KV cache of one layer and the write of new K/V rows into it.
//!
//! Storage is `[num_blocks, block_size, kv_heads, head_dim]` for K and for V.
//! A sequence owns a list of block ids (its block table); position `p` of the
//! sequence lives in block `table[p / block_size]`, slot `p % block_size`.

use crate::KernelError;
use crate::error::check_len;

/// Head counts and head size of an attention layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
}

impl AttnShape {
    /// Checks that the head counts are positive and `n_heads` is a multiple of `n_kv_heads`.
    pub fn validate(&self) -> Result<(), KernelError> {
        if self.n_heads == 0 || self.n_kv_heads == 0 || self.head_dim == 0 {
            return Err(KernelError::Config(format!(
                "heads ({}), kv heads ({}) and head_dim ({}) must all be positive",
                self.n_heads, self.n_kv_heads, self.head_dim
            )));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(KernelError::Config(format!(
                "{} query heads are not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            )));
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Elements of one token's queries (`n_heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Elements of one token's keys (`n_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

/// K and V storage of one layer, in blocks.
#[derive(Clone, Debug)]
pub struct PagedKv {
    block_size: usize,
    num_blocks: usize,
    kv_width: usize,
    k: Vec<f32>,
    v: Vec<f32>,
}

impl PagedKv {
    /// Allocates a zeroed cache of `num_blocks` blocks of `block_size` tokens,
    /// each token holding `kv_width` (= kv heads × head_dim) values of K and of V.
    pub fn new(block_size: usize, num_blocks: usize, kv_width: usize) -> Result<Self, KernelError> {
        if block_size == 0 || kv_width == 0 {
            return Err(KernelError::Config(format!(
                "block_size ({block_size}) and kv width ({kv_width}) must be positive"
            )));
        }
        let n = block_size
            .checked_mul(num_blocks)
            .and_then(|t| t.checked_mul(kv_width))
            .ok_or_else(|| KernelError::Config("KV cache size overflows usize".into()))?;
        Ok(Self {
            block_size,
            num_blocks,
            kv_width,
            k: vec![0.0; n],
            v: vec![0.0; n],
        })
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks in the cache.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Values per token (kv heads × head_dim).
    pub fn kv_width(&self) -> usize {
        self.kv_width
    }

    /// Checks that `table` covers positions `0 .. len` with in-range block ids.
    pub fn check_table(&self, table: &[u32], len: usize) -> Result<(), KernelError> {
        let needed = len.div_ceil(self.block_size);
        if table.len() < needed {
            return Err(KernelError::BlockTable(format!(
                "{} blocks cover {} positions but {len} are needed (block size {})",
                table.len(),
                table.len() * self.block_size,
                self.block_size
            )));
        }
        if let Some(b) = table[..needed]
            .iter()
            .find(|&&b| b as usize >= self.num_blocks)
        {
            return Err(KernelError::BlockTable(format!(
                "block id {b} is outside the cache of {} blocks",
                self.num_blocks
            )));
        }
        Ok(())
    }

    /// Offset of position `pos` in the flat K (or V) storage. The table must
    /// have been checked with [`Self::check_table`].
    #[inline]
    pub fn offset(&self, table: &[u32], pos: usize) -> usize {
        let block = table[pos / self.block_size] as usize;
        (block * self.block_size + pos % self.block_size) * self.kv_width
    }

    /// Keys of position `pos`.
    #[inline]
    pub fn k_at(&self, table: &[u32], pos: usize) -> &[f32] {
        let o = self.offset(table, pos);
        &self.k[o..o + self.kv_width]
    }

    /// Values of position `pos`.
    #[inline]
    pub fn v_at(&self, table: &[u32], pos: usize) -> &[f32] {
        let o = self.offset(table, pos);
        &self.v[o..o + self.kv_width]
    }

    /// Writes `n` tokens of K and V (`[n, kv_width]` each) at positions
    /// `start_pos .. start_pos + n` of the sequence with block table `table`.
    pub fn write(
        &mut self,
        table: &[u32],
        start_pos: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), KernelError> {
        let n = k.len() / self.kv_width;
        check_len("k rows", k.len(), n * self.kv_width)?;
        check_len("v rows", v.len(), n * self.kv_width)?;
        self.check_table(table, start_pos + n)?;
        for i in 0..n {
            let o = self.offset(table, start_pos + i);
            let src = i * self.kv_width..(i + 1) * self.kv_width;
            self.k[o..o + self.kv_width].copy_from_slice(&k[src.clone()]);
            self.v[o..o + self.kv_width].copy_from_slice(&v[src]);
        }
        Ok(())
    }

    /// Gathers positions `0 .. len` of a sequence into dense `[len, kv_width]` K and V.
    pub fn gather(&self, table: &[u32], len: usize) -> Result<(Vec<f32>, Vec<f32>), KernelError> {
        self.check_table(table, len)?;
        let mut k = Vec::with_capacity(len * self.kv_width);
        let mut v = Vec::with_capacity(len * self.kv_width);
        for p in 0..len {
            k.extend_from_slice(self.k_at(table, p));
            v.extend_from_slice(self.v_at(table, p));
        }
        Ok((k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_gather_round_trips_through_scattered_blocks() {
        let mut kv = PagedKv::new(4, 8, 3).unwrap();
        let table = [5u32, 2, 7];
        let k: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let v: Vec<f32> = (0..30).map(|i| -(i as f32)).collect();
        kv.write(&table, 0, &k[..12], &v[..12]).unwrap();
        kv.write(&table, 4, &k[12..], &v[12..]).unwrap();
        let (gk, gv) = kv.gather(&table, 10).unwrap();
        assert_eq!(gk, k);
        assert_eq!(gv, v);
        // position 4 is the first slot of block 2
        assert_eq!(kv.offset(&table, 4), 2 * 4 * 3);
    }

    #[test]
    fn short_or_out_of_range_tables_are_refused() {
        let mut kv = PagedKv::new(4, 2, 1).unwrap();
        let e = kv.write(&[0], 2, &[1.0; 3], &[1.0; 3]).unwrap_err();
        assert!(e.to_string().contains("5 are needed"), "{e}");
        let e = kv.check_table(&[0, 9], 6).unwrap_err();
        assert!(e.to_string().contains("block id 9"), "{e}");
    }
}
