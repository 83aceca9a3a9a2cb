//! The Containerfile (Dockerfile) parser: text → [`Containerfile`], stages of instructions,
//! each with the line of its keyword.
//!
//! Lexing (parser directives, `# escape=`, line continuations, comments, exec-form JSON arrays,
//! flags) is the `parse-dockerfile` crate's; this module bounds the input, types the
//! instructions, splits `ENV`/`LABEL`/`ARG` into names and values, checks flags, and joins
//! shell-form command text as Docker does. Words that Docker expands (in `FROM`, `COPY`/`ADD`,
//! `ENV`, `ARG`, `WORKDIR`, `USER`, `EXPOSE`, `LABEL`, `STOPSIGNAL`, `VOLUME`) are kept as
//! written, quotes included: the planner processes them with [`crate::words::expand`] in the
//! scope of their stage. Shell-form `RUN`/`CMD`/`ENTRYPOINT` text and exec-form arrays are final:
//! the shell (or nothing) expands them.
//!
//! Not supported, with an error naming the line: here-documents, `RUN --mount`/`--security`,
//! `COPY --parents`/`--exclude`, `ADD --checksum`/`--keep-git-dir`, unknown flags.
//! `HEALTHCHECK` and `ONBUILD` are ignored with a warning (OCI image configs carry neither).

use parse_dockerfile as pd;

use crate::ParseError;
use crate::limits::{MAX_CONTAINERFILE_BYTES, MAX_INSTRUCTIONS, MAX_LINE_BYTES, MAX_STAGES};
use crate::words::split_words;

/// A parsed Containerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Containerfile {
    /// The escape character (`\`, or the `# escape=` directive's).
    pub escape: char,
    /// `ARG`s before the first `FROM`: visible in `FROM` lines, and in a stage that redeclares them.
    pub global_args: Vec<Located<ArgDecl>>,
    /// At least one.
    pub stages: Vec<Stage>,
    /// Instructions that were parsed and are ignored.
    pub warnings: Vec<Located<String>>,
}

/// A value and the 1-based line its instruction starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub line: usize,
    pub value: T,
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub base: Located<From>,
    /// `FROM … AS name`, lowercased (stage names are case-insensitive).
    pub name: Option<String>,
    pub instructions: Vec<Located<Instruction>>,
}

/// A `FROM` line, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    /// An image reference, `scratch`, or an earlier stage's name.
    pub image: String,
    /// `--platform=…`.
    pub platform: Option<String>,
}

/// One name of an `ARG` instruction, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// The command of `RUN`, `CMD` or `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The JSON array form: run as it is.
    Exec(Vec<String>),
    /// Text for the shell (`SHELL`, by default `/bin/sh -c`), continuation lines joined.
    Shell(String),
}

/// The arguments of `COPY` and `ADD`, unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
    /// `--from=` (COPY only): a stage name, a stage index or an image.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` (octal).
    pub chmod: Option<String>,
}

/// An instruction inside a stage. Strings are unexpanded unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `--network=` is kept (`default`, `none`, `host`).
    Run {
        command: Command,
        network: Option<String>,
    },
    Copy(Copy),
    Add(Copy),
    /// Names and values, both still to be expanded (either form: `k=v …` or `k v`).
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Label(Vec<(String, String)>),
    Entrypoint(Command),
    Cmd(Command),
    /// The JSON array of `SHELL` (final).
    Shell(Vec<String>),
    StopSignal(String),
    Volume(Vec<String>),
    /// `MAINTAINER` (deprecated): the image's author.
    Maintainer(String),
}

