//! PNG line charts of training losses, with text drawn in a built-in 5x7 bitmap font that
//! has two extra rows for descenders.
//!
//! [`plot_losses`] draws one polyline per series against the iteration index on a
//! [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] white canvas, with a title, grid, tick labels, an
//! "iteration" axis label and a legend. The y range covers every finite value of every
//! series. NaN and infinite values are skipped and split a line into separate pieces.

use std::path::Path;

use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::image_io::{write_atomic, ImageIoError};

/// Width in pixels of a chart from [`plot_losses`].
pub const PLOT_WIDTH: usize = 640;
/// Height in pixels of a chart from [`plot_losses`].
pub const PLOT_HEIGHT: usize = 400;

/// Width of a glyph cell in font pixels.
pub const GLYPH_WIDTH: usize = 5;
/// Height of a glyph cell in font pixels. Rows 0 to 6 lie above the baseline (capitals and
/// digits fill all seven), and rows 7 and 8 hold descenders.
pub const GLYPH_HEIGHT: usize = 9;
/// Rows of a glyph cell above the baseline.
pub const GLYPH_ASCENT: usize = 7;
/// Horizontal distance in font pixels from one character to the next.
pub const GLYPH_ADVANCE: usize = 6;

/// RGB colour with 8 bits per channel.
pub type Color = [u8; 3];

const WHITE: Color = [255, 255, 255];
const TEXT: Color = [25, 25, 25];
const FRAME: Color = [70, 70, 70];
const GRID: Color = [228, 228, 228];
const MUTED_TEXT: Color = [120, 120, 120];
const LEGEND_BORDER: Color = [170, 170, 170];

/// Line colours, assigned to series in order and reused after the last one.
const SERIES_COLORS: [Color; 8] = [
    [35, 100, 200],
    [230, 120, 20],
    [40, 150, 60],
    [200, 40, 40],
    [130, 70, 180],
    [20, 150, 150],
    [140, 90, 50],
    [200, 60, 150],
];

