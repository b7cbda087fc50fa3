//! Image loading, PNG writing, batch tiling and mask preparation.
//!
//! Loaded images become 3-channel RGB [`Planes`] with values in [-1, 1]: an 8-bit value v maps
//! to `2 * v / 255 - 1` and a 16-bit value v to `2 * v / 65535 - 1`. Grey images are repeated
//! into the three channels. Alpha is removed by compositing over an [`AlphaBackground`].
//! Written PNGs use `byte = clamp(floor(255 * (x + 1) / 2 + 0.5), 0, 255)`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Cursor, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::codecs::png::PngEncoder;
use image::{
    DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder, ImageFormat, ImageReader,
};
use thiserror::Error;

pub use super::imresize::Planes;
use super::imresize::ResizeError;

/// Images per row of a batch grid. A batch of fewer images uses one row of that many cells.
pub const GRID_COLUMNS: usize = 4;

/// Errors from reading and writing images and masks.
#[derive(Debug, Error)]
pub enum ImageIoError {
    #[error("image file {} not found; check the path", path.display())]
    NotFound { path: PathBuf },

    #[error("failed to read image file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("image file {} is empty (0 bytes); pass a PNG or JPEG file", path.display())]
    EmptyFile { path: PathBuf },

    #[error(
        "{} is a folder, not an image file; pass a PNG or JPEG file (a run folder of `singan \
         train` goes to `singan sample` or `singan train --resume`)",
        path.display()
    )]
    Folder { path: PathBuf },

    #[error(
        "image file {} has unsupported format {format}; convert it to PNG or JPEG",
        path.display()
    )]
    UnsupportedFormat { path: PathBuf, format: String },

    // The decoder's own message may end in a line break, which would split this one.
    #[error(
        "failed to decode image file {}: {}; the file is unreadable or corrupt, so \
         re-export it as PNG or JPEG",
        path.display(),
        source.to_string().trim_end()
    )]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error(
        "image file {} is a truncated or corrupt JPEG: {reason}; copy or export the \
         complete file again",
        path.display()
    )]
    TruncatedJpeg { path: PathBuf, reason: String },

    #[error(
        "image file {} is {height}x{width} ({megapixels:.0} megapixels), above the limit of \
         {limit} megapixels that this tool decodes; downscale it first (training resizes \
         it to --max-size pixels, 250 by default, on the longer side)",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        megapixels: f64,
        limit: u64,
    },

    #[error(
        "image file {} decodes to {height}x{width} with no pixels; pass an image with at \
         least one pixel",
        path.display()
    )]
    NoPixels {
        path: PathBuf,
        width: u32,
        height: u32,
    },

    #[error(
        "cannot write {channels}-channel planes to PNG {}; pass 1 (grey) or 3 (RGB) channels",
        path.display()
    )]
    UnsupportedChannels { path: PathBuf, channels: usize },

    #[error(
        "cannot write {height}x{width} planes to PNG {}; both sides must be between 1 and \
         {max}",
        path.display(),
        max = u32::MAX
    )]
    InvalidPngSize {
        path: PathBuf,
        height: usize,
        width: usize,
    },

    #[error("failed to encode PNG {}: {source}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },

    #[error("failed to write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot tile an empty batch; pass at least one image")]
    EmptyBatch,

    #[error(
        "batch image {index} is {channels}x{height}x{width} but image 0 is \
         {first_channels}x{first_height}x{first_width}; every image of a grid needs the same \
         shape"
    )]
    BatchShapeMismatch {
        index: usize,
        channels: usize,
        height: usize,
        width: usize,
        first_channels: usize,
        first_height: usize,
        first_width: usize,
    },

    #[error(
        "{origin} has no pixel whose channel 0 encodes to a byte above 0; paint the region \
         to change in a non-black colour"
    )]
    EmptyMask { origin: String },

    #[error("mask blur sigma {sigma} is invalid; use a finite value of at least 0")]
    InvalidSigma { sigma: f64 },

    #[error(
        "batch buffer has {actual} values but {batch} images of {channels}x{height}x{width} \
         need {expected}; pass a [batch, channels, height, width] buffer of that length"
    )]
    BatchLength {
        batch: usize,
        channels: usize,
        height: usize,
        width: usize,
        expected: usize,
        actual: usize,
    },

    #[error(transparent)]
    InvalidPlanes(#[from] ResizeError),
}

