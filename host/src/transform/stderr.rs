//! The component's stderr, kept to explain a trap. A Rust component that
//! panics (`unwrap` on a bad payload, an index out of range) writes the
//! panic message to stderr and then traps; without that message the
//! dead-letter reason says only "unreachable instruction executed". Only
//! the tail of the current call is kept, so a component that logs to
//! stderr costs a bounded buffer and never an error: a full pipe that
//! refused writes would make `eprintln!` itself panic.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of stderr kept for a reason: a panic message with its location
/// fits many times over.
pub const TAIL_BYTES: usize = 2048;

/// A cheap handle: the store's WASI context and the host share it.
#[derive(Clone, Default)]
pub struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if bytes.len() >= TAIL_BYTES {
            buf.clear();
            buf.extend_from_slice(&bytes[bytes.len() - TAIL_BYTES..]);
            return;
        }
        buf.extend_from_slice(bytes);
        // Trimmed in halves, not per write, so a chatty component does not
        // shift the buffer on every line.
        if buf.len() > 2 * TAIL_BYTES {
            let cut = buf.len() - TAIL_BYTES;
            buf.drain(..cut);
        }
    }

    /// Forgets what earlier calls wrote: a reason quotes its own call only.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The last [`TAIL_BYTES`] written since [`Self::clear`], as text on
    /// one line, or `None` if nothing was written.
    pub fn last(&self) -> Option<String> {
        let buf = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let tail = &buf[buf.len().saturating_sub(TAIL_BYTES)..];
        let text = String::from_utf8_lossy(tail);
        // The standard library's hint to set RUST_BACKTRACE is advice no
        // one can take inside the sandbox.
        let text = text
            .lines()
            .filter(|line| !line.starts_with("note: run with `RUST_BACKTRACE"))
            .flat_map(str::split_whitespace)
            .collect::<Vec<_>>()
            .join(" ");
        (!text.is_empty()).then_some(text)
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Pollable for StderrTail {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn std::future::Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_of_what_was_written_since_the_last_clear() {
        let tail = StderrTail::default();
        assert_eq!(tail.last(), None);
        tail.push(b"old line\n");
        tail.clear();
        for i in 0..1000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        tail.push(b"thread 'main' panicked at src/lib.rs:4:9:\nbad payload\n");
        tail.push(
            b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        );
        let last = tail.last().unwrap();
        assert!(last.len() <= TAIL_BYTES, "{}", last.len());
        assert!(
            last.ends_with("line 999 thread 'main' panicked at src/lib.rs:4:9: bad payload"),
            "{last}"
        );
        assert!(!last.contains("old line") && !last.contains("line 0 "));
        // What is held stays bounded, however much is written.
        assert!(tail.0.lock().unwrap().len() <= 2 * TAIL_BYTES + 64);
        tail.push(&[b'x'; 3 * TAIL_BYTES]);
        assert_eq!(tail.0.lock().unwrap().len(), TAIL_BYTES);
        assert_eq!(tail.last().unwrap().len(), TAIL_BYTES);
    }
}
