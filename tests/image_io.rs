//! Tests of image decoding, PNG writing, grid tiling and mask preparation. Every input file is
//! created by the test itself in a temporary folder.

use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};
use singan::singan::image_io::{
    binarize_channel0, dilate_disk, dynamic_to_planes, encode_byte, encode_png, gaussian_blur,
    load_image, load_mask, normalize_min_max, prepare_mask, save_png, tile_batch, tile_grid,
    write_atomic, AlphaBackground, ImageIoError, MaskOptions, Planes, GRID_COLUMNS,
};

mod common;
use common::TestFolder;

fn unit8(v: f64) -> f32 {
    (2.0 * v / 255.0 - 1.0) as f32
}

fn unit16(v: f64) -> f32 {
    (2.0 * v / 65535.0 - 1.0) as f32
}

/// Returns the RGB values of pixel (y, x).
fn rgb_at(planes: &Planes<f32>, y: usize, x: usize) -> [f32; 3] {
    [
        planes.get(0, y, x),
        planes.get(1, y, x),
        planes.get(2, y, x),
    ]
}

fn assert_rgb(planes: &Planes<f32>, y: usize, x: usize, expected: [f32; 3], context: &str) {
    let got = rgb_at(planes, y, x);
    for c in 0..3 {
        assert!(
            (got[c] - expected[c]).abs() <= 1e-6,
            "{context}: pixel ({y}, {x}) channel {c} is {}, expected {}",
            got[c],
            expected[c]
        );
    }
}

fn save(dir: &Path, name: &str, image: &DynamicImage, format: ImageFormat) -> PathBuf {
    let path = dir.join(name);
    image.save_with_format(&path, format).unwrap();
    path
}

