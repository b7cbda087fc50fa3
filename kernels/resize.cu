// Separable resizing of NCHW planes along one axis with a precomputed tap table, as used for
// MATLAB-style bicubic `imresize`. The caller builds the table (cubic kernel widened when
// downscaling, source indices mirrored at the borders, weights normalised to sum to 1) and
// resizes H and W in two launches.
//
// Each entry point exists with the suffix _f32 (for float tensors) and _f64 (for double
// tensors). `long long` is i64 on the Rust side and `int` is i32.
//
// Forward table, for output index j along the resized axis and tap t in [0, p.taps):
//   src_index[j * p.taps + t]  source index along that axis, already mirrored into
//                              [0, input length)
//   weight[j * p.taps + t]     its weight, always double
// Only the first p.h_out (or p.w_out) rows of the table are read, so a table built for a
// longer output resizes and crops to the top-left window in one pass.
//
// The forward passes compute in double for both element types and skip taps of weight 0, and
// every product and sum is rounded separately (__dmul_rn, __dadd_rn, never a fused
// multiply-add). They add the taps in table order starting from 0, so the results equal those
// of src/singan/imresize.rs bit for bit: the height pass writes a double buffer, and the width
// pass reads it and rounds once to the output type.
//
// resize_h_fwd_f32(ResizeParams p, const float* x, const int* src_index, const double* weight,
//                  double* y, long long out_numel)
// resize_h_fwd_f64(ResizeParams p, const double* x, const int* src_index, const double* weight,
//                  double* y, long long out_numel)
//   x is (planes, h_in, w_in) and y is (planes, h_out, w_in): y[q, j, col] = sum over t of
//   weight[j, t] * x[q, src_index[j, t], col]. p.w_out must equal p.w_in.
//   out_numel = planes * h_out * w_in.
// resize_w_fwd_f32(ResizeParams p, const double* x, const int* src_index, const double* weight,
//                  float* y, long long out_numel)
// resize_w_fwd_f64(ResizeParams p, const double* x, const int* src_index, const double* weight,
//                  double* y, long long out_numel)
//   x is (planes, h_in, w_in) and y is (planes, h_in, w_out): y[q, row, j] = sum over t of
//   weight[j, t] * x[q, row, src_index[j, t]], rounded to y's type. p.h_out must equal p.h_in.
//   out_numel = planes * h_in * w_out.
//
// Backward table: the transpose of the forward table in compressed sparse row form, so that
// each input index gathers its gradient without atomics. For input index i the entries
// e in [offsets[i], offsets[i + 1]) give the output index dst_index[e] and weight[e] of every
// forward tap that read i (a tap that mirrors onto the same source twice appears twice). In the
// signatures below, T is float for _f32 and double for _f64, and the weights have type T.
//
// resize_h_bwd_<T>(ResizeParams p, const T* grad_y, const int* offsets, const int* dst_index,
//                  const T* weight, T* grad_x, long long in_numel)
// resize_w_bwd_<T>(ResizeParams p, const T* grad_y, const int* offsets, const int* dst_index,
//                  const T* weight, T* grad_x, long long in_numel)
//   grad_x[q, i, ...] += sum over e of weight[e] * grad_y[q, dst_index[e], ...] along the
//   resized axis, with the backward table of that axis (offsets has input length + 1 entries).
//   Accumulates, so the caller zeros grad_x first unless it already contains a gradient.
//   in_numel = planes * h_in * w_in. p.taps is not used.
//
// Launch: 1-D grid-stride loop over the elements named by the last argument, one element per
// thread, for example block = (256, 1, 1) and grid = (ceil(count / 256), 1, 1). Threads with
// consecutive indices handle consecutive columns, so reads and writes along W are coalesced.

// Plane count and sizes of a one-axis resize. Mirrored by `ResizeParams` in src/cuda/params.rs
// (same field order).
struct ResizeParams {
    int planes;
    int h_in;
    int w_in;
    int h_out;
    int w_out;
    int taps;
};

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

// Splits a flat index of a contiguous (planes, height, width) tensor into plane, row and
// column.
__device__ __forceinline__ void split_plane_index(long long index, int height, int width,
                                                  long long& plane, int& row, int& column) {
    const long long plane_size = (long long)height * width;
    plane = index / plane_size;
    const int offset = (int)(index - plane * plane_size);
    row = offset / width;
    column = offset - row * width;
}

// Converts a double sum to the output type with round-to-nearest, as Rust's `as f32` does.
__device__ __forceinline__ void store_rounded(float* out, double value) {
    *out = __double2float_rn(value);
}

__device__ __forceinline__ void store_rounded(double* out, double value) { *out = value; }

