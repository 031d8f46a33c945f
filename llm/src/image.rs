//! Images for the vision tower: PNG or JPEG files decoded to RGB and preprocessed as Hugging
//! Face's Gemma 3 image processor does (transformers' `models/gemma3/`, "Image preprocessing"): resized
//! to the model's square size with PIL's bilinear filter (antialiased when shrinking, rounded to
//! 8 bits after each pass), scaled to 0..1, normalised with mean 0.5 and deviation 0.5, CHW.

use std::io::Cursor;
use std::path::Path;

use candle_core::{Device, Tensor};
use image::{ImageFormat, RgbImage};

use crate::error::{LlmError, Result};

/// Images larger than this on either side are refused before decoding.
const MAX_SIDE: u32 = 16_384;

/// Images with more pixels than this are refused before decoding: 36 megapixels (a 6000 x 6000
/// scan) is more than any radiograph or photo export, and the tower looks at 896 x 896 anyway.
/// A 16384 x 16384 image would need 800 MB as RGB, from a PNG of a few kilobytes.
const MAX_PIXELS: u64 = 36_000_000;

/// Most memory a decoder may allocate for one image (a 36-megapixel 16-bit RGBA PNG is 288 MB).
const MAX_DECODER_BYTES: u64 = 320 << 20;

/// Image files larger than this are refused unread.
const MAX_FILE_BYTES: u64 = 256 << 20;

/// Decodes a PNG or JPEG file to RGB, with a one-line error naming the file otherwise. The format
/// is told by the content, not the file name. Only regular files are read (a FIFO or `/dev/zero`
/// named as an image is refused at once), at most [`MAX_FILE_BYTES`] of them; sizes are checked
/// from the header before any pixel is decoded, and a JPEG whose scan ends early is refused rather
/// than padded with grey.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bad = |reason: String| LlmError::Image {
        path: path.to_path_buf(),
        reason: crate::files::one_line(&reason),
    };
    let bytes = crate::files::read_bounded(path, MAX_FILE_BYTES).map_err(|e| {
        bad(match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                format!("cannot open: {e}")
            }
            _ => format!("cannot read: {e}"),
        })
    })?;
    let rgb = match image::guess_format(&bytes) {
        Ok(ImageFormat::Png) => decode_png(&bytes),
        Ok(ImageFormat::Jpeg) => decode_jpeg(&bytes),
        Ok(other) => {
            return Err(bad(format!(
                "{other:?} images are not supported: convert it to PNG or JPEG"
            )))
        }
        Err(_) => return Err(bad("not a PNG or JPEG image".into())),
    }
    .map_err(bad)?;
    if rgb.width() == 0 || rgb.height() == 0 {
        return Err(bad("the image is empty".into()));
    }
    Ok(rgb)
}

/// Refuses sizes beyond [`MAX_SIDE`] and [`MAX_PIXELS`].
fn check_size(width: u64, height: u64) -> std::result::Result<(), String> {
    if width > u64::from(MAX_SIDE) || height > u64::from(MAX_SIDE) || width * height > MAX_PIXELS {
        return Err(format!(
            "{width} x {height} pixels is larger than the {} megapixels an image may have",
            MAX_PIXELS / 1_000_000
        ));
    }
    Ok(())
}

fn decode_png(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    use image::ImageDecoder;
    let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(bytes))
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let (width, height) = decoder.dimensions();
    check_size(u64::from(width), u64::from(height))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_BYTES);
    decoder
        .set_limits(limits)
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    let decoded = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| format!("cannot decode the image: {e}"))?;
    // Like PIL's convert("RGB"): grey is replicated, alpha dropped, 16-bit scaled to 8. An RGB8
    // image is taken as it is, not copied.
    Ok(decoded.into_rgb8())
}

/// Refuses a JPEG whose scan data cannot hold the image it claims: zune-jpeg, like browsers,
/// pads a cut-off scan with grey even in strict mode. The last scan must be followed by an end
/// marker, and every 8 x 8 block of the full-resolution component costs at least one bit of
/// Huffman code (its DC value), so the file must hold at least that many bits.
fn check_jpeg_complete(bytes: &[u8], width: u64, height: u64) -> std::result::Result<(), String> {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xff, 0xda]);
    let ends = last_scan.is_some_and(|scan| bytes[scan..].windows(2).any(|w| w == [0xff, 0xd9]));
    if !ends {
        return Err("the file ends before the image does (no end-of-image marker)".into());
    }
    let blocks = width.div_ceil(8) * height.div_ceil(8);
    if (bytes.len() as u64) * 8 < blocks {
        return Err(format!(
            "{} bytes cannot hold the {width} x {height} pixels the header claims",
            bytes.len()
        ));
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    // Strict mode: a scan that ends before the image does is an error, not grey padding (a
    // 335-byte file claiming 16384 x 16384 pixels is not an image).
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(MAX_SIDE as usize)
        .set_max_height(MAX_SIDE as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| format!("cannot decode the image: {e:?}"))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or("cannot decode the image: no frame header")?;
    check_size(width as u64, height as u64)?;
    check_jpeg_complete(bytes, width as u64, height as u64)?;
    let pixels = decoder
        .decode()
        .map_err(|e| format!("cannot decode the image: {e:?}"))?;
    RgbImage::from_raw(width as u32, height as u32, pixels)
        .ok_or_else(|| "cannot decode the image: fewer pixels than its size".to_string())
}

