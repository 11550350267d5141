//! The VFS the store opens its databases with: SQLite's own `unix` VFS,
//! except that a commit's write-ahead log frames reach the kernel as one
//! write instead of two per page.
//!
//! SQLite writes each frame of the log as a 24-byte header and then the page,
//! each with its own `pwrite`. A batch of the hub's changes dirties 30 to 40
//! pages, so a commit was 60 to 80 system calls before its fsync, each taking
//! the file's lock, updating its times and walking the page cache on its own;
//! on the writer thread that was a sixth of its time (docs/benchmarks.md).
//! Here the frames of a commit are gathered in memory while they follow one
//! another, and written at once.
//!
//! What the log promises does not change, because nothing that could observe
//! the gathered bytes runs before they are written:
//! - they are written as soon as the page of a commit frame (one whose header
//!   gives the database's size) is complete, so a commit's frames are in the
//!   file before SQLite publishes them to other connections, whatever the
//!   `synchronous` setting;
//! - and before anything else reaches the file: a read (SQLite reading back
//!   a page it spilled), a sync, a size, a truncation, a file control, a
//!   mapping, a close, or a write somewhere else in it.
//!
//! An error from a gathered write is returned by the call that wrote it out,
//! and the gathered bytes are dropped with it, never written later. Every
//! other file (the database, its shared memory, temporary files) is the
//! `unix` VFS's own, untouched.

use rusqlite::ffi;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// The name connections open the store with (`Connection::open_with_flags_and_vfs`).
pub const NAME: &CStr = c"muster";

/// Bytes gathered before they are written anyway: a commit of 250 pages.
const GATHER_LIMIT: usize = 1 << 20;
/// The most the unix VFS writes in one call: it masks a write's length to
/// 17 bits (`seekAndWriteFd`), so more would be cut short.
const WRITE_LIMIT: usize = 124 * 1024;
/// The size of a log frame's header (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER: usize = 24;

/// A write-ahead log opened through this VFS. The `unix` VFS's own file
/// follows it in the memory SQLite gives `xOpen`.
#[repr(C)]
struct LogFile {
    /// First, as SQLite requires: it calls `LOG_METHODS` with this address.
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    gathered: Gathered,
}

#[derive(Default)]
struct Gathered {
    /// Where in the file `bytes` go.
    at: i64,
    bytes: Vec<u8>,
    /// The last write was the header of a commit frame: its page ends the commit.
    commit_header: bool,
}

/// Where the `unix` VFS's file starts within ours.
const INNER_OFFSET: usize = std::mem::size_of::<LogFile>().next_multiple_of(16);

/// Registers the VFS once per process (not as the default); later calls
/// return the first call's outcome.
pub fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            // SAFETY: sqlite3_vfs_find initialises SQLite and returns a VFS that
            // lives as long as the process (the unix VFS is never unregistered).
            let base = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
            if base.is_null() {
                return Err("SQLite has no unix VFS to build on".into());
            }
            // SAFETY: `base` is a valid VFS; the copy keeps every method but
            // xOpen, which none of the others depends on. They read only
            // mxPathname from the VFS they are given, which the copy keeps.
            let mut vfs = unsafe { *base };
            vfs.zName = NAME.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.pAppData = base.cast();
            vfs.szOsFile += INNER_OFFSET as c_int;
            vfs.xOpen = Some(open);
            let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
            // SAFETY: `vfs` is valid for the rest of the process, as SQLite requires.
            match unsafe { ffi::sqlite3_vfs_register(vfs, 0) } {
                ffi::SQLITE_OK => Ok(()),
                rc => Err(format!("cannot register the {} VFS (SQLite error {rc})", NAME.to_string_lossy())),
            }
        })
        .clone()
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: `register` set pAppData to the unix VFS, which outlives us.
    let base = unsafe { (*vfs).pAppData.cast::<ffi::sqlite3_vfs>() };
    // SAFETY: as above.
    let Some(base_open) = (unsafe { (*base).xOpen }) else { return ffi::SQLITE_ERROR };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // SAFETY: `file` has room for the unix VFS's file (szOsFile is larger).
        return unsafe { base_open(base, name, file, flags, out_flags) };
    }
    // SAFETY: SQLite gives `file` szOsFile bytes, 8-byte aligned: INNER_OFFSET
    // (a multiple of 16) plus the unix VFS's own size.
    let inner = unsafe { file.cast::<u8>().add(INNER_OFFSET) }.cast::<ffi::sqlite3_file>();
    // SAFETY: `inner` has room for the unix VFS's file.
    let rc = unsafe { base_open(base, name, inner, flags, out_flags) };
    // SAFETY: xOpen leaves pMethods null or valid.
    let inner_methods = unsafe { (*inner).pMethods };
    // SAFETY: non-null methods are valid while the file is open.
    let complete = !inner_methods.is_null() && unsafe { (*inner_methods).iVersion } >= 3;
    if rc != ffi::SQLITE_OK || !complete {
        if !inner_methods.is_null() {
            // SAFETY: a file with methods must be closed, even after a failed open.
            if let Some(close) = unsafe { (*inner_methods).xClose } {
                // SAFETY: as above.
                unsafe { close(inner) };
            }
        }
        // SAFETY: `file` is ours to write; null methods tell SQLite there is nothing to close.
        unsafe { (*file).pMethods = std::ptr::null() };
        // Only a unix VFS older than the shared-memory methods lacks them.
        return if rc == ffi::SQLITE_OK { ffi::SQLITE_CANTOPEN } else { rc };
    }
    let log = LogFile { base: ffi::sqlite3_file { pMethods: &LOG_METHODS }, inner, gathered: Gathered::default() };
    // SAFETY: `file` is ours, large enough and aligned for a LogFile (8-byte
    // alignment, no field needs more); it is dropped in `close`.
    unsafe { file.cast::<LogFile>().write(log) };
    ffi::SQLITE_OK
}