/// Glyph bitmaps: rows from the top, separated by spaces, with `#` for an ink pixel. A glyph
/// lists 7 rows, or 9 when it has a descender.
const FONT: &[(char, &str)] = &[
    (' ', "..... ..... ..... ..... ..... ..... ....."),
    ('0', ".###. #...# #..## #.#.# ##..# #...# .###."),
    ('1', "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('2', ".###. #...# ....# ...#. ..#.. .#... #####"),
    ('3', ".###. #...# ....# ..##. ....# #...# .###."),
    ('4', "...#. ..##. .#.#. #..#. ##### ...#. ...#."),
    ('5', "##### #.... ####. ....# ....# #...# .###."),
    ('6', "..##. .#... #.... ####. #...# #...# .###."),
    ('7', "##### ....# ...#. ..#.. .#... .#... .#..."),
    ('8', ".###. #...# #...# .###. #...# #...# .###."),
    ('9', ".###. #...# #...# .#### ....# ...#. .##.."),
    ('A', ".###. #...# #...# ##### #...# #...# #...#"),
    ('B', "####. #...# #...# ####. #...# #...# ####."),
    ('C', ".###. #...# #.... #.... #.... #...# .###."),
    ('D', "###.. #..#. #...# #...# #...# #..#. ###.."),
    ('E', "##### #.... #.... ####. #.... #.... #####"),
    ('F', "##### #.... #.... ####. #.... #.... #...."),
    ('G', ".###. #...# #.... #.### #...# #...# .####"),
    ('H', "#...# #...# #...# ##### #...# #...# #...#"),
    ('I', ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('J', "..### ...#. ...#. ...#. ...#. #..#. .##.."),
    ('K', "#...# #..#. #.#.. ##... #.#.. #..#. #...#"),
    ('L', "#.... #.... #.... #.... #.... #.... #####"),
    ('M', "#...# ##.## #.#.# #.#.# #...# #...# #...#"),
    ('N', "#...# #...# ##..# #.#.# #..## #...# #...#"),
    ('O', ".###. #...# #...# #...# #...# #...# .###."),
    ('P', "####. #...# #...# ####. #.... #.... #...."),
    ('Q', ".###. #...# #...# #...# #.#.# #..#. .##.#"),
    ('R', "####. #...# #...# ####. #.#.. #..#. #...#"),
    ('S', ".#### #.... #.... .###. ....# ....# ####."),
    ('T', "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#.."),
    ('U', "#...# #...# #...# #...# #...# #...# .###."),
    ('V', "#...# #...# #...# #...# #...# .#.#. ..#.."),
    ('W', "#...# #...# #...# #.#.# #.#.# #.#.# .#.#."),
    ('X', "#...# #...# .#.#. ..#.. .#.#. #...# #...#"),
    ('Y', "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#.."),
    ('Z', "##### ....# ...#. ..#.. .#... #.... #####"),
    ('a', "..... ..... .###. ....# .#### #...# .####"),
    ('b', "#.... #.... ####. #...# #...# #...# ####."),
    ('c', "..... ..... .###. #.... #.... #...# .###."),
    ('d', "....# ....# .#### #...# #...# #...# .####"),
    ('e', "..... ..... .###. #...# ##### #.... .###."),
    ('f', "..##. .#..# .#... ###.. .#... .#... .#..."),
    ('g', "..... ..... .#### #...# #...# #...# .#### ....# .###."),
    ('h', "#.... #.... #.##. ##..# #...# #...# #...#"),
    ('i', "..#.. ..... .##.. ..#.. ..#.. ..#.. .###."),
    ('j', "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##.."),
    ('k', "#.... #.... #..#. #.#.. ##... #.#.. #..#."),
    ('l', ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###."),
    ('m', "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#"),
    ('n', "..... ..... #.##. ##..# #...# #...# #...#"),
    ('o', "..... ..... .###. #...# #...# #...# .###."),
    ('p', "..... ..... ####. #...# #...# #...# ####. #.... #...."),
    ('q', "..... ..... .#### #...# #...# #...# .#### ....# ....#"),
    ('r', "..... ..... #.##. ##..# #.... #.... #...."),
    ('s', "..... ..... .#### #.... .###. ....# ####."),
    ('t', ".#... .#... ###.. .#... .#... .#..# ..##."),
    ('u', "..... ..... #...# #...# #...# #..## .##.#"),
    ('v', "..... ..... #...# #...# #...# .#.#. ..#.."),
    ('w', "..... ..... #...# #...# #.#.# #.#.# .#.#."),
    ('x', "..... ..... #...# .#.#. ..#.. .#.#. #...#"),
    ('y', "..... ..... #...# #...# #...# #...# .#### ....# .###."),
    ('z', "..... ..... ##### ...#. ..#.. .#... #####"),
    ('.', "..... ..... ..... ..... ..... .##.. .##.."),
    (',', "..... ..... ..... ..... ..... .##.. .##.. ..#.. .#..."),
    ('-', "..... ..... ..... .###. ..... ..... ....."),
    ('_', "..... ..... ..... ..... ..... ..... ..... #####"),
    (':', "..... .##.. .##.. ..... .##.. .##.. ....."),
    ('(', "...#. ..#.. .#... .#... .#... ..#.. ...#."),
    (')', ".#... ..#.. ...#. ...#. ...#. ..#.. .#..."),
    ('[', ".###. .#... .#... .#... .#... .#... .###."),
    (']', ".###. ...#. ...#. ...#. ...#. ...#. .###."),
    ('=', "..... ..... ##### ..... ##### ..... ....."),
    ('+', "..... ..#.. ..#.. ##### ..#.. ..#.. ....."),
    ('*', "..... ..#.. #.#.# .###. #.#.# ..#.. ....."),
    ('/', "....# ....# ...#. ..#.. .#... #.... #...."),
    ('%', "##..# ##..# ...#. ..#.. .#... #..## #..##"),
    ('<', "...#. ..#.. .#... #.... .#... ..#.. ...#."),
    ('>', ".#... ..#.. ...#. ....# ...#. ..#.. .#..."),
    ('!', "..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#.."),
    ('?', ".###. #...# ....# ...#. ..#.. ..... ..#.."),
    ('\'', "..#.. ..#.. .#... ..... ..... ..... ....."),
];

/// Character drawn in place of a character missing from the font.
const REPLACEMENT_CHAR: char = '?';

/// Returns the characters that the built-in font can draw.
pub fn font_chars() -> impl Iterator<Item = char> {
    FONT.iter().map(|&(ch, _)| ch)
}

/// Returns the bitmap of `ch`, one byte per row from the top, or `None` if the font lacks it.
/// Bit 4 of a row is the leftmost column and bit 0 the rightmost.
pub fn glyph_rows(ch: char) -> Option<[u8; GLYPH_HEIGHT]> {
    let (_, pattern) = FONT.iter().find(|&&(entry, _)| entry == ch)?;
    let mut rows = [0u8; GLYPH_HEIGHT];
    for (row, text) in rows.iter_mut().zip(pattern.split(' ')) {
        debug_assert_eq!(text.len(), GLYPH_WIDTH, "glyph {ch:?} row {text:?}");
        for (column, cell) in text.bytes().enumerate() {
            if cell == b'#' {
                *row |= 1 << (GLYPH_WIDTH - 1 - column);
            }
        }
    }
    Some(rows)
}

/// Returns the width in pixels of `text` drawn at `scale` (font pixels per side of a screen
/// square). The gap after the last character is not counted.
pub fn text_width(text: &str, scale: usize) -> usize {
    let count = text.chars().count();
    if count == 0 {
        return 0;
    }
    ((count - 1) * GLYPH_ADVANCE + GLYPH_WIDTH) * scale
}

/// RGB8 raster, row-major with 3 bytes per pixel. Drawing outside it is clipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Canvas {
    /// Creates a canvas with every pixel set to `background`.
    pub fn new(width: usize, height: usize, background: Color) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&background);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// Interleaved RGB bytes, row-major.
    pub fn rgb_bytes(&self) -> &[u8] {
        &self.pixels
    }

    /// Returns the colour at (x, y).
    ///
    /// # Panics
    ///
    /// If (x, y) lies outside the canvas.
    pub fn pixel(&self, x: usize, y: usize) -> Color {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) is outside the {}x{} canvas",
            self.width,
            self.height
        );
        let offset = (y * self.width + x) * 3;
        [
            self.pixels[offset],
            self.pixels[offset + 1],
            self.pixels[offset + 2],
        ]
    }

    fn offset(&self, x: i64, y: i64) -> Option<usize> {
        let x = usize::try_from(x).ok().filter(|&x| x < self.width)?;
        let y = usize::try_from(y).ok().filter(|&y| y < self.height)?;
        Some((y * self.width + x) * 3)
    }

    /// Sets the pixel at (x, y), if it lies on the canvas.
    pub fn set_pixel(&mut self, x: i64, y: i64, color: Color) {
        if let Some(offset) = self.offset(x, y) {
            self.pixels[offset..offset + 3].copy_from_slice(&color);
        }
    }

    /// Mixes `color` into the pixel at (x, y) with opacity `alpha` in [0, 1].
    pub fn blend_pixel(&mut self, x: i64, y: i64, color: Color, alpha: f64) {
        let alpha = alpha.clamp(0.0, 1.0);
        if let Some(offset) = self.offset(x, y) {
            for (channel, &target) in self.pixels[offset..offset + 3].iter_mut().zip(&color) {
                let mixed = f64::from(*channel) * (1.0 - alpha) + f64::from(target) * alpha;
                *channel = mixed.round() as u8;
            }
        }
    }

    /// Fills the rectangle with top-left corner (x, y) and the given size.
    pub fn fill_rect(&mut self, x: i64, y: i64, width: usize, height: usize, color: Color) {
        for dy in 0..height as i64 {
            for dx in 0..width as i64 {
                self.set_pixel(x + dx, y + dy, color);
            }
        }
    }

    /// Draws the one-pixel outline of the rectangle with top-left corner (x, y).
    pub fn stroke_rect(&mut self, x: i64, y: i64, width: usize, height: usize, color: Color) {
        if width == 0 || height == 0 {
            return;
        }
        self.fill_rect(x, y, width, 1, color);
        self.fill_rect(x, y + height as i64 - 1, width, 1, color);
        self.fill_rect(x, y, 1, height, color);
        self.fill_rect(x + width as i64 - 1, y, 1, height, color);
    }

    /// Draws `text` with the top-left corner of its first glyph cell at (x, y), each font
    /// pixel as a `scale` x `scale` square. Characters that the font lacks are drawn as `?`,
    /// and the text does not wrap.
    pub fn draw_text(&mut self, x: i64, y: i64, text: &str, scale: usize, color: Color) {
        let step = (GLYPH_ADVANCE * scale) as i64;
        for (index, ch) in text.chars().enumerate() {
            let rows = glyph_rows(ch)
                .or_else(|| glyph_rows(REPLACEMENT_CHAR))
                .expect("the font contains the replacement character");
            let cell_x = x + index as i64 * step;
            for (row, bits) in rows.iter().enumerate() {
                for column in 0..GLYPH_WIDTH {
                    if bits & (1 << (GLYPH_WIDTH - 1 - column)) != 0 {
                        let px = cell_x + (column * scale) as i64;
                        let py = y + (row * scale) as i64;
                        self.fill_rect(px, py, scale, scale, color);
                    }
                }
            }
        }
    }

    /// Encodes the canvas as RGB8 PNG bytes. `destination` only names the file in errors.
    pub fn encode_png(&self, destination: &Path) -> Result<Vec<u8>, ImageIoError> {
        let size_error = || ImageIoError::InvalidPngSize {
            path: destination.to_path_buf(),
            height: self.height,
            width: self.width,
        };
        let width = u32::try_from(self.width).map_err(|_| size_error())?;
        let height = u32::try_from(self.height).map_err(|_| size_error())?;
        if width == 0 || height == 0 {
            return Err(size_error());
        }
        let mut bytes = Vec::new();
        PngEncoder::new(&mut bytes)
            .write_image(&self.pixels, width, height, ExtendedColorType::Rgb8)
            .map_err(|source| ImageIoError::Encode {
                path: destination.to_path_buf(),
                source,
            })?;
        Ok(bytes)
    }
}

