//! Build planning: a parsed [`Containerfile`] and the build's options → a [`BuildPlan`] of
//! typed steps per stage, every word expanded in its scope. Pure: no IO.
//!
//! Docker's rules, as followed here:
//! - `ARG`s before the first `FROM` are global: visible in `FROM` lines (and `--platform`), and
//!   inside a stage only when the stage declares them again (`ARG NAME`).
//! - An `ARG`'s value is, first found: the `--build-arg`, the stage's default, the global value,
//!   the automatic platform value (`TARGETARCH`, `BUILDPLATFORM`, …); else it is declared but
//!   unset. A `--build-arg` no `ARG` declares is reported in [`BuildPlan::warnings`] (the proxy
//!   variables `HTTP_PROXY` & co. need no declaration and reach `RUN` as they are).
//! - `ENV` values persist into later instructions, the image config and later stages built
//!   `FROM` this one; `ENV` wins over an `ARG` of the same name. All pairs of one `ENV` are
//!   expanded with the values from before it (`ENV a=1 b=$a` sees the old `a`).
//! - `RUN` gets the `ENV`s and the stage's `ARG`s that have a value as its environment.
//! - Shell forms run as `SHELL` (default `["/bin/sh", "-c"]`) plus the text.
//! - A relative `WORKDIR` resolves against the previous one (the base image's at first); a
//!   relative `COPY` destination against the current one.
//! - `FROM name` and `COPY --from=name` name an earlier stage (case-insensitively), else
//!   `--from=N` an earlier stage by index, else an image. `FROM scratch` is the empty image.
//! - Only the stages the target (the last stage, or `--target`) needs are planned (BuildKit's
//!   behaviour), in file order; each stage keeps its index in the file.
//!
//! The environment, working directory and user of a base image come from its config, which
//! only a pull gives: plan once with [`BuildOptions::bases`] empty, pull [`BuildPlan::images`],
//! then plan again with their configs (an image missing from `bases` counts as empty).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::containerfile::{ArgDecl, Command, Containerfile, Copy, Instruction, Located};
use crate::words::expand;
use crate::{BuildError, ParseError};

/// The shell of shell-form commands until `SHELL` changes it.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Build arguments that need no `ARG` and reach `RUN` steps when given (Docker's predefined ARGs).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An OS/architecture pair, for the automatic platform ARGs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    /// OCI spelling: `amd64`, `arm64`, …
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this machine (serval builds for the host).
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            other => other,
        };
        Self { os: std::env::consts::OS.to_string(), arch: arch.to_string(), variant: None }
    }

    /// `os/arch[/variant]`.
    pub fn spec(&self) -> String {
        match &self.variant {
            Some(variant) => format!("{}/{}/{variant}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        }
    }

    /// The automatic ARG values Docker defines for this platform as both build and target.
    fn automatic_arg(&self, name: &str) -> Option<String> {
        Some(match name {
            "TARGETPLATFORM" | "BUILDPLATFORM" => self.spec(),
            "TARGETOS" | "BUILDOS" => self.os.clone(),
            "TARGETARCH" | "BUILDARCH" => self.arch.clone(),
            "TARGETVARIANT" | "BUILDVARIANT" => self.variant.clone().unwrap_or_default(),
            _ => return None,
        })
    }
}

impl Default for Platform {
    fn default() -> Self {
        Self::host()
    }
}

/// What a base image's config contributes to a stage's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseConfig {
    /// `Env`, as `NAME=value` split at the first `=`.
    pub env: Vec<(String, String)>,
    /// `WorkingDir`, when set.
    pub workdir: Option<String>,
    /// `User`, when set.
    pub user: Option<String>,
}

/// The network of `RUN` steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// The builder's default (an isolated network with outside access).
    #[default]
    Default,
    /// No network at all.
    None,
    /// The host's network namespace.
    Host,
}

impl Network {
    fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::None => "none",
            Self::Host => "host",
        }
    }
}

/// The options of a build, from the command line.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target STAGE`.
    pub target: Option<String>,
    /// `--network`: the default of `RUN` steps; only `Host` allows `RUN --network=host`.
    pub network: Network,
    /// The platform of the automatic ARGs.
    pub platform: Platform,
    /// Configs of base images by reference (as in [`Base::Image`] and [`CopySource::Image`]).
    pub bases: BTreeMap<String, BaseConfig>,
}

/// A planned build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildPlan {
    /// The stages the target needs, in file order (a stage's dependencies come before it).
    pub stages: Vec<StagePlan>,
    /// The target's index in the file.
    pub target: usize,
    /// Ignored instructions, unused build arguments.
    pub warnings: Vec<String>,
}

impl BuildPlan {
    /// The planned stage with this index in the file.
    pub fn stage(&self, index: usize) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// Image references the planned stages start from or copy from, without repeats.
    pub fn images(&self) -> Vec<&str> {
        let mut seen = BTreeSet::new();
        let mut images = Vec::new();
        for stage in &self.stages {
            let from_base = match &stage.base {
                Base::Image(image) => Some(image.as_str()),
                _ => None,
            };
            let from_copies = stage.steps.iter().filter_map(|s| match &s.value {
                Step::Copy(CopyStep { from: CopySource::Image(image), .. }) => Some(image.as_str()),
                _ => None,
            });
            for image in from_base.into_iter().chain(from_copies) {
                if seen.insert(image) {
                    images.push(image);
                }
            }
        }
        images
    }
}

