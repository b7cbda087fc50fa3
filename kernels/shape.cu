// Shape operations on contiguous tensors: zero padding and cropping of NCHW planes, and
// broadcasting to a larger shape, each with its backward kernel.
//
// Each entry point exists for float (suffix _f32) and double (suffix _f64). In the signatures
// below, T is that type and `long long` is i64 on the Rust side. Forward kernels overwrite
// their output, and the output must not alias the input. Backward kernels accumulate into
// grad_x, so the caller zeros grad_x first unless it already contains a gradient to add to.
//
// pad2d_fwd_<T>(Pad2dParams p, const T* x, T* y, long long out_numel)
//   y has shape (n, c, h_in + top + bottom, w_in + left + right) and
//   y[n, c, oy, ox] = x[n, c, oy - top, ox - left], or 0 where that is outside x. Negative
//   offsets crop that side instead. out_numel = n * c * h_out * w_out.
//   1-D grid-stride loop over out_numel, one output element per thread.
// pad2d_bwd_<T>(Pad2dParams p, const T* grad_y, T* grad_x, long long in_numel)
//   grad_x[n, c, iy, ix] += grad_y[n, c, iy + top, ix + left] where that is inside grad_y.
//   in_numel = n * c * h_in * w_in. 1-D grid-stride loop over in_numel, one input element per
//   thread.
// crop2d_fwd_<T>(Crop2dParams p, const T* x, T* y, long long out_numel)
//   y has shape (n, c, h_out, w_out) and y[n, c, oy, ox] = x[n, c, oy + top, ox + left]. A
//   window that reaches outside x reads zeros there. out_numel = n * c * h_out * w_out.
//   1-D grid-stride loop over out_numel, one output element per thread.
// crop2d_bwd_<T>(Crop2dParams p, const T* grad_y, T* grad_x, long long out_numel)
//   grad_x[n, c, oy + top, ox + left] += grad_y[n, c, oy, ox] where that is inside grad_x;
//   elements of grad_x outside the window are left unchanged. 1-D grid-stride loop over the
//   out_numel elements of grad_y, one per thread. Every thread writes a different element of
//   grad_x, so no atomics are needed.
//
// broadcast_to_fwd_<T>(BroadcastShapes s, const T* x, T* y, long long full_numel)
//   y (shape s.full_shape) = x (shape s.reduced_shape) repeated along the dimensions where
//   reduced_shape[d] = 1. Both shapes are right-aligned to rank 4 and padded on the left with
//   1, and every reduced_shape[d] is 1 or full_shape[d]. full_numel = product of full_shape.
//   1-D grid-stride loop over full_numel, one output element per thread.
// broadcast_to_bwd_<T>(BroadcastShapes s, const T* grad_y, T* grad_x, long long reduced_numel)
//   grad_x[o] += sum of grad_y over the elements that broadcast from o. One block per element
//   of grad_x, looping when gridDim.x < reduced_numel: grid = (min(reduced_numel, 65535), 1, 1)
//   and block = (256, 1, 1), or (32, 1, 1) when each element sums only a few values. The block
//   size must be a multiple of 32 and at most 1024. Each thread sums a strided part, and a
//   shuffle tree combines the parts, so the result is bit-identical from run to run for a
//   fixed block size.

// Zero padding of NCHW planes, where negative offsets crop. Mirrored by `Pad2dParams` in
// src/cuda/params.rs (same field order).
struct Pad2dParams {
    int n;
    int c;
    int h_in;
    int w_in;
    int top;
    int bottom;
    int left;
    int right;
};

// Window (top, left, h_out, w_out) of NCHW planes. Mirrored by `Crop2dParams` in
// src/cuda/params.rs (same field order).
struct Crop2dParams {
    int n;
    int c;
    int h_in;
    int w_in;
    int top;
    int left;
    int h_out;
    int w_out;
};

// Shapes of a broadcast, right-aligned to rank 4: each reduced_shape[d] is 1 or full_shape[d].
// Mirrored by `BroadcastShapes` in src/cuda/params.rs (same field order).
struct BroadcastShapes {
    long long full_shape[4];
    long long reduced_shape[4];
};

