//! OpenLDAP's slapd with an AD-like schema and a generated directory, for volume and breadth.
//!
//! Configured as the labs found necessary (labs REPORT §1): AD's attribute OIDs with usable
//! matching rules, the memberof overlay, and `size.prtotal=unlimited`, without which a non-root
//! account stops at 500 entries even when paging. An extra account, `svc-limited`, keeps a small
//! size limit so tests can see a server stop a read short.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::data::{self, Directory, Flavor};
use crate::process::{Guarded, free_port, program, run, wait_for_bind};
use crate::tls::TestCa;

/// A running slapd on 127.0.0.1, killed and removed on drop.
pub struct Slapd {
    dir: tempfile::TempDir,
    server: Option<Guarded>,
    port: u16,
    tls_port: u16,
    ca: TestCa,
    directory: Directory,
}

impl std::fmt::Debug for Slapd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slapd")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ad-lite.schema")
}

impl Slapd {
    /// The programs [`Slapd::start`] needs, for [`crate::servers_available`].
    pub const PROGRAMS: &'static [&'static str] =
        &["slapd", "slapadd", "ldapsearch", "ldapmodify", "openssl"];

    /// Generates `users` users ([`data::generate`]), loads them with slapadd and starts slapd
    /// with ldap:// and ldaps:// on free loopback ports.
    pub fn start(users: usize) -> Result<Slapd, String> {
        Self::start_with(data::generate(users, Flavor::OpenLdap))
    }

    pub fn start_with(directory: Directory) -> Result<Slapd, String> {
        Self::start_on(directory, None)
    }

    /// As [`Slapd::start_with`], on the given (ldap, ldaps) ports when `ports` is set, for a lab
    /// whose pipeline names a fixed URL; otherwise on free ports.
    pub fn start_on(directory: Directory, ports: Option<(u16, u16)>) -> Result<Slapd, String> {
        let dir = tempfile::Builder::new()
            .prefix("rollcall-slapd-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("data")).map_err(|e| e.to_string())?;
        let ca = TestCa::new(d)?;
        let (cert, key) = ca.issue(d, &["127.0.0.1"], &["localhost"])?;
        let conf = d.join("slapd.conf");
        std::fs::write(&conf, config(d, &cert, &key, &ca.cert)).map_err(|e| e.to_string())?;
        let ldif = d.join("directory.ldif");
        std::fs::write(&ldif, &directory.ldif).map_err(|e| e.to_string())?;
        run(Command::new(program("slapadd"))
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&ldif))?;
        let _ = std::fs::remove_file(&ldif);
        let mut slapd = Slapd {
            dir,
            server: None,
            port: 0,
            tls_port: 0,
            ca,
            directory,
        };
        slapd.launch(ports)?;
        Ok(slapd)
    }

    fn launch(&mut self, fixed: Option<(u16, u16)>) -> Result<(), String> {
        let d = self.dir.path().to_owned();
        let log = d.join("slapd.log");
        // Ports are picked free and then handed to slapd; retry if another process took one
        // in between. Fixed ports get one try: they are either free or not.
        let mut last = String::new();
        let tries = if fixed.is_some() { 1 } else { 5 };
        for _ in 0..tries {
            let (port, tls_port) = fixed.unwrap_or_else(|| (free_port(), free_port()));
            // -d 0: stay in the foreground, so the PID is slapd's own.
            let args: Vec<String> = vec![
                "-d".into(),
                "0".into(),
                "-f".into(),
                d.join("slapd.conf").display().to_string(),
                "-h".into(),
                format!("ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"),
            ];
            let server = Guarded::spawn(&program("slapd"), &args, &log, Some(&d))?;
            match wait_for_bind(
                &server,
                &format!("ldap://127.0.0.1:{port}"),
                data::READER_DN,
                data::READER_PASSWORD,
                None,
                Duration::from_secs(20),
                &log,
            ) {
                Ok(()) => {
                    self.port = port;
                    self.tls_port = tls_port;
                    self.server = Some(server);
                    return Ok(());
                }
                Err(e) => {
                    server.stop();
                    last = e;
                }
            }
        }
        Err(last)
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.tls_port)
    }

    /// The CA that issued the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca.cert
    }

    /// What was loaded, for assertions.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().map(|s| s.pid)
    }

    /// Kills the server now (SIGKILL), as a crash or a dropped network would.
    pub fn kill(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }

    /// Applies an LDIF of changes as the rootdn (`ldapmodify`).
    pub fn modify(&self, ldif: &str) -> Result<(), String> {
        let path = self.dir.path().join("change.ldif");
        std::fs::write(&path, ldif).map_err(|e| e.to_string())?;
        run(Command::new(program("ldapmodify"))
            .args([
                "-x",
                "-H",
                &self.url(),
                "-D",
                data::ADMIN_DN,
                "-w",
                data::ADMIN_PASSWORD,
                "-f",
            ])
            .arg(&path))
        .map(|_| ())
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn config(dir: &Path, cert: &Path, key: &Path, ca: &Path) -> String {
    let d = dir.display();
    format!(
        r#"# Written by rollcall-harness for one test server.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include {schema}
pidfile {d}/slapd.pid
argsfile {d}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
loglevel none
TLSCACertificateFile {ca}
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
# AD's MaxPageSize is 1000 and a paged search gets everything; slapd's default would stop a
# non-root account at 500 entries in total, even when paging.
sizelimit size.soft=1000 size.hard=1000 size.prtotal=unlimited
tool-threads 2

database mdb
suffix "{base}"
rootdn "{admin}"
rootpw {admin_pw}
directory {d}/data
maxsize 4294967296
dbnosync
limits dn.exact="{limited}" size.soft={limit} size.hard={limit} size.prtotal={limit}
index objectClass eq
index cn,sAMAccountName,userPrincipalName,mail eq
index member,memberOf eq
index objectGUID,userAccountControl eq
overlay memberof
memberof-group-oc group
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by users read
  by * none
"#,
        schema = schema().display(),
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
        base = data::BASE,
        admin = data::ADMIN_DN,
        admin_pw = data::ADMIN_PASSWORD,
        limited = data::LIMITED_DN,
        limit = data::LIMITED_SIZE,
    )
}
