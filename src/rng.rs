//! Counter-based pseudo-random numbers from Philox4x32-10 (Salmon, Moraes, Dror
//! and Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
//!
//! [`Rng`] on the CPU and the kernels in `kernels/random.cu` compute the same
//! stream, so a buffer filled on either device contains the same values.
//!
//! # Stream definition
//!
//! A seed `s` defines a sequence of 32-bit words `w[0], w[1], ...`. Word `p` is
//! output word `p % 4` of Philox4x32-10 applied to the counter
//! `[lo32(p / 4), hi32(p / 4), 0, 0]` with the key `[lo32(s), hi32(s)]`.
//!
//! The generator state is `(seed, offset)`, where `offset` is the index of the
//! first word not yet consumed. A draw of `numel` values of a [`DrawKind`]
//! starts at `start`, which is `offset` rounded up to the kind's group size. It
//! reads whole groups from there and sets `offset` to the end of the last group
//! it read:
//!
//! | kind | words per group | values per group | value `i` of the draw |
//! | --- | --- | --- | --- |
//! | `UniformF32` | 1 | 1 | `(w[start + i] >> 8) * 2^-24` |
//! | `NormalF32` | 2 | 2 | Box-Muller on `a = w[q]`, `b = w[q + 1]`, `q = start + 2 * (i / 2)` |
//! | `UniformF64` | 2 | 1 | `((w[start + 2i + 1] << 32 \| w[start + 2i]) >> 11) * 2^-53` |
//! | `NormalF64` | 4 | 2 | Box-Muller on `a = w[q] \| w[q+1] << 32`, `b = w[q+2] \| w[q+3] << 32`, `q = start + 4 * (i / 2)` |
//!
//! Box-Muller takes `u1 = (x(a) + 1) * 2^-k` in `(0, 1]` and `u2 = x(b) * 2^-k`
//! in `[0, 1)`, where `x` keeps all 32 bits (`k = 32`, f32 normals) or the top
//! 53 bits (`k = 53`, f64 normals). With `r = sqrt(-2 ln u1)`, value `i` is
//! `r cos(2 pi u2)` for even `i` and `r sin(2 pi u2)` for odd `i`. F32 normals
//! are computed in f64 and rounded to nearest f32.
//!
//! Group sizes divide 4 and `start` is a multiple of the group size, so no
//! group spans two Philox blocks. Each draw reads only words at or after
//! `offset` and moves `offset` past them, so no word feeds two draws.
//! Drawing `a` values and then `b` values of one kind gives the same values
//! as drawing `a + b` at once when `a` is a multiple of the kind's values per
//! group (any `a` for uniforms, even `a` for normals).
//!
//! # CPU and GPU agreement
//!
//! Uniform values are exact conversions of the words, so they are identical
//! everywhere. For normals this module evaluates ln, sin and cos with its own
//! polynomials, which use only IEEE-754 addition, multiplication, division and
//! square root in a fixed order. `random.cu` performs the same operations
//! with the `__dadd_rn`/`__dmul_rn` family of intrinsics, which NVRTC never
//! contracts into fused multiply-adds. Normals are therefore bit-identical as
//! well, with any platform libm and under any NVRTC `--fmad` setting. The one
//! known exception is `--ftz=true` (implied by `--use_fast_math`), which may
//! flush an f32 normal below 2^-126 in magnitude to zero on the GPU.
//!
//! All fills are pure functions of `(seed, start, index)`, so a fill split
//! over disjoint index ranges returns the same values as a sequential one.
//! Normal fills of more than [`NORMALS_PER_TASK`] values run as parallel tasks
//! on the current rayon pool. Uniform fills stay sequential, because they cost
//! a few nanoseconds per value.

use rayon::prelude::*;

/// Philox multiplier applied to counter word 0.
const PHILOX_M0: u32 = 0xD251_1F53;
/// Philox multiplier applied to counter word 2.
const PHILOX_M1: u32 = 0xCD9E_8D57;
/// Weyl increment of key word 0 between rounds, 2^32 / golden ratio.
const PHILOX_W0: u32 = 0x9E37_79B9;
/// Weyl increment of key word 1 between rounds, 2^32 (sqrt(3) - 1).
const PHILOX_W1: u32 = 0xBB67_AE85;
const PHILOX_ROUNDS: usize = 10;

/// Counter word 2 of the blocks that derive forked seeds. Stream blocks have 0
/// there because their block index is below 2^62, so deriving a fork never
/// reuses a block of the parent's own stream.
const FORK_COUNTER_TAG: u32 = 0x464F_524B;

// Powers of two, exact because division by a power of two is exact.
const TWO_POW_MINUS_24: f32 = 1.0 / 16_777_216.0;
const TWO_POW_MINUS_32: f64 = 1.0 / 4_294_967_296.0;
const TWO_POW_MINUS_53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// ln 2 split as `hi + lo`. `hi` is ln 2 truncated to 42 significant bits, so
/// `e * hi` is exact for any f64 exponent `e`. `lo` is the rest of ln 2
/// rounded to f64. `random.cu` uses the same bit patterns.
const LN_2_HI_BITS: u64 = 0x3FE6_2E42_FEFA_3800;
const LN_2_LO_BITS: u64 = 0x3D2E_F357_93C7_6730;
/// Bits of pi / 4 rounded to f64. `random.cu` uses the same bit pattern.
const FRAC_PI_4_BITS: u64 = 0x3FE9_21FB_5444_2D18;
/// Fraction field of sqrt(2) rounded to f64. Mantissas at or above it are
/// halved so that the reduced argument of ln lies in [sqrt(1/2), sqrt(2)).
const SQRT_2_FRACTION: u64 = 0x0006_A09E_667F_3BCD;
const F64_FRACTION_MASK: u64 = (1 << 52) - 1;
const F64_EXPONENT_BIAS: u64 = 1023;

