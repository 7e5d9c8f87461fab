use core::fmt;

/// What went wrong, in terms generic code can match on without knowing the platform
/// (the embedded-hal `ErrorKind` idea). Mirrors the subset of `std::io::ErrorKind` that
/// I/O on sockets, files and timers produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An entity (file, address) was not found.
    NotFound,
    /// The operation lacked the necessary privileges.
    PermissionDenied,
    /// The remote refused the connection.
    ConnectionRefused,
    /// The remote reset the connection.
    ConnectionReset,
    /// The connection was aborted by the local or remote host.
    ConnectionAborted,
    /// The socket is not connected.
    NotConnected,
    /// The address is already in use.
    AddrInUse,
    /// The address is not available on this host.
    AddrNotAvailable,
    /// The peer closed its reading side: writing fails.
    BrokenPipe,
    /// The entity already exists.
    AlreadyExists,
    /// The operation would block (readiness-based platforms only; never returned by a
    /// completed [`crate::io::Op`]).
    WouldBlock,
    /// A parameter was invalid (bad file descriptor, bad length...).
    InvalidInput,
    /// Data was malformed.
    InvalidData,
    /// The operation timed out.
    TimedOut,
    /// The operation was interrupted and may be retried.
    Interrupted,
    /// The platform does not support this operation.
    Unsupported,
    /// The operation needed more data than was available.
    UnexpectedEof,
    /// The platform ran out of memory or of submission slots.
    OutOfMemory,
    /// The operation was cancelled before it completed.
    Canceled,
    /// A pooled receive is paused at its hold limit and only its owner can resume it, by
    /// releasing buffers: see [`crate::io::POOL_HOLD_LIMIT`]. Not final: the receive goes on.
    HoldLimit,
    /// Anything else; see [`IoError::raw_os_error`].
    Other,
}

impl ErrorKind {
    /// A short description, the same words `std::io::ErrorKind` uses where one exists.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "entity not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::ConnectionRefused => "connection refused",
            ErrorKind::ConnectionReset => "connection reset",
            ErrorKind::ConnectionAborted => "connection aborted",
            ErrorKind::NotConnected => "not connected",
            ErrorKind::AddrInUse => "address in use",
            ErrorKind::AddrNotAvailable => "address not available",
            ErrorKind::BrokenPipe => "broken pipe",
            ErrorKind::AlreadyExists => "entity already exists",
            ErrorKind::WouldBlock => "operation would block",
            ErrorKind::InvalidInput => "invalid input parameter",
            ErrorKind::InvalidData => "invalid data",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Interrupted => "operation interrupted",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::UnexpectedEof => "unexpected end of file",
            ErrorKind::OutOfMemory => "out of memory",
            ErrorKind::Canceled => "operation canceled",
            ErrorKind::HoldLimit => "pooled receive paused at its hold limit",
            ErrorKind::Other => "other error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An I/O error reported by a platform: a portable [`ErrorKind`] and, where the platform has
/// one, its own error code (an `errno` on Linux).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}{}", OsCode(*.code))]
pub struct IoError {
    kind: ErrorKind,
    code: Option<i32>,
}

struct OsCode(Option<i32>);

impl fmt::Display for OsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, " (os error {code})"),
            None => Ok(()),
        }
    }
}

impl IoError {
    /// An error of `kind` with no platform code.
    #[inline]
    pub const fn new(kind: ErrorKind) -> Self {
        IoError { kind, code: None }
    }

    /// An error of `kind` carrying the platform's own code.
    #[inline]
    pub const fn with_os_code(kind: ErrorKind, code: i32) -> Self {
        IoError {
            kind,
            code: Some(code),
        }
    }

    /// The portable kind.
    #[inline]
    pub const fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The platform's own code (an `errno` on Linux), if any.
    #[inline]
    pub const fn raw_os_error(&self) -> Option<i32> {
        self.code
    }
}

impl From<ErrorKind> for IoError {
    fn from(kind: ErrorKind) -> Self {
        IoError::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_names_kind_and_code() {
        assert_eq!(
            IoError::with_os_code(ErrorKind::ConnectionRefused, 111).to_string(),
            "connection refused (os error 111)"
        );
        assert_eq!(IoError::new(ErrorKind::TimedOut).to_string(), "timed out");
    }
}
