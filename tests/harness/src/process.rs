//! What the servers share: finding their binaries, waiting for a real answer, killing by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether CI asked for every server test to run (`ROLLCALL_REQUIRE_SERVERS=1`).
pub fn require_servers() -> bool {
    std::env::var("ROLLCALL_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Whether every program in `programs` can be run. When one is missing, prints which and how
/// to install it and returns `false` so the test can return early, or panics when
/// `ROLLCALL_REQUIRE_SERVERS=1`: a skipped server test in CI would be a test that cannot fail.
pub fn servers_available(test: &str, programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| find(p).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{test}: skipped: {} not found (scripts/test installs slapd ldap-utils samba samba-ad-dc \
         samba-ad-provision samba-dsdb-modules winbind ldb-tools openssl redis-server \
         chromium chromium-driver)",
        missing.join(", ")
    );
    if require_servers() {
        panic!("{why}; ROLLCALL_REQUIRE_SERVERS=1 makes this a failure");
    }
    eprintln!("{why}");
    false
}

/// The path of `program`, looked up in PATH and the sbin directories (slapd and samba live in
/// /usr/sbin, which is not on every user's PATH).
pub(crate) fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/sbin", "/sbin", "/usr/local/sbin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub(crate) fn program(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| PathBuf::from(name))
}

/// Runs a setup command to completion, with its output in the error.
pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until a simple bind as `dn` answers on `url` (a real LDAP exchange, via ldapsearch),
/// or the deadline passes or the process exits. Polls: the server gives no other signal.
pub(crate) fn wait_for_bind(
    server: &Guarded,
    url: &str,
    dn: &str,
    password: &str,
    ca: Option<&Path>,
    deadline: Duration,
    log: &Path,
) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut cmd = Command::new(program("ldapsearch"));
        cmd.args([
            "-x", "-H", url, "-D", dn, "-w", password, "-b", "", "-s", "base", "-LLL", "1.1",
        ]);
        if let Some(ca) = ca {
            cmd.env("LDAPTLS_CACERT", ca);
        }
        let ok = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if !server.alive() {
            return Err(format!(
                "the server exited before answering a bind on {url}:\n{}",
                tail(log)
            ));
        }
        if start.elapsed() > deadline {
            return Err(format!(
                "no bind answered on {url} within {deadline:?}:\n{}",
                tail(log)
            ));
        }
        // A poll interval, not synchronisation: the loop ends on the server's answer.
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The guard around a server process: a shell that starts it, then waits on its own stdin and
/// kills the server and removes its directory when that closes. The test process holds the
/// other end, so the server dies with the test process even when it is never dropped (a server
/// shared through a `static`) or the test binary is killed.
const GUARD: &str = r#""$@" >"$ROLLCALL_LOG" 2>&1 </dev/null &
p=$!
echo "$p"
cat >/dev/null
kill -9 "$p" 2>/dev/null
wait "$p" 2>/dev/null
if [ -n "$ROLLCALL_DIR" ]; then rm -rf "$ROLLCALL_DIR"; fi
"#;

/// A server started under [`GUARD`].
pub(crate) struct Guarded {
    guard: Child,
    pub pid: u32,
}

impl Guarded {
    /// Starts `program args…` with output to `log`; `remove` is deleted once it has stopped.
    pub fn spawn(
        program: &Path,
        args: &[String],
        log: &Path,
        remove: Option<&Path>,
    ) -> Result<Guarded, String> {
        use std::io::BufRead as _;
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .arg(program)
            .args(args)
            .env("ROLLCALL_LOG", log)
            .env(
                "ROLLCALL_DIR",
                remove.map(Path::as_os_str).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("sh: {e}"))?;
        let mut line = String::new();
        if let Some(out) = guard.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let pid = line
            .trim()
            .parse()
            .map_err(|_| format!("{}: did not start", program.display()))?;
        Ok(Guarded { guard, pid })
    }

    /// Whether the server is still running.
    pub fn alive(&self) -> bool {
        Command::new("kill")
            .args(["-0", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn stop(mut self) {
        drop(self.guard.stdin.take());
        let _ = self.guard.wait();
    }
}

/// A loopback TCP port nobody is listening on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}