/// Coefficients `2 / (2k + 3)` of `R(z) = 2z/3 + 2z^2/5 + ... + 2z^11/23`
/// divided by `z`, the tail of ln(m) = 2 atanh(s) = 2s + s R(s^2) with
/// s = (m - 1) / (m + 1). For |s| <= 0.172 the first omitted term of ln(m),
/// 2 s^25 / 25, is below 4e-20 relative to ln(m).
const ATANH_TAIL_SERIES: [f64; 11] = [
    2.0 / 3.0,
    2.0 / 5.0,
    2.0 / 7.0,
    2.0 / 9.0,
    2.0 / 11.0,
    2.0 / 13.0,
    2.0 / 15.0,
    2.0 / 17.0,
    2.0 / 19.0,
    2.0 / 21.0,
    2.0 / 23.0,
];

/// Taylor coefficients of sin(x) / x in powers of x^2, through x^16 / 17!.
/// On [0, pi/4] the first omitted term is below 2e-19 relative to sin(x).
const SIN_SERIES: [f64; 9] = [
    1.0,
    -1.0 / 6.0,
    1.0 / 120.0,
    -1.0 / 5_040.0,
    1.0 / 362_880.0,
    -1.0 / 39_916_800.0,
    1.0 / 6_227_020_800.0,
    -1.0 / 1_307_674_368_000.0,
    1.0 / 355_687_428_096_000.0,
];

/// Taylor coefficients of cos(x) in powers of x^2, through x^16 / 16!. On
/// [0, pi/4] the first omitted term, x^18 / 18!, is below 3e-18 relative to
/// cos(x).
const COS_SERIES: [f64; 9] = [
    1.0,
    -1.0 / 2.0,
    1.0 / 24.0,
    -1.0 / 720.0,
    1.0 / 40_320.0,
    -1.0 / 3_628_800.0,
    1.0 / 479_001_600.0,
    -1.0 / 87_178_291_200.0,
    1.0 / 20_922_789_888_000.0,
];

/// Computes Philox4x32-10 of one 128-bit counter under a 64-bit key.
///
/// Each of the 10 rounds multiplies counter words 0 and 2 by fixed constants
/// and mixes the high and low product halves with words 1 and 3 and the key.
/// The key is bumped by a Weyl increment before every round after the first.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut block = counter;
    let mut round_key = key;
    for round in 0..PHILOX_ROUNDS {
        if round > 0 {
            round_key[0] = round_key[0].wrapping_add(PHILOX_W0);
            round_key[1] = round_key[1].wrapping_add(PHILOX_W1);
        }
        block = philox_round(block, round_key);
    }
    block
}

fn philox_round(block: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let product0 = u64::from(PHILOX_M0) * u64::from(block[0]);
    let product1 = u64::from(PHILOX_M1) * u64::from(block[2]);
    let (hi0, lo0) = ((product0 >> 32) as u32, product0 as u32);
    let (hi1, lo1) = ((product1 >> 32) as u32, product1 as u32);
    [hi1 ^ block[1] ^ key[0], lo1, hi0 ^ block[3] ^ key[1], lo0]
}

/// Splits a seed into the Philox key `[lo32(seed), hi32(seed)]`.
fn seed_key(seed: u64) -> [u32; 2] {
    [seed as u32, (seed >> 32) as u32]
}

/// Computes stream words `4 * block_index .. 4 * block_index + 4`.
fn stream_block(key: [u32; 2], block_index: u64) -> [u32; 4] {
    let counter = [block_index as u32, (block_index >> 32) as u32, 0, 0];
    philox4x32_10(counter, key)
}

/// Value type and distribution of one draw, which fix how many stream words
/// each value consumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DrawKind {
    /// f32 in [0, 1) from the top 24 bits of one word.
    UniformF32,
    /// Standard normal f32, two values per Box-Muller pair of words.
    NormalF32,
    /// f64 in [0, 1) from the top 53 bits of two words.
    UniformF64,
    /// Standard normal f64, two values per Box-Muller pair of 64-bit words.
    NormalF64,
}

impl DrawKind {
    /// Words in one group, the unit a draw consumes and aligns its start to.
    pub const fn words_per_group(self) -> u64 {
        match self {
            DrawKind::UniformF32 => 1,
            DrawKind::NormalF32 | DrawKind::UniformF64 => 2,
            DrawKind::NormalF64 => 4,
        }
    }

    /// Values produced from one group.
    pub const fn values_per_group(self) -> u64 {
        match self {
            DrawKind::UniformF32 | DrawKind::UniformF64 => 1,
            DrawKind::NormalF32 | DrawKind::NormalF64 => 2,
        }
    }

    /// Name of the `random.cu` entry point that computes this kind.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            DrawKind::UniformF32 => "philox_uniform_f32",
            DrawKind::NormalF32 => "philox_normal_f32",
            DrawKind::UniformF64 => "philox_uniform_f64",
            DrawKind::NormalF64 => "philox_normal_f64",
        }
    }

    /// Returns the number of words a draw of `numel` values consumes, or
    /// `None` if it exceeds `u64::MAX`.
    pub fn words_for(self, numel: u64) -> Option<u64> {
        numel
            .div_ceil(self.values_per_group())
            .checked_mul(self.words_per_group())
    }

    /// Returns `offset` rounded up to this kind's group size, or `None` on
    /// overflow.
    pub fn align_start(self, offset: u64) -> Option<u64> {
        let group = self.words_per_group();
        offset.checked_next_multiple_of(group)
    }

    /// Returns the number of Philox blocks that a draw of `numel` values at
    /// word `start` touches. The kernels run one loop iteration per block, so
    /// this is the thread count that covers a draw without grid-stride
    /// repeats. Returns `None` on overflow.
    pub fn philox_block_count(self, start: u64, numel: u64) -> Option<u64> {
        let start = self.align_start(start)?;
        let end = start.checked_add(self.words_for(numel)?)?;
        Some(end.div_ceil(4) - start / 4)
    }
}

/// Philox4x32-10 generator state: the seed and the index of the next unused
/// stream word. See the module documentation for the stream definition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rng {
    seed: u64,
    offset: u64,
}

