//! `serval build [DIR] [-t REF]…`: an OCI image from a Containerfile or Dockerfile, built
//! without a daemon into the image store of the data directory (the one `serval server`
//! runs images from).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serval_build::Network;
use serval_builder::{BuildRequest, Builder, Built, Progress};
use serval_runtime::oci::{ImageStore, RegistryAuth};

use crate::Global;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The build context: the project directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Name for the image (repeatable; default: the directory's name).
    #[arg(short = 't', long = "tag", value_name = "REF")]
    pub tags: Vec<String>,
    /// The Containerfile (default: DIR/Containerfile, else DIR/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// A build argument for `ARG` (repeatable).
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// The stage to build (default: the last).
    #[arg(long)]
    pub target: Option<String>,
    /// Build every step again instead of taking layers from the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// `host` gives RUN steps the host's network; by default they only have a loopback.
    #[arg(long, value_enum, default_value_t = BuildNetwork::None)]
    pub network: BuildNetwork,
    /// The base image of a generated Containerfile (a project without one), instead of
    /// serval.yaml's `build.base` or the language's default.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// The OCI runtime CLI that runs RUN steps.
    #[arg(long, default_value = "runc")]
    pub oci_runtime: PathBuf,
    /// Push the image to the registry each `-t REF` names, once it is built.
    #[arg(long)]
    pub push: bool,
    /// Registry user name for --push and for pulling base images (with --password).
    #[arg(long)]
    pub username: Option<String>,
    /// Password for --username (or SERVAL_REGISTRY_PASSWORD).
    #[arg(long, env = "SERVAL_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A registry bearer token instead of a username and password (or SERVAL_REGISTRY_TOKEN).
    #[arg(long, env = "SERVAL_REGISTRY_TOKEN", hide_env_values = true, conflicts_with = "username")]
    pub registry_token: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BuildNetwork {
    None,
    Host,
}

pub async fn run(args: BuildArgs, global: Global) -> Result<()> {
    let mut build_args = BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => build_args.insert(k.to_string(), v.to_string()),
            _ => bail!("--build-arg {kv:?} must look like KEY=VALUE"),
        };
    }
    let tags = if args.tags.is_empty() {
        let name = serval_project::default_name(&args.dir)
            .with_context(|| format!("cannot name the image after {}: pass -t REF", args.dir.display()))?;
        vec![name]
    } else {
        args.tags.clone()
    };
    let (containerfile, containerfile_text) = containerfile_for(&args.dir, args.file.as_deref(), args.base.as_deref())?;
    if args.username.is_some() && args.password.is_none() {
        bail!("--username needs --password (or SERVAL_REGISTRY_PASSWORD)");
    }
    let registry_auth =
        RegistryAuth::from_credentials(args.username.clone(), args.password.clone(), args.registry_token.clone());
    let request = BuildRequest {
        context: args.dir.clone(),
        containerfile,
        containerfile_text,
        tags,
        build_args,
        target: args.target.clone(),
        network: match args.network {
            BuildNetwork::None => Network::None,
            BuildNetwork::Host => Network::Host,
        },
        no_cache: args.no_cache,
        registry_auth,
    };
    let store = image_store(&global)?;
    let built = build_image(&request, &args.oci_runtime, &store, &global).await?;
    if args.push {
        for tag in &request.tags {
            let digest = store.push(&built.image.digest, tag, request.registry_auth.clone()).await?;
            println!("pushed {tag} ({digest})");
        }
    }
    Ok(())
}

/// The image store of the data directory (the one `serval server` runs images from).
pub(super) fn image_store(global: &Global) -> Result<ImageStore> {
    ImageStore::open(global.data_dir().join("images")).context("opening the image store")
}

/// Builds `request` into `store`, showing progress and a summary; the layer cache and
/// scratch space are in the data directory.
pub(super) async fn build_image(
    request: &BuildRequest,
    oci_runtime: &Path,
    store: &ImageStore,
    global: &Global,
) -> Result<Built> {
    let data = global.data_dir();
    let builder =
        Builder::new(store.clone(), &data.join("build/cache"), &data.join("build/tmp"), oci_runtime.to_path_buf())?;
    let started = std::time::Instant::now();
    let mut show = |p: Progress| match p {
        Progress::Step { number, total, text } => println!("[{number}/{total}] {text}"),
        Progress::Cached => println!("  cached"),
        Progress::Output(line) => println!("  │ {line}"),
        Progress::Warning(text) => eprintln!("warning: {text}"),
    };
    // Ctrl-C drops the build: its scratch trees go, and nothing was named in the store.
    let built = tokio::select! {
        built = builder.build(request, &mut show) => built?,
        _ = tokio::signal::ctrl_c() => bail!("build interrupted; no image was stored"),
    };
    let name = built.image.name.clone().unwrap_or_else(|| built.image.digest.clone());
    println!(
        "built {name} ({}) in {:.2} s; {} of {} layer steps from the cache",
        built.image.digest,
        started.elapsed().as_secs_f64(),
        built.cached,
        built.layer_steps
    );
    Ok(built)
}

/// A project's Containerfile: `-f`, its `Containerfile` or `Dockerfile`, serval.yaml's
/// `build.containerfile`, else the one generated for its language (from `base`, else
/// serval.yaml's `build.base`, else the language's image). As (file, generated text).
pub(super) fn containerfile_for(
    dir: &Path,
    file: Option<&Path>,
    base: Option<&str>,
) -> Result<(Option<PathBuf>, Option<String>)> {
    if let Some(file) = file {
        return Ok((Some(file.to_path_buf()), None));
    }
    if ["Containerfile", "Dockerfile"].iter().any(|name| dir.join(name).is_file()) {
        return Ok((None, None));
    }
    let manifest = serval_project::Manifest::find(dir)?;
    if let Some(own) = manifest.as_ref().and_then(|m| m.build.containerfile.as_deref()) {
        return Ok((Some(dir.join(own)), None));
    }
    let language = serval_project::detect_language(dir)
        .with_context(|| {
            format!("no Containerfile or Dockerfile in {}, and no language to generate one", dir.display())
        })?
        .language;
    let base = base
        .map(str::to_string)
        .or_else(|| manifest.as_ref().map(|m| m.base_image().to_string()))
        .unwrap_or_else(|| language.default_base_image().to_string());
    let name = manifest
        .as_ref()
        .map(|m| m.name.clone())
        .or_else(|| serval_project::default_name(dir))
        .unwrap_or_else(|| "function".to_string());
    eprintln!("no Containerfile: building with the one generated for {language} (FROM {base})");
    Ok((None, Some(language.containerfile(&base, &name))))
}
