//! A generated AD-like directory, and what every test should expect to read from it.
//!
//! Tests assert exact numbers (people, disabled, expired, members of a nested group), so the
//! generator returns, beside the LDIF, the facts it wrote: a test compares what rollcall read
//! with what was put there, never with what the same code computed.

use std::fmt::Write as _;

use base64::Engine as _;

pub const BASE: &str = "DC=example,DC=test";
pub const REALM: &str = "example.test";
/// OpenLDAP's rootdn, with every right; used to change data during a test.
pub const ADMIN_DN: &str = "cn=admin,DC=example,DC=test";
pub const ADMIN_PASSWORD: &str = "secret";
/// A read-only account, as a pipeline would bind.
pub const READER_DN: &str = "CN=svc-reader,OU=Service,DC=example,DC=test";
pub const READER_PASSWORD: &str = "ReaderPass1!";
/// On slapd: an account whose searches stop after [`LIMITED_SIZE`] entries in total.
pub const LIMITED_DN: &str = "CN=svc-limited,OU=Service,DC=example,DC=test";
pub const LIMITED_SIZE: usize = 50;
pub const STAFF: &str = "OU=Staff,DC=example,DC=test";
pub const GROUPS: &str = "OU=Groups,DC=example,DC=test";
/// Under Staff, for `exclude_ous` tests.
pub const CONTRACTORS: &str = "OU=Contractors,OU=Staff,DC=example,DC=test";
/// Microsoft's published example GUID as stored (user 1 on slapd): .NET's
/// `Guid.ToByteArray` of 35918bc9-196d-40ea-9779-889d79b753f0.
pub const KNOWN_GUID_BYTES: [u8; 16] = [
    0xC9, 0x8B, 0x91, 0x35, 0x6D, 0x19, 0xEA, 0x40, 0x97, 0x79, 0x88, 0x9D, 0x79, 0xB7, 0x53, 0xF0,
];
pub const KNOWN_GUID: &str = "35918bc9-196d-40ea-9779-889d79b753f0";

const DEPTS: [&str; 5] = ["Engineering", "Sales", "Support", "Finance", "HR"];
const FIRST: [&str; 10] = [
    "Alice", "Bob", "Carol", "Dave", "Zoë", "Frank", "Grace", "Heidi", "Ivan", "Judy",
];
const LAST: [&str; 5] = ["Smith", "Müller", "Garcia", "O'Brien", "Nguyễn"];
/// 2020-01-01T00:00:00Z as a Windows FILETIME.
const EXPIRED_2020: i64 = 132_223_104_000_000_000;
/// 2100-01-01T00:00:00Z as a Windows FILETIME.
const EXPIRES_2100: i64 = 157_469_184_000_000_000;

/// Which server the LDIF is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// For `slapadd` with the harness's AD-like schema: the base entry, objectGUID, memberOf
    /// (slapadd bypasses the memberof overlay) and entryUUID-free entries.
    OpenLdap,
    /// For `ldbadd` into a provisioned Samba DC, which makes GUIDs, SIDs and memberOf itself.
    Samba,
}

/// One generated person and what a correct read reports for them.
#[derive(Debug, Clone)]
pub struct User {
    pub n: usize,
    pub dn: String,
    pub sam: String,
    pub display_name: String,
    pub mail: Option<String>,
    pub enabled: bool,
    /// Group names, nesting included.
    pub groups: Vec<String>,
    /// The canonical GUID text, where the generator chose the GUID (slapd).
    pub guid: Option<String>,
}

/// The generated directory.
#[derive(Debug, Clone)]
pub struct Directory {
    pub ldif: String,
    pub users: Vec<User>,
    /// The one machine account (excluded by the default filter).
    pub computers: usize,
}

impl Directory {
    pub fn enabled(&self) -> usize {
        self.users.iter().filter(|u| u.enabled).count()
    }

    /// Users outside [`CONTRACTORS`].
    pub fn outside_contractors(&self) -> usize {
        self.users
            .iter()
            .filter(|u| !u.dn.ends_with(CONTRACTORS))
            .count()
    }