/// Axis range rounded outwards to whole multiples of a tick step of 1, 2 or 5 times a power
/// of ten.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Lowest value on the axis: the first tick, or the low end of the covered range in the
    /// rare case that rounding leaves the first tick above it.
    pub min: f64,
    /// Highest value on the axis: the last tick, or the high end of the covered range in the
    /// rare case that rounding leaves the last tick below it.
    pub max: f64,
    /// Distance between ticks.
    pub step: f64,
    /// Power of ten of `step`, which sets the decimals of the labels.
    step_exponent: i32,
    tick_values: Vec<f64>,
}

impl Axis {
    /// Builds an axis that covers the finite range `[low, high]` with about `target_ticks`
    /// steps. A range that is empty, or narrower than 1e-9 of its magnitude, is widened by
    /// 10% of its centre on each side (by 1 around 0), so a constant series gets an axis.
    ///
    /// # Panics
    ///
    /// If `low` or `high` is not finite or `low > high`.
    pub fn covering(low: f64, high: f64, target_ticks: usize) -> Self {
        Self::build(low, high, target_ticks, false)
    }

    /// Like [`Axis::covering`] but with a whole-number step of at least 1, for counts such as
    /// iterations.
    pub fn covering_integers(low: f64, high: f64, target_ticks: usize) -> Self {
        Self::build(low, high, target_ticks, true)
    }

