//! Records of running instances in the state directory, so that a server restarted after a
//! crash (`kill -9`) can kill the process groups its predecessor left behind.
//!
//! A record is a file named after the leader's pid holding the process start time from
//! `/proc/<pid>/stat`; the start time guards against killing an unrelated process that
//! reused the pid.

use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Removes its file when dropped (the instance exited normally).
pub(super) struct Record(PathBuf);

impl Record {
    pub(super) fn create(dir: &Path, pid: u32) -> Option<Record> {
        let start = start_time(pid)?;
        let path = dir.join(pid.to_string());
        // No fsync: after a host crash there is nothing left to kill anyway.
        std::fs::write(&path, start.to_string()).ok()?;
        Some(Record(path))
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Field 22 of `/proc/<pid>/stat`: the start time in clock ticks since boot; `None` for a
/// process that is gone or a zombie (nothing left to kill).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if fields.next()? == "Z" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Kills every recorded process group still alive; returns their ids.
pub(super) fn kill_all(dir: &Path) -> Vec<u32> {
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return killed;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let pid: Option<u32> = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok());
        let recorded: Option<u64> = std::fs::read_to_string(&path).ok().and_then(|s| s.trim().parse().ok());
        if let (Some(pid), Some(recorded)) = (pid, recorded)
            && start_time(pid) == Some(recorded)
            && killpg(Pid::from_raw(pid as i32), Signal::SIGKILL).is_ok()
        {
            killed.push(pid);
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}
