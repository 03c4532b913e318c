// fuselab CUDA kernels, compiled at run time by NVRTC (sm_90a on Hopper).
//
// Layouts (all row-major):
//   activations      [tokens, width] bf16
//   q / out          [tokens, n_q_heads, HEAD_DIM] bf16
//   paged K/V cache  [num_blocks, block_size, n_kv_heads, HEAD_DIM] bf16
//   block tables     [batch, max_blocks] int32, block_size a power of two
//
// The attention kernels use mma.sync.m16n8k16 bf16 tensor-core instructions
// with f32 accumulation, ldmatrix from XOR-swizzled shared memory and
// cp.async double/triple buffering.

#include <cuda_bf16.h>

typedef __nv_bfloat16 bf16;
typedef __nv_bfloat162 bf162;

#define HEAD_DIM 128
#define KV_TILE 64
#define NEG_INF (-__int_as_float(0x7f800000))

// Dynamic shared memory of the attention kernels.
extern __shared__ __align__(128) unsigned char smem_raw[];

// ---------------------------------------------------------------- helpers

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// Programmatic dependent launch (sm_90+). A kernel launched with programmatic stream
// serialisation (CudaDevice::set_programmatic_launch) may start while the kernel before
// it still runs: it must not touch a buffer before grid_dependency_wait(), which returns
// once every earlier kernel has finished and its writes are visible. The dependents
// call lets the next such kernel start now (its own wait still guards its data).
// Launched without the attribute, both are no-ops.
__device__ __forceinline__ void grid_dependency_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_dependents_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}
// Both, first thing in a kernel that reads only what earlier kernels wrote.
__device__ __forceinline__ void grid_dependency_chain() {
    grid_dependency_wait();
    grid_dependents_launch();
}

// 16-byte asynchronous global->shared copy; when !pred the destination is zero-filled.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool pred) {
    int sz = pred ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(sz));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void ldsm_x4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
// c += a * b, m16n8k16, bf16 inputs, f32 accumulators.
__device__ __forceinline__ void mma_bf16(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
    bf162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
}
// Element offset of (row, 16-byte chunk) in a [rows][HEAD_DIM] bf16 tile, XOR-swizzled
// so that ldmatrix over 8 consecutive rows hits 8 different bank groups.
__device__ __forceinline__ int swz(int row, int chunk) { return row * HEAD_DIM + ((chunk ^ (row & 7)) << 3); }

// Kernels outside a tuning module (FUSELAB_TUNE_ONLY: only the tuned kernels, see tuned.rs).
#ifndef FUSELAB_TUNE_ONLY
// ---------------------------------------------------------------- utilities

extern "C" __global__ void copy_f4(const float4* __restrict__ src, float4* __restrict__ dst, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = src[i];
}

// Read-only bandwidth probe: every thread folds its float4s with XOR and writes one word
// per block, so nothing is written back to memory but the loads cannot be dropped.
extern "C" __global__ void read_probe_f4(const uint4* __restrict__ src, unsigned* __restrict__ out, unsigned long long n) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned acc = 0;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const uint4 v = src[i];
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    acc = __reduce_xor_sync(0xffffffffu, acc);
    if ((threadIdx.x & 31) == 0) atomicXor(out + blockIdx.x, acc);
}

__device__ __forceinline__ float hash_uniform(unsigned long long i, unsigned long long seed) {
    unsigned long long z = i * 0x9E3779B97F4A7C15ull + seed;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f) * 2.0f - 1.0f;  // [-1, 1)
}

extern "C" __global__ void fill_uniform_bf16(bf16* __restrict__ p, unsigned long long n, unsigned long long seed, float scale) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        p[i] = __float2bfloat16(hash_uniform(i, seed) * scale);
}

// ---------------------------------------------------------------- RMSNorm
// One block per token; hidden % 8 == 0.
extern "C" __global__ void rms_norm(const bf16* __restrict__ x, const bf16* __restrict__ w, bf16* __restrict__ y,
                                    int hidden, float eps) {
    grid_dependency_chain();
    const size_t row = blockIdx.x;
    const uint4* xr = reinterpret_cast<const uint4*>(x + row * hidden);
    const uint4* wr = reinterpret_cast<const uint4*>(w);
    uint4* yr = reinterpret_cast<uint4*>(y + row * hidden);
    const int nv = hidden >> 3;
    float ss = 0.f;
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        uint4 v = xr[i];
        const bf162* p = reinterpret_cast<const bf162*>(&v);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            float2 f = __bfloat1622float2(p[j]);
            ss += f.x * f.x + f.y * f.y;
        }
    }
    __shared__ float red[32];
    ss = warp_sum(ss);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float v = lane < (int)(blockDim.x >> 5) ? red[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(red[0] / (float)hidden + eps);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        uint4 v = xr[i], g = wr[i], o;
        const bf162* p = reinterpret_cast<const bf162*>(&v);
        const bf162* q = reinterpret_cast<const bf162*>(&g);
        bf162* r = reinterpret_cast<bf162*>(&o);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            float2 f = __bfloat1622float2(p[j]);
            float2 s = __bfloat1622float2(q[j]);
            r[j] = __floats2bfloat162_rn(f.x * inv * s.x, f.y * inv * s.y);
        }
        yr[i] = o;
    }
}

// ---------------------------------------------------------------- RoPE
// Both RoPE kernels rotate with explicitly rounded products (no FMA contraction), so the
// fused qkv_rope_cache and rope + kv_write agree bit for bit.
__device__ __forceinline__ float rot_a(float x1, float x2, float c, float s) {
    return __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s));
}
__device__ __forceinline__ float rot_b(float x1, float x2, float c, float s) {
    return __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s));
}
// In place on q [T, hq, D] and k [T, hkv, D]; "rotate half" pairing (i, i + D/2);
// inv_freq has D/2 entries (Llama-3 scaling already applied by the caller).
extern "C" __global__ void rope(bf16* __restrict__ q, bf16* __restrict__ k, const int* __restrict__ pos,
                                const float* __restrict__ inv_freq, int hq, int hkv) {
    const int half = HEAD_DIM / 2;
    const size_t t = blockIdx.x;
    const float p = (float)pos[t];
    const int total = (hq + hkv) * half;
    for (int i = threadIdx.x; i < total; i += blockDim.x) {
        const int h = i / half, j = i - h * half;
        bf16* base = h < hq ? q + (t * hq + h) * HEAD_DIM : k + (t * hkv + (h - hq)) * HEAD_DIM;
        float s, c;
        sincosf(p * inv_freq[j], &s, &c);
        const float x1 = __bfloat162float(base[j]), x2 = __bfloat162float(base[j + half]);
        base[j] = __float2bfloat16(rot_a(x1, x2, c, s));
        base[j + half] = __float2bfloat16(rot_b(x1, x2, c, s));
    }
}

// ---------------------------------------------------------------- SiLU * mul
// gate_up [T, 2F] (gate then up), out [T, F]; F % 8 == 0.
extern "C" __global__ void silu_mul(const bf16* __restrict__ gu, bf16* __restrict__ out, unsigned long long tokens, int ffn) {
    grid_dependency_chain();
    const int nv = ffn >> 3;
    const unsigned long long total = tokens * (unsigned long long)nv;
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const unsigned long long t = i / nv, c = i - t * nv;
        const uint4* row = reinterpret_cast<const uint4*>(gu + t * 2ull * ffn);
        uint4 g = row[c], u = row[nv + c], o;
        const bf162* gp = reinterpret_cast<const bf162*>(&g);
        const bf162* up = reinterpret_cast<const bf162*>(&u);
        bf162* op = reinterpret_cast<bf162*>(&o);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            float2 a = __bfloat1622float2(gp[j]);
            float2 b = __bfloat1622float2(up[j]);
            op[j] = __floats2bfloat162_rn(a.x / (1.f + __expf(-a.x)) * b.x, a.y / (1.f + __expf(-a.y)) * b.y);
        }
        reinterpret_cast<uint4*>(out + t * (unsigned long long)ffn)[c] = o;
    }
}

// ---------------------------------------------------------------- KV write
// k, v [T, hkv, D]; slot[t] = block * block_size + offset (negative: skip).
extern "C" __global__ void kv_write(const bf16* __restrict__ k, const bf16* __restrict__ v, bf16* __restrict__ kc,
                                    bf16* __restrict__ vc, const long long* __restrict__ slots, int hkv) {
    const size_t t = blockIdx.x;
    const long long slot = slots[t];
    if (slot < 0) return;
    const int n = hkv * HEAD_DIM / 8;
    const uint4* ks = reinterpret_cast<const uint4*>(k) + t * n;
    const uint4* vs = reinterpret_cast<const uint4*>(v) + t * n;
    uint4* kd = reinterpret_cast<uint4*>(kc) + (size_t)slot * n;
    uint4* vd = reinterpret_cast<uint4*>(vc) + (size_t)slot * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        kd[i] = ks[i];
        vd[i] = vs[i];
    }
}

// ---------------------------------------------------------------- fused RoPE + KV write
// qkv [T, (hq + 2 hkv) * D]: the fused projection's rows (q heads, then k, then v).
// Writes the rotated q to q_out [T, hq, D] and the rotated k and the v into the paged
// caches at slots[t] (negative: not written). cos/sin are computed once per (token,
// frequency) and shared by every head; all accesses are 16 bytes. One block per token.
// Same arithmetic as rope + kv_write (one f32 rotation, one rounding).
extern "C" __global__ void __launch_bounds__(256) qkv_rope_cache(const bf16* __restrict__ qkv, bf16* __restrict__ q_out,
                                                                 bf16* __restrict__ kc, bf16* __restrict__ vc,
                                                                 const int* __restrict__ pos, const int* __restrict__ slots,
                                                                 const float* __restrict__ inv_freq, int hq, int hkv) {
    grid_dependency_chain();
    constexpr int HALF = HEAD_DIM / 2;
    constexpr int CH = HALF / 8;  // 16-byte chunks per half head
    __shared__ float s_cos[HALF], s_sin[HALF];
    const size_t t = blockIdx.x;
    const float p = (float)pos[t];
    for (int j = threadIdx.x; j < HALF; j += blockDim.x) sincosf(p * inv_freq[j], &s_sin[j], &s_cos[j]);
    __syncthreads();
    const int slot = slots[t];
    const bf16* src = qkv + t * (size_t)(hq + 2 * hkv) * HEAD_DIM;
    const size_t kv_row = (size_t)hkv * HEAD_DIM;
    const int n_rot = (hq + hkv) * CH;
    for (int i = threadIdx.x; i < n_rot; i += blockDim.x) {
        const int h = i / CH, c = i - h * CH;
        if (h >= hq && slot < 0) continue;
        const uint4 a = *reinterpret_cast<const uint4*>(src + h * HEAD_DIM + c * 8);
        const uint4 b = *reinterpret_cast<const uint4*>(src + h * HEAD_DIM + HALF + c * 8);
        uint4 ra, rb;
        const bf162* ap = reinterpret_cast<const bf162*>(&a);
        const bf162* bp = reinterpret_cast<const bf162*>(&b);
        bf162* rap = reinterpret_cast<bf162*>(&ra);
        bf162* rbp = reinterpret_cast<bf162*>(&rb);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float2 x1 = __bfloat1622float2(ap[e]), x2 = __bfloat1622float2(bp[e]);
            const int j = c * 8 + 2 * e;
            const float c0 = s_cos[j], s0 = s_sin[j], c1 = s_cos[j + 1], s1 = s_sin[j + 1];
            rap[e] = __floats2bfloat162_rn(rot_a(x1.x, x2.x, c0, s0), rot_a(x1.y, x2.y, c1, s1));
            rbp[e] = __floats2bfloat162_rn(rot_b(x1.x, x2.x, c0, s0), rot_b(x1.y, x2.y, c1, s1));
        }
        bf16* dst = h < hq ? q_out + (t * hq + h) * HEAD_DIM : kc + (size_t)slot * kv_row + (h - hq) * HEAD_DIM;
        *reinterpret_cast<uint4*>(dst + c * 8) = ra;
        *reinterpret_cast<uint4*>(dst + HALF + c * 8) = rb;
    }
    if (slot >= 0) {
        const uint4* vs = reinterpret_cast<const uint4*>(src + (size_t)(hq + hkv) * HEAD_DIM);
        uint4* vd = reinterpret_cast<uint4*>(vc + (size_t)slot * kv_row);
        for (int i = threadIdx.x; i < hkv * HEAD_DIM / 8; i += blockDim.x) vd[i] = vs[i];
    }
}