/// Colour that transparent pixels are composited over before alpha is dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AlphaBackground {
    /// Composite over white (the default): fully transparent pixels load as 1.0.
    #[default]
    White,
    /// Composite over black: fully transparent pixels load as -1.0.
    Black,
}

/// Loads a PNG or JPEG file as RGB planes in [-1, 1].
///
/// The format is detected from the file content, not the extension. 8- and 16-bit grey, grey
/// with alpha, RGB, RGBA and palette PNGs are accepted, and so are JPEGs. A JPEG without an
/// end-of-image marker after its last scan is rejected as truncated. An EXIF orientation
/// tag is applied, so the planes are upright. A pixel with alpha a in [0, 1] is composited as
/// `a * colour + (1 - a) * background` before the mapping to [-1, 1], and the composite is not
/// rounded to an integer.
pub fn load_image(
    path: impl AsRef<Path>,
    background: AlphaBackground,
) -> Result<Planes<f32>, ImageIoError> {
    let path = path.as_ref();
    let image = decode_upright(path)?;
    Ok(dynamic_to_planes(&image, background))
}

/// Largest image that [`load_image`] decodes, in millions of pixels. Decoding and converting
/// to float planes takes about 20 bytes per pixel, so this caps that step near 2 GB; a
/// 30000x30000 image would have needed 16 GB before being resized to a few hundred pixels.
pub const MAX_MEGAPIXELS: u64 = 100;

/// Decodes `path` with the EXIF orientation applied.
fn decode_upright(path: &Path) -> Result<DynamicImage, ImageIoError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            ImageIoError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            ImageIoError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let read_error = |source| ImageIoError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = file.metadata().map_err(read_error)?;
    if metadata.is_dir() {
        return Err(ImageIoError::Folder {
            path: path.to_path_buf(),
        });
    }
    let length = metadata.len();
    if length == 0 {
        return Err(ImageIoError::EmptyFile {
            path: path.to_path_buf(),
        });
    }

    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(read_error)?;
    match reader.format() {
        Some(ImageFormat::Png) => decode_reader(path, reader),
        Some(ImageFormat::Jpeg) => {
            // The JPEG decoder of the image crate reads the whole file into memory as well.
            let mut bytes = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
            reader
                .into_inner()
                .read_to_end(&mut bytes)
                .map_err(read_error)?;
            if let Some(reason) = jpeg_truncation(&bytes) {
                return Err(ImageIoError::TruncatedJpeg {
                    path: path.to_path_buf(),
                    reason,
                });
            }
            decode_reader(
                path,
                ImageReader::with_format(Cursor::new(bytes), ImageFormat::Jpeg),
            )
        }
        Some(other) => Err(ImageIoError::UnsupportedFormat {
            path: path.to_path_buf(),
            format: format!("{other:?}"),
        }),
        None => Err(ImageIoError::UnsupportedFormat {
            path: path.to_path_buf(),
            format: "unknown (no PNG or JPEG signature)".to_string(),
        }),
    }
}