/// One planned stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    /// Its index in the file (what `--from=N` and [`Base::Stage`] count).
    pub index: usize,
    pub name: Option<String>,
    /// The line of its `FROM`.
    pub line: usize,
    pub base: Base,
    /// `FROM --platform=`, expanded.
    pub platform: Option<String>,
    pub steps: Vec<Located<Step>>,
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An image reference, from the local store or a registry.
    Image(String),
    /// The empty filesystem.
    Scratch,
    /// The result of an earlier stage, by index in the file.
    Stage(usize),
}

/// A step of a stage, in order. `Copy` and `Run` change the filesystem (each makes a layer);
/// `Config` steps change only the image config (but see [`ConfigStep::Workdir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Copy(CopyStep),
    Run(RunStep),
    Config(ConfigStep),
}

/// `COPY` or `ADD`, expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    /// `ADD`: local archives are unpacked (URLs are rejected when planning).
    pub add: bool,
    /// Paths relative to the context (or to the `from` stage's or image's root); may be globs.
    pub sources: Vec<String>,
    /// Absolute and clean.
    pub dest: String,
    /// The destination is a directory the sources go into (it ended with `/`, or is `.`);
    /// otherwise a single source file is written at `dest` itself unless `dest` is a directory in
    /// the image (Docker's rule, the executor's to check).
    pub dest_is_dir: bool,
    pub from: CopySource,
    /// `user[:group]`, names or ids, resolved in the image by the executor.
    pub chown: Option<String>,
    /// Permission bits.
    pub chmod: Option<u32>,
}

/// Where `COPY` takes its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopySource {
    Context,
    /// An earlier stage, by index in the file.
    Stage(usize),
    Image(String),
}

/// `RUN`, expanded and ready for a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunStep {
    /// Shell form already wrapped in the stage's shell.
    pub argv: Vec<String>,
    /// `ENV`s in order, then the stage's `ARG`s with a value (by name), then given proxy args.
    pub env: Vec<(String, String)>,
    /// Absolute.
    pub workdir: String,
    /// `None`: the base image's user (root when it has none).
    pub user: Option<String>,
    pub network: Network,
}

/// Instructions that only change the image config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigStep {
    /// Set (or replace) variables.
    Env(Vec<(String, String)>),
    /// Absolute and clean; the executor also creates the directory when it is missing (Docker).
    Workdir(String),
    User(String),
    /// `port/proto` (`80/tcp`), ranges expanded.
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    /// Docker's rule: an `ENTRYPOINT` set in a stage clears the `CMD` inherited from the base.
    Entrypoint(Vec<String>),
    Cmd(Vec<String>),
    StopSignal(String),
    Volume(Vec<String>),
    /// `MAINTAINER`.
    Author(String),
}

impl Step {
    /// The step's text after expansion, canonical and unambiguous (every string
    /// length-prefixed): the instruction part of its cache key ([`crate::cache::step_key`]).
    /// For `RUN` it holds everything the container sees (argv, env, workdir, user, network).
    pub fn cache_text(&self) -> String {
        let mut out = String::new();
        match self {
            Step::Copy(c) => {
                out.push_str(if c.add { "ADD" } else { "COPY" });
                match &c.from {
                    CopySource::Context => out.push_str(" from=context"),
                    CopySource::Stage(i) => {
                        let _ = write!(out, " from=stage:{i}");
                    }
                    CopySource::Image(image) => {
                        out.push_str(" from=image:");
                        lp(&mut out, image);
                    }
                }
                out.push_str(" sources=");
                lp_list(&mut out, &c.sources);
                out.push_str(" dest=");
                lp(&mut out, &c.dest);
                out.push_str(if c.dest_is_dir { " dir" } else { " file" });
                out.push_str(" chown=");
                lp(&mut out, c.chown.as_deref().unwrap_or(""));
                match c.chmod {
                    Some(mode) => {
                        let _ = write!(out, " chmod={mode:o}");
                    }
                    None => out.push_str(" chmod=-"),
                }
            }
            Step::Run(r) => {
                out.push_str("RUN argv=");
                lp_list(&mut out, &r.argv);
                out.push_str(" env=");
                lp_pairs(&mut out, &r.env);
                out.push_str(" workdir=");
                lp(&mut out, &r.workdir);
                out.push_str(" user=");
                lp(&mut out, r.user.as_deref().unwrap_or(""));
                let _ = write!(out, " network={}", r.network.name());
            }
            Step::Config(c) => match c {
                ConfigStep::Env(pairs) => {
                    out.push_str("ENV ");
                    lp_pairs(&mut out, pairs);
                }
                ConfigStep::Label(pairs) => {
                    out.push_str("LABEL ");
                    lp_pairs(&mut out, pairs);
                }
                ConfigStep::Workdir(s) => {
                    out.push_str("WORKDIR ");
                    lp(&mut out, s);
                }
                ConfigStep::User(s) => {
                    out.push_str("USER ");
                    lp(&mut out, s);
                }
                ConfigStep::StopSignal(s) => {
                    out.push_str("STOPSIGNAL ");
                    lp(&mut out, s);
                }
                ConfigStep::Author(s) => {
                    out.push_str("MAINTAINER ");
                    lp(&mut out, s);
                }
                ConfigStep::Expose(list) => {
                    out.push_str("EXPOSE ");
                    lp_list(&mut out, list);
                }
                ConfigStep::Entrypoint(list) => {
                    out.push_str("ENTRYPOINT ");
                    lp_list(&mut out, list);
                }
                ConfigStep::Cmd(list) => {
                    out.push_str("CMD ");
                    lp_list(&mut out, list);
                }
                ConfigStep::Volume(list) => {
                    out.push_str("VOLUME ");
                    lp_list(&mut out, list);
                }
            },
        }
        out
    }
}

