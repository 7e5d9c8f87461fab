//! The `setup` step: make sure the tools the other steps need are installed, adding what is
//! missing through rustup. Each tool is checked first, so a machine that is already set up
//! does no work beyond a few `rustup ... list` calls and `cargo miri setup`'s own check.
//!
//! A tool that cannot be installed is recorded with the reason, and every step that needs it
//! fails with that reason: nothing is silently skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::run;

/// The bare-metal target the no_std build is checked on (Cortex-M4F/M7F).
pub const NO_STD_TARGET: &str = "thumbv7em-none-eabihf";

/// Something a step needs beyond `cargo` and `rustc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    /// `rustfmt` on the toolchain that runs the checks (stable).
    Rustfmt,
    /// `clippy` on the toolchain that runs the checks (stable).
    Clippy,
    /// The standard library for [`NO_STD_TARGET`] (`core` and `alloc`).
    NoStdTarget,
    /// A nightly toolchain with `miri` and `rust-src`, and Miri's sysroot built.
    Miri,
}

impl Tool {
    fn describe(self) -> String {
        match self {
            Tool::Rustfmt => "rustfmt".into(),
            Tool::Clippy => "clippy".into(),
            Tool::NoStdTarget => format!("the {NO_STD_TARGET} target"),
            Tool::Miri => "nightly with miri and rust-src".into(),
        }
    }
}

/// What setup found: the tools that are missing, each with the reason.
#[derive(Debug, Default)]
pub struct Tools {
    missing: BTreeMap<Tool, String>,
}

