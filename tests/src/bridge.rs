//! The real `uns-kafka` binary as a child process, with its output in a log
//! file that outlives the test for post-mortems.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::env::{bridge_bin, target_dir};
use crate::unique;

/// The line the bridge logs once its MQTT subscriptions are acknowledged.
pub const READY_MARKER: &str = "uns-kafka ready";

/// A running bridge. Killed (SIGKILL) on drop if still running.
pub struct Bridge {
    child: Child,
    log_path: PathBuf,
}

/// How a run that was expected to end ended.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// stdout and stderr, interleaved as written.
    pub log: String,
}

impl Exited {
    /// The exit code; `None` when a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl Bridge {
    /// Starts `uns-kafka <args>` with `envs` added to this process's
    /// environment. stdout and stderr go to one log file under
    /// `<target>/e2e-logs/`, kept after the test.
    pub fn start<I, S>(args: I, envs: &[(&str, &str)]) -> Bridge
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn(&bridge_bin(), None, args, envs)
    }

    /// A container's start: the binary from where the Dockerfile puts it
    /// (that decides where it finds the default component), in its WORKDIR,
    /// with nothing of this process's environment but `envs` (a variable of
    /// the CI machine must not make the image's test pass), as `user`
    /// (`uid`, `gid`, no other groups) when given.
    pub fn start_contained<I, S>(
        bin: &Path,
        workdir: &Path,
        args: I,
        envs: &[(&str, &str)],
        user: Option<(u32, u32)>,
    ) -> Bridge
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self::spawn(bin, Some((workdir, user)), args, envs)
    }

    /// With a working directory, as a container: nothing of this
    /// process's environment but `envs`, and maybe as another user.
    fn spawn<I, S>(
        bin: &Path,
        contained: Option<(&Path, Option<(u32, u32)>)>,
        args: I,
        envs: &[(&str, &str)],
    ) -> Bridge
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let log_dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&log_dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_dir.display()));
        let log_path = log_dir.join(format!("{}.log", unique("bridge")));
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone log file handle");
        let mut command = Command::new(bin);
        if let Some((dir, user)) = contained {
            if let Some((uid, gid)) = user {
                use std::os::unix::process::CommandExt;
                // std drops root's other groups too (setgroups before
                // setuid), which would let the child read what the image's
                // user could not.
                command.uid(uid).gid(gid);
            }
            command.current_dir(dir);
            command.env_clear();
            // A library found only through it on this machine (OpenSSL
            // from a custom prefix) is the machine's, not the image's.
            if let Some(path) = std::env::var_os("LD_LIBRARY_PATH") {
                command.env("LD_LIBRARY_PATH", path);
            }
        }
        let child = command
            .args(args)
            // Plain text, so markers match whatever the terminal.
            .env("NO_COLOR", "1")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Bridge { child, log_path }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the bridge wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the bridge logs [`READY_MARKER`]; panics with the log if it
    /// exits first or the time runs out.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        self.wait_for_log(READY_MARKER, timeout).await;
    }

    /// Waits until the log contains `needle`; panics with the log if the
    /// bridge exits first or the time runs out.
    pub async fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("poll bridge process") {
                // It may have written the line just before exiting.
                if self.log().contains(needle) {
                    return;
                }
                panic!(
                    "uns-kafka exited ({status}) before logging {needle:?}; log {}:\n{}",
                    self.log_path.display(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "uns-kafka did not log {needle:?} within {timeout:?}; log {}:\n{}",
                    self.log_path.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits for the exit; panics with the log if the
    /// bridge is still running after `timeout` (it is killed then).
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout).await
    }

    /// Sends SIGINT (Ctrl-C) and waits for the exit, as [`Bridge::terminate`].
    pub async fn interrupt(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGINT);
        self.wait_exit(timeout).await
    }

    /// Sends `signal` to the process, if it is still running.
    pub fn signal(&mut self, signal: libc::c_int) {
        if !self.is_running() {
            return;
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped (it is
        // still running), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for the process to exit by itself; panics with the log after
    /// `timeout` (and kills it).
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll bridge process") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "uns-kafka still running after {timeout:?}; killed. log {}:\n{}",
                    self.log_path.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `uns-kafka <args>` to completion (for runs that must fail fast, such
/// as configuration errors); panics if it is still running after `timeout`.
pub async fn run_to_exit<I, S>(args: I, envs: &[(&str, &str)], timeout: Duration) -> Exited
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut bridge = Bridge::start(args, envs);
    let status = bridge.wait_exit(timeout).await;
    Exited {
        status,
        log: bridge.log(),
    }
}
