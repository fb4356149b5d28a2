//! Snapshot files and the append-only journal.
//!
//! # Snapshot (`*.snap`), all integers little-endian
//! ```text
//! header   "CNSXIDX\0" | version u32 (=4) | segment count u32 | journal generation u64
//! segment  kind u32 (0 scan-only, 1 indexed) | n u64 | m u32 | m × width u32
//!          ids: form u32, then n×u64 (form 0) or n×u32 (form 1)
//!          hashes n×4×u64 (words, most significant first)
//!          per table t: directory, then positions if t > 0
//!          directory: form u32, then for form 0 (plain) (2^width+1)×u32 bucket starts,
//!          for form 1 (compact) (2^width/256+1)×u32 block starts, (2^width+1)×u16 starts
//!          within the block
//!          positions: form u32, then n×u32 (form 0), n×3 bytes and one zero byte (form 1),
//!          form 1's bytes then n×u16 sketches (form 4), or n×u32 then n×u16 sketches (form 5)
//!          every section is zero-padded to a multiple of 4 bytes
//!          deleted count u64 | deleted positions ×u32
//! buffer   n u64 | ids n×u64 | hashes n×4×u64
//! footer   body length u64 | CRC-32 (IEEE) of the body u32 | version u32 | "CNSXEND\0"
//! ```
//! Version 1 (no form fields: ids u64, directories and positions u32) is still read; its
//! arrays are narrowed on load where they fit. Versions 1 and 2 have no sketches (they are
//! computed on load); version 3 interleaved each index with its sketch (forms 2: 5-byte and
//! 3: 6-byte records), split on load.
//!
//! Loading checks the footer first (magic, version, body length = file length
//! − 24), reads the body straight into the index arrays while computing the
//! CRC, rejects counts that exceed the bytes left before allocating, compares
//! the CRC, then validates the structure — so a truncated or corrupt file is
//! an error, never a crash or a wrong index.
//!
//! # Journal (`*.log`)
//! ```text
//! header   "CNSXLOG\0" | version u32 | generation u64
//! record   op u8 (1 insert, 2 remove) | id u64 | hash 32 bytes | CRC-32 of the previous 41 bytes u32
//! ```

use crate::segment::{ChunkPlan, Dir, Ids, Positions, Segment, Table, H};
use crate::{Hash256, Index, IndexConfig, InsertError, SegRef, State};
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: &[u8; 8] = b"CNSXIDX\0";
const END_MAGIC: &[u8; 8] = b"CNSXEND\0";
const LOG_MAGIC: &[u8; 8] = b"CNSXLOG\0";
/// Snapshot format written (the reader also takes [`OLDEST_VERSION`]..).
const VERSION: u32 = 4;
const OLDEST_VERSION: u32 = 1;
/// Journal format (unchanged since the first snapshot version).
const LOG_VERSION: u32 = 1;
const FOOTER: u64 = 24;
const RECORD: usize = 45;

/// Why a snapshot or journal could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// Reading failed.
    Io(io::Error),
    /// Not a consentry index file (bad magic), or cut short.
    Truncated(String),
    /// Written by an unknown format version.
    Version(u32),
    /// The checksum does not match: the file is corrupt.
    Checksum {
        /// CRC in the footer.
        stored: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The content is inconsistent (a corrupt file whose checksum happens to match, or a bug).
    Corrupt(String),
    /// A journal record was refused by the index.
    Insert(InsertError),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(e) => write!(f, "I/O error: {e}"),
            LoadError::Truncated(s) => write!(f, "truncated or not an index file: {s}"),
            LoadError::Version(v) => {
                write!(f, "unsupported index format version {v} (this build reads versions {OLDEST_VERSION} to {VERSION})")
            }
            LoadError::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupt"
                )
            }
            LoadError::Corrupt(s) => write!(f, "corrupt index file: {s}"),
            LoadError::Insert(e) => write!(f, "journal record refused: {e}"),
        }
    }
}

impl std::error::Error for LoadError {}

impl From<io::Error> for LoadError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            LoadError::Truncated("unexpected end of file".into())
        } else {
            LoadError::Io(e)
        }
    }
}

