//! Hashes the RGB pixels of PNG files and prints the hash, quality and time.
//! `cargo run --release -p consentry-pdq --example hash_png -- FILE.png...`

use consentry_pdq::{Hasher, ImageRef, PixelFormat};
use std::time::Instant;

fn main() {
    let mut hasher = Hasher::new();
    for path in std::env::args().skip(1) {
        let decoder = png::Decoder::new(std::fs::File::open(&path).expect("open"));
        let mut reader = decoder.read_info().expect("png header");
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).expect("png data");
        let format = match info.color_type {
            png::ColorType::Rgb => PixelFormat::Rgb8,
            png::ColorType::Rgba => PixelFormat::Rgba8,
            png::ColorType::Grayscale => PixelFormat::Luma8,
            png::ColorType::GrayscaleAlpha => PixelFormat::LumaA8,
            other => panic!("{path}: {other:?} PNGs are not handled by this example"),
        };
        let img = ImageRef::new(info.width, info.height, format, &buf[..info.buffer_size()]).expect("size");
        let reps = 20;
        let t = Instant::now();
        let mut out = hasher.hash(&img);
        for _ in 1..reps {
            out = hasher.hash(&img);
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / reps as f64;
        println!("{}\t{}\t{}x{}\t{ms:.2} ms\t{path}", out.hash, out.quality, info.width, info.height);
    }
}