#endif  // FUSELAB_TUNE_ONLY

// ---------------------------------------------------------------- flash prefill
// Ragged causal attention over paged K/V. Grid (q tile pairs, hq, batch); NW warps, each owning
// MT m16 tiles (16·MT query rows); KV tiles of 64 keys in ST (2 or 3) cp.async stages, one
// barrier per tile. Q fragments are re-read from shared memory at every k-step so that
// each K/V fragment read by ldmatrix feeds MT tensor-core instructions.
// Sequence b has q_len = cu_q[b+1]-cu_q[b] new queries at positions ctx_len-q_len ..
// ctx_len-1 and attends keys 0..pos (its K/V already written into the cache).
template <int NW, int MT, int ST>
__device__ __forceinline__ void flash_prefill_body(const bf16* __restrict__ q, const bf16* __restrict__ kc,
                                                   const bf16* __restrict__ vc, bf16* __restrict__ out,
                                                   const int* __restrict__ cu_q, const int* __restrict__ ctx_lens,
                                                   const int* __restrict__ block_tables, int max_blocks, int block_shift,
                                                   int hq, int hkv, float scale_log2, int b, int h, int tile) {
    constexpr int WR = 16 * MT;  // rows per warp
    constexpr int BR = WR * NW;
    constexpr int NT = 32 * NW;
    constexpr int D = HEAD_DIM;
    bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
    bf16* sK = sQ + BR * D;
    bf16* sV = sK + ST * KV_TILE * D;
    static_assert(ST == 2 || ST == 3, "two or three K/V stages");

    const int q0 = cu_q[b], q_len = cu_q[b + 1] - q0;
    const int row0 = tile * BR;
    if (row0 >= q_len) return;
    const int ctx = ctx_lens[b];
    const int prior = ctx - q_len;
    const int hk = h / (hq / hkv);
    const int* bt = block_tables + (size_t)b * max_blocks;
    const int bmask = (1 << block_shift) - 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int last_row = min(row0 + BR, q_len) - 1;
    const int kv_end = prior + last_row + 1;
    const int n_tiles = (kv_end + KV_TILE - 1) / KV_TILE;
    const size_t row_stride = (size_t)hkv * D;

    for (int c = tid; c < BR * 16; c += NT) {
        const int r = c >> 4, ch = c & 15;
        const int qi = row0 + r;
        const bool ok = qi < q_len;
        const bf16* src = q + ((size_t)(q0 + (ok ? qi : 0)) * hq + h) * D + ch * 8;
        cp_async16(smem_u32(sQ + swz(r, ch)), src, ok);
    }
    // Each thread copies 16-byte chunk (tid & 15) of rows (tid >> 4) + i * (NT / 16).
    auto load_kv = [&](int buf, int kt) {
        bf16* dK = sK + buf * KV_TILE * D;
        bf16* dV = sV + buf * KV_TILE * D;
        const int ch = tid & 15;
#pragma unroll
        for (int i = 0; i < KV_TILE * 16 / NT; ++i) {
            const int r = (tid >> 4) + i * (NT / 16);
            const int j = kt * KV_TILE + r;
            const bool ok = j < kv_end;
            const int jj = ok ? j : 0;
            const int blk = bt[jj >> block_shift];
            const size_t off = ((size_t)blk * (bmask + 1) + (jj & bmask)) * row_stride + (size_t)hk * D + ch * 8;
            cp_async16(smem_u32(dK + swz(r, ch)), kc + off, ok);
            cp_async16(smem_u32(dV + swz(r, ch)), vc + off, ok);
        }
    };
    load_kv(0, 0);
    cp_commit();
    if constexpr (ST == 3) {
        if (1 < n_tiles) load_kv(1, 1);
        cp_commit();
    }

    float o[MT][16][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 16; ++i) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.f;
    float m_r[MT][2], l_r[MT][2];
    const int g = lane >> 2, t4 = lane & 3;
    const int wr0 = row0 + warp * WR;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        m_r[mt][0] = m_r[mt][1] = NEG_INF;
        l_r[mt][0] = l_r[mt][1] = 0.f;
    }
    const int warp_min_lim = min(prior + wr0, ctx - 1);
    const int warp_max_lim = min(prior + wr0 + WR - 1, ctx - 1);
    const int lm = lane >> 3, lr = lane & 7;

    for (int kt = 0; kt < n_tiles; ++kt) {
        const int buf = kt % ST;
        const bf16* cK = sK + buf * KV_TILE * D;
        const bf16* cV = sV + buf * KV_TILE * D;
        cp_wait<ST - 2>();  // tile kt has landed (ST - 2 younger groups may be in flight)
        __syncthreads();    // ... for every thread, and everyone is done with tile kt - 1's buffer
        if (kt + ST - 1 < n_tiles) load_kv((kt + ST - 1) % ST, kt + ST - 1);
        cp_commit();

        const int kbase = kt * KV_TILE;
        if (kbase > warp_max_lim) continue;  // every key of this tile is masked for this warp
        float s[MT][8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int i = 0; i < 8; ++i) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.f;
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            unsigned qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int r = warp * WR + mt * 16 + (lm & 1) * 8 + lr;
                ldsm_x4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], smem_u32(sQ + swz(r, ks * 2 + (lm >> 1))));
            }
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned b0, b1, b2, b3;
                const int r = np * 16 + (lm >> 1) * 8 + lr;
                ldsm_x4(b0, b1, b2, b3, smem_u32(cK + swz(r, ks * 2 + (lm & 1))));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16(s[mt][2 * np], qa[mt], b0, b1);
                    mma_bf16(s[mt][2 * np + 1], qa[mt], b2, b3);
                }
            }
        }
        const bool need_mask = kbase + KV_TILE - 1 > warp_min_lim;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            if (need_mask) {
                const int lim_a = min(prior + wr0 + mt * 16 + g, ctx - 1);
                const int lim_b = min(prior + wr0 + mt * 16 + g + 8, ctx - 1);
#pragma unroll
                for (int nt = 0; nt < 8; ++nt) {
                    const int j = kbase + nt * 8 + t4 * 2;
                    if (j > lim_a) s[mt][nt][0] = NEG_INF;
                    if (j + 1 > lim_a) s[mt][nt][1] = NEG_INF;
                    if (j > lim_b) s[mt][nt][2] = NEG_INF;
                    if (j + 1 > lim_b) s[mt][nt][3] = NEG_INF;
                }
            }
            float mx_a = m_r[mt][0], mx_b = m_r[mt][1];
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                mx_a = fmaxf(mx_a, fmaxf(s[mt][nt][0], s[mt][nt][1]));
                mx_b = fmaxf(mx_b, fmaxf(s[mt][nt][2], s[mt][nt][3]));
            }
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
            mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
            mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
            const float sc_a = mx_a == NEG_INF ? 0.f : mx_a * scale_log2;
            const float sc_b = mx_b == NEG_INF ? 0.f : mx_b * scale_log2;
            const float al_a = fast_exp2(m_r[mt][0] * scale_log2 - sc_a);
            const float al_b = fast_exp2(m_r[mt][1] * scale_log2 - sc_b);
            m_r[mt][0] = mx_a;
            m_r[mt][1] = mx_b;
            l_r[mt][0] *= al_a;
            l_r[mt][1] *= al_b;
            // Rescale the accumulators only when some row's running maximum moved.
            if (__any_sync(0xffffffffu, al_a != 1.f || al_b != 1.f)) {
#pragma unroll
                for (int i = 0; i < 16; ++i) {
                    o[mt][i][0] *= al_a;
                    o[mt][i][1] *= al_a;
                    o[mt][i][2] *= al_b;
                    o[mt][i][3] *= al_b;
                }
            }
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
                s[mt][nt][0] = fast_exp2(s[mt][nt][0] * scale_log2 - sc_a);
                s[mt][nt][1] = fast_exp2(s[mt][nt][1] * scale_log2 - sc_a);
                s[mt][nt][2] = fast_exp2(s[mt][nt][2] * scale_log2 - sc_b);
                s[mt][nt][3] = fast_exp2(s[mt][nt][3] * scale_log2 - sc_b);
                l_r[mt][0] += s[mt][nt][0] + s[mt][nt][1];
                l_r[mt][1] += s[mt][nt][2] + s[mt][nt][3];
            }
        }
#pragma unroll
        for (int ks = 0; ks < 4; ++ks) {
            unsigned pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                pa[mt][0] = pack_bf16(s[mt][2 * ks][0], s[mt][2 * ks][1]);
                pa[mt][1] = pack_bf16(s[mt][2 * ks][2], s[mt][2 * ks][3]);
                pa[mt][2] = pack_bf16(s[mt][2 * ks + 1][0], s[mt][2 * ks + 1][1]);
                pa[mt][3] = pack_bf16(s[mt][2 * ks + 1][2], s[mt][2 * ks + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < 8; ++dp) {
                unsigned b0, b1, b2, b3;
                const int r = ks * 16 + (lm & 1) * 8 + lr;
                ldsm_x4_t(b0, b1, b2, b3, smem_u32(cV + swz(r, dp * 2 + (lm >> 1))));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_bf16(o[mt][2 * dp], pa[mt], b0, b1);
                    mma_bf16(o[mt][2 * dp + 1], pa[mt], b2, b3);
                }
            }
        }
    }
    cp_wait<0>();

#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
        float la = l_r[mt][0], lb = l_r[mt][1];
        la += __shfl_xor_sync(0xffffffffu, la, 1);
        la += __shfl_xor_sync(0xffffffffu, la, 2);
        lb += __shfl_xor_sync(0xffffffffu, lb, 1);
        lb += __shfl_xor_sync(0xffffffffu, lb, 2);
        const float inv_a = la > 0.f ? 1.f / la : 0.f;
        const float inv_b = lb > 0.f ? 1.f / lb : 0.f;
        const int ra = wr0 + mt * 16 + g, rb = ra + 8;
        if (ra < q_len) {
            unsigned* dst = reinterpret_cast<unsigned*>(out + ((size_t)(q0 + ra) * hq + h) * D);
#pragma unroll
            for (int dt = 0; dt < 16; ++dt)
                dst[(dt * 8 + t4 * 2) >> 1] = pack_bf16(o[mt][dt][0] * inv_a, o[mt][dt][1] * inv_a);
        }
        if (rb < q_len) {
            unsigned* dst = reinterpret_cast<unsigned*>(out + ((size_t)(q0 + rb) * hq + h) * D);
#pragma unroll
            for (int dt = 0; dt < 16; ++dt)
                dst[(dt * 8 + t4 * 2) >> 1] = pack_bf16(o[mt][dt][2] * inv_b, o[mt][dt][3] * inv_b);
        }
    }
}