    fn build(low: f64, high: f64, target_ticks: usize, integer_step: bool) -> Self {
        assert!(
            low.is_finite() && high.is_finite() && low <= high,
            "axis range [{low}, {high}] must be finite and ordered"
        );
        let (low, high) = widen_narrow_range(low, high);
        // Halving before subtracting keeps the span finite for values near f64::MAX.
        let half_span = high / 2.0 - low / 2.0;
        let raw_step = half_span / (target_ticks.max(1) as f64 / 2.0);
        let Some((mut mantissa, mut exponent)) = nice_step(raw_step) else {
            return Self::two_ticks(low, high);
        };
        if integer_step && exponent < 0 {
            mantissa = 1.0;
            exponent = 0;
        }
        if mantissa == 10.0 {
            mantissa = 1.0;
            exponent += 1;
        }
        // Parsing the decimal form keeps subnormal steps exact, where `powi` loses them.
        let step: f64 = format!("{mantissa}e{exponent}")
            .parse()
            .expect("a formatted float parses");
        if !(step.is_finite() && step > 0.0) {
            return Self::two_ticks(low, high);
        }

        // The tolerance keeps rounding noise in the division, such as 1.1 / 0.05 =
        // 22.000000000000004, from adding a whole step.
        let first = (low / step + 1e-9).floor();
        let mut last = (high / step - 1e-9).ceil();
        if last <= first {
            last = first + 1.0;
        }
        // Each tick is a whole multiple of the step, so the tick at 0 is exactly 0.
        let tick_values: Vec<f64> = (0..=(last - first) as usize)
            .map(|index| (first + index as f64) * step)
            .filter(|value| value.is_finite())
            .collect();
        // The range still covers [low, high] where the tolerance or the rounding of subnormal
        // products leaves an end tick just inside it.
        Self {
            min: (first * step).clamp(-f64::MAX, f64::MAX).min(low),
            max: (last * step).clamp(-f64::MAX, f64::MAX).max(high),
            step,
            step_exponent: exponent,
            tick_values,
        }
    }

