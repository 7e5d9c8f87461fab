//! The smallest HTTP/1.1 "plaintext" server logic the HTTP benchmark servers share (until our
//! HTTP service exists): count the complete requests in what was read (a request ends with an
//! empty line; `wrk` sends `GET` requests without bodies, possibly pipelined) and answer each
//! with the same fixed response.

/// The response to every request: 200, `Hello, World!`, keep-alive (HTTP/1.1's default).
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/// The body, for servers that build the response with a library (hyper).
pub const BODY: &[u8] = b"Hello, World!";

/// Finds request ends (`\r\n\r\n`) across reads: requests may arrive split at any byte.
#[derive(Debug, Default)]
pub struct RequestCounter {
    /// How many bytes of `\r\n\r\n` the previous read ended with (0-3).
    matched: usize,
    /// Bytes since the last request end; a bound against a peer that never ends a request.
    pending: usize,
}

/// A request's header is longer than this: the connection is closed.
pub const MAX_REQUEST: usize = 64 * 1024;

impl RequestCounter {
    /// Feed the bytes just read; returns how many requests they completed, or `None` if a
    /// request grew beyond [`MAX_REQUEST`].
    ///
    /// Only a `\n` can end a request, so the bytes are searched for those eight at a time
    /// ([`newlines`]) instead of being stepped through one by one: a match begun in the
    /// previous read is settled byte by byte (at most 3 bytes), then each `\n` checks the
    /// 3 bytes before it. Same result as the byte-by-byte automaton (tested against it).
    pub fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let mut complete = 0;
        // Index just after the last request end found in `data`.
        let mut last_end = None;
        let mut start = 0;
        while self.matched != 0 && start < data.len() {
            self.matched = step(self.matched, data[start]);
            start += 1;
            if self.matched == END.len() {
                complete += 1;
                self.matched = 0;
                last_end = Some(start);
            }
        }
        // From `start` on, the automaton starts from nothing matched.
        let mut region = start;
        newlines(data, start, |j| {
            if j >= region + 3 && &data[j - 3..=j] == END {
                complete += 1;
                region = j + 1;
                last_end = Some(region);
            }
        });
        // (If the loop above took every byte, its state stands.)
        if start < data.len() {
            let tail = &data[region..];
            self.matched = if tail.ends_with(b"\r\n\r") {
                3
            } else if tail.ends_with(b"\r\n") {
                2
            } else if tail.ends_with(b"\r") {
                1
            } else {
                0
            };
        }
        self.pending = match last_end {
            Some(e) => data.len() - e,
            None => self.pending + data.len(),
        };
        (self.pending <= MAX_REQUEST).then_some(complete)
    }
}

/// The end of a request header.
const END: &[u8; 4] = b"\r\n\r\n";

/// Call `found` with the index of every `\n` in `data[from..]`, in order. Eight bytes at a
/// time (a word's zero bytes after an XOR with `\n` in every byte, the exact form that never
/// flags a byte above a real match): requests are a few dozen bytes, where `memchr`'s
/// per-call set-up cost more than this whole scan.
fn newlines(data: &[u8], from: usize, mut found: impl FnMut(usize)) {
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut words = data.get(from..).unwrap_or_default().chunks_exact(8);
    let mut base = from;
    for word in words.by_ref() {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ NEWLINES;
        // High bit set in exactly the bytes of `x` that are zero.
        let mut zeros = !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7);
        while zeros != 0 {
            found(base + zeros.trailing_zeros() as usize / 8);
            zeros &= zeros - 1;
        }
        base += 8;
    }
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b'\n' {
            found(base + i);
        }
    }
}

/// One byte through the automaton that matches [`END`]: how much of it is matched after `b`,
/// given `matched` before.
fn step(matched: usize, b: u8) -> usize {
    if b == END[matched] {
        matched + 1
    } else if b == b'\r' {
        1
    } else {
        0
    }
}