// Minimal PNG writer for formats the image crate cannot encode (palette, low bit depth). It
// stores the image data in uncompressed deflate blocks.

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// Builds a PNG from packed scanlines (without filter bytes) and extra chunks placed before
/// the image data.
fn build_png(
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
    scanlines: &[Vec<u8>],
    extra: &[(&[u8; 4], Vec<u8>)],
) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[bit_depth, color_type, 0, 0, 0]);
    push_chunk(&mut png, b"IHDR", &header);
    for (kind, data) in extra {
        push_chunk(&mut png, kind, data);
    }

    let mut raw = Vec::new();
    for line in scanlines {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    assert!(
        raw.len() < 65536,
        "test PNG must fit in one stored deflate block"
    );
    let mut zlib = vec![0x78, 0x01, 0x01];
    let len = raw.len() as u16;
    zlib.extend_from_slice(&len.to_le_bytes());
    zlib.extend_from_slice(&(!len).to_le_bytes());
    zlib.extend_from_slice(&raw);
    zlib.extend_from_slice(&adler32(&raw).to_be_bytes());
    push_chunk(&mut png, b"IDAT", &zlib);
    push_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn png_builder_sanity() {
    // The hand-built writer produces a PNG that the decoder accepts (8-bit RGB, 2x1).
    let png = build_png(2, 1, 8, 2, &[vec![255, 0, 0, 0, 0, 255]], &[]);
    let image = image::load_from_memory(&png).unwrap();
    assert_eq!(image.to_rgb8().as_raw(), &vec![255, 0, 0, 0, 0, 255]);
}

#[test]
fn load_grey8_png() {
    let dir = TestFolder::new("grey8");
    let values = [0u8, 51, 102, 153, 204, 255];
    let image = ImageBuffer::<Luma<u8>, _>::from_raw(3, 2, values.to_vec()).unwrap();
    let path = save(
        &dir,
        "grey8.png",
        &DynamicImage::ImageLuma8(image),
        ImageFormat::Png,
    );
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    assert_eq!((planes.channels, planes.height, planes.width), (3, 2, 3));
    for (i, &v) in values.iter().enumerate() {
        let x = unit8(f64::from(v));
        assert_rgb(&planes, i / 3, i % 3, [x, x, x], "grey8");
    }
    assert_eq!(planes.get(0, 0, 0), -1.0);
    assert_eq!(planes.get(0, 1, 2), 1.0);
}

#[test]
fn load_grey_alpha8_png() {
    let dir = TestFolder::new("greyalpha8");
    // (grey, alpha): opaque, transparent, half.
    let pixels = vec![100u8, 255, 100, 0, 100, 128];
    let image = ImageBuffer::<LumaA<u8>, _>::from_raw(3, 1, pixels).unwrap();
    let path = save(
        &dir,
        "ga8.png",
        &DynamicImage::ImageLumaA8(image),
        ImageFormat::Png,
    );

    let white = load_image(&path, AlphaBackground::White).unwrap();
    let black = load_image(&path, AlphaBackground::Black).unwrap();
    let half = 128.0 / 255.0;
    let x = unit8(100.0);
    assert_rgb(&white, 0, 0, [x, x, x], "opaque over white");
    assert_rgb(&white, 0, 1, [1.0, 1.0, 1.0], "transparent over white");
    assert_rgb(&black, 0, 1, [-1.0, -1.0, -1.0], "transparent over black");
    let over_white = unit8(half * 100.0 + (1.0 - half) * 255.0);
    let over_black = unit8(half * 100.0);
    assert_rgb(&white, 0, 2, [over_white; 3], "half over white");
    assert_rgb(&black, 0, 2, [over_black; 3], "half over black");
}

#[test]
fn load_rgb8_png() {
    let dir = TestFolder::new("rgb8");
    let pixels = vec![255u8, 0, 0, 0, 128, 0, 10, 20, 30, 0, 0, 255];
    let image = ImageBuffer::<Rgb<u8>, _>::from_raw(2, 2, pixels.clone()).unwrap();
    let path = save(
        &dir,
        "rgb8.png",
        &DynamicImage::ImageRgb8(image),
        ImageFormat::Png,
    );
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    assert_eq!((planes.channels, planes.height, planes.width), (3, 2, 2));
    for i in 0..4 {
        let expected = [0, 1, 2].map(|c| unit8(f64::from(pixels[i * 3 + c])));
        assert_rgb(&planes, i / 2, i % 2, expected, "rgb8");
    }
}

#[test]
fn load_rgba8_png() {
    let dir = TestFolder::new("rgba8");
    let pixels = vec![200u8, 100, 50, 255, 200, 100, 50, 0, 200, 100, 50, 64];
    let image = ImageBuffer::<Rgba<u8>, _>::from_raw(3, 1, pixels).unwrap();
    let path = save(
        &dir,
        "rgba8.png",
        &DynamicImage::ImageRgba8(image),
        ImageFormat::Png,
    );
    let white = load_image(&path, AlphaBackground::White).unwrap();
    let black = load_image(&path, AlphaBackground::Black).unwrap();
    let colour = [200.0, 100.0, 50.0];
    assert_rgb(&white, 0, 0, colour.map(unit8), "opaque");
    assert_rgb(&black, 0, 0, colour.map(unit8), "opaque");
    assert_rgb(&white, 0, 1, [1.0; 3], "transparent over white");
    assert_rgb(&black, 0, 1, [-1.0; 3], "transparent over black");
    let alpha = 64.0 / 255.0;
    let over_white = colour.map(|c| unit8(alpha * c + (1.0 - alpha) * 255.0));
    let over_black = colour.map(|c| unit8(alpha * c));
    assert_rgb(&white, 0, 2, over_white, "quarter over white");
    assert_rgb(&black, 0, 2, over_black, "quarter over black");
}

#[test]
fn alpha_background_default_white() {
    assert_eq!(AlphaBackground::default(), AlphaBackground::White);
}

#[test]
fn load_grey16_png() {
    let dir = TestFolder::new("grey16");
    let values = vec![0u16, 1, 32768, 65535];
    let image = ImageBuffer::<Luma<u16>, _>::from_raw(2, 2, values.clone()).unwrap();
    let path = save(
        &dir,
        "grey16.png",
        &DynamicImage::ImageLuma16(image),
        ImageFormat::Png,
    );
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    for (i, &v) in values.iter().enumerate() {
        let x = unit16(f64::from(v));
        assert_rgb(&planes, i / 2, i % 2, [x; 3], "grey16");
    }
    // 16-bit precision survives: value 1 is distinct from 0.
    assert!(planes.get(0, 0, 1) > planes.get(0, 0, 0));
}

#[test]
fn load_grey_alpha16_png() {
    let dir = TestFolder::new("greyalpha16");
    let pixels = vec![1000u16, 65535, 1000, 0, 1000, 16384];
    let image = ImageBuffer::<LumaA<u16>, _>::from_raw(3, 1, pixels).unwrap();
    let path = save(
        &dir,
        "ga16.png",
        &DynamicImage::ImageLumaA16(image),
        ImageFormat::Png,
    );
    let white = load_image(&path, AlphaBackground::White).unwrap();
    let x = unit16(1000.0);
    assert_rgb(&white, 0, 0, [x; 3], "opaque");
    assert_rgb(&white, 0, 1, [1.0; 3], "transparent over white");
    let alpha = 16384.0 / 65535.0;
    let over_white = unit16(alpha * 1000.0 + (1.0 - alpha) * 65535.0);
    assert_rgb(&white, 0, 2, [over_white; 3], "partial over white");
}

#[test]
fn load_rgb16_png() {
    let dir = TestFolder::new("rgb16");
    let pixels = vec![65535u16, 0, 12345, 300, 40000, 65535];
    let image = ImageBuffer::<Rgb<u16>, _>::from_raw(2, 1, pixels.clone()).unwrap();
    let path = save(
        &dir,
        "rgb16.png",
        &DynamicImage::ImageRgb16(image),
        ImageFormat::Png,
    );
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    for i in 0..2 {
        let expected = [0, 1, 2].map(|c| unit16(f64::from(pixels[i * 3 + c])));
        assert_rgb(&planes, 0, i, expected, "rgb16");
    }
}

#[test]
fn load_rgba16_png() {
    let dir = TestFolder::new("rgba16");
    let pixels = vec![60000u16, 30000, 100, 65535, 60000, 30000, 100, 0];
    let image = ImageBuffer::<Rgba<u16>, _>::from_raw(2, 1, pixels).unwrap();
    let path = save(
        &dir,
        "rgba16.png",
        &DynamicImage::ImageRgba16(image),
        ImageFormat::Png,
    );
    let black = load_image(&path, AlphaBackground::Black).unwrap();
    assert_rgb(
        &black,
        0,
        0,
        [60000.0, 30000.0, 100.0].map(unit16),
        "opaque",
    );
    assert_rgb(&black, 0, 1, [-1.0; 3], "transparent over black");
}

#[test]
fn load_palette8_png() {
    let dir = TestFolder::new("palette8");
    let palette = vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 40, 80, 120];
    // Entries 0 and 1 have alpha; entries 2 and 3 are opaque (tRNS shorter than the palette).
    let transparency = vec![255, 0];
    let png = build_png(
        4,
        1,
        8,
        3,
        &[vec![0, 1, 2, 3]],
        &[(b"PLTE", palette), (b"tRNS", transparency)],
    );
    let path = dir.join("palette8.png");
    std::fs::write(&path, png).unwrap();
    let white = load_image(&path, AlphaBackground::White).unwrap();
    assert_eq!((white.height, white.width), (1, 4));
    assert_rgb(&white, 0, 0, [1.0, -1.0, -1.0], "red");
    assert_rgb(
        &white,
        0,
        1,
        [1.0, 1.0, 1.0],
        "transparent green over white",
    );
    assert_rgb(&white, 0, 2, [-1.0, -1.0, 1.0], "blue");
    assert_rgb(&white, 0, 3, [40.0, 80.0, 120.0].map(unit8), "custom");
    let black = load_image(&path, AlphaBackground::Black).unwrap();
    assert_rgb(&black, 0, 1, [-1.0; 3], "transparent green over black");
}