__device__ __forceinline__ long long global_thread_index() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ long long global_thread_count() {
    return (long long)blockDim.x * gridDim.x;
}

// Splits a flat index of a contiguous (planes, height, width) tensor into plane, row and
// column. `plane` counts all n * c planes.
__device__ __forceinline__ void split_plane_index(long long index, int height, int width,
                                                  long long& plane, int& row, int& column) {
    const long long plane_size = (long long)height * width;
    plane = index / plane_size;
    const int offset = (int)(index - plane * plane_size);
    row = offset / width;
    column = offset - row * width;
}

// Copies the window of `src` (plane size src_h x src_w) that starts at (row_shift, col_shift)
// into `dst` (dst_h x dst_w): dst[plane, r, c] = src[plane, r + row_shift, c + col_shift],
// or 0 outside src. Pad and crop forward are both this window copy.
template <typename T>
__device__ void copy_window(const T* __restrict__ src, T* __restrict__ dst, int src_h, int src_w,
                            int dst_h, int dst_w, int row_shift, int col_shift,
                            long long dst_numel) {
    for (long long i = global_thread_index(); i < dst_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, dst_h, dst_w, plane, row, column);
        const int src_row = row + row_shift;
        const int src_col = column + col_shift;
        T value = T(0);
        if (src_row >= 0 && src_row < src_h && src_col >= 0 && src_col < src_w) {
            value = src[(plane * src_h + src_row) * src_w + src_col];
        }
        dst[i] = value;
    }
}

// Accumulating form of copy_window, iterating over dst: dst[plane, r, c] += src[plane,
// r + row_shift, c + col_shift] where that is inside src.
template <typename T>
__device__ void add_window(const T* __restrict__ src, T* __restrict__ dst, int src_h, int src_w,
                           int dst_h, int dst_w, int row_shift, int col_shift,
                           long long dst_numel) {
    for (long long i = global_thread_index(); i < dst_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, dst_h, dst_w, plane, row, column);
        const int src_row = row + row_shift;
        const int src_col = column + col_shift;
        if (src_row >= 0 && src_row < src_h && src_col >= 0 && src_col < src_w) {
            dst[i] += src[(plane * src_h + src_row) * src_w + src_col];
        }
    }
}

// Scatter form, iterating over src: dst[plane, r + row_shift, c + col_shift] += src[plane, r,
// c] where that is inside dst. Distinct source elements map to distinct destinations.
template <typename T>
__device__ void scatter_add_window(const T* __restrict__ src, T* __restrict__ dst, int src_h,
                                   int src_w, int dst_h, int dst_w, int row_shift, int col_shift,
                                   long long src_numel) {
    for (long long i = global_thread_index(); i < src_numel; i += global_thread_count()) {
        long long plane;
        int row, column;
        split_plane_index(i, src_h, src_w, plane, row, column);
        const int dst_row = row + row_shift;
        const int dst_col = column + col_shift;
        if (dst_row >= 0 && dst_row < dst_h && dst_col >= 0 && dst_col < dst_w) {
            dst[(plane * dst_h + dst_row) * dst_w + dst_col] += src[i];
        }
    }
}

template <typename T>
__device__ void pad2d_forward(const Pad2dParams p, const T* x, T* y, long long out_numel) {
    const int h_out = p.h_in + p.top + p.bottom;
    const int w_out = p.w_in + p.left + p.right;
    copy_window(x, y, p.h_in, p.w_in, h_out, w_out, -p.top, -p.left, out_numel);
}

template <typename T>
__device__ void pad2d_backward(const Pad2dParams p, const T* grad_y, T* grad_x,
                               long long in_numel) {
    const int h_out = p.h_in + p.top + p.bottom;
    const int w_out = p.w_in + p.left + p.right;
    add_window(grad_y, grad_x, h_out, w_out, p.h_in, p.w_in, p.top, p.left, in_numel);
}

template <typename T>
__device__ void crop2d_forward(const Crop2dParams p, const T* x, T* y, long long out_numel) {
    copy_window(x, y, p.h_in, p.w_in, p.h_out, p.w_out, p.top, p.left, out_numel);
}

