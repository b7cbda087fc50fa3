// 2-D convolution (stride 1, signed zero padding) and per-channel bias, forward and backward.
//
// Tensors are contiguous NCHW. The weight has layout (C_out, C_in, K_h, K_w). `padding` is
// added on all four sides and may be negative, which crops the input instead:
//   h_out = h_in + 2 * padding - k_h + 1,   w_out = w_in + 2 * padding - k_w + 1.
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signatures
// below T is that type, `long long` is i64 on the Rust side and `int` is i32.
//
// The three convolution kernels are implicit GEMMs with the same tiling: a block of 128
// threads computes a 32 x 64 tile of the GEMM output, stepping through the reduction in slices
// of 16. Each slice of both operands is gathered from global memory into shared memory once and
// then read by all threads, and each thread accumulates a 4 x 4 register tile. The gather
// computes the im2col matrix on the fly, so no im2col buffer is allocated. The kernels require
// blockDim = (128, 1, 1) and trap on any other block shape. They use about 6 KiB (f32) or
// 12 KiB (f64) of static shared memory and no dynamic shared memory (ptxas for sm_80 and sm_90
// reports 6208 to 12544 bytes, with no register spills).
//
// Entry points, launch shapes and the work of one thread:
//
// conv2d_fwd_<T>(Conv2dParams p, const T* x, const T* weight, const T* bias, T* y)
//   y = conv(x, weight) + bias, overwriting y. `bias` (C_out) may be null for no bias.
//   GEMM: rows = C_out, columns = N * h_out * w_out output pixels, reduction = C_in * k_h * k_w.
//   grid = (ceil(N * h_out * w_out / 64), ceil(C_out / 32), 1), block = (128, 1, 1).
//   One thread computes 4 output channels x 4 output pixels.
//
// conv2d_input_bwd_<T>(Conv2dParams p, const T* grad_y, const T* weight, T* grad_x)
//   grad_x += transposed convolution of grad_y with weight. Accumulates, so the caller zeros
//   grad_x first unless it already contains a gradient to add to.
//   GEMM: rows = C_in, columns = N * h_in * w_in input pixels, reduction = C_out * k_h * k_w.
//   grid = (ceil(N * h_in * w_in / 64), ceil(C_in / 32), 1), block = (128, 1, 1).
//   One thread computes 4 input channels x 4 input pixels.
//
// conv2d_weight_bwd_<T>(Conv2dParams p, const T* grad_y, const T* x, T* partials)
//   First of two steps for the weight gradient. GEMM: rows = C_out, columns = C_in * k_h * k_w,
//   reduction = N * h_out * w_out output pixels. The reduction is split into gridDim.z
//   contiguous pixel ranges (split-K), and split z writes its partial sums to
//   partials[z * weight_numel ...], where weight_numel = C_out * C_in * k_h * k_w. Every
//   element of `partials` (gridDim.z * weight_numel) is overwritten, so it needs no zeroing.
//   grid = (ceil(C_in * k_h * k_w / 64), ceil(C_out / 32), splits), block = (128, 1, 1).
//   One thread computes 4 output channels x 4 weight columns over its split's pixels.
//   Choose `splits` from the problem size only (for example so that each split covers about
//   1024 pixels), never from device properties, so that results are bit-identical everywhere.
//
// conv2d_weight_reduce_bwd_<T>(const T* partials, T* grad_weight, int splits,
//                              long long weight_numel)
//   Second step: grad_weight[i] += sum over z in 0..splits of partials[z * weight_numel + i],
//   summed in order of z. Accumulates, so the caller zeros grad_weight first unless it already
//   contains a gradient. 1-D grid-stride loop over weight_numel, for example block = (256, 1, 1)
//   and grid = (ceil(weight_numel / 256), 1, 1). One thread sums one weight element.
//
// bias_add_fwd_<T>(ChannelShape s, const T* x, const T* bias, T* y, long long numel)
//   y[n, c, p] = x[n, c, p] + bias[c] with p the flat h * w index, overwriting y. y may alias x.
//   1-D grid-stride loop over numel = n * c * hw. One thread computes one element.
//
// bias_add_bwd_<T>(ChannelShape s, const T* grad_y, T* grad_bias)
//   grad_bias[c] += sum over n and p of grad_y[n, c, p]. Accumulates, so the caller zeros
//   grad_bias first unless it already contains a gradient. One block per channel, looping over
//   channels if gridDim.x < c: grid = (c, 1, 1), block = (256, 1, 1). The block size must be a
//   multiple of 32 and at most 1024. The sum order depends only on the block size, so keep it
//   fixed for bit-identical results.
//
// No kernel here uses atomics, so every result is bit-identical from run to run for the same
// launch shape.