/// `n` responses back to back, reusing `out`'s allocation.
pub fn responses(out: &mut Vec<u8>, n: usize) {
    out.clear();
    for _ in 0..n {
        out.extend_from_slice(RESPONSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_split_anywhere() {
        let two = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        for split in 0..two.len() {
            let mut c = RequestCounter::default();
            let n = c.feed(&two[..split]).unwrap_or(99) + c.feed(&two[split..]).unwrap_or(99);
            assert_eq!(n, 2, "split at {split}");
        }
        let mut c = RequestCounter::default();
        assert_eq!(c.feed(b"\r\n\r\r\n\r\n"), Some(1));
    }

    /// The byte-by-byte automaton `feed` must agree with: (requests completed, matched,
    /// pending) after each read.
    fn reference(matched: &mut usize, pending: &mut usize, data: &[u8]) -> usize {
        let mut complete = 0;
        for &b in data {
            *matched = step(*matched, b);
            *pending += 1;
            if *matched == END.len() {
                complete += 1;
                *matched = 0;
                *pending = 0;
            }
        }
        complete
    }

    #[test]
    fn agrees_with_the_byte_automaton_on_any_split() {
        // Every string over these bytes up to length 7, fed in two reads split anywhere.
        let alphabet = [b'\r', b'\n', b'a'];
        for len in 0..=7u32 {
            for code in 0..3usize.pow(len) {
                let mut c = code;
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[c % 3];
                        c /= 3;
                        b
                    })
                    .collect();
                for split in 0..=data.len() {
                    let mut ours = RequestCounter::default();
                    let (mut m, mut p) = (0, 0);
                    for part in [&data[..split], &data[split..]] {
                        let got = ours.feed(part);
                        let want = reference(&mut m, &mut p, part);
                        assert_eq!(got, Some(want), "{data:?} split at {split}");
                        assert_eq!((ours.matched, ours.pending), (m, p), "{data:?} / {split}");
                    }
                }
            }
        }
    }

    #[test]
    fn newlines_finds_every_one_across_words() {
        // A `\n` at every position of a few words, among bytes a carry-propagating zero-byte
        // test would flag right above it (`\x0b`) and bytes one bit away from it.
        for len in 0..=40 {
            for from in 0..=len {
                for at in 0..len {
                    let mut data = vec![b'\x0b'; len];
                    data[at] = b'\n';
                    if at + 2 < len {
                        data[at + 2] = b'\n' ^ 0x80;
                    }
                    let mut got = Vec::new();
                    newlines(&data, from, |j| got.push(j));
                    let want: Vec<usize> = (from..len).filter(|&j| data[j] == b'\n').collect();
                    assert_eq!(got, want, "len {len} from {from} at {at}");
                }
            }
        }
    }

    #[test]
    fn agrees_with_the_byte_automaton_on_long_reads() {
        // Pseudo-random strings longer than a word, mostly request-end bytes, fed in pieces.
        let alphabet = [b'\r', b'\n', b'a', b'\r', b'\n'];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..2000 {
            let len = (next() % 70) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let mut ours = RequestCounter::default();
            let (mut m, mut p) = (0, 0);
            let mut at = 0;
            while at < len {
                let end = (at + 1 + (next() % 24) as usize).min(len);
                let part = &data[at..end];
                let want = reference(&mut m, &mut p, part);
                assert_eq!(ours.feed(part), Some(want), "round {round}: {data:?}");
                assert_eq!((ours.matched, ours.pending), (m, p), "round {round}");
                at = end;
            }
        }
    }

    #[test]
    fn bounds_a_request_that_never_ends() {
        let mut c = RequestCounter::default();
        assert_eq!(c.feed(&vec![b'a'; MAX_REQUEST + 1]), None);
    }

    #[test]
    fn response_says_its_length() {
        let text = std::str::from_utf8(RESPONSE).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(body.as_bytes(), BODY);
    }
}