    /// Builds an axis with ticks only at its ends, for ranges too close to the limits of f64
    /// for a decimal step.
    fn two_ticks(low: f64, high: f64) -> Self {
        let (min, max) = if low < high {
            (low, high)
        } else {
            (low - 1.0, high + 1.0)
        };
        Self {
            min,
            max,
            step: max - min,
            step_exponent: (max - min).log10().floor() as i32,
            tick_values: vec![min, max],
        }
    }

    /// Returns the tick values from `min` to `max`, in increasing order.
    pub fn ticks(&self) -> &[f64] {
        &self.tick_values
    }

    /// Formats a tick value with as many decimals as the step needs. On axes that reach a
    /// magnitude of 1e6, or whose step is below 1e-4, labels use exponent notation such as
    /// `2.5e-5`.
    pub fn label(&self, value: f64) -> String {
        if value == 0.0 {
            return "0".to_string();
        }
        let magnitude = self.min.abs().max(self.max.abs());
        if magnitude >= 1e6 || self.step_exponent < -4 {
            let leading_exponent = magnitude.log10().floor() as i32;
            let precision = (leading_exponent - self.step_exponent).clamp(0, 16) as usize;
            return format!("{value:.precision$e}");
        }
        let decimals = (-self.step_exponent).max(0) as usize;
        format!("{value:.decimals$}")
    }

    /// Maps `value` to a fraction of the axis: 0 at `min`, 1 at `max`.
    pub fn fraction(&self, value: f64) -> f64 {
        (value / 2.0 - self.min / 2.0) / (self.max / 2.0 - self.min / 2.0)
    }
}

fn widen_narrow_range(low: f64, high: f64) -> (f64, f64) {
    let magnitude = low.abs().max(high.abs());
    if high - low > 1e-9 * magnitude {
        return (low, high);
    }
    let center = low / 2.0 + high / 2.0;
    let pad = if center == 0.0 {
        1.0
    } else {
        center.abs() * 0.1
    };
    ((center - pad).max(-f64::MAX), (center + pad).min(f64::MAX))
}

/// Splits a step into the nearest (by ratio) of 1, 2, 5 or 10 times 10^exponent, or returns
/// `None` unless the step is positive and finite.
fn nice_step(raw: f64) -> Option<(f64, i32)> {
    if !(raw.is_finite() && raw > 0.0) {
        return None;
    }
    let log = raw.log10();
    let exponent = log.floor() as i32;
    // 10^(log - exponent) stays accurate for subnormal steps, where 10^exponent underflows.
    let normalized = 10f64.powf(log - f64::from(exponent));
    // The thresholds are the geometric means of neighbouring mantissas.
    let mantissa = if normalized < 2f64.sqrt() {
        1.0
    } else if normalized < 10f64.sqrt() {
        2.0
    } else if normalized < 50f64.sqrt() {
        5.0
    } else {
        10.0
    };
    Some((mantissa, exponent))
}

/// Rectangle of the plotting area in pixels, frame included.
#[derive(Debug, Clone, Copy)]
struct PlotArea {
    left: usize,
    top: usize,
    right: usize,
    bottom: usize,
}

impl PlotArea {
    fn pixel_x(&self, fraction: f64) -> f64 {
        self.left as f64 + 0.5 + fraction * (self.right - self.left) as f64
    }

    fn pixel_y(&self, fraction: f64) -> f64 {
        self.bottom as f64 + 0.5 - fraction * (self.bottom - self.top) as f64
    }

    /// Returns the rectangle grown by `margin` pixels on each side, kept on the canvas.
    fn expanded(&self, margin: usize) -> Self {
        Self {
            left: self.left.saturating_sub(margin),
            top: self.top.saturating_sub(margin),
            right: (self.right + margin).min(PLOT_WIDTH - 1),
            bottom: (self.bottom + margin).min(PLOT_HEIGHT - 1),
        }
    }

    fn width(&self) -> usize {
        self.right - self.left + 1
    }

    fn height(&self) -> usize {
        self.bottom - self.top + 1
    }
}