/// Pixel values `[3, size, size]` of `path`, ready for the vision tower.
pub fn load_pixels(path: &Path, size: usize, device: &Device) -> Result<Tensor> {
    let rgb = read_rgb(path)?;
    pixels(&rgb, size, device)
}

/// Preprocesses a decoded image: resize to `size` x `size`, rescale, normalise, CHW f32.
pub fn pixels(rgb: &RgbImage, size: usize, device: &Device) -> Result<Tensor> {
    let resized = resize_bilinear(rgb, size, size);
    let plane = size * size;
    let mut values = vec![0f32; 3 * plane];
    for (i, pixel) in resized.chunks_exact(3).enumerate() {
        for (channel, &v) in pixel.iter().enumerate() {
            // HF: rescale by 1/255 (f32), then (x - 0.5) / 0.5.
            values[channel * plane + i] = (f32::from(v) * (1.0 / 255.0) - 0.5) / 0.5;
        }
    }
    Ok(Tensor::from_vec(values, (3, size, size), device)?)
}

/// PIL's bilinear filter weights for resampling `in_size` samples to `out_size`: for each output
/// sample, the first input index and the normalised weights.
fn pil_bilinear_weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear (triangle) filter has support 1
    (0..out_size)
        .map(|out| {
            let center = (out as f64 + 0.5) * scale;
            // PIL truncates towards zero after adding 0.5; the values here are >= -0.5.
            let first = ((center - support + 0.5).max(0.0)) as usize;
            let last = ((center + support + 0.5) as usize).min(in_size);
            let mut weights: Vec<f64> = (first..last)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            if total > 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (first, weights)
        })
        .collect()
}

/// One resampling pass along one axis of an interleaved RGB buffer, rounded to 8 bits as PIL does.
/// `stride_in`/`stride_out` step between samples along the axis, `lines` are the other axis.
fn resample_axis(
    input: &[u8],
    weights: &[(usize, Vec<f64>)],
    lines: usize,
    line_step: (usize, usize),
    sample_step: (usize, usize),
    out_len: usize,
) -> Vec<u8> {
    let mut output = vec![0u8; out_len];
    for line in 0..lines {
        for (o, (first, w)) in weights.iter().enumerate() {
            for channel in 0..3 {
                let mut sum = 0.0f64;
                for (k, weight) in w.iter().enumerate() {
                    let index = line * line_step.0 + (first + k) * sample_step.0 + channel;
                    sum += weight * f64::from(input[index]);
                }
                output[line * line_step.1 + o * sample_step.1 + channel] =
                    (sum + 0.5).floor().clamp(0.0, 255.0) as u8;
            }
        }
    }
    output
}