#[test]
fn load_palette2bit_png() {
    let dir = TestFolder::new("palette2");
    let palette = vec![0, 0, 0, 255, 255, 255, 10, 200, 30, 90, 90, 90];
    // Indices 3, 2, 1, 0 packed MSB first in one byte.
    let png = build_png(4, 1, 2, 3, &[vec![0b11_10_01_00]], &[(b"PLTE", palette)]);
    let path = dir.join("palette2.png");
    std::fs::write(&path, png).unwrap();
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    assert_rgb(&planes, 0, 0, [90.0; 3].map(unit8), "index 3");
    assert_rgb(&planes, 0, 1, [10.0, 200.0, 30.0].map(unit8), "index 2");
    assert_rgb(&planes, 0, 2, [1.0; 3], "index 1");
    assert_rgb(&planes, 0, 3, [-1.0; 3], "index 0");
}

#[test]
fn load_grey1bit_png() {
    let dir = TestFolder::new("grey1");
    let png = build_png(8, 1, 1, 0, &[vec![0b1010_0000]], &[]);
    let path = dir.join("grey1.png");
    std::fs::write(&path, png).unwrap();
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    let row: Vec<f32> = (0..8).map(|x| planes.get(0, 0, x)).collect();
    assert_eq!(row, vec![1.0, -1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0]);
}

/// Builds a 32x16 RGB image with a red left 16x16 block and a blue right block.
fn red_blue() -> DynamicImage {
    let image = ImageBuffer::from_fn(32, 16, |x, _| {
        if x < 16 {
            Rgb([255u8, 0, 0])
        } else {
            Rgb([0u8, 0, 255])
        }
    });
    DynamicImage::ImageRgb8(image)
}

fn jpeg_bytes(image: &DynamicImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 100)
        .encode_image(image)
        .unwrap();
    bytes
}

/// Inserts an APP1 Exif segment holding only an orientation tag after SOI (and after a JFIF
/// APP0 segment if present).
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "JPEG starts with SOI");
    let mut insert_at = 2;
    if jpeg[2..4] == [0xFF, 0xE0] {
        let length = u16::from_be_bytes([jpeg[4], jpeg[5]]) as usize;
        insert_at = 4 + length;
    }
    // Big-endian TIFF header, IFD0 at offset 8 with one SHORT entry 0x0112, no next IFD.
    let mut tiff = b"MM\x00\x2a".to_vec();
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());

    let mut segment = vec![0xFF, 0xE1];
    let length = (2 + 6 + tiff.len()) as u16;
    segment.extend_from_slice(&length.to_be_bytes());
    segment.extend_from_slice(b"Exif\x00\x00");
    segment.extend_from_slice(&tiff);

    let mut out = jpeg[..insert_at].to_vec();
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[insert_at..]);
    out
}

const RED: [f32; 3] = [1.0, -1.0, -1.0];
const BLUE: [f32; 3] = [-1.0, -1.0, 1.0];

/// JPEG is lossy, so colours are compared to within 0.05 (about 6 levels of 255).
fn assert_colour_near(planes: &Planes<f32>, y: usize, x: usize, expected: [f32; 3], context: &str) {
    let got = rgb_at(planes, y, x);
    for c in 0..3 {
        assert!(
            (got[c] - expected[c]).abs() <= 0.05,
            "{context}: pixel ({y}, {x}) is {got:?}, expected about {expected:?}"
        );
    }
}

