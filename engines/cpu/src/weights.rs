//! Model weights: seeded random or loaded from safetensors (Hugging Face Llama names).
//!
//! Weights are given in the Hugging Face layout (`[out, in]` for projections)
//! and stored transposed (`[in, out]`) as candle tensors, with Q/K/V fused into
//! one `[hidden, q + 2·kv]` matrix and gate/up into one `[hidden, 2·ffn]`
//! matrix so that each layer runs four GEMMs.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::{CpuError, ModelShape};

/// One tensor in the Hugging Face layout: name, shape, row-major values.
pub(crate) type HfTensor = (String, Vec<usize>, Vec<f32>);

/// The weights of one transformer layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerWeights {
    pub(crate) attn_norm: Vec<f32>,
    /// `[hidden, q + 2 kv]`.
    pub(crate) wqkv: Tensor,
    /// `[q, hidden]`.
    pub(crate) wo: Tensor,
    pub(crate) mlp_norm: Vec<f32>,
    /// `[hidden, 2 ffn]` (gate columns first).
    pub(crate) w_gate_up: Tensor,
    /// `[ffn, hidden]`.
    pub(crate) w_down: Tensor,
}

/// All weights of a model, ready for the forward pass.
#[derive(Clone, Debug)]
pub struct Weights {
    /// `[vocab, hidden]`, row-major.
    pub(crate) embed: Vec<f32>,
    pub(crate) layers: Vec<LayerWeights>,
    pub(crate) norm: Vec<f32>,
    /// `[hidden, vocab]`.
    pub(crate) lm_head: Tensor,
}

/// Every tensor the config needs, in a fixed order, with its HF shape.
pub(crate) fn expected_tensors(cfg: &ModelShape) -> Vec<(String, Vec<usize>)> {
    let (h, q, kv, f, v) = (
        cfg.hidden,
        cfg.q_width(),
        cfg.kv_width(),
        cfg.ffn,
        cfg.vocab,
    );
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..cfg.n_layers {
        let p = format!("model.layers.{l}");
        t.push((format!("{p}.input_layernorm.weight"), vec![h]));
        t.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
        t.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
        t.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![f, h]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![f, h]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![h, f]));
    }
    t.push(("model.norm.weight".to_string(), vec![h]));
    if !cfg.tie_embeddings {
        t.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    t
}

/// Seeded random tensors in the HF layout: projections uniform with unit
/// output variance, norm weights near 1, embeddings uniform in ±1.
pub(crate) fn random_hf_tensors(cfg: &ModelShape, seed: u64) -> Vec<HfTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    expected_tensors(cfg)
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if shape.len() == 1 {
                (0..n)
                    .map(|_| 1.0 + rng.random_range(-0.1f32..0.1))
                    .collect()
            } else if name.contains("embed_tokens") {
                (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
            } else {
                let a = (3.0 / shape[1] as f32).sqrt();
                (0..n).map(|_| rng.random_range(-a..a)).collect()
            };
            (name, shape, data)
        })
        .collect()
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

impl Weights {
    /// Seeded random weights for `cfg`.
    pub fn random(cfg: &ModelShape, seed: u64) -> Result<Self, CpuError> {
        cfg.validate()?;
        Self::from_hf(cfg, random_hf_tensors(cfg, seed))
    }

