//! The CUDA backend: cudarc, NVRTC kernels and cuBLAS on NVIDIA GPUs.
