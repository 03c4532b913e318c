//! Device weights: seeded random (filled on the GPU) or uploaded from
//! Hugging Face layout tensors (a safetensors file), all bf16.
//!
//! Projections keep the Hugging Face `[out, in]` layout, which is what
//! [`CudaDevice::gemm`] takes; Q, K and V are stacked into one `[q + 2·kv,
//! hidden]` matrix (one GEMM in decode; its row blocks are still valid
//! matrices for three GEMMs at large token counts), the layout
//! [`CudaDevice::qkv_rope_cache`] reads, and gate/up into one `[2·ffn, hidden]`
//! matrix (gate rows first), the layout [`CudaDevice::silu_mul`] reads.

use std::path::Path;

use cudarc::driver::CudaSlice;
use fuselab_kernels::cuda::CudaDevice;
use half::bf16;
use safetensors::{Dtype, SafeTensors};

use crate::CudaBackendError;
use fuselab_engine::ModelShape;

/// One transformer layer on the device.
#[derive(Debug)]
pub(crate) struct LayerWeights {
    pub(crate) attn_norm: CudaSlice<bf16>,
    /// `[q_width + 2·kv_width, hidden]`: q rows, then k, then v.
    pub(crate) wqkv: CudaSlice<bf16>,
    pub(crate) wo: CudaSlice<bf16>,
    pub(crate) mlp_norm: CudaSlice<bf16>,
    pub(crate) w_gate_up: CudaSlice<bf16>,
    pub(crate) w_down: CudaSlice<bf16>,
}

/// Every weight of the model on the device.
#[derive(Debug)]
pub(crate) struct DeviceWeights {
    /// `[vocab, hidden]`.
    pub(crate) embed: CudaSlice<bf16>,
    pub(crate) layers: Vec<LayerWeights>,
    pub(crate) norm: CudaSlice<bf16>,
    /// `[vocab, hidden]`.
    pub(crate) lm_head: CudaSlice<bf16>,
}

/// SplitMix64 step: per-tensor seeds and host-side norm weights.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One device buffer holding `parts` back to back.
fn stack(dev: &CudaDevice, parts: &[CudaSlice<bf16>]) -> Result<CudaSlice<bf16>, CudaBackendError> {
    let mut out = dev.alloc_bf16(parts.iter().map(CudaSlice::len).sum())?;
    let mut at = 0;
    for p in parts {
        dev.stream()
            .memcpy_dtod(p, &mut out.slice_mut(at..at + p.len()))
            .map_err(|e| CudaBackendError::driver("stacking the q, k and v weights", e))?;
        at += p.len();
    }
    Ok(out)
}

impl DeviceWeights {
    /// Seeded random weights filled on the device, scaled as the CPU engine's
    /// random weights: projections uniform in ±√(3/in) (unit output variance),
    /// embeddings in ±1, norm weights 1 ± 0.1 — activations stay O(1) through
    /// every layer, so bf16 never overflows.
    pub(crate) fn random(
        dev: &CudaDevice,
        cfg: &ModelShape,
        seed: u64,
    ) -> Result<Self, CudaBackendError> {
        let mut counter = 0u64;
        let mut next_seed = || {
            counter += 1;
            mix(seed ^ mix(counter))
        };
        let mut fill = |n: usize, scale: f32| -> Result<CudaSlice<bf16>, CudaBackendError> {
            let mut b = dev.alloc_bf16(n)?;
            dev.fill_uniform(&mut b, next_seed(), scale)?;
            Ok(b)
        };
        let proj = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
        let (h, q, kv, f, v) = (
            cfg.hidden,
            cfg.q_width(),
            cfg.kv_width(),
            cfg.ffn,
            cfg.vocab,
        );
        let embed = fill(v * h, 1.0)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let mut norm_seed = seed;
        let mut norm = |dev: &CudaDevice| -> Result<CudaSlice<bf16>, CudaBackendError> {
            norm_seed = mix(norm_seed);
            let host: Vec<bf16> = (0..h as u64)
                .map(|i| {
                    let u = (mix(norm_seed ^ i) >> 40) as f32 / 16_777_216.0;
                    bf16::from_f32(1.0 + 0.2 * (u - 0.5))
                })
                .collect();
            Ok(dev.upload(&host)?)
        };
        for _ in 0..cfg.n_layers {
            let attn_norm = norm(dev)?;
            // Filled as three tensors (the same values as separate q, k, v weights).
            let parts = [
                fill(q * h, proj(h))?,
                fill(kv * h, proj(h))?,
                fill(kv * h, proj(h))?,
            ];
            layers.push(LayerWeights {
                attn_norm,
                wqkv: stack(dev, &parts)?,
                wo: fill(h * q, proj(q))?,
                mlp_norm: norm(dev)?,
                w_gate_up: fill(2 * f * h, proj(h))?,
                w_down: fill(h * f, proj(f))?,
            });
        }
        let final_norm = norm(dev)?;
        let lm_head = fill(v * h, proj(h))?;
        Ok(Self {
            embed,
            layers,
            norm: final_norm,
            lm_head,
        })
    }

    /// Bytes the weights occupy on the device.
    pub(crate) fn bytes(&self) -> u64 {
        let layer = |l: &LayerWeights| {
            l.attn_norm.len()
                + l.wqkv.len()
                + l.wo.len()
                + l.mlp_norm.len()
                + l.w_gate_up.len()
                + l.w_down.len()
        };
        let n = self.embed.len()
            + self.norm.len()
            + self.lm_head.len()
            + self.layers.iter().map(layer).sum::<usize>();
        2 * n as u64
    }

