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
    /// Only a `\n` can end a request, so the bytes are searched for those with `memchr`
    /// (vectorised) instead of being stepped through one by one: a match begun in the
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
        for j in memchr::memchr_iter(b'\n', &data[start..]).map(|j| j + start) {
            if j >= region + 3 && &data[j - 3..=j] == END {
                complete += 1;
                region = j + 1;
                last_end = Some(region);
            }
        }
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