// Shape of a convolution. Mirrored by `Conv2dParams` in src/cuda/params.rs (same field order).
struct Conv2dParams {
    int n;
    int c_in;
    int c_out;
    int h_in;
    int w_in;
    int h_out;
    int w_out;
    int k_h;
    int k_w;
    int padding;
};

// Shape of an NCHW tensor seen as (n, c, hw) with hw = h * w. Mirrored by `ChannelShape` in
// src/cuda/params.rs (same field order).
struct ChannelShape {
    int n;
    int c;
    int hw;
};

// GEMM tile of one block: kTileM rows x kTileN columns, reduction slices of kTileK.
constexpr int kTileM = 32;
constexpr int kTileN = 64;
constexpr int kTileK = 16;
constexpr int kConvThreads = 128;

// Threads are laid out as kThreadRows x kThreadCols. Thread (row, col) owns GEMM rows
// row + kThreadRows * i and columns col + kThreadCols * j for i, j in [0, 4). Interleaving the
// rows and columns this way keeps shared-memory reads free of bank conflicts and makes
// consecutive threads store consecutive pixels.
constexpr int kThreadRows = 8;
constexpr int kThreadCols = 16;
constexpr int kMicroM = kTileM / kThreadRows;
constexpr int kMicroN = kTileN / kThreadCols;

// Loader geometry. The weight-side tile (kTileK x kTileM) is loaded with kTileK consecutive
// threads along the reduction, so each thread loads kALoads rows kALoadStep apart. The
// pixel-side tile (kTileK x kTileN) is loaded with kTileN consecutive threads along the pixels,
// so each thread loads kBLoads reduction rows kBLoadStep apart.
constexpr int kALoadStep = kConvThreads / kTileK;
constexpr int kALoads = kTileM / kALoadStep;
constexpr int kBLoadStep = kConvThreads / kTileN;
constexpr int kBLoads = kTileK / kBLoadStep;

static_assert(kThreadRows * kThreadCols == kConvThreads, "thread layout must cover the block");
static_assert(kMicroM * kThreadRows == kTileM, "micro tiles must cover the tile rows");
static_assert(kMicroN * kThreadCols == kTileN, "micro tiles must cover the tile columns");
static_assert(kALoadStep * kTileK == kConvThreads && kALoads * kALoadStep == kTileM,
              "weight-side loads must cover the tile exactly");
static_assert(kBLoadStep * kTileN == kConvThreads && kBLoads * kBLoadStep == kTileK,
              "pixel-side loads must cover the tile exactly");

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

__device__ __forceinline__ void require_conv_block_shape() {
    if (blockDim.x != kConvThreads || blockDim.y != 1 || blockDim.z != 1) {
        __trap();
    }
}

// Splits a flat pixel index over (n, h, w) into its batch index and the offset inside one
// h x w plane.
__device__ __forceinline__ void split_pixel(long long pixel, int plane, int& batch, int& offset) {
    batch = (int)(pixel / plane);
    offset = (int)(pixel - (long long)batch * plane);
}

// Splits a flat reduction index over (channel, k_h, k_w) into channel, kernel row and column.
__device__ __forceinline__ void split_tap(int index, int k_h, int k_w, int& channel, int& ky,
                                          int& kx) {
    const int taps = k_h * k_w;
    channel = index / taps;
    const int tap = index - channel * taps;
    ky = tap / k_w;
    kx = tap - ky * k_w;
}

// Multiplies the shared tiles and adds the products into the thread's register tile.
// a_tile[k][m] contains GEMM rows and b_tile[k][n] GEMM columns.
template <typename T, int AStride, int BStride>
__device__ __forceinline__ void multiply_tiles(const T (&a_tile)[kTileK][AStride],
                                               const T (&b_tile)[kTileK][BStride], int row, int col,
                                               T (&acc)[kMicroM][kMicroN]) {
#pragma unroll
    for (int k = 0; k < kTileK; ++k) {
        T a[kMicroM];
        T b[kMicroN];
#pragma unroll
        for (int i = 0; i < kMicroM; ++i) {
            a[i] = a_tile[k][row + kThreadRows * i];
        }
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            b[j] = b_tile[k][col + kThreadCols * j];
        }
#pragma unroll
        for (int i = 0; i < kMicroM; ++i) {
#pragma unroll
            for (int j = 0; j < kMicroN; ++j) {
                acc[i][j] += a[i] * b[j];
            }
        }
    }
}

