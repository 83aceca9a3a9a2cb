//! `serval init`: a new function project from one of `serval-project`'s templates.

use std::path::PathBuf;

use anyhow::{Context, Result};
use comfy_table::{Table, presets::NOTHING};
use serval_project::{Language, TEMPLATES, TemplateKind, default_name, find_template, validate_function_name};

#[derive(clap::Args)]
pub struct InitArgs {
    /// Directory of the new project, created when missing; no file in it is ever overwritten.
    #[arg(required_unless_present = "list")]
    dir: Option<PathBuf>,
    /// The function's language: python, node, rust, go or shell.
    #[arg(long, value_name = "LANG", value_parser = parse_language, required_unless_present = "list")]
    lang: Option<Language>,
    /// http (a request in, a response out) or cloudevents (a CloudEvent in, maybe one out).
    #[arg(long, value_name = "TEMPLATE", value_parser = parse_template, default_value = "http")]
    template: TemplateKind,
    /// The function's name, a DNS label as a service's (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// List the templates.
    #[arg(long, conflicts_with_all = ["dir", "lang", "name"])]
    list: bool,
}

fn parse_language(s: &str) -> Result<Language, String> {
    s.parse().map_err(|e: serval_project::ProjectError| e.to_string())
}

fn parse_template(s: &str) -> Result<TemplateKind, String> {
    s.parse().map_err(|e: serval_project::ProjectError| e.to_string())
}

pub fn run(args: InitArgs) -> Result<()> {
    if args.list {
        let mut table = Table::new();
        table.load_preset(NOTHING).set_header(["LANGUAGE", "TEMPLATE", "DESCRIPTION"]);
        for t in TEMPLATES {
            table.add_row([t.language.name(), t.kind.name(), t.description]);
        }
        println!("{table}");
        return Ok(());
    }
    let (Some(dir), Some(language)) = (args.dir, args.lang) else {
        anyhow::bail!("give a directory and --lang (or --list)");
    };
    let template = find_template(language, args.template)?;
    let name = match args.name {
        Some(name) => name,
        None => {
            let name = default_name(&dir)
                .with_context(|| format!("cannot name a function after {}: give --name", dir.display()))?;
            validate_function_name(&name).map_err(|reason| {
                anyhow::anyhow!("cannot name the function after its directory: {reason}; give a name with --name")
            })?;
            name
        }
    };
    let written = template.render(&dir, &name)?;
    println!("Created the {language}/{} function {name} in {}:", template.kind, dir.display());
    println!("  {}", written.join("  "));
    println!(
        "Test it with `{}`, run it with `PORT=8080 {}` in that directory (README.md says more).",
        language.test_command().join(" "),
        template.command.join(" ")
    );
    Ok(())
}