/// Decodes the image in `reader`, whose format is already set, with the EXIF orientation
/// applied. `path` only names the file in errors.
fn decode_reader<R: BufRead + Seek>(
    path: &Path,
    reader: ImageReader<R>,
) -> Result<DynamicImage, ImageIoError> {
    let decode_error = |source| ImageIoError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_MEGAPIXELS * 1_000_000 {
        return Err(ImageIoError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            megapixels: f64::from(width) * f64::from(height) / 1e6,
            limit: MAX_MEGAPIXELS,
        });
    }
    let orientation = decoder.orientation().map_err(decode_error)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);

    if image.width() == 0 || image.height() == 0 {
        return Err(ImageIoError::NoPixels {
            path: path.to_path_buf(),
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(image)
}

/// Finds where a JPEG stream ends early. Returns `None` when the walk reaches the
/// end-of-image marker (0xFF 0xD9), which in a complete file follows the last scan, and
/// otherwise a description of where the data stops.
///
/// The image crate (0.25.10) runs zune-jpeg (0.5) with strict mode off. A cut baseline JPEG
/// then decodes without an error, with grey (128) in place of the missing blocks, so the
/// check has to happen here. It walks the marker segments by their declared lengths, so the
/// markers of an EXIF thumbnail inside an APP1 segment are skipped. Inside the compressed
/// data of a scan, 0xFF is followed by 0x00 (a stuffed byte), a restart marker 0xD0 to 0xD7
/// or fill bytes 0xFF, and any other byte starts the next marker. Bytes after the
/// end-of-image marker are ignored, and so are stray bytes between segments, which decoders
/// skip as well.
fn jpeg_truncation(bytes: &[u8]) -> Option<String> {
    const END_OF_IMAGE: u8 = 0xD9;
    const START_OF_SCAN: u8 = 0xDA;
    let end = bytes.len();
    let missing_end = |context: String| {
        Some(format!(
            "the data ends at byte {end} {context}, before the end-of-image marker (0xFF 0xD9)"
        ))
    };

    // The caller detected the format from the start-of-image marker 0xFF 0xD8.
    let mut position = 2;
    let mut scans = 0usize;
    loop {
        // Skip stray bytes, then the fill bytes 0xFF, to the marker code.
        while position < end && bytes[position] != 0xFF {
            position += 1;
        }
        while position < end && bytes[position] == 0xFF {
            position += 1;
        }
        if position >= end {
            return missing_end("between marker segments".to_string());
        }
        let marker_offset = position - 1;
        let code = bytes[position];
        position += 1;

        match code {
            END_OF_IMAGE => return None,
            // These codes have no segment. 0x00 is a stray stuffed byte, 0x01 is TEM, 0xD0 to
            // 0xD7 are restart markers and 0xD8 is a repeated start of image.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }

        if position + 2 > end {
            return missing_end(format!(
                "inside the length of marker 0xFF{code:02X} at byte {marker_offset}"
            ));
        }
        let length = usize::from(u16::from_be_bytes([bytes[position], bytes[position + 1]]));
        if length < 2 {
            return Some(format!(
                "marker 0xFF{code:02X} at byte {marker_offset} has segment length {length}, \
                 below the minimum of 2"
            ));
        }
        if position + length > end {
            return missing_end(format!(
                "inside the {length}-byte segment of marker 0xFF{code:02X} at byte \
                 {marker_offset}"
            ));
        }
        position += length;

        if code == START_OF_SCAN {
            scans += 1;
            match next_marker_after_scan(bytes, position) {
                Some(marker) => position = marker,
                None => {
                    return missing_end(format!("inside the compressed data of scan {scans}"));
                }
            }
        }
    }
}

/// Returns the offset of the 0xFF that starts the first marker at or after `position` in the
/// compressed data of a scan, or `None` when the data ends first.
fn next_marker_after_scan(bytes: &[u8], mut position: usize) -> Option<usize> {
    loop {
        let offset = position
            + bytes
                .get(position..)?
                .iter()
                .position(|&byte| byte == 0xFF)?;
        match bytes.get(offset + 1)? {
            // A stuffed zero byte, a restart marker or a fill byte does not end the scan.
            0x00 | 0xD0..=0xD7 | 0xFF => position = offset + 1,
            _ => return Some(offset),
        }
    }
}

/// Converts a decoded image to RGB planes in [-1, 1], compositing alpha over `background`.
///
/// Images with more than 8 bits per channel are read at 16 bits, and the others at 8 bits.
pub fn dynamic_to_planes(image: &DynamicImage, background: AlphaBackground) -> Planes<f32> {
    let color = image.color();
    let wide = color.bytes_per_pixel() > color.channel_count();
    let width = image.width() as usize;
    let height = image.height() as usize;
    match (wide, color.has_alpha()) {
        (false, false) => {
            let pixels = image.to_rgb8();
            rgb_to_planes(height, width, pixels.as_raw(), 255.0)
        }
        (false, true) => {
            let pixels = image.to_rgba8();
            rgba_to_planes(height, width, pixels.as_raw(), 255.0, background)
        }
        (true, false) => {
            let pixels = image.to_rgb16();
            rgb_to_planes(height, width, pixels.as_raw(), 65535.0)
        }
        (true, true) => {
            let pixels = image.to_rgba16();
            rgba_to_planes(height, width, pixels.as_raw(), 65535.0, background)
        }
    }
}

fn to_unit_range(value: f64, max_value: f64) -> f32 {
    (2.0 * value / max_value - 1.0) as f32
}

fn rgb_to_planes<V: Copy + Into<f64>>(
    height: usize,
    width: usize,
    interleaved: &[V],
    max_value: f64,
) -> Planes<f32> {
    let plane_len = height * width;
    let mut data = vec![0.0f32; 3 * plane_len];
    for (i, pixel) in interleaved.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane_len + i] = to_unit_range(pixel[c].into(), max_value);
        }
    }
    Planes {
        channels: 3,
        height,
        width,
        data,
    }
}

