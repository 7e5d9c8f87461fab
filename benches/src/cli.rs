//! Command-line flags: `--name value` or `--name=value`, and switches (`--no-pin`). One small
//! parser for every binary of the package, and the flags all echo servers share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::exit;
use std::str::FromStr;

/// Parsed `--name [value]` pairs, taken out one by one; [`Flags::finish`] rejects leftovers.
#[derive(Debug)]
pub struct Flags {
    args: Vec<(String, Option<String>)>,
}

impl Flags {
    /// Split `args` (without the program name) into flags. A flag's value is the text after
    /// `=`, or else the next argument if that does not start with `--`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, String> {
        let mut out = Vec::new();
        let mut args = args.into_iter().peekable();
        while let Some(arg) = args.next() {
            if arg == "-h" {
                out.push(("--help".to_owned(), None));
                continue;
            }
            if !arg.starts_with("--") {
                return Err(format!("unexpected argument {arg:?}"));
            }
            match arg.split_once('=') {
                Some((name, value)) => out.push((name.to_owned(), Some(value.to_owned()))),
                None => {
                    let value = args.next_if(|next| !next.starts_with("--"));
                    out.push((arg, value));
                }
            }
        }
        Ok(Flags { args: out })
    }

    /// Take flag `name`'s value, parsed; `None` if it is absent. The last occurrence wins.
    pub fn value<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        let mut found = None;
        while let Some(i) = self.args.iter().position(|(n, _)| n == name) {
            let (_, value) = self.args.remove(i);
            let value = value.ok_or_else(|| format!("{name} needs a value"))?;
            let parsed = value
                .parse()
                .map_err(|e| format!("bad value {value:?} for {name}: {e}"))?;
            found = Some(parsed);
        }
        Ok(found)
    }

    /// Take switch `name` (a flag without a value): `true` if it was given.
    pub fn switch(&mut self, name: &str) -> Result<bool, String> {
        let mut found = false;
        while let Some(i) = self.args.iter().position(|(n, _)| n == name) {
            if let (_, Some(v)) = self.args.remove(i) {
                return Err(format!("{name} takes no value (got {v:?})"));
            }
            found = true;
        }
        Ok(found)
    }

    /// `Ok` if every flag was taken; else the first one nobody asked for.
    pub fn finish(self) -> Result<(), String> {
        match self.args.into_iter().next() {
            None => Ok(()),
            Some((name, _)) => Err(format!("unknown argument {name}")),
        }
    }
}

/// Parse the process's arguments with `parse`; on `--help` print `usage` and exit 0, on an
/// error print it with `usage` and exit 2.
pub fn parse_or_exit<T>(
    program: &str,
    usage: &str,
    parse: impl FnOnce(&mut Flags) -> Result<T, String>,
) -> T {
    let result = Flags::parse(std::env::args().skip(1)).and_then(|mut flags| {
        if flags.switch("--help")? {
            println!("{usage}");
            exit(0);
        }
        let out = parse(&mut flags)?;
        flags.finish()?;
        Ok(out)
    });
    match result {
        Ok(out) => out,
        Err(msg) => {
            eprintln!("{program}: {msg}\n{usage}");
            exit(2);
        }
    }
}

/// What an echo server needs to know. Every server takes `--port N` (default 7000),
/// `--host IP` (default 127.0.0.1), `--core N` (pin the whole server to CPU N; default 0) and
/// `--no-pin`; `--threads N` and `--backend NAME` only where the server has such a choice.
#[derive(Debug, Clone)]
pub struct ServerArgs {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// CPU to pin to, or `None` (`--no-pin`).
    pub core: Option<usize>,
    /// Worker threads (`--threads`, servers with a thread pool only). Default 1.
    pub threads: usize,
    /// `--backend` as given (servers with a backend choice only).
    pub backend: Option<String>,
}

/// Which of the optional server flags a server accepts.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFlags {
    /// Accept `--threads N`.
    pub threads: bool,
    /// Accept `--backend NAME`.
    pub backend: bool,
}

impl ServerArgs {
    /// Parse the process's arguments (exiting on `--help` or an error), then pin the calling
    /// thread (call it first in `main`, so every thread the server starts inherits the pin).
    pub fn from_env(program: &str, accepts: ServerFlags) -> ServerArgs {
        let mut usage = format!("usage: {program} [--port N] [--host IP] [--core N | --no-pin]");
        if accepts.threads {
            usage.push_str(" [--threads N]");
        }
        if accepts.backend {
            usage.push_str(" [--backend uring|mio]");
        }
        let args = parse_or_exit(program, &usage, |f| {
            let host = f
                .value::<IpAddr>("--host")?
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
            let port = f.value::<u16>("--port")?.unwrap_or(7000);
            let core = f.value::<usize>("--core")?;
            let no_pin = f.switch("--no-pin")?;
            if no_pin && core.is_some() {
                return Err("--core and --no-pin exclude each other".into());
            }
            let threads = if accepts.threads {
                f.value::<usize>("--threads")?.unwrap_or(1)
            } else {
                1
            };
            if threads == 0 {
                return Err("--threads must be at least 1".into());
            }
            let backend = if accepts.backend {
                f.value::<String>("--backend")?
            } else {
                None
            };
            Ok(ServerArgs {
                addr: SocketAddr::new(host, port),
                core: if no_pin {
                    None
                } else {
                    Some(core.unwrap_or(0))
                },
                threads,
                backend,
            })
        });
        if let Some(cpu) = args.core {
            if let Err(e) = crate::affinity::pin_current_thread(cpu) {
                eprintln!("{program}: cannot pin to CPU {cpu}: {e}");
                exit(1);
            }
        }
        args
    }
}

/// Our runtime for a benchmark server: one core, pinned when `args` says so (the calling
/// thread is already pinned to `--core`, so "the first CPU this process may use" is that one),
/// on `--backend uring` (default) or `mio`. Exits with the reason if it cannot be built.
pub fn seastar_runtime(program: &str, args: &ServerArgs) -> seastar::Runtime {
    let backend = match args.backend.as_deref().unwrap_or("uring") {
        "uring" | "io_uring" => seastar::Backend::IoUring,
        "mio" | "epoll" => seastar::Backend::Mio,
        other => {
            eprintln!("{program}: unknown backend {other:?} (uring or mio)");
            exit(2);
        }
    };
    let rt = seastar::Runtime::builder()
        .cores(1)
        .pin(args.core.is_some())
        .backend(backend)
        .build();
    match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: {e}");
            exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::parse(args.iter().map(|s| s.to_string())).expect("parses")
    }

    #[test]
    fn values_switches_and_leftovers() {
        let mut f = flags(&["--port", "80", "--no-pin", "--size=64", "--extra"]);
        assert_eq!(f.value::<u16>("--port"), Ok(Some(80)));
        assert_eq!(f.value::<usize>("--size"), Ok(Some(64)));
        assert_eq!(f.value::<usize>("--core"), Ok(None));
        assert_eq!(f.switch("--no-pin"), Ok(true));
        assert_eq!(f.finish(), Err("unknown argument --extra".to_owned()));
    }

    #[test]
    fn errors_are_named() {
        let mut f = flags(&["--port", "x"]);
        assert!(f.value::<u16>("--port").is_err());
        let mut f = flags(&["--port"]);
        assert_eq!(
            f.value::<u16>("--port"),
            Err("--port needs a value".to_owned())
        );
        assert!(Flags::parse(["stray".to_owned()]).is_err());
    }
}
