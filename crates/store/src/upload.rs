//! Streaming uploads: a synchronous [`Write`] sink on the encoder thread,
//! and an async task that feeds object_store's [`BufWriter`] (a single PUT
//! for small files, a multipart upload of `PART_SIZE` parts otherwise).
//!
//! ```text
//! encoder thread                          tokio task
//! UploadSink ──(bounded channel of 1 MiB chunks)──▶ BufWriter ──▶ store
//!   └ SHA-256 + byte count of what is sent
//! ```
//!
//! Memory stays bounded: at most `CHANNEL_CHUNKS` chunks wait in the
//! channel, and BufWriter holds one part plus `MAX_CONCURRENCY` parts in
//! flight. A sink dropped without [`UploadSink::finish`] makes the task
//! abort the upload, so nothing appears in the store.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};

/// Size of one multipart part (S3 needs at least 5 MiB).
pub(crate) const PART_SIZE: usize = 8 * 1024 * 1024;
const CHUNK_SIZE: usize = 1024 * 1024;
const CHANNEL_CHUNKS: usize = 4;
const MAX_CONCURRENCY: usize = 2;

/// The first failure of a writer, shared by all its parts so that any of
/// them can report the cause.
#[derive(Debug, Clone, Default)]
pub(crate) struct FirstError(Arc<Mutex<Option<String>>>);

impl FirstError {
    pub fn set(&self, message: String) {
        if let Ok(mut slot) = self.0.lock()
            && slot.is_none()
        {
            *slot = Some(message);
        }
    }

    pub fn get(&self) -> String {
        self.0
            .lock()
            .ok()
            .and_then(|s| s.clone())
            .unwrap_or_else(|| "the writer was aborted".into())
    }
}

enum Msg {
    Data(Bytes),
    Finish,
}

/// Synchronous end of an upload; lives on a blocking thread.
pub(crate) struct UploadSink {
    tx: mpsc::Sender<Msg>,
    buf: Vec<u8>,
    hasher: Sha256,
    bytes: u64,
}

/// Size and hash of a finished upload.
#[derive(Debug, Clone)]
pub(crate) struct Uploaded {
    pub bytes: u64,
    pub sha256: String,
}

/// Starts an upload to `path`; returns the sink and the task to await.
pub(crate) fn start(
    store: Arc<dyn ObjectStore>,
    path: Path,
    display: String,
    first_error: FirstError,
) -> (UploadSink, JoinHandle<Result<()>>) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let task = tokio::spawn(run(store, path, display, rx, first_error));
    let sink = UploadSink {
        tx,
        buf: Vec::with_capacity(CHUNK_SIZE),
        hasher: Sha256::new(),
        bytes: 0,
    };
    (sink, task)
}

async fn run(
    store: Arc<dyn ObjectStore>,
    path: Path,
    display: String,
    mut rx: mpsc::Receiver<Msg>,
    first_error: FirstError,
) -> Result<()> {
    let mut writer =
        BufWriter::with_capacity(store, path, PART_SIZE).with_max_concurrency(MAX_CONCURRENCY);
    let fail = |e: object_store::Error| {
        let err = StoreError::storage("upload", &display, e);
        first_error.set(error_chain(&err));
        err
    };
    loop {
        match rx.recv().await {
            Some(Msg::Data(chunk)) => {
                if let Err(e) = writer.put(chunk).await {
                    // Record the cause, then close the channel so the
                    // encoder stops at once and reports this cause.
                    let err = fail(e);
                    drop(rx);
                    let _ = writer.abort().await;
                    return Err(err);
                }
            }
            Some(Msg::Finish) => {
                return writer.shutdown().await.map_err(|e| {
                    let err = StoreError::io(format!("upload of {display} failed"), e);
                    first_error.set(error_chain(&err));
                    err
                });
            }
            None => {
                // The sink was dropped: abandon the upload.
                let _ = writer.abort().await;
                return Ok(());
            }
        }
    }
}

impl UploadSink {
    fn send_buffer(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_SIZE),
        ));
        self.hasher.update(&chunk);
        self.bytes += chunk.len() as u64;
        self.tx
            .blocking_send(Msg::Data(chunk))
            .map_err(|_| io::Error::other("the upload stopped"))
    }

    /// Sends what is buffered and asks the task to complete the upload.
    pub fn finish(mut self) -> io::Result<Uploaded> {
        self.send_buffer()?;
        self.tx
            .blocking_send(Msg::Finish)
            .map_err(|_| io::Error::other("the upload stopped"))?;
        Ok(Uploaded {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize_reset()),
        })
    }
}

impl Write for UploadSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK_SIZE - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK_SIZE {
            self.send_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Chunks are sent when full; flushing small writes would make tiny parts.
        Ok(())
    }
}

/// `err: cause: cause…` on one line.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        s.push_str(": ");
        s.push_str(&e.to_string());
        source = e.source();
    }
    s
}