// The body as a called (not inlined) function, as every flash_prefill kernel uses it: force-inlining
// it into the kernel measured 5-8 % slower for r128 and r256 on the H200 (NOTES.md, v6a/v6b).
template <int NW, int MT, int ST = 2>
__device__ __noinline__ void flash_prefill_impl(const bf16* __restrict__ q, const bf16* __restrict__ kc,
                                                   const bf16* __restrict__ vc, bf16* __restrict__ out,
                                                   const int* __restrict__ cu_q, const int* __restrict__ ctx_lens,
                                                   const int* __restrict__ block_tables, int max_blocks, int block_shift,
                                                   int hq, int hkv, float scale_log2, int b, int h, int tile) {
    flash_prefill_body<NW, MT, ST>(q, kc, vc, out, cu_q, ctx_lens, block_tables, max_blocks, block_shift, hq, hkv,
                               scale_log2, b, h, tile);
}

#define FLASH_PREFILL_ARGS                                                                                       \
    const bf16 *__restrict__ q, const bf16 *__restrict__ kc, const bf16 *__restrict__ vc, bf16 *__restrict__ out, \
        const int *__restrict__ cu_q, const int *__restrict__ ctx_lens, const int *__restrict__ block_tables,       \
        int max_blocks, int block_shift, int hq, int hkv, float scale_log2
#define FLASH_PREFILL_PASS q, kc, vc, out, cu_q, ctx_lens, block_tables, max_blocks, block_shift, hq, hkv, scale_log2

// Causal balance: block x of a sequence with n query tiles handles tile n-1-x (the
// heaviest left) and then tile x (the lightest), so every block does about n+1 KV tiles
// of work and no SM idles behind a few long blocks. Grid x = ceil(max tiles / 2).
template <int NW, int MT, int ST = 2>
__device__ __forceinline__ void flash_prefill_pairs(FLASH_PREFILL_ARGS) {
    constexpr int BR = 16 * MT * NW;
    const int b = blockIdx.z;
    const int n = (cu_q[b + 1] - cu_q[b] + BR - 1) / BR;
    const int lo = blockIdx.x, hi = n - 1 - (int)blockIdx.x;
    if (hi < lo) return;
    for (int pass = 0; pass < 2; ++pass) {
        if (pass == 1) {
            if (hi == lo) break;
            __syncthreads();  // shared memory is reused by the second tile
        }
        flash_prefill_impl<NW, MT, ST>(FLASH_PREFILL_PASS, (int)blockIdx.z, (int)blockIdx.y, pass == 0 ? hi : lo);
    }
}

// Persistent variant: a grid of about two blocks per SM takes (q tile, head, sequence)
// items from an atomic counter (zeroed before the launch), heaviest tiles first, so the
// greedy longest-first order leaves almost no tail and no partial last wave.
template <int NW, int MT>
__device__ __forceinline__ void flash_prefill_dynamic(FLASH_PREFILL_ARGS, int* __restrict__ counter, int batch,
                                                      int max_tiles) {
    constexpr int BR = 16 * MT * NW;
    __shared__ int s_item;
    const int per_round = hq * batch;
    const int total = max_tiles * per_round;
    while (true) {
        if (threadIdx.x == 0) s_item = atomicAdd(counter, 1);
        __syncthreads();
        const int item = s_item;
        __syncthreads();  // every thread has read s_item and finished the previous item
        if (item >= total) break;
        const int k = item / per_round, rem = item - k * per_round;
        const int b = rem / hq, h = rem - b * hq;
        const int n = (cu_q[b + 1] - cu_q[b] + BR - 1) / BR;
        const int tile = n - 1 - k;
        if (tile >= 0) flash_prefill_impl<NW, MT>(FLASH_PREFILL_PASS, b, h, tile);
    }
}

#ifndef FUSELAB_TUNE_ONLY
// 64 query rows: 4 warps of one m16 tile.
extern "C" __global__ void __launch_bounds__(128) flash_prefill_r64(FLASH_PREFILL_ARGS) {
    flash_prefill_pairs<4, 1>(FLASH_PREFILL_PASS);
}
// 128 query rows: 4 warps of two m16 tiles.
extern "C" __global__ void __launch_bounds__(128) flash_prefill_r128(FLASH_PREFILL_ARGS) {
    flash_prefill_pairs<4, 2>(FLASH_PREFILL_PASS);
}
// 128 query rows: 4 warps of two m16 tiles, persistent with dynamic tile order.
extern "C" __global__ void __launch_bounds__(128) flash_prefill_r128p(FLASH_PREFILL_ARGS, int* __restrict__ counter,
                                                                    int batch, int max_tiles) {
    flash_prefill_dynamic<4, 2>(FLASH_PREFILL_PASS, counter, batch, max_tiles);
}
// 128 query rows: 8 warps of one m16 tile.
extern "C" __global__ void __launch_bounds__(256) flash_prefill_r128w8(FLASH_PREFILL_ARGS) {
    flash_prefill_pairs<8, 1>(FLASH_PREFILL_PASS);
}
// 256 query rows: 8 warps of two m16 tiles (one block per SM; each K/V tile feeds 256 rows).
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_r256(FLASH_PREFILL_ARGS) {
    flash_prefill_pairs<8, 2>(FLASH_PREFILL_PASS);
}
// As r256 with three K/V stages (two tiles in flight while one is computed).
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_r256s3(FLASH_PREFILL_ARGS) {
    flash_prefill_pairs<8, 2, 3>(FLASH_PREFILL_PASS);
}
#endif  // FUSELAB_TUNE_ONLY

// ---------------------------------------------------------------- flash prefill on wgmma (Hopper)
// The same ragged causal paged attention as flash_prefill_* on Hopper's warpgroup MMA: a block
// of two warpgroups takes 128 query rows (64 each); S = Q·Kᵀ is m64n64k16 with Q and K in
// shared memory, P stays in registers as the A operand of O += P·V (m64n128k16, V read
// transposed from shared memory). Tiles are stored as two 64-element halves of 128-byte
// rows in the 128-byte swizzle wgmma descriptors expect; K/V tiles of 64 keys in two
// cp.async stages. Needs sm_90a: the host defines FUSELAB_WGMMA when it compiles for it;
// elsewhere the kernel traps (and the host never picks it).

#ifdef FUSELAB_WGMMA
// Shared-memory matrix descriptor: 128-byte swizzle, stride `sbo` between 8-row groups,
// `lbo` between 64-element blocks of the contiguous dimension (MN-major operands only).
__device__ __forceinline__ unsigned long long wg_desc(unsigned addr, unsigned lbo, unsigned sbo) {
    return (unsigned long long)((addr & 0x3FFFF) >> 4) | ((unsigned long long)((lbo >> 4) & 0x3FFF) << 16) |
           ((unsigned long long)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Orders later register uses after an asynchronous wgmma's completion (as CUTLASS's
// warpgroup_fence_operand): the compiler may not move accesses of r across it.
template <int N>
__device__ __forceinline__ void wg_fence_regs(float* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
__device__ __forceinline__ void fence_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Byte offset of (row r, 16-byte chunk ch of 16) in a tile of R rows stored as two swizzled halves.
__device__ __forceinline__ unsigned wg_off(int R, int r, int ch) {
    return (unsigned)((ch >> 3) * R * 128 + r * 128 + (((ch & 7) ^ (r & 7)) << 4));
}
__device__ __forceinline__ void wgmma_m64n64k16_ss(float* d, unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(da), "l"(db), "r"(accumulate));
}

__device__ __forceinline__ void wgmma_m64n128k16_ss(float* d, unsigned long long da, unsigned long long db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(accumulate));
}
template <int N>
__device__ __forceinline__ void wgmma_ss(float* d, unsigned long long da, unsigned long long db, int accumulate) {
    if constexpr (N == 64) wgmma_m64n64k16_ss(d, da, db, accumulate);
    else wgmma_m64n128k16_ss(d, da, db, accumulate);
}
__device__ __forceinline__ void wgmma_m64n64k16_rs(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
__device__ __forceinline__ void wgmma_m64n128k16_rs(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate));
}
// A from registers, B K-major in shared memory.
template <int N>
__device__ __forceinline__ void wgmma_rs(float* d, const unsigned* a, unsigned long long db, int accumulate) {
    if constexpr (N == 64) wgmma_m64n64k16_rs(d, a, db, accumulate);
    else wgmma_m64n128k16_rs(d, a, db, accumulate);
}
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
__device__ __forceinline__ void wgmma_m64n128k16_rs_tb(float* d, const unsigned* a, unsigned long long db) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
}

#endif

// NWG warpgroups of 64 query rows; BN keys per K/V tile in ST cp.async stages. With SPLIT,
// the block takes part `split` of `n_splits` of its K/V tiles (at least SPLIT_MIN_TILES each)
// and writes f32 partials normalised by their own sum, with their log2-sum-exp:
// o_part[((row * hq + h) * n_splits + split) * D], lse_part[(row * hq + h) * n_splits + split];
// the last of a tile's blocks to finish (a ticket from `counters`, one per grid tile, zero
// between calls) merges them into `out` while they are still in L2. With PIPE (ST >= 3), each
// warpgroup overlaps its softmax with the tensor cores, as FlashAttention-3's intra-warpgroup
// pipelining: S = Q·Kᵀ of tile kt is issued together with O += P·V of tile kt - 1, and the
// softmax of kt runs while that P·V is in flight; K/V are loaded ST - 2 tiles ahead, so the
// buffer refilled in an iteration was last read by a P·V finished in the one before.
constexpr int SPLIT_MIN_TILES = 4;
constexpr int SPLIT_MAX = 8;
// Masking of a K/V tile's scores (constant at every call, so the test folds away).
enum class Mask { Check, None, Always };
template <int N>
__device__ __forceinline__ void wg_fence_regs_u(unsigned (*r)[4]) {
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) asm volatile("" : "+r"(r[i][j])::"memory");
}
// A real use of the registers an asynchronous wgmma read (the A operand), after its wait:
// ptxas otherwise takes them as free from the wgmma's issue, reuses them in the code under
// it, and so moves the wait up. `never` is false at run time, unknown to the compiler.
template <int N>
__device__ __forceinline__ void wg_keep_until_here(unsigned (*r)[4], bool never) {
    wg_fence_regs_u<N>(r);
    unsigned x = 0;
#pragma unroll
    for (int i = 0; i < N; ++i) x ^= r[i][0] ^ r[i][1] ^ r[i][2] ^ r[i][3];
    if (never && x == 0x7fc00001u) __trap();
}
// mbarriers of the warp-specialised form (WS): full[ST] (the producer's K/V tile has landed),
// then empty[ST] (every consumer is done with it), 8 bytes each.
__device__ __forceinline__ unsigned ws_barriers() {
    __shared__ __align__(8) unsigned long long bars[2 * 8];
    return smem_u32(bars);
}
__device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(unsigned bar) {
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
}
// Waits until the phase of parity `phase` of the barrier has completed.
__device__ __forceinline__ void mbar_wait(unsigned bar, unsigned phase) {
    asm volatile(
        "{\n.reg .pred p;\nWAIT:\nmbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n@!p bra WAIT;\n}\n" ::"r"(bar),
        "r"(phase)
        : "memory");
}
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
// Per-warpgroup register budgets of the warp-specialised form (the pool is shared by the block).
template <int N>
__device__ __forceinline__ void regs_dec() {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
}
template <int N>
__device__ __forceinline__ void regs_inc() {
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
}
// Named barriers of the ping-pong schedule (PP): warpgroup w issues its tensor-core work
// only in its turn, on barrier PP_BAR + w, then hands the turn to the other.
constexpr int PP_BAR = 3;