#[test]
fn load_rgb_jpeg() {
    let dir = TestFolder::new("jpeg");
    let path = dir.join("plain.jpg");
    std::fs::write(&path, jpeg_bytes(&red_blue())).unwrap();
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    assert_eq!((planes.channels, planes.height, planes.width), (3, 16, 32));
    assert_colour_near(&planes, 8, 4, RED, "left");
    assert_colour_near(&planes, 8, 28, BLUE, "right");
}

#[test]
fn load_grey_jpeg() {
    let dir = TestFolder::new("greyjpeg");
    let image = DynamicImage::ImageLuma8(ImageBuffer::from_pixel(16, 8, Luma([100u8])));
    let path = dir.join("grey.jpg");
    std::fs::write(&path, jpeg_bytes(&image)).unwrap();
    let planes = load_image(&path, AlphaBackground::White).unwrap();
    let x = unit8(100.0);
    assert_colour_near(&planes, 4, 8, [x; 3], "grey");
}

#[test]
fn jpeg_exif_orientation() {
    let dir = TestFolder::new("exif");
    let jpeg = jpeg_bytes(&red_blue());
    // (EXIF value, expected height x width, colour at top-left area, colour at bottom-right).
    let cases = [
        (1u16, (16, 32), RED, BLUE),
        (2, (16, 32), BLUE, RED),
        (3, (16, 32), BLUE, RED),
        (6, (32, 16), RED, BLUE),
        (8, (32, 16), BLUE, RED),
    ];
    for (orientation, size, top_left, bottom_right) in cases {
        let path = dir.join(format!("orientation{orientation}.jpg"));
        std::fs::write(&path, with_exif_orientation(&jpeg, orientation)).unwrap();
        let planes = load_image(&path, AlphaBackground::White).unwrap();
        let context = format!("orientation {orientation}");
        assert_eq!((planes.height, planes.width), size, "{context}: size");
        assert_colour_near(&planes, 4, 4, top_left, &context);
        assert_colour_near(&planes, size.0 - 5, size.1 - 5, bottom_right, &context);
    }
}

#[test]
fn dynamic_to_planes_layout() {
    // Planes are CHW: all red values first, then green, then blue.
    let image = ImageBuffer::<Rgb<u8>, _>::from_raw(2, 1, vec![255, 0, 0, 0, 255, 0]).unwrap();
    let planes = dynamic_to_planes(&DynamicImage::ImageRgb8(image), AlphaBackground::White);
    assert_eq!(planes.data, vec![1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
}

fn assert_error_names_path(error: &ImageIoError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name {}: {message}",
        path.display()
    );
}

#[test]
fn missing_file_error() {
    let dir = TestFolder::new("missing");
    let path = dir.join("absent.png");
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(matches!(error, ImageIoError::NotFound { .. }), "{error}");
    assert_error_names_path(&error, &path);
}

#[test]
fn empty_file_error() {
    let dir = TestFolder::new("empty");
    let path = dir.join("empty.png");
    std::fs::write(&path, b"").unwrap();
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(matches!(error, ImageIoError::EmptyFile { .. }), "{error}");
    assert_error_names_path(&error, &path);
}

#[test]
fn garbage_file_error() {
    let dir = TestFolder::new("garbage");
    let path = dir.join("garbage.png");
    std::fs::write(&path, b"this is not an image, only some text bytes").unwrap();
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(
        matches!(error, ImageIoError::UnsupportedFormat { .. }),
        "{error}"
    );
    assert_error_names_path(&error, &path);
}

#[test]
fn png_signature_garbage_error() {
    let dir = TestFolder::new("badpng");
    let path = dir.join("bad.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend_from_slice(&[0xAB; 64]);
    std::fs::write(&path, bytes).unwrap();
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(matches!(error, ImageIoError::Decode { .. }), "{error}");
    assert_error_names_path(&error, &path);
}

#[test]
fn truncated_png_error() {
    let dir = TestFolder::new("truncated");
    let image = ImageBuffer::from_fn(32, 32, |x, y| {
        Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (x ^ y) as u8 * 8])
    });
    let full = dir.join("full.png");
    DynamicImage::ImageRgb8(image)
        .save_with_format(&full, ImageFormat::Png)
        .unwrap();
    let bytes = std::fs::read(&full).unwrap();
    for keep in [bytes.len() / 2, bytes.len() - 13, 40] {
        let path = dir.join(format!("truncated{keep}.png"));
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let error = load_image(&path, AlphaBackground::White).unwrap_err();
        assert!(
            matches!(error, ImageIoError::Decode { .. }),
            "{keep} bytes: {error}"
        );
        assert_error_names_path(&error, &path);
    }
}

