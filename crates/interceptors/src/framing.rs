//! The gRPC length-prefixed message framing, followed across however a
//! body's bytes arrive: each message is a 5-byte prefix (compressed flag,
//! then the length, big-endian) and that many bytes.
//!
//! Used where a layer must know where messages begin or end without
//! decoding them: the request size limit ([`crate::message_size`]) acts at
//! each prefix, the message counters ([`crate::metrics`]) at each message's
//! end.

/// Where a body is in the framing.
#[derive(Debug, Default)]
pub struct Frames {
    prefix: [u8; 5],
    prefix_filled: usize,
    message_left: u64,
}

impl Frames {
    /// Follows the framing from a body's first byte.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `data`: calls `on_prefix` with each message's announced length
    /// as its prefix completes (an error stops the scan and is returned) and
    /// `on_message` as each message's last byte goes by.
    pub fn scan<E>(
        &mut self,
        mut data: &[u8],
        mut on_prefix: impl FnMut(u32) -> Result<(), E>,
        mut on_message: impl FnMut(),
    ) -> Result<(), E> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let skip = data
                    .len()
                    .min(usize::try_from(self.message_left).unwrap_or(usize::MAX));
                data = &data[skip..];
                self.message_left -= skip as u64;
                if self.message_left == 0 {
                    on_message();
                }
                continue;
            }
            let take = data.len().min(5 - self.prefix_filled);
            self.prefix[self.prefix_filled..self.prefix_filled + take]
                .copy_from_slice(&data[..take]);
            self.prefix_filled += take;
            data = &data[take..];
            if self.prefix_filled == 5 {
                self.prefix_filled = 0;
                let [_, a, b, c, d] = self.prefix;
                let length = u32::from_be_bytes([a, b, c, d]);
                on_prefix(length)?;
                self.message_left = u64::from(length);
                if length == 0 {
                    on_message();
                }
            }
        }
        Ok(())
    }

    /// Consumes `data`, counting the messages that end in it.
    pub fn count(&mut self, data: &[u8]) -> u64 {
        let mut ended = 0;
        let _ = self.scan::<()>(data, |_| Ok(()), || ended += 1);
        ended
    }

    /// True between messages (nothing of a message read yet).
    pub fn at_boundary(&self) -> bool {
        self.prefix_filled == 0 && self.message_left == 0
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One framed message of `len` bytes, for tests of framed bodies.
    pub(crate) fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len as usize));
        bytes
    }

    #[test]
    fn messages_are_counted_at_their_end_however_the_bytes_are_split() {
        let stream: Vec<u8> = [message(10), message(0), message(100)].concat();
        for chunk in [1, 2, 3, 5, 7, 64, 1000] {
            let mut frames = Frames::new();
            let mut counted = Vec::new();
            for piece in stream.chunks(chunk) {
                counted.push(frames.count(piece));
            }
            assert_eq!(counted.iter().sum::<u64>(), 3, "chunks of {chunk}");
            assert!(frames.at_boundary());
        }
        let mut frames = Frames::new();
        assert_eq!(frames.count(&message(10)[..14]), 0, "one byte short");
        assert!(!frames.at_boundary());
    }
}
