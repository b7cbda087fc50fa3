// Reductions: sum of all elements, sum over axes down to a broadcastable shape, and the L2
// norm over the channel axis, each with its backward kernel.
//
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signatures
// below, T is that type, `long long` is i64 on the Rust side and `int` is i32. No kernel uses
// atomics: every sum is taken in an order fixed by the launch shape, so results are
// bit-identical from run to run for the same launch shape. Block sizes of the block-reduction
// kernels must be a multiple of 32 and at most 1024.
//
// Forward kernels overwrite their output. Backward kernels accumulate into grad_x, so the
// caller zeros grad_x first unless it already contains a gradient to add to.
//
// sum_all_partial_<T>(const T* x, T* partials, long long numel)
//   Pass 1 of the total sum: block b sums the elements b * blockDim.x + t + k * blockDim.x *
//   gridDim.x for all threads t and k >= 0, and writes partials[b] (gridDim.x elements).
//   block = (256, 1, 1), grid = (G, 1, 1). Pick G from numel only, for example
//   max(1, min(ceil(numel / 2048), 1024)), never from device properties, so that the sum order
//   and therefore the result is the same on every device.
// sum_all_final_<T>(const T* partials, T* out, T scale, long long count)
//   Pass 2: out[0] = scale * sum of partials[0..count). grid = (1, 1, 1), block = (256, 1, 1).
//   scale = 1 gives the sum and scale = 1 / numel the mean.
// sum_all_bwd_<T>(const T* grad_out, T* grad_x, T scale, long long numel)
//   grad_x[i] += scale * grad_out[0]. 1-D grid-stride loop over numel, one element per thread.
//
// sum_to_shape_fwd_<T>(BroadcastShapes s, const T* x, T* out, long long out_numel)
//   Sums x of shape s.full_shape down to s.reduced_shape with kept (size-1) dimensions:
//   every reduced_shape[d] is either 1 (dimension d is summed) or full_shape[d] (kept). Both
//   shapes are right-aligned to rank 4 and padded on the left with 1. out_numel = product of
//   reduced_shape. One block per output element, looping over outputs when gridDim.x <
//   out_numel: grid = (min(out_numel, 65535), 1, 1) and block = (256, 1, 1) for long sums, or
//   block = (32, 1, 1) when each output sums only a few elements. Each thread sums a strided
//   part of the summed elements.
// sum_to_shape_bwd_<T>(BroadcastShapes s, const T* grad_out, T* grad_x, long long full_numel)
//   grad_x[i] += grad_out[i projected onto reduced_shape]: the broadcast of grad_out back to
//   full_shape. 1-D grid-stride loop over full_numel, one element per thread.
//
// channel_norm_fwd_<T>(ChannelShape s, const T* x, T* out, long long out_numel)
//   out[n, p] = sqrt(sum over c of x[n, c, p]^2) for x of shape (n, c, hw), giving shape
//   (n, 1, hw), and out_numel = n * hw. 1-D grid-stride loop over out_numel, in which one thread
//   loops over the channels of one output element.
// channel_norm_bwd_<T>(ChannelShape s, const T* x, const T* norm, const T* grad_out, T* grad_x,
//                      long long out_numel)
//   grad_x[n, c, p] += grad_out[n, p] * x[n, c, p] / norm[n, p], where norm is the forward
//   output. Where norm is 0 the gradient is taken as 0. Same launch as the forward.

// Shapes of a broadcast, right-aligned to rank 4: each reduced_shape[d] is 1 or full_shape[d].
// Mirrored by `BroadcastShapes` in src/cuda/params.rs (same field order).
struct BroadcastShapes {
    long long full_shape[4];
    long long reduced_shape[4];
};

// Shape of an NCHW tensor seen as (n, c, hw) with hw = h * w. Mirrored by `ChannelShape` in
// src/cuda/params.rs (same field order).
struct ChannelShape {
    int n;
    int c;
    int hw;
};

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

__device__ __forceinline__ float sqrt_of(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_of(double v) { return sqrt(v); }

template <typename T>
__device__ __forceinline__ T safe_recip(T v) {
    return v > T(0) ? T(1) / v : T(0);
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

// Row-major strides (in elements) of a contiguous rank-4 shape.
__device__ __forceinline__ void contiguous_strides(const long long (&shape)[4],
                                                   long long (&strides)[4]) {
    long long stride = 1;
    for (int d = 3; d >= 0; --d) {
        strides[d] = stride;
        stride *= shape[d];
    }
}

template <typename T>
__device__ void sum_all_partial(const T* __restrict__ x, T* __restrict__ partials,
                                long long numel) {
    __shared__ T scratch[32];
    T sum = T(0);
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        sum += x[i];
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = sum;
    }
}

template <typename T>
__device__ void sum_all_final(const T* __restrict__ partials, T* __restrict__ out, T scale,
                              long long count) {
    __shared__ T scratch[32];
    T sum = T(0);
    for (long long i = threadIdx.x; i < count; i += blockDim.x) {
        sum += partials[i];
    }
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        out[0] = scale * sum;
    }
}

template <typename T>
__device__ void sum_all_backward(const T* __restrict__ grad_out, T* __restrict__ grad_x, T scale,
                                 long long numel) {
    const T value = scale * grad_out[0];
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        grad_x[i] += value;
    }
}