impl Rng {
    /// Creates a generator at the start of the stream of `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { seed, offset: 0 }
    }

    /// Creates a generator from a state returned by [`Rng::save_state`].
    pub fn from_state(state: (u64, u64)) -> Self {
        let (seed, offset) = state;
        Rng { seed, offset }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Index of the next unused stream word.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Philox key `[lo32(seed), hi32(seed)]`.
    pub fn key(&self) -> [u32; 2] {
        seed_key(self.seed)
    }

    /// Returns `(seed, offset)`, which restores this exact position.
    pub fn save_state(&self) -> (u64, u64) {
        (self.seed, self.offset)
    }

    /// Moves the generator to a state returned by [`Rng::save_state`]. Any
    /// offset is valid because every draw aligns its own start.
    pub fn restore_state(&mut self, state: (u64, u64)) {
        *self = Rng::from_state(state);
    }

    /// Reserves the words of a draw of `numel` values and returns its start
    /// word, the `offset` argument for the matching `random.cu` kernel.
    ///
    /// Panics if the draw would run past word `u64::MAX`, which takes 2^64
    /// words and so does not happen in practice.
    pub fn reserve(&mut self, kind: DrawKind, numel: usize) -> u64 {
        let start_and_end = kind.align_start(self.offset).and_then(|start| {
            let end = start.checked_add(kind.words_for(numel as u64)?)?;
            Some((start, end))
        });
        let Some((start, end)) = start_and_end else {
            panic!(
                "Philox stream of seed {} exhausted: a {kind:?} draw of {numel} values at offset {} \
                 runs past word 2^64 - 1; use a new seed or a fork",
                self.seed, self.offset
            );
        };
        self.offset = end;
        start
    }

    /// Returns a generator for sub-stream `stream_id` with its own derived seed.
    ///
    /// The child seed is `words[0] | words[1] << 32` of Philox4x32-10 with the
    /// parent key and the counter `[lo32(stream_id), hi32(stream_id),
    /// FORK_COUNTER_TAG, 0]`. It depends only on the parent seed and
    /// `stream_id`, not on the parent offset, and the child starts at offset 0.
    /// Two stream ids, or a child and its parent, share a seed only by a 64-bit
    /// collision (probability about 2^-64 per pair).
    pub fn fork(&self, stream_id: u64) -> Self {
        let counter = [
            stream_id as u32,
            (stream_id >> 32) as u32,
            FORK_COUNTER_TAG,
            0,
        ];
        let words = philox4x32_10(counter, self.key());
        Rng::new(u64::from(words[0]) | (u64::from(words[1]) << 32))
    }

    /// Fills `out` with uniform values in [0, 1) on the 2^-24 grid.
    pub fn fill_uniform_f32(&mut self, out: &mut [f32]) {
        let mut words = self.draw_words(DrawKind::UniformF32, out.len());
        for value in out.iter_mut() {
            *value = unit_f32_from_word(words.next_word());
        }
    }

    /// Fills `out` with standard normal values.
    pub fn fill_normal_f32(&mut self, out: &mut [f32]) {
        let start = self.reserve(DrawKind::NormalF32, out.len());
        fill_pairs(self.key(), start, DrawKind::NormalF32, out, |words| {
            let u1 = open_closed_unit_from_u32(words.next_word());
            let u2 = closed_open_unit_from_u32(words.next_word());
            let (z0, z1) = box_muller(u1, u2);
            (z0 as f32, z1 as f32)
        });
    }

    /// Fills `out` with uniform values in [0, 1) on the 2^-53 grid.
    pub fn fill_uniform_f64(&mut self, out: &mut [f64]) {
        let mut words = self.draw_words(DrawKind::UniformF64, out.len());
        for value in out.iter_mut() {
            *value = closed_open_unit_from_u64(words.next_u64());
        }
    }

    /// Fills `out` with standard normal values.
    pub fn fill_normal_f64(&mut self, out: &mut [f64]) {
        let start = self.reserve(DrawKind::NormalF64, out.len());
        fill_pairs(self.key(), start, DrawKind::NormalF64, out, |words| {
            let u1 = open_closed_unit_from_u64(words.next_u64());
            let u2 = closed_open_unit_from_u64(words.next_u64());
            box_muller(u1, u2)
        });
    }

    /// Returns one uniform value in [0, 1), consuming 2 words like a
    /// one-value `fill_uniform_f64`.
    pub fn uniform_f64(&mut self) -> f64 {
        let mut value = [0.0];
        self.fill_uniform_f64(&mut value);
        value[0]
    }

    /// Returns one standard normal value, consuming a whole 4-word group like
    /// a one-value `fill_normal_f64`. The sine half of the pair is discarded.
    pub fn normal_f64(&mut self) -> f64 {
        let mut value = [0.0];
        self.fill_normal_f64(&mut value);
        value[0]
    }

    /// Returns `w[start] | w[start + 1] << 32`, consuming 2 words aligned
    /// like a `UniformF64` value.
    pub fn next_u64(&mut self) -> u64 {
        self.draw_words(DrawKind::UniformF64, 1).next_u64()
    }

    fn draw_words(&mut self, kind: DrawKind, numel: usize) -> StreamWords {
        let start = self.reserve(kind, numel);
        StreamWords::new(self.key(), start)
    }
}

/// Values per parallel task of a normal fill. It is even, so every task starts
/// on a Box-Muller pair. At roughly 15 ns per value (an estimate from profiles
/// on a Zen 5 core), a task is about 60 us of work, far more than its hand-off.
const NORMALS_PER_TASK: usize = 4096;

/// Fills `out` with the values of a draw of two-value `kind` groups that starts
/// at word `start`. `draw_pair` reads one group's words and returns its two
/// values. Each value depends only on its index, so the tasks of a parallel
/// fill each open the stream at their own first group.
fn fill_pairs<V, F>(key: [u32; 2], start: u64, kind: DrawKind, out: &mut [V], draw_pair: F)
where
    V: Send,
    F: Fn(&mut StreamWords) -> (V, V) + Sync,
{
    debug_assert_eq!(kind.values_per_group(), 2);
    let fill_task = |first_value: usize, task_values: &mut [V]| {
        let first_group = (first_value / 2) as u64;
        let mut words = StreamWords::new(key, start + first_group * kind.words_per_group());
        for pair in task_values.chunks_mut(2) {
            let (first, second) = draw_pair(&mut words);
            pair[0] = first;
            if let Some(slot) = pair.get_mut(1) {
                *slot = second;
            }
        }
    };
    if out.len() <= NORMALS_PER_TASK {
        fill_task(0, out);
    } else {
        out.par_chunks_mut(NORMALS_PER_TASK)
            .enumerate()
            .for_each(|(task, task_values)| fill_task(task * NORMALS_PER_TASK, task_values));
    }
}