/// Plain-old-data element types we read and write as raw little-endian bytes.
trait Pod: Copy + Default {}
impl Pod for u8 {}
impl Pod for u16 {}
impl Pod for u32 {}
impl Pod for u64 {}
impl Pod for H {}

#[cfg(not(target_endian = "little"))]
compile_error!("the snapshot format is little-endian; big-endian hosts need a byte-swapping reader");

fn bytes<T: Pod>(v: &[T]) -> &[u8] {
    // SAFETY: T is a plain integer (or an array of them) with no padding; any byte view is valid.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn bytes_mut<T: Pod>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and every byte pattern is a valid T.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.crc.update(b);
        self.len += b.len() as u64;
        self.inner.write_all(b)
    }
    fn u32(&mut self, v: u32) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> io::Result<()> {
        self.put(&v.to_le_bytes())
    }
    /// Zero bytes up to the next multiple of 4, so every section starts 4-byte aligned.
    fn pad4(&mut self) -> io::Result<()> {
        let k = (4 - self.len % 4) % 4;
        self.put(&[0u8; 3][..k as usize])
    }
    /// A section in one of several forms: the form number, the arrays, then the padding.
    fn tagged(&mut self, form: u32, arrays: &[&[u8]]) -> io::Result<()> {
        self.u32(form)?;
        for a in arrays {
            self.put(a)?;
        }
        self.pad4()
    }
}

/// Reads the body of a snapshot at known offsets, computing its CRC. Large arrays are read by
/// all threads at once, each reading and checksumming its own part (the CRCs are combined in
/// order): at 10 M entries that halves the time a load spends faulting pages in, copying and
/// checksumming on a 2-core machine.
struct CrcReader<'f> {
    file: &'f File,
    crc: crc32fast::Hasher,
    left: u64,
    read: u64,
}

/// Arrays of at least this many bytes are read in parallel parts.
const PARALLEL_READ: usize = 8 << 20;

/// `buf.len()` bytes of `file` at `off` (positional: shared by the threads of a load).
fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, off)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            match std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], off + done as u64)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                k => done += k,
            }
        }
        Ok(())
    }
}