/// A length-prefixed string: `len:bytes`.
fn lp(out: &mut String, s: &str) {
    let _ = write!(out, "{}:{s}", s.len());
}

fn lp_list(out: &mut String, list: &[String]) {
    let _ = write!(out, "[{}]", list.len());
    for s in list {
        out.push(' ');
        lp(out, s);
    }
}

fn lp_pairs(out: &mut String, pairs: &[(String, String)]) {
    let _ = write!(out, "[{}]", pairs.len());
    for (k, v) in pairs {
        out.push(' ');
        lp(out, k);
        out.push('=');
        lp(out, v);
    }
}

/// The variables, working directory, user and shell of a stage as its instructions go.
#[derive(Debug, Clone)]
struct Scope {
    /// `ENV`s, in order (the image config's `Env`).
    env: Vec<(String, String)>,
    /// `ARG`s this stage declared; `None`: declared without a value.
    args: BTreeMap<String, Option<String>>,
    workdir: Option<String>,
    user: Option<String>,
    shell: Vec<String>,
}

impl Scope {
    fn empty() -> Self {
        Self {
            env: Vec::new(),
            args: BTreeMap::new(),
            workdir: None,
            user: None,
            shell: DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, value)) = self.env.iter().rev().find(|(k, _)| k == name) {
            return Some(value.clone());
        }
        self.args.get(name).cloned().flatten()
    }

    fn set_env(&mut self, name: String, value: String) {
        match self.env.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.env.push((name, value)),
        }
    }
}

/// Plans a build: see the module's documentation for the rules.
///
/// Errors name the line: a substitution that fails, an empty base name, a `--from` that names
/// the stage itself or a later one, `RUN --network=host` without `--network host`, an `ADD` of
/// a URL, a bad `EXPOSE` or `--chmod`, several sources into a destination that is not a
/// directory. An unknown `--target` is [`BuildError::UnknownTarget`].
pub fn plan(file: &Containerfile, options: &BuildOptions) -> Result<BuildPlan, BuildError> {
    let escape = file.escape;
    let platform = &options.platform;
    let mut consumed: BTreeSet<&str> = BTreeSet::new();

    // Global ARGs: FROM lines see them (and the automatic platform ARGs).
    let mut global: BTreeMap<String, Option<String>> = BTreeMap::new();
    for Located { line, value: decl } in &file.global_args {
        consumed.insert(&decl.name);
        let lookup = |name: &str| global_lookup(&global, platform, name);
        let value = arg_value(decl, options, None, platform, escape, &lookup).map_err(|m| ParseError::new(*line, m))?;
        global.insert(decl.name.clone(), value);
    }
    let global_vars = |name: &str| global_lookup(&global, platform, name);

    let mut stages: Vec<StagePlan> = Vec::with_capacity(file.stages.len());
    let mut finals: Vec<Scope> = Vec::with_capacity(file.stages.len());
    for (index, stage) in file.stages.iter().enumerate() {
        let line = stage.base.line;
        let at = |message: String| ParseError::new(line, message);
        let image = expand(&stage.base.value.image, escape, &global_vars).map_err(at)?;
        if image.is_empty() {
            return Err(at(format!("base name ({}) should not be blank", stage.base.value.image)).into());
        }
        let platform_flag = match &stage.base.value.platform {
            Some(p) => Some(expand(p, escape, &global_vars).map_err(at)?),
            None => None,
        };
        let (base, mut scope) = match earlier_stage(file, index, &image) {
            Some(j) => {
                let mut scope = finals[j].clone();
                scope.args.clear();
                (Base::Stage(j), scope)
            }
            None if image == "scratch" => (Base::Scratch, Scope::empty()),
            None => {
                let mut scope = Scope::empty();
                if let Some(config) = options.bases.get(&image) {
                    scope.env = config.env.clone();
                    scope.workdir = config.workdir.clone().filter(|w| !w.is_empty());
                    scope.user = config.user.clone().filter(|u| !u.is_empty());
                }
                (Base::Image(image), scope)
            }
        };
        let mut steps = Vec::new();
        for Located { line, value } in &stage.instructions {
            let step = plan_instruction(value, index, file, options, &global, &mut scope, &mut consumed)
                .map_err(|m| ParseError::new(*line, m))?;
            if let Some(step) = step {
                steps.push(Located { line: *line, value: step });
            }
        }
        finals.push(scope);
        stages.push(StagePlan { index, name: stage.name.clone(), line, base, platform: platform_flag, steps });
    }

    let target = match &options.target {
        None => stages.len() - 1,
        Some(name) => {
            let lower = name.to_ascii_lowercase();
            stages
                .iter()
                .position(|s| s.name.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| BuildError::UnknownTarget(name.clone()))?
        }
    };

    // The stages the target needs: its base and --from stages, transitively.
    let mut needed = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut needed[i], true) {
            continue;
        }
        if let Base::Stage(j) = stages[i].base {
            todo.push(j);
        }
        for step in &stages[i].steps {
            if let Step::Copy(CopyStep { from: CopySource::Stage(j), .. }) = step.value {
                todo.push(j);
            }
        }
    }

    let mut warnings: Vec<String> =
        file.warnings.iter().map(|w| ParseError::new(w.line, w.value.clone()).to_string()).collect();
    for name in options.build_args.keys() {
        if !consumed.contains(name.as_str()) && !PROXY_ARGS.contains(&name.as_str()) {
            warnings.push(format!("build argument {name} was not consumed: no ARG declares it"));
        }
    }
    let stages = stages.into_iter().filter(|s| needed[s.index]).collect();
    Ok(BuildPlan { stages, target, warnings })
}