    /// Builds weights from HF-layout tensors in [`expected_tensors`] order.
    pub(crate) fn from_hf(cfg: &ModelShape, tensors: Vec<HfTensor>) -> Result<Self, CpuError> {
        let mut it = tensors.into_iter().map(|(_, _, d)| d);
        let mut next = || {
            it.next()
                .ok_or_else(|| CpuError::Batch("internal: too few weight tensors".into()))
        };
        let (h, q, kv, f, v) = (
            cfg.hidden,
            cfg.q_width(),
            cfg.kv_width(),
            cfg.ffn,
            cfg.vocab,
        );
        let dev = Device::Cpu;
        let embed = next()?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for _ in 0..cfg.n_layers {
            let attn_norm = next()?;
            let mut qkv = next()?;
            qkv.extend(next()?);
            qkv.extend(next()?);
            let wqkv = Tensor::from_vec(transpose(&qkv, q + 2 * kv, h), (h, q + 2 * kv), &dev)?;
            let wo = Tensor::from_vec(transpose(&next()?, h, q), (q, h), &dev)?;
            let mlp_norm = next()?;
            let mut gu = next()?;
            gu.extend(next()?);
            let w_gate_up = Tensor::from_vec(transpose(&gu, 2 * f, h), (h, 2 * f), &dev)?;
            let w_down = Tensor::from_vec(transpose(&next()?, h, f), (f, h), &dev)?;
            layers.push(LayerWeights {
                attn_norm,
                wqkv,
                wo,
                mlp_norm,
                w_gate_up,
                w_down,
            });
        }
        let norm = next()?;
        let head = if cfg.tie_embeddings {
            transpose(&embed, v, h)
        } else {
            transpose(&next()?, v, h)
        };
        let lm_head = Tensor::from_vec(head, (h, v), &dev)?;
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
        })
    }

    /// A draft model's weights made from these (a target's) by a documented
    /// perturbation: the first `layers` transformer layers only, and every
    /// matrix (embeddings, projections, `lm_head`) plus seeded noise of
    /// `noise` × the matrix's RMS per element (uniform, unit variance; the
    /// norm weights are kept). `layers = all, noise = 0` is an exact copy.
    ///
    /// # Errors
    /// `layers` of 0 or more than the model has; a tensor error.
    pub fn perturbed(&self, layers: usize, noise: f64, seed: u64) -> Result<Self, CpuError> {
        if layers == 0 || layers > self.layers.len() {
            return Err(fuselab_core::Error::invalid(
                "--draft-layers",
                format!("{layers} layers of a {}-layer target", self.layers.len()),
                format!(
                    "give 1 to {} (the draft keeps the target's first layers)",
                    self.layers.len()
                ),
            )
            .into());
        }
        if !(noise.is_finite() && noise >= 0.0) {
            return Err(fuselab_core::Error::invalid(
                "--draft-noise",
                format!("{noise} is not a noise scale"),
                "give a scale ≥ 0 relative to each matrix's RMS, e.g. --draft-noise 0.1",
            )
            .into());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut noisy = |x: &[f32]| -> Vec<f32> {
            if noise == 0.0 {
                return x.to_vec();
            }
            let rms = (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
                / x.len().max(1) as f64)
                .sqrt();
            let a = (noise * rms * 3f64.sqrt()) as f32;
            x.iter().map(|v| v + rng.random_range(-a..=a)).collect()
        };
        let mut noisy_t = |t: &Tensor| -> Result<Tensor, CpuError> {
            let data = t.flatten_all()?.to_vec1::<f32>()?;
            Ok(Tensor::from_vec(noisy(&data), t.dims(), &Device::Cpu)?)
        };
        let embed = noisy_t(&Tensor::from_slice(
            &self.embed,
            self.embed.len(),
            &Device::Cpu,
        )?)?
        .to_vec1::<f32>()?;
        let mut out_layers = Vec::with_capacity(layers);
        for l in &self.layers[..layers] {
            out_layers.push(LayerWeights {
                attn_norm: l.attn_norm.clone(),
                wqkv: noisy_t(&l.wqkv)?,
                wo: noisy_t(&l.wo)?,
                mlp_norm: l.mlp_norm.clone(),
                w_gate_up: noisy_t(&l.w_gate_up)?,
                w_down: noisy_t(&l.w_down)?,
            });
        }
        Ok(Self {
            embed,
            layers: out_layers,
            norm: self.norm.clone(),
            lm_head: noisy_t(&self.lm_head)?,
        })
    }

    /// Loads weights for `cfg` from a safetensors file with Hugging Face Llama
    /// names (`model.embed_tokens.weight`, `model.layers.N.self_attn.q_proj.weight`,
    /// …, `lm_head.weight` unless tied). F32, F16 and BF16 tensors are accepted.
    ///
    /// A missing or mis-shaped tensor is an error naming the tensor and both shapes.
    pub fn from_safetensors(cfg: &ModelShape, path: &Path) -> Result<Self, CpuError> {
        cfg.validate()?;
        let file_err = |message: String| CpuError::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| file_err(format!("cannot read: {e}")))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| file_err(format!("not a valid safetensors file: {e}")))?;
        let mut tensors = Vec::new();
        for (name, expected) in expected_tensors(cfg) {
            let view = st.tensor(&name).map_err(|_| CpuError::MissingTensor {
                path: path.to_path_buf(),
                name: name.clone(),
                expected: expected.clone(),
            })?;
            if view.shape() != expected.as_slice() {
                return Err(CpuError::TensorShape {
                    path: path.to_path_buf(),
                    name,
                    expected,
                    found: view.shape().to_vec(),
                });
            }
            let data = to_f32(&view).map_err(|m| file_err(format!("tensor {name}: {m}")))?;
            tensors.push((name, expected, data));
        }
        tracing::debug!(path = %path.display(), tensors = tensors.len(), "loaded safetensors weights");
        Self::from_hf(cfg, tensors)
    }
}