// Forward: y[n, co, oy, ox] = bias[co] + sum over (ci, ky, kx) of
//   weight[co, ci, ky, kx] * x[n, ci, oy + ky - padding, ox + kx - padding],
// with x read as zero outside its bounds.
template <typename T>
__device__ void conv2d_forward(const Conv2dParams p, const T* __restrict__ x,
                               const T* __restrict__ weight, const T* __restrict__ bias,
                               T* __restrict__ y) {
    require_conv_block_shape();
    // a_tile[k][m] = weight[channel0 + m, k0 + k]. The +1 pad keeps the transposing store
    // nearly free of bank conflicts.
    __shared__ T a_tile[kTileK][kTileM + 1];
    // b_tile[k][n] = im2col[k0 + k, pixel0 + n].
    __shared__ T b_tile[kTileK][kTileN];

    const int tid = threadIdx.x;
    const int reduce_len = p.c_in * p.k_h * p.k_w;
    const int plane_in = p.h_in * p.w_in;
    const int plane_out = p.h_out * p.w_out;
    const long long pixels = (long long)p.n * plane_out;
    const long long pixel0 = (long long)blockIdx.x * kTileN;
    const int channel0 = blockIdx.y * kTileM;

    // Weight loader: thread loads reduction column a_k of tile rows a_m + kALoadStep * i.
    const int a_k = tid % kTileK;
    const int a_m = tid / kTileK;

    // Input loader: thread loads pixel column b_n of reduction rows b_k + kBLoadStep * i. The
    // pixel stays fixed, so its coordinates are computed once.
    const int b_n = tid % kTileN;
    const int b_k = tid / kTileN;
    const long long b_pixel = pixel0 + b_n;
    const bool b_pixel_valid = b_pixel < pixels;
    int b_batch = 0;
    int b_offset = 0;
    if (b_pixel_valid) {
        split_pixel(b_pixel, plane_out, b_batch, b_offset);
    }
    const int b_oy = b_offset / p.w_out;
    const int b_ox = b_offset - b_oy * p.w_out;
    const T* x_image = x + (long long)b_batch * p.c_in * plane_in;

    const int row = tid / kThreadCols;
    const int col = tid % kThreadCols;
    T acc[kMicroM][kMicroN];
#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            acc[i][j] = T(0);
        }
    }

    for (int k0 = 0; k0 < reduce_len; k0 += kTileK) {
        const int a_col = k0 + a_k;
#pragma unroll
        for (int i = 0; i < kALoads; ++i) {
            const int m = a_m + kALoadStep * i;
            const int co = channel0 + m;
            T value = T(0);
            if (co < p.c_out && a_col < reduce_len) {
                value = weight[(long long)co * reduce_len + a_col];
            }
            a_tile[a_k][m] = value;
        }

#pragma unroll
        for (int i = 0; i < kBLoads; ++i) {
            const int k = b_k + kBLoadStep * i;
            const int index = k0 + k;
            T value = T(0);
            if (b_pixel_valid && index < reduce_len) {
                int ci, ky, kx;
                split_tap(index, p.k_h, p.k_w, ci, ky, kx);
                const int iy = b_oy + ky - p.padding;
                const int ix = b_ox + kx - p.padding;
                if (iy >= 0 && iy < p.h_in && ix >= 0 && ix < p.w_in) {
                    value = x_image[(long long)ci * plane_in + iy * p.w_in + ix];
                }
            }
            b_tile[k][b_n] = value;
        }
        __syncthreads();

        multiply_tiles(a_tile, b_tile, row, col, acc);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
        const int co = channel0 + row + kThreadRows * i;
        if (co >= p.c_out) {
            continue;
        }
        const T bias_value = bias != nullptr ? bias[co] : T(0);
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            const long long pixel = pixel0 + col + kThreadCols * j;
            if (pixel >= pixels) {
                continue;
            }
            int batch, offset;
            split_pixel(pixel, plane_out, batch, offset);
            y[((long long)batch * p.c_out + co) * plane_out + offset] = acc[i][j] + bias_value;
        }
    }
}

