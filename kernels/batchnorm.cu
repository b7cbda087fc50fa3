// Batch normalisation over the channel axis of NCHW tensors, and the per-channel reductions
// its backward and double backward are built from.
//
// A tensor is seen as (n, c, hw) with hw = h * w, and statistics of channel c are taken over
// its count = n * hw elements. xhat = (x - mean) * invstd with invstd = 1 / sqrt(var + eps),
// where var is the biased variance (divided by count). Each entry point exists for float
// (suffix _f32) and double (suffix _f64). In the signatures below, T is that type, `long long`
// is i64 on the Rust side and `int` is i32.
//
// Per-channel kernels (stats, backward and the channel sums) run one block per channel and
// loop over channels when gridDim.x < c: grid = (c, 1, 1), block = (256, 1, 1). The block size
// must be a multiple of 32 and at most 1024. Within a block each thread sums a fixed strided
// subset and a shuffle tree combines the partial sums, so results are bit-identical from run to
// run for a fixed block size. No kernel uses atomics.
//
// Entry points, launch shapes and the work of one thread:
//
// batchnorm_stats_fwd_<T>(ChannelShape s, const T* x, T* mean, T* var, T* invstd, T eps)
//   Training-mode statistics: mean[c], biased var[c] and invstd[c] = 1 / sqrt(var[c] + eps),
//   overwriting all three. Two passes over the channel (mean first, then the squared
//   deviations), which avoids the cancellation of the E[x^2] - E[x]^2 form.
//   Per-channel launch. Each thread sums a strided part of one channel.
//
// batchnorm_fwd_<T>(ChannelShape s, const T* x, const T* mean, const T* invstd,
//                   const T* gamma, const T* beta, T* y, T* xhat, long long numel)
//   y = gamma[c] * xhat + beta[c], overwriting y. gamma may be null (all ones) and beta may be
//   null (all zeros). xhat may be null, and otherwise receives xhat for the backward pass.
//   y may alias x. 1-D grid-stride loop over numel = n * c * hw, one element per thread.
//
// batchnorm_inference_fwd_<T>(ChannelShape s, const T* x, const T* running_mean,
//                             const T* running_var, const T* gamma, const T* beta, T* y,
//                             T eps, long long numel)
//   Evaluation mode: y = gamma[c] * (x - running_mean[c]) / sqrt(running_var[c] + eps) +
//   beta[c], overwriting y. gamma and beta may be null as above, and y may alias x.
//   1-D grid-stride loop over numel, one element per thread.
//
// batchnorm_running_update_<T>(ChannelShape s, const T* mean, const T* var, T* running_mean,
//                              T* running_var, T momentum)
//   running_mean = (1 - momentum) * running_mean + momentum * mean, and the same for
//   running_var with the unbiased variance var * count / (count - 1), updated in place.
//   momentum is the weight of the new batch (0.1 in PyTorch). A channel with count = 1 has no
//   unbiased variance, and its biased variance (0) is used instead.
//   1-D grid-stride loop over the c channels, one channel per thread.
//
// batchnorm_bwd_<T>(ChannelShape s, const T* x, const T* grad_y, const T* mean,
//                   const T* invstd, const T* gamma, T* grad_x, T* grad_gamma, T* grad_beta)
//   Fused training-mode backward of y = gamma * xhat + beta:
//     grad_x     += gamma * invstd * (grad_y - mean(grad_y) - xhat * mean(grad_y * xhat))
//     grad_gamma += sum(grad_y * xhat)
//     grad_beta  += sum(grad_y)
//   with means and sums over the channel. All three accumulate, so the caller zeros them first
//   unless they already contain gradients. Any of the three may be null to skip it, and gamma may
//   be null (all ones). grad_x must not alias x or grad_y. Per-channel launch, in which each
//   thread reads a strided part of one channel twice: once for the two sums and once to
//   write grad_x.
//
// channel_sum_<T>(ChannelShape s, const T* a, T* out)
// channel_sum_prod2_<T>(ChannelShape s, const T* a, const T* b, T* out)
// channel_sum_prod3_<T>(ChannelShape s, const T* a, const T* b, const T* c, T* out)
//   out[ch] = sum over the channel of a, a * b or a * b * c, overwriting out (c elements).
//   The double backward of batch normalisation needs these sums, for example
//   sum(grad_y * xhat * grad_grad_x). Per-channel launch.

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

__device__ __forceinline__ int channel_of(long long index, const ChannelShape s) {
    return (int)((index / s.hw) % s.c);
}

// Offset of element p of batch item `batch` in channel `channel`.
__device__ __forceinline__ long long channel_offset(const ChannelShape s, int batch, int channel,
                                                    int p) {
    return ((long long)batch * s.c + channel) * s.hw + p;
}