impl Instruction {
    /// The instruction's keyword, as Docker spells it.
    pub fn keyword(&self) -> &'static str {
        match self {
            Self::Run { .. } => "RUN",
            Self::Copy(_) => "COPY",
            Self::Add(_) => "ADD",
            Self::Env(_) => "ENV",
            Self::Arg(_) => "ARG",
            Self::Workdir(_) => "WORKDIR",
            Self::User(_) => "USER",
            Self::Expose(_) => "EXPOSE",
            Self::Label(_) => "LABEL",
            Self::Entrypoint(_) => "ENTRYPOINT",
            Self::Cmd(_) => "CMD",
            Self::Shell(_) => "SHELL",
            Self::StopSignal(_) => "STOPSIGNAL",
            Self::Volume(_) => "VOLUME",
            Self::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Parses a Containerfile.
///
/// Errors name the line: syntax errors (the lexer's, with its message), unsupported flags and
/// forms, bad stage names, and passed bounds ([`crate::limits`]).
pub fn parse(text: &str) -> Result<Containerfile, ParseError> {
    if text.len() > MAX_CONTAINERFILE_BYTES {
        return Err(ParseError::new(0, format!("larger than {MAX_CONTAINERFILE_BYTES} bytes")));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if let Some((n, _)) = text.split('\n').enumerate().find(|(_, line)| line.len() > MAX_LINE_BYTES) {
        return Err(ParseError::new(n + 1, format!("line longer than {MAX_LINE_BYTES} bytes")));
    }
    // `{:#}` is the lexer's message without its own "at line L column C".
    let parsed = pd::parse(text).map_err(|e| ParseError::new(e.line(), format!("{e:#}")))?;
    let escape = parsed.parser_directives.escape.as_ref().map_or('\\', |d| d.value.value);
    let lines = LineIndex::new(text);

    if parsed.instructions.len() > MAX_INSTRUCTIONS {
        let line = lines.line(keyword_start(&parsed.instructions[MAX_INSTRUCTIONS]));
        return Err(ParseError::new(line, format!("more than {MAX_INSTRUCTIONS} instructions")));
    }
    let mut file = Containerfile { escape, global_args: Vec::new(), stages: Vec::new(), warnings: Vec::new() };
    for instruction in &parsed.instructions {
        let line = lines.line(keyword_start(instruction));
        let at = |message: String| ParseError::new(line, message);
        match instruction {
            pd::Instruction::From(from) => {
                if file.stages.len() == MAX_STAGES {
                    return Err(at(format!("more than {MAX_STAGES} stages")));
                }
                let stage = parse_from(from, &file.stages).map_err(at)?;
                file.stages.push(Stage { base: Located { line, value: stage.0 }, name: stage.1, instructions: vec![] });
            }
            pd::Instruction::Arg(arg) if file.stages.is_empty() => {
                for decl in parse_arg(&arg.arguments.value, escape).map_err(at)? {
                    file.global_args.push(Located { line, value: decl });
                }
            }
            other => {
                let Some(stage) = file.stages.last_mut() else {
                    // The lexer rejects instructions before FROM other than ARG.
                    return Err(at("expected FROM".into()));
                };
                match convert(other, escape).map_err(at)? {
                    Converted::Instruction(value) => stage.instructions.push(Located { line, value }),
                    Converted::Ignored(warning) => file.warnings.push(Located { line, value: warning }),
                }
            }
        }
    }
    Ok(file)
}

enum Converted {
    Instruction(Instruction),
    Ignored(String),
}

fn parse_from(from: &pd::FromInstruction<'_>, earlier: &[Stage]) -> Result<(From, Option<String>), String> {
    let mut platform = None;
    for flag in &from.options {
        match flag.name.value.as_ref() {
            "platform" => platform = Some(flag_value(flag)?),
            other => return Err(unknown_flag("FROM", other)),
        }
    }
    let name = match &from.as_ {
        None => None,
        Some((_, name)) => {
            let name = name.value.to_ascii_lowercase();
            if !valid_stage_name(&name) {
                return Err(format!(
                    "invalid stage name {name:?}: a stage name starts with a letter and has only letters, digits, '-', '_' and '.'"
                ));
            }
            if earlier.iter().any(|s| s.name.as_deref() == Some(&name)) {
                return Err(format!("duplicate stage name {name:?}"));
            }
            Some(name)
        }
    };
    Ok((From { image: from.image.value.to_string(), platform }, name))
}

fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

fn convert(instruction: &pd::Instruction<'_>, escape: char) -> Result<Converted, String> {
    use Converted::{Ignored, Instruction as I};
    Ok(match instruction {
        pd::Instruction::Run(run) => {
            let mut network = None;
            for flag in &run.options {
                match flag.name.value.as_ref() {
                    "network" => network = Some(flag_value(flag)?),
                    "mount" | "security" => return Err(unsupported_flag("RUN", &flag.name.value)),
                    other => return Err(unknown_flag("RUN", other)),
                }
            }
            if !run.here_docs.is_empty() {
                return Err(here_doc("RUN"));
            }
            I(Instruction::Run { command: command(&run.arguments, escape)?, network })
        }
        pd::Instruction::Copy(copy) => {
            I(Instruction::Copy(copy_args("COPY", &copy.options, &copy.src, &copy.dest.value)?))
        }
        pd::Instruction::Add(add) => I(Instruction::Add(copy_args("ADD", &add.options, &add.src, &add.dest.value)?)),
        pd::Instruction::Env(env) => I(Instruction::Env(name_values(&env.arguments.value, escape, "ENV")?)),
        pd::Instruction::Label(label) => I(Instruction::Label(name_values(&label.arguments.value, escape, "LABEL")?)),
        pd::Instruction::Arg(arg) => I(Instruction::Arg(parse_arg(&arg.arguments.value, escape)?)),
        pd::Instruction::Workdir(w) => I(Instruction::Workdir(w.arguments.value.to_string())),
        pd::Instruction::User(u) => I(Instruction::User(u.arguments.value.to_string())),
        pd::Instruction::Expose(e) => I(Instruction::Expose(e.arguments.iter().map(|a| a.value.to_string()).collect())),
        pd::Instruction::Entrypoint(e) => I(Instruction::Entrypoint(command(&e.arguments, escape)?)),
        pd::Instruction::Cmd(c) => I(Instruction::Cmd(command(&c.arguments, escape)?)),
        pd::Instruction::Shell(s) => I(Instruction::Shell(s.arguments.iter().map(|a| a.value.to_string()).collect())),
        pd::Instruction::Stopsignal(s) => I(Instruction::StopSignal(s.arguments.value.to_string())),
        pd::Instruction::Volume(v) => I(Instruction::Volume(match &v.arguments {
            pd::JsonOrStringArray::Json(json) => json.value.iter().map(|a| a.value.to_string()).collect(),
            pd::JsonOrStringArray::String(words) => words.iter().map(|a| a.value.to_string()).collect(),
        })),
        pd::Instruction::Maintainer(m) => I(Instruction::Maintainer(m.name.value.to_string())),
        pd::Instruction::Healthcheck(_) => Ignored(
            "HEALTHCHECK is ignored: OCI image configs have no health check (serval probes instances itself)".into(),
        ),
        pd::Instruction::Onbuild(_) => Ignored("ONBUILD is ignored: OCI image configs have no build triggers".into()),
        pd::Instruction::From(_) => return Err("unexpected instruction".into()),
        _ => return Err("unsupported instruction".into()),
    })
}

fn copy_args(keyword: &str, options: &[pd::Flag<'_>], sources: &[pd::Source<'_>], dest: &str) -> Result<Copy, String> {
    let mut copy = Copy { sources: vec![], dest: dest.to_string(), from: None, chown: None, chmod: None };
    for flag in options {
        match (keyword, flag.name.value.as_ref()) {
            ("COPY", "from") => copy.from = Some(flag_value(flag)?),
            (_, "chown") => copy.chown = Some(flag_value(flag)?),
            (_, "chmod") => copy.chmod = Some(flag_value(flag)?),
            // `--link` changes how BuildKit stacks the layer, not what it holds.
            (_, "link") => {}
            ("COPY", "parents" | "exclude") | ("ADD", "checksum" | "keep-git-dir" | "parents" | "exclude") => {
                return Err(unsupported_flag(keyword, &flag.name.value));
            }
            (_, other) => return Err(unknown_flag(keyword, other)),
        }
    }
    for source in sources {
        match source {
            pd::Source::Path(path) => copy.sources.push(path.value.to_string()),
            pd::Source::HereDoc(_) => return Err(here_doc(keyword)),
            _ => return Err(format!("{keyword}: unsupported source")),
        }
    }
    Ok(copy)
}

fn flag_value(flag: &pd::Flag<'_>) -> Result<String, String> {
    match &flag.value {
        Some(value) => Ok(value.value.to_string()),
        None => Err(format!("--{} needs a value (--{}=…)", flag.name.value, flag.name.value)),
    }
}

fn unknown_flag(keyword: &str, name: &str) -> String {
    format!("unknown flag --{name} for {keyword}")
}

fn unsupported_flag(keyword: &str, name: &str) -> String {
    format!("{keyword} --{name} is not supported by serval build")
}

fn here_doc(keyword: &str) -> String {
    format!("{keyword} with a here-document (<<EOF) is not supported by serval build")
}

fn command(command: &pd::Command<'_>, escape: char) -> Result<Command, String> {
    match command {
        pd::Command::Exec(args) => Ok(Command::Exec(args.value.iter().map(|a| a.value.to_string()).collect())),
        pd::Command::Shell(text) => Ok(Command::Shell(join_continuations(text.value, escape))),
        _ => Err("unsupported command form".into()),
    }
}

/// Joins shell-form text as Docker does: a line ending with the escape character (spaces and
/// tabs may follow it) loses it and continues with the next line; comment lines and empty
/// lines inside the continuation are dropped. Quotes do not matter (Docker's lexer is by lines).
fn join_continuations(raw: &str, escape: char) -> String {
    let mut out = String::with_capacity(raw.len());
    for (i, line) in raw.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if i > 0 {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
        }
        let end = line.trim_end_matches([' ', '\t']);
        match end.strip_suffix(escape) {
            Some(kept) => out.push_str(kept),
            None => out.push_str(line),
        }
    }
    out
}

/// `ENV`/`LABEL` arguments: `k=v k2="v 2" …`, or the legacy `k v` (one pair, the value is the
/// rest of the line).
fn name_values(text: &str, escape: char, keyword: &str) -> Result<Vec<(String, String)>, String> {
    let words = split_words(text, escape);
    let Some(first) = words.first() else {
        return Err(format!("{keyword} requires at least one argument"));
    };
    if !first.contains('=') {
        let text = text.trim_start();
        let Some((name, value)) = text.split_once(|c: char| c.is_whitespace()) else {
            return Err(format!("{keyword} must have two arguments (name value) or be of the form name=value"));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("{keyword} must have two arguments (name value) or be of the form name=value"));
        }
        return Ok(vec![(name.to_string(), value.to_string())]);
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(format!("{keyword} names can not be blank")),
            Some((name, value)) => Ok((name.to_string(), value.to_string())),
            None => Err(format!("syntax error - can't find = in {word:?}: must be of the form name=value")),
        })
        .collect()
}

