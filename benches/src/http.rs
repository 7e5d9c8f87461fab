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
    pub fn feed(&mut self, data: &[u8]) -> Option<usize> {
        const END: &[u8; 4] = b"\r\n\r\n";
        let mut complete = 0;
        for &b in data {
            self.matched = if b == END[self.matched] {
                self.matched + 1
            } else if b == b'\r' {
                1
            } else {
                0
            };
            self.pending += 1;
            if self.matched == END.len() {
                complete += 1;
                self.matched = 0;
                self.pending = 0;
            }
        }
        (self.pending <= MAX_REQUEST).then_some(complete)
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