template <typename T>
__device__ void sum_to_shape_forward(const BroadcastShapes s, const T* __restrict__ x,
                                     T* __restrict__ out, long long out_numel) {
    __shared__ T scratch[32];
    long long full_strides[4];
    contiguous_strides(s.full_shape, full_strides);
    // Extent of each summed dimension, 1 for kept dimensions.
    long long summed_extent[4];
    long long summed_count = 1;
    for (int d = 0; d < 4; ++d) {
        summed_extent[d] = s.reduced_shape[d] == 1 ? s.full_shape[d] : 1;
        summed_count *= summed_extent[d];
    }

    for (long long o = blockIdx.x; o < out_numel; o += gridDim.x) {
        // Offset in x of the first element that output o sums.
        long long rest = o;
        long long base = 0;
        for (int d = 3; d >= 0; --d) {
            base += (rest % s.reduced_shape[d]) * full_strides[d];
            rest /= s.reduced_shape[d];
        }

        T sum = T(0);
        for (long long r = threadIdx.x; r < summed_count; r += blockDim.x) {
            // Split r over the summed dimensions, innermost first, so that consecutive
            // threads read consecutive elements when the last dimension is summed.
            long long rest_r = r;
            long long offset = base;
            for (int d = 3; d >= 0; --d) {
                if (summed_extent[d] > 1) {
                    offset += (rest_r % summed_extent[d]) * full_strides[d];
                    rest_r /= summed_extent[d];
                }
            }
            sum += x[offset];
        }
        sum = block_sum(sum, scratch);
        if (threadIdx.x == 0) {
            out[o] = sum;
        }
    }
}

template <typename T>
__device__ void sum_to_shape_backward(const BroadcastShapes s, const T* __restrict__ grad_out,
                                      T* __restrict__ grad_x, long long full_numel) {
    long long reduced_strides[4];
    contiguous_strides(s.reduced_shape, reduced_strides);
    for (long long i = global_thread_index(); i < full_numel; i += global_thread_count()) {
        long long rest = i;
        long long offset = 0;
        for (int d = 3; d >= 0; --d) {
            const long long index = rest % s.full_shape[d];
            rest /= s.full_shape[d];
            if (s.reduced_shape[d] != 1) {
                offset += index * reduced_strides[d];
            }
        }
        grad_x[i] += grad_out[offset];
    }
}

template <typename T>
__device__ void channel_norm_forward(const ChannelShape s, const T* __restrict__ x,
                                     T* __restrict__ out, long long out_numel) {
    for (long long o = global_thread_index(); o < out_numel; o += global_thread_count()) {
        const long long batch = o / s.hw;
        const long long p = o - batch * s.hw;
        const T* column = x + batch * s.c * s.hw + p;
        T squares = T(0);
        for (int channel = 0; channel < s.c; ++channel) {
            const T v = column[(long long)channel * s.hw];
            squares += v * v;
        }
        out[o] = sqrt_of(squares);
    }
}

template <typename T>
__device__ void channel_norm_backward(const ChannelShape s, const T* __restrict__ x,
                                      const T* __restrict__ norm, const T* __restrict__ grad_out,
                                      T* __restrict__ grad_x, long long out_numel) {
    for (long long o = global_thread_index(); o < out_numel; o += global_thread_count()) {
        const long long batch = o / s.hw;
        const long long p = o - batch * s.hw;
        const long long first = batch * s.c * s.hw + p;
        const T factor = grad_out[o] * safe_recip(norm[o]);
        for (int channel = 0; channel < s.c; ++channel) {
            const long long i = first + (long long)channel * s.hw;
            grad_x[i] += x[i] * factor;
        }
    }
}

#define REDUCE_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void sum_all_partial_##SUFFIX(const T* x, T* partials,                \
                                                        long long numel) {                      \
        sum_all_partial<T>(x, partials, numel);                                                 \
    }                                                                                           \
    extern "C" __global__ void sum_all_final_##SUFFIX(const T* partials, T* out, T scale,       \
                                                      long long count) {                        \
        sum_all_final<T>(partials, out, scale, count);                                          \
    }                                                                                           \
    extern "C" __global__ void sum_all_bwd_##SUFFIX(const T* grad_out, T* grad_x, T scale,      \
                                                    long long numel) {                          \
        sum_all_backward<T>(grad_out, grad_x, scale, numel);                                    \
    }                                                                                           \
    extern "C" __global__ void sum_to_shape_fwd_##SUFFIX(BroadcastShapes s, const T* x, T* out, \
                                                         long long out_numel) {                 \
        sum_to_shape_forward<T>(s, x, out, out_numel);                                          \
    }                                                                                           \
    extern "C" __global__ void sum_to_shape_bwd_##SUFFIX(BroadcastShapes s, const T* grad_out,  \
                                                         T* grad_x, long long full_numel) {     \
        sum_to_shape_backward<T>(s, grad_out, grad_x, full_numel);                              \
    }                                                                                           \
    extern "C" __global__ void channel_norm_fwd_##SUFFIX(ChannelShape s, const T* x, T* out,    \
                                                         long long out_numel) {                 \
        channel_norm_forward<T>(s, x, out, out_numel);                                          \
    }                                                                                           \
    extern "C" __global__ void channel_norm_bwd_##SUFFIX(ChannelShape s, const T* x,            \
                                                         const T* norm, const T* grad_out,      \
                                                         T* grad_x, long long out_numel) {      \
        channel_norm_backward<T>(s, x, norm, grad_out, grad_x, out_numel);                      \
    }

REDUCE_ENTRY_POINTS(float, f32)
REDUCE_ENTRY_POINTS(double, f64)
