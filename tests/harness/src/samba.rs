//! Samba's AD domain controller, the real-AD conformance target.
//!
//! Provisioning takes ~4 s and loading 1,000 users ~2 s more (labs REPORT §2), so one template
//! is provisioned and loaded per machine (under the system temp dir, keyed by the data it holds)
//! and each [`SambaDc`] is a copy of it (~0.2 s) with its own loopback address: Samba's LDAP
//! ports are fixed at 389/636, so parallel DCs listen on 127.0.0.2, .3, …. Samba must run as
//! root. Simple binds are allowed without TLS (`ldap server require strong auth = no`) so the
//! plain-text refusal is rollcall's own, and TLS uses a certificate naming the DC's address.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::data::{self, Directory, Flavor};
use crate::process::{Guarded, program, run, wait_for_bind};
use crate::tls::TestCa;

pub const ADMIN_UPN: &str = "Administrator@example.test";
pub const ADMIN_PASSWORD: &str = "Admin123!Passw0rd";
/// Bumped whenever the template's contents change, so an old cached one is not reused.
const TEMPLATE_VERSION: u32 = 1;

/// A running Samba AD DC on its own loopback address, killed and removed on drop.
pub struct SambaDc {
    dir: tempfile::TempDir,
    server: Option<Guarded>,
    ip: String,
    ca: TestCa,
    directory: Directory,
}

impl std::fmt::Debug for SambaDc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SambaDc").field("ip", &self.ip).finish()
    }
}

impl SambaDc {
    pub const PROGRAMS: &'static [&'static str] =
        &["samba", "samba-tool", "ldbadd", "ldapsearch", "openssl"];

    /// Whether this process may run a DC (it binds port 389).
    pub fn can_run() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// A DC holding [`data::generate`]`(users, Samba)`, cloned from the cached template.
    pub fn start(users: usize) -> Result<SambaDc, String> {
        if !Self::can_run() {
            return Err("Samba's DC must run as root (it listens on port 389)".to_owned());
        }
        let directory = data::generate(users, Flavor::Samba);
        let template = template(users, &directory)?;
        let dir = tempfile::Builder::new()
            .prefix("rollcall-samba-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path().join("dc");
        run(Command::new("cp").arg("-a").arg(&template).arg(&d))?;
        let ip = free_ip()?;
        let conf_path = d.join("etc/smb.conf");
        let conf = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
        let conf: String = conf
            .replace(&template.display().to_string(), &d.display().to_string())
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("interfaces =") {
                    format!("\tinterfaces = {ip}/8\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let ca = TestCa::new(dir.path())?;
        let (cert, key) = ca.issue(dir.path(), &[&ip], &["dc1.example.test"])?;
        let tls = d.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| e.to_string())?;
        std::fs::copy(&cert, tls.join("cert.pem")).map_err(|e| e.to_string())?;
        std::fs::copy(&key, tls.join("key.pem")).map_err(|e| e.to_string())?;
        std::fs::copy(&ca.cert, tls.join("ca.pem")).map_err(|e| e.to_string())?;
        let log = dir.path().join("samba.log");
        // -i: foreground, one process per -M single, so the PID is the DC's own.
        let args: Vec<String> = vec![
            "-i".into(),
            "-M".into(),
            "single".into(),
            "-s".into(),
            conf_path.display().to_string(),
        ];
        let server = Guarded::spawn(&program("samba"), &args, &log, Some(dir.path()))?;
        let url = format!("ldap://{ip}");
        if let Err(e) = wait_for_bind(
            &server,
            &url,
            ADMIN_UPN,
            ADMIN_PASSWORD,
            None,
            Duration::from_secs(60),
            &log,
        ) {
            server.stop();
            return Err(e);
        }
        Ok(SambaDc {
            dir,
            server: Some(server),
            ip,
            ca,
            directory,
        })
    }

    pub fn url(&self) -> String {
        format!("ldap://{}", self.ip)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.ip)
    }

    pub fn ip(&self) -> &str {
        &self.ip
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca.cert
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn smb_conf(&self) -> PathBuf {
        self.dir.path().join("dc/etc/smb.conf")
    }

    /// Runs `samba-tool` against this DC's database (`samba-tool user disable u000001`).
    pub fn samba_tool(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new(program("samba-tool"))
            .args(args)
            .arg("-s")
            .arg(self.smb_conf()))
    }

    /// Applies an LDIF of changes over LDAP as Administrator.
    pub fn modify(&self, ldif: &str) -> Result<(), String> {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).map_err(|e| e.to_string())?;
        run(Command::new(program("ldapmodify"))
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                ADMIN_UPN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
            ])
            .arg(&path))
        .map(|_| ())
    }

    /// Kills the DC now.
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback address no DC listens on yet: 389 is free there.
fn free_ip() -> Result<String, String> {
    for last in 2..250u8 {
        let ip = format!("127.0.0.{last}");
        if std::net::TcpListener::bind((ip.as_str(), 389)).is_ok() {
            return Ok(ip);
        }
    }
    Err("no loopback address 127.0.0.2–249 has port 389 free".to_owned())
}