/// Resizes like PIL's `Image.resize((width, height), BILINEAR)`: horizontal pass, then vertical.
fn resize_bilinear(rgb: &RgbImage, width: usize, height: usize) -> Vec<u8> {
    let (in_w, in_h) = (rgb.width() as usize, rgb.height() as usize);
    let mut data = std::borrow::Cow::Borrowed(rgb.as_raw().as_slice());
    let mut current_w = in_w;
    if in_w != width {
        let weights = pil_bilinear_weights(in_w, width);
        data = std::borrow::Cow::Owned(resample_axis(
            &data,
            &weights,
            in_h,
            (in_w * 3, width * 3),
            (3, 3),
            width * in_h * 3,
        ));
        current_w = width;
    }
    if in_h != height {
        let weights = pil_bilinear_weights(in_h, height);
        data = std::borrow::Cow::Owned(resample_axis(
            &data,
            &weights,
            current_w,
            (3, 3),
            (current_w * 3, current_w * 3),
            current_w * height * 3,
        ));
    }
    data.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_untouched_and_values_are_normalised() {
        let rgb = RgbImage::from_fn(4, 4, |x, y| image::Rgb([0, 255, (x * 16 + y) as u8]));
        let t = pixels(&rgb, 4, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[3, 4, 4]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v[..16].iter().all(|&x| x == -1.0));
        assert!(v[16..32].iter().all(|&x| x == 1.0));
        assert!((v[32 + 5] - ((17.0 / 255.0 - 0.5) / 0.5)).abs() < 1e-6);
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        let rgb = RgbImage::from_pixel(37, 91, image::Rgb([10, 128, 250]));
        for size in [8usize, 56, 100] {
            let resized = resize_bilinear(&rgb, size, size);
            assert_eq!(resized.len(), size * size * 3);
            assert!(resized.chunks_exact(3).all(|p| p == [10, 128, 250]));
        }
    }

    #[test]
    fn shrinking_averages_neighbours() {
        // Two columns, black and white, shrunk to one: PIL gives the mean.
        let rgb = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 0 } else { 255 }; 3]));
        let resized = resize_bilinear(&rgb, 1, 1);
        assert_eq!(resized, vec![128, 128, 128]);
    }

    #[test]
    fn unsupported_and_broken_files_are_one_line_errors() {
        let dir = std::env::temp_dir().join(format!("medscribe-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.png");
        std::fs::write(&text, b"this is not an image").unwrap();
        let err = read_rgb(&text).unwrap_err().to_string();
        assert!(
            err.contains("notes.png") && err.contains("PNG or JPEG"),
            "{err}"
        );
        let gif = dir.join("anim.gif");
        std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap();
        let err = read_rgb(&gif).unwrap_err().to_string();
        assert!(err.contains("anim.gif") && err.contains("Gif"), "{err}");
        let png = dir.join("cut.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR").unwrap();
        let err = read_rgb(&png).unwrap_err().to_string();
        assert!(err.contains("cut.png") && err.contains("decode"), "{err}");
        let err = read_rgb(&dir.join("missing.jpg")).unwrap_err().to_string();
        assert!(
            err.contains("missing.jpg") && err.contains("cannot open"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A PNG chunk with its CRC.
    fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
        let mut crc = 0xffff_ffffu32;
        for &byte in kind.iter().chain(data) {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend(kind);
        out.extend(data);
        out.extend((!crc).to_be_bytes());
        out
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("medscribe-image-hostile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn a_tiny_png_claiming_a_huge_size_is_refused_before_decoding() {
        // 16384 x 16384, 1 bit per pixel: a few bytes on disk, 800 MB as RGB.
        let mut header = 16_384u32.to_be_bytes().to_vec();
        header.extend(16_384u32.to_be_bytes());
        header.extend([1, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &header));
        png.extend(chunk(
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        ));
        png.extend(chunk(b"IEND", &[]));
        let path = temp("huge.png");
        std::fs::write(&path, &png).unwrap();
        let start = std::time::Instant::now();
        let err = read_rgb(&path).unwrap_err().to_string();
        assert!(
            err.contains("huge.png") && err.contains("megapixels"),
            "{err}"
        );
        assert!(start.elapsed().as_secs() < 2);
    }

    #[test]
    fn a_jpeg_whose_scan_ends_early_is_refused_not_padded() {
        let rgb = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, 90])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
            .encode_image(&rgb)
            .unwrap();
        let whole = temp("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        let decoded = read_rgb(&whole).unwrap();
        assert_eq!(decoded.dimensions(), (64, 64));
        // The same header claiming 4096 x 4096 (under the pixel limit): its scan is far too short.
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xff, 0xc0])
            .expect("a baseline frame header");
        let mut claims = jpeg.clone();
        claims[sof + 5..sof + 7].copy_from_slice(&4096u16.to_be_bytes());
        claims[sof + 7..sof + 9].copy_from_slice(&4096u16.to_be_bytes());
        let path = temp("claims.jpg");
        std::fs::write(&path, &claims).unwrap();
        let err = read_rgb(&path).unwrap_err().to_string();
        assert!(err.contains("claims.jpg") && !err.contains('\n'), "{err}");
        // And a cut-off file.
        let cut = temp("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
        assert!(read_rgb(&cut).is_err());
    }

    #[test]
    #[cfg(unix)]
    fn devices_and_fifos_named_as_images_are_refused_at_once() {
        let link = temp("zero.png");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let err = read_rgb(&link).unwrap_err().to_string();
        assert!(
            err.contains("zero.png") && err.contains("regular file"),
            "{err}"
        );
        let fifo = temp("fifo.png");
        let _ = std::fs::remove_file(&fifo);
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_rgb(&fifo).unwrap_err().to_string();
        assert!(
            err.contains("fifo.png") && err.contains("regular file"),
            "{err}"
        );
    }
}
