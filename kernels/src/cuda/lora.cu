#ifndef FUSELAB_TUNE_ONLY

// ---------------------------------------------------------------- LoRA (BGMV) and MeteoRA's gate
//
// Appended to source.cu (one NVRTC module): uses its bf16 typedefs, warp_sum and smem_raw.
//
// Every token row carries k_mix mixture entries (slot, weight): idx[row * k_mix + e] is a
// slot of the adapter storage (-1: no adapter) and w[row * k_mix + e] its weight. Storage
// per projection and layer: A [slots, rank, d_in] and B [slots, d_out, rank], bf16.
// t holds the shrunk activations [rows, k_mix, rank] in f32.

#define LORA_SHRINK_TILE 4
#define LORA_RANK_CHUNK 16

__device__ __forceinline__ float dot8(const uint4& xa, const uint4& aa, float acc) {
    const bf162* xp = reinterpret_cast<const bf162*>(&xa);
    const bf162* ap = reinterpret_cast<const bf162*>(&aa);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
        const float2 fx = __bfloat1622float2(xp[q]);
        const float2 fa = __bfloat1622float2(ap[q]);
        acc = fmaf(fx.x, fa.x, acc);
        acc = fmaf(fx.y, fa.y, acc);
    }
    return acc;
}

// t[row, e, j] = sum_i A[slot][j][i] * x[row][i]: one block of 256 threads per (tile of
// `tile` <= LORA_SHRINK_TILE rows, entry e). The threads split d_in into 8-element vectors,
// so every load of a pass is independent (no latency chain); each thread reads its x vectors
// once per chunk of LORA_RANK_CHUNK ranks and, when the tile's rows share one slot (a prompt
// chunk), each A vector once for the whole tile. Partial sums are reduced per warp, then
// across the block in shared memory. A row's result does not depend on its tile.
// Rows without an adapter get 0.
extern "C" __global__ void __launch_bounds__(256) lora_shrink(const bf16* __restrict__ x,
                                                              const bf16* __restrict__ a,
                                                              const int* __restrict__ idx,
                                                              float* __restrict__ t, int rows,
                                                              int d_in, int rank, int k_mix,
                                                              int tile) {
    __shared__ float red[8][LORA_SHRINK_TILE * LORA_RANK_CHUNK];
    const int row0 = blockIdx.x * tile;
    const int e = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int nv = d_in >> 3;
    int slot[LORA_SHRINK_TILE];
    int first = -2;
    bool uniform = true;
#pragma unroll
    for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr) {
        const int row = row0 + rr;
        const bool live = rr < tile && row < rows;
        slot[rr] = live ? idx[row * k_mix + e] : -1;
        if (live) {
            if (first == -2) first = slot[rr];
            else if (slot[rr] != first) uniform = false;
        }
    }
    for (int j0 = 0; j0 < rank; j0 += LORA_RANK_CHUNK) {
        float acc[LORA_SHRINK_TILE][LORA_RANK_CHUNK];
#pragma unroll
        for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr)
#pragma unroll
            for (int jj = 0; jj < LORA_RANK_CHUNK; ++jj) acc[rr][jj] = 0.f;
        if (!(uniform && first < 0)) {
            for (int i = threadIdx.x; i < nv; i += blockDim.x) {
                uint4 xv[LORA_SHRINK_TILE];
#pragma unroll
                for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr) {
                    xv[rr] = slot[rr] >= 0
                                 ? reinterpret_cast<const uint4*>(x + (size_t)(row0 + rr) * d_in)[i]
                                 : make_uint4(0u, 0u, 0u, 0u);
                }
#pragma unroll
                for (int jj = 0; jj < LORA_RANK_CHUNK; ++jj) {
                    const int j = j0 + jj;
                    if (j >= rank) break;
                    if (uniform) {
                        const uint4 aa = reinterpret_cast<const uint4*>(
                            a + ((size_t)first * rank + j) * d_in)[i];
#pragma unroll
                        for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr)
                            if (slot[rr] >= 0) acc[rr][jj] = dot8(xv[rr], aa, acc[rr][jj]);
                    } else {
#pragma unroll
                        for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr) {
                            if (slot[rr] < 0) continue;
                            const uint4 aa = reinterpret_cast<const uint4*>(
                                a + ((size_t)slot[rr] * rank + j) * d_in)[i];
                            acc[rr][jj] = dot8(xv[rr], aa, acc[rr][jj]);
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int rr = 0; rr < LORA_SHRINK_TILE; ++rr)
#pragma unroll
            for (int jj = 0; jj < LORA_RANK_CHUNK; ++jj) {
                const float v = warp_sum(acc[rr][jj]);
                if (lane == 0) red[warp][rr * LORA_RANK_CHUNK + jj] = v;
            }
        __syncthreads();
        if (threadIdx.x < LORA_SHRINK_TILE * LORA_RANK_CHUNK) {
            const int rr = threadIdx.x / LORA_RANK_CHUNK, jj = threadIdx.x % LORA_RANK_CHUNK;
            const int row = row0 + rr, j = j0 + jj;
            float s = 0.f;
            for (int w = 0; w < (int)(blockDim.x >> 5); ++w) s += red[w][threadIdx.x];
            if (rr < tile && row < rows && j < rank)
                t[((size_t)row * k_mix + e) * rank + j] = slot[rr] >= 0 ? s : 0.f;
        }
        __syncthreads();
    }
}

#define LORA_EXPAND_TILE 16
#define LORA_MAX_RANK 64

