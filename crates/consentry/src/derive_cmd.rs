//! `consentry derive PATH...`: derivative-matching signatures
//! (`consentry-derive`: global PDQ, the top band's PDQ and local keypoints) of image files,
//! computed locally. Only the signatures are printed.

use anyhow::Result;
use consentry_derive::{Extractor, Pixels};
use consentry_media::DecodeOptions;
use consentry_pdq::PixelFormat;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints `signature<TAB>pdq<TAB>quality<TAB>keypoints<TAB>path` per image: the signature is the \
stable base64 form of consentry-derive's Signature (at most 1,885 bytes before base64), pdq its global PDQ hash.\n\
Only signatures are printed; the images never leave this machine.\n\
To protect images in a bank, `consentry hash --signal derive -f jsonl` prints the same signatures as JSON lines that \
`POST /v1/banks/NAME/import?format=jsonl` takes as they are.\n\
Exit status: 0 when every file was processed, 1 when any failed."
)]
pub struct DeriveArgs {
    /// Image files; `-` reads one image from standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// Refuse images with more pixels than this (decompression bombs).
    #[arg(long, default_value_t = DecodeOptions::default().max_pixels, value_name = "N")]
    max_pixels: u64,
}

fn signature_line(bytes: &[u8], opts: &DecodeOptions, ex: &mut Extractor) -> Result<String, String> {
    let img = consentry_media::decode(bytes, opts).map_err(|e| e.to_string())?;
    let rgb = img.to_rgb8();
    let px = Pixels::new(img.width, img.height, PixelFormat::Rgb8, &rgb).map_err(|e| e.to_string())?;
    let sig = ex.signature(&px);
    Ok(format!("{}\t{}\t{}\t{}", sig.to_base64(), sig.pdq.to_hex(), sig.quality, sig.keypoints.len()))
}

pub fn run(args: DeriveArgs) -> Result<ExitCode> {
    let opts = DecodeOptions { max_pixels: args.max_pixels, ..DecodeOptions::default() };
    let mut ex = Extractor::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    for p in &args.paths {
        let name = p.display().to_string();
        let bytes = if name == "-" {
            let mut b = Vec::new();
            std::io::stdin().read_to_end(&mut b).map(|_| b)
        } else {
            std::fs::read(p)
        };
        let line = match bytes {
            Ok(b) => signature_line(&b, &opts, &mut ex),
            Err(e) => Err(e.to_string()),
        };
        match line {
            Ok(l) => writeln!(out, "{l}\t{name}")?,
            Err(e) => {
                failed += 1;
                out.flush()?;
                eprintln!("consentry: {name}: {e}");
            }
        }
    }
    out.flush()?;
    Ok(if failed > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