template <typename TIn>
__device__ void resize_h_forward(const ResizeParams p, const TIn* __restrict__ x,
                                 const int* __restrict__ src_index,
                                 const double* __restrict__ weight, double* __restrict__ y,
                                 long long out_numel) {
    for (long long i = global_thread_index(); i < out_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, p.h_out, p.w_in, plane, row, column);
        const TIn* x_plane = x + plane * p.h_in * p.w_in;
        const int first_tap = row * p.taps;
        double sum = 0.0;
        for (int t = 0; t < p.taps; ++t) {
            const double w = weight[first_tap + t];
            if (w != 0.0) {
                const double value =
                    (double)x_plane[(long long)src_index[first_tap + t] * p.w_in + column];
                sum = __dadd_rn(sum, __dmul_rn(w, value));
            }
        }
        y[i] = sum;
    }
}

template <typename TOut>
__device__ void resize_w_forward(const ResizeParams p, const double* __restrict__ x,
                                 const int* __restrict__ src_index,
                                 const double* __restrict__ weight, TOut* __restrict__ y,
                                 long long out_numel) {
    for (long long i = global_thread_index(); i < out_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, p.h_in, p.w_out, plane, row, column);
        const double* x_row = x + (plane * p.h_in + row) * p.w_in;
        const int first_tap = column * p.taps;
        double sum = 0.0;
        for (int t = 0; t < p.taps; ++t) {
            const double w = weight[first_tap + t];
            if (w != 0.0) {
                sum = __dadd_rn(sum, __dmul_rn(w, x_row[src_index[first_tap + t]]));
            }
        }
        store_rounded(&y[i], sum);
    }
}

template <typename T>
__device__ void resize_h_backward(const ResizeParams p, const T* __restrict__ grad_y,
                                  const int* __restrict__ offsets,
                                  const int* __restrict__ dst_index, const T* __restrict__ weight,
                                  T* __restrict__ grad_x, long long in_numel) {
    for (long long i = global_thread_index(); i < in_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, p.h_in, p.w_in, plane, row, column);
        const T* grad_plane = grad_y + plane * p.h_out * p.w_in;
        T sum = T(0);
        for (int e = offsets[row]; e < offsets[row + 1]; ++e) {
            sum += weight[e] * grad_plane[(long long)dst_index[e] * p.w_in + column];
        }
        grad_x[i] += sum;
    }
}

template <typename T>
__device__ void resize_w_backward(const ResizeParams p, const T* __restrict__ grad_y,
                                  const int* __restrict__ offsets,
                                  const int* __restrict__ dst_index, const T* __restrict__ weight,
                                  T* __restrict__ grad_x, long long in_numel) {
    for (long long i = global_thread_index(); i < in_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, p.h_in, p.w_in, plane, row, column);
        const T* grad_row = grad_y + (plane * p.h_in + row) * p.w_out;
        T sum = T(0);
        for (int e = offsets[column]; e < offsets[column + 1]; ++e) {
            sum += weight[e] * grad_row[dst_index[e]];
        }
        grad_x[i] += sum;
    }
}

#define RESIZE_ENTRY_POINTS(T, SUFFIX)                                                           \
    extern "C" __global__ void resize_h_fwd_##SUFFIX(ResizeParams p, const T* x,                 \
                                                     const int* src_index, const double* weight, \
                                                     double* y, long long out_numel) {           \
        resize_h_forward<T>(p, x, src_index, weight, y, out_numel);                              \
    }                                                                                            \
    extern "C" __global__ void resize_w_fwd_##SUFFIX(ResizeParams p, const double* x,            \
                                                     const int* src_index, const double* weight, \
                                                     T* y, long long out_numel) {                \
        resize_w_forward<T>(p, x, src_index, weight, y, out_numel);                              \
    }                                                                                            \
    extern "C" __global__ void resize_h_bwd_##SUFFIX(                                            \
        ResizeParams p, const T* grad_y, const int* offsets, const int* dst_index,               \
        const T* weight, T* grad_x, long long in_numel) {                                        \
        resize_h_backward<T>(p, grad_y, offsets, dst_index, weight, grad_x, in_numel);           \
    }                                                                                            \
    extern "C" __global__ void resize_w_bwd_##SUFFIX(                                            \
        ResizeParams p, const T* grad_y, const int* offsets, const int* dst_index,               \
        const T* weight, T* grad_x, long long in_numel) {                                        \
        resize_w_backward<T>(p, grad_y, offsets, dst_index, weight, grad_x, in_numel);           \
    }

RESIZE_ENTRY_POINTS(float, f32)
RESIZE_ENTRY_POINTS(double, f64)
