// Element-wise activation functions and their backward kernels.
//
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signatures
// below, T is that type and `long long` is i64 on the Rust side. Every kernel is a 1-D
// grid-stride loop over `numel` elements in which one thread handles one element per step, for
// example block = (256, 1, 1) and grid = (ceil(numel / 256), 1, 1). A smaller grid also works
// because of the loop. A forward kernel's y may alias its x (in-place use is safe), because each
// thread reads and writes only index i.
//
// Backward kernels accumulate: grad_x += local derivative * grad_y. The caller zeros grad_x
// first unless it already contains a gradient to add to.
//
// leaky_relu_fwd_<T>(const T* x, T* y, T slope, long long numel)
//   y = x > 0 ? x : slope * x.
// leaky_relu_bwd_<T>(const T* x, const T* grad_y, T* grad_x, T slope, long long numel)
//   grad_x += grad_y * (x > 0 ? 1 : slope). The same mask multiply is the backward of this
//   backward with respect to grad_y, so double backward reuses it with another grad_y.
//   The derivative at x = 0 is taken as slope.
// tanh_fwd_<T>(const T* x, T* y, long long numel)
//   y = tanh(x).
// tanh_bwd_<T>(const T* y, const T* grad_y, T* grad_x, long long numel)
//   grad_x += grad_y * (1 - y * y), from the forward output y.
// softplus_fwd_<T>(const T* x, T* y, long long numel)
//   y = log(1 + exp(x)), computed as max(x, 0) + log1p(exp(-|x|)) so that it neither
//   overflows for large x nor loses precision for very negative x.
// softplus_bwd_<T>(const T* x, const T* grad_y, T* grad_x, long long numel)
//   grad_x += grad_y * sigmoid(x).
// sigmoid_fwd_<T>(const T* x, T* y, long long numel)
//   y = 1 / (1 + exp(-x)), evaluated through exp(-|x|) so that exp never overflows.
// sigmoid_bwd_<T>(const T* y, const T* grad_y, T* grad_x, long long numel)
//   grad_x += grad_y * y * (1 - y), from the forward output y.

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

// Math functions picked by type, so that float code calls the single-precision versions.
__device__ __forceinline__ float exp_of(float v) { return expf(v); }
__device__ __forceinline__ double exp_of(double v) { return exp(v); }
__device__ __forceinline__ float log1p_of(float v) { return log1pf(v); }
__device__ __forceinline__ double log1p_of(double v) { return log1p(v); }
__device__ __forceinline__ float tanh_of(float v) { return tanhf(v); }
__device__ __forceinline__ double tanh_of(double v) { return tanh(v); }
__device__ __forceinline__ float abs_of(float v) { return fabsf(v); }
__device__ __forceinline__ double abs_of(double v) { return fabs(v); }

template <typename T>
__device__ __forceinline__ T stable_sigmoid(T x) {
    const T e = exp_of(-abs_of(x));
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

template <typename T>
__device__ void leaky_relu_forward(const T* x, T* y, T slope, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = x[i];
        y[i] = v > T(0) ? v : slope * v;
    }
}

template <typename T>
__device__ void leaky_relu_backward(const T* x, const T* grad_y, T* grad_x, T slope,
                                    long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T derivative = x[i] > T(0) ? T(1) : slope;
        grad_x[i] += grad_y[i] * derivative;
    }
}

template <typename T>
__device__ void tanh_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = tanh_of(x[i]);
    }
}

template <typename T>
__device__ void tanh_backward(const T* y, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = y[i];
        grad_x[i] += grad_y[i] * (T(1) - v * v);
    }
}

template <typename T>
__device__ void softplus_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = x[i];
        const T positive_part = v > T(0) ? v : T(0);
        y[i] = positive_part + log1p_of(exp_of(-abs_of(v)));
    }
}

template <typename T>
__device__ void softplus_backward(const T* x, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        grad_x[i] += grad_y[i] * stable_sigmoid(x[i]);
    }
}

template <typename T>
__device__ void sigmoid_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = stable_sigmoid(x[i]);
    }
}

template <typename T>
__device__ void sigmoid_backward(const T* y, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = y[i];
        grad_x[i] += grad_y[i] * v * (T(1) - v);
    }
}

#define ACTIVATION_ENTRY_POINTS(T, SUFFIX)                                                     \
    extern "C" __global__ void leaky_relu_fwd_##SUFFIX(const T* x, T* y, T slope,              \
                                                       long long numel) {                      \
        leaky_relu_forward<T>(x, y, slope, numel);                                             \
    }                                                                                          \
    extern "C" __global__ void leaky_relu_bwd_##SUFFIX(const T* x, const T* grad_y, T* grad_x, \
                                                       T slope, long long numel) {             \
        leaky_relu_backward<T>(x, grad_y, grad_x, slope, numel);                               \
    }                                                                                          \
    extern "C" __global__ void tanh_fwd_##SUFFIX(const T* x, T* y, long long numel) {          \
        tanh_forward<T>(x, y, numel);                                                          \
    }                                                                                          \
    extern "C" __global__ void tanh_bwd_##SUFFIX(const T* y, const T* grad_y, T* grad_x,       \
                                                 long long numel) {                            \
        tanh_backward<T>(y, grad_y, grad_x, numel);                                            \
    }                                                                                          \
    extern "C" __global__ void softplus_fwd_##SUFFIX(const T* x, T* y, long long numel) {      \
        softplus_forward<T>(x, y, numel);                                                      \
    }                                                                                          \
    extern "C" __global__ void softplus_bwd_##SUFFIX(const T* x, const T* grad_y, T* grad_x,   \
                                                     long long numel) {                        \
        softplus_backward<T>(x, grad_y, grad_x, numel);                                        \
    }                                                                                          \
    extern "C" __global__ void sigmoid_fwd_##SUFFIX(const T* x, T* y, long long numel) {       \
        sigmoid_forward<T>(x, y, numel);                                                       \
    }                                                                                          \
    extern "C" __global__ void sigmoid_bwd_##SUFFIX(const T* y, const T* grad_y, T* grad_x,    \
                                                    long long numel) {                         \
        sigmoid_backward<T>(y, grad_y, grad_x, numel);                                         \
    }

ACTIVATION_ENTRY_POINTS(float, f32)
ACTIVATION_ENTRY_POINTS(double, f64)
