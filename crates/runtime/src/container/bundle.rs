//! The OCI runtime bundle's `config.json`: the image's defaults overridden by the revision,
//! Knative's environment, and serval's isolation (namespaces, capabilities, seccomp,
//! masked paths, cgroup limits). A pure function of its inputs.

use serde_json::{Value, json};

/// What the image says to run (from its OCI config).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Everything that goes into one instance's `config.json`.
#[derive(Debug, Clone)]
pub struct BundleSpec<'a> {
    pub image: &'a ImageDefaults,
    /// Kubernetes semantics: `command` replaces the Entrypoint (and drops Cmd), `args`
    /// replaces Cmd.
    pub command: &'a [String],
    pub args: &'a [String],
    /// `KEY=VALUE`, applied over the image's environment.
    pub env: &'a [(String, String)],
    pub working_dir: Option<&'a str>,
    pub uid: u32,
    pub gid: u32,
    pub rootfs: &'a str,
    pub read_only_root: bool,
    pub hostname: &'a str,
    pub cgroups_path: &'a str,
    pub memory_limit: Option<i64>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<u64>,
    pub pids_limit: i64,
    /// Host directories bound in read-only (after the standard mounts).
    pub read_only_mounts: &'a [crate::ReadOnlyMount],
}

/// The process arguments: Kubernetes' rules for combining the image and the container.
pub fn argv(image: &ImageDefaults, command: &[String], args: &[String]) -> Vec<String> {
    let entry = if command.is_empty() { image.entrypoint.clone() } else { command.to_vec() };
    let rest = match (command.is_empty(), args.is_empty()) {
        (_, false) => args.to_vec(),
        (true, true) => image.cmd.clone(),
        (false, true) => Vec::new(),
    };
    entry.into_iter().chain(rest).collect()
}

/// `PATH=…` first from the image, then the overrides; later keys replace earlier ones.
fn environment(image: &[String], overrides: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for kv in image {
        if let Some((k, v)) = kv.split_once('=') {
            set(k, v);
        }
    }
    for (k, v) in overrides {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Capabilities kept: enough to serve on a port and drop privileges, nothing to administer
/// the host (a subset of runc's defaults: no MKNOD, NET_RAW, AUDIT_WRITE, SYS_CHROOT, SETFCAP,
/// SETPCAP).
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETGID",
    "CAP_SETUID",
];

/// Paths hidden and made read-only inside the container, as runc's default spec does.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// System calls refused with EPERM: kernel, mount, module, clock, keyring, namespace and
/// tracing administration (the default profile; everything else is allowed).
const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
];

fn seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{ "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
    })
}

/// CFS period used for CPU limits.
const CPU_PERIOD: u64 = 100_000;

