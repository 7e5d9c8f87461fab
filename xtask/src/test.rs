//! `cargo xtask test`: every check, in order, each reported as a step.
//!
//! A failing step does not stop the ones after it; the run ends with the line
//! `N passed, M failed` (over steps) and exits non-zero when `M > 0`. Steps whose tools
//! setup could not install fail with setup's reason.

use std::collections::BTreeSet;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use crate::run::{self, fmt_duration, fmt_limit};
use crate::setup::{self, Tool, Tools, NO_STD_TARGET};

const HELP: &str = "\
cargo xtask test: run every check CI runs

USAGE:
    cargo xtask test [--step NAME]... [-- TEST_ARGS...]

STEPS (in order; all run by default):
    setup    install what is missing: rustfmt + clippy (active toolchain),
             the thumbv7em-none-eabihf target, nightly with miri + rust-src, `cargo miri setup`
    fmt      cargo fmt --all -- --check
    clippy   cargo clippy --workspace --all-targets -- -D warnings
    test     cargo test --workspace --no-fail-fast [-- TEST_ARGS]
    no_std   cargo build -p seastar-hal -p seastar-kernel --no-default-features
                   --target thumbv7em-none-eabihf
             cargo build -p seastar-kernel --no-default-features --features defmt
                   --target thumbv7em-none-eabihf
    miri     cargo +nightly miri test -p seastar-hal --features sim
             then, side by side (their output one after the other):
             cargo +nightly miri test -p seastar-kernel -- --skip raft::
             cargo +nightly miri test -p seastar-kernel -- raft::

OPTIONS:
    --step NAME    Run only this step (repeatable). The part of setup the step needs still
                   runs first, reported as the `setup` step.
    -- TEST_ARGS   Passed to the test binaries of the `test` step (a filter, --nocapture...).
    -h, --help     Print this message.

ENVIRONMENT:
    RAFT_SIM_SEEDS=<n>       Inherited by the tests of the `test` step: the Raft simulation
                             tests run <n> seeds (for long runs); RAFT_SIM_SEED=<seed> replays
                             one. Miri isolates the tests from the environment, so the `miri`
                             step always runs the defaults.
    MIRIFLAGS                Passed to Miri as usual.
    XTASK_TIMEOUT_SECS=<n>   Time limit of each step that has one (`test` and `miri`: 15 min
                             each by default); 0 means no limit. A step that runs out is
                             killed with everything it started, and fails.
";

/// One check.
#[derive(Debug)]
struct Step {
    name: &'static str,
    needs: &'static [Tool],
    /// Default time limit; `None`: none.
    limit: Option<Duration>,
}

const SETUP: &str = "setup";

const STEPS: &[Step] = &[
    Step {
        name: SETUP,
        needs: &[],
        limit: None,
    },
    Step {
        name: "fmt",
        needs: &[Tool::Rustfmt],
        limit: None,
    },
    Step {
        name: "clippy",
        needs: &[Tool::Clippy],
        limit: None,
    },
    Step {
        name: "test",
        needs: &[],
        limit: Some(Duration::from_secs(15 * 60)),
    },
    Step {
        name: "no_std",
        needs: &[Tool::NoStdTarget],
        limit: None,
    },
    Step {
        name: "miri",
        needs: &[Tool::Miri],
        limit: Some(Duration::from_secs(15 * 60)),
    },
];

/// Parsed command line.
#[derive(Debug, Default, PartialEq)]
struct Options {
    /// Empty: all steps.
    steps: Vec<String>,
    test_args: Vec<String>,
    help: bool,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                opts.test_args = args.by_ref().cloned().collect();
            }
            "-h" | "--help" => opts.help = true,
            "--step" => {
                let name = args.next().ok_or("`--step` needs a step name")?;
                opts.steps.push(name.clone());
            }
            other => match other.strip_prefix("--step=") {
                Some(name) => opts.steps.push(name.to_string()),
                None => return Err(format!("unexpected argument `{other}`")),
            },
        }
    }
    for name in &opts.steps {
        if !STEPS.iter().any(|s| s.name == name) {
            let names: Vec<&str> = STEPS.iter().map(|s| s.name).collect();
            return Err(format!(
                "unknown step `{name}`; the steps are: {}",
                names.join(", ")
            ));
        }
    }
    Ok(opts)
}

/// The steps to run, in order, and what setup must provide for them. `names` empty: all.
///
/// Setup runs when it is named or when a named step needs something from it; when named, it
/// provides everything (`--step setup` sets a machine up).
fn plan(names: &[String]) -> (Vec<&'static Step>, BTreeSet<Tool>) {
    let named = |s: &Step| names.is_empty() || names.iter().any(|n| n == s.name);
    let setup_named = STEPS.iter().any(|s| s.name == SETUP && named(s));
    let needed: BTreeSet<Tool> = STEPS
        .iter()
        .filter(|s| setup_named || named(s))
        .flat_map(|s| s.needs.iter().copied())
        .collect();
    let plan = STEPS
        .iter()
        .filter(|s| {
            if s.name == SETUP {
                setup_named || !needed.is_empty()
            } else {
                named(s)
            }
        })
        .collect();
    (plan, needed)
}