// NWG consumer warpgroups and, with WS, one producer warpgroup (the last; `producer` is
// set in its call) that loads K/V tiles into ST stages handed over by mbarriers (no
// block-wide barrier in the loop); `iter` counts the tiles a block has taken over its
// calls, for the stages' phases. With PP (two consumers), the consumers take turns to issue
// their tensor-core work, so one's softmax runs under the other's GEMMs (FlashAttention-3's
// ping-pong); both then compute every tile, so that their turns pair up. With QR, each
// warpgroup holds its query rows in registers as the A operand of S = Q·Kᵀ (loaded once
// from global memory), which halves the shared-memory reads of that GEMM.
template <int NWG, int BN, int ST, bool SPLIT = false, bool PIPE = false, bool WS = false, bool PP = false,
          bool QR = false>
__device__ __forceinline__ void flash_prefill_wg_body(const bf16* __restrict__ q, const bf16* __restrict__ kc,
                                                      const bf16* __restrict__ vc, bf16* __restrict__ out,
                                                      const int* __restrict__ cu_q, const int* __restrict__ ctx_lens,
                                                      const int* __restrict__ block_tables, int max_blocks,
                                                      int block_shift, int hq, int hkv, float scale_log2, int b, int h,
                                                      int tile, int split = 0, int n_splits = 1,
                                                      float* __restrict__ o_part = nullptr,
                                                      float* __restrict__ lse_part = nullptr,
                                                      int* __restrict__ counter = nullptr, int* iter = nullptr,
                                                      bool producer = false) {
#ifdef FUSELAB_WGMMA
    constexpr int BR = 64 * NWG, D = HEAD_DIM, NT = 128 * NWG, NS = BN / 2, KS = BN / 16;
    static_assert(!PIPE || WS || ST >= 3, "the pipelined loop refills a buffer two tiles after its P·V");
    static_assert(!WS || (PIPE && !SPLIT), "the warp-specialised form is pipelined and unsplit");
    static_assert(!PP || (WS && NWG == 2), "ping-pong pairs the two consumers of the warp-specialised form");
    constexpr int PD = PIPE ? ST - 2 : ST - 1;  // tiles loaded ahead
    constexpr unsigned Q_BYTES = QR ? 0 : BR * D * 2, KV_BYTES = BN * D * 2;
    unsigned char* base = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
    const unsigned sQ = smem_u32(base);
    const unsigned sK = sQ + Q_BYTES;       // [ST] K tiles
    const unsigned sV = sK + ST * KV_BYTES;  // [ST] V tiles

    const int q0 = cu_q[b], q_len = cu_q[b + 1] - q0;
    const int row0 = tile * BR;
    if (row0 >= q_len) return;
    const int ctx = ctx_lens[b];
    const int prior = ctx - q_len;
    const int hk = h / (hq / hkv);
    const int* bt = block_tables + (size_t)b * max_blocks;
    const int bmask = (1 << block_shift) - 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wg = warp >> 2, wq = warp & 3;  // warpgroup, warp within it
    const int last_row = min(row0 + BR, q_len) - 1;
    const int kv_end = prior + last_row + 1;
    const int n_tiles = (kv_end + BN - 1) / BN;
    // This block's K/V tiles [t_begin, t_end): all of them unless split.
    int t_begin = 0, t_end = n_tiles;
    if constexpr (SPLIT) {
        const int per = max((n_tiles + n_splits - 1) / n_splits, SPLIT_MIN_TILES);
        t_begin = min(split * per, n_tiles);
        t_end = min(t_begin + per, n_tiles);
    }
    const size_t row_stride = (size_t)hkv * D;
    int iter0 = 0;
    if constexpr (WS) {
        iter0 = *iter;
        *iter += t_end - t_begin;
    }
    // Shared-memory stage of K/V tile kt.
    auto buf = [&](int kt) {
        if constexpr (WS) return (iter0 + kt - t_begin) % ST;
        else return kt % ST;
    };
    const unsigned bar_full = ws_barriers(), bar_empty = bar_full + 8 * ST;
    if constexpr (WS) {
        if (producer) {
            const int ptid = tid - 128 * NWG;
            for (int kt = t_begin; kt < t_end; ++kt) {
                const int it = iter0 + kt - t_begin, stage = it % ST;
                if (it >= ST) mbar_wait(bar_empty + 8 * stage, ((it / ST) & 1) ^ 1);
                const unsigned dK = sK + stage * KV_BYTES, dV = sV + stage * KV_BYTES;
                // Each thread: one 16-byte chunk of a run of BN / 8 consecutive keys, which
                // share one cache block when blocks hold at least that many (one lookup).
                constexpr int RUN = BN / 8;
                const int ch = ptid & 15, r0 = (ptid >> 4) * RUN, j0 = kt * BN + r0;
                if (bmask + 1 >= RUN) {
                    const int blk = bt[min(j0, kv_end - 1) >> block_shift];
                    const bf16* k_row = kc + ((size_t)blk * (bmask + 1) + (j0 & bmask)) * row_stride + (size_t)hk * D + ch * 8;
                    const bf16* v_row = vc + (k_row - kc);
#pragma unroll
                    for (int i = 0; i < RUN; ++i) {
                        const bool ok = j0 + i < kv_end;
                        const size_t step = ok ? (size_t)i * row_stride : 0;
                        cp_async16(dK + wg_off(BN, r0 + i, ch), k_row + step, ok);
                        cp_async16(dV + wg_off(BN, r0 + i, ch), v_row + step, ok);
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < RUN; ++i) {
                        const int j = j0 + i;
                        const bool ok = j < kv_end;
                        const int jj = ok ? j : 0;
                        const int blk = bt[jj >> block_shift];
                        const size_t off =
                            ((size_t)blk * (bmask + 1) + (jj & bmask)) * row_stride + (size_t)hk * D + ch * 8;
                        cp_async16(dK + wg_off(BN, r0 + i, ch), kc + off, ok);
                        cp_async16(dV + wg_off(BN, r0 + i, ch), vc + off, ok);
                    }
                }
                cp_commit();
                if (kt > t_begin) {  // the previous tile: landed, made visible to wgmma, handed over
                    cp_wait<1>();
                    fence_async_smem();
                    mbar_arrive(bar_full + 8 * ((it - 1) % ST));
                }
            }
            if (t_end > t_begin) {
                cp_wait<0>();
                fence_async_smem();
                mbar_arrive(bar_full + 8 * ((iter0 + t_end - t_begin - 1) % ST));
            }
            return;
        }
        // A consumer loads its own 64 query rows.
        for (int c = tid & 127; !QR && c < 64 * 16; c += 128) {
            const int r = wg * 64 + (c >> 4), ch = c & 15;
            const int qi = row0 + r;
            const bool ok = qi < q_len;
            const bf16* src = q + ((size_t)(q0 + (ok ? qi : 0)) * hq + h) * D + ch * 8;
            cp_async16(sQ + wg_off(BR, r, ch), src, ok);
        }
        if constexpr (!QR) {
            cp_commit();
            cp_wait<0>();
            fence_async_smem();
            named_bar_sync(1 + wg, 128);
        }
    }

    for (int c = tid; !WS && !QR && c < BR * 16; c += NT) {
        const int r = c >> 4, ch = c & 15;
        const int qi = row0 + r;
        const bool ok = qi < q_len;
        const bf16* src = q + ((size_t)(q0 + (ok ? qi : 0)) * hq + h) * D + ch * 8;
        cp_async16(sQ + wg_off(BR, r, ch), src, ok);
    }
    auto load_kv = [&](int kt) {
        const unsigned dK = sK + (kt % ST) * KV_BYTES, dV = sV + (kt % ST) * KV_BYTES;
#pragma unroll
        for (int c = tid; c < BN * 16; c += NT) {
            const int r = c >> 4, ch = c & 15;
            const int j = kt * BN + r;
            const bool ok = j < kv_end;
            const int jj = ok ? j : 0;
            const int blk = bt[jj >> block_shift];
            const size_t off = ((size_t)blk * (bmask + 1) + (jj & bmask)) * row_stride + (size_t)hk * D + ch * 8;
            cp_async16(dK + wg_off(BN, r, ch), kc + off, ok);
            cp_async16(dV + wg_off(BN, r, ch), vc + off, ok);
        }
    };
#pragma unroll
    for (int i = 0; i < PD && !WS; ++i) {
        if (t_begin + i < t_end) load_kv(t_begin + i);
        cp_commit();
    }

    float o[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) o[i] = 0.f;
    float m_a = NEG_INF, m_b = NEG_INF, l_a = 0.f, l_b = 0.f;
    const int g = lane >> 2, t4 = lane & 3;
    const int wr0 = row0 + wg * 64;           // this warpgroup's first row
    const int r_a = wr0 + wq * 16 + g;        // this thread's two rows
    const int lim_a = min(prior + r_a, ctx - 1), lim_b = min(prior + r_a + 8, ctx - 1);
    const int wg_min_lim = min(prior + wr0, ctx - 1);
    const int wg_max_lim = min(prior + wr0 + 63, ctx - 1);
    // Tiles this warpgroup computes (uniform over it): the later ones are fully masked.
    const int my_tiles = wr0 < q_len ? min(n_tiles, wg_max_lim / BN + 1) : 0;
    const unsigned q_wg = sQ + wg * 64 * 128;  // this warpgroup's 64 rows in each half
    // With QR: the A fragments of this thread's rows r_a and r_a + 8, per 16 dimensions.
    unsigned qf[QR ? 8 : 1][4];
    if constexpr (QR) {
        auto row = [&](int r) {
            return reinterpret_cast<const unsigned*>(q + ((size_t)(q0 + (r < q_len ? r : 0)) * hq + h) * D);
        };
        const unsigned *qa = row(r_a), *qb = row(r_a + 8);
        const bool ok_a = r_a < q_len, ok_b = r_a + 8 < q_len;
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            const int c = ks * 8 + t4;  // bf16 pairs: dimensions 16 ks + 2 t4 (+ 8)
            qf[ks][0] = ok_a ? qa[c] : 0u;
            qf[ks][1] = ok_b ? qb[c] : 0u;
            qf[ks][2] = ok_a ? qa[c + 4] : 0u;
            qf[ks][3] = ok_b ? qb[c + 4] : 0u;
        }
    }

    auto qk = [&](float* s, int kt) {
        const unsigned cK = sK + buf(kt) * KV_BYTES;
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            const unsigned off = (ks & 3) * 32u;  // k16 step inside a 128-byte row
            const unsigned long long db = wg_desc(cK + (ks >> 2) * (BN * 128) + off, 16, 1024);
            if constexpr (QR) {
                wgmma_rs<BN>(s, qf[ks], db, ks > 0);
            } else {
                const unsigned long long da = wg_desc(q_wg + (ks >> 2) * (BR * 128) + off, 16, 1024);
                wgmma_ss<BN>(s, da, db, ks > 0);
            }
        }
        wg_commit();
    };
    auto pv = [&](const unsigned (*pa)[4], int kt) {
        const unsigned cV = sV + buf(kt) * KV_BYTES;
        wg_fence_regs<64>(o);
        wg_fence();
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            // V is [key][dim]: the MN-major B operand; 16 keys = two 8-row groups = 2048 bytes.
            const unsigned long long db = wg_desc(cV + ks * 2048, BN * 128, 1024);
            wgmma_m64n128k16_rs_tb(o, pa[ks], db);
        }
        wg_commit();
    };
    // Masks (as `mode` says; Check: where the tile reaches past the warpgroup's first
    // row), updates the running max and sum, leaves P in s (f32) and the factor for the
    // accumulators in al_a / al_b.
    auto softmax = [&](float* s, int kt, float& al_a, float& al_b, Mask M) {
        const int kbase = kt * BN;
        if (M == Mask::Always || (M == Mask::Check && kbase + BN - 1 > wg_min_lim)) {
#pragma unroll
            for (int nt = 0; nt < BN / 8; ++nt) {
                const int j = kbase + nt * 8 + t4 * 2;
                if (j > lim_a) s[4 * nt + 0] = NEG_INF;
                if (j + 1 > lim_a) s[4 * nt + 1] = NEG_INF;
                if (j > lim_b) s[4 * nt + 2] = NEG_INF;
                if (j + 1 > lim_b) s[4 * nt + 3] = NEG_INF;
            }
        }
        float mx_a = m_a, mx_b = m_b;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
            mx_a = fmaxf(mx_a, fmaxf(s[4 * nt], s[4 * nt + 1]));
            mx_b = fmaxf(mx_b, fmaxf(s[4 * nt + 2], s[4 * nt + 3]));
        }
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 1));
        mx_a = fmaxf(mx_a, __shfl_xor_sync(0xffffffffu, mx_a, 2));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 1));
        mx_b = fmaxf(mx_b, __shfl_xor_sync(0xffffffffu, mx_b, 2));
        const float sc_a = mx_a == NEG_INF ? 0.f : mx_a * scale_log2;
        const float sc_b = mx_b == NEG_INF ? 0.f : mx_b * scale_log2;
        al_a = fast_exp2(m_a * scale_log2 - sc_a);
        al_b = fast_exp2(m_b * scale_log2 - sc_b);
        m_a = mx_a;
        m_b = mx_b;
        l_a *= al_a;
        l_b *= al_b;
