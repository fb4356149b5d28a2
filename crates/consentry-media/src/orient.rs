//! EXIF orientation applied to a packed pixel buffer.

/// An EXIF orientation, 1 to 8, as the transform that makes the image
/// display upright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Orientation(pub(crate) u8);

impl Orientation {
    pub(crate) fn from_exif_chunk(exif: &[u8]) -> Orientation {
        use image::metadata::Orientation as O;
        Orientation(O::from_exif_chunk(exif).map_or(1, O::to_exif))
    }

    pub(crate) fn from_image(o: image::metadata::Orientation) -> Orientation {
        Orientation(o.to_exif())
    }

    /// Whether width and height swap.
    pub(crate) fn transposes(self) -> bool {
        matches!(self.0, 5..=8)
    }
}

/// Apply `o` to `h` rows of `w` pixels of `channels` bytes each; returns the
/// new buffer and its width and height. Orientation 1 (or unknown) returns
/// the input untouched.
pub(crate) fn apply(o: Orientation, w: u32, h: u32, channels: usize, data: Vec<u8>) -> (u32, u32, Vec<u8>) {
    if !(2..=8).contains(&o.0) || w == 0 || h == 0 {
        return (w, h, data);
    }
    let (w, h) = (w as usize, h as usize);
    let (ow, oh) = if o.transposes() { (h, w) } else { (w, h) };
    // Source pixel of output (x', y') = base + x'·dx + y'·dy (in pixels).
    let (wi, hi) = (w as isize, h as isize);
    let (base, dx, dy): (isize, isize, isize) = match o.0 {
        2 => (wi - 1, -1, wi),        // flip horizontal: (w-1-x', y')
        3 => (wi * hi - 1, -1, -wi),  // rotate 180: (w-1-x', h-1-y')
        4 => ((hi - 1) * wi, 1, -wi), // flip vertical: (x', h-1-y')
        5 => (0, wi, 1),              // transpose: (y', x')
        6 => ((hi - 1) * wi, -wi, 1), // rotate 90 cw: (y', h-1-x')
        7 => (wi * hi - 1, -wi, -1),  // transverse: (w-1-y', h-1-x')
        8 => (wi - 1, wi, -1),        // rotate 270 cw: (w-1-y', x')
        _ => unreachable!(),
    };
    let mut out = vec![0u8; data.len()];
    match channels {
        1 => remap::<1>(&data, &mut out, ow, oh, base, dx, dy),
        2 => remap::<2>(&data, &mut out, ow, oh, base, dx, dy),
        3 => remap::<3>(&data, &mut out, ow, oh, base, dx, dy),
        4 => remap::<4>(&data, &mut out, ow, oh, base, dx, dy),
        _ => unreachable!("pixel formats have 1 to 4 channels"),
    }
    (ow as u32, oh as u32, out)
}

fn remap<const N: usize>(
    src: &[u8],
    out: &mut [u8],
    ow: usize,
    oh: usize,
    base: isize,
    dx: isize,
    dy: isize,
) {
    for (y, row) in out.chunks_exact_mut(ow * N).take(oh).enumerate() {
        let mut s = base + y as isize * dy;
        for px in row.chunks_exact_mut(N) {
            let i = s as usize * N;
            px.copy_from_slice(&src[i..i + N]);
            s += dx;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};

    #[test]
    fn matches_image_crate_for_all_eight() {
        let (w, h) = (7u32, 5u32);
        let px: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
        for exif in 1..=8u8 {
            let mut expect = DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, px.clone()).unwrap());
            expect.apply_orientation(image::metadata::Orientation::from_exif(exif).unwrap());
            let (ow, oh, out) = apply(Orientation(exif), w, h, 3, px.clone());
            assert_eq!((ow, oh), (expect.width(), expect.height()), "orientation {exif}");
            assert_eq!(out, expect.into_rgb8().into_raw(), "orientation {exif}");
        }
    }

    #[test]
    fn every_channel_count() {
        let (w, h) = (3u32, 2u32);
        for ch in 1..=4usize {
            let px: Vec<u8> = (0..w as usize * h as usize * ch).map(|i| i as u8).collect();
            let (ow, oh, out) = apply(Orientation(6), w, h, ch, px.clone());
            assert_eq!((ow, oh), (2, 3));
            // Rotating 90° clockwise: top-left of the output is bottom-left of the input.
            // Input row 1 starts at pixel 3 (width 3).
            assert_eq!(&out[..ch], &px[3 * ch..4 * ch]);
            let (_, _, back) = apply(Orientation(8), ow, oh, ch, out);
            assert_eq!(back, px);
        }
    }
}