/// Sequential reader of stream words that computes each Philox block once.
struct StreamWords {
    key: [u32; 2],
    position: u64,
    cached_block: Option<(u64, [u32; 4])>,
}

impl StreamWords {
    fn new(key: [u32; 2], position: u64) -> Self {
        StreamWords {
            key,
            position,
            cached_block: None,
        }
    }

    fn next_word(&mut self) -> u32 {
        let block_index = self.position / 4;
        let block = match self.cached_block {
            Some((cached_index, block)) if cached_index == block_index => block,
            _ => {
                let block = stream_block(self.key, block_index);
                self.cached_block = Some((block_index, block));
                block
            }
        };
        let word = block[(self.position % 4) as usize];
        self.position += 1;
        word
    }

    /// Reads two words as `first | second << 32`.
    fn next_u64(&mut self) -> u64 {
        let low = u64::from(self.next_word());
        let high = u64::from(self.next_word());
        low | (high << 32)
    }
}

fn unit_f32_from_word(word: u32) -> f32 {
    (word >> 8) as f32 * TWO_POW_MINUS_24
}

fn closed_open_unit_from_u32(word: u32) -> f64 {
    f64::from(word) * TWO_POW_MINUS_32
}

fn open_closed_unit_from_u32(word: u32) -> f64 {
    (f64::from(word) + 1.0) * TWO_POW_MINUS_32
}

fn closed_open_unit_from_u64(bits: u64) -> f64 {
    (bits >> 11) as f64 * TWO_POW_MINUS_53
}

fn open_closed_unit_from_u64(bits: u64) -> f64 {
    ((bits >> 11) as f64 + 1.0) * TWO_POW_MINUS_53
}

/// Maps `u1` in (0, 1] and `u2` in [0, 1) to two independent standard normal
/// values `(r cos(2 pi u2), r sin(2 pi u2))` with `r = sqrt(-2 ln u1)`.
fn box_muller(u1: f64, u2: f64) -> (f64, f64) {
    let radius = (-2.0 * ln_unit_interval(u1)).sqrt();
    let (sin, cos) = sin_cos_of_turns(u2);
    (radius * cos, radius * sin)
}

/// Computes ln(u) for a normal f64 `u` in (0, 1]. The tests find at most
/// 1 ulp difference from std's `ln` on 200,000 inputs.
///
/// Writes `u = m * 2^e` with `m = 1 + f` in [sqrt(1/2), sqrt(2)), so `f` is
/// exact. With `s = f / (2 + f)` and `h = f^2 / 2`, the identity
/// `2s = f - s f = f - (h - s h)` gives
/// `ln(m) = f - (h - s (h + R(s^2)))`. The exact `f` carries the leading
/// term, so rounding errors enter only through the smaller correction and the
/// final additions. The operation order is mirrored by `ln_unit_interval` in
/// `random.cu`.
fn ln_unit_interval(u: f64) -> f64 {
    let bits = u.to_bits();
    let fraction = bits & F64_FRACTION_MASK;
    let mut exponent = (bits >> 52) as i32 - F64_EXPONENT_BIAS as i32;
    let mantissa_exponent = if fraction >= SQRT_2_FRACTION {
        exponent += 1;
        F64_EXPONENT_BIAS - 1
    } else {
        F64_EXPONENT_BIAS
    };
    let mantissa = f64::from_bits(fraction | (mantissa_exponent << 52));

    let f = mantissa - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let tail = z * evaluate_polynomial(&ATANH_TAIL_SERIES, z);
    let half_f_squared = 0.5 * (f * f);
    let exponent = f64::from(exponent);
    let correction =
        half_f_squared - (s * (half_f_squared + tail) + exponent * f64::from_bits(LN_2_LO_BITS));
    exponent * f64::from_bits(LN_2_HI_BITS) + (f - correction)
}

/// Computes `(sin(2 pi u), cos(2 pi u))` for `u` in [0, 1).
///
/// Reduces exactly: `8u` splits into an octant and a fraction `f` in [0, 1)
/// without rounding, so the only rounded step of the reduction is the
/// multiplication of `f` or `1 - f` by pi/4. The operation order is mirrored
/// by `sin_cos_of_turns` in `random.cu`.
fn sin_cos_of_turns(u: f64) -> (f64, f64) {
    let eighths = u * 8.0;
    let octant = eighths as u32;
    let fraction = eighths - f64::from(octant);
    let frac_pi_4 = f64::from_bits(FRAC_PI_4_BITS);

    // Within a quadrant the angle is (octant % 2 + fraction) * pi/4. In odd
    // octants it equals pi/2 - (1 - fraction) * pi/4, so sine and cosine swap.
    let (sin_in_quadrant, cos_in_quadrant) = if octant & 1 == 0 {
        let x = fraction * frac_pi_4;
        (sin_polynomial(x), cos_polynomial(x))
    } else {
        let x = (1.0 - fraction) * frac_pi_4;
        (cos_polynomial(x), sin_polynomial(x))
    };

    match octant / 2 {
        0 => (sin_in_quadrant, cos_in_quadrant),
        1 => (cos_in_quadrant, -sin_in_quadrant),
        2 => (-sin_in_quadrant, -cos_in_quadrant),
        _ => (-cos_in_quadrant, sin_in_quadrant),
    }
}

fn sin_polynomial(x: f64) -> f64 {
    x * evaluate_polynomial(&SIN_SERIES, x * x)
}

fn cos_polynomial(x: f64) -> f64 {
    evaluate_polynomial(&COS_SERIES, x * x)
}