static LOG_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// The log behind a file SQLite calls `LOG_METHODS` on.
///
/// # Safety
/// `file` must be a `LogFile` that `open` wrote and `close` has not dropped,
/// not borrowed elsewhere (SQLite never calls one file's methods concurrently).
unsafe fn log<'a>(file: *mut ffi::sqlite3_file) -> &'a mut LogFile {
    // SAFETY: the caller's promise.
    unsafe { &mut *file.cast::<LogFile>() }
}

impl LogFile {
    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: `open` only builds a LogFile around an inner file with methods
        // of version 3 (every field valid), which stay valid until it is closed.
        unsafe { &*(*self.inner).pMethods }
    }

    /// Writes what is gathered, then forgets it whether or not that worked.
    fn flush(&mut self) -> c_int {
        self.gathered.commit_header = false;
        if self.gathered.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let (inner, write) = (self.inner, self.methods().xWrite);
        let g = &mut self.gathered;
        let Some(write) = write else { return ffi::SQLITE_IOERR_WRITE };
        let mut rc = ffi::SQLITE_OK;
        let mut at = g.at;
        for chunk in g.bytes.chunks(WRITE_LIMIT) {
            // SAFETY: the inner file is open; the chunk is valid for its length,
            // which fits a c_int.
            rc = unsafe { write(inner, chunk.as_ptr().cast(), chunk.len() as c_int, at) };
            #[cfg(test)]
            tests::LOG_WRITES.with(|n| n.set(n.get() + 1));
            if rc != ffi::SQLITE_OK {
                break;
            }
            at += chunk.len() as i64;
        }
        g.bytes.clear();
        rc
    }
}

/// Writes what is gathered, returning early with its error.
macro_rules! flushed {
    ($log:expr) => {
        match $log.flush() {
            ffi::SQLITE_OK => {}
            rc => return rc,
        }
    };
}

