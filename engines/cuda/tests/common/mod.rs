//! What the CUDA GPU test binaries share: building a backend or skipping
//! without a GPU, and weights both backends hold exactly.
#![allow(dead_code)] // each test binary uses the part it needs

use std::path::Path;

use fuselab_cuda::{CudaBackend, ModelShape};
use fuselab_kernels::cuda::skip;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// Builds a backend, or skips the test (fails it under `FUSELAB_REQUIRE_GPU=1`)
/// when the device is unusable.
pub fn cuda_or_skip(
    test: &str,
    make: impl FnOnce() -> Result<CudaBackend, fuselab_cuda::CudaBackendError>,
) -> Option<CudaBackend> {
    match make() {
        Ok(b) => Some(b),
        Err(e) if e.to_string().contains("no CUDA driver found") => {
            skip(test, &e);
            None
        }
        Err(e) => panic!("{test}: building the CUDA backend failed: {e}"),
    }
}

/// Writes the CPU crate's random weights for `cfg`, rounded to bf16, as a BF16
/// safetensors file: both backends then hold exactly the same weights.
pub fn write_bf16_weights(cfg: &ModelShape, seed: u64, dir: &Path) -> std::path::PathBuf {
    let f32_path = dir.join("f32.safetensors");
    fuselab_cpu::write_random_safetensors(cfg, seed, &f32_path).unwrap();
    let bytes = std::fs::read(&f32_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32);
            let data = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| {
                    half::bf16::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes()
                })
                .collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = converted
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::BF16, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let path = dir.join("bf16.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}