const TITLE_SCALE: usize = 2;
const TITLE_TOP: usize = 12;
const PLOT_TOP: usize = 44;
const PLOT_RIGHT_MARGIN: usize = 24;
const PLOT_BOTTOM_MARGIN: usize = 50;
const TICK_LENGTH: usize = 4;
const Y_TICK_TARGET: usize = 6;
const X_TICK_TARGET: usize = 6;
/// Fraction of the value range added below and above it before the y axis is rounded to ticks.
const Y_MARGIN: f64 = 0.04;
/// Half the width of a series line in pixels.
const LINE_HALF_WIDTH: f64 = 1.0;
/// Radius in pixels of the dot that marks a finite point with no finite neighbour.
const DOT_RADIUS: f64 = 2.0;
/// A series with more points than this many per pixel column is reduced to the first, last,
/// lowest and highest point of each column before drawing, which leaves the drawn line almost
/// unchanged.
const POINTS_PER_COLUMN_LIMIT: usize = 4;

/// Writes a PNG line chart of `series` (name, values by iteration) to `path`, atomically (see
/// [`write_atomic`]). Empty series, series without finite values and an empty `series` slice
/// still give a chart, with the axes of the range [0, 1] when no value is finite.
pub fn plot_losses(
    path: &Path,
    title: &str,
    series: &[(&str, &[f64])],
) -> Result<(), ImageIoError> {
    let canvas = render_losses(title, series);
    let bytes = canvas.encode_png(path)?;
    write_atomic(path, &bytes)
}

/// Draws the chart of [`plot_losses`] on a [`PLOT_WIDTH`] x [`PLOT_HEIGHT`] canvas.
pub fn render_losses(title: &str, series: &[(&str, &[f64])]) -> Canvas {
    let mut canvas = Canvas::new(PLOT_WIDTH, PLOT_HEIGHT, WHITE);

    let value_range = finite_range(series);
    let y_axis = match value_range {
        Some((low, high)) => {
            // A margin keeps the extreme values off the frame.
            let margin = (high / 2.0 - low / 2.0) * 2.0 * Y_MARGIN;
            let low = (low - margin).max(-f64::MAX);
            let high = (high + margin).min(f64::MAX);
            Axis::covering(low, high, Y_TICK_TARGET)
        }
        None => Axis::covering(0.0, 1.0, Y_TICK_TARGET),
    };
    let longest = series
        .iter()
        .map(|(_, values)| values.len())
        .max()
        .unwrap_or(0);
    let last_index = longest.saturating_sub(1).max(1);
    let x_axis = Axis::covering_integers(0.0, last_index as f64, X_TICK_TARGET);

    let y_labels: Vec<(f64, String)> = y_axis
        .ticks()
        .iter()
        .map(|&value| (value, y_axis.label(value)))
        .collect();
    let widest_label = y_labels
        .iter()
        .map(|(_, label)| text_width(label, 1))
        .max()
        .unwrap_or(0);
    let area = PlotArea {
        left: (12 + widest_label + 8).min(PLOT_WIDTH / 2),
        top: PLOT_TOP,
        right: PLOT_WIDTH - PLOT_RIGHT_MARGIN,
        bottom: PLOT_HEIGHT - PLOT_BOTTOM_MARGIN,
    };

    draw_title(&mut canvas, title);
    draw_y_ticks(&mut canvas, &area, &y_axis, &y_labels);
    draw_x_ticks(&mut canvas, &area, &x_axis);
    canvas.stroke_rect(
        area.left as i64,
        area.top as i64,
        area.width(),
        area.height(),
        FRAME,
    );

    for (index, (_, values)) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        draw_series(&mut canvas, &area, &x_axis, &y_axis, values, color);
    }
    if value_range.is_none() {
        let message = "no finite values";
        let x = (area.left + area.right) / 2 - text_width(message, 1) / 2;
        let y = (area.top + area.bottom) / 2 - GLYPH_ASCENT / 2;
        canvas.draw_text(x as i64, y as i64, message, 1, MUTED_TEXT);
    }
    draw_legend(&mut canvas, &area, series);
    canvas
}

/// Returns the lowest and highest finite value over all series, or `None` if there is none.
fn finite_range(series: &[(&str, &[f64])]) -> Option<(f64, f64)> {
    series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .filter(|value| value.is_finite())
        .fold(None, |range, value| match range {
            None => Some((value, value)),
            Some((low, high)) => Some((value.min(low), value.max(high))),
        })
}