fn global_lookup(global: &BTreeMap<String, Option<String>>, platform: &Platform, name: &str) -> Option<String> {
    match global.get(name) {
        Some(value) => value.clone(),
        None => platform.automatic_arg(name),
    }
}

/// An ARG's value: the build argument, else its default expanded, else the global value, else
/// the automatic platform value.
fn arg_value(
    decl: &ArgDecl,
    options: &BuildOptions,
    global: Option<&BTreeMap<String, Option<String>>>,
    platform: &Platform,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, String> {
    if let Some(given) = options.build_args.get(&decl.name) {
        return Ok(Some(given.clone()));
    }
    if let Some(default) = &decl.default {
        return expand(default, escape, vars).map(Some);
    }
    if let Some(Some(value)) = global.and_then(|g| g.get(&decl.name)) {
        return Ok(Some(value.clone()));
    }
    Ok(platform.automatic_arg(&decl.name))
}

/// The earlier stage `reference` names (case-insensitively), if any.
fn earlier_stage(file: &Containerfile, index: usize, reference: &str) -> Option<usize> {
    let lower = reference.to_ascii_lowercase();
    file.stages[..index].iter().position(|s| s.name.as_deref() == Some(lower.as_str()))
}

fn plan_instruction<'f>(
    instruction: &'f Instruction,
    index: usize,
    file: &Containerfile,
    options: &BuildOptions,
    global: &BTreeMap<String, Option<String>>,
    scope: &mut Scope,
    consumed: &mut BTreeSet<&'f str>,
) -> Result<Option<Step>, String> {
    let escape = file.escape;
    let ex = |word: &str, scope: &Scope| expand(word, escape, &|name: &str| scope.lookup(name));
    let config = |c: ConfigStep| Ok(Some(Step::Config(c)));
    match instruction {
        Instruction::Arg(decls) => {
            for decl in decls {
                consumed.insert(&decl.name);
                let snapshot = scope.clone();
                let value = arg_value(decl, options, Some(global), &options.platform, escape, &|name: &str| {
                    snapshot.lookup(name)
                })?;
                scope.args.insert(decl.name.clone(), value);
            }
            Ok(None)
        }
        Instruction::Env(pairs) => {
            let pairs = expand_pairs(pairs, |w| ex(w, scope), "ENV")?;
            for (k, v) in &pairs {
                scope.set_env(k.clone(), v.clone());
            }
            config(ConfigStep::Env(pairs))
        }
        Instruction::Label(pairs) => config(ConfigStep::Label(expand_pairs(pairs, |w| ex(w, scope), "LABEL")?)),
        Instruction::Workdir(dir) => {
            let dir = ex(dir, scope)?;
            if dir.is_empty() {
                return Err("WORKDIR needs a path".into());
            }
            let dir = if dir.starts_with('/') {
                clean_absolute(&dir)
            } else {
                clean_absolute(&format!("{}/{dir}", scope.workdir.as_deref().unwrap_or("/")))
            };
            scope.workdir = Some(dir.clone());
            config(ConfigStep::Workdir(dir))
        }
        Instruction::User(user) => {
            let user = ex(user, scope)?;
            if user.is_empty() {
                return Err("USER needs a user".into());
            }
            scope.user = Some(user.clone());
            config(ConfigStep::User(user))
        }
        Instruction::Expose(ports) => {
            let mut out = Vec::new();
            for port in ports {
                for word in ex(port, scope)?.split_whitespace() {
                    expose(word, &mut out)?;
                }
            }
            config(ConfigStep::Expose(out))
        }
        Instruction::StopSignal(signal) => {
            let signal = ex(signal, scope)?;
            if signal.is_empty() {
                return Err("STOPSIGNAL needs a signal".into());
            }
            config(ConfigStep::StopSignal(signal))
        }
        Instruction::Volume(volumes) => {
            let volumes = volumes.iter().map(|v| ex(v, scope)).collect::<Result<Vec<_>, _>>()?;
            if volumes.iter().any(String::is_empty) {
                return Err("VOLUME specified can not be an empty string".into());
            }
            config(ConfigStep::Volume(volumes))
        }
        Instruction::Maintainer(author) => config(ConfigStep::Author(author.clone())),
        Instruction::Shell(shell) => {
            if shell.is_empty() {
                return Err("SHELL needs at least one argument".into());
            }
            scope.shell = shell.clone();
            Ok(None)
        }
        Instruction::Entrypoint(command) => config(ConfigStep::Entrypoint(argv(command, scope))),
        Instruction::Cmd(command) => config(ConfigStep::Cmd(argv(command, scope))),
        Instruction::Run { command, network } => {
            let network = match network.as_deref() {
                None => options.network,
                Some("default") => options.network,
                Some("none") => Network::None,
                Some("host") if options.network == Network::Host => Network::Host,
                Some("host") => return Err("RUN --network=host needs the build's --network host".into()),
                Some(other) => return Err(format!("unknown network {other:?} (default, none or host)")),
            };
            Ok(Some(Step::Run(RunStep {
                argv: argv(command, scope),
                env: run_env(scope, options),
                workdir: scope.workdir.clone().unwrap_or_else(|| "/".into()),
                user: scope.user.clone(),
                network,
            })))
        }
        Instruction::Copy(copy) => copy_step(copy, false, index, file, scope, |w| ex(w, scope)).map(Some),
        Instruction::Add(copy) => copy_step(copy, true, index, file, scope, |w| ex(w, scope)).map(Some),
    }
}

