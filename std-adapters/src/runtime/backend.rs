//! Which I/O backend the cores run on, and how `Auto` decides.

use std::fmt;

use seastar_hal_linux::UringConfig;

use crate::error::Error;

/// The I/O backend of every core of a [`Runtime`](crate::Runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// io_uring when this machine's kernel allows it (a probe ring is built at
    /// [`build`](crate::runtime::Builder::build)), otherwise mio; a log line says which and
    /// why. The environment variable `SEASTAR_BACKEND=uring|mio|auto` overrides it.
    #[default]
    Auto,
    /// io_uring (`seastar-hal-linux`); building fails if the kernel refuses it.
    IoUring,
    /// epoll through mio (`seastar-hal-mio`): works everywhere.
    Mio,
}

impl Backend {
    /// The short name: `auto`, `io_uring` or `mio`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Mio => "mio",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    /// `auto`, `uring` (or `io_uring`, `iouring`), `mio`; case-insensitive.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "iouring" | "io-uring" => Ok(Backend::IoUring),
            "mio" | "epoll" => Ok(Backend::Mio),
            other => Err(Error::Config(format!(
                "unknown backend {other:?}: expected auto, uring or mio"
            ))),
        }
    }
}

/// The environment variable that overrides [`Backend::Auto`].
pub const BACKEND_ENV: &str = "SEASTAR_BACKEND";

/// Resolve `requested` to a concrete backend, with the reason (for logs and
/// [`Runtime::backend_reason`](crate::Runtime::backend_reason)).
pub(crate) fn choose(
    requested: Backend,
    uring: &UringConfig,
    env: Option<&str>,
) -> Result<(Backend, String), Error> {
    let requested_by_env;
    let requested = match (requested, env) {
        (Backend::Auto, Some(v)) if !v.trim().is_empty() => {
            requested_by_env = true;
            v.parse::<Backend>()
                .map_err(|e| Error::Config(format!("{BACKEND_ENV}: {e}")))?
        }
        (b, _) => {
            requested_by_env = false;
            b
        }
    };
    let how = if requested_by_env {
        format!("{BACKEND_ENV}={}", requested.name())
    } else {
        "requested".to_owned()
    };
    match requested {
        Backend::Mio => {
            log::info!("seastar: backend mio ({how})");
            Ok((Backend::Mio, how))
        }
        Backend::IoUring => match seastar_hal_linux::probe(uring) {
            Ok(_) => {
                log::info!("seastar: backend io_uring ({how})");
                Ok((Backend::IoUring, how))
            }
            Err(source) => Err(Error::BackendUnavailable {
                backend: Backend::IoUring,
                source,
            }),
        },
        Backend::Auto => match seastar_hal_linux::probe(uring) {
            Ok(features) => {
                let reason = format!(
                    "auto: the io_uring probe succeeded, {} multishot accept",
                    if features.native_multishot_accept {
                        "native"
                    } else {
                        "emulated"
                    }
                );
                log::info!("seastar: backend io_uring ({reason})");
                Ok((Backend::IoUring, reason))
            }
            Err(e) => {
                let reason = format!("auto: io_uring is unavailable ({e}), falling back to mio");
                log::warn!("seastar: backend mio ({reason})");
                Ok((Backend::Mio, reason))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for b in [Backend::Auto, Backend::IoUring, Backend::Mio] {
            assert_eq!(b.name().parse::<Backend>().ok(), Some(b));
        }
        assert_eq!("URING".parse::<Backend>().ok(), Some(Backend::IoUring));
        assert!("kqueue".parse::<Backend>().is_err());
    }

    #[test]
    fn explicit_mio_is_kept_and_env_is_ignored() {
        let (b, _) = choose(Backend::Mio, &UringConfig::new(), Some("uring")).expect("mio");
        assert_eq!(b, Backend::Mio);
    }

    #[test]
    fn env_overrides_auto_only() {
        let (b, why) = choose(Backend::Auto, &UringConfig::new(), Some("mio")).expect("mio");
        assert_eq!(b, Backend::Mio);
        assert!(why.contains(BACKEND_ENV), "{why}");
        assert!(matches!(
            choose(Backend::Auto, &UringConfig::new(), Some("nope")),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn auto_never_stays_auto() {
        let (b, why) = choose(Backend::Auto, &UringConfig::new(), None).expect("auto");
        assert_ne!(b, Backend::Auto);
        assert!(why.starts_with("auto"), "{why}");
        // Explicit io_uring agrees with the probe.
        let explicit = choose(Backend::IoUring, &UringConfig::new(), None);
        assert_eq!(explicit.is_ok(), b == Backend::IoUring);
    }
}