fn draw_title(canvas: &mut Canvas, title: &str) {
    let width = text_width(title, TITLE_SCALE);
    let x = PLOT_WIDTH.saturating_sub(width) / 2;
    canvas.draw_text(x.max(8) as i64, TITLE_TOP as i64, title, TITLE_SCALE, TEXT);
}

fn draw_y_ticks(canvas: &mut Canvas, area: &PlotArea, axis: &Axis, labels: &[(f64, String)]) {
    for (value, label) in labels {
        let y = area.pixel_y(axis.fraction(*value)).floor() as i64;
        canvas.fill_rect(area.left as i64 + 1, y, area.width() - 2, 1, GRID);
        canvas.fill_rect((area.left - TICK_LENGTH) as i64, y, TICK_LENGTH, 1, FRAME);
        let x = area.left as i64 - TICK_LENGTH as i64 - 4 - text_width(label, 1) as i64;
        canvas.draw_text(x, y - (GLYPH_ASCENT / 2) as i64, label, 1, TEXT);
    }
}

fn draw_x_ticks(canvas: &mut Canvas, area: &PlotArea, axis: &Axis) {
    let label_top = (area.bottom + TICK_LENGTH + 5) as i64;
    let mut previous_label_end = i64::MIN;
    for &value in axis.ticks() {
        let x = area.pixel_x(axis.fraction(value)).floor() as i64;
        canvas.fill_rect(x, area.top as i64 + 1, 1, area.height() - 2, GRID);
        canvas.fill_rect(x, area.bottom as i64 + 1, 1, TICK_LENGTH, FRAME);
        let label = axis.label(value);
        let width = text_width(&label, 1) as i64;
        let label_x = x - width / 2;
        // Labels of long iteration counts can collide, so each one that would overlap its
        // left neighbour is left out.
        if label_x > previous_label_end + 6 {
            canvas.draw_text(label_x, label_top, &label, 1, TEXT);
            previous_label_end = label_x + width;
        }
    }
    let name = "iteration";
    let name_x = (area.left + area.right) / 2 - text_width(name, 1) / 2;
    let name_y = label_top + GLYPH_HEIGHT as i64 + 8;
    canvas.draw_text(name_x as i64, name_y, name, 1, TEXT);
}

/// Splits `values` into runs of consecutive finite points, as (iteration, value) pairs.
/// Series with more than [`POINTS_PER_COLUMN_LIMIT`] points per pixel column are reduced per
/// column first, and a column without finite values then splits the runs.
fn finite_runs(values: &[f64], columns: usize) -> Vec<Vec<(f64, f64)>> {
    fn finish(current: &mut Vec<(f64, f64)>, runs: &mut Vec<Vec<(f64, f64)>>) {
        if !current.is_empty() {
            runs.push(std::mem::take(current));
        }
    }
    let mut runs = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();

    if values.len() <= columns * POINTS_PER_COLUMN_LIMIT {
        for (index, &value) in values.iter().enumerate() {
            if value.is_finite() {
                current.push((index as f64, value));
            } else {
                finish(&mut current, &mut runs);
            }
        }
        finish(&mut current, &mut runs);
        return runs;
    }

    for column in 0..columns {
        let start = column * values.len() / columns;
        let end = (column + 1) * values.len() / columns;
        let finite: Vec<usize> = (start..end).filter(|&i| values[i].is_finite()).collect();
        let (Some(&first), Some(&last)) = (finite.first(), finite.last()) else {
            finish(&mut current, &mut runs);
            continue;
        };
        let lowest = finite
            .iter()
            .copied()
            .min_by(|&a, &b| values[a].total_cmp(&values[b]))
            .unwrap_or(first);
        let highest = finite
            .iter()
            .copied()
            .max_by(|&a, &b| values[a].total_cmp(&values[b]))
            .unwrap_or(first);
        let mut column_points = vec![first, lowest, highest, last];
        column_points.sort_unstable();
        column_points.dedup();
        current.extend(column_points.into_iter().map(|i| (i as f64, values[i])));
    }
    finish(&mut current, &mut runs);
    runs
}

