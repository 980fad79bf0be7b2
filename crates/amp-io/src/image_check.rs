//! Image validation before an image is sent anywhere or trained on (docs/reliability.md).
//!
//! [`probe_file`] reads only the header (format and dimensions: cheap enough for every record
//! at load time); [`decode`] decodes the whole image (what the upload paths call, so a truncated
//! PNG or a text file with an image name never reaches a server). Formats: PNG and JPEG (the
//! workspace builds `image` with those two only).
use std::io::Cursor;
use std::path::Path;

/// Largest accepted side, in pixels.
pub const MAX_SIDE: u32 = 32_768;
/// Largest accepted pixel count (about 268 megapixels).
pub const MAX_PIXELS: u64 = 1 << 28;

/// A valid image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// MIME type of the detected format (`image/png`, `image/jpeg`).
    pub mime: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// Why an image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageCheckError {
    /// The file could not be read.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// Not a PNG or JPEG (by content, not name).
    #[error("not a PNG or JPEG image ({0})")]
    Format(String),
    /// The image data is corrupt or truncated.
    #[error("corrupt or truncated {mime} image: {reason}")]
    Corrupt {
        /// The detected format.
        mime: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// Zero or absurd dimensions.
    #[error("implausible size {width}x{height} (each side must be 1..={MAX_SIDE}, at most {MAX_PIXELS} pixels)")]
    Size {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

fn mime(f: image::ImageFormat) -> Result<&'static str, ImageCheckError> {
    match f {
        image::ImageFormat::Png => Ok("image/png"),
        image::ImageFormat::Jpeg => Ok("image/jpeg"),
        other => Err(ImageCheckError::Format(format!("{other:?}"))),
    }
}

fn checked(mime: &'static str, width: u32, height: u32) -> Result<ImageInfo, ImageCheckError> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageCheckError::Size { width, height });
    }
    Ok(ImageInfo { mime, width, height })
}

/// A reader over in-memory bytes with its format guessed from the content.
type Reader<'a> = image::ImageReader<Cursor<&'a [u8]>>;

fn reader(bytes: &[u8]) -> Result<(Reader<'_>, &'static str), ImageCheckError> {
    let r = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let f = r.format().ok_or_else(|| ImageCheckError::Format("unrecognised content".into()))?;
    Ok((r, mime(f)?))
}

/// Format and dimensions from the header of `bytes` (no full decode).
pub fn probe(bytes: &[u8]) -> Result<ImageInfo, ImageCheckError> {
    let (r, mime) = reader(bytes)?;
    let (w, h) = r.into_dimensions().map_err(|e| ImageCheckError::Corrupt { mime, reason: e.to_string() })?;
    checked(mime, w, h)
}

/// [`probe`] of a file, reading at most its first 64 KiB.
pub fn probe_file(path: &Path) -> Result<ImageInfo, ImageCheckError> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(path)?.take(64 << 10).read_to_end(&mut head)?;
    probe(&head)
}

/// Decodes the whole image: format, dimensions and every byte of pixel data checked.
pub fn decode(bytes: &[u8]) -> Result<ImageInfo, ImageCheckError> {
    let info = probe(bytes)?;
    let (r, mime) = reader(bytes)?;
    r.decode().map_err(|e| ImageCheckError::Corrupt { mime, reason: e.to_string() })?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid 4x4 RGB PNG.
    const PNG: [u8; 73] = [
        137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0, 38, 147, 9, 41,
        0, 0, 0, 16, 73, 68, 65, 84, 120, 156, 99, 56, 33, 39, 7, 71, 12, 196, 113, 0, 177, 99, 16, 65, 59, 75, 99, 130,
        0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
    ];

    #[test]
    fn valid_corrupt_and_foreign_content() {
        assert_eq!(decode(&PNG).unwrap(), ImageInfo { mime: "image/png", width: 4, height: 4 });
        assert!(probe(&PNG[..60]).is_ok(), "the header alone is intact");
        assert!(matches!(decode(&PNG[..60]), Err(ImageCheckError::Corrupt { .. })));
        assert!(matches!(decode(b"root:x:0:0:root:/root:/bin/bash\n"), Err(ImageCheckError::Format(_))));
        assert!(decode(b"\xff\xd8\xff").is_err());
        assert!(decode(b"").is_err());
        let mut zero = PNG;
        zero[19] = 0; // width 0
        assert!(probe(&zero).is_err());
    }
}
