//! A job's log: every line of every replica, timestamped and tagged, in `<work dir>/job.log`.

use std::path::Path;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub time: String,
    pub replica: String,
    pub text: String,
}

/// Writes lines sent on the returned channel to `path` until every sender is gone.
pub fn writer(path: &Path) -> std::io::Result<(mpsc::UnboundedSender<(String, String)>, tokio::task::JoinHandle<()>)> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let (sender, mut receiver) = mpsc::unbounded_channel::<(String, String)>();
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
    Ok((sender, handle))
}

/// Forwards each line of `stream` as `replica`'s, keeping the last ones in `tail`.
pub async fn pump(
    stream: impl AsyncRead + Unpin,
    replica: String,
    sender: mpsc::UnboundedSender<(String, String)>,
    tail: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        {
            let mut tail = tail.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if tail.len() == 10 {
                tail.pop_front();
            }
            tail.push_back(format!("{replica}: {line}"));
        }
        if sender.send((replica.clone(), line)).is_err() {
            break;
        }
    }
}

/// Reads the job's log from line `offset`, keeping lines of `replica` when given; at most `limit`.
/// Returns the lines and the offset to read from next.
pub fn read_logs(
    path: &Path,
    replica: Option<&str>,
    offset: usize,
    limit: usize,
) -> std::io::Result<(Vec<LogLine>, usize)> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let mut lines = Vec::new();
    let mut next = offset;
    for (index, raw) in text.lines().enumerate().skip(offset) {
        if lines.len() == limit {
            break;
        }
        next = index + 1;
        let mut parts = raw.splitn(3, ' ');
        let (Some(time), Some(who), text) = (parts.next(), parts.next(), parts.next().unwrap_or("")) else { continue };
        if replica.is_some_and(|r| r != who) {
            continue;
        }
        lines.push(LogLine { time: time.to_owned(), replica: who.to_owned(), text: text.to_owned() });
    }
    Ok((lines, next))
}