// Input gradient: grad_x[n, ci, iy, ix] += sum over (co, ky, kx) of
//   weight[co, ci, ky, kx] * grad_y[n, co, iy - ky + padding, ix - kx + padding],
// with grad_y read as zero outside its bounds. This is the adjoint of conv2d_forward.
template <typename T>
__device__ void conv2d_input_backward(const Conv2dParams p, const T* __restrict__ grad_y,
                                      const T* __restrict__ weight, T* __restrict__ grad_x) {
    require_conv_block_shape();
    // a_tile[k][m] = weight[co, channel0 + m, ky, kx] with (co, ky, kx) = split of k0 + k.
    __shared__ T a_tile[kTileK][kTileM + 1];
    // b_tile[k][n] = grad_y gathered for input pixel pixel0 + n and reduction index k0 + k.
    __shared__ T b_tile[kTileK][kTileN];

    const int tid = threadIdx.x;
    const int taps = p.k_h * p.k_w;
    const int reduce_len = p.c_out * taps;
    const int plane_in = p.h_in * p.w_in;
    const int plane_out = p.h_out * p.w_out;
    const long long pixels = (long long)p.n * plane_in;
    const long long pixel0 = (long long)blockIdx.x * kTileN;
    const int channel0 = blockIdx.y * kTileM;

    const int a_k = tid % kTileK;
    const int a_m = tid / kTileK;

    const int b_n = tid % kTileN;
    const int b_k = tid / kTileN;
    const long long b_pixel = pixel0 + b_n;
    const bool b_pixel_valid = b_pixel < pixels;
    int b_batch = 0;
    int b_offset = 0;
    if (b_pixel_valid) {
        split_pixel(b_pixel, plane_in, b_batch, b_offset);
    }
    const int b_iy = b_offset / p.w_in;
    const int b_ix = b_offset - b_iy * p.w_in;
    const T* grad_y_image = grad_y + (long long)b_batch * p.c_out * plane_out;

    const int row = tid / kThreadCols;
    const int col = tid % kThreadCols;
    T acc[kMicroM][kMicroN];
#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            acc[i][j] = T(0);
        }
    }

    for (int k0 = 0; k0 < reduce_len; k0 += kTileK) {
        const int a_col = k0 + a_k;
        const int a_co = a_col / taps;
        const int a_tap = a_col - a_co * taps;
#pragma unroll
        for (int i = 0; i < kALoads; ++i) {
            const int m = a_m + kALoadStep * i;
            const int ci = channel0 + m;
            T value = T(0);
            if (ci < p.c_in && a_col < reduce_len) {
                value = weight[((long long)a_co * p.c_in + ci) * taps + a_tap];
            }
            a_tile[a_k][m] = value;
        }

#pragma unroll
        for (int i = 0; i < kBLoads; ++i) {
            const int k = b_k + kBLoadStep * i;
            const int index = k0 + k;
            T value = T(0);
            if (b_pixel_valid && index < reduce_len) {
                int co, ky, kx;
                split_tap(index, p.k_h, p.k_w, co, ky, kx);
                const int oy = b_iy + p.padding - ky;
                const int ox = b_ix + p.padding - kx;
                if (oy >= 0 && oy < p.h_out && ox >= 0 && ox < p.w_out) {
                    value = grad_y_image[(long long)co * plane_out + oy * p.w_out + ox];
                }
            }
            b_tile[k][b_n] = value;
        }
        __syncthreads();

        multiply_tiles(a_tile, b_tile, row, col, acc);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
        const int ci = channel0 + row + kThreadRows * i;
        if (ci >= p.c_in) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            const long long pixel = pixel0 + col + kThreadCols * j;
            if (pixel >= pixels) {
                continue;
            }
            int batch, offset;
            split_pixel(pixel, plane_in, batch, offset);
            grad_x[((long long)batch * p.c_in + ci) * plane_in + offset] += acc[i][j];
        }
    }
}