fn expand_pairs(
    pairs: &[(String, String)],
    ex: impl Fn(&str) -> Result<String, String>,
    keyword: &str,
) -> Result<Vec<(String, String)>, String> {
    pairs
        .iter()
        .map(|(k, v)| {
            let k = ex(k)?;
            if k.is_empty() {
                return Err(format!("{keyword} names can not be blank"));
            }
            Ok((k, ex(v)?))
        })
        .collect()
}

fn argv(command: &Command, scope: &Scope) -> Vec<String> {
    match command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => scope.shell.iter().cloned().chain([text.clone()]).collect(),
    }
}

fn run_env(scope: &Scope, options: &BuildOptions) -> Vec<(String, String)> {
    let mut env = scope.env.clone();
    let shadowed = |env: &[(String, String)], name: &str| env.iter().any(|(k, _)| k == name);
    for (name, value) in &scope.args {
        if let Some(value) = value
            && !shadowed(&env, name)
        {
            env.push((name.clone(), value.clone()));
        }
    }
    for name in PROXY_ARGS {
        if let Some(value) = options.build_args.get(name)
            && !shadowed(&env, name)
        {
            env.push((name.to_string(), value.clone()));
        }
    }
    env
}

fn copy_step(
    copy: &Copy,
    add: bool,
    index: usize,
    file: &Containerfile,
    scope: &Scope,
    ex: impl Fn(&str) -> Result<String, String>,
) -> Result<Step, String> {
    let keyword = if add { "ADD" } else { "COPY" };
    let sources = copy.sources.iter().map(|s| ex(s)).collect::<Result<Vec<_>, _>>()?;
    if sources.is_empty() {
        return Err(format!("{keyword} requires at least two arguments"));
    }
    if add && let Some(url) = sources.iter().find(|s| s.contains("://") || s.starts_with("git@")) {
        return Err(format!("ADD {url}: sources from URLs are not supported by serval build (download in a RUN step)"));
    }
    let from = match &copy.from {
        None => CopySource::Context,
        Some(reference) => resolve_from(&ex(reference)?, index, file)?,
    };
    let dest = ex(&copy.dest)?;
    if dest.is_empty() {
        return Err(format!("{keyword}: the destination can not be empty"));
    }
    let dest_is_dir =
        dest.ends_with('/') || dest == "." || dest == ".." || dest.ends_with("/.") || dest.ends_with("/..");
    let dest = if dest.starts_with('/') {
        clean_absolute(&dest)
    } else {
        clean_absolute(&format!("{}/{dest}", scope.workdir.as_deref().unwrap_or("/")))
    };
    if sources.len() > 1 && !dest_is_dir {
        return Err(format!(
            "when using {keyword} with more than one source file, the destination must be a directory and end with a /"
        ));
    }
    let chown = copy.chown.as_deref().map(&ex).transpose()?.filter(|c| !c.is_empty());
    let chmod = match copy.chmod.as_deref().map(&ex).transpose()? {
        None => None,
        Some(mode) => Some(
            u32::from_str_radix(&mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| format!("--chmod={mode}: not an octal mode (0000 to 7777)"))?,
        ),
    };
    Ok(Step::Copy(CopyStep { add, sources, dest, dest_is_dir, from, chown, chmod }))
}

fn resolve_from(reference: &str, index: usize, file: &Containerfile) -> Result<CopySource, String> {
    if reference.is_empty() {
        return Err("--from needs a stage or an image".into());
    }
    if let Some(j) = earlier_stage(file, index, reference) {
        return Ok(CopySource::Stage(j));
    }
    let lower = reference.to_ascii_lowercase();
    if file.stages[index..].iter().any(|s| s.name.as_deref() == Some(lower.as_str())) {
        return Err(format!("--from={reference}: a stage can only copy from an earlier stage"));
    }
    if let Ok(n) = reference.parse::<usize>() {
        return if n < index {
            Ok(CopySource::Stage(n))
        } else {
            Err(format!("--from={n}: a stage can only copy from an earlier stage (this is stage {index})"))
        };
    }
    Ok(CopySource::Image(reference.to_string()))
}

