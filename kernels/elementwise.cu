// Element-wise arithmetic: broadcasting binary operations, scalar operations, square, square
// root, safe reciprocal, fill, copy and axpy.
//
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signatures
// below, T is that type and `long long` is i64 on the Rust side. Every kernel is a 1-D
// grid-stride loop over `numel` output elements in which one thread computes one element per
// step, for example block = (256, 1, 1) and grid = (ceil(numel / 256), 1, 1). A smaller grid
// also works because of the loop.
//
// Forward kernels overwrite their output. The output may alias an input that has the output's
// shape (in-place use is safe), because each thread reads that input only at its own index.
// Backward kernels accumulate: grad_x += local derivative * grad_y, so the caller zeros grad_x
// first unless it already contains a gradient to add to.
//
// add_fwd_<T>, sub_fwd_<T>, mul_fwd_<T>, div_fwd_<T>
//     (BinaryBroadcastParams p, const T* lhs, const T* rhs, T* out, long long numel)
//   out = lhs op rhs with broadcasting. The output is contiguous with shape p.out_shape and
//   numel = product of p.out_shape. Element (i0, i1, i2, i3) of the output reads
//   lhs[sum of i_d * p.lhs_strides[d]] and rhs[sum of i_d * p.rhs_strides[d]]. Strides count
//   elements and are 0 along broadcast dimensions. Shapes of lower rank are padded on the
//   left with size-1 dimensions. When both operands are contiguous with the output's shape the
//   kernel skips the index arithmetic. The backward passes are composed on the Rust side: for
//   example grad_lhs of mul is sum_to_shape(grad_out * rhs) (reduce.cu).
// scalar_add_fwd_<T>(const T* x, T* y, T scalar, long long numel)      y = x + scalar
// scalar_mul_fwd_<T>(const T* x, T* y, T scalar, long long numel)      y = x * scalar
//   Their backward passes are axpy: grad_x += grad_y, and grad_x += scalar * grad_y.
// square_fwd_<T>(const T* x, T* y, long long numel)                    y = x * x
// square_bwd_<T>(const T* x, const T* grad_y, T* grad_x, long long numel)
//   grad_x += 2 * x * grad_y.
// sqrt_fwd_<T>(const T* x, T* y, long long numel)                      y = sqrt(x)
// sqrt_bwd_<T>(const T* y, const T* grad_y, T* grad_x, long long numel)
//   grad_x += grad_y * 0.5 * safe_recip(y), from the forward output y. At y = 0 the derivative
//   is taken as 0 instead of infinity, which keeps the gradient of a zero norm finite.
// safe_recip_fwd_<T>(const T* x, T* y, long long numel)                y = x > 0 ? 1 / x : 0
// safe_recip_bwd_<T>(const T* y, const T* grad_y, T* grad_x, long long numel)
//   grad_x += -grad_y * y * y, from the forward output y, which adds 0 wherever y = 0.
// fill_<T>(T* y, T value, long long numel)                             y = value
// copy_<T>(const T* x, T* y, long long numel)                          y = x
// axpy_<T>(const T* x, T* y, T alpha, long long numel)                 y += alpha * x

// Broadcast layout of a binary operation, right-aligned to rank 4. Mirrored by
// `BinaryBroadcastParams` in src/cuda/params.rs (same field order).
struct BinaryBroadcastParams {
    long long out_shape[4];
    long long lhs_strides[4];
    long long rhs_strides[4];
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

// Returns whether `strides` address a contiguous tensor of `shape`. Size-1 dimensions are
// skipped, because their stride is never multiplied by a non-zero index.
__device__ __forceinline__ bool is_contiguous(const long long (&shape)[4],
                                              const long long (&strides)[4]) {
    long long expected = 1;
    for (int d = 3; d >= 0; --d) {
        if (shape[d] != 1 && strides[d] != expected) {
            return false;
        }
        expected *= shape[d];
    }
    return true;
}

struct AddOp {
    template <typename T>
    __device__ T operator()(T a, T b) const {
        return a + b;
    }
};

struct SubOp {
    template <typename T>
    __device__ T operator()(T a, T b) const {
        return a - b;
    }
};

struct MulOp {
    template <typename T>
    __device__ T operator()(T a, T b) const {
        return a * b;
    }
};

struct DivOp {
    template <typename T>
    __device__ T operator()(T a, T b) const {
        return a / b;
    }
};

template <typename T, typename Op>
__device__ void binary_broadcast(const BinaryBroadcastParams p, const T* lhs, const T* rhs, T* out,
                                 long long numel) {
    const Op op{};
    // The same branch is taken by every thread, so it costs no divergence.
    if (is_contiguous(p.out_shape, p.lhs_strides) && is_contiguous(p.out_shape, p.rhs_strides)) {
        for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
            out[i] = op(lhs[i], rhs[i]);
        }
        return;
    }
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        // Split the flat output index into (i0, i1, i2, i3), innermost dimension first.
        long long rest = i;
        long long lhs_offset = 0;
        long long rhs_offset = 0;
        for (int d = 3; d >= 0; --d) {
            const long long index = rest % p.out_shape[d];
            rest /= p.out_shape[d];
            lhs_offset += index * p.lhs_strides[d];
            rhs_offset += index * p.rhs_strides[d];
        }
        out[i] = op(lhs[lhs_offset], rhs[rhs_offset]);
    }
}

