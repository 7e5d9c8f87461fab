//! Running external commands: echo them, stream or capture their output, bound their time.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The `cargo` of the toolchain that runs this xtask: `$CARGO` (set by cargo for `cargo run`),
/// else `cargo` on `PATH`.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(crate::project_root());
    cmd
}

/// `cargo` from `PATH`, which must be rustup's proxy: only the proxy understands `+nightly`.
pub fn rustup_cargo(toolchain: &str) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg(format!("+{toolchain}"));
    cmd.current_dir(crate::project_root());
    cmd
}

/// `rustup` from `PATH`.
pub fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(crate::project_root());
    cmd
}

/// The command as a user would type it (program by file name, arguments quoted if needed,
/// explicitly set environment variables first).
pub fn display(cmd: &Command) -> String {
    let mut words = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_else(|| cmd.get_program());
    words.push(quote(&program.to_string_lossy()));
    words.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=+./:,@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Run `cmd` with its output going straight to the terminal (or CI log), after echoing it;
/// its standard error is sent to standard output.
/// With a `limit`, the command and every process it started are killed when it runs out.
///
/// `Err` carries a one-line reason: the exit status, the time limit, or why it did not start.
pub fn stream(cmd: &mut Command, limit: Option<Duration>) -> Result<(), String> {
    let shown = display(cmd);
    println!("    $ {shown}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(stderr_to_stdout())
        .spawn()
        .map_err(|e| spawn_error(cmd.get_program(), &e))?;
    let status = match limit {
        None => child.wait().map(Some),
        Some(limit) => wait_with_limit(&mut child, limit),
    };
    match status {
        Ok(Some(status)) => check_status(&shown, status),
        Ok(None) => Err(format!(
            "`{shown}` hit the time limit after {} and was killed",
            fmt_duration(limit.unwrap_or_default())
        )),
        Err(e) => Err(format!("`{shown}`: waiting for it failed: {e}")),
    }
}

/// Run `cmds` at the same time, after echoing them. The first one's output streams to the
/// terminal; each other's is kept in a file and printed once it ends, so no lines interleave.
/// `limit` bounds them all: whatever still runs then is killed with everything it started.
/// One result per command, in order, as [`stream`] gives it.
pub fn stream_concurrently(
    cmds: &mut [Command],
    limit: Option<Duration>,
) -> Vec<Result<(), String>> {
    let deadline = limit.map(|l| Instant::now() + l);
    let log_dir = std::env::temp_dir().join(format!("xtask-logs-{}", std::process::id()));
    let mut running: Vec<Result<Running, String>> = Vec::new();
    for (i, cmd) in cmds.iter_mut().enumerate() {
        let shown = display(cmd);
        println!("    $ {shown} &");
        let output = if i == 0 {
            Ok(None)
        } else {
            let path = log_dir.join(format!("{i}.log"));
            std::fs::create_dir_all(&log_dir)
                .and_then(|()| std::fs::File::create(&path))
                .map(|file| Some((path, file)))
                .map_err(|e| format!("`{shown}`: no log file: {e}"))
        };
        running.push(output.and_then(|output| {
            let (stdout, stderr, log) = match output {
                None => (Stdio::inherit(), stderr_to_stdout(), None),
                Some((path, file)) => {
                    let err = file
                        .try_clone()
                        .map_err(|e| format!("`{shown}`: no log file: {e}"))?;
                    (Stdio::from(file), Stdio::from(err), Some(path))
                }
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .map_err(|e| spawn_error(cmd.get_program(), &e))?;
            Ok(Running {
                shown,
                child,
                log,
                status: None,
            })
        }));
    }
    // Wait for all, or until the limit.
    loop {
        let mut pending = false;
        for run in running.iter_mut().flatten() {
            if run.status.is_none() {
                match run.child.try_wait() {
                    Ok(Some(status)) => run.status = Some(Ok(status)),
                    Ok(None) => pending = true,
                    Err(e) => {
                        run.status =
                            Some(Err(format!("`{}`: waiting for it failed: {e}", run.shown)))
                    }
                }
            }
        }
        if !pending {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            for run in running.iter_mut().flatten() {
                if run.status.is_none() {
                    kill_tree(&mut run.child);
                    run.status = Some(Err(format!(
                        "`{}` hit the time limit after {} and was killed",
                        run.shown,
                        fmt_duration(limit.unwrap_or_default())
                    )));
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let results = running
        .into_iter()
        .map(|run| {
            let run = run?;
            if let Some(log) = &run.log {
                println!("    --- output of `{}` ---", run.shown);
                if let Ok(text) = std::fs::read_to_string(log) {
                    print!("{text}");
                }
                let _ = std::fs::remove_file(log);
            }
            match run.status {
                Some(Ok(status)) => check_status(&run.shown, status),
                Some(Err(why)) => Err(why),
                None => Err(format!("`{}` was not waited for", run.shown)),
            }
        })
        .collect();
    let _ = std::fs::remove_dir(&log_dir);
    results
}

/// A command started by [`stream_concurrently`].
struct Running {
    shown: String,
    child: Child,
    /// Where its output goes, unless it streams.
    log: Option<std::path::PathBuf>,
    /// Set once it ended (or failed to be waited for, or was killed).
    status: Option<Result<ExitStatus, String>>,
}

/// The child's standard error goes to our standard output, so the log is one stream in
/// order, wherever it is captured, and the summary line stays the last line of it.
fn stderr_to_stdout() -> Stdio {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            return Stdio::from(fd);
        }
    }
    Stdio::inherit()
}

/// Run `cmd` quietly and return its standard output. `Err` carries a one-line reason that
/// includes the last line the command wrote to standard error.
pub fn capture(cmd: &mut Command) -> Result<String, String> {
    let shown = display(cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(cmd.get_program(), &e))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(format!(
        "`{shown}` failed ({}): {}",
        output.status,
        last.trim()
    ))
}

fn spawn_error(program: &OsStr, e: &std::io::Error) -> String {
    let name = program.to_string_lossy();
    if e.kind() == ErrorKind::NotFound {
        format!("`{name}` not found on PATH")
    } else {
        format!("`{name}` could not be started: {e}")
    }
}

fn check_status(shown: &str, status: ExitStatus) -> Result<(), String> {
    if status.success() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return Err(format!("`{shown}` was killed by signal {signal}"));
        }
    }
    match status.code() {
        Some(code) => Err(format!("`{shown}` exited with status {code}")),
        None => Err(format!("`{shown}` failed: {status}")),
    }
}

/// Wait for `child` for at most `limit`. `Ok(None)`: it ran out of time and was killed,
/// together with everything it started.
fn wait_with_limit(child: &mut Child, limit: Duration) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            kill_tree(child);
            return Ok(None);
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// Kill `child` and all its descendants. `cargo miri test` runs the tests in grandchildren,
/// which killing `cargo` alone would leave running.
///
/// On Linux the process tree is read from `/proc`: every process in it is stopped first (so
/// none can start new ones or be re-parented away), the tree is read again until it stops
/// growing, then all of it is killed. Elsewhere only the child itself is killed.
fn kill_tree(child: &mut Child) {
    #[cfg(target_os = "linux")]
    {
        let mut stopped = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let fresh: Vec<u32> = descendants(child.id())
                .into_iter()
                .filter(|pid| !stopped.contains(pid))
                .collect();
            if fresh.is_empty() {
                break;
            }
            signal("STOP", &fresh);
            stopped.extend(fresh);
        }
        let all: Vec<u32> = stopped.into_iter().collect();
        signal("KILL", &all);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Send `sig` to `pids` with the shell's `kill` builtin (`std` has no `kill(2)`).
#[cfg(target_os = "linux")]
pub fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("sh")
        .args(["-c", r#"kill -s "$0" "$@" 2>/dev/null"#, sig])
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .status();
}

/// `root` and every process below it, from `/proc/<pid>/stat`.
#[cfg(target_os = "linux")]
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
                if let Some(ppid) = parse_ppid(&stat) {
                    parent_of.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|&&(pid, ppid)| ppid == parent && !tree.contains(&pid))
                .map(|&(pid, _)| pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    tree
}

/// The parent pid in a `/proc/<pid>/stat` line: `pid (comm) state ppid ...`, where `comm` may
/// itself contain spaces and parentheses, so parsing starts after the last `)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_ppid(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// A time limit: `25m`, `90s`.
pub fn fmt_limit(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// `0.4s`, `12.3s`, `3m 05.2s`.
pub fn fmt_duration(d: Duration) -> String {
    // Round to tenths first, so 59.97 s reads `1m 00.0s`, not `60.0s` or `0m 60.0s`.
    let tenths = (d.as_secs_f64() * 10.0).round() as u64;
    if tenths < 600 {
        format!("{}.{}s", tenths / 10, tenths % 10)
    } else {
        let rest = tenths % 600;
        format!("{}m {:02}.{}s", tenths / 600, rest / 10, rest % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_is_read_after_the_command_name() {
        assert_eq!(parse_ppid("42 (cargo) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("43 (a) b) (c) R 9 43"), Some(9));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(Duration::from_millis(420)), "0.4s");
        assert_eq!(fmt_duration(Duration::from_millis(59_940)), "59.9s");
        assert_eq!(fmt_duration(Duration::from_millis(59_970)), "1m 00.0s");
        assert_eq!(fmt_duration(Duration::from_millis(899_970)), "15m 00.0s");
        assert_eq!(fmt_duration(Duration::from_millis(185_200)), "3m 05.2s");
        assert_eq!(fmt_limit(Duration::from_secs(1500)), "25m");
        assert_eq!(fmt_limit(Duration::from_secs(90)), "90s");
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let mut cmd = Command::new("/opt/bin/cargo");
        cmd.args(["test", "--", "two words"])
            .env("MIRIFLAGS", "-Zx");
        assert_eq!(display(&cmd), "MIRIFLAGS=-Zx cargo test -- 'two words'");
    }

    /// Generous next to the time a process takes to start and exit: on a loaded machine
    /// (CI's two cores running the tests in parallel) even `sleep 0` once took longer than
    /// the 500 ms these tests had.
    const LIMIT: Duration = Duration::from_secs(5);

    #[cfg(target_os = "linux")]
    #[test]
    fn a_time_limit_kills_the_whole_tree() {
        // `sh` starts a background `sleep` grandchild and writes its pid down; after the
        // limit, the grandchild must be gone (or a zombie waiting for init to reap it).
        let pid_file = std::env::temp_dir().join(format!("xtask-kill-tree-{}", std::process::id()));
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"sleep 600 & echo $! > "$0"; wait"#])
            .arg(&pid_file);
        let start = Instant::now();
        let err = stream(&mut cmd, Some(LIMIT)).expect_err("must time out");
        assert!(err.contains("time limit"), "{err}");
        // Returned at the limit, not when the shell's `wait` would have.
        assert!(start.elapsed() < Duration::from_secs(300));
        let pid = std::fs::read_to_string(&pid_file).expect("the shell wrote the pid");
        let _ = std::fs::remove_file(&pid_file);
        // A killed process is gone only once it has run its exit: wait for that (bounded).
        let stat_path = format!("/proc/{}/stat", pid.trim());
        let state = || {
            std::fs::read_to_string(&stat_path).ok().map(|stat| {
                let after_comm = &stat[stat.rfind(')').expect("stat has a comm") + 1..];
                (after_comm.split_whitespace().next() == Some("Z"), stat)
            })
        };
        let waited = Instant::now();
        while let Some((false, stat)) = state() {
            assert!(
                waited.elapsed() < Duration::from_secs(30),
                "grandchild still alive: {stat}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn concurrent_commands_all_report() {
        // Each command announces itself, then waits for the other (giving up after 30 s):
        // both succeed only if they run at the same time.
        let dir = std::env::temp_dir().join(format!("xtask-rendezvous-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("rendezvous dir");
        let rendezvous = |me: &str, other: &str| {
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                r#"touch "$0/$1"; i=0; while [ ! -e "$0/$2" ]; do i=$((i+1)); [ "$i" -gt 600 ] && exit 3; sleep 0.05; done"#,
            ])
            .arg(&dir)
            .args([me, other]);
            cmd
        };
        let mut pair = [rendezvous("a", "b"), rendezvous("b", "a")];
        let both = stream_concurrently(&mut pair, None);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            both.iter().all(Result::is_ok),
            "they ran one after the other: {both:?}"
        );

        let mut mixed = [
            Command::new("true"),
            Command::new("false"),
            Command::new("definitely-not-a-program-xtask"),
        ];
        let results = stream_concurrently(&mut mixed, None);
        assert!(results[0].is_ok());
        let bad = results[1].as_ref().expect_err("false fails");
        assert!(bad.contains("status 1"), "{bad}");
        let missing = results[2].as_ref().expect_err("no such program");
        assert!(missing.contains("not found"), "{missing}");

        let mut sleepers = [Command::new("true"), Command::new("sleep")];
        sleepers[1].arg("600");
        let start = Instant::now();
        let results = stream_concurrently(&mut sleepers, Some(LIMIT));
        assert!(results[0].is_ok(), "{results:?}");
        let killed = results[1].as_ref().expect_err("killed at the limit");
        assert!(killed.contains("time limit"), "{killed}");
        assert!(start.elapsed() < Duration::from_secs(300));
    }

    #[test]
    fn failures_say_why() {
        let err = stream(&mut Command::new("false"), None).expect_err("false fails");
        assert!(err.contains("exited with status 1"), "{err}");
        let err = capture(&mut Command::new("definitely-not-a-program-xtask"))
            .expect_err("no such program");
        assert!(err.contains("not found on PATH"), "{err}");
    }
}
