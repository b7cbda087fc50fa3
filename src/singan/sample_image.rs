//! Built-in training image: a small landscape drawn by code, so that demos and tests have a
//! natural-looking picture without an image file.
//!
//! The scene is a sky gradient with a sun and soft clouds, three layers of hills and two rows
//! of conifers that differ in size, shape and colour. The repeated trees give SinGAN a
//! structure to recombine. All variation comes from integer hashing of fixed seeds, with no
//! random number generator, so every run on one platform draws the same image. The image uses
//! `sin`, `exp` and `powf` from std, whose last bit may differ between platforms.

use super::imresize::Planes;

/// Height in pixels of [`sample_image`].
pub const SAMPLE_HEIGHT: usize = 96;
/// Width in pixels of [`sample_image`].
pub const SAMPLE_WIDTH: usize = 128;

/// Subsamples per pixel side. Each pixel averages `SUPERSAMPLE^2` scene evaluations, which
/// anti-aliases the hard edges of hills and trees.
const SUPERSAMPLE: usize = 4;

type Rgb = [f64; 3];

/// Returns the size of [`sample_image`] as `(height, width)`.
pub fn sample_image_size() -> (usize, usize) {
    (SAMPLE_HEIGHT, SAMPLE_WIDTH)
}

/// Draws the built-in landscape as 3-channel RGB planes with values in [-1, 1].
pub fn sample_image() -> Planes<f32> {
    let scene = Scene::new();
    let plane_len = SAMPLE_HEIGHT * SAMPLE_WIDTH;
    let mut data = vec![0.0f32; 3 * plane_len];
    let step = 1.0 / SUPERSAMPLE as f64;
    let samples = (SUPERSAMPLE * SUPERSAMPLE) as f64;

    for y in 0..SAMPLE_HEIGHT {
        for x in 0..SAMPLE_WIDTH {
            let mut sum = [0.0; 3];
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let px = x as f64 + (sx as f64 + 0.5) * step;
                    let py = y as f64 + (sy as f64 + 0.5) * step;
                    let color = scene.color(px, py);
                    for c in 0..3 {
                        sum[c] += color[c];
                    }
                }
            }
            for c in 0..3 {
                let unit = (sum[c] / samples).clamp(0.0, 1.0);
                data[c * plane_len + y * SAMPLE_WIDTH + x] = (2.0 * unit - 1.0) as f32;
            }
        }
    }
    Planes::new(3, SAMPLE_HEIGHT, SAMPLE_WIDTH, data)
        .expect("the buffer has 3 * SAMPLE_HEIGHT * SAMPLE_WIDTH values")
}

/// Hashes a lattice point and a seed to a value in [0, 1).
fn lattice_hash(ix: i64, iy: i64, seed: u32) -> f64 {
    let mut h = (ix as u32).wrapping_mul(0x8DA6_B343)
        ^ (iy as u32).wrapping_mul(0xD816_3841)
        ^ seed.wrapping_mul(0xCB1A_B31F).wrapping_add(0x9E37_79B9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x7FEB_352D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x846C_A68B);
    h ^= h >> 16;
    f64::from(h >> 8) / f64::from(1u32 << 24)
}

