//! Multi-LoRA serving: adapters in a fixed number of device slots.
//!
//! A backend that serves adapters ([`crate::Backend::lora_adapters`] > 0)
//! keeps at most `max_loras` of them in device memory (vLLM's `max_loras`).
//! Before each step the scheduler makes every adapter of the step's batch
//! resident: an absent one is loaded into a free slot, or into the slot of the
//! least recently used adapter that no running request needs, which is evicted.
//! The distinct adapters of the running requests never exceed the slots,
//! because a waiting request is admitted only when its adapter is resident,
//! or a slot is free or evictable for it in this step; the others wait their
//! turn without blocking requests behind them (vLLM's scheduler skips them the
//! same way). The step's loads reach the backend through
//! [`crate::Backend::stage_adapters`], which prices or performs them.

use std::collections::BTreeSet;

use crate::ModelShape;

/// How a backend uses its adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraMode {
    /// Multi-LoRA serving: each request names one adapter, `slots` of them
    /// are resident at a time (the engine's `max_loras`).
    Slots {
        /// Device slots.
        slots: u32,
    },
    /// MeteoRA: every adapter is embedded; a gate in each adapted projection
    /// picks the `top_k` adapters of each token and mixes them by the softmax
    /// of their gate logits. Requests name no adapter.
    Meteora {
        /// Adapters per token.
        top_k: u32,
    },
}

/// The adapters a backend serves: how many, their rank and the mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoraConfig {
    /// Number of adapters (ids `0 .. adapters`).
    pub adapters: u32,
    /// Rank of every adapter.
    pub rank: u32,
    /// Slots or MeteoRA.
    pub mode: LoraMode,
}

impl LoraConfig {
    /// Adapters requests may name: all of them in multi-LoRA serving, none
    /// under MeteoRA (its gate picks them); what a backend's
    /// [`crate::Backend::lora_adapters`] reports.
    pub fn nameable_adapters(&self) -> u32 {
        match self.mode {
            LoraMode::Slots { .. } => self.adapters,
            LoraMode::Meteora { .. } => 0,
        }
    }

    /// Adapters that must be in device memory: the slots, or all of them for MeteoRA.
    pub fn resident_adapters(&self) -> u32 {
        match self.mode {
            LoraMode::Slots { slots } => slots.min(self.adapters),
            LoraMode::Meteora { .. } => self.adapters,
        }
    }
}

/// The projections an adapter adapts in every layer, as `(name, d_in, d_out)`:
/// every linear layer of a block (the fused qkv, o, the fused gate/up and down).
pub fn lora_projections(m: &ModelShape) -> [(&'static str, usize, usize); 4] {
    let q = m.n_heads * m.head_dim;
    let kv = m.n_kv_heads * m.head_dim;
    [
        ("qkv", m.hidden, q + 2 * kv),
        ("o", q, m.hidden),
        ("gate_up", m.hidden, 2 * m.ffn),
        ("down", m.ffn, m.hidden),
    ]
}

/// Parameters of one adapter of rank `rank`: `A` (`r × d_in`) and `B`
/// (`d_out × r`) of every adapted projection of every layer.
pub fn adapter_params(m: &ModelShape, rank: u32) -> u64 {
    let per_layer: usize = lora_projections(m).iter().map(|&(_, i, o)| i + o).sum();
    (m.n_layers * per_layer) as u64 * u64::from(rank)
}

/// Which seeded tensor of the adapters [`lora_tensor`] generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraTensor {
    /// `A` (`rank × d_in`, row-major) of one adapter, layer and projection.
    A {
        /// Adapter id.
        adapter: u32,
    },
    /// `B` (`d_out × rank`, row-major) of one adapter, layer and projection.
    B {
        /// Adapter id.
        adapter: u32,
    },
    /// MeteoRA's gate weights (`adapters × d_in`, row-major) of one layer and
    /// projection; the gate's bias is zero.
    Gate,
}