__device__ __forceinline__ float reciprocal_sqrt(float v) { return 1.0f / sqrtf(v); }
__device__ __forceinline__ double reciprocal_sqrt(double v) { return 1.0 / sqrt(v); }

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
__device__ void batchnorm_stats(const ChannelShape s, const T* __restrict__ x, T* __restrict__ mean,
                                T* __restrict__ var, T* __restrict__ invstd, T eps) {
    __shared__ T scratch[32];
    const T count = T((long long)s.n * s.hw);
    for (int channel = blockIdx.x; channel < s.c; channel += gridDim.x) {
        T sum = T(0);
        for (int batch = 0; batch < s.n; ++batch) {
            for (int p = threadIdx.x; p < s.hw; p += blockDim.x) {
                sum += x[channel_offset(s, batch, channel, p)];
            }
        }
        const T channel_mean = block_sum(sum, scratch) / count;

        T squares = T(0);
        for (int batch = 0; batch < s.n; ++batch) {
            for (int p = threadIdx.x; p < s.hw; p += blockDim.x) {
                const T deviation = x[channel_offset(s, batch, channel, p)] - channel_mean;
                squares += deviation * deviation;
            }
        }
        const T channel_var = block_sum(squares, scratch) / count;

        if (threadIdx.x == 0) {
            mean[channel] = channel_mean;
            var[channel] = channel_var;
            invstd[channel] = reciprocal_sqrt(channel_var + eps);
        }
    }
}

template <typename T>
__device__ void batchnorm_forward(const ChannelShape s, const T* x, const T* __restrict__ mean,
                                  const T* __restrict__ invstd, const T* __restrict__ gamma,
                                  const T* __restrict__ beta, T* y, T* xhat, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const int channel = channel_of(i, s);
        const T normalized = (x[i] - mean[channel]) * invstd[channel];
        const T scale = gamma != nullptr ? gamma[channel] : T(1);
        const T shift = beta != nullptr ? beta[channel] : T(0);
        if (xhat != nullptr) {
            xhat[i] = normalized;
        }
        y[i] = scale * normalized + shift;
    }
}

template <typename T>
__device__ void batchnorm_inference_forward(const ChannelShape s, const T* x,
                                            const T* __restrict__ running_mean,
                                            const T* __restrict__ running_var,
                                            const T* __restrict__ gamma, const T* __restrict__ beta,
                                            T* y, T eps, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const int channel = channel_of(i, s);
        const T scale = gamma != nullptr ? gamma[channel] : T(1);
        const T shift = beta != nullptr ? beta[channel] : T(0);
        const T normalized =
            (x[i] - running_mean[channel]) * reciprocal_sqrt(running_var[channel] + eps);
        y[i] = scale * normalized + shift;
    }
}

template <typename T>
__device__ void batchnorm_running_update(const ChannelShape s, const T* __restrict__ mean,
                                         const T* __restrict__ var, T* __restrict__ running_mean,
                                         T* __restrict__ running_var, T momentum) {
    const long long count = (long long)s.n * s.hw;
    const T unbiased_factor = count > 1 ? T(count) / T(count - 1) : T(1);
    for (long long channel = global_thread_index(); channel < s.c;
         channel += global_thread_count()) {
        running_mean[channel] =
            (T(1) - momentum) * running_mean[channel] + momentum * mean[channel];
        running_var[channel] =
            (T(1) - momentum) * running_var[channel] + momentum * var[channel] * unbiased_factor;
    }
}

template <typename T>
__device__ void batchnorm_backward(const ChannelShape s, const T* __restrict__ x,
                                   const T* __restrict__ grad_y, const T* __restrict__ mean,
                                   const T* __restrict__ invstd, const T* __restrict__ gamma,
                                   T* __restrict__ grad_x, T* __restrict__ grad_gamma,
                                   T* __restrict__ grad_beta) {
    __shared__ T scratch[32];
    const T count = T((long long)s.n * s.hw);
    for (int channel = blockIdx.x; channel < s.c; channel += gridDim.x) {
        const T channel_mean = mean[channel];
        const T channel_invstd = invstd[channel];

        T sum_g = T(0);
        T sum_g_xhat = T(0);
        for (int batch = 0; batch < s.n; ++batch) {
            for (int p = threadIdx.x; p < s.hw; p += blockDim.x) {
                const long long i = channel_offset(s, batch, channel, p);
                const T g = grad_y[i];
                sum_g += g;
                sum_g_xhat += g * (x[i] - channel_mean) * channel_invstd;
            }
        }
        sum_g = block_sum(sum_g, scratch);
        sum_g_xhat = block_sum(sum_g_xhat, scratch);

        if (grad_x != nullptr) {
            const T mean_g = sum_g / count;
            const T mean_g_xhat = sum_g_xhat / count;
            const T scale = (gamma != nullptr ? gamma[channel] : T(1)) * channel_invstd;
            for (int batch = 0; batch < s.n; ++batch) {
                for (int p = threadIdx.x; p < s.hw; p += blockDim.x) {
                    const long long i = channel_offset(s, batch, channel, p);
                    const T xhat = (x[i] - channel_mean) * channel_invstd;
                    grad_x[i] += scale * (grad_y[i] - mean_g - xhat * mean_g_xhat);
                }
            }
        }
        if (threadIdx.x == 0) {
            if (grad_gamma != nullptr) {
                grad_gamma[channel] += sum_g_xhat;
            }
            if (grad_beta != nullptr) {
                grad_beta[channel] += sum_g;
            }
        }
    }
}