fn smoothstep(edge0: f64, edge1: f64, x: f64) -> f64 {
    let t = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn mix(a: Rgb, b: Rgb, t: f64) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(color: Rgb, factor: f64) -> Rgb {
    [color[0] * factor, color[1] * factor, color[2] * factor]
}

/// Value noise in [0, 1): hashed lattice values, interpolated with a smoothstep weight.
fn value_noise(x: f64, y: f64, seed: u32) -> f64 {
    let x0 = x.floor();
    let y0 = y.floor();
    let tx = smoothstep(0.0, 1.0, x - x0);
    let ty = smoothstep(0.0, 1.0, y - y0);
    let (ix, iy) = (x0 as i64, y0 as i64);
    let top = lattice_hash(ix, iy, seed)
        + (lattice_hash(ix + 1, iy, seed) - lattice_hash(ix, iy, seed)) * tx;
    let bottom = lattice_hash(ix, iy + 1, seed)
        + (lattice_hash(ix + 1, iy + 1, seed) - lattice_hash(ix, iy + 1, seed)) * tx;
    top + (bottom - top) * ty
}

/// Fractal noise in [0, 1): `octaves` layers of value noise, each at twice the frequency and
/// half the amplitude of the one before.
fn fractal_noise(x: f64, y: f64, seed: u32, octaves: u32) -> f64 {
    let mut sum = 0.0;
    let mut amplitude = 1.0;
    let mut total = 0.0;
    let mut frequency = 1.0;
    for octave in 0..octaves {
        sum += amplitude * value_noise(x * frequency, y * frequency, seed.wrapping_add(octave));
        total += amplitude;
        amplitude *= 0.5;
        frequency *= 2.0;
    }
    sum / total
}

/// Round puff of a cloud, in pixels.
struct Puff {
    x: f64,
    y: f64,
    radius: f64,
}

struct Cloud {
    puffs: Vec<Puff>,
    /// Row of the flat underside.
    base: f64,
    top: f64,
    seed: u32,
}

impl Cloud {
    fn new(center_x: f64, base: f64, width: f64, seed: u32) -> Self {
        let count = 5 + (lattice_hash(0, 0, seed) * 3.0) as usize;
        let mut puffs = Vec::with_capacity(count);
        for i in 0..count {
            let along = (i as f64 + 0.5) / count as f64 - 0.5;
            let jitter = lattice_hash(i as i64, 1, seed) - 0.5;
            // Central puffs are larger, so the cloud rises in the middle.
            let radius = width * (0.16 + 0.12 * (1.0 - 2.0 * along.abs())) + 1.5 * jitter;
            puffs.push(Puff {
                x: center_x + along * width + 2.0 * jitter,
                y: base - radius * 0.55,
                radius,
            });
        }
        let top = puffs
            .iter()
            .map(|puff| puff.y - puff.radius)
            .fold(f64::INFINITY, f64::min);
        Self {
            puffs,
            base,
            top,
            seed,
        }
    }

    /// Returns the cloud's opacity and colour at (x, y).
    fn sample(&self, x: f64, y: f64) -> (f64, Rgb) {
        let mut density = f64::NEG_INFINITY;
        for puff in &self.puffs {
            let dx = (x - puff.x) / puff.radius;
            let dy = (y - puff.y) / puff.radius;
            density = density.max(1.0 - (dx * dx + dy * dy));
        }
        if density <= -0.3 {
            return (0.0, [0.0; 3]);
        }
        let wisp = fractal_noise(x / 5.0, y / 3.0, self.seed + 11, 3) - 0.5;
        let underside = smoothstep(self.base + 1.5, self.base - 1.0, y);
        let alpha = smoothstep(-0.05, 0.35, density + 0.45 * wisp) * underside * 0.92;
        let height = ((y - self.top) / (self.base - self.top)).clamp(0.0, 1.0);
        let lit = [1.0, 0.98, 0.95];
        let shadow = [0.74, 0.76, 0.84];
        (alpha, mix(lit, shadow, smoothstep(0.35, 1.0, height)))
    }
}

/// Conifer with stacked tiers of branches, standing with its trunk foot at (x, ground).
struct Tree {
    x: f64,
    ground: f64,
    height: f64,
    half_width: f64,
    tiers: f64,
    color: Rgb,
}

impl Tree {
    fn trunk_height(&self) -> f64 {
        self.height * 0.14
    }

    /// Returns the tree's colour at (x, y), or `None` outside it.
    fn sample(&self, x: f64, y: f64, sun_x: f64) -> Option<Rgb> {
        let top = self.ground - self.height;
        if y < top || y > self.ground + 0.5 {
            return None;
        }
        let crown_bottom = self.ground - self.trunk_height();
        let dx = x - self.x;
        if y <= crown_bottom {
            let depth = (y - top) / (crown_bottom - top);
            // Each tier widens downwards, and the tier below it starts narrower again, which
            // gives the serrated outline of a spruce.
            let tier = (depth * self.tiers).fract();
            let half = self.half_width * depth.powf(0.8) * (0.6 + 0.4 * tier);
            if dx.abs() > half + 0.3 {
                return None;
            }
            let needles = value_noise(x * 1.3, y * 1.7, 91) - 0.5;
            let toward_sun = if sun_x > self.x { dx } else { -dx };
            let light = 0.85 + 0.35 * (toward_sun / (half + 0.5)) + 0.25 * needles;
            let shade = 0.85 + 0.15 * tier;
            return Some(scale(self.color, light * shade));
        }
        let trunk_half = (self.half_width * 0.12).max(0.5);
        if dx.abs() <= trunk_half {
            return Some([0.30, 0.20, 0.12]);
        }
        None
    }
}

struct Scene {
    sun: (f64, f64),
    clouds: Vec<Cloud>,
    far_trees: Vec<Tree>,
    near_trees: Vec<Tree>,
}

const HORIZON: f64 = 52.0;
const SUN_RADIUS: f64 = 6.5;

impl Scene {
    fn new() -> Self {
        let clouds = vec![
            Cloud::new(22.0, 20.0, 26.0, 3),
            Cloud::new(62.0, 13.0, 20.0, 5),
            Cloud::new(84.0, 33.0, 22.0, 7),
            Cloud::new(118.0, 18.0, 16.0, 9),
        ];
        let far_trees = Self::tree_row(5.0, 7.5, 101, |x| Self::mid_ridge(x) + 1.5, 5.5, 2.2);
        let near_trees = Self::tree_row(9.0, 15.0, 202, |x| Self::near_ridge(x) + 3.0, 15.0, 5.0);
        Self {
            sun: (101.0, 21.0),
            clouds,
            far_trees,
            near_trees,
        }
    }

    /// Places trees from left to right about `spacing` pixels apart with jittered gaps and
    /// sizes. Some slots stay empty, so that the row has clearings.
    fn tree_row(
        start: f64,
        spacing: f64,
        seed: u32,
        ground: impl Fn(f64) -> f64,
        height: f64,
        half_width: f64,
    ) -> Vec<Tree> {
        let mut trees = Vec::new();
        let mut x = start;
        let mut index = 0i64;
        while x < SAMPLE_WIDTH as f64 + half_width {
            let keep = lattice_hash(index, 0, seed);
            if keep > 0.22 {
                let size = 0.7 + 0.6 * lattice_hash(index, 1, seed);
                let slim = 0.8 + 0.4 * lattice_hash(index, 2, seed);
                let hue = lattice_hash(index, 3, seed);
                let color = mix([0.10, 0.30, 0.16], [0.20, 0.36, 0.12], hue);
                trees.push(Tree {
                    x,
                    ground: ground(x),
                    height: height * size,
                    half_width: half_width * size * slim,
                    tiers: (3.0 + 2.0 * lattice_hash(index, 4, seed)).floor(),
                    color,
                });
            }
            x += spacing * (0.6 + 0.8 * lattice_hash(index, 5, seed));
            index += 1;
        }
        trees
    }

    /// Row of the distant mountain ridge at column x. Folding the noise around its midpoint
    /// turns its smooth maxima into sharp peaks.
    fn far_ridge(x: f64) -> f64 {
        let folded = 1.0 - (2.0 * fractal_noise(x / 22.0 + 2.0, 0.5, 21, 4) - 1.0).abs();
        HORIZON - 2.0 - 16.0 * folded.powi(2) + 2.0 * (x / 30.0).sin()
    }

    /// Row of the middle hill's crest at column x.
    fn mid_ridge(x: f64) -> f64 {
        HORIZON + 6.0 + 4.0 * (x / 17.0 + 1.0).sin() - 5.0 * fractal_noise(x / 20.0, 2.5, 31, 3)
    }

    /// Row of the front meadow's edge at column x.
    fn near_ridge(x: f64) -> f64 {
        HORIZON + 19.0 + 3.5 * (x / 23.0 + 2.4).sin() - 3.0 * fractal_noise(x / 16.0, 4.5, 41, 3)
    }

    fn sky(&self, x: f64, y: f64) -> Rgb {
        let t = (y / HORIZON).clamp(0.0, 1.0);
        let zenith = [0.26, 0.48, 0.82];
        let horizon = [0.94, 0.84, 0.70];
        let mut color = mix(zenith, horizon, t.powf(1.6));

        let (sun_x, sun_y) = self.sun;
        let distance = ((x - sun_x).powi(2) + (y - sun_y).powi(2)).sqrt();
        let glow = 0.45 * (-(distance / 16.0).powi(2)).exp();
        color = mix(color, [1.0, 0.90, 0.62], glow);
        let disc = smoothstep(SUN_RADIUS + 0.8, SUN_RADIUS - 0.8, distance);
        color = mix(color, [1.0, 0.97, 0.82], disc);

        for cloud in &self.clouds {
            let (alpha, cloud_color) = cloud.sample(x, y);
            if alpha > 0.0 {
                color = mix(color, cloud_color, alpha);
            }
        }
        color
    }

    /// Fades a colour towards the horizon haze by `amount` in [0, 1], for aerial perspective.
    fn haze(color: Rgb, amount: f64) -> Rgb {
        mix(color, [0.80, 0.82, 0.86], amount)
    }

    /// Returns the colour at (x, y), testing layers from the front to the back.
    fn color(&self, x: f64, y: f64) -> Rgb {
        let sun_x = self.sun.0;
        for tree in &self.near_trees {
            if let Some(color) = tree.sample(x, y, sun_x) {
                return color;
            }
        }
        if y >= Self::near_ridge(x) {
            return Self::meadow(x, y);
        }
        for tree in &self.far_trees {
            if let Some(color) = tree.sample(x, y, sun_x) {
                return Self::haze(color, 0.25);
            }
        }
        if y >= Self::mid_ridge(x) {
            return Self::mid_hill(x, y);
        }
        if y >= Self::far_ridge(x) {
            return Self::mountain(x, y);
        }
        self.sky(x, y)
    }

    fn mountain(x: f64, y: f64) -> Rgb {
        let rock = fractal_noise(x / 5.0, y / 3.0, 51, 3);
        let ridge = Self::far_ridge(x);
        let depth = ((y - ridge) / 12.0).clamp(0.0, 1.0);
        let base = mix([0.52, 0.58, 0.72], [0.40, 0.50, 0.62], depth);
        // Slopes that fall towards the sun (to the right) are lit, the others in shade.
        let slope = (Self::far_ridge(x + 2.5) - Self::far_ridge(x - 2.5)) / 5.0;
        let light = 1.0 + 0.1 * slope.clamp(-1.5, 1.5);
        let mut color = scale(base, light * (0.88 + 0.24 * rock));
        // Snow covers the highest peaks down to a ragged line.
        if ridge < HORIZON - 15.0 && y < HORIZON - 15.0 + 3.0 * (rock - 0.5) {
            color = mix([0.95, 0.95, 0.98], [0.80, 0.84, 0.92], rock);
        }
        Self::haze(color, 0.3)
    }

    fn mid_hill(x: f64, y: f64) -> Rgb {
        let texture = fractal_noise(x / 4.0, y / 3.0, 61, 3);
        let depth = ((y - Self::mid_ridge(x)) / 14.0).clamp(0.0, 1.0);
        let base = mix([0.42, 0.60, 0.34], [0.30, 0.48, 0.26], depth);
        Self::haze(scale(base, 0.88 + 0.24 * texture), 0.15)
    }

    fn meadow(x: f64, y: f64) -> Rgb {
        // Stretched noise gives upright grass strokes, and a coarse layer gives patches.
        let blades = fractal_noise(x / 1.2, y / 4.0, 71, 3);
        let patches = fractal_noise(x / 14.0, y / 8.0, 72, 3);
        let depth = ((y - Self::near_ridge(x)) / 24.0).clamp(0.0, 1.0);
        let base = mix([0.55, 0.70, 0.28], [0.33, 0.50, 0.16], depth);
        let mut color = scale(base, 0.78 + 0.22 * blades + 0.3 * (patches - 0.5));

        // Sparse flowers: one candidate per 3x3 cell, kept when its hash is high.
        let (cell_x, cell_y) = ((x / 3.0).floor() as i64, (y / 3.0).floor() as i64);
        let chance = lattice_hash(cell_x, cell_y, 81);
        if chance > 0.93 {
            let fx = cell_x as f64 * 3.0 + 0.5 + 2.0 * lattice_hash(cell_x, cell_y, 82);
            let fy = cell_y as f64 * 3.0 + 0.5 + 2.0 * lattice_hash(cell_x, cell_y, 83);
            if (x - fx).powi(2) + (y - fy).powi(2) < 0.35 {
                let petal = if chance > 0.965 {
                    [0.98, 0.90, 0.35]
                } else {
                    [0.97, 0.97, 0.95]
                };
                color = petal;
            }
        }
        color
    }
}
