//! The open WebSocket connections: what the shell hands the core's answers to (each
//! connection's queue, bounded in bytes), and what the metrics count about them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::core::ConnectionId;

/// Bytes of frames waiting to go out on one connection before more are dropped: a slow
/// reader (or one that stopped reading) costs the gateway this much at most.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Batches (each one flush of the shell's, any number of frames) waiting, likewise.
const QUEUE_BATCHES: usize = 256;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The client closed it between frames.
    Normal,
    /// The stream did not start with the magic.
    BadMagic,
    /// A frame of length 0.
    EmptyFrame,
    /// A frame longer than any datagram.
    FrameTooLong,
    /// The connection ended inside a frame.
    Truncated,
    /// A text message, or a WebSocket message over the size limit.
    BadMessage,
    /// TLS, the upgrade and the magic took longer than the handshake timeout.
    HandshakeTimeout,
    /// Nothing came for the idle timeout.
    IdleTimeout,
    /// The TLS handshake failed.
    Tls,
    /// Not a WebSocket upgrade.
    Upgrade,
    /// A read or write failed (reset, broken pipe).
    Error,
}

impl Close {
    pub const ALL: [Close; 11] = [
        Close::Normal,
        Close::BadMagic,
        Close::EmptyFrame,
        Close::FrameTooLong,
        Close::Truncated,
        Close::BadMessage,
        Close::HandshakeTimeout,
        Close::IdleTimeout,
        Close::Tls,
        Close::Upgrade,
        Close::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Close::Normal => "normal",
            Close::BadMagic => "bad_magic",
            Close::EmptyFrame => "empty_frame",
            Close::FrameTooLong => "frame_too_long",
            Close::Truncated => "truncated",
            Close::BadMessage => "bad_message",
            Close::HandshakeTimeout => "handshake_timeout",
            Close::IdleTimeout => "idle_timeout",
            Close::Tls => "tls",
            Close::Upgrade => "upgrade",
            Close::Error => "error",
        }
    }

    pub fn of(e: super::framing::FrameError) -> Close {
        use super::framing::FrameError as F;
        match e {
            F::BadMagic => Close::BadMagic,
            F::Empty => Close::EmptyFrame,
            F::TooLong => Close::FrameTooLong,
            F::Truncated => Close::Truncated,
        }
    }
}

struct Outbox {
    tx: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// A connection's end of its queue: the writer takes batches of frames from it.
pub struct Inbox {
    pub rx: mpsc::Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

impl Inbox {
    /// Marks a batch taken off the queue as gone out.
    pub fn sent(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Connections {
    outboxes: Mutex<HashMap<ConnectionId, Outbox>>,
    next_id: AtomicU64,
    /// Connections accepted and not yet closed (in their handshakes or carrying frames).
    pub open: AtomicUsize,
    pub accepted: AtomicU64,
    /// Refused because `open` was at the limit.
    pub refused: AtomicU64,
    /// Datagrams dropped because their connection's queue was full.
    pub queue_full: AtomicU64,
    closed: [AtomicU64; Close::ALL.len()],
}

impl Connections {
    /// A connection's id and queue, registered so that answers can find it.
    pub fn register(&self) -> (ConnectionId, Inbox) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let queued = Arc::new(AtomicUsize::new(0));
        let outbox = Outbox {
            tx,
            queued: queued.clone(),
        };
        self.lock().insert(id, outbox);
        (id, Inbox { rx, queued })
    }

    pub fn unregister(&self, id: ConnectionId) {
        self.lock().remove(&id);
    }

    pub fn count_close(&self, why: Close) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self, why: Close) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    /// Queues `frames` (holding `datagrams` datagrams) for connection `id`; false if it is
    /// gone or its queue is full (then the datagrams are counted as dropped here).
    pub fn send(&self, id: ConnectionId, frames: Vec<u8>, datagrams: u64) -> bool {
        let map = self.lock();
        let Some(outbox) = map.get(&id) else {
            return false;
        };
        let len = frames.len();
        if outbox.queued.load(Ordering::Relaxed) + len > MAX_QUEUED_BYTES {
            self.queue_full.fetch_add(datagrams, Ordering::Relaxed);
            return false;
        }
        outbox.queued.fetch_add(len, Ordering::Relaxed);
        if outbox.tx.try_send(frames).is_err() {
            outbox.queued.fetch_sub(len, Ordering::Relaxed);
            self.queue_full.fetch_add(datagrams, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, Outbox>> {
        self.outboxes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_that_stops_reading_costs_a_bounded_queue() {
        let c = Connections::default();
        let (id, mut inbox) = c.register();
        let mut sent: u64 = 0;
        for _ in 0..10_000 {
            if c.send(id, vec![0; 1500], 1) {
                sent += 1;
            }
        }
        assert!(sent as usize * 1500 <= MAX_QUEUED_BYTES, "{sent}");
        assert_eq!(c.queue_full.load(Ordering::Relaxed), 10_000 - sent);
        // Taking a batch makes room again.
        let b = inbox.rx.try_recv().unwrap();
        inbox.sent(b.len());
        assert!(c.send(id, vec![0; 1500], 1));
        c.unregister(id);
        assert!(!c.send(id, vec![0; 10], 1), "gone");
    }
}
