//! The Raft part of `cargo xtask bench`: our core (`seastar_kernel::raft`) against raft-rs
//! (tikv's `raft`), 3 nodes in one process, commits per second for every (clients, batch)
//! cell.
//!
//! The measurement itself is the `raft` bench target of `seastar-benches`
//! (`benches/benches/raft/`): raft-rs is a dev-dependency of the benches only, so it lives in
//! a bench target rather than a binary, and that target's `--report` mode prints one JSON
//! line per run (both implementations interleaved in one process, a fresh cluster and a fixed
//! number of commits per run). This module runs it through `cargo bench`, reads the lines,
//! and turns them into the report's Raft section (markdown table and JSON). `bench.rs` calls
//! it from one place in its `run`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::run;

pub const HELP: &str = "\
RAFT (our Raft core against raft-rs, 3 nodes in one process, in-memory storage):
    Cells: 1, 64 and 1,024 clients × batches of 1 and 64; full: 5 rounds, quick: 2 rounds
    with a tenth of the commits per run, at least 20,000 (a few seconds). Table: median
    commits/s of each side (wall clock, and per CPU-second of the bench thread), and the
    median of the per-round ratios (ours ÷ raft-rs, same round, same process).
    --no-raft           Skip the Raft section.
    --raft-only         Only the Raft section (no servers are built or run).
    --raft-rounds N     Rounds of the Raft section.
";

/// What the Raft section runs, taken from the bench arguments.
#[derive(Debug, Clone)]
pub struct Options {
    pub enabled: bool,
    pub only: bool,
    pub quick: bool,
    pub rounds: Option<usize>,
}

impl Options {
    /// Takes the Raft options out of `args` (`--quick` is read and left in place for the
    /// server matrix); returns them and the remaining arguments.
    pub fn take(args: &[String]) -> Result<(Options, Vec<String>), String> {
        let mut o = Options {
            enabled: true,
            only: false,
            quick: args.iter().any(|a| a == "--quick"),
            rounds: None,
        };
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--no-raft" => o.enabled = false,
                "--raft-only" => o.only = true,
                "--raft-rounds" => {
                    let v = it.next().ok_or("--raft-rounds needs a value")?;
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("bad value {v:?} for --raft-rounds"))?;
                    o.rounds = Some(n);
                }
                _ => rest.push(a.clone()),
            }
        }
        if o.only && !o.enabled {
            return Err("--raft-only and --no-raft exclude each other".to_owned());
        }
        Ok((o, rest))
    }
}

/// One measured run, as the bench printed it.
#[derive(Debug, Clone)]
struct RunLine {
    imp: String,
    clients: u64,
    batch: u64,
    round: u64,
    commits_per_s: f64,
    /// Commits per second of the thread's time on a CPU (NaN when not measured).
    commits_per_cpu_s: f64,
    raw: String,
}

/// The Raft section: every run, or why there is none.
#[derive(Debug)]
pub struct Section {
    quick: bool,
    rounds: usize,
    runs: Vec<RunLine>,
    error: Option<String>,
    elapsed_s: f64,
}

