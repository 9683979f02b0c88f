//! A throwaway CA and server certificates, made with the `openssl` CLI.
//!
//! rustls checks that a certificate names the host it connects to, by DNS name or IP address in
//! the subjectAltName; Samba's self-made certificate has neither (labs REPORT §2), so the
//! harness issues its own, naming the loopback address each server listens on.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{program, run};

/// A CA whose certificate a test gives the connector as `ca_file`.
#[derive(Debug, Clone)]
pub struct TestCa {
    pub cert: PathBuf,
    key: PathBuf,
}

impl TestCa {
    /// Makes a CA in `dir`.
    pub fn new(dir: &Path) -> Result<TestCa, String> {
        let cert = dir.join("ca.pem");
        let key = dir.join("ca.key");
        run(Command::new(program("openssl"))
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "3650",
                "-subj",
                "/CN=rollcall test CA",
            ])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        Ok(TestCa { cert, key })
    }

    /// Issues a server certificate for `ips` and `dns` names into `dir`; returns (cert, key).
    pub fn issue(
        &self,
        dir: &Path,
        ips: &[&str],
        dns: &[&str],
    ) -> Result<(PathBuf, PathBuf), String> {
        let key = dir.join("server.key");
        let csr = dir.join("server.csr");
        let cert = dir.join("server.pem");
        let ext = dir.join("server.ext");
        let san: Vec<String> = ips
            .iter()
            .map(|i| format!("IP:{i}"))
            .chain(dns.iter().map(|d| format!("DNS:{d}")))
            .collect();
        std::fs::write(
            &ext,
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .map_err(|e| e.to_string())?;
        let cn = dns.first().or(ips.first()).copied().unwrap_or("localhost");
        run(Command::new(program("openssl"))
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={cn}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        run(Command::new(program("openssl"))
            .args(["x509", "-req", "-days", "3650", "-sha256"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(&self.cert)
            .arg("-CAkey")
            .arg(&self.key)
            .arg("-CAcreateserial")
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert))?;
        Ok((cert, key))
    }
}
