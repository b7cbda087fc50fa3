//! Tests of the loss chart writer, its tick axes and its bitmap font. Every chart is written
//! to a temporary folder that the test creates.

use std::collections::HashSet;

use singan::singan::image_io::ImageIoError;
use singan::singan::plot::{
    font_chars, glyph_rows, plot_losses, render_losses, text_width, Axis, Canvas, GLYPH_ADVANCE,
    GLYPH_HEIGHT, GLYPH_WIDTH, PLOT_HEIGHT, PLOT_WIDTH,
};

mod common;
use common::TestFolder;

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];

/// Writes a chart and decodes it again, checking that it is a PNG of the chart size.
fn write_and_decode(name: &str, title: &str, series: &[(&str, &[f64])]) -> image::RgbImage {
    let folder = TestFolder::new(name);
    let path = folder.join("losses.png");
    plot_losses(&path, title, series).unwrap();
    assert_eq!(folder.entry_names(), vec!["losses.png".to_string()]);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "file does not start with the PNG signature"
    );
    let format = image::guess_format(&bytes).unwrap();
    assert_eq!(format, image::ImageFormat::Png);
    let decoded = image::load_from_memory(&bytes).unwrap();
    assert_eq!(decoded.width() as usize, PLOT_WIDTH);
    assert_eq!(decoded.height() as usize, PLOT_HEIGHT);
    decoded.to_rgb8()
}

/// Counts pixels whose channels differ by more than 60, which excludes white, black and the
/// greys of the frame, grid and text.
fn count_coloured(image: &image::RgbImage) -> usize {
    image
        .pixels()
        .filter(|pixel| {
            let [r, g, b] = pixel.0;
            let max = r.max(g).max(b);
            let min = r.min(g).min(b);
            max - min > 60
        })
        .count()
}

fn count_dark_in_rows(canvas: &Canvas, rows: std::ops::Range<usize>) -> usize {
    let mut count = 0;
    for y in rows {
        for x in 0..canvas.width() {
            if canvas.pixel(x, y).iter().all(|&channel| channel < 100) {
                count += 1;
            }
        }
    }
    count
}

fn ramp(len: usize) -> Vec<f64> {
    (0..len)
        .map(|i| 2.0 * (-(i as f64) / 50.0).exp() - 0.5)
        .collect()
}

#[test]
fn plot_normal_series() {
    let falling = ramp(300);
    let rising: Vec<f64> = falling.iter().map(|v| -v).collect();
    let image = write_and_decode(
        "normal",
        "Scale 0 losses",
        &[("errD", &falling), ("errG", &rising)],
    );
    let coloured = count_coloured(&image);
    assert!(coloured > 1000, "only {coloured} coloured pixels");
    assert_eq!(image.get_pixel(0, 0).0, WHITE, "background is not white");
}

#[test]
fn plot_empty_series() {
    let image = write_and_decode(
        "empty-series",
        "nothing yet",
        &[("errD", &[]), ("errG", &[])],
    );
    // Only the two legend swatches are coloured: 18x2 pixels each.
    assert_eq!(count_coloured(&image), 2 * 18 * 2);
}

#[test]
fn plot_no_series() {
    let image = write_and_decode("no-series", "no series", &[]);
    assert_eq!(count_coloured(&image), 0);
}

#[test]
fn plot_constant_series() {
    let constant = vec![0.25; 40];
    let image = write_and_decode("constant", "constant", &[("rec", &constant)]);
    assert!(count_coloured(&image) > 500);

    let axis = Axis::covering(0.25, 0.25, 6);
    assert!(axis.min < 0.25, "axis {axis:?}");
    assert!(axis.max > 0.25, "axis {axis:?}");
    let zero_axis = Axis::covering(0.0, 0.0, 6);
    assert!(zero_axis.min < 0.0, "axis {zero_axis:?}");
    assert!(zero_axis.max > 0.0, "axis {zero_axis:?}");
}

#[test]
fn plot_series_with_nan_and_infinity() {
    let mut values = ramp(200);
    values[10] = f64::NAN;
    values[50] = f64::INFINITY;
    values[51] = f64::NEG_INFINITY;
    values[120] = f64::NAN;
    let image = write_and_decode("nan", "with gaps", &[("errD", &values)]);
    assert!(count_coloured(&image) > 500);

    // The infinities are skipped, so the range is that of the finite values.
    let canvas = render_losses("with gaps", &[("errD", &values)]);
    let clean: Vec<f64> = values
        .iter()
        .map(|v| if v.is_finite() { *v } else { f64::NAN })
        .collect();
    assert_eq!(canvas, render_losses("with gaps", &[("errD", &clean)]));
}