#pragma unroll
        for (int nt = 0; nt < BN / 8; ++nt) {
            s[4 * nt + 0] = fast_exp2(s[4 * nt + 0] * scale_log2 - sc_a);
            s[4 * nt + 1] = fast_exp2(s[4 * nt + 1] * scale_log2 - sc_a);
            s[4 * nt + 2] = fast_exp2(s[4 * nt + 2] * scale_log2 - sc_b);
            s[4 * nt + 3] = fast_exp2(s[4 * nt + 3] * scale_log2 - sc_b);
            l_a += s[4 * nt + 0] + s[4 * nt + 1];
            l_b += s[4 * nt + 2] + s[4 * nt + 3];
        }
    };
    // P packed as bf16 pairs for the A operand of P·V.
    auto pack = [&](const float* s, unsigned (*pa)[4]) {
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
            pa[ks][0] = pack_bf16(s[8 * ks + 0], s[8 * ks + 1]);
            pa[ks][1] = pack_bf16(s[8 * ks + 2], s[8 * ks + 3]);
            pa[ks][2] = pack_bf16(s[8 * ks + 4], s[8 * ks + 5]);
            pa[ks][3] = pack_bf16(s[8 * ks + 6], s[8 * ks + 7]);
        }
    };
    auto rescale = [&](float al_a, float al_b) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            o[4 * i + 0] *= al_a;
            o[4 * i + 1] *= al_a;
            o[4 * i + 2] *= al_b;
            o[4 * i + 3] *= al_b;
        }
    };

    const int my_end = PP ? t_end : min(t_end, my_tiles);
    auto turn_begin = [&]() {
        if constexpr (PP) named_bar_sync(PP_BAR + wg, 256);
    };
    auto turn_end = [&]() {
        if constexpr (PP) named_bar_arrive(PP_BAR + (wg ^ 1), 256);
    };
    // Every thread waits for tile kt, then refills the buffer of tile kt + PD.
    auto sync_load = [&](int kt) {
        cp_wait<PD - 1>();   // tile kt has landed (PD - 1 younger groups may be in flight)
        fence_async_smem();  // cp.async writes are read by wgmma (the async proxy)
        __syncthreads();     // ... for every thread, and no one still reads the buffer loaded next
        if (kt + PD < t_end) load_kv(kt + PD);
        cp_commit();
    };
    // With WS: wait for tile kt's stage, and hand it back to the producer.
    auto wait_full = [&](int kt) {
        if constexpr (WS) mbar_wait(bar_full + 8 * buf(kt), ((iter0 + kt - t_begin) / ST) & 1);
        else sync_load(kt);
    };
    auto release = [&](int kt) {
        if constexpr (WS) mbar_arrive(bar_empty + 8 * buf(kt));
    };
    if constexpr (PIPE) {
        int kt = t_begin;
        float al_a = 1.f, al_b = 1.f;
        unsigned pa[KS][4];
        // Straight-line wgmma code between issue and wait (a branch there makes ptxas
        // serialise them): the first tile peeled, the last P·V after the loop.
        if (t_begin < my_end) {
            float s[NS];
            wait_full(kt);
            turn_begin();
            qk(s, kt);
            turn_end();
            wg_wait<0>();
            wg_fence_regs<NS>(s);
            softmax(s, kt, al_a, al_b, Mask::Check);
            pack(s, pa);
            // No branch while a P·V is in flight (ptxas would wait for it there): the
            // tiles before the warpgroup's diagonal, then those that need the mask. The
            // new P is packed before the wait, into the buffer the P·V is not reading
            // (else ptxas hoists the wait above the softmax to reuse the registers); a
            // run's odd last tile packs after the wait, in place.
            unsigned pb[KS][4];
            auto step = [&](Mask mode, unsigned (*cur)[4], unsigned (*next)[4], bool in_place) {
                wait_full(kt);
                turn_begin();
                qk(s, kt);
                rescale(al_a, al_b);
                pv(cur, kt - 1);
                turn_end();
                wg_wait<1>();  // S (the older group) is done; P·V may still run
                wg_fence_regs<NS>(s);
                softmax(s, kt, al_a, al_b, mode);
                if (!in_place) {
                    pack(s, next);
                    wg_fence_regs_u<KS>(next);
                }
                wg_wait<0>();
                wg_fence_regs<64>(o);
                if (in_place) wg_fence_regs_u<KS>(pa);  // the previous P stays live until its P·V is done
                else wg_keep_until_here<KS>(cur, l_a < 0.f);
                release(kt - 1);
                if (in_place) pack(s, pa);
            };
            // With 128 keys the second buffer costs more registers than the overlap gains.
            constexpr bool TWO_P = BN == 64;
            auto run = [&](int end, Mask mode) {
                for (; TWO_P && kt + 1 < end; kt += 2) {
                    step(mode, pa, pb, false);
                    ++kt;
                    step(mode, pb, pa, false);
                    --kt;
                }
                for (; kt < end; ++kt) step(mode, pa, pa, true);
            };
            ++kt;
            run(max(kt, min(my_end, (wg_min_lim + 1) / BN)), Mask::None);
            run(my_end, Mask::Always);
            rescale(al_a, al_b);
            turn_begin();
            pv(pa, kt - 1);
            turn_end();
            wg_wait<0>();
            wg_fence_regs<64>(o);
            release(kt - 1);
        }
        for (; kt < t_end; ++kt) {  // tiles fully masked for this warpgroup
            wait_full(kt);
            release(kt);
        }
    } else {
        for (int kt = t_begin; kt < t_end; ++kt) {
            cp_wait<PD - 1>();   // tile kt has landed (PD - 1 younger groups may be in flight)
            fence_async_smem();  // cp.async writes are read by wgmma (the async proxy)
            __syncthreads();     // ... for every thread, and no one still reads the buffer loaded next
            if (kt + PD < t_end) load_kv(kt + PD);
            cp_commit();
            if (kt >= my_tiles) continue;  // uniform per warpgroup
            float s[NS];
            unsigned pa[KS][4];
            float al_a, al_b;
            qk(s, kt);
            wg_wait<0>();
            wg_fence_regs<NS>(s);
            softmax(s, kt, al_a, al_b, Mask::Check);
            pack(s, pa);
            rescale(al_a, al_b);
            pv(pa, kt);
            wg_wait<0>();
            wg_fence_regs<64>(o);
        }
    }
    cp_wait<0>();

    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 1);
    l_b += __shfl_xor_sync(0xffffffffu, l_b, 2);
    const float inv_a = l_a > 0.f ? 1.f / l_a : 0.f;
    const float inv_b = l_b > 0.f ? 1.f / l_b : 0.f;
    const int rb = r_a + 8;
    if constexpr (SPLIT) {
        auto part = [&](int r, float m, float l, float inv, int c) {
            if (r >= q_len) return;
            const size_t slot = ((size_t)(q0 + r) * hq + h) * n_splits + split;
            float2* dst = reinterpret_cast<float2*>(o_part + slot * D);
#pragma unroll
            for (int dt = 0; dt < 16; ++dt)
                dst[(dt * 8 + t4 * 2) >> 1] = make_float2(o[4 * dt + c] * inv, o[4 * dt + c + 1] * inv);
            if (t4 == 0) lse_part[slot] = l > 0.f ? m * scale_log2 + log2f(l) : NEG_INF;
        };
        part(r_a, m_a, l_a, inv_a, 0);
        part(rb, m_b, l_b, inv_b, 2);
        __shared__ int s_last;
        __threadfence();  // this block's partials are visible before its ticket
        __syncthreads();
        if (tid == 0) {
            s_last = atomicAdd(counter, 1) == n_splits - 1;
            if (s_last) *counter = 0;  // every other block has taken its ticket
        }
        __syncthreads();
        if (!s_last) return;
        __threadfence();
        // Read back through L2 (__ldcg): the other blocks' writes bypass this SM's L1.
        auto merge = [&](int r) {
            if (r >= q_len) return;
            const size_t slot0 = ((size_t)(q0 + r) * hq + h) * n_splits;
            float w[SPLIT_MAX];
            float mx = NEG_INF;
            for (int sp = 0; sp < n_splits; ++sp) mx = fmaxf(mx, __ldcg(lse_part + slot0 + sp));
            float den = 0.f, acc[32];
#pragma unroll
            for (int i = 0; i < 32; ++i) acc[i] = 0.f;
            for (int sp = 0; sp < n_splits; ++sp) {
                const float lse = __ldcg(lse_part + slot0 + sp);
                w[sp] = lse == NEG_INF ? 0.f : exp2f(lse - mx);
                den += w[sp];
                if (w[sp] == 0.f) continue;
                const float2* src = reinterpret_cast<const float2*>(o_part + (slot0 + sp) * D);
#pragma unroll
                for (int dt = 0; dt < 16; ++dt) {
                    const float2 v = __ldcg(src + ((dt * 8 + t4 * 2) >> 1));
                    acc[2 * dt] += w[sp] * v.x;
                    acc[2 * dt + 1] += w[sp] * v.y;
                }
            }
            const float inv = den > 0.f ? 1.f / den : 0.f;
            unsigned* dst = reinterpret_cast<unsigned*>(out + ((size_t)(q0 + r) * hq + h) * D);
#pragma unroll
            for (int dt = 0; dt < 16; ++dt) dst[(dt * 8 + t4 * 2) >> 1] = pack_bf16(acc[2 * dt] * inv, acc[2 * dt + 1] * inv);
        };
        merge(r_a);
        merge(rb);
        return;
    }
    if (r_a < q_len) {
        unsigned* dst = reinterpret_cast<unsigned*>(out + ((size_t)(q0 + r_a) * hq + h) * D);
#pragma unroll
        for (int dt = 0; dt < 16; ++dt) dst[(dt * 8 + t4 * 2) >> 1] = pack_bf16(o[4 * dt] * inv_a, o[4 * dt + 1] * inv_a);
    }
    if (rb < q_len) {
        unsigned* dst = reinterpret_cast<unsigned*>(out + ((size_t)(q0 + rb) * hq + h) * D);
#pragma unroll
        for (int dt = 0; dt < 16; ++dt)
            dst[(dt * 8 + t4 * 2) >> 1] = pack_bf16(o[4 * dt + 2] * inv_b, o[4 * dt + 3] * inv_b);
    }
