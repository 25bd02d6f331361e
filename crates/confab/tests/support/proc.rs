//! A child process whose output goes to a log file, stopped on drop (SIGTERM, then SIGKILL) and
//! whose log is printed when the test panics.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running helper process (a phone, SIPp, a server in a namespace).
pub struct Proc {
    child: Option<Child>,
    pub name: String,
    pub log: PathBuf,
    /// Printed on panic after the log (e.g. other files of the same program).
    pub extra_logs: Vec<PathBuf>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout + stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Self {
        let out = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("dup log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        Self {
            child: Some(child),
            name: name.into(),
            log: log.into(),
            extra_logs: Vec::new(),
            status: None,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The log so far.
    pub fn output(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Its exit status, once it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(s)) = child.try_wait() {
                    self.status = Some(s);
                }
            }
        }
        self.status
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait(&mut self, within: Duration) -> Option<ExitStatus> {
        super::poll(within, || self.try_status())
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.status.is_none() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill(2) on our own child, which has not been reaped yet (so the pid
                // cannot have been reused).
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let end = Instant::now() + grace;
            while Instant::now() < end {
                if let Ok(Some(s)) = child.try_wait() {
                    self.status = Some(s);
                    return;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            let _ = child.kill();
        }
        if let Ok(s) = child.wait() {
            self.status.get_or_insert(s);
        }
    }

    /// SIGKILL at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if let Ok(s) = child.wait() {
                self.status.get_or_insert(s);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!(
                "===== {} output ({}) =====\n{}\n===== end of {} =====",
                self.name,
                self.log.display(),
                super::tail(&self.output(), 60_000),
                self.name
            );
            for extra in &self.extra_logs {
                let text = fs::read(extra)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|_| "<absent>".into());
                eprintln!(
                    "===== {} ({}) =====\n{}\n===== end =====",
                    self.name,
                    extra.display(),
                    super::tail(&text, 30_000)
                );
            }
        }
    }
}
