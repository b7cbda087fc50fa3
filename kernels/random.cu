// Philox4x32-10 random fills that reproduce the CPU generator in src/rng.rs
// bit for bit. src/rng.rs documents the stream definition. The file needs no
// headers and uses only NVRTC built-ins.
//
// Every entry point takes (out, numel, seed, offset):
//   out     device buffer of at least numel elements
//   numel   number of values to write
//   seed    generator seed. The Philox key is (lo32(seed), hi32(seed)).
//   offset  start word of the draw, as returned by Rng::reserve. The kernel
//           rounds it up to the kind's group size exactly as reserve does, so
//           the generator offset from before the draw gives the same values.
//
// Launch: one loop iteration computes one Philox block (4 stream words) and
// writes every value whose words lie in that block. Use 256 threads per
// block and ceil(B / 256) blocks, where B is
// DrawKind::philox_block_count(offset, numel). The grid-stride loop accepts
// any grid, so the caller may cap it.
//
//   entry point          out       values per Philox block
//   philox_uniform_f32   float*    up to 4, value i from word start + i
//   philox_normal_f32    float*    up to 4, two Box-Muller pairs of 2 words
//   philox_uniform_f64   double*   up to 2, value i from words start + 2i, +1
//   philox_normal_f64    double*   up to 2, one Box-Muller pair of 4 words
//
// Normals are computed in f64, also for f32 output, with this file's own ln,
// sin and cos polynomials. Every f64 step is one of the __dadd_rn, __dsub_rn,
// __dmul_rn, __ddiv_rn and __dsqrt_rn intrinsics, in the same order as in
// src/rng.rs. The compiler never contracts these into fused multiply-adds, so
// the output matches the CPU under any --fmad setting. The cost is f64
// throughput, which is low on consumer GPUs.
// NOTE: with --ftz=true (implied by --use_fast_math) an f32 normal below
// 2^-126 in magnitude may flush to zero here but not on the CPU. Such a value
// has a probability of about 1e-38.
// NOTE: the CPU match is checked by compiling with NVRTC and by running this
// source on the host with emulated built-ins. tests/cuda_ops.rs compares the
// kernels with the CPU bit for bit on a GPU, but no GPU has run it yet.

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// Powers of two, exact because division by a power of two is exact.
#define TWO_POW_MINUS_24_F (1.0f / 16777216.0f)
#define TWO_POW_MINUS_32 (1.0 / 4294967296.0)
#define TWO_POW_MINUS_53 (1.0 / 9007199254740992.0)

// ln 2 as hi + lo. hi is ln 2 truncated to 42 significant bits, so that
// exponent * hi is exact. The other constants are pi / 4 rounded to f64 and
// the fraction field of sqrt(2) rounded to f64.
#define LN_2_HI_BITS 0x3FE62E42FEFA3800ll
#define LN_2_LO_BITS 0x3D2EF35793C76730ll
#define FRAC_PI_4_BITS 0x3FE921FB54442D18ll
#define SQRT_2_FRACTION 0x6A09E667F3BCDull
#define F64_FRACTION_MASK 0xFFFFFFFFFFFFFull

struct philox_block {
    unsigned int word[4];
};

__device__ __forceinline__ philox_block philox4x32_10(philox_block block, unsigned int key0,
                                                      unsigned int key1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) {
            key0 += PHILOX_W0;
            key1 += PHILOX_W1;
        }
        const unsigned int hi0 = __umulhi(PHILOX_M0, block.word[0]);
        const unsigned int lo0 = PHILOX_M0 * block.word[0];
        const unsigned int hi1 = __umulhi(PHILOX_M1, block.word[2]);
        const unsigned int lo1 = PHILOX_M1 * block.word[2];
        philox_block next;
        next.word[0] = hi1 ^ block.word[1] ^ key0;
        next.word[1] = lo1;
        next.word[2] = hi0 ^ block.word[3] ^ key1;
        next.word[3] = lo0;
        block = next;
    }
    return block;
}

