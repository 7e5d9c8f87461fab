//! A process's CPU time from `/proc/<pid>/stat`: user + system time of all its threads, the
//! figure "server CPU per message" is made of.

use std::io;
use std::time::Duration;

/// User and system CPU time `pid` has used so far (all threads, including exited ones).
///
/// The resolution is one clock tick (10 ms on Linux), so measure windows of seconds.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_utime_stime(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat format"),
        )
    })?;
    let per_sec = crate::sys::clock_ticks_per_sec();
    Ok(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_sec,
    ))
}

/// utime + stime, in clock ticks, from the text of a `stat` file. The command name (field 2)
/// is in parentheses and may itself hold spaces or parentheses, so fields are counted from the
/// last `)`: after it come field 3 (state) onwards; utime and stime are fields 14 and 15.
pub fn parse_utime_stime(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // Field 3 is the first after ')'; field 14 is the 12th after it.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_after_a_tricky_command_name() {
        let stat = "4242 (a b) c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 1 0 12345 1000 100";
        assert_eq!(parse_utime_stime(stat), Some(325));
    }

    #[test]
    fn reads_our_own_process() {
        assert!(cpu_time(std::process::id()).is_ok());
    }
}