/// Calls the inner file's method `$m`, or returns `$missing` when it has none.
macro_rules! inner {
    ($log:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {
        match $log.methods().$m {
            // SAFETY: the inner file is open and takes the same arguments SQLite
            // gave us, which are valid for the call.
            Some(f) => unsafe { f($log.inner $(, $arg)*) },
            None => $missing,
        }
    };
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite calls xClose once, on a file `open` built.
    let log = unsafe { log(file) };
    let flushed = log.flush();
    let closed = inner!(log, xClose, ffi::SQLITE_OK);
    // SAFETY: nothing uses the LogFile after xClose; its Vec is freed here.
    unsafe { std::ptr::drop_in_place(&mut log.gathered) };
    if flushed != ffi::SQLITE_OK { flushed } else { closed }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    let Ok(len) = usize::try_from(amount) else { return ffi::SQLITE_IOERR_WRITE };
    if len >= GATHER_LIMIT {
        flushed!(log);
        #[cfg(test)]
        tests::LOG_WRITES.with(|n| n.set(n.get() + 1));
        return inner!(log, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
    }
    // SAFETY: SQLite passes `amount` readable bytes at `buf`.
    let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    // Read before a flush clears it: the page of a commit frame is written out
    // at once even when its header already was.
    let ends_commit = log.gathered.commit_header;
    let g = &log.gathered;
    let follows = offset == g.at + g.bytes.len() as i64;
    if !g.bytes.is_empty() && (!follows || g.bytes.len() + len > GATHER_LIMIT) {
        flushed!(log);
    }
    let g = &mut log.gathered;
    if g.bytes.is_empty() {
        g.at = offset;
    }
    g.bytes.extend_from_slice(data);
    // A frame header's second word is the database's size in pages after a
    // commit, and zero in every other frame.
    g.commit_header = len == FRAME_HEADER && data[4..8] != [0; 4];
    if ends_commit {
        flushed!(log);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, out)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xShmMap, ffi::SQLITE_IOERR_SHMMAP, region, size, extend, out)
}

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xShmBarrier, ())
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    flushed!(log);
    inner!(log, xFetch, ffi::SQLITE_OK, offset, amount, out)
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    // SAFETY: called by SQLite on a file `open` built.
    let log = unsafe { log(file) };
    inner!(log, xUnfetch, ffi::SQLITE_OK, offset, page)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};
    use std::cell::Cell;

    thread_local! {
        /// Writes that reached the unix VFS's log file from this thread.
        pub(super) static LOG_WRITES: Cell<u64> = const { Cell::new(0) };
    }

    /// A database in WAL mode through this VFS, with a table `t`.
    fn open(path: &std::path::Path, synchronous: &str) -> Connection {
        register().unwrap();
        let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), NAME).unwrap();
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
        conn.pragma_update(None, "synchronous", synchronous).unwrap();
        // Checkpoints would write the database file between commits; the
        // tests look at the log alone.
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY, body TEXT NOT NULL)").unwrap();
        conn
    }

    fn log_frames(path: &std::path::Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        // A 32-byte header, then frames of a 24-byte header and a 4 KiB page.
        (std::fs::metadata(wal).unwrap().len() - 32) / (24 + 4096)
    }

    #[test]
    fn a_commit_of_many_pages_reaches_the_log_in_a_write_per_124_kib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gather.db");
        let conn = open(&path, "FULL");
        let frames_before = log_frames(&path);
        let writes_before = LOG_WRITES.with(Cell::get);
        conn.execute_batch("BEGIN").unwrap();
        for n in 0..100 {
            conn.execute("INSERT INTO t (n, body) VALUES (?, ?)", rusqlite::params![n, "x".repeat(1000)]).unwrap();
        }
        conn.execute_batch("COMMIT").unwrap();
        let frames = log_frames(&path) - frames_before;
        let writes = LOG_WRITES.with(Cell::get) - writes_before;
        assert!(frames >= 25, "the commit wrote {frames} frames; the test needs a commit of many pages");
        // Two calls per frame without gathering; one per 124 KiB with it.
        let most = (frames * (24 + 4096)).div_ceil(WRITE_LIMIT as u64);
        assert!(writes <= most, "{frames} frames took {writes} writes (at most {most} expected)");
        let rows: i64 = conn.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 100);
    }

    #[test]
    fn every_commit_is_in_the_log_before_another_connection_reads_it_even_unsynced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visible.db");
        // With synchronous=OFF SQLite never syncs the log: only the end of the
        // commit frame writes what was gathered.
        let writer = open(&path, "OFF");
        // Through the plain unix VFS, so it reads only what is in the file.
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        for n in 1..=200i64 {
            writer.execute("INSERT INTO t (n, body) VALUES (?, ?)", rusqlite::params![n, "y".repeat(300)]).unwrap();
            let (count, sum): (i64, i64) = reader
                .query_row("SELECT COUNT(*), COALESCE(SUM(n), 0) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap();
            assert_eq!((count, sum), (n, n * (n + 1) / 2), "after commit {n}");
        }
    }

    #[test]
    fn pages_spilled_mid_transaction_are_read_back_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.db");
        let conn = open(&path, "FULL");
        // A cache of ten pages: a large transaction writes pages to the log
        // before its commit, and reads them back from there.
        conn.pragma_update(None, "cache_size", 10).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for n in 0..2000i64 {
            conn.execute("INSERT INTO t (n, body) VALUES (?, ?)", rusqlite::params![n, format!("{n:0>500}")]).unwrap();
        }
        conn.execute("UPDATE t SET body = body || 'z' WHERE n % 7 = 0", []).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
        let reader = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let (rows, touched): (i64, i64) = reader
            .query_row("SELECT COUNT(*), SUM(body LIKE '%z') FROM t", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!((rows, touched), (2000, 286));
        let body: String = reader.query_row("SELECT body FROM t WHERE n = 1234", [], |r| r.get(0)).unwrap();
        assert_eq!(body, format!("{:0>500}", 1234));
    }
}
