//! Logs: JSON lines to a rotating file in `<data-dir>/logs/`, and to the
//! console; the level can change while the process runs.
//!
//! The file rotates by size: `muster.log` is renamed and compressed to
//! `muster.log.1.gz`, older ones shift up, and only the newest `keep` are
//! kept. Nothing logged carries a token: the code never passes one to a log
//! call, and the Authorization header is never logged.

use flate2::Compression;
use flate2::write::GzEncoder;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;
pub const DEFAULT_KEEP: usize = 5;

/// A log file that rotates itself once it would grow past `max_bytes`.
pub struct RotatingFile {
    dir: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

impl RotatingFile {
    pub const NAME: &'static str = "muster.log";

    pub fn open(dir: &Path, max_bytes: u64, keep: usize) -> io::Result<RotatingFile> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700).create(dir)?;
        // What a crash in the middle of compressing left behind; the live
        // file it was made from is still whole.
        let _ = std::fs::remove_file(Self::partial(dir));
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(dir.join(Self::NAME))?;
        let size = file.metadata()?.len();
        Ok(RotatingFile { dir: dir.to_owned(), max_bytes: max_bytes.max(1024), keep: keep.max(1), file, size })
    }

    fn partial(dir: &Path) -> PathBuf {
        dir.join(format!("{}.gz.partial", Self::NAME))
    }

    fn rotated(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{}.{n}.gz", Self::NAME))
    }

    /// Compresses the live file under a temporary name first and only then
    /// shifts the kept files up, each by a rename that replaces the one
    /// above it: a failure or a crash while compressing leaves every kept
    /// file where it was, and the set of rotated files is never short of one
    /// for longer than a rename.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let current = self.dir.join(Self::NAME);
        let fresh = Self::partial(&self.dir);
        let mut gz = GzEncoder::new(
            OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&fresh)?,
            Compression::default(),
        );
        io::copy(&mut File::open(&current)?, &mut gz)?;
        gz.finish()?.sync_all()?;
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&fresh, self.rotated(1))?;
        self.file = OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(&current)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Hands the shared file to each log event.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<RotatingFile>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // One event is one `write` of one line: the lock keeps lines whole.
        self.0.lock().map_err(|_| io::Error::other("log file lock poisoned"))?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().map_err(|_| io::Error::other("log file lock poisoned"))?.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for SharedFile {
    type Writer = SharedFile;

    fn make_writer(&'a self) -> SharedFile {
        self.clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Human lines on stderr.
    Text,
    /// JSON lines on stdout.
    Json,
}

/// Where and how much to log.
pub struct Logs {
    pub console: Console,
    /// `(directory, max bytes per file, files kept)`.
    pub file: Option<(PathBuf, u64, usize)>,
    pub default_level: &'static str,
}

/// Changes the log level while the process runs.
#[derive(Clone)]
pub struct LevelControl(reload::Handle<EnvFilter, tracing_subscriber::Registry>);

impl LevelControl {
    /// Sets the filter (`debug`, `info,muster_hub=debug`, …) until the next restart.
    pub fn set(&self, directives: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directives).map_err(|e| format!("{directives:?} is not a log level: {e}"))?;
        self.0.reload(filter).map_err(|e| e.to_string())
    }
}

/// Installs the global subscriber. `MUSTER_LOG` overrides the default level.
pub fn init(logs: Logs) -> io::Result<LevelControl> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_env("MUSTER_LOG").unwrap_or_else(|_| EnvFilter::new(logs.default_level));
    let (filter, handle) = reload::Layer::new(filter);
    let console = match logs.console {
        Console::Text => {
            tracing_subscriber::fmt::layer().with_ansi(io::stderr().is_terminal()).with_writer(io::stderr).boxed()
        }
        Console::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(io::stdout)
            .boxed(),
    };
    let file = match logs.file {
        Some((dir, max, keep)) => {
            let writer = SharedFile(Arc::new(Mutex::new(RotatingFile::open(&dir, max, keep)?)));
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_ansi(false)
                    .with_writer(writer)
                    .boxed(),
            )
        }
        None => None,
    };
    tracing_subscriber::registry().with(filter).with(console).with(file).init();
    Ok(LevelControl(handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_file_rotates_by_size_compresses_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 1024, 3).unwrap();
        let line = |i: usize| format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(80));
        for i in 0..200 {
            f.write_all(line(i).as_bytes()).unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["muster.log", "muster.log.1.gz", "muster.log.2.gz", "muster.log.3.gz"]);
        let current = std::fs::read_to_string(dir.path().join("muster.log")).unwrap();
        assert!(current.len() as u64 <= 1024);
        assert!(current.ends_with(&line(199)), "the newest line is in the live file");
        // Rotated files are whole lines, older ones further up.
        let mut last_first = usize::MAX;
        for n in 1..=3 {
            let mut text = String::new();
            flate2::read::GzDecoder::new(File::open(dir.path().join(format!("muster.log.{n}.gz"))).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            assert!(text.len() as u64 <= 1024, "file {n} is {} bytes", text.len());
            let numbers: Vec<usize> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_u64().unwrap() as usize)
                .collect();
            assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
            assert!(numbers[0] < last_first, "older files hold older lines");
            last_first = numbers[0];
        }
    }

    #[test]
    fn a_reopened_file_keeps_appending_and_counts_what_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 2048, 2).unwrap();
        f.write_all(&[b'a'; 1500]).unwrap();
        drop(f);
        let mut f = RotatingFile::open(dir.path(), 2048, 2).unwrap();
        f.write_all(&[b'b'; 1000]).unwrap();
        assert!(dir.path().join("muster.log.1.gz").exists(), "the size on disk counts toward rotation");
    }

    #[test]
    fn a_compression_cut_short_leaves_the_kept_files_alone_and_is_cleared_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 1024, 2).unwrap();
        for _ in 0..3 {
            f.write_all(&[b'a'; 1000]).unwrap();
        }
        drop(f);
        let kept = std::fs::read(dir.path().join("muster.log.1.gz")).unwrap();
        std::fs::write(RotatingFile::partial(dir.path()), b"half a gzip stream").unwrap();
        let mut f = RotatingFile::open(dir.path(), 1024, 2).unwrap();
        assert!(!RotatingFile::partial(dir.path()).exists(), "the leftover is removed");
        assert_eq!(std::fs::read(dir.path().join("muster.log.1.gz")).unwrap(), kept);
        f.write_all(&[b'b'; 1000]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("muster.log.2.gz")).unwrap(), kept, "shifted up whole");
    }
}
