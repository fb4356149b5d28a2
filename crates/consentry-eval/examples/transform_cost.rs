//! Time each transform and the recompression on one image:
//! `cargo run --release -p consentry-eval --example transform_cost -- IMAGE [MAX_SIDE] [DONOR] [DUMP_DIR]`.
//! With DUMP_DIR, each query's JPEG bytes are written there for inspection.
use consentry_eval::rng::Rng;
use consentry_eval::transforms::{decode_rgb, fit_longest, standard_set, telegram_recompress};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).expect("read image");
    let max_side: u32 = args.get(2).map_or(2048, |s| s.parse().expect("max side"));
    let img = fit_longest(&decode_rgb(&bytes).expect("decode"), max_side);
    let donor = match args.get(3) {
        Some(p) => {
            fit_longest(&decode_rgb(&std::fs::read(p).expect("read donor")).expect("decode donor"), max_side)
        }
        None => img.clone(),
    };
    let dump = args.get(4).map(std::path::PathBuf::from);
    println!("{}x{}", img.width(), img.height());
    for t in standard_set() {
        let t0 = Instant::now();
        let out = t.apply(&img, &donor, &mut Rng::new(1));
        let a = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let q = telegram_recompress(&out);
        let b = t1.elapsed().as_secs_f64() * 1e3;
        if let Some(d) = &dump {
            let name: String = t
                .label()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
                .collect();
            std::fs::write(d.join(format!("{name}.jpg")), &q).expect("write query");
        }
        println!("{:40} transform {:7.1} ms  recompress {:7.1} ms  {} KB", t.label(), a, b, q.len() / 1024);
    }
}