fn rgba_to_planes<V: Copy + Into<f64>>(
    height: usize,
    width: usize,
    interleaved: &[V],
    max_value: f64,
    background: AlphaBackground,
) -> Planes<f32> {
    let background_value = match background {
        AlphaBackground::White => max_value,
        AlphaBackground::Black => 0.0,
    };
    let plane_len = height * width;
    let mut data = vec![0.0f32; 3 * plane_len];
    for (i, pixel) in interleaved.chunks_exact(4).enumerate() {
        let alpha = pixel[3].into() / max_value;
        for c in 0..3 {
            let colour: f64 = pixel[c].into();
            let composite = if alpha == 1.0 {
                colour
            } else {
                alpha * colour + (1.0 - alpha) * background_value
            };
            data[c * plane_len + i] = to_unit_range(composite, max_value);
        }
    }
    Planes {
        channels: 3,
        height,
        width,
        data,
    }
}

/// Encodes a value in [-1, 1] as a byte: `clamp(floor(255 * (x + 1) / 2 + 0.5), 0, 255)`.
/// NaN encodes as 0.
pub fn encode_byte(value: f32) -> u8 {
    let unit = (f64::from(value) + 1.0) / 2.0;
    let scaled = (255.0 * unit + 0.5).floor();
    // `as` saturates out-of-range floats and maps NaN to 0.
    scaled.clamp(0.0, 255.0) as u8
}