template <typename T>
__device__ void crop2d_backward(const Crop2dParams p, const T* grad_y, T* grad_x,
                                long long out_numel) {
    scatter_add_window(grad_y, grad_x, p.h_out, p.w_out, p.h_in, p.w_in, p.top, p.left, out_numel);
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
__device__ void broadcast_to_forward(const BroadcastShapes s, const T* __restrict__ x,
                                     T* __restrict__ y, long long full_numel) {
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
        y[i] = x[offset];
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
__device__ void broadcast_to_backward(const BroadcastShapes s, const T* __restrict__ grad_y,
                                      T* __restrict__ grad_x, long long reduced_numel) {
    __shared__ T scratch[32];
    long long full_strides[4];
    contiguous_strides(s.full_shape, full_strides);
    // Extent of each broadcast dimension, 1 for the others.
    long long summed_extent[4];
    long long summed_count = 1;
    for (int d = 0; d < 4; ++d) {
        summed_extent[d] = s.reduced_shape[d] == 1 ? s.full_shape[d] : 1;
        summed_count *= summed_extent[d];
    }

    for (long long o = blockIdx.x; o < reduced_numel; o += gridDim.x) {
        // Offset in grad_y of the first element that broadcasts from o.
        long long rest = o;
        long long base = 0;
        for (int d = 3; d >= 0; --d) {
            base += (rest % s.reduced_shape[d]) * full_strides[d];
            rest /= s.reduced_shape[d];
        }

        T sum = T(0);
        for (long long r = threadIdx.x; r < summed_count; r += blockDim.x) {
            // Split r over the broadcast dimensions, innermost first, so that consecutive
            // threads read consecutive elements when the last dimension is broadcast.
            long long rest_r = r;
            long long offset = base;
            for (int d = 3; d >= 0; --d) {
                if (summed_extent[d] > 1) {
                    offset += (rest_r % summed_extent[d]) * full_strides[d];
                    rest_r /= summed_extent[d];
                }
            }
            sum += grad_y[offset];
        }
        sum = block_sum(sum, scratch);
        if (threadIdx.x == 0) {
            grad_x[o] += sum;
        }
    }
}

#define SHAPE_ENTRY_POINTS(T, SUFFIX)                                                          \
    extern "C" __global__ void pad2d_fwd_##SUFFIX(Pad2dParams p, const T* x, T* y,             \
                                                  long long out_numel) {                       \
        pad2d_forward<T>(p, x, y, out_numel);                                                  \
    }                                                                                          \
    extern "C" __global__ void pad2d_bwd_##SUFFIX(Pad2dParams p, const T* grad_y, T* grad_x,   \
                                                  long long in_numel) {                        \
        pad2d_backward<T>(p, grad_y, grad_x, in_numel);                                        \
    }                                                                                          \
    extern "C" __global__ void crop2d_fwd_##SUFFIX(Crop2dParams p, const T* x, T* y,           \
                                                   long long out_numel) {                      \
        crop2d_forward<T>(p, x, y, out_numel);                                                 \
    }                                                                                          \
    extern "C" __global__ void crop2d_bwd_##SUFFIX(Crop2dParams p, const T* grad_y, T* grad_x, \
                                                   long long out_numel) {                      \
        crop2d_backward<T>(p, grad_y, grad_x, out_numel);                                      \
    }                                                                                          \
    extern "C" __global__ void broadcast_to_fwd_##SUFFIX(BroadcastShapes s, const T* x, T* y,  \
                                                         long long full_numel) {               \
        broadcast_to_forward<T>(s, x, y, full_numel);                                          \
    }                                                                                          \
    extern "C" __global__ void broadcast_to_bwd_##SUFFIX(BroadcastShapes s, const T* grad_y,   \
                                                         T* grad_x, long long reduced_numel) { \
        broadcast_to_backward<T>(s, grad_y, grad_x, reduced_numel);                            \
    }

SHAPE_ENTRY_POINTS(float, f32)
SHAPE_ENTRY_POINTS(double, f64)