// Returns stream words 4 * block_index .. 4 * block_index + 3 of seed.
__device__ __forceinline__ philox_block stream_block(unsigned long long seed,
                                                     unsigned long long block_index) {
    philox_block counter;
    counter.word[0] = (unsigned int)block_index;
    counter.word[1] = (unsigned int)(block_index >> 32);
    counter.word[2] = 0u;
    counter.word[3] = 0u;
    return philox4x32_10(counter, (unsigned int)seed, (unsigned int)(seed >> 32));
}

__device__ __forceinline__ unsigned long long align_up(unsigned long long value,
                                                       unsigned long long group) {
    return (value + (group - 1ull)) & ~(group - 1ull);
}

// Returns ceil(words / 4) without overflowing near 2^64.
__device__ __forceinline__ unsigned long long blocks_up_to(unsigned long long words) {
    return (words >> 2) + ((words & 3ull) != 0ull ? 1ull : 0ull);
}

__device__ __forceinline__ unsigned long long grid_thread_index() {
    return (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ unsigned long long grid_thread_count() {
    return (unsigned long long)gridDim.x * blockDim.x;
}

__device__ __forceinline__ unsigned long long join_words(unsigned int low, unsigned int high) {
    return (unsigned long long)low | ((unsigned long long)high << 32);
}

__device__ __forceinline__ float unit_f32_from_word(unsigned int word) {
    return __fmul_rn((float)(word >> 8), TWO_POW_MINUS_24_F);
}

__device__ __forceinline__ double closed_open_unit_from_u32(unsigned int word) {
    return __dmul_rn((double)word, TWO_POW_MINUS_32);
}

__device__ __forceinline__ double open_closed_unit_from_u32(unsigned int word) {
    return __dmul_rn(__dadd_rn((double)word, 1.0), TWO_POW_MINUS_32);
}

__device__ __forceinline__ double closed_open_unit_from_u64(unsigned long long bits) {
    return __dmul_rn((double)(bits >> 11), TWO_POW_MINUS_53);
}

__device__ __forceinline__ double open_closed_unit_from_u64(unsigned long long bits) {
    return __dmul_rn(__dadd_rn((double)(bits >> 11), 1.0), TWO_POW_MINUS_53);
}

__device__ __forceinline__ double multiply_add_rn(double a, double b, double c) {
    return __dadd_rn(__dmul_rn(a, b), c);
}

// Computes ln(u) for a normal f64 u in (0, 1] in the operation order of
// ln_unit_interval in src/rng.rs. It writes u = (1 + f) * 2^e with 1 + f in
// [sqrt(1/2), sqrt(2)) and uses ln(1 + f) = f - (h - s (h + R(s^2))), where
// s = f / (2 + f), h = f^2 / 2 and R(z) = 2z/3 + 2z^2/5 + ... + 2z^11/23.
__device__ __forceinline__ double ln_unit_interval(double u) {
    const unsigned long long bits = (unsigned long long)__double_as_longlong(u);
    const unsigned long long fraction = bits & F64_FRACTION_MASK;
    int exponent = (int)(bits >> 52) - 1023;
    unsigned long long mantissa_exponent = 1023ull;
    if (fraction >= SQRT_2_FRACTION) {
        exponent += 1;
        mantissa_exponent = 1022ull;
    }
    const double mantissa = __longlong_as_double((long long)(fraction | (mantissa_exponent << 52)));

    const double f = __dsub_rn(mantissa, 1.0);
    const double s = __ddiv_rn(f, __dadd_rn(2.0, f));
    const double z = __dmul_rn(s, s);
    double series = 2.0 / 23.0;
    series = multiply_add_rn(series, z, 2.0 / 21.0);
    series = multiply_add_rn(series, z, 2.0 / 19.0);
    series = multiply_add_rn(series, z, 2.0 / 17.0);
    series = multiply_add_rn(series, z, 2.0 / 15.0);
    series = multiply_add_rn(series, z, 2.0 / 13.0);
    series = multiply_add_rn(series, z, 2.0 / 11.0);
    series = multiply_add_rn(series, z, 2.0 / 9.0);
    series = multiply_add_rn(series, z, 2.0 / 7.0);
    series = multiply_add_rn(series, z, 2.0 / 5.0);
    series = multiply_add_rn(series, z, 2.0 / 3.0);
    const double tail = __dmul_rn(z, series);
    const double half_f_squared = __dmul_rn(0.5, __dmul_rn(f, f));
    const double scale = (double)exponent;
    const double low_part = __dmul_rn(scale, __longlong_as_double(LN_2_LO_BITS));
    const double correction = __dsub_rn(
        half_f_squared,
        __dadd_rn(__dmul_rn(s, __dadd_rn(half_f_squared, tail)), low_part));
    return __dadd_rn(__dmul_rn(scale, __longlong_as_double(LN_2_HI_BITS)), __dsub_rn(f, correction));
}

// Computes sin(x) for x in [0, pi/4] as x times the Taylor series of
// sin(x) / x through x^16 / 17!.
__device__ __forceinline__ double sin_polynomial(double x) {
    const double z = __dmul_rn(x, x);
    double series = 1.0 / 355687428096000.0;
    series = multiply_add_rn(series, z, -1.0 / 1307674368000.0);
    series = multiply_add_rn(series, z, 1.0 / 6227020800.0);
    series = multiply_add_rn(series, z, -1.0 / 39916800.0);
    series = multiply_add_rn(series, z, 1.0 / 362880.0);
    series = multiply_add_rn(series, z, -1.0 / 5040.0);
    series = multiply_add_rn(series, z, 1.0 / 120.0);
    series = multiply_add_rn(series, z, -1.0 / 6.0);
    series = multiply_add_rn(series, z, 1.0);
    return __dmul_rn(x, series);
}

// Computes cos(x) for x in [0, pi/4] by its Taylor series through x^16 / 16!.
__device__ __forceinline__ double cos_polynomial(double x) {
    const double z = __dmul_rn(x, x);
    double series = 1.0 / 20922789888000.0;
    series = multiply_add_rn(series, z, -1.0 / 87178291200.0);
    series = multiply_add_rn(series, z, 1.0 / 479001600.0);
    series = multiply_add_rn(series, z, -1.0 / 3628800.0);
    series = multiply_add_rn(series, z, 1.0 / 40320.0);
    series = multiply_add_rn(series, z, -1.0 / 720.0);
    series = multiply_add_rn(series, z, 1.0 / 24.0);
    series = multiply_add_rn(series, z, -1.0 / 2.0);
    series = multiply_add_rn(series, z, 1.0);
    return series;
}

// Computes sin(2 pi u) and cos(2 pi u) for u in [0, 1) in the operation order
// of sin_cos_of_turns in src/rng.rs. 8u splits exactly into an octant and a
// fraction in [0, 1). In odd octants the angle within the quadrant is
// pi/2 - (1 - fraction) pi/4, so sine and cosine swap.
__device__ __forceinline__ void sin_cos_of_turns(double u, double* sin_out, double* cos_out) {
    const double eighths = __dmul_rn(u, 8.0);
    const unsigned int octant = (unsigned int)eighths;
    const double fraction = __dsub_rn(eighths, (double)octant);
    const double frac_pi_4 = __longlong_as_double(FRAC_PI_4_BITS);

    double sin_in_quadrant;
    double cos_in_quadrant;
    if ((octant & 1u) == 0u) {
        const double x = __dmul_rn(fraction, frac_pi_4);
        sin_in_quadrant = sin_polynomial(x);
        cos_in_quadrant = cos_polynomial(x);
    } else {
        const double x = __dmul_rn(__dsub_rn(1.0, fraction), frac_pi_4);
        sin_in_quadrant = cos_polynomial(x);
        cos_in_quadrant = sin_polynomial(x);
    }

    switch (octant >> 1) {
    case 0u:
        *sin_out = sin_in_quadrant;
        *cos_out = cos_in_quadrant;
        break;
    case 1u:
        *sin_out = cos_in_quadrant;
        *cos_out = -sin_in_quadrant;
        break;
    case 2u:
        *sin_out = -sin_in_quadrant;
        *cos_out = -cos_in_quadrant;
        break;
    default:
        *sin_out = -cos_in_quadrant;
        *cos_out = sin_in_quadrant;
        break;
    }
}

// Writes r cos(2 pi u2) to *z0 and r sin(2 pi u2) to *z1 with r = sqrt(-2 ln u1).
__device__ __forceinline__ void box_muller(double u1, double u2, double* z0, double* z1) {
    const double radius = __dsqrt_rn(__dmul_rn(-2.0, ln_unit_interval(u1)));
    double sin_value;
    double cos_value;
    sin_cos_of_turns(u2, &sin_value, &cos_value);
    *z0 = __dmul_rn(radius, cos_value);
    *z1 = __dmul_rn(radius, sin_value);
}

extern "C" __global__ void philox_uniform_f32(float* out, unsigned long long numel,
                                              unsigned long long seed, unsigned long long offset) {
    const unsigned long long start = offset;
    const unsigned long long end = start + numel;
    const unsigned long long first_block = start >> 2;
    const unsigned long long block_count = blocks_up_to(end) - first_block;
    for (unsigned long long t = grid_thread_index(); t < block_count; t += grid_thread_count()) {
        const unsigned long long block_index = first_block + t;
        const philox_block block = stream_block(seed, block_index);
        const unsigned long long first_word = block_index << 2;
#pragma unroll
        for (int lane = 0; lane < 4; ++lane) {
            const unsigned long long word = first_word + lane;
            if (word >= start && word < end) {
                out[word - start] = unit_f32_from_word(block.word[lane]);
            }
        }
    }
}

extern "C" __global__ void philox_normal_f32(float* out, unsigned long long numel,
                                             unsigned long long seed, unsigned long long offset) {
    // Value i uses words start + i rounded down to even (u1) and up to odd (u2).
    const unsigned long long start = align_up(offset, 2ull);
    const unsigned long long end = start + numel;
    const unsigned long long first_block = start >> 2;
    const unsigned long long block_count = blocks_up_to(end) - first_block;
    for (unsigned long long t = grid_thread_index(); t < block_count; t += grid_thread_count()) {
        const unsigned long long block_index = first_block + t;
        const philox_block block = stream_block(seed, block_index);
        const unsigned long long first_word = block_index << 2;
#pragma unroll
        for (int pair = 0; pair < 2; ++pair) {
            const unsigned long long word = first_word + 2 * pair;
            if (word >= start && word < end) {
                double z0;
                double z1;
                box_muller(open_closed_unit_from_u32(block.word[2 * pair]),
                           closed_open_unit_from_u32(block.word[2 * pair + 1]), &z0, &z1);
                out[word - start] = __double2float_rn(z0);
                if (word + 1 < end) {
                    out[word + 1 - start] = __double2float_rn(z1);
                }
            }
        }
    }
}

extern "C" __global__ void philox_uniform_f64(double* out, unsigned long long numel,
                                              unsigned long long seed, unsigned long long offset) {
    const unsigned long long start = align_up(offset, 2ull);
    const unsigned long long end = start + 2 * numel;
    const unsigned long long first_block = start >> 2;
    const unsigned long long block_count = blocks_up_to(end) - first_block;
    for (unsigned long long t = grid_thread_index(); t < block_count; t += grid_thread_count()) {
        const unsigned long long block_index = first_block + t;
        const philox_block block = stream_block(seed, block_index);
        const unsigned long long first_word = block_index << 2;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const unsigned long long word = first_word + 2 * half;
            if (word >= start && word < end) {
                const unsigned long long bits =
                    join_words(block.word[2 * half], block.word[2 * half + 1]);
                out[(word - start) >> 1] = closed_open_unit_from_u64(bits);
            }
        }
    }
}

extern "C" __global__ void philox_normal_f64(double* out, unsigned long long numel,
                                             unsigned long long seed, unsigned long long offset) {
    // The start is a multiple of 4, so Philox block first_block + t holds
    // exactly the pair for values 2t and 2t + 1.
    const unsigned long long first_block = align_up(offset, 4ull) >> 2;
    const unsigned long long pair_count = (numel >> 1) + (numel & 1ull);
    for (unsigned long long t = grid_thread_index(); t < pair_count; t += grid_thread_count()) {
        const philox_block block = stream_block(seed, first_block + t);
        double z0;
        double z1;
        box_muller(open_closed_unit_from_u64(join_words(block.word[0], block.word[1])),
                   closed_open_unit_from_u64(join_words(block.word[2], block.word[3])), &z0, &z1);
        const unsigned long long value = 2 * t;
        out[value] = z0;
        if (value + 1 < numel) {
            out[value + 1] = z1;
        }
    }
}
