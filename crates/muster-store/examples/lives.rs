//! Writes task lives straight into a fresh SQLite database through the
//! store's own code (`sqlite::ceiling::task_lives`), with no hub: what one
//! life costs the writer, measured alone. Under `valgrind --tool=callgrind`
//! the count of instructions is the same from run to run, so two builds
//! compare exactly (docs/benchmarks.md, finding 26).
//!
//! ```sh
//! cargo run --release -p muster-store --example lives -- 2000 3 /dev/shm/lives
//! ```

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [lives, batch, dir] = args.as_slice() else {
        bail!("usage: lives LIVES PER_TRANSACTION DIR (DIR is emptied first)");
    };
    let lives: u64 = lives.parse().with_context(|| format!("LIVES: {lives:?} is not a count"))?;
    let batch: u32 = batch.parse().with_context(|| format!("PER_TRANSACTION: {batch:?} is not a count"))?;
    let dir = std::path::Path::new(dir);
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let took = muster_store::sqlite::ceiling::task_lives(&dir.join("lives.db"), lives, batch)?;
    println!(
        "{lives} task lives, {batch} to a transaction, in {:.3} s: {:.1} µs each",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / lives.max(1) as f64
    );
    Ok(())
}