/// The seeded random values of one adapter tensor of projection `proj`
/// ([`lora_projections`] order) in layer `layer`: uniform in `±√(3/d_in)`
/// for `A` and the gate, `±0.5·√(3/rank)` for `B`, rounded to bf16 (so a
/// bf16 device holds exactly the values an f32 backend computes with).
///
/// Every value comes from a counter-based hash of `(seed, tensor, layer,
/// proj, index)`: any backend can generate any tensor alone, in any order
/// and in parallel, and gets the same values (the CPU and CUDA backends
/// check each other with it).
pub fn lora_tensor(
    shape: &ModelShape,
    cfg: &LoraConfig,
    seed: u64,
    tensor: LoraTensor,
    layer: usize,
    proj: usize,
) -> Vec<f32> {
    let (_, d_in, d_out) = lora_projections(shape)[proj];
    let r = cfg.rank as usize;
    let (kind, adapter, n, bound) = match tensor {
        LoraTensor::A { adapter } => (1u64, adapter, r * d_in, (3.0 / d_in as f32).sqrt()),
        LoraTensor::B { adapter } => (2, adapter, d_out * r, 0.5 * (3.0 / r as f32).sqrt()),
        LoraTensor::Gate => (
            3,
            u32::MAX,
            cfg.adapters as usize * d_in,
            (3.0 / d_in as f32).sqrt(),
        ),
    };
    let key = splitmix(
        seed ^ splitmix(
            (u64::from(adapter) << 32) ^ ((layer as u64) << 8) ^ ((proj as u64) << 2) ^ kind,
        ),
    );
    (0..n as u64)
        .map(|i| {
            let u = (splitmix(key.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15))) >> 40)
                as f32
                * (2.0 / 16_777_216.0)
                - 1.0;
            round_bf16(u * bound)
        })
        .collect()
}

/// SplitMix64's finaliser: a bijective 64-bit hash.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `x` rounded to the nearest bf16 (ties to even); `x` finite.
fn round_bf16(x: f32) -> f32 {
    let b = x.to_bits();
    f32::from_bits(b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000)
}

/// The adapters one step uses, handed to the backend before its `forward`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdapterStep {
    /// The adapter of each batch entry, in entry order (`None`: base model).
    pub entries: Vec<Option<u32>>,
    /// Adapters copied into a device slot before this step.
    pub loads: Vec<u32>,
    /// Adapters evicted from their slot to make room for `loads`.
    pub evictions: Vec<u32>,
}

impl AdapterStep {
    /// Whether any entry uses an adapter.
    pub fn uses_adapters(&self) -> bool {
        self.entries.iter().any(Option::is_some)
    }

    /// The distinct adapters of the batch.
    pub fn distinct(&self) -> BTreeSet<u32> {
        self.entries.iter().flatten().copied().collect()
    }
}

/// Device adapter slots with least-recently-used replacement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSlots {
    capacity: u32,
    /// `(adapter, step it was last used)` per occupied slot.
    resident: Vec<(u32, u64)>,
    clock: u64,
}

