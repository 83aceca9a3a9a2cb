use std::path::{Path, PathBuf};
use std::time::Duration;

use serval_control::ControlConfig;
use serval_gateway::ConnectionLimits;
use serval_scaler::ClusterDefaults;

use crate::PlatformError;

/// Settings of one server, parsed once at the edge and passed down.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    pub data_dir: PathBuf,
    /// Routing domain: services answer at `<service>.<namespace>.<domain>`.
    pub domain: String,
    /// The bearer token every API call must carry.
    pub token: String,
    /// Autoscaler defaults (Knative's `config-autoscaler`): stable window, scale-to-zero
    /// grace period, tick, targets; revisions override some by annotation.
    pub autoscaler: ClusterDefaults,
    /// Time between SIGTERM and SIGKILL when an instance is stopped.
    pub grace_period: Duration,
    /// How long an instance may take to become ready (a revision's
    /// `serving.knative.dev/progress-deadline` overrides it).
    pub startup_timeout: Duration,
    /// Revisions kept that no route references (older ones are garbage-collected).
    pub revision_history: usize,
    /// The OCI runtime CLI (`runc`, `crun`, `youki`) that runs images.
    pub oci_runtime: PathBuf,
    /// Threads serving the gateway (default: one per core).
    pub gateway_threads: usize,
    /// Timeouts and the connection cap of each listener (gateway and API).
    pub connections: ConnectionLimits,
    /// A delivery attempt's timeout when its trigger sets none.
    pub delivery_timeout: Duration,
    /// Instances running or starting at once, all revisions together.
    pub max_instances: u32,
    /// The highest max-scale a revision may ask for (Knative's `max-scale-limit`; 0: none).
    pub max_scale_limit: u32,
    /// Images that run Lambda zips of a runtime (or runtime family) instead of the host's
    /// interpreter.
    pub lambda_images: Vec<(String, String)>,
}

impl PlatformConfig {
    /// The control plane's part of the settings.
    pub fn control(&self) -> ControlConfig {
        ControlConfig {
            domain: self.domain.clone(),
            autoscaler: self.autoscaler.clone(),
            grace_period: self.grace_period,
            startup_timeout: self.startup_timeout,
            revision_history: self.revision_history,
            max_instances: self.max_instances,
            max_scale_limit: self.max_scale_limit,
            lambda_code_dir: self.data_dir.join("functions"),
            lambda_images: self.lambda_images.clone(),
        }
    }

    pub fn new(data_dir: PathBuf, token: String) -> PlatformConfig {
        PlatformConfig {
            data_dir,
            domain: "localhost".into(),
            token,
            autoscaler: ClusterDefaults::default(),
            grace_period: Duration::from_secs(10),
            startup_timeout: Duration::from_secs(60),
            revision_history: 10,
            oci_runtime: PathBuf::from("runc"),
            gateway_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            connections: ConnectionLimits::default(),
            delivery_timeout: Duration::from_secs(30),
            max_instances: 1000,
            max_scale_limit: 0,
            lambda_images: Vec::new(),
        }
    }
}

/// Reads the AWS key pair Lambda API requests are signed with (`dir/aws-credentials`: the
/// access key id, then the secret, a line each), creating it (owner-only) at first start.
pub fn load_or_create_aws_credentials(dir: &Path) -> Result<serval_lambda::sigv4::Credentials, PlatformError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("aws-credentials");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && let Some((id, secret)) = existing.trim().split_once('\n')
    {
        return Ok(serval_lambda::sigv4::Credentials {
            access_key_id: id.trim().to_string(),
            secret_access_key: secret.trim().to_string(),
        });
    }
    let mut random = [0u8; 56];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let id: String = "AKIA".chars().chain(random[..16].iter().map(|b| UPPER[(*b % 32) as usize] as char)).collect();
    let secret: String = random[16..].iter().map(|b| SECRET[(*b % 64) as usize] as char).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(format!("{id}\n{secret}\n").as_bytes())?;
    file.sync_all()?;
    Ok(serval_lambda::sigv4::Credentials { access_key_id: id, secret_access_key: secret })
}

/// Reads `dir/token`, creating it (owner-only) with a fresh random token at first start.
pub fn load_or_create_token(dir: &Path) -> Result<String, PlatformError> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join("token");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}
