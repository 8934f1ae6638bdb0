//! flyctl's framing on a WebSocket: the 4-byte big-endian magic once, then per WireGuard
//! datagram a 4-byte big-endian length and the datagram. A [`Deframer`] is fed the bytes of
//! binary messages as they come and hands back whole datagrams; it never holds more than
//! one partial frame.
//!
//! wgtool (which does not depend on meshd) compiles this same file for the laptop's side.

/// What a connection starts with.
pub const MAGIC: u32 = 0x2FAC_ED77;
/// The longest datagram a frame may carry: the longest a UDP datagram could have.
pub const MAX_DATAGRAM: usize = 65_535;

/// Why a connection's byte stream is not flyctl framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the connection did not start with the magic 0x2FACED77")]
    BadMagic,
    #[error("a frame of length 0")]
    Empty,
    #[error("a frame longer than {MAX_DATAGRAM} bytes")]
    TooLong,
    #[error("the connection ended inside a frame")]
    Truncated,
}

#[derive(Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// Where the unread bytes of `buf` start.
    read: usize,
    magic_seen: bool,
}

impl Deframer {
    pub fn new() -> Deframer {
        Deframer::default()
    }

    /// For the laptop's side of the stream: the gateway's frames come with no magic.
    pub fn without_magic() -> Deframer {
        Deframer {
            magic_seen: true,
            ..Deframer::default()
        }
    }

    /// Whether the magic has come (the connection is flyctl framing, not a stray client).
    pub fn started(&self) -> bool {
        self.magic_seen
    }

    /// Takes the bytes of one binary message.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.read > 0 && self.read == self.buf.len() {
            self.buf.clear();
            self.read = 0;
        } else if self.read > self.buf.len() / 2 {
            self.buf.drain(..self.read);
            self.read = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole datagram, `None` until more bytes come; after an error the
    /// connection is to be closed.
    pub fn next_datagram(&mut self) -> Result<Option<&[u8]>, FrameError> {
        if !self.magic_seen {
            let Some(head) = self.word() else {
                return Ok(None);
            };
            if head != MAGIC {
                return Err(FrameError::BadMagic);
            }
            self.read += 4;
            self.magic_seen = true;
        }
        let Some(len) = self.word() else {
            return Ok(None);
        };
        let len = len as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_DATAGRAM {
            return Err(FrameError::TooLong);
        }
        let start = self.read + 4;
        if self.buf.len() - start < len {
            return Ok(None);
        }
        self.read = start + len;
        Ok(Some(&self.buf[start..start + len]))
    }

    /// The stream ended: fine between frames, not inside one.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.read < self.buf.len() {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    fn word(&self) -> Option<u32> {
        let b = self.buf.get(self.read..self.read + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Appends one datagram as a frame.
pub fn frame(out: &mut Vec<u8>, datagram: &[u8]) {
    out.extend_from_slice(&(datagram.len() as u32).to_be_bytes());
    out.extend_from_slice(datagram);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(datagrams: &[&[u8]]) -> Vec<u8> {
        let mut s = MAGIC.to_be_bytes().to_vec();
        for d in datagrams {
            frame(&mut s, d);
        }
        s
    }

    fn all(d: &mut Deframer) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut got = Vec::new();
        while let Some(x) = d.next_datagram()? {
            got.push(x.to_vec());
        }
        Ok(got)
    }

    #[test]
    fn frames_split_anywhere_across_messages_come_out_whole() {
        let big = vec![7u8; MAX_DATAGRAM];
        let s = stream(&[b"one", &[2; 148], &big, b"x"]);
        // Every split point of the head, and messages of several sizes after it.
        for first in 0..12 {
            for size in [1, 3, 1000, 70_000] {
                let mut d = Deframer::new();
                let mut got = Vec::new();
                d.push(&s[..first]);
                got.extend(all(&mut d).unwrap());
                for chunk in s[first..].chunks(size) {
                    d.push(chunk);
                    got.extend(all(&mut d).unwrap());
                }
                d.finish().unwrap();
                assert_eq!(got.len(), 4, "split {first}/{size}");
                assert_eq!(got[0], b"one");
                assert_eq!(got[2], big);
                assert_eq!(got[3], b"x");
            }
        }
    }

    #[test]
    fn each_bad_stream_has_its_reason() {
        let mut d = Deframer::new();
        d.push(b"GET / HTTP/1.1\r\n");
        assert_eq!(d.next_datagram(), Err(FrameError::BadMagic));

        let mut d = Deframer::new();
        d.push(&MAGIC.to_be_bytes());
        d.push(&0u32.to_be_bytes());
        assert_eq!(d.next_datagram(), Err(FrameError::Empty));

        let mut d = Deframer::new();
        d.push(&MAGIC.to_be_bytes());
        d.push(&70_000u32.to_be_bytes());
        assert_eq!(d.next_datagram(), Err(FrameError::TooLong));

        let mut d = Deframer::new();
        let s = stream(&[&[1; 100]]);
        d.push(&s[..50]);
        assert_eq!(d.next_datagram(), Ok(None));
        assert!(d.started());
        assert_eq!(d.finish(), Err(FrameError::Truncated));

        // Nothing at all, or only whole frames: a clean end.
        assert_eq!(Deframer::new().finish(), Ok(()));
    }

    #[test]
    fn the_buffer_holds_at_most_one_partial_frame_beyond_a_message() {
        let mut d = Deframer::new();
        d.push(&MAGIC.to_be_bytes());
        let mut one = Vec::new();
        frame(&mut one, &[3; 1400]);
        for _ in 0..10_000 {
            d.push(&one[..700]);
            assert_eq!(d.next_datagram(), Ok(None));
            d.push(&one[700..]);
            assert_eq!(d.next_datagram().unwrap().map(|x| x.len()), Some(1400));
            assert_eq!(d.next_datagram(), Ok(None));
        }
        assert!(d.buf.capacity() < 16 * 1404, "{}", d.buf.capacity());
    }
}