/// Encodes 1-channel (grey) or 3-channel (RGB) planes in [-1, 1] as PNG bytes. `destination`
/// only names the file in errors.
pub fn encode_png(destination: &Path, image: &Planes<f32>) -> Result<Vec<u8>, ImageIoError> {
    image.check_len()?;
    let color = match image.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        channels => {
            return Err(ImageIoError::UnsupportedChannels {
                path: destination.to_path_buf(),
                channels,
            })
        }
    };
    let size_error = || ImageIoError::InvalidPngSize {
        path: destination.to_path_buf(),
        height: image.height,
        width: image.width,
    };
    let width = u32::try_from(image.width).map_err(|_| size_error())?;
    let height = u32::try_from(image.height).map_err(|_| size_error())?;
    if width == 0 || height == 0 {
        return Err(size_error());
    }

    let plane_len = image.plane_len();
    let mut interleaved = vec![0u8; image.data.len()];
    for c in 0..image.channels {
        let plane = image.plane(c);
        for (i, &value) in plane.iter().enumerate() {
            interleaved[i * image.channels + c] = encode_byte(value);
        }
    }
    debug_assert_eq!(interleaved.len(), plane_len * image.channels);

    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(&interleaved, width, height, color)
        .map_err(|source| ImageIoError::Encode {
            path: destination.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Writes 1-channel or 3-channel planes in [-1, 1] to a PNG file at `path`, atomically (see
/// [`write_atomic`]).
pub fn save_png(path: impl AsRef<Path>, image: &Planes<f32>) -> Result<(), ImageIoError> {
    let path = path.as_ref();
    let bytes = encode_png(path, image)?;
    write_atomic(path, &bytes)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` so that `path` contains either its old content or all of `bytes`.
///
/// The bytes go to a new temporary file in the same folder, which is flushed to disk and then
/// renamed over `path`. The rename is atomic on POSIX file systems. On failure the temporary
/// file is removed. The folder itself is synced after the rename on Unix, and a failure of that
/// last sync is ignored.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), ImageIoError> {
    let path = path.as_ref();
    let write_error = |source| ImageIoError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        ))
    })?;
    let folder = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let mut temp_name = OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp_path = folder.join(temp_name);

    let result = write_and_sync(&temp_path, bytes).and_then(|()| fs::rename(&temp_path, path));
    if let Err(source) = result {
        let _ = fs::remove_file(&temp_path);
        return Err(write_error(source));
    }

    #[cfg(unix)]
    if let Ok(directory) = File::open(&folder) {
        let _ = directory.sync_all();
    }
    Ok(())
}

fn write_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Tiles images of one shape into a grid: row-major, [`GRID_COLUMNS`] per row (fewer when the
/// batch is smaller), no spacing, and unused cells black (-1).
pub fn tile_grid(images: &[Planes<f32>]) -> Result<Planes<f32>, ImageIoError> {
    let first = images.first().ok_or(ImageIoError::EmptyBatch)?;
    for (index, image) in images.iter().enumerate() {
        image.check_len()?;
        if (image.channels, image.height, image.width)
            != (first.channels, first.height, first.width)
        {
            return Err(ImageIoError::BatchShapeMismatch {
                index,
                channels: image.channels,
                height: image.height,
                width: image.width,
                first_channels: first.channels,
                first_height: first.height,
                first_width: first.width,
            });
        }
    }
    let cells: Vec<&[f32]> = images.iter().map(|image| image.data.as_slice()).collect();
    Ok(tile_cells(
        &cells,
        first.channels,
        first.height,
        first.width,
    ))
}

/// Tiles a `[batch, channels, height, width]` buffer into a grid, as [`tile_grid`] does.
pub fn tile_batch(
    data: &[f32],
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Planes<f32>, ImageIoError> {
    if batch == 0 {
        return Err(ImageIoError::EmptyBatch);
    }
    let image_len = channels * height * width;
    if data.len() != batch * image_len {
        return Err(ImageIoError::BatchLength {
            batch,
            channels,
            height,
            width,
            expected: batch * image_len,
            actual: data.len(),
        });
    }
    let cells: Vec<&[f32]> = data.chunks_exact(image_len.max(1)).take(batch).collect();
    Ok(tile_cells(&cells, channels, height, width))
}

fn tile_cells(cells: &[&[f32]], channels: usize, height: usize, width: usize) -> Planes<f32> {
    let columns = cells.len().min(GRID_COLUMNS);
    let rows = cells.len().div_ceil(columns);
    let grid_height = rows * height;
    let grid_width = columns * width;
    let mut grid = Planes::filled(channels, grid_height, grid_width, -1.0f32);
    for (index, cell) in cells.iter().enumerate() {
        let top = (index / columns) * height;
        let left = (index % columns) * width;
        for c in 0..channels {
            for y in 0..height {
                let source = &cell[(c * height + y) * width..(c * height + y + 1) * width];
                let start = (c * grid_height + top + y) * grid_width + left;
                grid.data[start..start + width].copy_from_slice(source);
            }
        }
    }
    grid
}

/// Settings for turning a mask image into a soft blend mask.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskOptions {
    /// Radius q of the disk {(i, j): i^2 + j^2 <= q^2} used for dilation, in pixels.
    pub dilation_radius: usize,
    /// Standard deviation of the Gaussian blur, in pixels. 0 skips the blur.
    pub blur_sigma: f64,
}

impl MaskOptions {
    /// Mask settings for harmonization: disk radius 7, blur sigma 5.
    pub const HARMONIZATION: Self = Self {
        dilation_radius: 7,
        blur_sigma: 5.0,
    };
    /// Mask settings for editing: disk radius 20, blur sigma 5.
    pub const EDITING: Self = Self {
        dilation_radius: 20,
        blur_sigma: 5.0,
    };
}

/// Loads a mask file and prepares it with [`prepare_mask`]. Alpha is composited over black,
/// so transparent pixels are outside the mask.
///
/// Returns one channel in [0, 1] at the file's own size. A caller that first resizes the mask
/// to the training size should use [`load_image`], the resize, and then [`prepare_mask`].
pub fn load_mask(
    path: impl AsRef<Path>,
    options: &MaskOptions,
) -> Result<Planes<f32>, ImageIoError> {
    let path = path.as_ref();
    let image = load_image(path, AlphaBackground::Black)?;
    prepare_mask(&image, options, &format!("mask file {}", path.display()))
}

/// Turns planes in [-1, 1] into a soft mask: binarises channel 0 (a pixel is set when
/// [`encode_byte`] of its value is above 0), dilates with a disk, blurs with a Gaussian and
/// min-max normalises to [0, 1]. Returns one channel, which [`Planes::broadcast_channels`]
/// repeats for RGB.
///
/// `origin` names the mask in the error raised when no pixel is set. When every pixel is still
/// at the same value after the blur (all set), the result is all ones.
pub fn prepare_mask(
    image: &Planes<f32>,
    options: &MaskOptions,
    origin: &str,
) -> Result<Planes<f32>, ImageIoError> {
    image.check_len()?;
    let sigma = options.blur_sigma;
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(ImageIoError::InvalidSigma { sigma });
    }
    let binary = binarize_channel0(image);
    if !binary.iter().any(|&set| set) {
        return Err(ImageIoError::EmptyMask {
            origin: origin.to_string(),
        });
    }
    let dilated = dilate_disk(&binary, image.height, image.width, options.dilation_radius);
    let values: Vec<f64> = dilated
        .iter()
        .map(|&set| f64::from(u8::from(set)))
        .collect();
    let blurred = gaussian_blur(&values, image.height, image.width, sigma);
    let data = normalize_min_max(&blurred);
    Ok(Planes {
        channels: 1,
        height: image.height,
        width: image.width,
        data,
    })
}

/// Marks each pixel whose channel-0 value encodes to a byte above 0.
pub fn binarize_channel0(image: &Planes<f32>) -> Vec<bool> {
    if image.channels == 0 {
        return vec![false; image.plane_len()];
    }
    image
        .plane(0)
        .iter()
        .map(|&value| encode_byte(value) > 0)
        .collect()
}

/// Dilates a row-major binary image with the disk {(i, j): i^2 + j^2 <= radius^2}. Pixels
/// outside the image count as unset.
pub fn dilate_disk(binary: &[bool], height: usize, width: usize, radius: usize) -> Vec<bool> {
    assert_eq!(
        binary.len(),
        height * width,
        "binary mask length must be height * width"
    );
    if radius == 0 {
        return binary.to_vec();
    }

    // Row prefix counts let each disk row be tested as one interval in O(1).
    let mut prefix = vec![0u32; height * (width + 1)];
    for y in 0..height {
        let base = y * (width + 1);
        for x in 0..width {
            prefix[base + x + 1] = prefix[base + x] + u32::from(binary[y * width + x]);
        }
    }
    let half_widths: Vec<usize> = (0..=radius)
        .map(|dy| integer_sqrt(radius * radius - dy * dy))
        .collect();

    let mut output = vec![false; height * width];
    for y in 0..height {
        let first_row = y.saturating_sub(radius);
        let last_row = (y + radius).min(height - 1);
        for x in 0..width {
            let mut set = false;
            for source_row in first_row..=last_row {
                let half = half_widths[source_row.abs_diff(y)];
                let left = x.saturating_sub(half);
                let right = (x + half).min(width - 1);
                let base = source_row * (width + 1);
                if prefix[base + right + 1] > prefix[base + left] {
                    set = true;
                    break;
                }
            }
            output[y * width + x] = set;
        }
    }
    output
}

fn integer_sqrt(value: usize) -> usize {
    let mut root = (value as f64).sqrt() as usize;
    while root * root > value {
        root -= 1;
    }
    while (root + 1) * (root + 1) <= value {
        root += 1;
    }
    root
}

/// Blurs a row-major image with a separable Gaussian of standard deviation `sigma`. The kernel
/// has taps at integer offsets t with `|t| <= floor(4 * sigma)`, weights `exp(-t^2 / (2
/// sigma^2))` normalised to sum 1, and edge samples are replicated. `sigma == 0` returns the
/// input.
pub fn gaussian_blur(values: &[f64], height: usize, width: usize, sigma: f64) -> Vec<f64> {
    assert_eq!(
        values.len(),
        height * width,
        "image length must be height * width"
    );
    let radius = (4.0 * sigma).floor() as usize;
    if sigma <= 0.0 || radius == 0 {
        return values.to_vec();
    }
    let mut kernel: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let t = i as f64 - radius as f64;
            (-t * t / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f64 = kernel.iter().sum();
    for weight in &mut kernel {
        *weight /= sum;
    }
    let clamp = |index: isize, len: usize| index.clamp(0, len as isize - 1) as usize;

    let mut along_rows = vec![0.0; values.len()];
    for y in 0..height {
        for x in 0..width {
            let mut total = 0.0;
            for (i, &weight) in kernel.iter().enumerate() {
                let source = clamp(x as isize + i as isize - radius as isize, width);
                total += weight * values[y * width + source];
            }
            along_rows[y * width + x] = total;
        }
    }
    let mut output = vec![0.0; values.len()];
    for y in 0..height {
        for x in 0..width {
            let mut total = 0.0;
            for (i, &weight) in kernel.iter().enumerate() {
                let source = clamp(y as isize + i as isize - radius as isize, height);
                total += weight * along_rows[source * width + x];
            }
            output[y * width + x] = total;
        }
    }
    output
}

/// Rescales values linearly so that the minimum becomes 0 and the maximum 1. A constant input
/// becomes all ones when the constant is above 0 and all zeros otherwise.
pub fn normalize_min_max(values: &[f64]) -> Vec<f32> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max <= min {
        let fill = if max > 0.0 { 1.0 } else { 0.0 };
        return vec![fill; values.len()];
    }
    values
        .iter()
        .map(|&value| ((value - min) / (max - min)) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::jpeg_truncation;

    const START: [u8; 2] = [0xFF, 0xD8];
    const END: [u8; 2] = [0xFF, 0xD9];

    /// Builds a marker segment: 0xFF, `code`, the big-endian length and `payload`.
    fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0xFF, code];
        bytes.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    fn stream(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn scan_escapes_skipped() {
        // Stuffed bytes, restart markers and fill bytes inside the compressed data.
        let data = [0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xD9];
        let bytes = stream(&[&START, &segment(0xDA, &[1, 2, 3]), &data]);
        assert_eq!(jpeg_truncation(&bytes), None);
        let cut = &bytes[..bytes.len() - 1];
        let reason = jpeg_truncation(cut).expect("missing end marker");
        assert!(reason.contains("scan 1"), "{reason}");
    }

    #[test]
    fn end_marker_in_segment_ignored() {
        let app = segment(0xE1, &[0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xD9]);
        let scan = segment(0xDA, &[1, 2, 3]);
        let complete = stream(&[&START, &app, &scan, &[0x55, 0x66], &END]);
        assert_eq!(jpeg_truncation(&complete), None);
        let cut = stream(&[&START, &app, &scan, &[0x55, 0x66]]);
        assert!(jpeg_truncation(&cut).is_some());
        let cut_after_app = stream(&[&START, &app]);
        assert!(jpeg_truncation(&cut_after_app).is_some());
    }

    #[test]
    fn later_scans_followed() {
        let scan = segment(0xDA, &[1, 2, 3]);
        let table = segment(0xC4, &[0xFF, 0xD9, 0x00]);
        let bytes = stream(&[&START, &scan, &[0x01], &table, &scan, &[0x02], &END]);
        assert_eq!(jpeg_truncation(&bytes), None);
        let cut = &bytes[..bytes.len() - 2];
        let reason = jpeg_truncation(cut).expect("missing end marker");
        assert!(reason.contains("scan 2"), "{reason}");
    }

    #[test]
    fn stray_bytes_and_trailing_data_accepted() {
        let scan = segment(0xDA, &[1, 2, 3]);
        let bytes = stream(&[
            &START,
            &[0x00, 0x11],
            &scan,
            &[0x22],
            &END,
            &[0xFF, 0xDA, 0x00],
        ]);
        assert_eq!(jpeg_truncation(&bytes), None);
    }

    #[test]
    fn cut_segment_header_reported() {
        let whole = stream(&[&START, &segment(0xE0, &[0; 14])]);
        let reason = jpeg_truncation(&whole[..5]).expect("cut length");
        assert!(reason.contains("length of marker 0xFFE0"), "{reason}");
        let reason = jpeg_truncation(&whole[..10]).expect("cut payload");
        assert!(
            reason.contains("16-byte segment of marker 0xFFE0 at byte 2"),
            "{reason}"
        );
    }
}
