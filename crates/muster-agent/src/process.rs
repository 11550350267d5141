//! The only place Muster starts a child process.
//!
//! A `ProcessGroup` puts the child in a new process group of its own and
//! owns that whole group: stopping it signals every process in it, and
//! dropping the guard kills whatever is left, so no grandchild of a task
//! outlives its run.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The file-creation mask children start with, when it differs from this
/// process's own (`u32::MAX`: the same).
static CHILD_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Children start with `mask` as their umask. The hub makes its own files
/// private with umask 077; the runs of an agent in the same process (`muster
/// up`) keep the umask the operator started it with.
pub fn set_child_umask(mask: u32) {
    CHILD_UMASK.store(mask, std::sync::atomic::Ordering::SeqCst);
}

pub struct ProcessGroup {
    child: Child,
    pgid: i32,
}

impl ProcessGroup {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> io::Result<ProcessGroup> {
        cmd.process_group(0).kill_on_drop(true);
        let umask = CHILD_UMASK.load(std::sync::atomic::Ordering::SeqCst);
        // SAFETY: prctl and umask are async-signal-safe and touch only the child's own state.
        unsafe {
            cmd.pre_exec(move || {
                // If the agent dies without cleaning up, the kernel kills the leader.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(io::Error::last_os_error());
                }
                if umask != u32::MAX {
                    libc::umask(umask as libc::mode_t);
                }
                Ok(())
            });
        }
        #[allow(clippy::disallowed_methods)] // this guard is the sanctioned way to spawn
        let child = cmd.spawn()?;
        let pgid =
            child.id().map(|id| id as i32).ok_or_else(|| io::Error::other("the child exited before it had an id"))?;
        Ok(ProcessGroup { child, pgid })
    }

    pub fn pgid(&self) -> i32 {
        self.pgid
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `signal` to every process in the group.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with a negative pid signals the group; no memory is shared.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
    }

    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// SIGTERM to the group, then SIGKILL after `grace` if the leader has not
    /// exited; SIGKILL again afterwards for members that ignored SIGTERM.
    pub async fn terminate(&mut self, grace: Duration) -> io::Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                self.signal(libc::SIGKILL);
                self.child.wait().await
            }
        };
        self.signal(libc::SIGKILL);
        status
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}