#else
    __trap();
#endif
}

// Heavy and light q tiles paired per block, as flash_prefill_pairs (with UNPAIRED, one tile
// per block, heaviest first). With WS and PRODUCER_REGS, the producer gives registers up to
// the consumers (setmaxnreg).
template <int NWG, int BN, int ST, bool PIPE = false, bool WS = false, bool PP = false, int PRODUCER_REGS = 0,
          bool QR = false, bool UNPAIRED = false>
__device__ __forceinline__ void flash_prefill_wg_pairs(FLASH_PREFILL_ARGS) {
    constexpr int BR = 64 * NWG;
    constexpr int CONSUMER_REGS = (65536 / (128 * (NWG + 1)) * (NWG + 1) - PRODUCER_REGS) / NWG / 8 * 8;
    int iter = 0;
    if constexpr (WS) {
        if (threadIdx.x == 0) {
            const unsigned bars = ws_barriers();
            for (int i = 0; i < ST; ++i) {
                mbar_init(bars + 8 * i, 128);
                mbar_init(bars + 8 * (ST + i), 128 * NWG);
            }
        }
        __syncthreads();
    }
    const int b = blockIdx.z;
    const int n = (cu_q[b + 1] - cu_q[b] + BR - 1) / BR;
    const int hi = n - 1 - (int)blockIdx.x, lo = UNPAIRED ? hi : (int)blockIdx.x;
    if (hi < (UNPAIRED ? 0 : lo)) return;
    auto passes = [&](bool producer) {
        for (int pass = 0; pass < (UNPAIRED ? 1 : 2); ++pass) {
            if (pass == 1) {
                if (hi == lo) break;
                // Shared memory is reused by the second tile (with WS, stages are handed
                // over by mbarriers and each consumer reloads only its own query rows).
                if constexpr (!WS) __syncthreads();
            }
            flash_prefill_wg_body<NWG, BN, ST, false, PIPE, WS, PP, QR>(FLASH_PREFILL_PASS, b, (int)blockIdx.y,
                                                                    pass == 0 ? hi : lo, 0, 1, nullptr, nullptr,
                                                                    nullptr, &iter, producer);
        }
    };
    if constexpr (WS) {
        const int wg = threadIdx.x / 128;
        if (wg == NWG) {
            if constexpr (PRODUCER_REGS > 0) regs_dec<PRODUCER_REGS>();
            passes(true);
        } else {
            if constexpr (PRODUCER_REGS > 0) regs_inc<CONSUMER_REGS>();
            // The first turn is the first consumer's; its last sync takes the second's final hand-over.
            if constexpr (PP)
                if (wg == 1) named_bar_arrive(PP_BAR, 256);
            passes(false);
            if constexpr (PP)
                if (wg == 0) named_bar_sync(PP_BAR, 256);
        }
    } else {
        passes(false);
    }
}

#ifndef FUSELAB_TUNE_ONLY
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 2>(FLASH_PREFILL_PASS);
}
// FlashAttention-3's schedule (the default on sm_90a for full prompts): a producer warpgroup
// loads K/V tiles of 128 keys into three stages handed over by mbarriers and gives its
// registers to the two consumers, which take turns on the tensor cores (ping-pong) with
// softmax overlapped with P·V inside each.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128pp(FLASH_PREFILL_ARGS) {
#ifdef FUSELAB_WGMMA  // setmaxnreg and mbarrier waits need sm_90a
    flash_prefill_wg_pairs<2, 128, 3, true, true, true, 40>(FLASH_PREFILL_PASS);
#else
    __trap();
#endif
}
// As wg128pp with one block per q tile, heaviest first: for chunks after a long prefix whose
// tiles alone fill the SMs (the producer keeps 56 registers: with 40 its loads spill here).
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128ppu(FLASH_PREFILL_ARGS) {
#ifdef FUSELAB_WGMMA
    flash_prefill_wg_pairs<2, 128, 3, true, true, true, 56, false, true>(FLASH_PREFILL_PASS);
#else
    __trap();
#endif
}
// Registers capped for two blocks per SM.
extern "C" __global__ void __launch_bounds__(256, 2) flash_prefill_wg128x2(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 2>(FLASH_PREFILL_PASS);
}
// One block per q tile, heaviest (last) tile first: twice the blocks of the paired grid,
// for chunks after a long prefix, where every tile costs about the same.
extern "C" __global__ void __launch_bounds__(256, 2) flash_prefill_wg128x2u(FLASH_PREFILL_ARGS) {
    const int b = blockIdx.z;
    const int n = (cu_q[b + 1] - cu_q[b] + 127) / 128;
    const int tile = n - 1 - (int)blockIdx.x;
    if (tile >= 0) flash_prefill_wg_body<2, 64, 2>(FLASH_PREFILL_PASS, b, (int)blockIdx.y, tile);
}
// As wg128x2u with each query tile's K/V cut into n_splits parts, one block each
// (grid x = tiles × n_splits), for chunks whose unpaired grid still leaves SMs idle; the
// last part to finish merges them (`counters`: one zeroed int per grid tile).
extern "C" __global__ void __launch_bounds__(256, 2) flash_prefill_wg128x2s(FLASH_PREFILL_ARGS, float* __restrict__ o_part,
                                                                           float* __restrict__ lse_part,
                                                                           int* __restrict__ counters, int n_splits) {
    const int b = blockIdx.z;
    const int n = (cu_q[b + 1] - cu_q[b] + 127) / 128;
    const int tile = n - 1 - (int)blockIdx.x / n_splits;
    const int split = (int)blockIdx.x % n_splits;
    const size_t grid_tiles = gridDim.x / n_splits;
    int* counter = counters + ((size_t)b * gridDim.y + blockIdx.y) * grid_tiles + blockIdx.x / n_splits;
    if (tile >= 0 && tile * 128 < cu_q[b + 1] - cu_q[b])
        flash_prefill_wg_body<2, 64, 2, true>(FLASH_PREFILL_PASS, b, (int)blockIdx.y, tile, split, n_splits, o_part,
                                              lse_part, counter);
}
// K/V tiles of 128 keys.
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128n(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 128, 2>(FLASH_PREFILL_PASS);
}
// Three warpgroups: 192 query rows per block.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg192(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<3, 64, 2>(FLASH_PREFILL_PASS);
}

// ---------------------------------------------------------------- skinny GEMM (decode)
// y[t, n] (+)= Σ_k x[t, k] · w[n, k] for T ≤ 64 rows, a weight-streaming shape: block
// (split, tile) of a cluster of SPLITS blocks owns 128 outputs of w over the k chunks of
// its split. One producer thread streams 64-wide k chunks of the tile's 128 w rows and of
// x's 64 rows (rows beyond T arrive as zeros) by TMA (two 2-D copies a stage, 128-byte
// swizzle) into `stages` stages handed over by mbarriers; one consumer warpgroup runs
// wgmma m64n128 over them, a chunk's stage released once the next chunk's are issued. The splits' f32 partials meet in shared memory:
// each block sums its slice of the tile's rows over every block of the cluster
// (distributed shared memory, fixed order: deterministic) and writes y once.
#define SKN_W_BYTES (128 * 128)
#define SKN_STAGE (SKN_W_BYTES + 64 * 128)
#define SKN_PART_PITCH 136  // floats per row of the partial tile
// A TMA descriptor (CUtensorMap) passed by value.
struct __align__(64) TmaMap {
    unsigned long long v[16];
};
__device__ __forceinline__ void mbar_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void tma_load_2d(unsigned dst, const TmaMap* map, int c0, int c1, unsigned bar) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
        "[%4];\n" ::"r"(dst),
        "l"(reinterpret_cast<unsigned long long>(map)), "r"(c0), "r"(c1), "r"(bar)
        : "memory");
}
// One contiguous bulk copy of `bytes` (a multiple of 16) from global memory into shared memory.
__device__ __forceinline__ void bulk_load(unsigned dst, const void* src, unsigned bytes, unsigned bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
                 "l"(reinterpret_cast<unsigned long long>(src)), "r"(bytes), "r"(bar)
                 : "memory");
}
// A weight in the skinny GEMM's tiled layout: tile (n / 128, k / 64) is 128 rows × 64 bf16
// stored as the 128-byte-swizzled image TMA would write to shared memory (16-byte chunk c of
// row r at chunk c ^ (r % 8)), tiles in n-major, k-minor order. One thread a 16-byte chunk.
extern "C" __global__ void skinny_tile_weight(const uint4* __restrict__ w, uint4* __restrict__ out, int n, int k) {
    const unsigned long long units = (unsigned long long)n * k / 8;
    const int chunks = k / 64;
    for (unsigned long long u = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; u < units;
         u += (unsigned long long)gridDim.x * blockDim.x) {
        const unsigned long long tile = u >> 10;
        const int j = (int)(u & 1023), r = j >> 3, c = (j & 7) ^ (r & 7);
        const unsigned long long nt = tile / chunks, kc = tile % chunks;
        out[u] = w[((nt * 128 + r) * (unsigned long long)k + kc * 64) / 8 + c];
    }
}
__device__ __forceinline__ void cluster_sync() {
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ float4 ld_cluster_f4(unsigned addr, unsigned rank) {
    unsigned remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(addr), "r"(rank));
    float4 v;
    asm volatile("ld.shared::cluster.v4.f32 {%0,%1,%2,%3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(remote)
                 : "memory");
    return v;
}
template <int SPLITS>
__device__ __forceinline__ void skinny_body(const TmaMap* w_map, const TmaMap* x_map, bf16* __restrict__ y, int T,
                                            int K, int ld_y, int accumulate, int stages,
                                            const bf16* __restrict__ w_tiled) {
#ifdef FUSELAB_WGMMA
    __shared__ __align__(8) unsigned long long bars[2 * 8];
    unsigned char* base = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
    const unsigned s0 = smem_u32(base), full0 = smem_u32(bars), empty0 = full0 + 8 * 8;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int split = blockIdx.x, n0 = blockIdx.y * 128;
    const int chunks = K / 64, c_begin = chunks * split / SPLITS, c_end = chunks * (split + 1) / SPLITS;
    if (tid == 0) {
        for (int s = 0; s < stages; ++s) {
            mbar_init(full0 + 8 * s, 1);
            mbar_init(empty0 + 8 * s, 4);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    // w's chunk c of this tile: one contiguous 16 KB copy from the tiled layout where there is
    // one, else a 2-D TMA box of the row-major weight.
    const bf16* w_tile = w_tiled ? w_tiled + (size_t)blockIdx.y * chunks * (128 * 64) : nullptr;
    auto load_w = [&](unsigned dst, int c, unsigned bar) {
        if (w_tile)
            bulk_load(dst, w_tile + (size_t)c * (128 * 64), SKN_W_BYTES, bar);
        else
            tma_load_2d(dst, w_map, c * 64, n0, bar);
    };
    if (warp == 4) {  // producer: one thread issues two copies a stage
        // The weights are no earlier kernel's output: the first stages' w tiles are in
        // flight before the wait for x (programmatic dependent launch).
        if (lane == 0) {
            for (int c = c_begin, i = 0; c < c_end && i < stages; ++c, ++i) {
                mbar_expect_tx(full0 + 8 * i, SKN_STAGE);
                load_w(s0 + i * SKN_STAGE, c, full0 + 8 * i);
            }
        }
        grid_dependency_wait();
        if (lane == 0) {
            grid_dependents_launch();
            for (int c = c_begin, i = 0; c < c_end; ++c, ++i) {
                const int s = i % stages;
                const unsigned st = s0 + s * SKN_STAGE;
                if (i >= stages) {
                    mbar_wait(empty0 + 8 * s, ((i / stages) - 1) & 1);
                    mbar_expect_tx(full0 + 8 * s, SKN_STAGE);
                    load_w(st, c, full0 + 8 * s);
                }
                tma_load_2d(st + SKN_W_BYTES, x_map, c * 64, 0, full0 + 8 * s);
            }
        }
        __syncwarp();
    } else {  // one consumer warpgroup: y tile (64 tokens × 128 outputs) += x chunk · w chunkᵀ
        grid_dependency_wait();
        float d[64];
#pragma unroll
        for (int e = 0; e < 64; ++e) d[e] = 0.f;
        for (int c = c_begin, i = 0; c < c_end; ++c, ++i) {
            const int s = i % stages;
            mbar_wait(full0 + 8 * s, (i / stages) & 1);
            const unsigned sw = s0 + s * SKN_STAGE, sx = sw + SKN_W_BYTES;
            wg_fence_regs<64>(d);
            wg_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ++ks)
                wgmma_m64n128k16_ss(d, wg_desc(sx + ks * 32, 16, 1024), wg_desc(sw + ks * 32, 16, 1024), 1);
            wg_commit();
            wg_wait<1>();  // the previous chunk's products are done: its stage goes back
            wg_fence_regs<64>(d);
            if (i > 0 && lane == 0) mbar_arrive(empty0 + 8 * ((i - 1) % stages));
        }
        wg_wait<0>();
        wg_fence_regs<64>(d);
        named_bar_sync(1, 128);  // every consumer is done with the stages: reuse them
        float* part = reinterpret_cast<float*>(base);
        const int g = lane >> 2, t4 = lane & 3, ra = warp * 16 + g;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
            const int col = 8 * j + 2 * t4;
            *reinterpret_cast<float2*>(part + ra * SKN_PART_PITCH + col) = make_float2(d[4 * j], d[4 * j + 1]);
            *reinterpret_cast<float2*>(part + (ra + 8) * SKN_PART_PITCH + col) =
                make_float2(d[4 * j + 2], d[4 * j + 3]);
        }
    }
    __syncwarp();
    cluster_sync();  // every block's partial tile is in its shared memory
    const int r_begin = T * split / SPLITS, r_end = T * (split + 1) / SPLITS;
    for (int e = tid; e < (r_end - r_begin) * 32; e += blockDim.x) {
        const int r = r_begin + (e >> 5), col = (e & 31) * 4;
        const unsigned addr = s0 + (unsigned)(r * SKN_PART_PITCH + col) * 4u;
        float4 v = ld_cluster_f4(addr, 0);
#pragma unroll
        for (int j = 1; j < SPLITS; ++j) {
            const float4 p = ld_cluster_f4(addr, j);
            v.x += p.x;
            v.y += p.y;
            v.z += p.z;
            v.w += p.w;
        }
        bf162* dst = reinterpret_cast<bf162*>(y + (size_t)r * ld_y + n0 + col);
        if (accumulate) {
            const float2 o0 = __bfloat1622float2(dst[0]), o1 = __bfloat1622float2(dst[1]);
            v.x += o0.x;
            v.y += o0.y;
            v.z += o1.x;
            v.w += o1.y;
        }
        dst[0] = __floats2bfloat162_rn(v.x, v.y);
        dst[1] = __floats2bfloat162_rn(v.z, v.w);
    }
    cluster_sync();  // the peers' slices are read before any block's shared memory goes
#else
    __trap();
#endif
}
#ifdef FUSELAB_WGMMA
#define SKINNY_CLUSTER(S) __cluster_dims__(S, 1, 1)
#else
#define SKINNY_CLUSTER(S)
#endif
#define SKINNY_ARGS                                                                                         \
    const __grid_constant__ TmaMap w_map, const __grid_constant__ TmaMap x_map, bf16 *__restrict__ y, int T, \
        int K, int ld_y, int accumulate, int stages, const bf16 *__restrict__ w_tiled
