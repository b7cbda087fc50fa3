// Fused Adam optimiser step, updating parameters and moment estimates in place.
//
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signature
// below, T is that type and `long long` is i64 on the Rust side.
//
// adam_update_<T>(const T* grad, T* param, T* exp_avg, T* exp_avg_sq, T lr, T beta1, T beta2,
//                 T eps, T bias_correction1, T bias_correction2, long long numel)
//   For every element, with g = grad:
//     exp_avg    = beta1 * exp_avg    + (1 - beta1) * g
//     exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * g * g
//     param     -= lr * (exp_avg / bias_correction1) / (sqrt(exp_avg_sq / bias_correction2) + eps)
//   bias_correction1 = 1 - beta1^t and bias_correction2 = 1 - beta2^t for step t >= 1, computed
//   by the caller. eps is added after the square root of the corrected second moment.
//   There is no weight decay. exp_avg and exp_avg_sq start at zero.
//   1-D grid-stride loop over numel, one parameter per thread, for example block = (256, 1, 1)
//   and grid = (ceil(numel / 256), 1, 1).

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

__device__ __forceinline__ float sqrt_of(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_of(double v) { return sqrt(v); }

template <typename T>
__device__ void adam_update(const T* __restrict__ grad, T* __restrict__ param,
                            T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq, T lr, T beta1,
                            T beta2, T eps, T bias_correction1, T bias_correction2,
                            long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T g = grad[i];
        const T m = beta1 * exp_avg[i] + (T(1) - beta1) * g;
        const T v = beta2 * exp_avg_sq[i] + (T(1) - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        const T denominator = sqrt_of(v / bias_correction2) + eps;
        param[i] -= lr * (m / bias_correction1) / denominator;
    }
}

#define ADAM_ENTRY_POINTS(T, SUFFIX)                                                              \
    extern "C" __global__ void adam_update_##SUFFIX(                                              \
        const T* grad, T* param, T* exp_avg, T* exp_avg_sq, T lr, T beta1, T beta2, T eps,        \
        T bias_correction1, T bias_correction2, long long numel) {                                \
        adam_update<T>(grad, param, exp_avg, exp_avg_sq, lr, beta1, beta2, eps, bias_correction1, \
                       bias_correction2, numel);                                                  \
    }

ADAM_ENTRY_POINTS(float, f32)
ADAM_ENTRY_POINTS(double, f64)