fn num(line: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

fn text(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    Some(rest[..rest.find('"')?].to_owned())
}

fn parse_line(line: &str) -> Option<RunLine> {
    Some(RunLine {
        imp: text(line, "impl")?,
        clients: num(line, "clients")? as u64,
        batch: num(line, "batch")? as u64,
        round: num(line, "round")? as u64,
        commits_per_s: num(line, "commits_per_s")?,
        commits_per_cpu_s: num(line, "commits_per_cpu_s").unwrap_or(f64::NAN),
        raw: line.trim().to_owned(),
    })
}

/// Builds the bench (release profile) and runs it in `--report` mode, printing each run as it
/// comes.
pub fn run(o: &Options) -> Section {
    let rounds = o.rounds.unwrap_or(if o.quick { 2 } else { 5 });
    let mut section = Section {
        quick: o.quick,
        rounds,
        runs: Vec::new(),
        error: None,
        elapsed_s: 0.0,
    };
    println!("bench: Raft, ours against raft-rs ({rounds} rounds)");
    let mut build = run::cargo();
    build.args([
        "bench",
        "-p",
        "seastar-benches",
        "--bench",
        "raft",
        "--no-run",
    ]);
    if let Err(e) = run::stream(&mut build, None) {
        section.error = Some(format!("build failed: {e}"));
        return section;
    }
    // The time the measurement takes, without the build.
    let started = std::time::Instant::now();
    let mut cmd: Command = run::cargo();
    cmd.args([
        "bench",
        "-q",
        "-p",
        "seastar-benches",
        "--bench",
        "raft",
        "--",
    ]);
    cmd.args(["--report", "--rounds", &rounds.to_string()]);
    if o.quick {
        cmd.arg("--quick");
    }
    println!("    $ {}", run::display(&cmd));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            section.error = Some(format!("cannot start cargo bench: {e}"));
            return section;
        }
    };
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(r) = parse_line(&line) {
                println!(
                    "  raft {:<7} {:>4} clients batch {:>2} round {}: {:>10.0} commits/s",
                    r.imp, r.clients, r.batch, r.round, r.commits_per_s
                );
                section.runs.push(r);
            }
        }
    }
    match child.wait() {
        Ok(s) if s.success() => {}
        Ok(s) => section.error = Some(format!("the raft bench failed ({s})")),
        Err(e) => section.error = Some(format!("waiting for the raft bench: {e}")),
    }
    section.elapsed_s = started.elapsed().as_secs_f64();
    section
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One cell's figures.
#[derive(Debug)]
struct Cell {
    clients: u64,
    batch: u64,
    ours: f64,
    peer: f64,
    /// Median, min and max of ours ÷ raft-rs over the rounds that have both.
    ratio: f64,
    ratio_min: f64,
    ratio_max: f64,
    /// The same by commits per CPU-second.
    ours_cpu: f64,
    peer_cpu: f64,
    cpu_ratio: f64,
    cpu_ratio_min: f64,
    cpu_ratio_max: f64,
}

