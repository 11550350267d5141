//! Claude Code's and Codex's event streams: any bytes, cut anywhere, read
//! the same as whole and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use muster_agent::stream::{Claude, Codex, Dialect, StreamParser};

fn read<D: Dialect>(dialect: impl Fn() -> D, pieces: &[&[u8]]) -> String {
    let mut p = StreamParser::new(dialect());
    let mut steps = Vec::new();
    for piece in pieces {
        steps.extend(p.feed(piece));
    }
    let (last, summary) = p.finish();
    steps.extend(last);
    format!("{steps:?} {summary:?}")
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    let at = usize::from(cut) * bytes.len() / 256;
    let (a, b) = bytes.split_at(at);
    assert_eq!(read(Claude::default, &[a, b]), read(Claude::default, &[bytes]));
    assert_eq!(read(Codex::default, &[a, b]), read(Codex::default, &[bytes]));
});