/// The provisioned, loaded, stopped DC every clone starts from; made once per machine.
fn template(users: usize, directory: &Directory) -> Result<PathBuf, String> {
    let root = std::env::temp_dir().join(format!(
        "rollcall-samba-template-v{TEMPLATE_VERSION}-{users}"
    ));
    if root.join("ready").exists() {
        return Ok(root);
    }
    // Built beside and renamed into place, so a half-made template is never used.
    let work = std::env::temp_dir().join(format!(
        "rollcall-samba-template-build-{}-{}",
        std::process::id(),
        users
    ));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let empty = work.join("empty.conf");
    std::fs::write(&empty, "").map_err(|e| e.to_string())?;
    run(Command::new(program("samba-tool"))
        .args(["domain", "provision", "-s"])
        .arg(&empty)
        .arg(format!("--targetdir={}", work.display()))
        .args([
            "--realm=EXAMPLE.TEST",
            "--domain=EXAMPLE",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            &format!("--adminpass={ADMIN_PASSWORD}"),
            "--host-name=dc1",
            "--host-ip=127.0.0.2",
            "--option=interfaces = 127.0.0.2/8",
            "--option=bind interfaces only = yes",
        ]))?;
    let conf_path = work.join("etc/smb.conf");
    let conf = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
    let w = work.display();
    let extra = format!(
        "\tpid directory = {w}/run\n\tldap server require strong auth = no\n\tserver services = ldap\n\
         \tlog file = {w}/log.%m\n\tlog level = 1\n\ttls enabled = yes\n\ttls keyfile = {w}/tls/key.pem\n\
         \ttls certfile = {w}/tls/cert.pem\n\ttls cafile = {w}/tls/ca.pem\n"
    );
    let conf: String = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with("server services"))
        .map(|l| {
            if l.trim() == "[global]" {
                format!("{l}\n{extra}")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(work.join("run")).map_err(|e| e.to_string())?;
    let ldif = work.join("directory.ldif");
    // Samba's DNs are under the domain; the generator writes them with the same base.
    std::fs::write(&ldif, &directory.ldif).map_err(|e| e.to_string())?;
    run(Command::new(program("ldbadd"))
        .arg("-H")
        .arg(work.join("private/sam.ldb"))
        .arg(&ldif))?;
    let _ = std::fs::remove_file(&ldif);
    // The paths inside the template name `work`; clones replace them with their own.
    let conf = std::fs::read_to_string(&conf_path).map_err(|e| e.to_string())?;
    std::fs::write(
        &conf_path,
        conf.replace(&w.to_string(), &root.display().to_string()),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(work.join("ready"), "").map_err(|e| e.to_string())?;
    match std::fs::rename(&work, &root) {
        Ok(()) => Ok(root),
        // Another test process made it first: use theirs.
        Err(_) if root.join("ready").exists() => {
            let _ = std::fs::remove_dir_all(&work);
            Ok(root)
        }
        Err(e) => Err(format!("{}: {e}", root.display())),
    }
}