#[test]
fn oversized_png_rejected_before_decoding() {
    // The header claims 20000x20000 pixels (400 megapixels) over one short scanline, so a
    // decoder that allocated before checking the size would need gigabytes.
    let dir = TestFolder::new("oversized");
    let path = dir.join("huge.png");
    std::fs::write(&path, build_png(20_000, 20_000, 8, 0, &[vec![0; 100]], &[])).unwrap();
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(
        matches!(
            error,
            ImageIoError::TooLarge {
                width: 20_000,
                height: 20_000,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("downscale it first"), "{error}");
    assert_error_names_path(&error, &path);
}

#[test]
fn truncated_jpeg_error() {
    let dir = TestFolder::new("truncatedjpeg");
    let bytes = jpeg_bytes(&red_blue());
    let path = dir.join("truncated.jpg");
    std::fs::write(&path, &bytes[..20]).unwrap();
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(
        matches!(error, ImageIoError::TruncatedJpeg { .. }),
        "{error}"
    );
}

#[test]
fn gif_unsupported_error() {
    let dir = TestFolder::new("gif");
    let image = DynamicImage::ImageRgba8(ImageBuffer::from_pixel(4, 4, Rgba([1u8, 2, 3, 255])));
    let path = save(&dir, "image.gif", &image, ImageFormat::Gif);
    let error = load_image(&path, AlphaBackground::White).unwrap_err();
    assert!(
        matches!(&error, ImageIoError::UnsupportedFormat { format, .. } if format == "Gif"),
        "{error}"
    );
    assert!(error.to_string().contains("PNG or JPEG"), "{error}");
}

#[test]
fn directory_path_error() {
    let dir = TestFolder::new("directory");
    let error = load_image(&dir, AlphaBackground::White).unwrap_err();
    assert!(matches!(error, ImageIoError::Folder { .. }), "{error}");
    assert!(error.to_string().contains("is a folder"), "{error}");
}

#[test]
fn encode_byte_rule() {
    assert_eq!(encode_byte(-1.0), 0);
    assert_eq!(encode_byte(1.0), 255);
    assert_eq!(encode_byte(0.0), 128);
    assert_eq!(encode_byte(-5.0), 0);
    assert_eq!(encode_byte(3.0), 255);
    assert_eq!(encode_byte(f32::NAN), 0);
    assert_eq!(encode_byte(f32::INFINITY), 255);
    assert_eq!(encode_byte(f32::NEG_INFINITY), 0);
    for v in 0..=255u32 {
        let exact = unit8(f64::from(v));
        assert_eq!(u32::from(encode_byte(exact)), v, "exact value {v}");
        if v < 255 {
            let below_half = unit8(f64::from(v) + 0.45);
            let above_half = unit8(f64::from(v) + 0.55);
            assert_eq!(
                u32::from(encode_byte(below_half)),
                v,
                "{v} + 0.45 rounds down"
            );
            assert_eq!(
                u32::from(encode_byte(above_half)),
                v + 1,
                "{v} + 0.55 rounds up"
            );
        }
    }
}

fn byte_grid_planes(channels: usize, height: usize, width: usize) -> Planes<f32> {
    let data = (0..channels * height * width)
        .map(|i| unit8(((i * 97) % 256) as f64))
        .collect();
    Planes::new(channels, height, width, data).unwrap()
}

#[test]
fn save_png_round_trip() {
    let dir = TestFolder::new("roundtrip");
    let path = dir.join("out.png");
    let planes = byte_grid_planes(3, 9, 14);
    save_png(&path, &planes).unwrap();
    let loaded = load_image(&path, AlphaBackground::White).unwrap();
    assert_eq!(loaded, planes);
    assert_eq!(
        dir.entry_names(),
        vec!["out.png".to_string()],
        "no temporary file is left"
    );
}

#[test]
fn save_png_grey_round_trip() {
    let dir = TestFolder::new("greyroundtrip");
    let path = dir.join("grey.png");
    let planes = byte_grid_planes(1, 5, 7);
    save_png(&path, &planes).unwrap();
    let decoded = image::open(&path).unwrap();
    assert_eq!(decoded.color(), image::ColorType::L8);
    let loaded = load_image(&path, AlphaBackground::White).unwrap();
    for c in 0..3 {
        assert_eq!(loaded.plane(c), planes.data.as_slice(), "channel {c}");
    }
}

#[test]
fn save_png_clamps_values() {
    let dir = TestFolder::new("clamp");
    let path = dir.join("clamp.png");
    let planes = Planes::new(3, 1, 2, vec![-3.0, 4.0, 0.0, f32::NAN, 1.0, -1.0]).unwrap();
    save_png(&path, &planes).unwrap();
    let decoded = image::open(&path).unwrap().to_rgb8();
    assert_eq!(decoded.as_raw(), &vec![0, 128, 255, 255, 0, 0]);
}

#[test]
fn save_png_overwrites_atomically() {
    let dir = TestFolder::new("overwrite");
    let path = dir.join("image.png");
    std::fs::write(&path, b"old content").unwrap();
    let planes = byte_grid_planes(3, 4, 4);
    save_png(&path, &planes).unwrap();
    assert_eq!(load_image(&path, AlphaBackground::White).unwrap(), planes);
    assert_eq!(dir.entry_names(), vec!["image.png".to_string()]);
}

#[test]
fn save_png_concurrent_reader() {
    // A reader running alongside repeated writes always loads one complete PNG.
    let dir = TestFolder::new("concurrent");
    let path = dir.join("live.png");
    let first = byte_grid_planes(3, 120, 160);
    let mut second = first.clone();
    for value in &mut second.data {
        *value = -*value;
    }
    save_png(&path, &first).unwrap();
    let writer = {
        let (path, first, second) = (path.clone(), first.clone(), second.clone());
        std::thread::spawn(move || {
            for i in 0..100 {
                let planes = if i % 2 == 0 { &second } else { &first };
                save_png(&path, planes).unwrap();
            }
        })
    };
    for _ in 0..100 {
        let loaded = load_image(&path, AlphaBackground::White).unwrap();
        assert!(
            loaded == first || loaded == second,
            "reader saw a mixed or partial image"
        );
    }
    writer.join().unwrap();
    assert_eq!(dir.entry_names(), vec!["live.png".to_string()]);
}

#[test]
fn save_png_failure_leaves_no_temp() {
    let dir = TestFolder::new("failure");
    // The target is an existing folder, so the final rename fails.
    let target = dir.join("taken");
    std::fs::create_dir(&target).unwrap();
    let error = save_png(&target, &byte_grid_planes(3, 2, 2)).unwrap_err();
    assert!(matches!(error, ImageIoError::Write { .. }), "{error}");
    assert_error_names_path(&error, &target);
    assert!(target.is_dir(), "the folder is untouched");
    assert_eq!(
        dir.entry_names(),
        vec!["taken".to_string()],
        "no temporary file is left"
    );
}

#[test]
fn save_png_missing_folder_error() {
    let dir = TestFolder::new("nofolder");
    let path = dir.join("absent/out.png");
    let error = save_png(&path, &byte_grid_planes(3, 2, 2)).unwrap_err();
    assert!(matches!(error, ImageIoError::Write { .. }), "{error}");
    assert!(!path.exists());
}

#[test]
fn save_png_rejects_shapes() {
    let dir = TestFolder::new("shapes");
    let path = dir.join("bad.png");
    let two = Planes::filled(2, 3, 3, 0.0f32);
    let error = save_png(&path, &two).unwrap_err();
    assert!(
        matches!(error, ImageIoError::UnsupportedChannels { channels: 2, .. }),
        "{error}"
    );
    let empty = Planes::<f32>::new(3, 0, 4, Vec::new()).unwrap();
    let error = save_png(&path, &empty).unwrap_err();
    assert!(
        matches!(error, ImageIoError::InvalidPngSize { .. }),
        "{error}"
    );
    assert!(!path.exists());
}

#[test]
fn encode_png_matches_file() {
    let dir = TestFolder::new("encode");
    let path = dir.join("same.png");
    let planes = byte_grid_planes(3, 6, 5);
    let bytes = encode_png(&path, &planes).unwrap();
    save_png(&path, &planes).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn write_atomic_bytes() {
    let dir = TestFolder::new("atomicbytes");
    let path = dir.join("data.json");
    write_atomic(&path, b"{\"a\": 1}").unwrap();
    write_atomic(&path, b"{\"a\": 2}").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\": 2}");
    assert_eq!(dir.entry_names(), vec!["data.json".to_string()]);
}

fn constant(value: f32, channels: usize, height: usize, width: usize) -> Planes<f32> {
    Planes::filled(channels, height, width, value)
}

#[test]
fn tile_single_image() {
    let image = byte_grid_planes(3, 4, 5);
    let grid = tile_grid(std::slice::from_ref(&image)).unwrap();
    assert_eq!(grid, image);
}

#[test]
fn tile_three_one_row() {
    let images: Vec<_> = (0..3).map(|i| constant(i as f32 * 0.25, 3, 2, 3)).collect();
    let grid = tile_grid(&images).unwrap();
    assert_eq!((grid.channels, grid.height, grid.width), (3, 2, 9));
    for (i, _) in images.iter().enumerate() {
        for y in 0..2 {
            for x in 0..3 {
                assert_eq!(grid.get(1, y, i * 3 + x), i as f32 * 0.25, "cell {i}");
            }
        }
    }
}

#[test]
fn tile_six_two_rows() {
    let images: Vec<_> = (0..6).map(|i| constant(i as f32 * 0.1, 3, 2, 3)).collect();
    let grid = tile_grid(&images).unwrap();
    assert_eq!(GRID_COLUMNS, 4);
    assert_eq!((grid.height, grid.width), (4, 12));
    for cell in 0..8 {
        let (row, column) = (cell / 4, cell % 4);
        let expected = if cell < 6 { cell as f32 * 0.1 } else { -1.0 };
        for c in 0..3 {
            for y in 0..2 {
                for x in 0..3 {
                    let got = grid.get(c, row * 2 + y, column * 3 + x);
                    assert_eq!(got, expected, "cell {cell} channel {c}");
                }
            }
        }
    }
}

#[test]
fn tile_keeps_pixel_order() {
    let images = vec![byte_grid_planes(3, 3, 2), byte_grid_planes(3, 3, 2)];
    let grid = tile_grid(&images).unwrap();
    for c in 0..3 {
        for y in 0..3 {
            for x in 0..2 {
                assert_eq!(grid.get(c, y, x), images[0].get(c, y, x));
                assert_eq!(grid.get(c, y, 2 + x), images[1].get(c, y, x));
            }
        }
    }
}

#[test]
fn tile_batch_matches_grid() {
    let images: Vec<_> = (0..5)
        .map(|i| rotated(&byte_grid_planes(3, 2, 4), i))
        .collect();
    let flat: Vec<f32> = images.iter().flat_map(|p| p.data.iter().copied()).collect();
    let from_batch = tile_batch(&flat, 5, 3, 2, 4).unwrap();
    assert_eq!(from_batch, tile_grid(&images).unwrap());
    let error = tile_batch(&flat, 4, 3, 2, 4).unwrap_err();
    assert!(
        matches!(
            error,
            ImageIoError::BatchLength {
                expected: 96,
                actual: 120,
                ..
            }
        ),
        "{error}"
    );
}

/// Returns a copy whose values are shifted by `offset` positions, so each image differs.
fn rotated(planes: &Planes<f32>, offset: usize) -> Planes<f32> {
    let mut copy = planes.clone();
    copy.data.rotate_left(offset);
    copy
}

#[test]
fn tile_rejects_bad_batches() {
    assert!(matches!(tile_grid(&[]), Err(ImageIoError::EmptyBatch)));
    assert!(matches!(
        tile_batch(&[], 0, 3, 2, 2),
        Err(ImageIoError::EmptyBatch)
    ));
    let mixed = vec![constant(0.0, 3, 2, 2), constant(0.0, 3, 2, 3)];
    let error = tile_grid(&mixed).unwrap_err();
    assert!(
        matches!(error, ImageIoError::BatchShapeMismatch { index: 1, .. }),
        "{error}"
    );
}

#[test]
fn tiled_grid_saves() {
    let dir = TestFolder::new("gridsave");
    let path = dir.join("grid.png");
    let images: Vec<_> = (0..5).map(|_| constant(1.0, 3, 2, 2)).collect();
    save_png(&path, &tile_grid(&images).unwrap()).unwrap();
    let decoded = image::open(&path).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (8, 4));
    assert_eq!(decoded.get_pixel(0, 0).0, [255, 255, 255]);
    assert_eq!(decoded.get_pixel(7, 3).0, [0, 0, 0], "unused cell is black");
    assert_eq!(decoded.get_pixel(1, 3).0, [255, 255, 255], "fifth image");
}

#[test]
fn binarize_threshold() {
    // Byte 0 is unset; byte 1 and above is set. Only channel 0 counts.
    let data = vec![
        -1.0,
        unit8(1.0),
        unit8(0.4),
        1.0,
        /* channel 1 */ 1.0,
        1.0,
        1.0,
        1.0,
    ];
    let planes = Planes::new(2, 1, 4, data).unwrap();
    assert_eq!(binarize_channel0(&planes), vec![false, true, false, true]);
}

#[test]
fn dilate_single_pixel_disk() {
    let (height, width) = (9, 9);
    let mut binary = vec![false; height * width];
    binary[4 * width + 4] = true;
    let dilated = dilate_disk(&binary, height, width, 2);
    for y in 0..height {
        for x in 0..width {
            let (dy, dx) = (y as i64 - 4, x as i64 - 4);
            let inside = dy * dy + dx * dx <= 4;
            assert_eq!(dilated[y * width + x], inside, "pixel ({y}, {x})");
        }
    }
    assert_eq!(dilated.iter().filter(|&&set| set).count(), 13);
}

#[test]
fn dilate_radius_zero_identity() {
    let binary = vec![true, false, false, true, false, true];
    assert_eq!(dilate_disk(&binary, 2, 3, 0), binary);
}

#[test]
fn dilate_clips_at_border() {
    let mut binary = vec![false; 25];
    binary[0] = true;
    let dilated = dilate_disk(&binary, 5, 5, 3);
    for y in 0..5 {
        for x in 0..5 {
            assert_eq!(dilated[y * 5 + x], y * y + x * x <= 9, "pixel ({y}, {x})");
        }
    }
}

#[test]
fn gaussian_constant_unchanged() {
    let values = vec![0.7; 12 * 15];
    let blurred = gaussian_blur(&values, 12, 15, 2.0);
    for &value in &blurred {
        assert!((value - 0.7).abs() < 1e-12, "{value}");
    }
}

#[test]
fn gaussian_impulse_weights() {
    let (height, width, sigma) = (41, 41, 2.5);
    let mut values = vec![0.0; height * width];
    values[20 * width + 20] = 1.0;
    let blurred = gaussian_blur(&values, height, width, sigma);
    let total: f64 = blurred.iter().sum();
    assert!(
        (total - 1.0).abs() < 1e-12,
        "blur preserves the sum: {total}"
    );
    let at = |dy: i64, dx: i64| blurred[((20 + dy) as usize) * width + (20 + dx) as usize];
    let ratio = at(0, 1) / at(0, 0);
    assert!(
        (ratio - (-1.0 / (2.0 * sigma * sigma)).exp()).abs() < 1e-12,
        "ratio {ratio}"
    );
    assert!((at(3, -2) - at(-2, 3)).abs() < 1e-15, "symmetry");
    // Taps reach floor(4 * sigma) = 10 pixels and no further.
    assert!(at(0, 10) > 0.0);
    assert_eq!(at(0, 11), 0.0);
}

#[test]
fn gaussian_replicates_edges() {
    // A 1-pixel column at the left edge: replication makes every tap left of it read 1 too.
    let (height, width, sigma) = (3, 30, 2.0);
    let mut values = vec![0.0; height * width];
    for y in 0..height {
        values[y * width] = 1.0;
    }
    let blurred = gaussian_blur(&values, height, width, sigma);
    let weights: Vec<f64> = (-8i32..=8)
        .map(|t| (-(t * t) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = weights.iter().sum();
    let left_and_centre: f64 = weights[..=8].iter().sum::<f64>() / sum;
    assert!(
        (blurred[width] - left_and_centre).abs() < 1e-12,
        "{}",
        blurred[width]
    );
}

#[test]
fn gaussian_sigma_zero_identity() {
    let values = vec![0.0, 1.0, 0.5, 0.25];
    assert_eq!(gaussian_blur(&values, 2, 2, 0.0), values);
}

#[test]
fn normalize_min_max_range() {
    assert_eq!(normalize_min_max(&[2.0, 4.0, 6.0]), vec![0.0, 0.5, 1.0]);
    assert_eq!(normalize_min_max(&[0.0, 0.0]), vec![0.0, 0.0]);
    assert_eq!(normalize_min_max(&[1.0, 1.0]), vec![1.0, 1.0]);
}

#[test]
fn prepare_mask_empty_error() {
    let planes = constant(-1.0, 3, 8, 8);
    let error = prepare_mask(&planes, &MaskOptions::HARMONIZATION, "test mask").unwrap_err();
    assert!(matches!(error, ImageIoError::EmptyMask { .. }), "{error}");
    assert!(error.to_string().contains("test mask"), "{error}");
}

#[test]
fn prepare_mask_full_is_ones() {
    let planes = constant(1.0, 3, 6, 6);
    let mask = prepare_mask(&planes, &MaskOptions::EDITING, "full").unwrap();
    assert_eq!(mask.channels, 1);
    assert!(mask.data.iter().all(|&v| v == 1.0));
}

#[test]
fn prepare_mask_rejects_sigma() {
    let planes = constant(1.0, 3, 6, 6);
    let options = MaskOptions {
        dilation_radius: 1,
        blur_sigma: -1.0,
    };
    let error = prepare_mask(&planes, &options, "mask").unwrap_err();
    assert!(
        matches!(error, ImageIoError::InvalidSigma { .. }),
        "{error}"
    );
}

fn square_mask_image(size: u32, start: u32, end: u32, transparent_outside: bool) -> DynamicImage {
    let image = ImageBuffer::from_fn(size, size, |x, y| {
        let inside = (start..end).contains(&x) && (start..end).contains(&y);
        match (inside, transparent_outside) {
            (true, _) => Rgba([255u8, 255, 255, 255]),
            (false, false) => Rgba([0, 0, 0, 255]),
            (false, true) => Rgba([255, 255, 255, 0]),
        }
    });
    DynamicImage::ImageRgba8(image)
}

#[test]
fn load_mask_square() {
    let dir = TestFolder::new("mask");
    let path = save(
        &dir,
        "mask.png",
        &square_mask_image(64, 29, 35, false),
        ImageFormat::Png,
    );
    let mask = load_mask(&path, &MaskOptions::HARMONIZATION).unwrap();
    assert_eq!((mask.channels, mask.height, mask.width), (1, 64, 64));
    let max = mask.data.iter().copied().fold(f32::MIN, f32::max);
    let min = mask.data.iter().copied().fold(f32::MAX, f32::min);
    assert_eq!(max, 1.0);
    assert_eq!(min, 0.0);
    assert!(mask.get(0, 31, 31) > 0.99, "centre {}", mask.get(0, 31, 31));
    assert_eq!(mask.get(0, 0, 0), 0.0, "far corner");
    for y in 0..64 {
        for x in 0..64 {
            let a = mask.get(0, y, x);
            let b = mask.get(0, x, y);
            assert!((a - b).abs() < 1e-6, "transpose symmetry at ({y}, {x})");
        }
    }
    // The blurred edge extends past the dilated square (6 + 2 * 7 pixels wide).
    assert!(mask.get(0, 31, 20) > 0.0);
    let rgb = mask.broadcast_channels(3).unwrap();
    assert_eq!(rgb.plane(2), mask.data.as_slice());
}

#[test]
fn load_mask_transparent_outside() {
    // Transparent white outside the square counts as unset, so both files give one mask.
    let dir = TestFolder::new("maskalpha");
    let opaque = save(
        &dir,
        "opaque.png",
        &square_mask_image(32, 12, 20, false),
        ImageFormat::Png,
    );
    let clear = save(
        &dir,
        "clear.png",
        &square_mask_image(32, 12, 20, true),
        ImageFormat::Png,
    );
    let a = load_mask(&opaque, &MaskOptions::HARMONIZATION).unwrap();
    let b = load_mask(&clear, &MaskOptions::HARMONIZATION).unwrap();
    assert_eq!(a, b);
}

#[test]
fn load_mask_black_file_error() {
    let dir = TestFolder::new("maskblack");
    let image = DynamicImage::ImageRgb8(ImageBuffer::from_pixel(8, 8, Rgb([0u8, 0, 0])));
    let path = save(&dir, "black.png", &image, ImageFormat::Png);
    let error = load_mask(&path, &MaskOptions::EDITING).unwrap_err();
    assert!(matches!(error, ImageIoError::EmptyMask { .. }), "{error}");
    assert_error_names_path(&error, &path);
}
