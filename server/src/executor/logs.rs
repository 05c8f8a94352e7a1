//! A job's log: every line of every replica, timestamped and tagged, in `<work dir>/job.log`.

use std::path::Path;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::supervise::{LogSender, LOG_BUFFER};

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub time: String,
    pub replica: String,
    pub text: String,
}

/// Opens (creating) a job's log for appending. Blocks.
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Writes lines sent on the returned (bounded) channel to `file` until every sender is gone; the
/// returned task ends after the last line is written, and is the caller's to await.
pub fn writer(file: std::fs::File) -> (LogSender, tokio::task::JoinHandle<()>) {
    let (sender, mut receiver) = mpsc::channel::<(String, String)>(LOG_BUFFER);
    let handle = tokio::spawn(async move {
        let mut file = tokio::fs::File::from_std(file);
        while let Some((replica, text)) = receiver.recv().await {
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let line = format!("{time} {replica} {text}\n");
            if file.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = file.flush().await;
        }
    });
    (sender, handle)
}

/// Forwards each line of `stream` as `replica`'s, keeping the last ones in `tail`. A line longer
/// than `max_line` bytes is cut there and marked; the rest of it, up to its newline, is skipped
/// without being held in memory.
pub async fn pump(
    stream: impl AsyncRead + Unpin,
    replica: String,
    sender: LogSender,
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    max_line: usize,
) {
    let mut reader = BufReader::new(stream);
    while let Ok(Some(line)) = next_line(&mut reader, max_line.max(1)).await {
        {
            let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if tail.len() == 10 {
                tail.pop_front();
            }
            tail.push_back(format!("{replica}: {line}"));
        }
        if sender.send((replica.clone(), line)).await.is_err() {
            break;
        }
    }
}

/// The next line of `reader` without its newline (a last line without one included), holding at
/// most `max_line` bytes of it: a longer line is cut at a character boundary and ends with
/// [`CUT_MARK`]. `None` at the end of the stream.
async fn next_line(reader: &mut (impl AsyncBufReadExt + Unpin), max_line: usize) -> std::io::Result<Option<String>> {
    let mut kept: Vec<u8> = Vec::new();
    let mut cut = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        read_any = true;
        let (chunk, newline) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i)),
            None => (available, None),
        };
        let room = max_line.saturating_sub(kept.len());
        if chunk.len() > room {
            cut = true;
        }
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if kept.last() == Some(&b'\r') && !cut {
        kept.pop();
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if cut {
        // A cut inside a multi-byte character leaves a replacement character; drop it.
        if text.ends_with('\u{FFFD}') {
            text.pop();
        }
        text.push_str(CUT_MARK);
    }
    Ok(Some(text))
}

/// Ends a line that was longer than the log keeps.
pub const CUT_MARK: &str = " [line cut: longer than max_log_line_bytes]";

/// A place in a job's log: a line number, and where that line starts in the file when known (a
/// follower keeps both, so each poll reads only what is new).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogCursor {
    pub line: usize,
    /// The byte offset of `line`, or `None` to find it by counting lines from the start.
    pub byte: Option<u64>,
}

impl LogCursor {
    /// The start of line `line`, found by reading.
    pub fn at_line(line: usize) -> Self {
        Self { line, byte: (line == 0).then_some(0) }
    }
}

/// Reads complete lines of the job's log from `from`, keeping lines of `replica` when given; at
/// most `limit`. A last line still being written is left for the next read. Returns the lines and
/// the cursor to read from next.
pub fn read_logs(
    path: &Path,
    replica: Option<&str>,
    from: LogCursor,
    limit: usize,
) -> std::io::Result<(Vec<LogLine>, LogCursor)> {
    use std::io::{BufRead, Seek};
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), from)),
        Err(e) => return Err(e),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut cursor = LogCursor { line: 0, byte: Some(0) };
    let mut raw = Vec::new();
    match from.byte {
        Some(byte) => {
            reader.seek(std::io::SeekFrom::Start(byte))?;
            cursor = from;
        }
        None => {
            while cursor.line < from.line {
                raw.clear();
                let read = reader.read_until(b'\n', &mut raw)?;
                if read == 0 || raw.last() != Some(&b'\n') {
                    return Ok((Vec::new(), cursor));
                }
                cursor.line += 1;
                cursor.byte = cursor.byte.map(|b| b + read as u64);
            }
        }
    }
    let mut lines = Vec::new();
    while lines.len() < limit {
        raw.clear();
        let read = reader.read_until(b'\n', &mut raw)?;
        if read == 0 || raw.last() != Some(&b'\n') {
            break;
        }
        cursor.line += 1;
        cursor.byte = cursor.byte.map(|b| b + read as u64);
        let text = String::from_utf8_lossy(&raw[..raw.len() - 1]);
        let mut parts = text.splitn(3, ' ');
        let (Some(time), Some(who), text) = (parts.next(), parts.next(), parts.next().unwrap_or("")) else { continue };
        if replica.is_some_and(|r| r != who) {
            continue;
        }
        lines.push(LogLine { time: time.to_owned(), replica: who.to_owned(), text: text.to_owned() });
    }
    Ok((lines, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_complete_lines_from_a_line_or_a_byte_cursor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("job.log");
        std::fs::write(&path, "t1 master-replica-0 one\nt2 worker-replica-0 two\nt3 master-replica-0 thr")
            .expect("write");
        let (lines, next) = read_logs(&path, None, LogCursor::at_line(0), 10).expect("read");
        assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["one", "two"], "the partial line waits");
        assert_eq!(next, LogCursor { line: 2, byte: Some(48) });
        std::fs::write(&path, "t1 master-replica-0 one\nt2 worker-replica-0 two\nt3 master-replica-0 three\n")
            .expect("write");
        let (lines, _) = read_logs(&path, None, next, 10).expect("read");
        assert_eq!(lines[0].text, "three");
        let (lines, next) = read_logs(&path, Some("master-replica-0"), LogCursor::at_line(1), 10).expect("read");
        assert_eq!((lines.len(), lines[0].text.as_str(), next.line), (1, "three", 3));
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_marked() {
        let input: &[u8] = b"short\r\n0123456789abcdef\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut lines = Vec::new();
        while let Some(line) = next_line(&mut reader, 8).await.expect("read") {
            lines.push(line);
        }
        assert_eq!(lines, ["short".to_owned(), format!("01234567{CUT_MARK}"), "last".to_owned()]);
    }

    #[tokio::test]
    async fn a_line_without_newline_is_held_only_up_to_the_limit() {
        let (mut write, read) = tokio::io::duplex(1 << 16);
        let writer = tokio::spawn(async move {
            let block = vec![b'x'; 1 << 16];
            for _ in 0..160 {
                write.write_all(&block).await.expect("write");
            }
        });
        let mut reader = BufReader::new(read);
        let line = next_line(&mut reader, 1024).await.expect("read").expect("a line");
        writer.await.expect("writer");
        assert_eq!(line.len(), 1024 + CUT_MARK.len());
    }
}