fn to_f32(view: &TensorView<'_>) -> Result<Vec<f32>, String> {
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(d
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        Dtype::F16 => Ok(d
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        Dtype::BF16 => Ok(d
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect()),
        other => Err(format!(
            "dtype {other:?} is not supported; use F32, F16 or BF16"
        )),
    }
}

/// Writes seeded random weights for `cfg` as an F32 safetensors file with
/// Hugging Face Llama names (what [`Weights::from_safetensors`] reads).
pub fn write_random_safetensors(cfg: &ModelShape, seed: u64, path: &Path) -> Result<(), CpuError> {
    cfg.validate()?;
    write_safetensors(&random_hf_tensors(cfg, seed), path)
}

/// Writes HF-layout tensors as F32 safetensors.
pub(crate) fn write_safetensors(tensors: &[HfTensor], path: &Path) -> Result<(), CpuError> {
    let file_err = |message: String| CpuError::File {
        path: path.to_path_buf(),
        message,
    };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(format!("cannot build tensor: {e}")))?;
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| file_err(format!("cannot write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Model;

    fn micro() -> ModelShape {
        ModelShape {
            name: "micro".into(),
            n_layers: 2,
            hidden: 16,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
            ffn: 24,
            vocab: 50,
            ..ModelShape::tiny()
        }
    }

    #[test]
    fn safetensors_round_trip_gives_the_same_model() {
        let cfg = micro();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        write_random_safetensors(&cfg, 9, &path).unwrap();
        let loaded =
            Model::new(cfg.clone(), Weights::from_safetensors(&cfg, &path).unwrap()).unwrap();
        let random = Model::random(cfg, 9).unwrap();
        let toks = [1u32, 7, 42, 3];
        assert_eq!(
            loaded.naive_logits(&toks).unwrap(),
            random.naive_logits(&toks).unwrap()
        );
    }

    #[test]
    fn tied_embeddings_need_no_lm_head() {
        let cfg = ModelShape {
            tie_embeddings: true,
            ..micro()
        };
        assert!(
            !expected_tensors(&cfg)
                .iter()
                .any(|(n, _)| n == "lm_head.weight")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tied.safetensors");
        write_random_safetensors(&cfg, 1, &path).unwrap();
        let w = Weights::from_safetensors(&cfg, &path).unwrap();
        // lm_head is the transposed embedding
        let head = w
            .lm_head
            .t()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(head, w.embed);
    }

    #[test]
    fn missing_and_misshaped_tensors_name_the_tensor_and_both_shapes() {
        let cfg = micro();
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = random_hf_tensors(&cfg, 3);
        tensors.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight");
        let missing = dir.path().join("missing.safetensors");
        write_safetensors(&tensors, &missing).unwrap();
        let e = Weights::from_safetensors(&cfg, &missing)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.layers.1.mlp.up_proj.weight")
                && e.contains("[24, 16]")
                && e.contains("missing"),
            "{e}"
        );

        let mut tensors = random_hf_tensors(&cfg, 3);
        let k = tensors
            .iter_mut()
            .find(|(n, _, _)| n == "model.layers.0.self_attn.k_proj.weight")
            .unwrap();
        k.1 = vec![4, 16];
        k.2.truncate(64);
        let bad = dir.path().join("bad.safetensors");
        write_safetensors(&tensors, &bad).unwrap();
        let e = Weights::from_safetensors(&cfg, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.layers.0.self_attn.k_proj.weight")
                && e.contains("[4, 16]")
                && e.contains("[8, 16]"),
            "{e}"
        );

        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a safetensors file").unwrap();
        let e = Weights::from_safetensors(&cfg, &junk)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid safetensors file"), "{e}");
        let e = Weights::from_safetensors(&cfg, &dir.path().join("absent"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