/// Evaluates `sum(coefficients[k] * z^k)` by Horner's rule, highest degree
/// first, with a separate multiply and add per step.
fn evaluate_polynomial(coefficients: &[f64], z: f64) -> f64 {
    let (highest, rest) = coefficients
        .split_last()
        .expect("polynomial needs at least one coefficient");
    rest.iter()
        .rev()
        .fold(*highest, |sum, &coefficient| sum * z + coefficient)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_words(words: [u32; 4]) -> String {
        format!(
            "{:08x} {:08x} {:08x} {:08x}",
            words[0], words[1], words[2], words[3]
        )
    }

    #[test]
    fn philox_known_answer_zero() {
        let output = philox4x32_10([0; 4], [0; 2]);
        assert_eq!(hex_words(output), "6627e8d5 e169c58d bc57ac4c 9b00dbd8");
    }

    #[test]
    fn philox_known_answer_all_ones() {
        let output = philox4x32_10([u32::MAX; 4], [u32::MAX; 2]);
        assert_eq!(hex_words(output), "408f276d 41c83b0e a20bc7c6 6d5451fd");
    }

    #[test]
    fn philox_known_answer_pi_digits() {
        let counter = [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344];
        let key = [0xa409_3822, 0x299f_31d0];
        let output = philox4x32_10(counter, key);
        assert_eq!(hex_words(output), "d16cfe09 94fdcceb 5001e420 24126ea1");
    }

    #[test]
    fn stream_words_follow_counter_layout() {
        let seed = 0x0123_4567_89ab_cdef;
        let key = [0x89ab_cdef, 0x0123_4567];
        assert_eq!(seed_key(seed), key);

        let block_index = (1_u64 << 33) + 5;
        let expected = philox4x32_10([5, 2, 0, 0], key);
        assert_eq!(stream_block(key, block_index), expected);

        let mut words = StreamWords::new(key, 4 * block_index + 2);
        assert_eq!(words.next_word(), expected[2]);
        assert_eq!(words.next_word(), expected[3]);
        assert_eq!(words.next_word(), stream_block(key, block_index + 1)[0]);
    }

    #[test]
    fn uniform_f32_matches_stream_words() {
        let mut rng = Rng::new(0);
        let mut values = [0.0_f32; 5];
        rng.fill_uniform_f32(&mut values);
        let block0 = philox4x32_10([0; 4], [0; 2]);
        let block1 = philox4x32_10([1, 0, 0, 0], [0; 2]);
        let words = [block0[0], block0[1], block0[2], block0[3], block1[0]];
        for (value, word) in values.iter().zip(words) {
            assert_eq!(*value, (word >> 8) as f32 / 16_777_216.0);
        }
        assert_eq!(values[0], (0x6627_e8d5_u32 >> 8) as f32 / 16_777_216.0);
        assert_eq!(rng.offset(), 5);
    }

    #[test]
    fn uniform_f64_matches_stream_words() {
        let seed = 77;
        let block0 = stream_block(seed_key(seed), 0);
        let mut rng = Rng::new(seed);
        let mut values = [0.0_f64; 2];
        rng.fill_uniform_f64(&mut values);

        let first = (u64::from(block0[1]) << 32 | u64::from(block0[0])) >> 11;
        let second = (u64::from(block0[3]) << 32 | u64::from(block0[2])) >> 11;
        assert_eq!(values[0], first as f64 / 9_007_199_254_740_992.0);
        assert_eq!(values[1], second as f64 / 9_007_199_254_740_992.0);
        assert_eq!(rng.offset(), 4);
    }

    #[test]
    fn next_u64_matches_stream_words() {
        let seed = 5;
        let block0 = stream_block(seed_key(seed), 0);
        let mut rng = Rng::new(seed);
        assert_eq!(
            rng.next_u64(),
            u64::from(block0[1]) << 32 | u64::from(block0[0])
        );
        assert_eq!(
            rng.next_u64(),
            u64::from(block0[3]) << 32 | u64::from(block0[2])
        );
        assert_eq!(rng.offset(), 4);
    }

    #[test]
    fn normal_f32_matches_box_muller_on_words() {
        let seed = 9;
        let block0 = stream_block(seed_key(seed), 0);
        let mut rng = Rng::new(seed);
        let mut values = [0.0_f32; 3];
        rng.fill_normal_f32(&mut values);

        let u1 = (f64::from(block0[0]) + 1.0) / 4_294_967_296.0;
        let u2 = f64::from(block0[1]) / 4_294_967_296.0;
        let (z0, z1) = box_muller(u1, u2);
        assert_eq!(values[0], z0 as f32);
        assert_eq!(values[1], z1 as f32);
        let (z2, _) = box_muller(
            (f64::from(block0[2]) + 1.0) / 4_294_967_296.0,
            f64::from(block0[3]) / 4_294_967_296.0,
        );
        assert_eq!(values[2], z2 as f32);
        // The odd count still consumes the whole pair.
        assert_eq!(rng.offset(), 4);
    }

    #[test]
    fn power_of_two_constants_are_exact() {
        assert_eq!(TWO_POW_MINUS_24, 2.0_f32.powi(-24));
        assert_eq!(TWO_POW_MINUS_32, 2.0_f64.powi(-32));
        assert_eq!(TWO_POW_MINUS_53, 2.0_f64.powi(-53));
    }

    #[test]
    fn math_constants_match_std() {
        let ln_2_hi = f64::from_bits(LN_2_HI_BITS);
        let ln_2_lo = f64::from_bits(LN_2_LO_BITS);
        assert_eq!(LN_2_HI_BITS & 0x7FF, 0);
        assert_eq!(ln_2_hi + ln_2_lo, std::f64::consts::LN_2);
        assert!(ln_2_lo.abs() < 2.0_f64.powi(-43));
        assert_eq!(f64::from_bits(FRAC_PI_4_BITS), std::f64::consts::FRAC_PI_4);
        let sqrt_2_fraction = std::f64::consts::SQRT_2.to_bits() & F64_FRACTION_MASK;
        assert_eq!(SQRT_2_FRACTION, sqrt_2_fraction);
    }

    #[test]
    fn kernel_source_uses_same_constants() {
        let source = include_str!("../kernels/random.cu").to_ascii_uppercase();
        let constants = [
            PHILOX_M0 as u64,
            PHILOX_M1 as u64,
            PHILOX_W0 as u64,
            PHILOX_W1 as u64,
            LN_2_HI_BITS,
            LN_2_LO_BITS,
            FRAC_PI_4_BITS,
            SQRT_2_FRACTION,
        ];
        for constant in constants {
            let hex = format!("0X{constant:X}");
            assert!(source.contains(&hex), "random.cu does not contain {hex}");
        }
        for kind in all_kinds() {
            let name = kind.kernel_name().to_ascii_uppercase();
            assert!(
                source.contains(&name),
                "random.cu has no entry point {name}"
            );
        }
    }

    fn all_kinds() -> [DrawKind; 4] {
        [
            DrawKind::UniformF32,
            DrawKind::NormalF32,
            DrawKind::UniformF64,
            DrawKind::NormalF64,
        ]
    }

    /// Draws `numel` values of `kind` and returns their bit patterns.
    fn draw_bits(rng: &mut Rng, kind: DrawKind, numel: usize) -> Vec<u64> {
        match kind {
            DrawKind::UniformF32 | DrawKind::NormalF32 => {
                let mut values = vec![0.0_f32; numel];
                if kind == DrawKind::UniformF32 {
                    rng.fill_uniform_f32(&mut values);
                } else {
                    rng.fill_normal_f32(&mut values);
                }
                values.iter().map(|v| u64::from(v.to_bits())).collect()
            }
            DrawKind::UniformF64 | DrawKind::NormalF64 => {
                let mut values = vec![0.0_f64; numel];
                if kind == DrawKind::UniformF64 {
                    rng.fill_uniform_f64(&mut values);
                } else {
                    rng.fill_normal_f64(&mut values);
                }
                values.iter().map(|v| v.to_bits()).collect()
            }
        }
    }

    #[test]
    fn chunked_draws_equal_single_draw() {
        for kind in all_kinds() {
            let mut whole = Rng::new(1234);
            let expected = draw_bits(&mut whole, kind, 17);

            let mut chunked = Rng::new(1234);
            let mut actual = draw_bits(&mut chunked, kind, 10);
            actual.extend(draw_bits(&mut chunked, kind, 7));

            assert_eq!(actual, expected, "{kind:?}");
            assert_eq!(chunked.offset(), whole.offset(), "{kind:?}");
        }
    }

    #[test]
    fn uniform_f32_any_chunking_equals_single_draw() {
        let mut whole = Rng::new(99);
        let expected = draw_bits(&mut whole, DrawKind::UniformF32, 23);

        let mut chunked = Rng::new(99);
        let mut actual = Vec::new();
        for numel in [3, 1, 5, 0, 7, 2, 5] {
            actual.extend(draw_bits(&mut chunked, DrawKind::UniformF32, numel));
        }
        assert_eq!(actual, expected);
        assert_eq!(chunked.offset(), 23);
    }

    #[test]
    fn parallel_normal_fill_equals_sequential_pieces() {
        let numel = 2 * NORMALS_PER_TASK + 3;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        for kind in [DrawKind::NormalF32, DrawKind::NormalF64] {
            // One uniform word first, so the draw starts past an alignment gap.
            let mut whole = Rng::new(41);
            whole.fill_uniform_f32(&mut [0.0]);
            let parallel = pool.install(|| draw_bits(&mut whole, kind, numel));

            let mut pieces = Rng::new(41);
            pieces.fill_uniform_f32(&mut [0.0]);
            let mut sequential = Vec::new();
            let mut left = numel;
            while left > 0 {
                // Even pieces below the task size take the one-task path.
                let piece = left.min(1000);
                sequential.extend(draw_bits(&mut pieces, kind, piece));
                left -= piece;
            }
            assert_eq!(parallel, sequential, "{kind:?}");
            assert_eq!(whole.offset(), pieces.offset(), "{kind:?}");
        }
    }

    #[test]
    fn odd_normal_chunk_skips_sine_half() {
        let mut whole = Rng::new(3);
        let expected = draw_bits(&mut whole, DrawKind::NormalF32, 4);

        let mut chunked = Rng::new(3);
        let first = draw_bits(&mut chunked, DrawKind::NormalF32, 1);
        let second = draw_bits(&mut chunked, DrawKind::NormalF32, 2);
        assert_eq!(first, expected[..1]);
        assert_eq!(second, expected[2..4]);
    }

    #[test]
    fn same_seed_gives_same_values() {
        for kind in all_kinds() {
            let first = draw_bits(&mut Rng::new(2024), kind, 1000);
            let second = draw_bits(&mut Rng::new(2024), kind, 1000);
            assert_eq!(first, second, "{kind:?}");
        }
    }

    #[test]
    fn different_seeds_give_different_values() {
        for kind in all_kinds() {
            let first = draw_bits(&mut Rng::new(1), kind, 64);
            let second = draw_bits(&mut Rng::new(1 << 32), kind, 64);
            let equal = first.iter().zip(&second).filter(|(a, b)| a == b).count();
            assert!(equal <= 1, "{kind:?}: {equal} of 64 values equal");
        }
    }

    #[test]
    fn reserve_aligns_start_to_group() {
        let mut rng = Rng::new(0);
        assert_eq!(rng.reserve(DrawKind::UniformF32, 3), 0);
        assert_eq!(rng.offset(), 3);
        assert_eq!(rng.reserve(DrawKind::UniformF64, 1), 4);
        assert_eq!(rng.offset(), 6);
        assert_eq!(rng.reserve(DrawKind::NormalF64, 3), 8);
        assert_eq!(rng.offset(), 16);
        assert_eq!(rng.reserve(DrawKind::UniformF32, 1), 16);
        assert_eq!(rng.reserve(DrawKind::NormalF32, 3), 18);
        assert_eq!(rng.offset(), 22);
        assert_eq!(rng.reserve(DrawKind::NormalF32, 0), 22);
        assert_eq!(rng.offset(), 22);
    }

    #[test]
    fn mixed_draws_never_share_words() {
        let mut chooser = Rng::new(555);
        let mut rng = Rng::new(0);
        let mut previous_end = 0;
        for _ in 0..2000 {
            let kind = all_kinds()[(chooser.next_u64() % 4) as usize];
            let numel = (chooser.next_u64() % 9) as usize;
            let start = rng.reserve(kind, numel);
            assert!(
                start >= previous_end,
                "{kind:?} draw starts inside the previous draw"
            );
            assert_eq!(start % kind.words_per_group(), 0, "{kind:?}");
            assert!(start - previous_end < kind.words_per_group(), "{kind:?}");
            let words = kind.words_for(numel as u64).unwrap();
            assert_eq!(rng.offset(), start + words, "{kind:?}");
            previous_end = rng.offset();
        }
    }

    #[test]
    #[should_panic(expected = "exhausted")]
    fn reserve_past_end_panics() {
        let mut rng = Rng::from_state((1, u64::MAX - 2));
        rng.reserve(DrawKind::UniformF32, 3);
    }

    #[test]
    fn reserve_up_to_last_word_succeeds() {
        let mut rng = Rng::from_state((1, u64::MAX - 2));
        let mut values = [0.0_f32; 2];
        rng.fill_uniform_f32(&mut values);
        assert_eq!(rng.offset(), u64::MAX);
        let block = stream_block(seed_key(1), u64::MAX / 4);
        assert_eq!(values[0], unit_f32_from_word(block[1]));
        assert_eq!(values[1], unit_f32_from_word(block[2]));
    }

    #[test]
    fn philox_block_count_covers_draw() {
        assert_eq!(DrawKind::UniformF32.philox_block_count(0, 0), Some(0));
        assert_eq!(DrawKind::UniformF32.philox_block_count(3, 1), Some(1));
        assert_eq!(DrawKind::UniformF32.philox_block_count(3, 2), Some(2));
        assert_eq!(DrawKind::NormalF32.philox_block_count(2, 3), Some(2));
        assert_eq!(DrawKind::UniformF64.philox_block_count(1, 2), Some(2));
        assert_eq!(DrawKind::NormalF64.philox_block_count(5, 5), Some(3));
        assert_eq!(DrawKind::UniformF64.philox_block_count(u64::MAX, 1), None);
    }

    #[test]
    fn save_and_restore_resumes_stream() {
        let mut rng = Rng::new(42);
        let mut warmup = [0.0_f32; 13];
        rng.fill_normal_f32(&mut warmup);
        let state = rng.save_state();
        assert_eq!(state, (42, 14));

        let expected = draw_bits(&mut rng, DrawKind::UniformF64, 9);
        let mut restored = Rng::new(0);
        restored.restore_state(state);
        assert_eq!(draw_bits(&mut restored, DrawKind::UniformF64, 9), expected);
        let mut rebuilt = Rng::from_state(state);
        assert_eq!(draw_bits(&mut rebuilt, DrawKind::UniformF64, 9), expected);
    }

    #[test]
    fn fork_is_deterministic_and_ignores_offset() {
        let parent = Rng::new(8);
        let mut advanced = parent.clone();
        advanced.reserve(DrawKind::NormalF64, 100);
        assert_eq!(parent.fork(3), advanced.fork(3));
        assert_eq!(parent.fork(3).offset(), 0);
    }

    #[test]
    fn forks_differ_from_parent_and_each_other() {
        let parent = Rng::new(8);
        let mut seeds: Vec<u64> = (0..1000).map(|id| parent.fork(id).seed()).collect();
        seeds.push(parent.seed());
        seeds.sort_unstable();
        seeds.dedup();
        assert_eq!(seeds.len(), 1001);

        let parent_values = draw_bits(&mut parent.clone(), DrawKind::UniformF32, 64);
        let child_values = draw_bits(&mut parent.fork(0), DrawKind::UniformF32, 64);
        assert_ne!(parent_values, child_values);
    }

    #[test]
    fn fork_seed_matches_definition() {
        let parent = Rng::new(0xdead_beef_0000_0001);
        let stream_id = 0x0000_0002_0000_0003;
        let words = philox4x32_10([3, 2, FORK_COUNTER_TAG, 0], [1, 0xdead_beef]);
        let expected = u64::from(words[1]) << 32 | u64::from(words[0]);
        assert_eq!(parent.fork(stream_id).seed(), expected);
    }

    #[test]
    fn unit_conversions_stay_in_range() {
        assert_eq!(unit_f32_from_word(0), 0.0);
        assert_eq!(unit_f32_from_word(u32::MAX), 1.0 - TWO_POW_MINUS_24);
        assert_eq!(closed_open_unit_from_u64(0), 0.0);
        assert_eq!(closed_open_unit_from_u64(u64::MAX), 1.0 - TWO_POW_MINUS_53);
        assert_eq!(closed_open_unit_from_u32(u32::MAX), 1.0 - TWO_POW_MINUS_32);
        assert_eq!(open_closed_unit_from_u32(0), TWO_POW_MINUS_32);
        assert_eq!(open_closed_unit_from_u32(u32::MAX), 1.0);
        assert_eq!(open_closed_unit_from_u64(0), TWO_POW_MINUS_53);
        assert_eq!(open_closed_unit_from_u64(u64::MAX), 1.0);
    }

    #[test]
    fn box_muller_extremes_are_finite() {
        let (z0, z1) = box_muller(1.0, 0.0);
        assert_eq!(z0.abs(), 0.0);
        assert_eq!(z1.abs(), 0.0);

        let max_f32_radius = (-2.0 * (TWO_POW_MINUS_32).ln()).sqrt();
        let (z0, _) = box_muller(TWO_POW_MINUS_32, 0.0);
        assert!((z0 - max_f32_radius).abs() < 1e-14, "{z0}");

        let max_f64_radius = (-2.0 * (TWO_POW_MINUS_53).ln()).sqrt();
        let (z0, _) = box_muller(TWO_POW_MINUS_53, 0.5);
        assert!((z0 + max_f64_radius).abs() < 1e-14, "{z0}");
    }

    #[test]
    fn ln_unit_interval_matches_std() {
        let mut chooser = Rng::new(17);
        let mut inputs: Vec<f64> = (0..200_000).map(|_| 1.0 - chooser.uniform_f64()).collect();
        inputs.extend([1.0, 0.5, std::f64::consts::FRAC_1_SQRT_2, TWO_POW_MINUS_53]);
        inputs.extend((1..=53).map(|k| 2.0_f64.powi(-k) * std::f64::consts::SQRT_2));
        let mut max_ulps = 0.0_f64;
        for u in inputs {
            let expected = u.ln();
            let actual = ln_unit_interval(u);
            let ulp = f64::from_bits(expected.abs().to_bits() + 1) - expected.abs();
            let ulps = if expected == 0.0 {
                actual.abs()
            } else {
                (actual - expected).abs() / ulp
            };
            max_ulps = max_ulps.max(ulps);
        }
        assert!(max_ulps <= 1.0, "ln error {max_ulps} ulp");
    }

    #[test]
    fn sin_cos_of_turns_matches_std() {
        let mut chooser = Rng::new(18);
        let mut inputs: Vec<f64> = (0..200_000).map(|_| chooser.uniform_f64()).collect();
        inputs.extend((0..64).map(|k| f64::from(k) / 64.0));
        inputs.push(1.0 - TWO_POW_MINUS_53);
        let mut max_error = 0.0_f64;
        for u in inputs {
            let (expected_sin, expected_cos) = (u * std::f64::consts::TAU).sin_cos();
            let (sin, cos) = sin_cos_of_turns(u);
            max_error = max_error.max((sin - expected_sin).abs());
            max_error = max_error.max((cos - expected_cos).abs());
        }
        // std evaluates at the f64 product u * TAU, which for u near 1 differs
        // from 2 pi u by up to about 9e-16 (0.5 ulp of 2 pi from rounding TAU
        // and 0.5 ulp from the product). The bound therefore measures std's
        // argument error as much as the error of sin_cos_of_turns.
        assert!(max_error < 1e-15, "sin/cos error {max_error}");
    }

    #[test]
    fn sin_cos_of_turns_exact_points() {
        assert_eq!(sin_cos_of_turns(0.0), (0.0, 1.0));
        assert_eq!(sin_cos_of_turns(0.25), (1.0, -0.0));
        assert_eq!(sin_cos_of_turns(0.5), (-0.0, -1.0));
        assert_eq!(sin_cos_of_turns(0.75), (-1.0, 0.0));
        let (sin, cos) = sin_cos_of_turns(0.125);
        let half_sqrt_2 = std::f64::consts::FRAC_1_SQRT_2;
        assert!((sin - half_sqrt_2).abs() <= 2.0 * f64::EPSILON, "{sin}");
        assert!((cos - half_sqrt_2).abs() <= 2.0 * f64::EPSILON, "{cos}");
    }

    fn moments(values: &[f64]) -> (f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let fourth = values.iter().map(|v| (v - mean).powi(4)).sum::<f64>() / n;
        (mean, variance, fourth / (variance * variance))
    }

    const SAMPLE_COUNT: usize = 1_000_000;

    #[test]
    fn normal_f32_moments() {
        let mut values = vec![0.0_f32; SAMPLE_COUNT];
        Rng::new(1).fill_normal_f32(&mut values);
        let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let (mean, variance, kurtosis) = moments(&values);
        // Standard errors for n = 1e6 are 0.001 (mean), 0.0014 (variance)
        // and 0.005 (kurtosis); the bounds are 5 of them.
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.007, "variance {variance}");
        assert!((kurtosis - 3.0).abs() < 0.025, "kurtosis {kurtosis}");
    }

    #[test]
    fn normal_f64_moments() {
        let mut values = vec![0.0_f64; SAMPLE_COUNT];
        Rng::new(2).fill_normal_f64(&mut values);
        let (mean, variance, kurtosis) = moments(&values);
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.007, "variance {variance}");
        assert!((kurtosis - 3.0).abs() < 0.025, "kurtosis {kurtosis}");
    }

    #[test]
    fn normal_pairs_are_uncorrelated() {
        let mut values = vec![0.0_f64; SAMPLE_COUNT];
        Rng::new(4).fill_normal_f64(&mut values);
        let products: f64 = values.chunks(2).map(|pair| pair[0] * pair[1]).sum();
        let correlation = products / (SAMPLE_COUNT / 2) as f64;
        // Standard error is 1 / sqrt(5e5) = 0.0014.
        assert!(correlation.abs() < 0.007, "correlation {correlation}");
    }

    fn check_uniform(values: &[f64]) {
        assert!(
            values.iter().all(|v| (0.0..1.0).contains(v)),
            "value outside [0, 1)"
        );
        let (mean, variance, _) = moments(values);
        // Standard errors for n = 1e6 are 2.9e-4 (mean) and 7.5e-5 (variance).
        assert!((mean - 0.5).abs() < 0.0015, "mean {mean}");
        assert!(
            (variance - 1.0 / 12.0).abs() < 0.0004,
            "variance {variance}"
        );

        const BINS: usize = 64;
        let mut counts = [0_usize; BINS];
        for v in values {
            counts[(v * BINS as f64) as usize] += 1;
        }
        let expected = values.len() as f64 / BINS as f64;
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 63 degrees of freedom: mean 63, standard deviation 11.2.
        assert!(chi_square < 120.0, "chi-square {chi_square}");
    }

    #[test]
    fn uniform_f32_distribution() {
        let mut values = vec![0.0_f32; SAMPLE_COUNT];
        Rng::new(5).fill_uniform_f32(&mut values);
        let values: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        check_uniform(&values);
    }

    #[test]
    fn uniform_f64_distribution() {
        let mut values = vec![0.0_f64; SAMPLE_COUNT];
        Rng::new(6).fill_uniform_f64(&mut values);
        check_uniform(&values);
    }

    #[test]
    fn scalar_draws_match_fills() {
        let mut scalar = Rng::new(10);
        let mut filled = Rng::new(10);
        let mut single = [0.0_f64];

        let value = scalar.uniform_f64();
        filled.fill_uniform_f64(&mut single);
        assert_eq!(value.to_bits(), single[0].to_bits());

        let value = scalar.normal_f64();
        filled.fill_normal_f64(&mut single);
        assert_eq!(value.to_bits(), single[0].to_bits());
        assert_eq!(scalar.offset(), filled.offset());
    }
}
