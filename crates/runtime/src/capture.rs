//! Capture of an instance's output: lines go to the log sink, the last few are kept to
//! explain a failed start.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::{LogLine, LogSink, LogStream};

/// Lines of output kept per instance to explain a failed start.
pub(crate) const TAIL_LINES: usize = 8;

/// The last lines an instance printed.
pub(crate) type Tail = Arc<Mutex<VecDeque<String>>>;

pub(crate) fn new_tail() -> Tail {
    Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)))
}

pub(crate) fn tail_lines(tail: &Tail) -> Vec<String> {
    tail.lock().map(|t| t.iter().cloned().collect()).unwrap_or_default()
}

pub(crate) async fn pump_lines(
    stream: impl AsyncRead + Unpin,
    which: LogStream,
    instance: String,
    sink: LogSink,
    tail: Tail,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(text)) = lines.next_line().await {
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text.clone());
        }
        sink(LogLine { at: SystemTime::now(), instance: instance.clone(), stream: which, text });
    }
}