impl AdapterSlots {
    /// `capacity` empty slots.
    pub fn new(capacity: u32) -> Self {
        Self {
            capacity,
            resident: Vec::new(),
            clock: 0,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Slots holding an adapter.
    pub fn used(&self) -> u32 {
        self.resident.len() as u32
    }

    /// Whether `adapter` is in a slot.
    pub fn is_resident(&self, adapter: u32) -> bool {
        self.resident.iter().any(|&(a, _)| a == adapter)
    }

    /// The resident adapters, in slot order.
    pub fn resident(&self) -> Vec<u32> {
        self.resident.iter().map(|&(a, _)| a).collect()
    }

    /// Makes every adapter of `needed` resident and marks it used now,
    /// evicting least recently used adapters outside `pinned` (and outside
    /// `needed`). Returns the loads and the evictions, or `None`, changing
    /// nothing, when the slots cannot hold them all.
    pub fn make_resident(
        &mut self,
        needed: &BTreeSet<u32>,
        pinned: &BTreeSet<u32>,
    ) -> Option<(Vec<u32>, Vec<u32>)> {
        let missing: Vec<u32> = needed
            .iter()
            .copied()
            .filter(|&a| !self.is_resident(a))
            .collect();
        let free = self.capacity.saturating_sub(self.used()) as usize;
        let mut victims: Vec<(u64, u32)> = self
            .resident
            .iter()
            .filter(|(a, _)| !pinned.contains(a) && !needed.contains(a))
            .map(|&(a, t)| (t, a))
            .collect();
        if missing.len() > free + victims.len() {
            return None;
        }
        victims.sort_unstable();
        let evicted: Vec<u32> = victims
            .iter()
            .take(missing.len().saturating_sub(free))
            .map(|&(_, a)| a)
            .collect();
        self.clock += 1;
        self.resident.retain(|(a, _)| !evicted.contains(a));
        for &a in &missing {
            self.resident.push((a, self.clock));
        }
        for (a, t) in &mut self.resident {
            if needed.contains(a) {
                *t = self.clock;
            }
        }
        Some((missing, evicted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_tensors_are_seeded_bf16_exact_and_distinct() {
        let shape = ModelShape::tiny();
        let cfg = LoraConfig {
            adapters: 3,
            rank: 4,
            mode: LoraMode::Slots { slots: 2 },
        };
        let a = |adapter, seed| lora_tensor(&shape, &cfg, seed, LoraTensor::A { adapter }, 1, 2);
        assert_eq!(a(0, 7), a(0, 7));
        assert_ne!(a(0, 7), a(1, 7));
        assert_ne!(a(0, 7), a(0, 8));
        let v = a(2, 7);
        assert_eq!(v.len(), 4 * shape.hidden);
        let bound = (3.0 / shape.hidden as f32).sqrt();
        assert!(
            v.iter()
                .all(|x| x.abs() <= bound * 1.004 && x.to_bits() & 0xffff == 0)
        );
        let b = lora_tensor(&shape, &cfg, 7, LoraTensor::B { adapter: 0 }, 1, 2);
        assert_eq!(b.len(), 2 * shape.ffn * 4);
        let g = lora_tensor(&shape, &cfg, 7, LoraTensor::Gate, 0, 3);
        assert_eq!(g.len(), 3 * shape.ffn);
        assert_eq!(round_bf16(1.0 + 1.0 / 512.0), 1.0);
        assert_eq!(round_bf16(1.0 + 3.0 / 512.0), 1.0 + 4.0 / 512.0);
    }

    fn set(v: &[u32]) -> BTreeSet<u32> {
        v.iter().copied().collect()
    }

    #[test]
    fn least_recently_used_unpinned_adapter_is_evicted() {
        let mut s = AdapterSlots::new(2);
        assert_eq!(
            s.make_resident(&set(&[1]), &set(&[])),
            Some((vec![1], vec![]))
        );
        assert_eq!(
            s.make_resident(&set(&[2]), &set(&[])),
            Some((vec![2], vec![]))
        );
        assert_eq!(
            s.make_resident(&set(&[1]), &set(&[])),
            Some((vec![], vec![]))
        );
        // 2 is now the least recently used.
        assert_eq!(
            s.make_resident(&set(&[3]), &set(&[])),
            Some((vec![3], vec![2]))
        );
        assert_eq!(s.resident(), [1, 3]);
        // A pinned adapter is never evicted, even when it is the oldest.
        assert_eq!(
            s.make_resident(&set(&[4]), &set(&[1])),
            Some((vec![4], vec![3]))
        );
        assert_eq!(s.make_resident(&set(&[5, 6]), &set(&[1])), None);
        assert_eq!(s.resident(), [1, 4]);
        assert_eq!(
            s.make_resident(&set(&[5, 6]), &set(&[])),
            Some((vec![5, 6], vec![1, 4]))
        );
        assert_eq!(s.used(), 2);
    }
}