/// `port[/proto]` or `low-high[/proto]` → `port/proto` entries.
fn expose(word: &str, out: &mut Vec<String>) -> Result<(), String> {
    let (ports, proto) = match word.split_once('/') {
        Some((ports, proto)) => (ports, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {word}: unknown protocol {proto:?} (tcp, udp or sctp)"));
    }
    let port =
        |s: &str| s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("EXPOSE {word}: invalid port {s:?}"));
    let (low, high) = match ports.split_once('-') {
        Some((low, high)) => (port(low)?, port(high)?),
        None => (port(ports)?, port(ports)?),
    };
    if low > high {
        return Err(format!("EXPOSE {word}: invalid range"));
    }
    for p in low..=high {
        let entry = format!("{p}/{proto}");
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Lexically cleans an absolute path: no `.`, `..` or repeated `/`; `..` stops at the root.
fn clean_absolute(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerfile::parse;

    fn options() -> BuildOptions {
        BuildOptions {
            platform: Platform { os: "linux".into(), arch: "arm64".into(), variant: Some("v8".into()) },
            ..BuildOptions::default()
        }
    }

    fn with_args(args: &[(&str, &str)]) -> BuildOptions {
        let mut o = options();
        o.build_args = args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        o
    }

    fn plan_text(text: &str, options: &BuildOptions) -> BuildPlan {
        plan(&parse(text).expect("parses"), options).expect("plans")
    }

    fn plan_err(text: &str, options: &BuildOptions) -> ParseError {
        match plan(&parse(text).expect("parses"), options) {
            Err(BuildError::Containerfile(e)) => e,
            other => panic!("expected a Containerfile error, got {other:?}"),
        }
    }

    fn steps(plan: &BuildPlan) -> Vec<Step> {
        plan.stages.last().expect("a stage").steps.iter().map(|s| s.value.clone()).collect()
    }

    fn run(step: &Step) -> &RunStep {
        match step {
            Step::Run(r) => r,
            other => panic!("RUN expected, got {other:?}"),
        }
    }

    fn copy(step: &Step) -> &CopyStep {
        match step {
            Step::Copy(c) => c,
            other => panic!("COPY expected, got {other:?}"),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn global_args_reach_from_only() {
        let text = "ARG BASE=alpine\nARG TAG=3.20\nFROM ${BASE}:${TAG}\nRUN echo $TAG\nENV T=${TAG:-none}\n";
        let p = plan_text(text, &options());
        assert_eq!(p.stages[0].base, Base::Image("alpine:3.20".into()));
        // Not redeclared in the stage: not visible there.
        assert_eq!(steps(&p)[1], Step::Config(ConfigStep::Env(env(&[("T", "none")]))));
        assert_eq!(run(&steps(&p)[0]).env, env(&[]));
        // Shell text is left to the shell.
        assert_eq!(run(&steps(&p)[0]).argv, ["/bin/sh", "-c", "echo $TAG"]);

        let p = plan_text(text, &with_args(&[("TAG", "edge")]));
        assert_eq!(p.stages[0].base, Base::Image("alpine:edge".into()));
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn redeclared_args_and_precedence() {
        let text = "ARG V=global\nARG W=w\nFROM a\nARG V\nARG W=stage\nARG X\nRUN make\nENV V=env\nRUN make\n";
        let p = plan_text(text, &options());
        assert_eq!(run(&steps(&p)[0]).env, env(&[("V", "global"), ("W", "stage")]));
        // ENV wins over an ARG of the same name.
        assert_eq!(run(&steps(&p)[2]).env, env(&[("V", "env"), ("W", "stage")]));
        let p = plan_text(text, &with_args(&[("W", "cli"), ("X", "x")]));
        assert_eq!(run(&steps(&p)[0]).env, env(&[("V", "global"), ("W", "cli"), ("X", "x")]));
    }

    #[test]
    fn args_do_not_cross_from_but_env_does() {
        let text = "FROM a AS one\nARG A=1\nENV E=$A\nFROM one\nRUN env\n";
        let p = plan_text(text, &options());
        assert_eq!(p.stages.len(), 2);
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert_eq!(run(&steps(&p)[0]).env, env(&[("E", "1")]));
    }

    #[test]
    fn env_forms_and_same_instruction_scoping() {
        let text = "FROM a\nENV A=old\nENV A=new B=$A C=\"x y\" D='$A' E=${A:+set}\nENV LEGACY $A and more\n";
        let s = steps(&plan_text(text, &options()));
        assert_eq!(
            s[1],
            Step::Config(ConfigStep::Env(env(&[("A", "new"), ("B", "old"), ("C", "x y"), ("D", "$A"), ("E", "set")])))
        );
        assert_eq!(s[2], Step::Config(ConfigStep::Env(env(&[("LEGACY", "new and more")]))));
    }

    #[test]
    fn base_image_config_is_the_starting_scope() {
        let text = "FROM img\nENV PATH=/opt/bin:$PATH\nWORKDIR sub\nRUN x\n";
        let mut o = options();
        o.bases.insert(
            "img".into(),
            BaseConfig { env: env(&[("PATH", "/usr/bin")]), workdir: Some("/app".into()), user: Some("nobody".into()) },
        );
        let s = steps(&plan_text(text, &o));
        assert_eq!(s[0], Step::Config(ConfigStep::Env(env(&[("PATH", "/opt/bin:/usr/bin")]))));
        assert_eq!(s[1], Step::Config(ConfigStep::Workdir("/app/sub".into())));
        assert_eq!(run(&s[2]).user.as_deref(), Some("nobody"));
        assert_eq!(run(&s[2]).workdir, "/app/sub");
    }

    #[test]
    fn workdir_resolves_against_the_previous_one() {
        let text =
            "FROM a\nRUN pwd\nWORKDIR /app\nWORKDIR src/../lib/\nARG D=deep\nWORKDIR $D\nWORKDIR ../../..\nRUN pwd\n";
        let s = steps(&plan_text(text, &options()));
        assert_eq!(run(&s[0]).workdir, "/");
        assert_eq!(s[2], Step::Config(ConfigStep::Workdir("/app/lib".into())));
        assert_eq!(s[3], Step::Config(ConfigStep::Workdir("/app/lib/deep".into())));
        assert_eq!(s[4], Step::Config(ConfigStep::Workdir("/".into())));
        assert_eq!(run(&s[5]).workdir, "/");
    }

    #[test]
    fn shell_forms_wrap_in_the_shell() {
        let text = "FROM a\nRUN echo hi\nSHELL [\"/bin/bash\", \"-eu\", \"-c\"]\nRUN echo $HOME\nCMD serve\nENTRYPOINT [\"/app\"]\nCMD [\"--port\", \"80\"]\n";
        let s = steps(&plan_text(text, &options()));
        assert_eq!(run(&s[0]).argv, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(run(&s[1]).argv, ["/bin/bash", "-eu", "-c", "echo $HOME"]);
        assert_eq!(
            s[2],
            Step::Config(ConfigStep::Cmd(vec!["/bin/bash".into(), "-eu".into(), "-c".into(), "serve".into()]))
        );
        assert_eq!(s[3], Step::Config(ConfigStep::Entrypoint(vec!["/app".into()])));
        assert_eq!(s[4], Step::Config(ConfigStep::Cmd(vec!["--port".into(), "80".into()])));
    }

    #[test]
    fn config_instructions_expand() {
        let text = "FROM a\nARG P=8080 U=app NAME=serval\nEXPOSE $P 53/udp 9000-9002 80/TCP\nUSER ${U}:${U}\nLABEL \"name\"=$NAME v=\"1 2\"\nSTOPSIGNAL SIGINT\nVOLUME [\"/data/$NAME\"]\nMAINTAINER me <me@example.com>\n";
        let s = steps(&plan_text(text, &options()));
        assert_eq!(
            s[0],
            Step::Config(ConfigStep::Expose(
                ["8080/tcp", "53/udp", "9000/tcp", "9001/tcp", "9002/tcp", "80/tcp"].map(String::from).to_vec()
            ))
        );
        assert_eq!(s[1], Step::Config(ConfigStep::User("app:app".into())));
        assert_eq!(s[2], Step::Config(ConfigStep::Label(env(&[("name", "serval"), ("v", "1 2")]))));
        assert_eq!(s[3], Step::Config(ConfigStep::StopSignal("SIGINT".into())));
        assert_eq!(s[4], Step::Config(ConfigStep::Volume(vec!["/data/serval".into()])));
        assert_eq!(s[5], Step::Config(ConfigStep::Author("me <me@example.com>".into())));
    }

    #[test]
    fn copy_steps() {
        let text = "FROM a\nWORKDIR /app\nARG SRC=src\nCOPY $SRC/ ./\nCOPY --chown=1000:1000 --chmod=640 a.txt b.txt /etc/x/\nCOPY \"/abs\" rel\nADD pkg.tar.gz /opt\nCOPY . .\n";
        let s = steps(&plan_text(text, &options()));
        assert_eq!(
            *copy(&s[1]),
            CopyStep {
                add: false,
                sources: vec!["src/".into()],
                dest: "/app".into(),
                dest_is_dir: true,
                from: CopySource::Context,
                chown: None,
                chmod: None
            }
        );
        let c = copy(&s[2]);
        assert_eq!(
            (c.chown.as_deref(), c.chmod, c.dest.as_str(), c.dest_is_dir),
            (Some("1000:1000"), Some(0o640), "/etc/x", true)
        );
        let c = copy(&s[3]);
        assert_eq!((c.sources[0].as_str(), c.dest.as_str(), c.dest_is_dir), ("/abs", "/app/rel", false));
        assert!(copy(&s[4]).add);
        assert_eq!((copy(&s[5]).dest.as_str(), copy(&s[5]).dest_is_dir), ("/app", true));
    }

    #[test]
    fn multi_stage_from_references_and_needed_stages() {
        let text = "\
FROM golang AS builder
RUN go build -o /out/app
FROM alpine AS unused
RUN echo never
FROM debian AS tools
RUN make tools
FROM scratch
COPY --from=builder /out/app /app
COPY --from=2 /usr/bin/tool /tool
COPY --from=busybox:1.36 /bin/sh /sh
ENTRYPOINT [\"/app\"]
";
        let p = plan_text(text, &options());
        assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 2, 3]);
        assert_eq!(p.target, 3);
        let s = steps(&p);
        assert_eq!(copy(&s[0]).from, CopySource::Stage(0));
        assert_eq!(copy(&s[1]).from, CopySource::Stage(2));
        assert_eq!(copy(&s[2]).from, CopySource::Image("busybox:1.36".into()));
        assert_eq!(p.stage(3).map(|s| &s.base), Some(&Base::Scratch));
        assert_eq!(p.images(), ["golang", "debian", "busybox:1.36"]);

        // --from=0 by index, and a FROM naming an earlier stage case-insensitively.
        let p = plan_text("FROM a AS Base\nRUN x\nFROM BASE\nCOPY --from=0 /x /y\n", &options());
        assert_eq!(p.stages[1].base, Base::Stage(0));
        assert_eq!(copy(&steps(&p)[0]).from, CopySource::Stage(0));
    }

    #[test]
    fn target_selects_a_stage_and_its_dependencies() {
        let text =
            "FROM a AS deps\nRUN fetch\nFROM deps AS test\nRUN test\nFROM b AS release\nCOPY --from=deps /x /x\n";
        let p = plan_text(text, &BuildOptions { target: Some("Test".into()), ..options() });
        assert_eq!(p.target, 1);
        assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 1]);
        let p = plan_text(text, &options());
        assert_eq!(p.stages.iter().map(|s| s.index).collect::<Vec<_>>(), [0, 2]);
        let err = plan(&parse(text).expect("parses"), &BuildOptions { target: Some("nope".into()), ..options() });
        assert!(matches!(err, Err(BuildError::UnknownTarget(t)) if t == "nope"));
    }

    #[test]
    fn automatic_platform_args() {
        let text = "FROM --platform=$BUILDPLATFORM golang:$TARGETARCH AS b\nARG TARGETOS TARGETARCH\nRUN go build\n";
        let p = plan_text(text, &options());
        assert_eq!(p.stages[0].base, Base::Image("golang:arm64".into()));
        assert_eq!(p.stages[0].platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(run(&steps(&p)[0]).env, env(&[("TARGETARCH", "arm64"), ("TARGETOS", "linux")]));
    }

    #[test]
    fn unknown_build_args_warn_and_proxies_pass() {
        let text = "FROM a\nHEALTHCHECK NONE\nARG USED\nRUN x\n";
        let p = plan_text(text, &with_args(&[("USED", "1"), ("UNUSED", "2"), ("HTTP_PROXY", "http://proxy:3128")]));
        assert_eq!(
            p.warnings,
            [
                "Containerfile:2: HEALTHCHECK is ignored: OCI image configs have no health check (serval probes instances itself)",
                "build argument UNUSED was not consumed: no ARG declares it",
            ]
        );
        assert_eq!(run(&steps(&p)[0]).env, env(&[("USED", "1"), ("HTTP_PROXY", "http://proxy:3128")]));
    }

    #[test]
    fn run_network() {
        let text = "FROM a\nRUN --network=none x\nRUN y\nRUN --network=host z\n";
        let e = plan_err(text, &options());
        assert_eq!(e.line, 4);
        let p = plan_text(text, &BuildOptions { network: Network::Host, ..options() });
        let s = steps(&p);
        assert_eq!(
            [run(&s[0]).network, run(&s[1]).network, run(&s[2]).network],
            [Network::None, Network::Host, Network::Host]
        );
    }

    #[test]
    fn planning_errors_name_the_line() {
        let o = options();
        assert_eq!(plan_err("FROM a\nRUN x\nCOPY --from=later /a /b\nFROM b AS later\n", &o).line, 3);
        assert_eq!(plan_err("FROM a AS self\nCOPY --from=self /a /b\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nCOPY --from=1 /a /b\nFROM b\n", &o).line, 2);
        assert_eq!(plan_err("ARG E\nFROM $E\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nENV X=${Y:?required}\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\n\nLABEL x=\"open\n", &o).line, 3);
        assert_eq!(plan_err("FROM a\nCOPY a b c\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nADD https://example.com/x.tgz /x\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nCOPY --chmod=u+x a /b\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nEXPOSE 70000\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nEXPOSE 80/icmp\n", &o).line, 2);
        assert_eq!(plan_err("FROM a\nRUN --network=bridge x\n", &o).line, 2);
    }

    #[test]
    fn cache_text_is_unambiguous() {
        let a = Step::Config(ConfigStep::Env(env(&[("A", "1 B=2")])));
        let b = Step::Config(ConfigStep::Env(env(&[("A", "1"), ("B", "2")])));
        assert_ne!(a.cache_text(), b.cache_text());
        let text = "FROM a\nENV X=1\nRUN make\n";
        let one = plan_text(text, &options());
        let two = plan_text(&text.replace("X=1", "X=2"), &options());
        assert_ne!(steps(&one)[1].cache_text(), steps(&two)[1].cache_text(), "RUN's env is part of its text");
        assert_eq!(steps(&one)[1].cache_text(), plan_text(text, &options()).stages[0].steps[1].value.cache_text());
    }
}
