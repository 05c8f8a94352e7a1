//! The parse floor for batch prediction: the fastest reading of the same JSON lines into f32 rows
//! that a well-kept parsing crate gives on these cores, with no model, no batching and no output.
//! Each thread reads its own part of the file (cut at line ends) and parses every line's numbers
//! with fast-float2 (`parse_partial`, correctly rounded to f64, then f32 as the server does).
//!
//! Usage: cargo run --release -p server --example parse_floor -- FILE [THREADS]
//! Prints one JSON line: lines, seconds, lines per second, numbers per line.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("FILE").clone();
    let threads: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let size = std::fs::metadata(&path).expect("file").len();
    let started = Instant::now();
    let counts: Vec<(u64, usize)> = std::thread::scope(|scope| {
        let parts: Vec<_> = (0..threads)
            .map(|i| {
                let path = path.clone();
                scope.spawn(move || parse_part(&path, size * i / threads, size * (i + 1) / threads))
            })
            .collect();
        parts.into_iter().map(|p| p.join().expect("thread")).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let lines: u64 = counts.iter().map(|c| c.0).sum();
    println!(
        "{{\"lines\": {lines}, \"threads\": {threads}, \"seconds\": {seconds:.3}, \"lines_per_second\": {:.0}, \"numbers_per_line\": {}}}",
        lines as f64 / seconds,
        counts.iter().map(|c| c.1).max().unwrap_or(0)
    );
}

/// Parses the lines that start in `[start, end)`; returns how many and the numbers in the last.
fn parse_part(path: &str, start: u64, end: u64) -> (u64, usize) {
    let mut file = File::open(path).expect("open");
    // From the byte before `start`: the line under way there (up to its newline, which may be
    // that very byte) belongs to the part before.
    let from = start.saturating_sub(1);
    file.seek(SeekFrom::Start(from)).expect("seek");
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut at = from;
    let mut line = Vec::new();
    if start > 0 {
        at += reader.read_until(b'\n', &mut line).expect("read") as u64;
    }
    let mut row: Vec<f32> = Vec::new();
    let mut lines = 0;
    while at < end {
        line.clear();
        let read = reader.read_until(b'\n', &mut line).expect("read");
        if read == 0 {
            break;
        }
        at += read as u64;
        row.clear();
        parse_row(&line, &mut row);
        std::hint::black_box(&row);
        lines += 1;
    }
    (lines, row.len())
}

/// `[1.5, -2, ...]` → f32s.
fn parse_row(line: &[u8], row: &mut Vec<f32>) {
    let mut rest = line.strip_prefix(b"[").expect("a JSON list per line");
    loop {
        while rest.first().is_some_and(u8::is_ascii_whitespace) {
            rest = &rest[1..];
        }
        let (value, len): (f64, usize) = fast_float2::parse_partial(rest).expect("a number");
        row.push(value as f32);
        rest = &rest[len..];
        while rest.first().is_some_and(u8::is_ascii_whitespace) {
            rest = &rest[1..];
        }
        match rest.first() {
            Some(b',') => rest = &rest[1..],
            _ => return,
        }
    }
}