/// The outcome of one step.
#[derive(Debug)]
struct Report {
    name: &'static str,
    took: Duration,
    result: Result<(), String>,
}

pub fn run(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("error: {e}\n");
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    if opts.help {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let limit_override = match limit_override() {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };

    let (plan, needed) = plan(&opts.steps);
    let names: Vec<&str> = plan.iter().map(|s| s.name).collect();
    println!(
        "cargo xtask test: {} step(s): {} (in {})",
        plan.len(),
        names.join(", "),
        crate::project_root().display()
    );

    let mut tools = Tools::default();
    let mut reports = Vec::new();
    for (i, step) in plan.iter().enumerate() {
        let limit = match (step.limit, limit_override) {
            (Some(_), Some(over)) => over,
            (limit, _) => limit,
        };
        println!();
        match limit {
            Some(l) => println!(
                "==> [{}/{}] {} (time limit {})",
                i + 1,
                plan.len(),
                step.name,
                fmt_limit(l)
            ),
            None => println!("==> [{}/{}] {}", i + 1, plan.len(), step.name),
        }
        let start = Instant::now();
        let result = if step.name == SETUP {
            tools = setup::run(&needed);
            tools.result()
        } else {
            match tools.check(step.needs) {
                Ok(()) => run_step(step.name, &opts.test_args, start, limit),
                Err(why) => Err(why),
            }
        };
        let report = Report {
            name: step.name,
            took: start.elapsed(),
            result,
        };
        println!("<== {}", line(&report));
        reports.push(report);
    }

    let failed = reports.iter().filter(|r| r.result.is_err()).count();
    let passed = reports.len() - failed;
    println!();
    println!("Summary:");
    for report in &reports {
        println!("    {}", line(report));
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `XTASK_TIMEOUT_SECS`: `Ok(None)` when unset, `Ok(Some(None))` for "no limit".
fn limit_override() -> Result<Option<Option<Duration>>, String> {
    match std::env::var("XTASK_TIMEOUT_SECS") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(0) => Ok(Some(None)),
            Ok(secs) => Ok(Some(Some(Duration::from_secs(secs)))),
            Err(_) => Err(format!(
                "XTASK_TIMEOUT_SECS must be a number of seconds, not `{v}`"
            )),
        },
        Err(e) => Err(format!("XTASK_TIMEOUT_SECS: {e}")),
    }
}

/// `fmt      PASS   1.2s` or `clippy   FAIL  41.0s  <reason>`.
fn line(report: &Report) -> String {
    let took = fmt_duration(report.took);
    match &report.result {
        Ok(()) => format!("{:<8} PASS {took:>9}", report.name),
        Err(why) => format!("{:<8} FAIL {took:>9}  {why}", report.name),
    }
}

/// Run the commands of a step (not setup). Every command runs even if an earlier one failed,
/// so one run shows every failure; the step's time limit covers all of them.
fn run_step(
    name: &str,
    test_args: &[String],
    start: Instant,
    limit: Option<Duration>,
) -> Result<(), String> {
    let mut commands = commands(name, test_args);
    if name == "test" {
        if let Ok(seeds) = std::env::var("RAFT_SIM_SEEDS") {
            println!("    RAFT_SIM_SEEDS={seeds} (inherited by the tests)");
        }
    }
    let mut failures = Vec::new();
    for stage in &mut commands {
        let remaining = match limit {
            None => None,
            Some(l) => match l.checked_sub(start.elapsed()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => {
                    for cmd in stage.iter() {
                        failures.push(format!(
                            "`{}` not run: the step's time limit of {} is used up",
                            run::display(cmd),
                            fmt_limit(l)
                        ));
                    }
                    continue;
                }
            },
        };
        let results = if let [cmd] = stage.as_mut_slice() {
            vec![run::stream(cmd, remaining)]
        } else {
            run::stream_concurrently(stage, remaining)
        };
        for why in results.into_iter().filter_map(Result::err) {
            println!("    FAILED: {why}");
            failures.push(why);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The commands of each step as stages, in the order they run; the commands of one stage run
/// at the same time (CI has 2 cores, and Miri uses one).
fn commands(name: &str, test_args: &[String]) -> Vec<Vec<Command>> {
    match name {
        "fmt" => {
            let mut fmt = run::cargo();
            fmt.args(["fmt", "--all", "--", "--check"]);
            vec![vec![fmt]]
        }
        "clippy" => {
            let mut clippy = run::cargo();
            clippy.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            vec![vec![clippy]]
        }
        "test" => {
            // Features the tests need come from dev-dependencies: never `--all-features` on
            // the workspace (the kernel's `log` and `defmt` exclude each other).
            let mut test = run::cargo();
            test.args(["test", "--workspace", "--no-fail-fast"]);
            if !test_args.is_empty() {
                test.arg("--").args(test_args);
            }
            vec![vec![test]]
        }
        "no_std" => {
            // A real build, not `check`: codegen for the target must work too.
            let mut build = run::cargo();
            build.args([
                "build",
                "-p",
                "seastar-hal",
                "-p",
                "seastar-kernel",
                "--no-default-features",
                "--target",
                NO_STD_TARGET,
            ]);
            // The embedded logging route (`klog!` -> defmt) must compile for the target too.
            let mut defmt = run::cargo();
            defmt.args([
                "build",
                "-p",
                "seastar-kernel",
                "--no-default-features",
                "--features",
                "defmt",
                "--target",
                NO_STD_TARGET,
            ]);
            vec![vec![build], vec![defmt]]
        }
        "miri" => {
            // The HAL's tests are few and quick; running them first means a kernel run that
            // uses up the step's time limit cannot hide their result. The kernel's tests then
            // run as two Miri processes side by side: Raft's (no unsafe code, but the bulk of
            // the interpreted time) and the rest.
            let mut hal = run::rustup_cargo("nightly");
            hal.args(["miri", "test", "-p", "seastar-hal", "--features", "sim"]);
            let mut kernel = run::rustup_cargo("nightly");
            kernel.args([
                "miri",
                "test",
                "-p",
                "seastar-kernel",
                "--",
                "--skip",
                "raft::",
            ]);
            let mut raft = run::rustup_cargo("nightly");
            raft.args(["miri", "test", "-p", "seastar-kernel", "--", "raft::"]);
            vec![vec![hal], vec![kernel, raft]]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse() {
        assert_eq!(parse(&[]), Ok(Options::default()));
        let opts = parse(&args(&[
            "--step",
            "fmt",
            "--step=miri",
            "--",
            "raft",
            "--nocapture",
        ]))
        .expect("valid");
        assert_eq!(opts.steps, ["fmt", "miri"]);
        assert_eq!(opts.test_args, ["raft", "--nocapture"]);
        assert!(parse(&args(&["--step"])).is_err());
        assert!(parse(&args(&["--step", "bench"])).is_err());
        assert!(parse(&args(&["--quick"])).is_err());
    }

    #[test]
    fn plans() {
        let names = |plan: Vec<&Step>| plan.iter().map(|s| s.name).collect::<Vec<_>>();
        let (all, needed) = plan(&[]);
        assert_eq!(
            names(all),
            ["setup", "fmt", "clippy", "test", "no_std", "miri"]
        );
        assert_eq!(needed.len(), 4);
        let (only_test, needed) = plan(&args(&["test"]));
        assert_eq!(names(only_test), ["test"]);
        assert!(needed.is_empty());
        let (miri, needed) = plan(&args(&["miri", "fmt"]));
        assert_eq!(names(miri), ["setup", "fmt", "miri"]);
        assert_eq!(needed, [Tool::Rustfmt, Tool::Miri].into_iter().collect());
        let (setup, needed) = plan(&args(&["setup"]));
        assert_eq!(names(setup), ["setup"]);
        assert_eq!(needed.len(), 4);
    }

    #[test]
    fn every_step_but_setup_has_commands() {
        for step in STEPS {
            assert_eq!(
                commands(step.name, &[]).is_empty(),
                step.name == SETUP,
                "{}",
                step.name
            );
        }
    }

    #[test]
    fn no_step_uses_all_features() {
        for step in STEPS {
            for cmd in commands(step.name, &args(&["x"])).iter().flatten() {
                assert!(!run::display(cmd).contains("--all-features"));
            }
        }
    }

    #[test]
    fn miri_runs_every_kernel_test_once() {
        // The two concurrent kernel runs split the tests by one filter: one skips exactly
        // what the other selects.
        let stages = commands("miri", &[]);
        let kernel: Vec<String> = stages
            .iter()
            .flatten()
            .map(run::display)
            .filter(|c| c.contains("seastar-kernel"))
            .collect();
        assert_eq!(
            kernel,
            [
                "cargo +nightly miri test -p seastar-kernel -- --skip raft::",
                "cargo +nightly miri test -p seastar-kernel -- raft::"
            ]
        );
        assert_eq!(
            stages.last().map(Vec::len),
            Some(2),
            "they run side by side"
        );
    }

    #[test]
    fn report_lines() {
        let ok = Report {
            name: "fmt",
            took: Duration::from_millis(1200),
            result: Ok(()),
        };
        assert_eq!(line(&ok), "fmt      PASS      1.2s");
        let bad = Report {
            name: "clippy",
            took: Duration::from_secs(41),
            result: Err("why".into()),
        };
        assert_eq!(line(&bad), "clippy   FAIL     41.0s  why");
    }
}
