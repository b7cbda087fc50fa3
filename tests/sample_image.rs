//! Tests of the built-in landscape: size, value range, determinism, rough scene layout, and
//! that the default pyramid accepts it.

use singan::singan::image_io::{load_image, save_png, AlphaBackground};
use singan::singan::pyramid::{build_real_pyramid, Pyramid, PyramidConfig};
use singan::singan::sample_image::{sample_image, sample_image_size, SAMPLE_HEIGHT, SAMPLE_WIDTH};

mod common;
use common::TestFolder;

/// Mean of channel `c` over rows `rows`.
fn channel_mean(c: usize, rows: std::ops::Range<usize>) -> f64 {
    let image = sample_image();
    let mut sum = 0.0;
    let mut count = 0usize;
    for y in rows {
        for x in 0..image.width {
            sum += f64::from(image.get(c, y, x));
            count += 1;
        }
    }
    sum / count as f64
}

#[test]
fn sample_size_matches_constants() {
    let image = sample_image();
    assert_eq!(sample_image_size(), (SAMPLE_HEIGHT, SAMPLE_WIDTH));
    assert_eq!((image.height, image.width), sample_image_size());
    assert_eq!(image.channels, 3);
    assert_eq!(image.data.len(), 3 * SAMPLE_HEIGHT * SAMPLE_WIDTH);
    assert!(
        image.width > image.height,
        "the scene should be landscape, got {}x{}",
        image.height,
        image.width
    );
}

#[test]
fn sample_values_in_unit_range() {
    let image = sample_image();
    for (index, &value) in image.data.iter().enumerate() {
        assert!(
            (-1.0..=1.0).contains(&value),
            "value {value} at index {index} is outside [-1, 1]"
        );
    }
}

#[test]
fn sample_channels_have_contrast() {
    let image = sample_image();
    for c in 0..3 {
        let plane = image.plane(c);
        let min = plane.iter().copied().fold(f32::INFINITY, f32::min);
        let max = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert!(max - min > 1.0, "channel {c} spans only [{min}, {max}]");
    }
}

#[test]
fn sample_is_deterministic() {
    let first = sample_image();
    let second = sample_image();
    assert_eq!(first, second);
}

#[test]
fn sample_sky_above_meadow() {
    let (height, _) = sample_image_size();
    let top = 0..height / 8;
    let bottom = height - height / 8..height;
    // Sky: blue exceeds green and red. Meadow: green exceeds blue.
    assert!(channel_mean(2, top.clone()) > channel_mean(0, top.clone()));
    assert!(channel_mean(2, top.clone()) > channel_mean(1, top.clone()));
    assert!(channel_mean(1, bottom.clone()) > channel_mean(2, bottom.clone()));
    assert!(channel_mean(2, top) > channel_mean(2, bottom));
}

#[test]
fn sample_accepted_by_default_pyramid() {
    let config = PyramidConfig::default();
    let pyramid = Pyramid::new(sample_image_size(), &config).expect("default pyramid");
    println!(
        "scales: {} (r = {:.4}): {:?}",
        pyramid.len(),
        pyramid.scale_factor,
        pyramid.sizes
    );
    assert!(pyramid.len() >= 5, "only {} scales", pyramid.len());
    assert_eq!(pyramid.sizes.last(), Some(&sample_image_size()));
    let (coarse_height, coarse_width) = pyramid.sizes[0];
    assert!(coarse_height.min(coarse_width) >= config.min_scale_side());
    assert!(coarse_height.min(coarse_width) >= config.min_size);
}

#[test]
fn sample_builds_real_images() {
    let image = sample_image();
    let (pyramid, reals) = build_real_pyramid(&image, &PyramidConfig::default()).unwrap();
    assert_eq!(reals.len(), pyramid.len());
    for (k, real) in reals.iter().enumerate() {
        assert_eq!((real.height, real.width), pyramid.sizes[k], "scale {k}");
        assert_eq!(real.channels, 3, "scale {k}");
    }
    assert_eq!(reals.last(), Some(&image));
}

#[test]
fn sample_png_round_trip() {
    let folder = TestFolder::new("png-round-trip");
    let path = folder.join("sample.png");
    let image = sample_image();
    save_png(&path, &image).unwrap();
    let loaded = load_image(&path, AlphaBackground::White).unwrap();

    assert_eq!((loaded.height, loaded.width), sample_image_size());
    let max_error = image
        .data
        .iter()
        .zip(&loaded.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // One 8-bit step is 2 / 255 in [-1, 1], and rounding moves a value by at most half a step.
    assert!(max_error <= 1.0 / 255.0 + 1e-6, "max error {max_error}");
}