#[test]
fn plot_all_nan_series() {
    let values = [f64::NAN; 20];
    let image = write_and_decode("all-nan", "all NaN", &[("errD", &values)]);
    assert_eq!(
        count_coloured(&image),
        18 * 2,
        "only the legend swatch should be coloured"
    );
}

#[test]
fn plot_single_point() {
    let image = write_and_decode("single", "one point", &[("errD", &[3.5])]);
    let coloured = count_coloured(&image);
    assert!(
        coloured > 18 * 2,
        "the point's dot is missing: {coloured} coloured pixels"
    );
}

#[test]
fn plot_extreme_values() {
    let values = [f64::MAX, -f64::MAX, 1.0, f64::MIN_POSITIVE];
    write_and_decode("extreme", "extreme", &[("x", &values)]);
    let tiny = [1e-300, 2e-300, 3e-300];
    write_and_decode("tiny", "tiny", &[("x", &tiny)]);
}

#[test]
fn plot_long_series() {
    let values: Vec<f64> = (0..200_000).map(|i| ((i as f64) / 5000.0).sin()).collect();
    let image = write_and_decode("long", "long", &[("x", &values)]);
    assert!(count_coloured(&image) > 1000);
}

#[test]
fn plot_missing_folder_fails() {
    let folder = TestFolder::new("missing");
    let path = folder.join("absent/losses.png");
    let error = plot_losses(&path, "t", &[("x", &[1.0, 2.0])]).unwrap_err();
    assert!(matches!(error, ImageIoError::Write { .. }), "{error:?}");
    assert!(error.to_string().contains("absent"), "{error}");
}

#[test]
fn plot_title_drawn_at_top() {
    let untitled = render_losses("", &[("x", &[1.0, 2.0])]);
    let titled = render_losses("Losses", &[("x", &[1.0, 2.0])]);
    // The plot area starts below row 40, so only the title can put ink above it.
    assert_eq!(count_dark_in_rows(&untitled, 0..40), 0);
    assert!(count_dark_in_rows(&titled, 0..40) > 50);
}

#[test]
fn text_matches_glyph_bitmap() {
    let mut canvas = Canvas::new(40, 20, WHITE);
    canvas.draw_text(3, 2, "H", 1, BLACK);
    let rows = glyph_rows('H').unwrap();
    for y in 0..canvas.height() {
        for x in 0..canvas.width() {
            let inside = (3..3 + GLYPH_WIDTH).contains(&x) && (2..2 + GLYPH_HEIGHT).contains(&y);
            let ink = inside && rows[y - 2] & (1 << (GLYPH_WIDTH - 1 - (x - 3))) != 0;
            let expected = if ink { BLACK } else { WHITE };
            assert_eq!(canvas.pixel(x, y), expected, "pixel ({x}, {y})");
        }
    }
}

#[test]
fn text_scale_fills_squares() {
    let mut canvas = Canvas::new(40, 30, WHITE);
    canvas.draw_text(0, 0, "-", 3, BLACK);
    let rows = glyph_rows('-').unwrap();
    for y in 0..GLYPH_HEIGHT * 3 {
        for x in 0..GLYPH_WIDTH * 3 {
            let ink = rows[y / 3] & (1 << (GLYPH_WIDTH - 1 - x / 3)) != 0;
            let expected = if ink { BLACK } else { WHITE };
            assert_eq!(canvas.pixel(x, y), expected, "pixel ({x}, {y})");
        }
    }
}

#[test]
fn text_second_char_advances() {
    let mut pair = Canvas::new(30, 12, WHITE);
    pair.draw_text(0, 0, "1e", 1, BLACK);
    let mut single = Canvas::new(30, 12, WHITE);
    single.draw_text(GLYPH_ADVANCE as i64, 0, "e", 1, BLACK);
    single.draw_text(0, 0, "1", 1, BLACK);
    assert_eq!(pair, single);
}

#[test]
fn text_unknown_char_as_question_mark() {
    let mut unknown = Canvas::new(10, 10, WHITE);
    unknown.draw_text(0, 0, "\u{00e9}", 1, BLACK);
    let mut question = Canvas::new(10, 10, WHITE);
    question.draw_text(0, 0, "?", 1, BLACK);
    assert_eq!(unknown, question);
}

#[test]
fn text_clipped_at_canvas_edge() {
    let mut canvas = Canvas::new(8, 8, WHITE);
    canvas.draw_text(-3, -4, "W", 2, BLACK);
    canvas.draw_text(6, 6, "W", 2, BLACK);
    assert!(count_dark_in_rows(&canvas, 0..8) > 0);
}