/// Median, min and max of the per-round ratios `key(ours) / key(peer)`.
fn paired(ours: &[&RunLine], peer: &[&RunLine], key: fn(&RunLine) -> f64) -> (f64, f64, f64) {
    let ratios: Vec<f64> = ours
        .iter()
        .filter_map(|o| {
            let p = peer.iter().find(|p| p.round == o.round)?;
            let (a, b) = (key(o), key(p));
            (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
        })
        .collect();
    (
        median(ratios.clone()),
        ratios.iter().copied().fold(f64::NAN, f64::min),
        ratios.iter().copied().fold(f64::NAN, f64::max),
    )
}

impl Section {
    fn cells(&self) -> Vec<Cell> {
        let mut keys: Vec<(u64, u64)> = self.runs.iter().map(|r| (r.clients, r.batch)).collect();
        keys.sort_unstable();
        keys.dedup();
        keys.into_iter()
            .map(|(clients, batch)| {
                let of = |imp: &str| -> Vec<&RunLine> {
                    self.runs
                        .iter()
                        .filter(|r| r.clients == clients && r.batch == batch && r.imp == imp)
                        .collect()
                };
                let (ours, peer) = (of("ours"), of("raft-rs"));
                let wall = |r: &RunLine| r.commits_per_s;
                let cpu = |r: &RunLine| r.commits_per_cpu_s;
                let med = |v: &[&RunLine], key: fn(&RunLine) -> f64| {
                    median(v.iter().map(|r| key(r)).filter(|x| x.is_finite()).collect())
                };
                let (ratio, ratio_min, ratio_max) = paired(&ours, &peer, wall);
                let (cpu_ratio, cpu_ratio_min, cpu_ratio_max) = paired(&ours, &peer, cpu);
                Cell {
                    clients,
                    batch,
                    ours: med(&ours, wall),
                    peer: med(&peer, wall),
                    ratio,
                    ratio_min,
                    ratio_max,
                    ours_cpu: med(&ours, cpu),
                    peer_cpu: med(&peer, cpu),
                    cpu_ratio,
                    cpu_ratio_min,
                    cpu_ratio_max,
                }
            })
            .collect()
    }

    /// The markdown section.
    pub fn markdown(&self) -> String {
        let fig = |v: f64, prec: usize| {
            if v.is_finite() {
                format!("{v:.prec$}")
            } else {
                "–".to_owned()
            }
        };
        let ratio = |r: f64, lo: f64, hi: f64| {
            if r.is_finite() {
                format!("{} ({}–{})", fig(r, 2), fig(lo, 2), fig(hi, 2))
            } else {
                "–".to_owned()
            }
        };
        let mut md = String::from("\n## Raft: ours against raft-rs\n\n");
        md.push_str(&format!(
            "{} matrix, {} rounds (ours and raft-rs alternated A B, B A), ran {:.0} s. 3 voters \
             in one process, in-memory storage (ours: `MemStorage`; raft-rs: its `MemStorage`), \
             messages stepped in FIFO order by one loop, no encoding; 128 B payloads; pre-vote \
             and check-quorum on, 256 appends in flight per follower, 1 MiB per append message, \
             raft-rs with `batch_append` and a discard logger. A client keeps one proposal \
             outstanding and proposes again once the leader applied it; free clients propose \
             `batch` at a time in one call (ours: `propose`/`propose_batch`; raft-rs: \
             `propose`/one `MsgPropose` with the batch's entries). Figures: median commits/s \
             (entries applied on the leader) over the rounds, by wall clock and by the bench \
             thread's time on a CPU (`/proc/thread-self/schedstat`; it leaves out time spent \
             waiting for a CPU, the steadier figure on a shared machine); ratios: median of the \
             per-round ours ÷ raft-rs (min–max). Source: `benches/benches/raft/`.\n\n",
            if self.quick { "Quick" } else { "Full" },
            self.rounds,
            self.elapsed_s,
        ));
        if let Some(e) = &self.error {
            md.push_str(&format!("The Raft section did not complete: {e}.\n\n"));
        }
        md.push_str(
            "| clients | batch | ours commits/s | raft-rs commits/s | ours ÷ raft-rs (min–max) \
             | ours commits/CPU-s | raft-rs commits/CPU-s | ours ÷ raft-rs by CPU (min–max) |\n",
        );
        md.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for c in self.cells() {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                c.clients,
                c.batch,
                fig(c.ours, 0),
                fig(c.peer, 0),
                ratio(c.ratio, c.ratio_min, c.ratio_max),
                fig(c.ours_cpu, 0),
                fig(c.peer_cpu, 0),
                ratio(c.cpu_ratio, c.cpu_ratio_min, c.cpu_ratio_max),
            ));
        }
        md
    }

    /// The section as a JSON object (the value of the report's `"raft"` key).
    pub fn json(&self) -> String {
        let n = |v: f64| {
            if v.is_finite() {
                format!("{v:.3}")
            } else {
                "null".to_owned()
            }
        };
        let cells: Vec<String> = self
            .cells()
            .iter()
            .map(|c| {
                format!(
                    "      {{\"clients\":{},\"batch\":{},\"ours_commits_per_s\":{},\
                     \"raft_rs_commits_per_s\":{},\"ratio\":{},\"ratio_min\":{},\"ratio_max\":{},\
                     \"ours_commits_per_cpu_s\":{},\"raft_rs_commits_per_cpu_s\":{},\
                     \"cpu_ratio\":{},\"cpu_ratio_min\":{},\"cpu_ratio_max\":{}}}",
                    c.clients,
                    c.batch,
                    n(c.ours),
                    n(c.peer),
                    n(c.ratio),
                    n(c.ratio_min),
                    n(c.ratio_max),
                    n(c.ours_cpu),
                    n(c.peer_cpu),
                    n(c.cpu_ratio),
                    n(c.cpu_ratio_min),
                    n(c.cpu_ratio_max),
                )
            })
            .collect();
        let runs: Vec<String> = self
            .runs
            .iter()
            .map(|r| format!("      {}", r.raw))
            .collect();
        let error = match &self.error {
            Some(e) => format!("\"{}\"", e.replace('\\', "\\\\").replace('"', "\\\"")),
            None => "null".to_owned(),
        };
        format!(
            "{{\"matrix\":\"{}\",\"rounds\":{},\"elapsed_s\":{:.1},\"error\":{error},\n    \
             \"cells\":[\n{}\n    ],\n    \"runs\":[\n{}\n    ]\n  }}",
            if self.quick { "quick" } else { "full" },
            self.rounds,
            self.elapsed_s,
            cells.join(",\n"),
            runs.join(",\n")
        )
    }

    /// Whether the section failed (the bench did not build or run).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