// Weight gradient, split z of gridDim.z: partials[z, co, ci, ky, kx] = sum over the output
// pixels (n, oy, ox) of split z of
//   grad_y[n, co, oy, ox] * x[n, ci, oy + ky - padding, ox + kx - padding],
// with x read as zero outside its bounds.
template <typename T>
__device__ void conv2d_weight_backward(const Conv2dParams p, const T* __restrict__ grad_y,
                                       const T* __restrict__ x, T* __restrict__ partials) {
    require_conv_block_shape();
    // a_tile[k][m] = grad_y[channel0 + m] at reduction pixel r0 + k.
    __shared__ T a_tile[kTileK][kTileM + 1];
    // b_tile[k][n] = im2col[column0 + n, r0 + k]. The +1 pad reduces bank conflicts in the
    // transposing store.
    __shared__ T b_tile[kTileK][kTileN + 1];

    const int tid = threadIdx.x;
    const int reduce_cols = p.c_in * p.k_h * p.k_w;
    const int plane_in = p.h_in * p.w_in;
    const int plane_out = p.h_out * p.w_out;
    const long long pixels = (long long)p.n * plane_out;
    const int column0 = blockIdx.x * kTileN;
    const int channel0 = blockIdx.y * kTileM;

    // Pixel range of this split, rounded to whole reduction slices.
    const long long per_split_raw = (pixels + gridDim.z - 1) / gridDim.z;
    const long long per_split = (per_split_raw + kTileK - 1) / kTileK * kTileK;
    const long long split_begin = (long long)blockIdx.z * per_split;
    const long long split_end = min(pixels, split_begin + per_split);

    // Both tiles are loaded with kTileK consecutive threads along the reduction (the pixels),
    // so each thread splits one pixel per slice and reuses it for both tiles. The thread loads
    // tile columns load_first + kLoadStep * i of row load_k.
    const int load_k = tid % kTileK;
    const int load_first = tid / kTileK;
    constexpr int kLoadStep = kConvThreads / kTileK;
    constexpr int kGradLoads = kTileM / kLoadStep;
    constexpr int kInputLoads = kTileN / kLoadStep;
    static_assert(kGradLoads * kLoadStep == kTileM && kInputLoads * kLoadStep == kTileN,
                  "weight-gradient loads must cover both tiles exactly");

    // Kernel taps of the weight columns this thread loads, fixed for the whole kernel.
    int tap_channel[kInputLoads];
    int tap_dy[kInputLoads];
    int tap_dx[kInputLoads];
    bool tap_valid[kInputLoads];
#pragma unroll
    for (int i = 0; i < kInputLoads; ++i) {
        const int column = column0 + load_first + kLoadStep * i;
        tap_valid[i] = column < reduce_cols;
        int ci = 0, ky = 0, kx = 0;
        if (tap_valid[i]) {
            split_tap(column, p.k_h, p.k_w, ci, ky, kx);
        }
        tap_channel[i] = ci;
        tap_dy[i] = ky - p.padding;
        tap_dx[i] = kx - p.padding;
    }

    const int row = tid / kThreadCols;
    const int col = tid % kThreadCols;
    T acc[kMicroM][kMicroN];
#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            acc[i][j] = T(0);
        }
    }

    for (long long r0 = split_begin; r0 < split_end; r0 += kTileK) {
        const long long pixel = r0 + load_k;
        const bool pixel_valid = pixel < split_end;
        int batch = 0;
        int offset = 0;
        if (pixel_valid) {
            split_pixel(pixel, plane_out, batch, offset);
        }
        const int oy = offset / p.w_out;
        const int ox = offset - oy * p.w_out;

#pragma unroll
        for (int i = 0; i < kGradLoads; ++i) {
            const int m = load_first + kLoadStep * i;
            const int co = channel0 + m;
            T value = T(0);
            if (pixel_valid && co < p.c_out) {
                value = grad_y[((long long)batch * p.c_out + co) * plane_out + offset];
            }
            a_tile[load_k][m] = value;
        }

        const T* x_image = x + (long long)batch * p.c_in * plane_in;
#pragma unroll
        for (int i = 0; i < kInputLoads; ++i) {
            const int iy = oy + tap_dy[i];
            const int ix = ox + tap_dx[i];
            T value = T(0);
            if (pixel_valid && tap_valid[i] && iy >= 0 && iy < p.h_in && ix >= 0 && ix < p.w_in) {
                value = x_image[(long long)tap_channel[i] * plane_in + iy * p.w_in + ix];
            }
            b_tile[load_k][load_first + kLoadStep * i] = value;
        }
        __syncthreads();

        multiply_tiles(a_tile, b_tile, row, col, acc);
        __syncthreads();
    }

    // Splits past the end of the pixel range still store their zero sums, so the reduce step
    // never reads uninitialised memory.
    const long long weight_numel = (long long)p.c_out * reduce_cols;
    T* split_out = partials + (long long)blockIdx.z * weight_numel;
