fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = args[1].parse().unwrap();
    let batch: u32 = args[2].parse().unwrap();
    let dir = std::path::PathBuf::from(&args[3]);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let took = muster_store::sqlite::ceiling::task_lives(&dir.join("db"), n, batch).unwrap();
    println!("{n} lives in {took:?}: {:.1} us each", took.as_secs_f64() * 1e6 / n as f64);
}