fn draw_series(
    canvas: &mut Canvas,
    area: &PlotArea,
    x_axis: &Axis,
    y_axis: &Axis,
    values: &[f64],
    color: Color,
) {
    // Lines may cover the frame by a few pixels, so that a point on the edge of the range is
    // drawn whole.
    let clip = area.expanded(DOT_RADIUS.ceil() as usize + 1);
    // Coverage per pixel of `clip`, the maximum over all segments, so that joints between
    // segments are not blended twice.
    let mut coverage = vec![0.0f32; clip.width() * clip.height()];
    let to_pixel = |(iteration, value): (f64, f64)| {
        (
            area.pixel_x(x_axis.fraction(iteration)),
            area.pixel_y(y_axis.fraction(value)),
        )
    };

    for run in finite_runs(values, area.width()) {
        let points: Vec<(f64, f64)> = run.into_iter().map(to_pixel).collect();
        if points.len() == 1 {
            stamp_segment(&mut coverage, &clip, points[0], points[0], DOT_RADIUS);
        }
        for pair in points.windows(2) {
            stamp_segment(&mut coverage, &clip, pair[0], pair[1], LINE_HALF_WIDTH);
        }
    }

    for row in 0..clip.height() {
        for column in 0..clip.width() {
            let alpha = coverage[row * clip.width() + column];
            if alpha > 0.0 {
                let x = (clip.left + column) as i64;
                let y = (clip.top + row) as i64;
                canvas.blend_pixel(x, y, color, f64::from(alpha));
            }
        }
    }
}

/// Raises `coverage` (one value per pixel of `area`) to the anti-aliased coverage of a line
/// of half width `half_width` from `start` to `end`. Coordinates are in canvas pixels with
/// pixel centres at +0.5. A zero-length segment gives a dot.
fn stamp_segment(
    coverage: &mut [f32],
    area: &PlotArea,
    start: (f64, f64),
    end: (f64, f64),
    half_width: f64,
) {
    let reach = half_width + 1.0;
    let clamp_x = |v: f64| v.clamp(area.left as f64, area.right as f64) as usize;
    let clamp_y = |v: f64| v.clamp(area.top as f64, area.bottom as f64) as usize;
    let x_begin = clamp_x((start.0.min(end.0) - reach).floor());
    let x_end = clamp_x((start.0.max(end.0) + reach).ceil());
    let y_begin = clamp_y((start.1.min(end.1) - reach).floor());
    let y_end = clamp_y((start.1.max(end.1) + reach).ceil());

    let (dx, dy) = (end.0 - start.0, end.1 - start.1);
    let length_squared = dx * dx + dy * dy;
    for y in y_begin..=y_end {
        for x in x_begin..=x_end {
            let (cx, cy) = (x as f64 + 0.5, y as f64 + 0.5);
            let t = if length_squared > 0.0 {
                (((cx - start.0) * dx + (cy - start.1) * dy) / length_squared).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let distance = (cx - start.0 - t * dx).hypot(cy - start.1 - t * dy);
            let value = (half_width + 0.5 - distance).clamp(0.0, 1.0) as f32;
            let cell = &mut coverage[(y - area.top) * area.width() + (x - area.left)];
            *cell = cell.max(value);
        }
    }
}

fn draw_legend(canvas: &mut Canvas, area: &PlotArea, series: &[(&str, &[f64])]) {
    if series.is_empty() {
        return;
    }
    const SWATCH: usize = 18;
    const PADDING: usize = 6;
    const ROW_HEIGHT: usize = 13;
    let widest_name = series
        .iter()
        .map(|(name, _)| text_width(name, 1))
        .max()
        .unwrap_or(0);
    let width = PADDING + SWATCH + PADDING + widest_name + PADDING;
    let height = PADDING + series.len() * ROW_HEIGHT + PADDING - 4;
    let left = area.right.saturating_sub(8 + width).max(area.left + 1) as i64;
    let top = (area.top + 8) as i64;

    canvas.fill_rect(left, top, width, height, WHITE);
    canvas.stroke_rect(left, top, width, height, LEGEND_BORDER);
    for (index, (name, _)) in series.iter().enumerate() {
        let color = SERIES_COLORS[index % SERIES_COLORS.len()];
        let row_top = top + (PADDING + index * ROW_HEIGHT) as i64;
        let swatch_y = row_top + (GLYPH_ASCENT / 2) as i64;
        canvas.fill_rect(left + PADDING as i64, swatch_y - 1, SWATCH, 2, color);
        let text_x = left + (PADDING + SWATCH + PADDING) as i64;
        canvas.draw_text(text_x, row_top, name, 1, TEXT);
    }
}