// out[channel] = sum over the channel of a * b * c, where a null b or c counts as all ones.
template <typename T>
__device__ void channel_sum_product(const ChannelShape s, const T* __restrict__ a,
                                    const T* __restrict__ b, const T* __restrict__ c,
                                    T* __restrict__ out) {
    __shared__ T scratch[32];
    for (int channel = blockIdx.x; channel < s.c; channel += gridDim.x) {
        T sum = T(0);
        for (int batch = 0; batch < s.n; ++batch) {
            for (int p = threadIdx.x; p < s.hw; p += blockDim.x) {
                const long long i = channel_offset(s, batch, channel, p);
                T term = a[i];
                if (b != nullptr) {
                    term *= b[i];
                }
                if (c != nullptr) {
                    term *= c[i];
                }
                sum += term;
            }
        }
        sum = block_sum(sum, scratch);
        if (threadIdx.x == 0) {
            out[channel] = sum;
        }
    }
}

#define BATCHNORM_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void batchnorm_stats_fwd_##SUFFIX(ChannelShape s, const T* x, T* mean,   \
                                                            T* var, T* invstd, T eps) {            \
        batchnorm_stats<T>(s, x, mean, var, invstd, eps);                                          \
    }                                                                                              \
    extern "C" __global__ void batchnorm_fwd_##SUFFIX(                                             \
        ChannelShape s, const T* x, const T* mean, const T* invstd, const T* gamma, const T* beta, \
        T* y, T* xhat, long long numel) {                                                          \
        batchnorm_forward<T>(s, x, mean, invstd, gamma, beta, y, xhat, numel);                     \
    }                                                                                              \
    extern "C" __global__ void batchnorm_inference_fwd_##SUFFIX(                                   \
        ChannelShape s, const T* x, const T* running_mean, const T* running_var, const T* gamma,   \
        const T* beta, T* y, T eps, long long numel) {                                             \
        batchnorm_inference_forward<T>(s, x, running_mean, running_var, gamma, beta, y, eps,       \
                                       numel);                                                     \
    }                                                                                              \
    extern "C" __global__ void batchnorm_running_update_##SUFFIX(ChannelShape s, const T* mean,    \
                                                                 const T* var, T* running_mean,    \
                                                                 T* running_var, T momentum) {     \
        batchnorm_running_update<T>(s, mean, var, running_mean, running_var, momentum);            \
    }                                                                                              \
    extern "C" __global__ void batchnorm_bwd_##SUFFIX(                                             \
        ChannelShape s, const T* x, const T* grad_y, const T* mean, const T* invstd,               \
        const T* gamma, T* grad_x, T* grad_gamma, T* grad_beta) {                                  \
        batchnorm_backward<T>(s, x, grad_y, mean, invstd, gamma, grad_x, grad_gamma, grad_beta);   \
    }                                                                                              \
    extern "C" __global__ void channel_sum_##SUFFIX(ChannelShape s, const T* a, T* out) {          \
        channel_sum_product<T>(s, a, nullptr, nullptr, out);                                       \
    }                                                                                              \
    extern "C" __global__ void channel_sum_prod2_##SUFFIX(ChannelShape s, const T* a, const T* b,  \
                                                          T* out) {                                \
        channel_sum_product<T>(s, a, b, nullptr, out);                                             \
    }                                                                                              \
    extern "C" __global__ void channel_sum_prod3_##SUFFIX(ChannelShape s, const T* a, const T* b,  \
                                                          const T* c, T* out) {                    \
        channel_sum_product<T>(s, a, b, c, out);                                                   \
    }

BATCHNORM_ENTRY_POINTS(float, f32)
BATCHNORM_ENTRY_POINTS(double, f64)
