//! A lab Active Directory stand-in to point a pipeline at: OpenLDAP's slapd with the harness's
//! AD-like schema and generated people, on fixed loopback ports, until Ctrl-C.
//!
//! Exists so an ops engineer can try `mappings/examples/active-directory.yaml` (and their own
//! rules) against a real directory server without a domain controller at hand; the same server
//! the tests use, so what the demo shows is what is tested.
//!
//! `cargo run -p rollcall-harness --bin lab-directory -- [--users N] [--port P]
//! [--ldaps-port P] [--ca-out FILE] [--samba]`
//!
//! `--samba` runs Samba's AD DC instead (as root, on its own loopback address and the standard
//! ports), as `scripts/bench-ldap-plan` does to measure a plan against a real DC.

use std::path::PathBuf;

use rollcall_harness::data::{self, Flavor};
use rollcall_harness::{SambaDc, Slapd};

struct Options {
    users: usize,
    port: u16,
    ldaps_port: u16,
    ca_out: PathBuf,
    samba: bool,
}

const USAGE: &str = "usage: lab-directory [--users N] [--port P] [--ldaps-port P] [--ca-out FILE]
  --users N       people to generate (default 300)
  --port P        ldap:// port, StartTLS available (default 6389)
  --ldaps-port P  ldaps:// port (default 6636)
  --ca-out FILE   where to copy the CA certificate that issued the server's (default
                  /tmp/rollcall-lab/ca.pem, as mappings/examples/active-directory.yaml expects)
  --samba         Samba's AD DC instead of slapd (as root; its own loopback address, ports
                  389 and 636; --port and --ldaps-port do not apply)";

fn options() -> Result<Options, String> {
    let mut o = Options {
        users: 300,
        port: 6389,
        ldaps_port: 6636,
        ca_out: PathBuf::from("/tmp/rollcall-lab/ca.pem"),
        samba: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        if flag == "--samba" {
            o.samba = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |what: &str| format!("{flag} {value}: not {what}\n{USAGE}");
        match flag.as_str() {
            "--users" => o.users = value.parse().map_err(|_| number("a number of users"))?,
            "--port" => o.port = value.parse().map_err(|_| number("a port"))?,
            "--ldaps-port" => o.ldaps_port = value.parse().map_err(|_| number("a port"))?,
            "--ca-out" => o.ca_out = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if o.samba {
        return samba(&o).await;
    }
    if !rollcall_harness::servers_available("lab-directory", Slapd::PROGRAMS) {
        std::process::exit(1);
    }
    let directory = data::generate(o.users, Flavor::OpenLdap);
    let server = match Slapd::start_on(directory, Some((o.port, o.ldaps_port))) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "lab-directory: slapd did not start on ports {} and {} (in use?): {e}",
                o.port, o.ldaps_port
            );
            std::process::exit(1);
        }
    };
    if let Some(dir) = o.ca_out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::copy(server.ca_file(), &o.ca_out) {
        eprintln!("lab-directory: cannot write {}: {e}", o.ca_out.display());
        std::process::exit(1);
    }
    let d = server.directory();
    let (billable, sales) = (d.billed(None), d.billed(Some("GRP-Sales")));
    println!(
        "lab directory up: OpenLDAP slapd with {} generated people (pid {})
  url       {}  (or {} with starttls: true)
  ca_file   {}
  bind_dn   {}
  password  {}
  people    {}  (contractors under {})
  groups    {}  (GRP-<department> in All Staff in Billable)
  expect    {billable} enabled people outside Contractors, {sales} of them in GRP-Sales
  change people as the directory's admin:
    ldapmodify -x -H {} -D '{}' -w {}
Ctrl-C stops it and removes its data.",
        d.users.len(),
        server.pid().unwrap_or(0),
        server.ldaps_url(),
        server.url(),
        o.ca_out.display(),
        data::READER_DN,
        data::READER_PASSWORD,
        data::STAFF,
        data::CONTRACTORS,
        data::GROUPS,
        server.url(),
        data::ADMIN_DN,
        data::ADMIN_PASSWORD,
    );
    stopped().await;
    // Dropping the server kills slapd and removes its data directory.
    drop(server);
    let _ = std::fs::remove_file(&o.ca_out);
    println!("lab directory stopped");
}

/// Until Ctrl-C or SIGTERM.
async fn stopped() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("lab-directory: cannot watch for SIGTERM: {e}");
            std::process::exit(1);
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The same generated people in Samba's AD DC, until stopped.
async fn samba(o: &Options) {
    if !rollcall_harness::servers_available("lab-directory --samba", SambaDc::PROGRAMS) {
        std::process::exit(1);
    }
    let dc = match SambaDc::start(o.users) {
        Ok(dc) => dc,
        Err(e) => {
            eprintln!("lab-directory: Samba's DC did not start: {e}");
            std::process::exit(1);
        }
    };
    if let Some(dir) = o.ca_out.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::copy(dc.ca_file(), &o.ca_out) {
        eprintln!("lab-directory: cannot write {}: {e}", o.ca_out.display());
        std::process::exit(1);
    }
    let d = dc.directory();
    println!(
        "lab directory up: Samba AD DC with {} generated people
  url       {}  (or {} with starttls: true)
  ca_file   {}
  bind_dn   {}
  password  {}
  people    {}  (contractors under {})
  groups    {}  (GRP-<department> in All Staff in Billable)
  expect    {} enabled people outside Contractors, {} of them in Billable
Ctrl-C stops it and removes its data.",
        d.users.len(),
        dc.ldaps_url(),
        dc.url(),
        o.ca_out.display(),
        rollcall_harness::samba_admin().0,
        rollcall_harness::samba_admin().1,
        data::STAFF,
        data::CONTRACTORS,
        data::GROUPS,
        d.billed(None),
        d.billed(Some("Billable")),
    );
    stopped().await;
    drop(dc);
    let _ = std::fs::remove_file(&o.ca_out);
    println!("lab directory stopped");
}