/// Runs `servers` (the rest of `cargo xtask bench`, which writes `report.md` and
/// `report.json` into `out_dir`) unless `--raft-only`, then the Raft section unless
/// `--no-raft`, appending it to those files (or writing them, if the servers wrote none).
pub fn around(
    args: &[String],
    out_dir: &std::path::Path,
    servers: fn(&[String]) -> std::process::ExitCode,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    let (o, rest) = match Options::take(args) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        let code = servers(&rest);
        print!("\n{HELP}");
        return code;
    }
    let started = std::time::SystemTime::now();
    let code = if o.only {
        ExitCode::SUCCESS
    } else {
        servers(&rest)
    };
    if !o.enabled {
        return code;
    }
    let section = run(&o);
    let md = section.markdown();
    println!("{md}");
    let (md_path, json_path) = (out_dir.join("report.md"), out_dir.join("report.json"));
    // Append only to a report the servers wrote in this very run, never to an old one.
    let fresh = |p: &std::path::Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    };
    let (old_md, old_json) = if !o.only && fresh(&md_path) && fresh(&json_path) {
        (
            std::fs::read_to_string(&md_path).unwrap_or_default(),
            std::fs::read_to_string(&json_path).unwrap_or_default(),
        )
    } else {
        (String::new(), String::new())
    };
    let written = std::fs::create_dir_all(out_dir)
        .and_then(|()| std::fs::write(&md_path, format!("{old_md}{md}")))
        .and_then(|()| std::fs::write(&json_path, add_to_json(&old_json, &section)));
    match written {
        Ok(()) => println!("bench: Raft section written to {}", md_path.display()),
        Err(e) => {
            eprintln!("bench: cannot write {}: {e}", out_dir.display());
            return ExitCode::FAILURE;
        }
    }
    if section.failed() {
        eprintln!("bench: the Raft section failed (see above)");
        return ExitCode::FAILURE;
    }
    code
}

/// `report` (a JSON object as `bench.rs` writes it) with a `"raft"` key added.
pub fn add_to_json(report: &str, section: &Section) -> String {
    let body = report.trim_end();
    match body.strip_suffix('}') {
        Some(head) if head.trim_end().len() > 1 => {
            format!("{},\n  \"raft\":{}\n}}\n", head.trim_end(), section.json())
        }
        _ => format!("{{\n  \"raft\":{}\n}}\n", section.json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_runs_and_pairs_rounds() {
        let lines = [
            r#"{"impl":"ours","clients":1024,"batch":64,"round":1,"commits":10,"secs":0.1,"commits_per_s":300.0}"#,
            r#"{"impl":"raft-rs","clients":1024,"batch":64,"round":1,"commits":10,"secs":0.1,"commits_per_s":200.0}"#,
            r#"{"impl":"raft-rs","clients":1024,"batch":64,"round":2,"commits":10,"secs":0.1,"commits_per_s":100.0}"#,
            r#"{"impl":"ours","clients":1024,"batch":64,"round":2,"commits":10,"secs":0.1,"commits_per_s":100.0}"#,
        ];
        let s = Section {
            quick: true,
            rounds: 2,
            runs: lines.iter().filter_map(|l| parse_line(l)).collect(),
            error: None,
            elapsed_s: 1.0,
        };
        let cells = s.cells();
        assert_eq!(cells.len(), 1);
        assert_eq!((cells[0].ours, cells[0].peer), (200.0, 150.0));
        assert_eq!((cells[0].ratio_min, cells[0].ratio_max), (1.0, 1.5));
        assert_eq!(cells[0].ratio, 1.25);
        assert!(
            s.markdown()
                .contains("| 1024 | 64 | 200 | 150 | 1.25 (1.00–1.50) | – | – | – |"),
            "{}",
            s.markdown()
        );
        let j = add_to_json("{\n  \"runs\":[\n  ]\n}\n", &s);
        assert!(j.contains("\"raft\":{\"matrix\":\"quick\""), "{j}");
        assert!(j.trim_end().ends_with('}'));
    }

    #[test]
    fn takes_its_options() {
        let args: Vec<String> = ["--quick", "--raft-rounds", "3", "--no-http"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (o, rest) = Options::take(&args).expect("parses");
        assert!(o.quick && o.enabled && !o.only);
        assert_eq!(o.rounds, Some(3));
        assert_eq!(rest, ["--quick", "--no-http"]);
    }
}