    /// The people a pipeline bills when it counts enabled accounts and leaves [`CONTRACTORS`]
    /// out, in `group` (nesting included) when one is named.
    pub fn billed(&self, group: Option<&str>) -> usize {
        self.users
            .iter()
            .filter(|u| u.enabled && !u.dn.ends_with(CONTRACTORS))
            .filter(|u| group.is_none_or(|g| u.groups.iter().any(|x| x == g)))
            .count()
    }

    pub fn in_group(&self, group: &str) -> usize {
        self.users
            .iter()
            .filter(|u| u.groups.iter().any(|g| g == group))
            .count()
    }

    pub fn user(&self, sam: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.sam == sam)
            .unwrap_or_else(|| panic!("no generated user {sam}"))
    }
}

/// A tiny deterministic generator: the same directory on every run and server.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn guid(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        b
    }
}

/// AD's text form of a stored GUID, written independently of rollcall's decoder.
pub fn guid_text(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// One LDIF line, base64 when RFC 2849 requires it (non-ASCII names).
fn line(out: &mut String, name: &str, value: &str) {
    let safe = value.is_ascii()
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ')
        && !value.contains(['\n', '\r', '\0']);
    if safe {
        let _ = writeln!(out, "{name}: {value}");
    } else {
        let _ = writeln!(
            out,
            "{name}:: {}",
            base64::engine::general_purpose::STANDARD.encode(value)
        );
    }
}

fn bin(out: &mut String, name: &str, value: &[u8]) {
    let _ = writeln!(
        out,
        "{name}:: {}",
        base64::engine::general_purpose::STANDARD.encode(value)
    );
}

/// `{SSHA}` of a password with a fixed salt, so slapd accepts the bind.
fn ssha(password: &str) -> String {
    // SHA-1 in a dozen lines keeps the harness free of a crypto dependency.
    fn sha1(data: &[u8]) -> [u8; 20] {
        let mut h: [u32; 5] = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0];
        let mut msg = data.to_vec();
        let bits = (data.len() as u64) * 8;
        msg.push(0x80);
        while msg.len() % 64 != 56 {
            msg.push(0);
        }
        msg.extend_from_slice(&bits.to_be_bytes());
        for chunk in msg.chunks(64) {
            let mut w = [0u32; 80];
            for i in 0..16 {
                w[i] = u32::from_be_bytes([
                    chunk[4 * i],
                    chunk[4 * i + 1],
                    chunk[4 * i + 2],
                    chunk[4 * i + 3],
                ]);
            }
            for i in 16..80 {
                w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
            }
            let [mut a, mut b, mut c, mut d, mut e] = h;
            for (i, wi) in w.iter().enumerate() {
                let (f, k) = match i {
                    0..=19 => ((b & c) | (!b & d), 0x5A827999),
                    20..=39 => (b ^ c ^ d, 0x6ED9EBA1),
                    40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1BBCDC),
                    _ => (b ^ c ^ d, 0xCA62C1D6),
                };
                let t = a
                    .rotate_left(5)
                    .wrapping_add(f)
                    .wrapping_add(e)
                    .wrapping_add(k)
                    .wrapping_add(*wi);
                e = d;
                d = c;
                c = b.rotate_left(30);
                b = a;
                a = t;
            }
            for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
                *x = x.wrapping_add(y);
            }
        }
        let mut out = [0u8; 20];
        for (i, v) in h.iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
        out
    }
    let salt = b"rollcall";
    let mut input = password.as_bytes().to_vec();
    input.extend_from_slice(salt);
    let mut digest = sha1(&input).to_vec();
    digest.extend_from_slice(salt);
    format!(
        "{{SSHA}}{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// Generates `n` users (n ≥ 50 gives every kind of account at least once).
///
/// - users spread over five department OUs under [`STAFF`], every 20th in [`CONTRACTORS`];
/// - every 50th disabled (userAccountControl 514), every 40th otherwise expired in 2020, every
///   45th expiring in 2100 (still enabled); every 30th without mail; non-ASCII names;
/// - groups `GRP-<dept>` (direct), `All Staff` (holds the department groups), `Billable` (holds
///   `All Staff` and the first department's group, a diamond): three levels of nesting; on slapd
///   also `Cycle-A` ⇄ `Cycle-B`, a cycle holding user 1;
/// - one computer account (not a person) and, on slapd, the service accounts.
pub fn generate(n: usize, flavor: Flavor) -> Directory {
    let ad = flavor == Flavor::OpenLdap;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut out = String::with_capacity(n * 700);
    if ad {
        out.push_str("dn: DC=example,DC=test\nobjectClass: top\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n\n");
    }
    let mut ous = vec![
        STAFF.to_owned(),
        GROUPS.to_owned(),
        format!("OU=Service,{BASE}"),
        CONTRACTORS.to_owned(),
    ];
    ous.extend(DEPTS.iter().map(|d| format!("OU={d},{STAFF}")));
    for dn in &ous {
        let ou = &dn[3..dn.find(',').unwrap_or(dn.len())];
        let _ = writeln!(
            out,
            "dn: {dn}\nobjectClass: top\nobjectClass: organizationalUnit\nou: {ou}\n"
        );
    }
    if ad {
        for (dn, cn, pw) in [
            (READER_DN, "svc-reader", READER_PASSWORD),
            (LIMITED_DN, "svc-limited", READER_PASSWORD),
        ] {
            let _ = writeln!(
                out,
                "dn: {dn}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\ncn: {cn}\nsn: {cn}\nsAMAccountName: {cn}\nuserAccountControl: 66048\nuserPassword: {}\n",
                ssha(pw)
            );
        }
    }
    let dept_group = |d: &str| format!("CN=GRP-{d},{GROUPS}");
    let all_staff = format!("CN=All Staff,{GROUPS}");
    let billable = format!("CN=Billable,{GROUPS}");
    let cycle_a = format!("CN=Cycle-A,{GROUPS}");
    let cycle_b = format!("CN=Cycle-B,{GROUPS}");
    let mut users = Vec::with_capacity(n);
    let mut dept_members: Vec<Vec<String>> = vec![Vec::new(); DEPTS.len()];
    for i in 1..=n {
        let d = i % DEPTS.len();
        let dept = DEPTS[d];
        let (first, last) = (FIRST[i % FIRST.len()], LAST[(i / FIRST.len()) % LAST.len()]);
        let sam = format!("u{i:06}");
        let cn = format!("{first} {last} {sam}");
        let ou = if i % 20 == 0 {
            CONTRACTORS.to_owned()
        } else {
            format!("OU={dept},{STAFF}")
        };
        let dn = format!("CN={cn},{ou}");
        let disabled = i % 50 == 0;
        let expired = !disabled && i % 40 == 0;
        let expires = if expired {
            EXPIRED_2020
        } else if i % 45 == 0 {
            EXPIRES_2100
        } else {
            0x7FFF_FFFF_FFFF_FFFF
        };
        let mail = (i % 30 != 0).then(|| format!("{sam}@{REALM}"));
        let uac = if disabled {
            514
        } else if i % 7 == 0 {
            66048
        } else {
            512
        };
        let mut e = String::new();
        line(&mut e, "dn", &dn);
        e.push_str("objectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\n");
        line(&mut e, "cn", &cn);
        line(&mut e, "sn", last);
        line(&mut e, "givenName", first);
        line(&mut e, "displayName", &format!("{first} {last}"));
        let _ = writeln!(e, "sAMAccountName: {sam}\nuserPrincipalName: {sam}@{REALM}");
        if let Some(m) = &mail {
            let _ = writeln!(e, "mail: {m}");
        }
        let _ = writeln!(
            e,
            "userAccountControl: {uac}\naccountExpires: {expires}\ntitle: Title {}\ntelephoneNumber: +1 555 {i:04}",
            i % 13
        );
        line(&mut e, "department", dept);
        let mut groups = vec![
            format!("GRP-{dept}"),
            "All Staff".to_owned(),
            "Billable".to_owned(),
        ];
        if ad && i == 1 {
            groups.extend(["Cycle-A".to_owned(), "Cycle-B".to_owned()]);
        }
        let mut guid = None;
        if ad {
            let bytes = if i == 1 { KNOWN_GUID_BYTES } else { rng.guid() };
            bin(&mut e, "objectGUID", &bytes);
            guid = Some(guid_text(&bytes));
            let _ = writeln!(
                e,
                "objectCategory: CN=Person,CN=Schema,CN=Configuration,{BASE}\nwhenCreated: 20240102030405.0Z\nwhenChanged: 20240102030405.0Z"
            );
            line(&mut e, "memberOf", &dept_group(dept));
            if i == 1 {
                line(&mut e, "memberOf", &cycle_a);
            }
            let _ = writeln!(e, "userPassword: {}", ssha("Passw0rd!2024"));
        }
        out.push_str(&e);
        out.push('\n');
        dept_members[d].push(dn.clone());
        groups.sort();
        users.push(User {
            n: i,
            dn,
            sam,
            display_name: format!("{first} {last}"),
            mail,
            enabled: !disabled && !expired,
            groups,
            guid,
        });
    }
    // One workstation: objectClass user too, in AD, but not a person.
    let ws = format!("CN=WS0001,{STAFF}");
    let _ = write!(
        out,
        "dn: {ws}\nobjectClass: top\nobjectClass: person\nobjectClass: organizationalPerson\nobjectClass: user\nobjectClass: computer\ncn: WS0001\nsn: WS0001\nsAMAccountName: WS0001$\nuserAccountControl: 4096\n"
    );
    if ad {
        bin(&mut out, "objectGUID", &rng.guid());
    }
    out.push('\n');

    let mut group = |out: &mut String, dn: &str, members: &[String], member_of: &[&str]| {
        let cn = &dn[3..dn.find(',').unwrap_or(dn.len())];
        line(out, "dn", dn);
        out.push_str("objectClass: top\nobjectClass: group\n");
        line(out, "cn", cn);
        line(out, "sAMAccountName", &cn.replace(' ', "_"));
        out.push_str("groupType: -2147483646\n");
        if ad {
            bin(out, "objectGUID", &rng.guid());
            for m in member_of {
                line(out, "memberOf", m);
            }
        }
        for m in members {
            line(out, "member", m);
        }
        out.push('\n');
    };
    // The first department's group is also in `Billable` directly: a diamond, reached by two
    // paths, which must count its members once.
    for (d, dept) in DEPTS.iter().enumerate() {
        let parents: &[&str] = if d == 0 {
            &[&all_staff, &billable]
        } else {
            &[&all_staff]
        };
        group(&mut out, &dept_group(dept), &dept_members[d], parents);
    }
    let dept_dns: Vec<String> = DEPTS.iter().map(|d| dept_group(d)).collect();
    group(&mut out, &all_staff, &dept_dns, &[&billable]);
    group(
        &mut out,
        &billable,
        &[all_staff.clone(), dept_group(DEPTS[0])],
        &[],
    );
    if ad {
        let u1 = users
            .first()
            .map(|u| u.dn.clone())
            .into_iter()
            .collect::<Vec<_>>();
        group(
            &mut out,
            &cycle_a,
            &[u1, vec![cycle_b.clone()]].concat(),
            &[&cycle_b],
        );
        group(
            &mut out,
            &cycle_b,
            std::slice::from_ref(&cycle_a),
            &[&cycle_a],
        );
    }
    Directory {
        ldif: out,
        users,
        computers: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_known_guid_prints_as_microsoft_documents_it() {
        assert_eq!(guid_text(&KNOWN_GUID_BYTES), KNOWN_GUID);
    }

    #[test]
    fn ssha_matches_a_known_vector() {
        // SHA-1("abc") = a9993e36…; checked through the SSHA framing.
        let s = ssha("");
        assert!(s.starts_with("{SSHA}"));
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&s[6..])
            .expect("base64");
        assert_eq!(raw.len(), 28);
    }

    #[test]
    fn every_kind_of_account_is_generated() {
        let d = generate(100, Flavor::OpenLdap);
        assert_eq!(d.users.len(), 100);
        assert!(d.users.iter().any(|u| !u.enabled));
        assert!(d.users.iter().any(|u| u.mail.is_none()));
        assert!(d.users.iter().any(|u| !u.display_name.is_ascii()));
        assert!(d.ldif.contains("dn:: "), "non-ASCII DNs are base64");
        assert_eq!(d.in_group("Billable"), 100);
    }
}