fn parse_arg(text: &str, escape: char) -> Result<Vec<ArgDecl>, String> {
    let words = split_words(text, escape);
    if words.is_empty() {
        return Err("ARG requires at least one argument".into());
    }
    words
        .into_iter()
        .map(|word| {
            let (name, default) = match word.split_once('=') {
                Some((name, default)) => (name.to_string(), Some(default.to_string())),
                None => (word, None),
            };
            if name.is_empty() {
                return Err("ARG names can not be blank".to_string());
            }
            Ok(ArgDecl { name, default })
        })
        .collect()
}

fn keyword_start(instruction: &pd::Instruction<'_>) -> usize {
    let keyword = match instruction {
        pd::Instruction::Add(i) => &i.add,
        pd::Instruction::Arg(i) => &i.arg,
        pd::Instruction::Cmd(i) => &i.cmd,
        pd::Instruction::Copy(i) => &i.copy,
        pd::Instruction::Entrypoint(i) => &i.entrypoint,
        pd::Instruction::Env(i) => &i.env,
        pd::Instruction::Expose(i) => &i.expose,
        pd::Instruction::From(i) => &i.from,
        pd::Instruction::Healthcheck(i) => &i.healthcheck,
        pd::Instruction::Label(i) => &i.label,
        pd::Instruction::Maintainer(i) => &i.maintainer,
        pd::Instruction::Onbuild(i) => &i.onbuild,
        pd::Instruction::Run(i) => &i.run,
        pd::Instruction::Shell(i) => &i.shell,
        pd::Instruction::Stopsignal(i) => &i.stopsignal,
        pd::Instruction::User(i) => &i.user,
        pd::Instruction::Volume(i) => &i.volume,
        pd::Instruction::Workdir(i) => &i.workdir,
        _ => return 0,
    };
    keyword.span.start
}

