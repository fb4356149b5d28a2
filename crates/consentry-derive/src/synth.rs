//! Benign synthetic test images for the tests of the crates that carry the derive signal
//! (server, bot): coloured shapes on a gradient, and a derivative of one that global PDQ
//! misses (one side cropped, padded, the lower centre replaced). No I/O, no photos.

/// A packed RGB image.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// `height` rows of `3 × width` bytes.
    pub data: Vec<u8>,
}

impl std::fmt::Debug for RgbImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    fn new(width: u32, height: u32) -> RgbImage {
        RgbImage { width, height, data: vec![0; (width * height * 3) as usize] }
    }
    fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * self.width + x) * 3) as usize;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
    fn put(&mut self, x: u32, y: u32, c: [u8; 3]) {
        let i = ((y * self.width + x) * 3) as usize;
        self.data[i..i + 3].copy_from_slice(&c);
    }
    /// The pixels for the extractor.
    pub fn pixels(&self) -> crate::Pixels<'_> {
        crate::Pixels::new(self.width, self.height, consentry_pdq::PixelFormat::Rgb8, &self.data)
            .expect("sizes agree")
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }
}

/// Six keypoints whose descriptors are flat or pure-ramp descriptors (what a smooth sky gives in
/// any photo), spread over a 512-px working image: a copy of them matches through the local
/// rule only when their keys are not stopped (`Params::stop_keys`).
#[cfg(not(target_arch = "wasm32"))]
pub fn ramp_keypoints() -> Vec<crate::Keypoint> {
    let ramps = crate::ramp_descriptors();
    (0..6u16)
        .map(|i| crate::Keypoint {
            x: 8 * (40 + 70 * i),
            y: 8 * (30 + 45 * (i % 3)),
            level: 0,
            desc: ramps[(usize::from(i) * 53) % ramps.len()],
        })
        .collect()
}

/// A colour gradient with 60 random rectangles and discs placed by `seed`.
pub fn scene(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let (c0, c1) = ([r.below(256), r.below(256), r.below(256)], [r.below(256), r.below(256), r.below(256)]);
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let t = (x + y) as f32 / (w + h) as f32;
            let n = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 7) as f32;
            let c = |i: usize| (c0[i] as f32 * (1.0 - t) + c1[i] as f32 * t + n).clamp(0.0, 255.0) as u8;
            img.put(x, y, [c(0), c(1), c(2)]);
        }
    }
    for _ in 0..60 {
        let (cx, cy) = (r.below(w), r.below(h));
        let (rw, rh) = (8 + r.below(w / 6), 8 + r.below(h / 6));
        let col = [r.below(256) as u8, r.below(256) as u8, r.below(256) as u8];
        let disc = r.below(2) == 0;
        for y in cy.saturating_sub(rh)..(cy + rh).min(h) {
            for x in cx.saturating_sub(rw)..(cx + rw).min(w) {
                let (dx, dy) = ((x as f32 - cx as f32) / rw as f32, (y as f32 - cy as f32) / rh as f32);
                if !disc || dx * dx + dy * dy <= 1.0 {
                    img.put(x, y, col);
                }
            }
        }
    }
    img
}

/// `img` with its bottom-centre region covering `frac` of the area (up to 80 % of the height,
/// from the bottom edge) taken from `other` at the same place: the body area replaced, the
/// top fifth kept.
pub fn replace_body(img: &RgbImage, other: &RgbImage, frac: f32) -> RgbImage {
    let mut o = img.clone();
    let (w, h) = (img.width, img.height);
    let rh = ((frac.sqrt() * 1.1).min(0.8) * h as f32) as u32;
    let rw = (((frac * (w * h) as f32) / rh.max(1) as f32) as u32).min(w);
    let x0 = (w - rw) / 2;
    for y in h - rh..h {
        for x in x0..x0 + rw {
            o.put(x, y, other.get(x % other.width, y % other.height));
        }
    }
    o
}

/// `img` mirrored left to right.
pub fn mirror(img: &RgbImage) -> RgbImage {
    let mut o = img.clone();
    for y in 0..img.height {
        for x in 0..img.width {
            o.put(img.width - 1 - x, y, img.get(x, y));
        }
    }
    o
}

/// The derivative the tests use: the lower-centre region covering 40% of the image replaced
/// with random 4×4 blocks seeded by `seed` (the "undress" pattern, simulated with benign
/// noise), 20% cropped off the right side, then a 10% solid border on every side.
pub fn derivative(img: &RgbImage, seed: u64) -> RgbImage {
    let mut r = Rng(seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1);
    let blocks: Vec<[u8; 3]> =
        (0..4096).map(|_| [r.below(256) as u8, r.below(256) as u8, r.below(256) as u8]).collect();
    let (w, h) = (img.width, img.height);
    // Replace the lower centre.
    let mut o = img.clone();
    let frac = 0.4f32;
    let rh = ((frac.sqrt() * 1.1).min(0.8) * h as f32) as u32;
    let rw = ((frac * (w * h) as f32) / rh as f32) as u32;
    let x0 = (w - rw) / 2;
    for y in h - rh..h {
        for x in x0..x0 + rw {
            o.put(x, y, blocks[(((y / 4) * 67 + x / 4) % 4096) as usize]);
        }
    }
    // Crop 20% off the right.
    let cw = w * 4 / 5;
    // Pad by 10% on each side.
    let (bx, by) = (cw / 10, h / 10);
    let mut p = RgbImage::new(cw + 2 * bx, h + 2 * by);
    for y in 0..p.height {
        for x in 0..p.width {
            let c = if x >= bx && x < bx + cw && y >= by && y < by + h {
                o.get(x - bx, y - by)
            } else {
                [24, 24, 28]
            };
            p.put(x, y, c);
        }
    }
    p
}