    /// A draft made from [`Self::random`] weights of `cfg`: copies of the
    /// embeddings, the first `layers` layers, the final norm and the head, and
    /// on every matrix seeded uniform noise of `noise` × its RMS (the random
    /// fill's RMS: a uniform ±a matrix has RMS a/√3, so the noise is ±noise·a).
    /// Norm weights are copied unperturbed.
    pub(crate) fn perturbed(
        &self,
        dev: &CudaDevice,
        cfg: &ModelShape,
        layers: usize,
        noise: f32,
        seed: u64,
    ) -> Result<Self, CudaBackendError> {
        let mut counter = 0u64;
        let mut copy = |src: &CudaSlice<bf16>,
                        amplitude: Option<f32>|
         -> Result<CudaSlice<bf16>, CudaBackendError> {
            let mut out = dev.alloc_bf16(src.len())?;
            dev.stream()
                .memcpy_dtod(src, &mut out)
                .map_err(|e| CudaBackendError::driver("copying the draft's weights", e))?;
            if let Some(a) = amplitude.filter(|_| noise > 0.0) {
                counter += 1;
                let mut n = dev.alloc_bf16(src.len())?;
                dev.fill_uniform(&mut n, mix(seed ^ mix(counter ^ 0xd1af)), noise * a)?;
                dev.add_inplace(&mut out, &n, src.len())?;
            }
            Ok(out)
        };
        let proj = |fan_in: usize| Some((3.0 / fan_in as f32).sqrt());
        let (h, q, f) = (cfg.hidden, cfg.q_width(), cfg.ffn);
        let embed = copy(&self.embed, Some(1.0))?;
        let mut out = Vec::with_capacity(layers);
        for l in self.layers.iter().take(layers) {
            out.push(LayerWeights {
                attn_norm: copy(&l.attn_norm, None)?,
                wqkv: copy(&l.wqkv, proj(h))?,
                wo: copy(&l.wo, proj(q))?,
                mlp_norm: copy(&l.mlp_norm, None)?,
                w_gate_up: copy(&l.w_gate_up, proj(h))?,
                w_down: copy(&l.w_down, proj(f))?,
            });
        }
        Ok(Self {
            embed,
            layers: out,
            norm: copy(&self.norm, None)?,
            lm_head: copy(&self.lm_head, proj(h))?,
        })
    }

    /// Uploads the tensors of a safetensors file with Hugging Face Llama names
    /// (F32, F16 or BF16), rounding to bf16. `lm_head.weight` may be absent
    /// (tied embeddings).
    pub(crate) fn from_safetensors(
        dev: &CudaDevice,
        cfg: &ModelShape,
        path: &Path,
    ) -> Result<Self, CudaBackendError> {
        let file_err = |message: String| CudaBackendError::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(format!("not a valid safetensors file: {e}")))?;
        let get = |name: &str, shape: &[usize]| -> Result<Vec<bf16>, CudaBackendError> {
            let view = st.tensor(name).map_err(|_| {
                file_err(format!(
                    "tensor {name} is missing (expected shape {shape:?}); the file must use Hugging Face Llama names"
                ))
            })?;
            if view.shape() != shape {
                return Err(file_err(format!(
                    "tensor {name} has shape {:?} but the model config needs {shape:?}",
                    view.shape()
                )));
            }
            let d = view.data();
            match view.dtype() {
                Dtype::F32 => Ok(d
                    .chunks_exact(4)
                    .map(|b| bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect()),
                Dtype::F16 => Ok(d
                    .chunks_exact(2)
                    .map(|b| bf16::from_f32(half::f16::from_le_bytes([b[0], b[1]]).to_f32()))
                    .collect()),
                Dtype::BF16 => Ok(d
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                    .collect()),
                other => Err(file_err(format!(
                    "tensor {name} has dtype {other:?}; use F32, F16 or BF16"
                ))),
            }
        };
        let up = |name: &str, shape: &[usize]| -> Result<CudaSlice<bf16>, CudaBackendError> {
            Ok(dev.upload(&get(name, shape)?)?)
        };
        let (h, q, kv, f, v) = (
            cfg.hidden,
            cfg.q_width(),
            cfg.kv_width(),
            cfg.ffn,
            cfg.vocab,
        );
        let embed = up("model.embed_tokens.weight", &[v, h])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let p = format!("model.layers.{l}");
            let mut gate_up = get(&format!("{p}.mlp.gate_proj.weight"), &[f, h])?;
            gate_up.extend(get(&format!("{p}.mlp.up_proj.weight"), &[f, h])?);
            let mut qkv = get(&format!("{p}.self_attn.q_proj.weight"), &[q, h])?;
            qkv.extend(get(&format!("{p}.self_attn.k_proj.weight"), &[kv, h])?);
            qkv.extend(get(&format!("{p}.self_attn.v_proj.weight"), &[kv, h])?);
            layers.push(LayerWeights {
                attn_norm: up(&format!("{p}.input_layernorm.weight"), &[h])?,
                wqkv: dev.upload(&qkv)?,
                wo: up(&format!("{p}.self_attn.o_proj.weight"), &[h, q])?,
                mlp_norm: up(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
                w_gate_up: dev.upload(&gate_up)?,
                w_down: up(&format!("{p}.mlp.down_proj.weight"), &[h, f])?,
            });
        }
        let norm = up("model.norm.weight", &[h])?;
        let lm_head = if st.tensor("lm_head.weight").is_ok() {
            up("lm_head.weight", &[v, h])?
        } else {
            up("model.embed_tokens.weight", &[v, h])?
        };
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
        })
    }
}