impl CrcReader<'_> {
    fn take(&mut self, b: &mut [u8]) -> Result<(), LoadError> {
        if b.len() as u64 > self.left {
            return Err(LoadError::Truncated("a section runs past the end of the body".into()));
        }
        read_at(self.file, b, self.read)?;
        self.crc.update(b);
        self.left -= b.len() as u64;
        self.read += b.len() as u64;
        Ok(())
    }
    /// Skips the zero padding written by `CrcWriter::pad4`.
    fn pad4(&mut self) -> Result<(), LoadError> {
        let mut pad = [0u8; 3];
        let k = ((4 - self.read % 4) % 4) as usize;
        self.take(&mut pad[..k])?;
        if pad.iter().any(|&b| b != 0) {
            return Err(LoadError::Corrupt("non-zero padding".into()));
        }
        Ok(())
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        let mut b = [0; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, LoadError> {
        let mut b = [0; 8];
        self.take(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads `n` elements, refusing before allocation if they cannot fit in what is left.
    fn vec<T: Pod>(&mut self, n: u64) -> Result<Vec<T>, LoadError> {
        let size = std::mem::size_of::<T>() as u64;
        let len = match n.checked_mul(size) {
            Some(b) if b <= self.left => b as usize,
            _ => return Err(LoadError::Corrupt(format!("section of {n} elements is larger than the file"))),
        };
        let threads = rayon::current_num_threads();
        if len < PARALLEL_READ || threads < 2 {
            let mut v = crate::segment::huge_vec(n as usize, T::default());
            self.take(bytes_mut(&mut v))?;
            return Ok(v);
        }
        // Parts of whole 2 MiB pages (the last takes the rest), two per thread for balance; each
        // thread zeroes its part (so the pages are faulted in by the thread that fills them),
        // reads it and checksums it.
        let mut v: Vec<T> = crate::segment::huge_capacity(n as usize);
        let step = (len / (2 * threads)).next_multiple_of(2 << 20);
        let parts: Vec<(usize, usize)> = (0..len).step_by(step).map(|a| (a, (a + step).min(len))).collect();
        let base = v.as_mut_ptr() as usize;
        let (file, off) = (self.file, self.read);
        use rayon::prelude::*;
        let crcs: Vec<io::Result<crc32fast::Hasher>> = parts
            .into_par_iter()
            .map(|(a, b)| {
                // SAFETY: the parts are disjoint ranges inside `v`'s allocation of `len` bytes;
                // each is zeroed (initialised) before a slice over it is made, and T is plain data
                // for which every byte pattern is valid.
                let part = unsafe {
                    let p = (base + a) as *mut u8;
                    p.write_bytes(0, b - a);
                    std::slice::from_raw_parts_mut(p, b - a)
                };
                read_at(file, part, off + a as u64)?;
                let mut h = crc32fast::Hasher::new();
                h.update(part);
                Ok(h)
            })
            .collect();
        for h in crcs {
            self.crc.combine(&h?);
        }
        // SAFETY: every byte of the first `len` was initialised and filled above (an error
        // returned before this point, leaving the vector empty).
        unsafe { v.set_len(n as usize) };
        self.left -= len as u64;
        self.read += len as u64;
        Ok(v)
    }
}

impl Index {
    /// Writes a snapshot (atomically: to a temporary file, fsync, rename).
    pub fn save(&self, path: impl AsRef<Path>) -> io::Result<()> {
        self.save_with_generation(path.as_ref(), 0)
    }

    fn save_with_generation(&self, path: &Path, generation: u64) -> io::Result<()> {
        let st = self.snapshot();
        let tmp = tmp_path(path);
        {
            let f = File::create(&tmp)?;
            let mut w = CrcWriter {
                inner: io::BufWriter::with_capacity(1 << 20, f),
                crc: crc32fast::Hasher::new(),
                len: 0,
            };
            w.put(MAGIC)?;
            w.u32(VERSION)?;
            w.u32(st.segments.len() as u32)?;
            w.u64(generation)?;
            for sr in &st.segments {
                let seg = &sr.seg;
                w.u32(u32::from(seg.plan.is_some()))?;
                w.u64(seg.len() as u64)?;
                let widths: &[u32] = seg.plan.as_ref().map_or(&[], |p| &p.widths);
                w.u32(widths.len() as u32)?;
                for &x in widths {
                    w.u32(x)?;
                }
                match &seg.ids {
                    Ids::U64(v) => w.tagged(0, &[bytes(v)])?,
                    Ids::U32(v) => w.tagged(1, &[bytes(v)])?,
                }
                w.put(bytes(&seg.hashes))?;
                for (ti, t) in seg.tables.iter().enumerate() {
                    match &t.dir {
                        Dir::Wide(o) => w.tagged(0, &[bytes(o)])?,
                        Dir::Compact { base, rel } => w.tagged(1, &[bytes(base), bytes(rel)])?,
                    }
                    if ti > 0 {
                        match &t.positions {
                            Positions::U32(v) => w.tagged(0, &[bytes(v)])?,
                            Positions::U24(b) => w.tagged(1, &[b])?,
                            Positions::S24 { pos, sk } => w.tagged(4, &[pos, bytes(sk)])?,
                            Positions::S32 { pos, sk } => w.tagged(5, &[bytes(pos), bytes(sk)])?,
                            // only table 0 has them, and its sketches are computed at load
                            Positions::Implicit { .. } => {
                                return Err(io::Error::other(format!("table {ti} has table 0's form")));
                            }
                        }
                    }
                }
                let mut del: Vec<u32> = sr.deleted.iter().copied().collect();
                del.sort_unstable();
                w.u64(del.len() as u64)?;
                w.put(bytes(&del))?;
            }
            w.u64(st.buffer.len() as u64)?;
            let ids: Vec<u64> = st.buffer.iter().map(|e| e.0).collect();
            let hs: Vec<H> = st.buffer.iter().map(|e| e.1).collect();
            w.put(bytes(&ids))?;
            w.put(bytes(&hs))?;
            let (len, crc) = (w.len, w.crc.finalize());
            let mut f = w.inner.into_inner().map_err(|e| e.into_error())?;
            f.write_all(&len.to_le_bytes())?;
            f.write_all(&crc.to_le_bytes())?;
            f.write_all(&VERSION.to_le_bytes())?;
            f.write_all(END_MAGIC)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Loads a snapshot written by [`Index::save`].
    pub fn load(path: impl AsRef<Path>, config: IndexConfig) -> Result<Index, LoadError> {
        Self::load_with_generation(path.as_ref(), config).map(|(i, _)| i)
    }

    fn load_with_generation(path: &Path, config: IndexConfig) -> Result<(Index, u64), LoadError> {
        let mut f = File::open(path)?;
        let flen = f.metadata()?.len();
        if flen < FOOTER + 24 {
            return Err(LoadError::Truncated(format!("{flen} bytes is too short for an index file")));
        }
        f.seek(SeekFrom::Start(flen - FOOTER))?;
        let mut foot = [0u8; FOOTER as usize];
        f.read_exact(&mut foot)?;
        if &foot[16..24] != END_MAGIC {
            return Err(LoadError::Truncated("no end marker (file cut short or not an index file)".into()));
        }
        let body_len = u64::from_le_bytes(foot[0..8].try_into().unwrap());
        let stored = u32::from_le_bytes(foot[8..12].try_into().unwrap());
        let version = u32::from_le_bytes(foot[12..16].try_into().unwrap());
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(LoadError::Version(version));
        }
        if body_len != flen - FOOTER {
            return Err(LoadError::Truncated(format!(
                "footer says {body_len} body bytes, file has {}",
                flen - FOOTER
            )));
        }
        let mut r = CrcReader { file: &f, crc: crc32fast::Hasher::new(), left: body_len, read: 0 };
        let mut magic = [0u8; 8];
        r.take(&mut magic)?;
        if &magic != MAGIC {
            return Err(LoadError::Truncated("bad magic: not a consentry index file".into()));
        }
        let v = r.u32()?;
        if v != version {
            return Err(LoadError::Corrupt(format!("header says version {v}, footer {version}")));
        }
        let nseg = r.u32()?;
        let generation = r.u64()?;
        let mut segments = Vec::new();
        for s in 0..nseg {
            let kind = r.u32()?;
            let n = r.u64()?;
            if n >= u64::from(u32::MAX) {
                return Err(LoadError::Corrupt(format!("segment {s}: {n} entries")));
            }
            let m = r.u32()?;
            if m as usize > crate::segment::MAX_CHUNKS || (kind == 1) != (m > 0) || kind > 1 {
                return Err(LoadError::Corrupt(format!("segment {s}: kind {kind} with {m} chunks")));
            }
            let mut widths = Vec::new();
            for _ in 0..m {
                let w = r.u32()?;
                if !(1..=crate::segment::MAX_WIDTH).contains(&w) {
                    return Err(LoadError::Corrupt(format!("segment {s}: chunk width {w}")));
                }
                widths.push(w);
            }
            let ids = match if version == 1 { 0 } else { r.u32()? } {
                0 => Ids::from_u64(r.vec(n)?),
                1 => {
                    let v = Ids::U32(r.vec(n)?);
                    r.pad4()?;
                    v
                }
                f => return Err(LoadError::Corrupt(format!("segment {s}: id form {f}"))),
            };
            let hashes: Vec<H> = r.vec(n)?;
            let mut tables = Vec::new();
            for (t, &w) in widths.iter().enumerate() {
                let buckets = 1u64 << w;
                let form = if version == 1 { 0 } else { r.u32()? };
                let dir = match form {
                    0 => Dir::from_offsets(r.vec(buckets + 1)?),
                    1 => {
                        let base: Vec<u32> = r.vec((buckets >> crate::segment::DIR_BLOCK_BITS) + 1)?;
                        let rel: Vec<u16> = r.vec(buckets + 1)?;
                        r.pad4()?;
                        Dir::Compact { base, rel }
                    }
                    f => {
                        return Err(LoadError::Corrupt(format!("segment {s}: table {t}: directory form {f}")))
                    }
                };
                let positions = if t == 0 {
                    Positions::none()
                } else if version == 1 {
                    Positions::from_u32(r.vec(n)?)
                } else {
                    match r.u32()? {
                        0 => Positions::U32(r.vec(n)?),
                        1 => {
                            let b = Positions::U24(r.vec(3 * n + 1)?);
                            r.pad4()?;
                            b
                        }
                        f @ (2 | 3) if version == 3 => {
                            let stride = if f == 2 { 5 } else { 6 };
                            let records: Vec<u8> = r.vec(stride * n)?;
                            r.pad4()?;
                            Positions::from_records(&records, f == 2)
                        }
                        4 if version >= 4 => {
                            let pos = r.vec(3 * n + 1)?;
                            let sk = r.vec(n)?;
                            r.pad4()?;
                            Positions::S24 { pos, sk }
                        }
                        5 if version >= 4 => {
                            let pos = r.vec(n)?;
                            let sk = r.vec(n)?;
                            r.pad4()?;
                            Positions::S32 { pos, sk }
                        }
                        f => {
                            return Err(LoadError::Corrupt(format!(
                                "segment {s}: table {t}: position form {f}"
                            )))
                        }
                    }
                };
                tables.push(Table { dir, positions });
            }
            let plan = if m > 0 {
                if widths.iter().sum::<u32>() != 256 {
                    return Err(LoadError::Corrupt(format!(
                        "segment {s}: chunks cover {} bits",
                        widths.iter().sum::<u32>()
                    )));
                }
                Some(ChunkPlan::from_widths(widths))
            } else {
                None
            };
            let nd = r.u64()?;
            let del: Vec<u32> = r.vec(nd)?;
            if del.iter().any(|&p| u64::from(p) >= n) {
                return Err(LoadError::Corrupt(format!("segment {s}: deleted position out of range")));
            }
            let seg = Segment::assemble(hashes, ids, plan, tables);
            segments.push(SegRef {
                seg: Arc::new(seg),
                deleted: Arc::new(del.into_iter().collect::<HashSet<u32>>()),
            });
        }
        let nb = r.u64()?;
        let bids: Vec<u64> = r.vec(nb)?;
        let bh: Vec<H> = r.vec(nb)?;
        if r.left != 0 {
            return Err(LoadError::Corrupt(format!("{} unexpected bytes after the last section", r.left)));
        }
        let computed = r.crc.finalize();
        if computed != stored {
            return Err(LoadError::Checksum { stored, computed });
        }
        // Structure checks (parallel: they touch every byte of the tables).
        {
            use rayon::prelude::*;
            segments.par_iter().enumerate().try_for_each(|(i, s)| {
                s.seg.validate().map_err(|e| LoadError::Corrupt(format!("segment {i}: {e}")))
            })?;
        }
        // Table 0's sketches (never saved), and those of every table of a version 1 or 2 file, are
        // computed now (searches are exact without them, only slower); a save writes the latter.
        for sr in &mut segments {
            if sr.seg.needs_sketches() {
                Arc::make_mut(&mut sr.seg).add_sketches();
            }
        }
        let st = State { segments, buffer: Arc::new(bids.into_iter().zip(bh).collect()) };
        let idx = Index::with_config(config);
        idx.publish(st);
        Ok((idx, generation))
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// A persistent index: a snapshot plus an append-only journal of the inserts
/// and removals since. Every update is appended to the journal before it is
/// applied (fsync with [`Store::sync`]); [`Store::checkpoint`] writes a new
/// snapshot and starts an empty journal. Opening loads the snapshot and
/// replays the journal, so updates never need a full rebuild.
#[derive(Debug)]
pub struct Store {
    index: Index,
    dir: PathBuf,
    journal: File,
    generation: u64,
}

impl Store {
    fn snap_path(dir: &Path) -> PathBuf {
        dir.join("index.snap")
    }
    fn log_path(dir: &Path) -> PathBuf {
        dir.join("index.log")
    }

    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: impl AsRef<Path>, config: IndexConfig) -> Result<Store, LoadError> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let snap = Self::snap_path(&dir);
        let (index, snap_gen) = if snap.exists() {
            Index::load_with_generation(&snap, config)?
        } else {
            (Index::with_config(config), 0)
        };
        let log = Self::log_path(&dir);
        let mut generation = snap_gen + 1;
        let mut reuse_log = false;
        if log.exists() {
            let data = fs::read(&log)?;
            if data.len() < 20 || &data[..8] != LOG_MAGIC {
                return Err(LoadError::Truncated(format!("{}: not a journal (bad header)", log.display())));
            }
            let v = u32::from_le_bytes(data[8..12].try_into().unwrap());
            if v != LOG_VERSION {
                return Err(LoadError::Version(v));
            }
            let g = u64::from_le_bytes(data[12..20].try_into().unwrap());
            // A journal whose generation the snapshot already covers was checkpointed; skip it.
            if g > snap_gen {
                generation = g;
                reuse_log = true;
                let body = &data[20..];
                if body.len() % RECORD != 0 {
                    return Err(LoadError::Truncated(format!(
                        "{}: last record cut short at byte {}",
                        log.display(),
                        20 + body.len() / RECORD * RECORD
                    )));
                }
                // Consecutive inserts are applied as one batch (one segment build, not one buffer copy each).
                let mut batch: Vec<(u64, Hash256)> = Vec::new();
                let flush = |batch: &mut Vec<(u64, Hash256)>| -> Result<(), LoadError> {
                    index.insert_many(batch.drain(..)).map(|_| ()).map_err(LoadError::Insert)
                };
                for (i, rec) in body.chunks_exact(RECORD).enumerate() {
                    let crc = u32::from_le_bytes(rec[41..45].try_into().unwrap());
                    if crc32fast::hash(&rec[..41]) != crc {
                        return Err(LoadError::Corrupt(format!(
                            "{}: record {} has a bad checksum",
                            log.display(),
                            i + 1
                        )));
                    }
                    let id = u64::from_le_bytes(rec[1..9].try_into().unwrap());
                    match rec[0] {
                        1 => batch.push((id, Hash256::from_bytes(rec[9..41].try_into().unwrap()))),
                        2 => {
                            flush(&mut batch)?;
                            index.remove(id);
                        }
                        op => {
                            return Err(LoadError::Corrupt(format!(
                                "{}: record {} has op {op}",
                                log.display(),
                                i + 1
                            )))
                        }
                    }
                }
                flush(&mut batch)?;
            }
        }
        let journal = if reuse_log {
            OpenOptions::new().append(true).open(&log)?
        } else {
            Self::new_journal(&log, generation)?
        };
        Ok(Store { index, dir, journal, generation })
    }

    fn new_journal(path: &Path, generation: u64) -> io::Result<File> {
        let tmp = tmp_path(path);
        let mut f = File::create(&tmp)?;
        f.write_all(LOG_MAGIC)?;
        f.write_all(&LOG_VERSION.to_le_bytes())?;
        f.write_all(&generation.to_le_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        OpenOptions::new().append(true).open(path)
    }

    fn append(&mut self, op: u8, id: u64, h: &Hash256) -> io::Result<()> {
        let mut rec = [0u8; RECORD];
        rec[0] = op;
        rec[1..9].copy_from_slice(&id.to_le_bytes());
        rec[9..41].copy_from_slice(&h.to_bytes());
        let crc = crc32fast::hash(&rec[..41]);
        rec[41..45].copy_from_slice(&crc.to_le_bytes());
        self.journal.write_all(&rec)
    }

    /// The index (search it from any thread).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Journals and applies an insert.
    pub fn insert(&mut self, id: u64, hash: Hash256) -> Result<(), LoadError> {
        self.index.check(id, &hash).map_err(LoadError::Insert)?;
        self.append(1, id, &hash)?;
        self.index.insert(id, hash).map_err(LoadError::Insert)
    }

    /// Journals and applies a removal; returns how many entries were removed.
    pub fn remove(&mut self, id: u64) -> io::Result<usize> {
        self.append(2, id, &Hash256::ZERO)?;
        Ok(self.index.remove(id))
    }

    /// Flushes the journal to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.journal.sync_data()
    }

    /// Writes a new snapshot that covers the journal, then starts an empty journal.
    /// A crash in between is safe: the old journal's generation is then covered by the snapshot.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        self.journal.sync_data()?;
        self.index.save_with_generation(&Self::snap_path(&self.dir), self.generation)?;
        self.generation += 1;
        self.journal = Self::new_journal(&Self::log_path(&self.dir), self.generation)?;
        Ok(())
    }
}