// y[row, o] += scale * sum_e w[row, e] * sum_j B[slot_e][o][j] * t[row, e, j]: one thread per
// output column o (blocks of 256 columns along x) over `tile` <= LORA_EXPAND_TILE consecutive
// rows (along y), keeping its B row in registers while the slot repeats (a prompt chunk's
// rows share one adapter), loaded as 16-byte vectors when rank is a multiple of 8. rank <=
// LORA_MAX_RANK. Rows whose entries are all -1 are left untouched. y is rounded once.
extern "C" __global__ void __launch_bounds__(256) lora_expand(const float* __restrict__ t,
                                                              const bf16* __restrict__ b,
                                                              const int* __restrict__ idx,
                                                              const float* __restrict__ w,
                                                              bf16* __restrict__ y, int rows,
                                                              int d_out, int rank, int k_mix,
                                                              float scale, int tile) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= d_out) return;
    const int row0 = blockIdx.y * tile;
    const int row_end = min(row0 + tile, rows);
    float bo[LORA_MAX_RANK];
    int cached = -1;
    for (int row = row0; row < row_end; ++row) {
        float acc = 0.f;
        bool any = false;
        for (int e = 0; e < k_mix; ++e) {
            const int slot = idx[row * k_mix + e];
            if (slot < 0) continue;
            any = true;
            if (slot != cached) {
                const bf16* br = b + ((size_t)slot * d_out + o) * rank;
                if ((rank & 7) == 0) {
                    const uint4* bv = reinterpret_cast<const uint4*>(br);
#pragma unroll
                    for (int q = 0; q < LORA_MAX_RANK / 8; ++q) {
                        if (q * 8 < rank) {
                            const uint4 u = bv[q];
                            const bf162* up = reinterpret_cast<const bf162*>(&u);
#pragma unroll
                            for (int h = 0; h < 4; ++h) {
                                const float2 f = __bfloat1622float2(up[h]);
                                bo[q * 8 + 2 * h] = f.x;
                                bo[q * 8 + 2 * h + 1] = f.y;
                            }
                        } else {
#pragma unroll
                            for (int h = 0; h < 8; ++h) bo[q * 8 + h] = 0.f;
                        }
                    }
                } else {
#pragma unroll
                    for (int j = 0; j < LORA_MAX_RANK; ++j) bo[j] = j < rank ? __bfloat162float(br[j]) : 0.f;
                }
                cached = slot;
            }
            const float* tr = t + ((size_t)row * k_mix + e) * rank;
            float s = 0.f;
#pragma unroll
            for (int j = 0; j < LORA_MAX_RANK; ++j) {
                if (j < rank) s = fmaf(bo[j], tr[j], s);
            }
            acc = fmaf(w[row * k_mix + e], s, acc);
        }
        if (!any) continue;
        bf16* yp = y + (size_t)row * d_out + o;
        *yp = __float2bfloat16(__bfloat162float(*yp) + scale * acc);
    }
}

// MeteoRA's gate of one row per block: logits[a] = Wg[a, :] . x[row, :] + bias[a] over n
// adapters (one warp per adapter, strided), then the top_k largest (ties to the lower id)
// with their softmax weights into idx / w [rows, top_k]. Dynamic shared memory: n floats
// and n flags.
extern "C" __global__ void __launch_bounds__(256) lora_gate(const bf16* __restrict__ x,
                                                            const bf16* __restrict__ wg,
                                                            const float* __restrict__ bias,
                                                            int* __restrict__ idx,
                                                            float* __restrict__ w, int d_in, int n,
                                                            int top_k) {
    float* logits = reinterpret_cast<float*>(smem_raw);
    unsigned char* used = smem_raw + (size_t)n * sizeof(float);
    const int row = blockIdx.x;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_warps = blockDim.x >> 5;
    const int nv = d_in >> 3;
    const uint4* xv = reinterpret_cast<const uint4*>(x + (size_t)row * d_in);
    for (int a = warp; a < n; a += n_warps) {
        const uint4* gv = reinterpret_cast<const uint4*>(wg + (size_t)a * d_in);
        float acc = 0.f;
        for (int i = lane; i < nv; i += 32) {
            const uint4 xa = xv[i];
            const uint4 ga = gv[i];
            const bf162* xp = reinterpret_cast<const bf162*>(&xa);
            const bf162* gp = reinterpret_cast<const bf162*>(&ga);
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                const float2 fx = __bfloat1622float2(xp[q]);
                const float2 fg = __bfloat1622float2(gp[q]);
                acc = fmaf(fx.x, fg.x, acc);
                acc = fmaf(fx.y, fg.y, acc);
            }
        }
        acc = warp_sum(acc);
        if (lane == 0) logits[a] = acc + bias[a];
    }
    for (int a = threadIdx.x; a < n; a += blockDim.x) used[a] = 0;
    __syncthreads();
    if (threadIdx.x != 0) return;
    int* oi = idx + (size_t)row * top_k;
    float* ow = w + (size_t)row * top_k;
    float top = 0.f, sum = 0.f;
    for (int e = 0; e < top_k; ++e) {
        int best = -1;
        float bv = 0.f;
        for (int a = 0; a < n; ++a) {
            if (!used[a] && (best < 0 || logits[a] > bv)) {
                best = a;
                bv = logits[a];
            }
        }
        used[best] = 1;
        if (e == 0) top = bv;
        const float ex = expf(bv - top);
        oi[e] = best;
        ow[e] = ex;
        sum += ex;
    }
    for (int e = 0; e < top_k; ++e) ow[e] = ow[e] / sum;
}
#endif  // FUSELAB_TUNE_ONLY
