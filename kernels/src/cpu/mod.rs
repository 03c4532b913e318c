//! CPU kernels in f32, each with a reference implementation.
//!
//! Layout conventions shared by every kernel:
//! * activations are row-major `[tokens, heads, head_dim]` (heads and
//!   head_dim flattened per token);
//! * the KV cache of one layer is `[num_blocks, block_size, kv_heads, head_dim]`
//!   for K and the same for V ([`paged::PagedKv`]);
//! * grouped-query attention maps query head `h` to KV head `h / (heads / kv_heads)`.

pub mod activation;
pub mod attention;
pub mod decode;
pub mod norm;
pub mod paged;
pub mod rope;