template <typename T>
__device__ void scalar_add_forward(const T* x, T* y, T scalar, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = x[i] + scalar;
    }
}

template <typename T>
__device__ void scalar_mul_forward(const T* x, T* y, T scalar, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = x[i] * scalar;
    }
}

template <typename T>
__device__ void square_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = x[i];
        y[i] = v * v;
    }
}

template <typename T>
__device__ void square_backward(const T* x, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        grad_x[i] += T(2) * x[i] * grad_y[i];
    }
}

template <typename T>
__device__ void sqrt_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = sqrt_of(x[i]);
    }
}

template <typename T>
__device__ void sqrt_backward(const T* y, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        grad_x[i] += grad_y[i] * T(0.5) * safe_recip(y[i]);
    }
}

template <typename T>
__device__ void safe_recip_forward(const T* x, T* y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = safe_recip(x[i]);
    }
}

template <typename T>
__device__ void safe_recip_backward(const T* y, const T* grad_y, T* grad_x, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        const T v = y[i];
        grad_x[i] -= grad_y[i] * v * v;
    }
}

template <typename T>
__device__ void fill_values(T* y, T value, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = value;
    }
}

template <typename T>
__device__ void copy_values(const T* __restrict__ x, T* __restrict__ y, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] = x[i];
    }
}

template <typename T>
__device__ void axpy_values(const T* x, T* y, T alpha, long long numel) {
    for (long long i = global_thread_index(); i < numel; i += global_thread_count()) {
        y[i] += alpha * x[i];
    }
}

#define BINARY_ENTRY_POINT(NAME, OP, T, SUFFIX)                                             \
    extern "C" __global__ void NAME##_fwd_##SUFFIX(BinaryBroadcastParams p, const T* lhs,   \
                                                   const T* rhs, T* out, long long numel) { \
        binary_broadcast<T, OP>(p, lhs, rhs, out, numel);                                   \
    }

#define ELEMENTWISE_ENTRY_POINTS(T, SUFFIX)                                                    \
    BINARY_ENTRY_POINT(add, AddOp, T, SUFFIX)                                                  \
    BINARY_ENTRY_POINT(sub, SubOp, T, SUFFIX)                                                  \
    BINARY_ENTRY_POINT(mul, MulOp, T, SUFFIX)                                                  \
    BINARY_ENTRY_POINT(div, DivOp, T, SUFFIX)                                                  \
    extern "C" __global__ void scalar_add_fwd_##SUFFIX(const T* x, T* y, T scalar,             \
                                                       long long numel) {                      \
        scalar_add_forward<T>(x, y, scalar, numel);                                            \
    }                                                                                          \
    extern "C" __global__ void scalar_mul_fwd_##SUFFIX(const T* x, T* y, T scalar,             \
                                                       long long numel) {                      \
        scalar_mul_forward<T>(x, y, scalar, numel);                                            \
    }                                                                                          \
    extern "C" __global__ void square_fwd_##SUFFIX(const T* x, T* y, long long numel) {        \
        square_forward<T>(x, y, numel);                                                        \
    }                                                                                          \
    extern "C" __global__ void square_bwd_##SUFFIX(const T* x, const T* grad_y, T* grad_x,     \
                                                   long long numel) {                          \
        square_backward<T>(x, grad_y, grad_x, numel);                                          \
    }                                                                                          \
    extern "C" __global__ void sqrt_fwd_##SUFFIX(const T* x, T* y, long long numel) {          \
        sqrt_forward<T>(x, y, numel);                                                          \
    }                                                                                          \
    extern "C" __global__ void sqrt_bwd_##SUFFIX(const T* y, const T* grad_y, T* grad_x,       \
                                                 long long numel) {                            \
        sqrt_backward<T>(y, grad_y, grad_x, numel);                                            \
    }                                                                                          \
    extern "C" __global__ void safe_recip_fwd_##SUFFIX(const T* x, T* y, long long numel) {    \
        safe_recip_forward<T>(x, y, numel);                                                    \
    }                                                                                          \
    extern "C" __global__ void safe_recip_bwd_##SUFFIX(const T* y, const T* grad_y, T* grad_x, \
                                                       long long numel) {                      \
        safe_recip_backward<T>(y, grad_y, grad_x, numel);                                      \
    }                                                                                          \
    extern "C" __global__ void fill_##SUFFIX(T* y, T value, long long numel) {                 \
        fill_values<T>(y, value, numel);                                                       \
    }                                                                                          \
    extern "C" __global__ void copy_##SUFFIX(const T* x, T* y, long long numel) {              \
        copy_values<T>(x, y, numel);                                                           \
    }                                                                                          \
    extern "C" __global__ void axpy_##SUFFIX(const T* x, T* y, T alpha, long long numel) {     \
        axpy_values<T>(x, y, alpha, numel);                                                    \
    }

ELEMENTWISE_ENTRY_POINTS(float, f32)
ELEMENTWISE_ENTRY_POINTS(double, f64)
