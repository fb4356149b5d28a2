//! The one error type of the crate.

use std::fmt;

/// Why bytes could not be turned into pixels.
///
/// Every variant is a property of the input (or of the limits the caller
/// set), never a bug: hostile or broken uploads end here, not in a panic.
/// The messages are one line and never contain image content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// No bytes at all.
    Empty,
    /// The bytes do not start like any supported format (JPEG, PNG, GIF,
    /// WebP, BMP, TIFF).
    UnknownFormat,
    /// A supported container using a feature the decoder does not implement
    /// (for example an unusual TIFF compression).
    Unsupported(String),
    /// The header claims more pixels than [`DecodeOptions::max_pixels`](crate::DecodeOptions::max_pixels)
    /// allows; nothing was decoded.
    TooLarge {
        /// Width claimed by the header.
        width: u32,
        /// Height claimed by the header.
        height: u32,
        /// The limit in force.
        max_pixels: u64,
    },
    /// An animation has more frames than
    /// [`DecodeOptions::max_frames`](crate::DecodeOptions::max_frames), or its frames together
    /// exceed [`DecodeOptions::max_total_pixels`](crate::DecodeOptions::max_total_pixels).
    TooManyFrames {
        /// Frames decoded before the limit was hit (the limit was hit on the next one).
        frames: usize,
        /// The frame limit in force.
        max_frames: usize,
        /// The total pixel budget in force.
        max_total_pixels: u64,
    },
    /// The bytes are damaged, truncated, or inconsistent.
    Corrupt(String),
}

impl fmt::Display for MediaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MediaError::Empty => f.write_str("empty input: no image bytes"),
            MediaError::UnknownFormat => {
                f.write_str("unknown format: not a JPEG, PNG, GIF, WebP, BMP or TIFF image")
            }
            MediaError::Unsupported(why) => write!(f, "unsupported image: {}", one_line(why)),
            MediaError::TooLarge { width, height, max_pixels } => {
                write!(f, "image too large: {width}×{height} pixels exceeds the limit of {max_pixels} pixels")
            }
            MediaError::TooManyFrames { frames, max_frames, max_total_pixels } => write!(
                f,
                "animation too large: stopped after {frames} frames (limits: {max_frames} frames, \
                 {max_total_pixels} pixels in all frames together)"
            ),
            MediaError::Corrupt(why) => write!(f, "corrupt image: {}", one_line(why)),
        }
    }
}

impl std::error::Error for MediaError {}

/// Decoder messages sometimes span lines; keep ours to one, and short.
fn one_line(s: &str) -> String {
    let mut out: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

impl From<image::ImageError> for MediaError {
    fn from(e: image::ImageError) -> Self {
        use image::ImageError as E;
        match e {
            E::Unsupported(u) => MediaError::Unsupported(u.to_string()),
            E::Limits(l) => MediaError::Corrupt(format!("decoder limit exceeded: {l}")),
            E::IoError(io) => MediaError::Corrupt(format!("truncated or unreadable: {io}")),
            other => MediaError::Corrupt(other.to_string()),
        }
    }
}