/// Byte offset → 1-based line.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        Self { newlines: text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect() }
    }

    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(text: &str) -> Containerfile {
        parse(text).expect("parses")
    }

    fn only_stage(text: &str) -> Vec<Located<Instruction>> {
        let mut file = parse_ok(text);
        assert_eq!(file.stages.len(), 1);
        file.stages.remove(0).instructions
    }

    fn instructions(text: &str) -> Vec<Instruction> {
        only_stage(text).into_iter().map(|i| i.value).collect()
    }

    fn err(text: &str) -> ParseError {
        parse(text).expect_err("must not parse")
    }

    #[test]
    fn every_instruction_form() {
        let text = r#"# syntax=docker/dockerfile:1
FROM --platform=linux/amd64 alpine:3.20 AS Build
RUN echo "hello $HOME"
RUN ["echo", "exec form"]
RUN --network=none make
COPY --from=0 --chown=1:2 --chmod=0755 a b /dst/
ADD --chown=app x.tar.gz /opt/
COPY ["with space", "/dst"]
ENV A=1 B="two words" C='three'
ENV LEGACY some value here
ARG V=1 W
WORKDIR /app
USER app:staff
EXPOSE 80 443/tcp ${PORT}
LABEL org.opencontainers.image.title="serval" version=1
ENTRYPOINT ["/bin/app", "--flag"]
CMD serve --port 8080
SHELL ["/bin/bash", "-c"]
STOPSIGNAL SIGTERM
VOLUME ["/data", "/logs"]
VOLUME /cache /tmp
MAINTAINER someone
"#;
        let file = parse_ok(text);
        assert_eq!(file.escape, '\\');
        let stage = &file.stages[0];
        assert_eq!(stage.name.as_deref(), Some("build"));
        assert_eq!(stage.base.line, 2);
        assert_eq!(stage.base.value, From { image: "alpine:3.20".into(), platform: Some("linux/amd64".into()) });
        let got: Vec<_> = stage.instructions.iter().map(|i| (i.line, i.value.clone())).collect();
        let want = vec![
            (3, Instruction::Run { command: Command::Shell("echo \"hello $HOME\"".into()), network: None }),
            (4, Instruction::Run { command: Command::Exec(vec!["echo".into(), "exec form".into()]), network: None }),
            (5, Instruction::Run { command: Command::Shell("make".into()), network: Some("none".into()) }),
            (
                6,
                Instruction::Copy(Copy {
                    sources: vec!["a".into(), "b".into()],
                    dest: "/dst/".into(),
                    from: Some("0".into()),
                    chown: Some("1:2".into()),
                    chmod: Some("0755".into()),
                }),
            ),
            (
                7,
                Instruction::Add(Copy {
                    sources: vec!["x.tar.gz".into()],
                    dest: "/opt/".into(),
                    from: None,
                    chown: Some("app".into()),
                    chmod: None,
                }),
            ),
            (
                8,
                Instruction::Copy(Copy {
                    sources: vec!["with space".into()],
                    dest: "/dst".into(),
                    from: None,
                    chown: None,
                    chmod: None,
                }),
            ),
            (
                9,
                Instruction::Env(vec![
                    ("A".into(), "1".into()),
                    ("B".into(), "\"two words\"".into()),
                    ("C".into(), "'three'".into()),
                ]),
            ),
            (10, Instruction::Env(vec![("LEGACY".into(), "some value here".into())])),
            (
                11,
                Instruction::Arg(vec![
                    ArgDecl { name: "V".into(), default: Some("1".into()) },
                    ArgDecl { name: "W".into(), default: None },
                ]),
            ),
            (12, Instruction::Workdir("/app".into())),
            (13, Instruction::User("app:staff".into())),
            (14, Instruction::Expose(vec!["80".into(), "443/tcp".into(), "${PORT}".into()])),
            (
                15,
                Instruction::Label(vec![
                    ("org.opencontainers.image.title".into(), "\"serval\"".into()),
                    ("version".into(), "1".into()),
                ]),
            ),
            (16, Instruction::Entrypoint(Command::Exec(vec!["/bin/app".into(), "--flag".into()]))),
            (17, Instruction::Cmd(Command::Shell("serve --port 8080".into()))),
            (18, Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])),
            (19, Instruction::StopSignal("SIGTERM".into())),
            (20, Instruction::Volume(vec!["/data".into(), "/logs".into()])),
            (21, Instruction::Volume(vec!["/cache".into(), "/tmp".into()])),
            (22, Instruction::Maintainer("someone".into())),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn lowercase_keywords_and_crlf() {
        let got = instructions("from alpine\r\nrun echo a \\\r\n  b\r\n");
        assert_eq!(got, [Instruction::Run { command: Command::Shell("echo a   b".into()), network: None }]);
    }

    #[test]
    fn continuation_lines_drop_comments_and_blank_lines() {
        let got = only_stage(
            "FROM a\nRUN apt-get update \\\n  # a comment\n\n  && apt-get install -y \\\n     curl\nUSER x\n",
        );
        assert_eq!(
            got[0].value,
            Instruction::Run {
                command: Command::Shell("apt-get update   && apt-get install -y      curl".into()),
                network: None
            }
        );
        assert_eq!(got[1].line, 7);
        // Quotes do not stop a continuation, as in Docker.
        let got = instructions("FROM a\nRUN echo \"b \\\nc\"\nENV X=1 \\\n    Y=2\n");
        assert_eq!(got[0], Instruction::Run { command: Command::Shell("echo \"b c\"".into()), network: None });
        assert_eq!(got[1], Instruction::Env(vec![("X".into(), "1".into()), ("Y".into(), "2".into())]));
    }

    #[test]
    fn escape_directive() {
        let file =
            parse_ok("# escape=`\nFROM mcr.microsoft.com/windows\nRUN dir C:\\ `\n  && echo done\nCOPY a\\b c\\\n");
        assert_eq!(file.escape, '`');
        let got: Vec<_> = file.stages[0].instructions.iter().map(|i| i.value.clone()).collect();
        assert_eq!(
            got[0],
            Instruction::Run { command: Command::Shell("dir C:\\   && echo done".into()), network: None }
        );
        let Instruction::Copy(copy) = &got[1] else { panic!("COPY expected: {got:?}") };
        assert_eq!(copy.sources, ["a\\b"]);
        assert_eq!(copy.dest, "c\\");
    }

    #[test]
    fn global_args_and_stages() {
        let file = parse_ok(
            "ARG BASE=alpine\nARG TAG\nFROM ${BASE}:${TAG} AS builder\nRUN make\nFROM scratch\nCOPY --from=builder /out /\n",
        );
        assert_eq!(
            file.global_args,
            [
                Located { line: 1, value: ArgDecl { name: "BASE".into(), default: Some("alpine".into()) } },
                Located { line: 2, value: ArgDecl { name: "TAG".into(), default: None } },
            ]
        );
        assert_eq!(file.stages.len(), 2);
        assert_eq!(file.stages[0].base.value.image, "${BASE}:${TAG}");
        assert_eq!(file.stages[1].name, None);
        assert_eq!(file.stages[1].base.line, 5);
        assert_eq!(file.stages[1].instructions[0].line, 6);
    }

    #[test]
    fn ignored_instructions_warn() {
        let file = parse_ok("FROM a\nHEALTHCHECK CMD curl -f http://localhost/\nONBUILD RUN x\nRUN y\n");
        assert_eq!(file.stages[0].instructions.len(), 1);
        assert_eq!(file.warnings.iter().map(|w| w.line).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("FROM alpine\nRUN ok\n\nBOGUS x\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("BOGUS"), "{e}");
        assert!(e.to_string().starts_with("Containerfile:4: "), "{e}");
        assert!(!e.to_string().contains("column"), "{e}");

        assert_eq!(err("RUN x\n").line, 1);
        assert_eq!(err("FROM a\nENV\n").line, 2);
        assert_eq!(err("FROM a\nENV A=1 B\n").line, 2);
        assert_eq!(err("FROM a\nENV =x\n").line, 2);
        assert_eq!(err("FROM a\nENV LONELY\n").line, 2);
        assert_eq!(err("FROM a\n\nRUN --mount=type=cache,target=/x make\n").line, 3);
        assert_eq!(err("FROM a\nCOPY --bogus=1 a b\n").line, 2);
        assert_eq!(err("FROM a\nADD --from=x a b\n").line, 2);
        assert_eq!(err("FROM a\nCOPY --chown a b\n").line, 2);
        assert_eq!(err("FROM a AS x\nFROM b AS X\n").line, 2);
        assert_eq!(err("FROM a AS 1x\n").line, 1);
        assert_eq!(err("FROM --bogus=1 a\n").line, 1);
        let e = err("FROM a\nRUN <<EOF\necho hi\nEOF\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("here-document"), "{e}");
        assert_eq!(err("FROM a\nCOPY <<EOF /x\nhi\nEOF\n").line, 2);
        assert_eq!(err("# only a comment\n").line, 0);
        assert_eq!(err("").to_string(), "Containerfile: expected at least one FROM instruction");
    }

    #[test]
    fn bounds() {
        let big = format!("FROM a\n{}", "#".repeat(MAX_CONTAINERFILE_BYTES));
        assert_eq!(err(&big).line, 0);
        let long = format!("FROM a\nRUN {}\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(err(&long).line, 2);
        let many_stages = "FROM a\n".repeat(MAX_STAGES + 1);
        let e = err(&many_stages);
        assert_eq!(e.line, MAX_STAGES + 1);
        let many = format!("FROM a\n{}", "USER x\n".repeat(MAX_INSTRUCTIONS));
        let e = err(&many);
        assert_eq!(e.line, MAX_INSTRUCTIONS + 1);
        assert!(e.message.contains("instructions"), "{e}");
    }

    #[test]
    fn byte_order_mark_is_skipped() {
        assert_eq!(instructions("\u{feff}FROM a\nUSER x\n"), [Instruction::User("x".into())]);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_instruction_soup(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    "FROM a AS b", "FROM", "RUN x \\", "RUN [\"a\",", "COPY --from=b a b", "ENV A=\"x", "ENV",
                    "ARG A=${B:-", "# escape=`", "\\", "`", "LABEL a", "EXPOSE", "RUN <<EOF", "EOF", "", "  # c",
                    "CMD [\"a\", 'b']", "HEALTHCHECK", "ONBUILD", "SHELL x",
                ]),
                0..30,
            )
        ) {
            let _ = parse(&lines.join("\n"));
        }
    }
}