impl Tools {
    /// `Err(reason)` if any of `needs` is missing.
    pub fn check(&self, needs: &[Tool]) -> Result<(), String> {
        let reasons: Vec<String> = needs
            .iter()
            .filter_map(|t| {
                self.missing.get(t).map(|why| {
                    format!(
                        "needs {}, which setup could not provide: {why}",
                        t.describe()
                    )
                })
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }

    /// `Err(reason)` if anything is missing: the result of the setup step.
    pub fn result(&self) -> Result<(), String> {
        if self.missing.is_empty() {
            return Ok(());
        }
        // Tools that are missing for the same reason are named together.
        let mut by_reason: Vec<(Vec<String>, &str)> = Vec::new();
        for (tool, why) in &self.missing {
            match by_reason.iter_mut().find(|(_, w)| w == why) {
                Some((tools, _)) => tools.push(tool.describe()),
                None => by_reason.push((vec![tool.describe()], why)),
            }
        }
        let parts: Vec<String> = by_reason
            .iter()
            .map(|(tools, why)| format!("{}: {why}", tools.join(", ")))
            .collect();
        Err(format!("missing {}", parts.join("; ")))
    }

    fn fail(&mut self, tools: impl IntoIterator<Item = Tool>, why: &str) {
        for tool in tools {
            self.missing.entry(tool).or_insert_with(|| why.to_string());
        }
    }
}

/// Check and install `needed`. Prints what it does; returns what is still missing.
pub fn run(needed: &BTreeSet<Tool>) -> Tools {
    let mut tools = Tools::default();
    match run::capture(run::rustup().arg("--version")) {
        Ok(version) => println!("    {}", version.trim()),
        Err(why) => {
            let why = format!("{why} (install rustup: https://rustup.rs)");
            println!("    {why}");
            tools.fail(needed.iter().copied(), &why);
            return tools;
        }
    }

    let stable: Vec<Tool> = [Tool::Rustfmt, Tool::Clippy]
        .into_iter()
        .filter(|t| needed.contains(t))
        .collect();
    if !stable.is_empty() {
        stable_components(&stable, &mut tools);
    }
    if needed.contains(&Tool::NoStdTarget) {
        no_std_target(&mut tools);
    }
    if needed.contains(&Tool::Miri) {
        miri(&mut tools);
    }
    tools
}

/// The toolchain `cargo` resolves to here: the one whose rustfmt, clippy and targets count.
fn active_toolchain() -> String {
    run::capture(run::rustup().args(["show", "active-toolchain"]))
        .ok()
        .and_then(|out| out.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "the active toolchain".into())
}

/// Installed components of `toolchain` (`None`: the active one), by bare name (`rustfmt`,
/// `rust-src`), whether rustup lists them with their target triple or without.
fn components(toolchain: Option<&str>) -> Result<BTreeSet<String>, String> {
    let mut cmd = run::rustup();
    cmd.args(["component", "list", "--installed"]);
    if let Some(t) = toolchain {
        cmd.args(["--toolchain", t]);
    }
    run::capture(&mut cmd).map(|out| out.lines().map(str::trim).map(String::from).collect())
}

fn has_component(installed: &BTreeSet<String>, name: &str) -> bool {
    // `rustfmt-x86_64-unknown-linux-gnu` or `rust-src`. No component this file asks about
    // (rustfmt, clippy, miri, rust-src) is a dash-prefix of another rustup component.
    let with_target = format!("{name}-");
    installed
        .iter()
        .any(|c| c == name || c.starts_with(&with_target))
}

fn stable_components(wanted: &[Tool], tools: &mut Tools) {
    let toolchain = active_toolchain();
    let name = |t: &Tool| match t {
        Tool::Rustfmt => "rustfmt",
        _ => "clippy",
    };
    let installed = match components(None) {
        Ok(c) => c,
        Err(why) => return tools.fail(wanted.iter().copied(), &why),
    };
    let missing: Vec<Tool> = wanted
        .iter()
        .copied()
        .filter(|t| !has_component(&installed, name(t)))
        .collect();
    let names: Vec<&str> = wanted.iter().map(name).collect();
    if missing.is_empty() {
        println!("    {} on {toolchain}: installed", names.join(", "));
        return;
    }
    let mut cmd = run::rustup();
    cmd.args(["component", "add"])
        .args(missing.iter().map(name));
    if let Err(why) = run::stream(&mut cmd, None) {
        return tools.fail(missing, &why);
    }
    // Trust the list, not the exit code.
    match components(None) {
        Ok(now) => {
            for t in missing {
                if !has_component(&now, name(&t)) {
                    tools.fail(
                        [t],
                        &format!("still not listed on {toolchain} after `rustup component add`"),
                    );
                }
            }
        }
        Err(why) => tools.fail(missing, &why),
    }
}

fn no_std_target(tools: &mut Tools) {
    let installed = || {
        run::capture(run::rustup().args(["target", "list", "--installed"]))
            .map(|out| out.lines().any(|l| l.trim() == NO_STD_TARGET))
    };
    match installed() {
        Ok(true) => return println!("    {NO_STD_TARGET}: installed"),
        Ok(false) => {}
        Err(why) => return tools.fail([Tool::NoStdTarget], &why),
    }
    if let Err(why) = run::stream(run::rustup().args(["target", "add", NO_STD_TARGET]), None) {
        return tools.fail([Tool::NoStdTarget], &why);
    }
    match installed() {
        Ok(true) => {}
        Ok(false) => tools.fail(
            [Tool::NoStdTarget],
            "still not listed after `rustup target add`",
        ),
        Err(why) => tools.fail([Tool::NoStdTarget], &why),
    }
}

fn miri(tools: &mut Tools) {
    const NEEDED: [&str; 2] = ["miri", "rust-src"];
    let missing_of = |installed: &BTreeSet<String>| -> Vec<&'static str> {
        NEEDED
            .into_iter()
            .filter(|c| !has_component(installed, c))
            .collect()
    };
    let installed = match components(Some("nightly")) {
        Ok(installed) => {
            let missing = missing_of(&installed);
            if missing.is_empty() {
                println!("    nightly with miri, rust-src: installed");
                Ok(())
            } else {
                let mut cmd = run::rustup();
                cmd.args(["component", "add", "--toolchain", "nightly"])
                    .args(&missing);
                run::stream(&mut cmd, None)
            }
        }
        // No nightly toolchain (or rustup cannot read it): install one, minimal.
        Err(_) => run::stream(
            run::rustup().args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "--component",
                "miri,rust-src",
            ]),
            None,
        ),
    };
    if let Err(why) = installed {
        return tools.fail([Tool::Miri], &why);
    }
    match components(Some("nightly")) {
        Ok(now) => {
            let missing = missing_of(&now);
            if !missing.is_empty() {
                let why = format!(
                    "nightly still lacks {} after installing",
                    missing.join(", ")
                );
                return tools.fail([Tool::Miri], &why);
            }
        }
        Err(why) => return tools.fail([Tool::Miri], &why),
    }
    // Builds Miri's sysroot the first time; later, only checks that it is up to date.
    if let Err(why) = run::stream(run::rustup_cargo("nightly").args(["miri", "setup"]), None) {
        tools.fail([Tool::Miri], &why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn components_match_with_or_without_target() {
        let listed = set(&["rustfmt-x86_64-unknown-linux-gnu", "rust-src", "miri"]);
        assert!(has_component(&listed, "rustfmt"));
        assert!(has_component(&listed, "rust-src"));
        assert!(has_component(&listed, "miri"));
        assert!(!has_component(&listed, "clippy"));
        let std_only = set(&["rust-std-x86_64-unknown-linux-gnu"]);
        assert!(!has_component(&std_only, "rust-src"));
    }

    #[test]
    fn missing_tools_fail_the_steps_that_need_them_with_the_reason() {
        let mut tools = Tools::default();
        assert!(tools.result().is_ok());
        tools.fail([Tool::Miri], "no network");
        assert!(tools.check(&[Tool::Rustfmt]).is_ok());
        let why = tools.check(&[Tool::Miri]).expect_err("miri is missing");
        assert!(why.contains("miri") && why.contains("no network"), "{why}");
        assert!(tools.result().is_err());
    }
}