#define SKINNY_PASS &w_map, &x_map, y, T, K, ld_y, accumulate, stages, w_tiled
extern "C" __global__ void __launch_bounds__(160) SKINNY_CLUSTER(1) skinny_gemm_c1(SKINNY_ARGS) {
    skinny_body<1>(SKINNY_PASS);
}
extern "C" __global__ void __launch_bounds__(160) SKINNY_CLUSTER(2) skinny_gemm_c2(SKINNY_ARGS) {
    skinny_body<2>(SKINNY_PASS);
}
extern "C" __global__ void __launch_bounds__(160) SKINNY_CLUSTER(4) skinny_gemm_c4(SKINNY_ARGS) {
    skinny_body<4>(SKINNY_PASS);
}
extern "C" __global__ void __launch_bounds__(160) SKINNY_CLUSTER(8) skinny_gemm_c8(SKINNY_ARGS) {
    skinny_body<8>(SKINNY_PASS);
}

#endif  // FUSELAB_TUNE_ONLY

// ---------------------------------------------------------------- tuning candidates
// Prefill tiles measured against the default and kept selectable (kernels/src/cuda/NOTES.md),
// in a module of their own compiled on first use (FUSELAB_PREFILL_EXPERIMENTS), so that they
// do not lengthen every engine's start.
#if defined(FUSELAB_PREFILL_EXPERIMENTS) && defined(FUSELAB_WGMMA)
// Softmax overlapped with the tensor cores (PIPE): K/V tiles of 128 keys in three stages.
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128p(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 128, 3, true>(FLASH_PREFILL_PASS);
}
// PIPE with K/V tiles of 64 keys in four stages (two tiles loaded ahead).
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128p64(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 4, true>(FLASH_PREFILL_PASS);
}
// PIPE with a producer warpgroup (WS): K/V tiles of 64 keys in four stages.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128ws(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 4, true, true>(FLASH_PREFILL_PASS);
}
// WS with K/V tiles of 128 keys in three stages and the producer's registers given to the
// consumers.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128wsn(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 128, 3, true, true, false, 40>(FLASH_PREFILL_PASS);
}
// wg128ws (K/V tiles of 64 keys, four stages) in ping-pong.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128pp64(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 4, true, true, true, 40>(FLASH_PREFILL_PASS);
}
// Query rows in registers (QR): K/V tiles of 128 keys in three stages, one block per SM.
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128q(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 128, 3, false, false, false, 0, true>(FLASH_PREFILL_PASS);
}
// QR and PIPE, K/V tiles of 128 keys in three stages.
extern "C" __global__ void __launch_bounds__(256, 1) flash_prefill_wg128qp(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 128, 3, true, false, false, 0, true>(FLASH_PREFILL_PASS);
}
// QR and WS (K/V tiles of 64 keys, four stages), the producer's registers given to the consumers.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg128qws(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<2, 64, 4, true, true, false, 40, true>(FLASH_PREFILL_PASS);
}
// PIPE on three warpgroups, K/V tiles of 64 keys in three stages.
extern "C" __global__ void __launch_bounds__(384, 1) flash_prefill_wg192p(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<3, 64, 3, true>(FLASH_PREFILL_PASS);
}
#endif  // FUSELAB_PREFILL_EXPERIMENTS

// Compiled only into a tuning module (tuned.rs): FUSELAB_PF_NWG warpgroups of 64 rows,
// FUSELAB_PF_BN keys per K/V tile, FUSELAB_PF_ST cp.async stages, FUSELAB_PF_MINB blocks per
// SM for the register cap; `_u` takes one q tile per block (heaviest first), the other
// pairs heavy and light tiles.
#if defined(FUSELAB_TUNE_PREFILL) && defined(FUSELAB_WGMMA)
extern "C" __global__ void __launch_bounds__(128 * FUSELAB_PF_NWG, FUSELAB_PF_MINB)
    flash_prefill_tuned(FLASH_PREFILL_ARGS) {
    flash_prefill_wg_pairs<FUSELAB_PF_NWG, FUSELAB_PF_BN, FUSELAB_PF_ST>(FLASH_PREFILL_PASS);
}
extern "C" __global__ void __launch_bounds__(128 * FUSELAB_PF_NWG, FUSELAB_PF_MINB)
    flash_prefill_tuned_u(FLASH_PREFILL_ARGS) {
    constexpr int BR = 64 * FUSELAB_PF_NWG;
    const int b = blockIdx.z;
    const int n = (cu_q[b + 1] - cu_q[b] + BR - 1) / BR;
    const int tile = n - 1 - (int)blockIdx.x;
    if (tile >= 0)
        flash_prefill_wg_body<FUSELAB_PF_NWG, FUSELAB_PF_BN, FUSELAB_PF_ST>(FLASH_PREFILL_PASS, b, (int)blockIdx.y,
                                                                           tile);
}
#endif

// ---------------------------------------------------------------- paged decode (split-KV)
// One query token per sequence. Grid (splits, hkv, batch), 4 warps. The group of
// hq/hkv (<= 8) query heads sharing a KV head forms the rows of one m16 tile, so
// every K/V byte is read once. Each warp takes 16 keys of each 64-key tile; the four
// warps merge in shared memory, and the split partials (o, log2-sum-exp) are merged by
// decode_merge.
// NW warps take 16 keys each of a tile of KT = 16·NW keys, in ST cp.async stages.
#define DEC_STAGES 3
#define PAGED_DECODE_ARGS                                                                                      \
    const bf16 *__restrict__ q, const bf16 *__restrict__ kc, const bf16 *__restrict__ vc,                      \
        float *__restrict__ o_part, float *__restrict__ lse_part, const int *__restrict__ ctx_lens,            \
        const int *__restrict__ block_tables, int max_blocks, int block_shift, int hq, int hkv, int split_len, \
        float scale_log2, bf16 *__restrict__ out_direct
#define PAGED_DECODE_PASS \
    q, kc, vc, o_part, lse_part, ctx_lens, block_tables, max_blocks, block_shift, hq, hkv, split_len, scale_log2, out_direct