pub fn config(spec: &BundleSpec<'_>) -> Value {
    let args = argv(spec.image, spec.command, spec.args);
    let cwd = spec.working_dir.or(spec.image.working_dir.as_deref()).filter(|d| !d.is_empty()).unwrap_or("/");
    let mut resources = json!({
        "devices": [{ "allow": false, "access": "rwm" }],
        "pids": { "limit": spec.pids_limit },
    });
    if let Some(limit) = spec.memory_limit {
        // No swap beyond the limit: memory+swap equals memory.
        resources["memory"] = json!({ "limit": limit, "swap": limit });
    }
    if let Some(millis) = spec.cpu_millis {
        resources["cpu"] = json!({ "quota": (millis * CPU_PERIOD / 1000).max(1000), "period": CPU_PERIOD });
    }
    let mut mounts = json!([
        { "destination": "/proc", "type": "proc", "source": "proc" },
        { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
        { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
        { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
        { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
        { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
        { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=65536k"] }
    ]);
    if let Some(list) = mounts.as_array_mut() {
        list.extend(spec.read_only_mounts.iter().map(|m| {
            json!({ "destination": m.destination, "type": "bind", "source": m.source, "options": ["rbind", "ro", "nosuid", "nodev"] })
        }));
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": spec.uid, "gid": spec.gid },
            "args": args,
            "env": environment(&spec.image.env, spec.env),
            "cwd": cwd,
            "capabilities": { "bounding": CAPABILITIES, "effective": CAPABILITIES, "permitted": CAPABILITIES },
            "noNewPrivileges": true
        },
        "root": { "path": spec.rootfs, "readonly": spec.read_only_root },
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            // No network namespace: instances share the host's, on a serval-assigned
            // loopback port (see ARCHITECTURE.md for the isolated mode).
            "namespaces": [{ "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }],
            "cgroupsPath": spec.cgroups_path,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp()
        }
    })
}

/// Resolves an image's `User` (`uid`, `uid:gid`, `name`, `name:group`) against the rootfs'
/// `/etc/passwd` and `/etc/group`. Unknown names are an error.
pub fn resolve_user(user: Option<&str>, rootfs: &std::path::Path) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else { return Ok((0, 0)) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, name: &str, field: usize| -> Option<(u32, Option<u32>)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let parts: Vec<&str> = line.split(':').collect();
            (parts.first() == Some(&name)).then(|| {
                (parts.get(field).and_then(|v| v.parse().ok()).unwrap_or(0), parts.get(3).and_then(|v| v.parse().ok()))
            })
        })
    };
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup("etc/passwd", u, 2).ok_or_else(|| format!("user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", g, 2)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
        None => primary_gid.unwrap_or(0),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn argv_follows_kubernetes() {
        let image = ImageDefaults { entrypoint: strings(&["/entry"]), cmd: strings(&["--cmd"]), ..Default::default() };
        assert_eq!(argv(&image, &[], &[]), strings(&["/entry", "--cmd"]));
        assert_eq!(argv(&image, &[], &strings(&["x"])), strings(&["/entry", "x"]));
        assert_eq!(argv(&image, &strings(&["/bin/sh"]), &[]), strings(&["/bin/sh"]));
        assert_eq!(argv(&image, &strings(&["/bin/sh"]), &strings(&["-c", "y"])), strings(&["/bin/sh", "-c", "y"]));
    }

    #[test]
    fn config_carries_env_limits_and_isolation() {
        let image = ImageDefaults {
            entrypoint: strings(&["/app"]),
            env: strings(&["PATH=/app/bin", "A=image"]),
            working_dir: Some("/srv".into()),
            ..Default::default()
        };
        let env = vec![("A".to_string(), "user".to_string()), ("PORT".to_string(), "8080".to_string())];
        let spec = BundleSpec {
            image: &image,
            command: &[],
            args: &[],
            env: &env,
            working_dir: None,
            uid: 1000,
            gid: 1000,
            rootfs: "/b/rootfs",
            read_only_root: true,
            hostname: "h",
            cgroups_path: "/serval/x",
            memory_limit: Some(64 << 20),
            cpu_millis: Some(500),
            pids_limit: 128,
            read_only_mounts: &[crate::ReadOnlyMount {
                source: "/var/lib/serval/functions/f/abc".into(),
                destination: "/var/task".into(),
            }],
        };
        let c = config(&spec);
        assert_eq!(c["process"]["env"], json!(["PATH=/app/bin", "A=user", "PORT=8080"]));
        assert_eq!(c["process"]["cwd"], "/srv");
        assert_eq!(c["process"]["noNewPrivileges"], true);
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(c["linux"]["resources"]["pids"]["limit"], 128);
        let namespaces: Vec<&str> =
            c["linux"]["namespaces"].as_array().expect("ns").iter().filter_map(|n| n["type"].as_str()).collect();
        assert_eq!(namespaces, ["pid", "ipc", "uts", "mount"]);
        let task = &c["mounts"].as_array().expect("mounts").last().expect("a mount")["options"];
        assert_eq!(c["mounts"][7]["destination"], "/var/task");
        assert_eq!(task, &json!(["rbind", "ro", "nosuid", "nodev"]));
        // It is a valid OCI runtime spec.
        let parsed: Result<oci_spec::runtime::Spec, _> = serde_json::from_value(c);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn users_resolve_from_the_rootfs() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("etc")).expect("etc");
        std::fs::write(dir.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n")
            .expect("passwd");
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        assert_eq!(resolve_user(None, dir.path()), Ok((0, 0)));
        assert_eq!(resolve_user(Some("app"), dir.path()), Ok((1000, 1001)));
        assert_eq!(resolve_user(Some("app:staff"), dir.path()), Ok((1000, 50)));
        assert_eq!(resolve_user(Some("42:43"), dir.path()), Ok((42, 43)));
        assert!(resolve_user(Some("ghost"), dir.path()).is_err());
    }
}