#[test]
fn text_width_counts_advances() {
    assert_eq!(text_width("", 1), 0);
    assert_eq!(text_width("a", 1), GLYPH_WIDTH);
    assert_eq!(text_width("abc", 1), 2 * GLYPH_ADVANCE + GLYPH_WIDTH);
    assert_eq!(text_width("abc", 2), 2 * (2 * GLYPH_ADVANCE + GLYPH_WIDTH));
}

#[test]
fn font_covers_required_chars() {
    let required = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-_:()=+/ ";
    for ch in required.chars() {
        let rows = glyph_rows(ch).unwrap_or_else(|| panic!("no glyph for {ch:?}"));
        let ink: u32 = rows.iter().map(|row| row.count_ones()).sum();
        if ch == ' ' {
            assert_eq!(ink, 0, "space has ink");
        } else {
            assert!(ink > 0, "glyph {ch:?} is blank");
        }
    }
    assert_eq!(glyph_rows('\u{00e9}'), None);
}

#[test]
fn font_glyphs_distinct_and_in_cell() {
    let mut seen = HashSet::new();
    for ch in font_chars() {
        let rows = glyph_rows(ch).unwrap();
        for (row, bits) in rows.iter().enumerate() {
            assert!(
                u32::from(*bits) < 1 << GLYPH_WIDTH,
                "glyph {ch:?} row {row} is wider than {GLYPH_WIDTH}"
            );
        }
        assert!(seen.insert(rows), "glyph {ch:?} duplicates another glyph");
    }
}

#[test]
fn axis_unit_range() {
    let axis = Axis::covering(0.0, 1.0, 5);
    assert_eq!(axis.step, 0.2);
    assert_eq!(axis.min, 0.0);
    assert_eq!(axis.max, 1.0);
    let labels: Vec<String> = axis.ticks().iter().map(|&v| axis.label(v)).collect();
    assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
}

#[test]
fn axis_rounds_outwards() {
    let axis = Axis::covering(-2.3, 3.7, 6);
    assert_eq!(axis.step, 1.0);
    assert_eq!(axis.min, -3.0);
    assert_eq!(axis.max, 4.0);
    let labels: Vec<String> = axis.ticks().iter().map(|&v| axis.label(v)).collect();
    assert_eq!(labels, ["-3", "-2", "-1", "0", "1", "2", "3", "4"]);
}

#[test]
fn axis_exponent_labels() {
    let small = Axis::covering(0.0, 1e-6, 4);
    assert_eq!(small.label(5e-7), "5.0e-7");
    let large = Axis::covering(0.0, 3e6, 3);
    assert_eq!(large.label(2e6), "2e6");
}

#[test]
fn axis_integer_step() {
    let axis = Axis::covering_integers(0.0, 3.0, 8);
    assert_eq!(axis.step, 1.0);
    let ticks = axis.ticks();
    assert_eq!(ticks, [0.0, 1.0, 2.0, 3.0]);
    assert_eq!(axis.label(2.0), "2");

    let long = Axis::covering_integers(0.0, 1999.0, 6);
    assert_eq!(long.step, 500.0);
    assert_eq!(long.max, 2000.0);
}

#[test]
fn axis_narrow_range_no_extra_step() {
    let axis = Axis::covering(1.0, 1.0, 6);
    assert_eq!(axis.min, 0.9);
    assert_eq!(axis.max, 1.1);
}

#[test]
fn axis_subnormal_ranges() {
    for (low, high) in [
        (5e-324, 1e-323),
        (0.0, 5e-324),
        (1e-310, 3e-310),
        (5e-324, 5e-324),
    ] {
        let axis = Axis::covering(low, high, 6);
        assert!(axis.min <= low, "[{low:e}, {high:e}]: {axis:?}");
        assert!(axis.max >= high, "[{low:e}, {high:e}]: {axis:?}");
        assert!(axis.min < axis.max, "[{low:e}, {high:e}]: {axis:?}");
        assert!(axis.ticks().len() >= 2, "[{low:e}, {high:e}]: {axis:?}");
        for &tick in axis.ticks() {
            assert!(tick.is_finite(), "[{low:e}, {high:e}]: {axis:?}");
        }
    }
}

#[test]
fn axis_fraction_ends() {
    let axis = Axis::covering(-f64::MAX, f64::MAX, 4);
    assert!(axis.min.is_finite(), "{axis:?}");
    assert!(axis.max.is_finite(), "{axis:?}");
    assert_eq!(axis.fraction(axis.min), 0.0);
    assert_eq!(axis.fraction(axis.max), 1.0);
}