template <int NW, int ST>
__device__ __forceinline__ void paged_decode_body(PAGED_DECODE_ARGS) {
    grid_dependency_chain();
    constexpr int D = HEAD_DIM;
    constexpr int KT = 16 * NW;
    constexpr int NT = 32 * NW;
    constexpr int STAGE = 2 * KT * D;  // K tile then V tile
    bf16* sKV = reinterpret_cast<bf16*>(smem_raw);

    const int split = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
    const int n_splits = gridDim.x;
    const int group = hq / hkv;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int lm = lane >> 3, lr = lane & 7;
    const int ctx = ctx_lens[b];
    // split_len <= 0: every sequence is cut into n_splits equal parts of whole tiles.
    if (split_len <= 0) split_len = max(1, (ctx + n_splits * KT - 1) / (n_splits * KT)) * KT;
    const int start = split * split_len;
    const int end = min(start + split_len, ctx);
    const int n_tiles = end > start ? (end - start + KT - 1) / KT : 0;
    const int* bt = block_tables + (size_t)b * max_blocks;
    const int bmask = (1 << block_shift) - 1;
    const size_t row_stride = (size_t)hkv * D;

    auto load_tile = [&](int stage, int kt) {
        bf16* dK = sKV + stage * STAGE;
        bf16* dV = dK + KT * D;
        const int ch = tid & 15;
#pragma unroll
        for (int i = 0; i < KT * 16 / NT; ++i) {
            const int r = (tid >> 4) + i * (NT / 16);
            const int j = start + kt * KT + r;
            const bool ok = j < end;
            const int jj = ok ? j : 0;
            const int blk = bt[jj >> block_shift];
            const size_t off = ((size_t)blk * (bmask + 1) + (jj & bmask)) * row_stride + (size_t)hk * D + ch * 8;
            cp_async16(smem_u32(dK + swz(r, ch)), kc + off, ok);
            cp_async16(smem_u32(dV + swz(r, ch)), vc + off, ok);
        }
    };
#pragma unroll
    for (int s = 0; s < ST - 1; ++s) {
        if (s < n_tiles) load_tile(s, s);
        cp_commit();
    }

    // Query fragments: rows 0..group-1 real, rows >= group zero.
    unsigned qf[8][4];
    {
        const bool ok = g < group;
        const bf16* qrow = q + ((size_t)b * hq + hk * group + (ok ? g : 0)) * D;
#pragma unroll
        for (int ks = 0; ks < 8; ++ks) {
            qf[ks][0] = ok ? *reinterpret_cast<const unsigned*>(qrow + ks * 16 + t4 * 2) : 0u;
            qf[ks][2] = ok ? *reinterpret_cast<const unsigned*>(qrow + ks * 16 + 8 + t4 * 2) : 0u;
            qf[ks][1] = 0u;
            qf[ks][3] = 0u;
        }
    }
    float o[16][4];
#pragma unroll
    for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
    float m_a = NEG_INF, l_a = 0.f;

    for (int kt = 0; kt < n_tiles; ++kt) {
        cp_wait<ST - 2>();
        __syncthreads();
        {
            const int nt = kt + ST - 1;
            if (nt < n_tiles) load_tile(nt % ST, nt);
            cp_commit();
        }
        const bf16* cK = sKV + (kt % ST) * STAGE;
        const bf16* cV = cK + KT * D;
        const int kbase = start + kt * KT + warp * 16;
        if (kbase < end) {
            float s[2][4];
#pragma unroll
            for (int i = 0; i < 2; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < 8; ++ks) {
                unsigned b0, b1, b2, b3;
                const int r = warp * 16 + (lm >> 1) * 8 + lr;
                ldsm_x4(b0, b1, b2, b3, smem_u32(cK + swz(r, ks * 2 + (lm & 1))));
                mma_bf16(s[0], qf[ks], b0, b1);
                mma_bf16(s[1], qf[ks], b2, b3);
            }
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                const int j = kbase + nt * 8 + t4 * 2;
                if (j >= end) s[nt][0] = NEG_INF;
                if (j + 1 >= end) s[nt][1] = NEG_INF;
            }
            float mx = fmaxf(m_a, fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1])));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float sc = mx * scale_log2;  // mx finite: key kbase < end is unmasked
            const float al = fast_exp2(m_a * scale_log2 - sc);
            m_a = mx;
            l_a *= al;
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                o[i][0] *= al;
                o[i][1] *= al;
            }
            const float p00 = fast_exp2(s[0][0] * scale_log2 - sc), p01 = fast_exp2(s[0][1] * scale_log2 - sc);
            const float p10 = fast_exp2(s[1][0] * scale_log2 - sc), p11 = fast_exp2(s[1][1] * scale_log2 - sc);
            l_a += p00 + p01 + p10 + p11;
            unsigned pa[4] = {pack_bf16(p00, p01), 0u, pack_bf16(p10, p11), 0u};
#pragma unroll
            for (int dp = 0; dp < 8; ++dp) {
                unsigned b0, b1, b2, b3;
                const int r = warp * 16 + (lm & 1) * 8 + lr;
                ldsm_x4_t(b0, b1, b2, b3, smem_u32(cV + swz(r, dp * 2 + (lm >> 1))));
                mma_bf16(o[2 * dp], pa, b0, b1);
                mma_bf16(o[2 * dp + 1], pa, b2, b3);
            }
        }
    }
    cp_wait<0>();
    __syncthreads();

    // Merge the NW warps through shared memory (reusing the pipeline buffers).
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 1);
    l_a += __shfl_xor_sync(0xffffffffu, l_a, 2);
    float* red_m = reinterpret_cast<float*>(smem_raw);  // [NW][8]
    float* red_l = red_m + 8 * NW;                      // [NW][8]
    float* red_o = red_l + 8 * NW;                      // [NW][8][D]
    if (g < group) {
        if (t4 == 0) {
            red_m[warp * 8 + g] = m_a;
            red_l[warp * 8 + g] = l_a;
        }
#pragma unroll
        for (int dt = 0; dt < 16; ++dt) {
            red_o[(warp * 8 + g) * D + dt * 8 + t4 * 2] = o[dt][0];
            red_o[(warp * 8 + g) * D + dt * 8 + t4 * 2 + 1] = o[dt][1];
        }
    }
    __syncthreads();
    for (int idx = tid; idx < group * D; idx += NT) {
        const int r = idx / D, d = idx - r * D;
        float mx = NEG_INF;
#pragma unroll
        for (int w = 0; w < NW; ++w) mx = fmaxf(mx, red_m[w * 8 + r]);
        float den = 0.f, acc = 0.f;
        if (mx != NEG_INF) {
#pragma unroll
            for (int w = 0; w < NW; ++w) {
                const float mw = red_m[w * 8 + r];
                const float f = mw == NEG_INF ? 0.f : fast_exp2((mw - mx) * scale_log2);
                den += red_l[w * 8 + r] * f;
                acc += red_o[(w * 8 + r) * D + d] * f;
            }
        }
        const size_t bh = (size_t)b * hq + hk * group + r;
        if (out_direct != nullptr) {  // one split: the final output, no merge pass
            out_direct[bh * D + d] = __float2bfloat16(den > 0.f ? acc / den : 0.f);
            continue;
        }
        o_part[(bh * n_splits + split) * D + d] = den > 0.f ? acc / den : 0.f;
        if (d == 0) lse_part[bh * n_splits + split] = den > 0.f ? mx * scale_log2 + log2f(den) : NEG_INF;
    }
}

#ifndef FUSELAB_TUNE_ONLY
extern "C" __global__ void __launch_bounds__(128) paged_decode(PAGED_DECODE_ARGS) {
    paged_decode_body<4, DEC_STAGES>(PAGED_DECODE_PASS);
}
#endif
#ifdef FUSELAB_TUNE_DECODE
// A tuning candidate (tuned.rs): FUSELAB_DEC_NW warps, FUSELAB_DEC_ST stages.
extern "C" __global__ void __launch_bounds__(32 * FUSELAB_DEC_NW) paged_decode_tuned(PAGED_DECODE_ARGS) {
    paged_decode_body<FUSELAB_DEC_NW, FUSELAB_DEC_ST>(PAGED_DECODE_PASS);
}
#endif

// Merges split partials: grid (batch * hq), block HEAD_DIM.
extern "C" __global__ void decode_merge(const float* __restrict__ o_part, const float* __restrict__ lse_part,
                                        bf16* __restrict__ out, int n_splits) {
    grid_dependency_chain();
    const size_t bh = blockIdx.x;
    const int d = threadIdx.x;
    const float* lp = lse_part + bh * n_splits;
    float mx = NEG_INF;
    for (int s = 0; s < n_splits; ++s) mx = fmaxf(mx, lp[s]);
    float den = 0.f, acc = 0.f;
    if (mx != NEG_INF) {
        for (int s = 0; s < n_splits; ++s) {
            const float w = lp[s] == NEG_INF ? 0.f : exp2f(lp[s] - mx);
            den += w;
            acc += w * o_part[(bh * n_splits + s) * HEAD_DIM + d];
        }
    }
    out[bh * HEAD_DIM + d] = __float2bfloat16(den > 0.f ? acc / den : 0.f);
}

#ifndef FUSELAB_TUNE_ONLY
// ---------------------------------------------------------------- engine helpers
// Used by the CUDA backend (engines/cuda) around the kernels above.

// x[t, :] = table[tok[t], :]; one block per token; hidden % 8 == 0.
extern "C" __global__ void embed_gather(const bf16* __restrict__ table, const int* __restrict__ tok,
                                        bf16* __restrict__ x, int hidden) {
    grid_dependency_chain();
    const size_t t = blockIdx.x;
    const int nv = hidden >> 3;
    const uint4* src = reinterpret_cast<const uint4*>(table + (size_t)tok[t] * hidden);
    uint4* dst = reinterpret_cast<uint4*>(x + t * hidden);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) dst[i] = src[i];
}

// out[r, :] = x[rows[r], :]; one block per output row; width % 8 == 0.
extern "C" __global__ void gather_rows(const bf16* __restrict__ x, const int* __restrict__ rows,
                                       bf16* __restrict__ out, int width) {
    grid_dependency_chain();
    const size_t r = blockIdx.x;
    const int nv = width >> 3;
    const uint4* src = reinterpret_cast<const uint4*>(x + (size_t)rows[r] * width);
    uint4* dst = reinterpret_cast<uint4*>(out + r * width);
    for (int i = threadIdx.x; i < nv; i += blockDim.x) dst[i] = src[i];
}

// x += y over n8 vectors of 8 bf16 (f32 arithmetic, rounded once).
extern "C" __global__ void add_inplace(bf16* __restrict__ x, const bf16* __restrict__ y, unsigned long long n8) {
    const unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n8; i += stride) {
        uint4 a = reinterpret_cast<const uint4*>(x)[i], b = reinterpret_cast<const uint4*>(y)[i], o;
        const bf162* ap = reinterpret_cast<const bf162*>(&a);
        const bf162* bp = reinterpret_cast<const bf162*>(&b);
        bf162* op = reinterpret_cast<bf162*>(&o);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            float2 fa = __bfloat1622float2(ap[j]);
            float2 fb = __bfloat1622float2(bp[j]);
            op[j] = __floats2bfloat162_rn(fa.x + fb.x, fa.y + fb.y);
        }
        reinterpret_cast<uint4*>(x)[i] = o;
    }
}

// Greedy sampling: out[r] = argmax over logits[r, 0..vocab) (the first index on ties).
// One block of 1024 threads per row.
extern "C" __global__ void __launch_bounds__(1024) argmax_rows(const bf16* __restrict__ logits, int* __restrict__ out,
                                                               int vocab) {
    grid_dependency_chain();
    const bf16* row = logits + (size_t)blockIdx.x * vocab;
    float best = NEG_INF;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        const float v = __bfloat162float(row[i]);
        if (v > best) {  // strided scan: a later i of this thread never wins a tie
            best = v;
            idx = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, o);
        const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
        if (ov > best || (ov == best && oi < idx)) {
            best = ov;
            idx = oi;
        }
    }
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) {
        s_v[warp] = best;
        s_i[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        const int nw = blockDim.x >> 5;
        best = lane < nw ? s_v[lane] : NEG_INF;
        idx = lane < nw ? s_i[lane] : 0x7fffffff;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, best, o);
            const int oi = __shfl_xor_sync(0xffffffffu, idx, o);
            if (ov > best || (ov == best && oi < idx)) {
                best = ov;
                idx = oi;
            }
        }
        if (lane == 0) out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}
#endif  // FUSELAB_TUNE_ONLY