#pragma unroll
    for (int i = 0; i < kMicroM; ++i) {
        const int co = channel0 + row + kThreadRows * i;
        if (co >= p.c_out) {
            continue;
        }
#pragma unroll
        for (int j = 0; j < kMicroN; ++j) {
            const int column = column0 + col + kThreadCols * j;
            if (column < reduce_cols) {
                split_out[(long long)co * reduce_cols + column] = acc[i][j];
            }
        }
    }
}

template <typename T>
__device__ void conv2d_weight_reduce(const T* __restrict__ partials, T* __restrict__ grad_weight,
                                     int splits, long long weight_numel) {
    for (long long i = global_thread_index(); i < weight_numel; i += global_thread_count()) {
        T sum = T(0);
        for (int z = 0; z < splits; ++z) {
            sum += partials[(long long)z * weight_numel + i];
        }
        grad_weight[i] += sum;
    }
}

template <typename T>
__device__ void bias_add_forward(const ChannelShape s, const T* x, const T* __restrict__ bias, T* y,
                                 long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const int channel = (int)((i / s.hw) % s.c);
        y[i] = x[i] + bias[channel];
    }
}

// Sums v over the lanes of a warp, and lane 0 receives the total. The shuffle order is fixed,
// so the result is deterministic.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        v += __shfl_down_sync(0xffffffffu, v, offset);
    }
    return v;
}

// Sums v over the block and returns the total to every thread. All threads of the block must
// call it, and blockDim.x must be a multiple of 32 and at most 1024. `scratch` is 32 elements of
// shared memory. The leading barrier makes back-to-back calls with the same scratch safe.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    const int warps = blockDim.x / 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    // Every warp reduces the per-warp sums itself, so no third barrier is needed.
    T total = lane < warps ? scratch[lane] : T(0);
    total = warp_sum(total);
    return __shfl_sync(0xffffffffu, total, 0);
}

template <typename T>
__device__ void bias_add_backward(const ChannelShape s, const T* __restrict__ grad_y,
                                  T* __restrict__ grad_bias) {
    __shared__ T scratch[32];
    for (int channel = blockIdx.x; channel < s.c; channel += gridDim.x) {
        T sum = T(0);
        for (int batch = 0; batch < s.n; ++batch) {
            const T* plane = grad_y + ((long long)batch * s.c + channel) * s.hw;
            for (int i = threadIdx.x; i < s.hw; i += blockDim.x) {
                sum += plane[i];
            }
        }
        sum = block_sum(sum, scratch);
        if (threadIdx.x == 0) {
            grad_bias[channel] += sum;
        }
    }
}

#define CONV2D_ENTRY_POINTS(T, SUFFIX)                                                           \
    extern "C" __global__ void __launch_bounds__(kConvThreads)                                   \
        conv2d_fwd_##SUFFIX(Conv2dParams p, const T* x, const T* weight, const T* bias, T* y) {  \
        conv2d_forward<T>(p, x, weight, bias, y);                                                \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(kConvThreads)                                   \
        conv2d_input_bwd_##SUFFIX(Conv2dParams p, const T* grad_y, const T* weight, T* grad_x) { \
        conv2d_input_backward<T>(p, grad_y, weight, grad_x);                                     \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(kConvThreads)                                   \
        conv2d_weight_bwd_##SUFFIX(Conv2dParams p, const T* grad_y, const T* x, T* partials) {   \
        conv2d_weight_backward<T>(p, grad_y, x, partials);                                       \
    }                                                                                            \
    extern "C" __global__ void conv2d_weight_reduce_bwd_##SUFFIX(                                \
        const T* partials, T* grad_weight, int splits, long long weight_numel) {                 \
        conv2d_weight_reduce<T>(partials, grad_weight, splits, weight_numel);                    \
    }                                                                                            \
    extern "C" __global__ void bias_add_fwd_##SUFFIX(ChannelShape s, const T* x, const T* bias,  \
                                                     T* y, long long numel) {                    \
        bias_add_forward<T>(s, x, bias, y, numel);                                               \
    }                                                                                            \
    extern "C" __global__ void bias_add_bwd_##SUFFIX(ChannelShape s, const T* grad_y,            \
                                                     T* grad_bias) {                             \
        bias_add_backward<T>(s, grad_y, grad_bias);                                              \
    }

CONV2D_ENTRY_POINTS(float, f32)
CONV2D_ENTRY_POINTS(double, f64)
