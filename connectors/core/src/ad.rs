//! Active Directory value formats, shared by every source that reads AD data (LDAP, LDIF exports).
//!
//! AD stores several values in forms no other directory uses: a GUID whose first three groups are
//! little-endian, a bit field for account state, timestamps counted in 100 ns ticks since 1601.
//! Every reader of AD data (an LDIF or CSV export now, a live LDAP connection later) must decode
//! them identically, or the same person would get two ids and two states depending on how the
//! directory was read. So the decoding lives here once.

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

/// The canonical text form of a 16-byte `objectGUID`: lowercase, hyphenated, with the first three
/// groups byte-swapped, as AD's own tools print it (`Get-ADUser`, ADSI Edit).
///
/// AD stores a GUID as Microsoft's `GUID` struct (Data1 `u32`, Data2 and Data3 `u16`, all
/// little-endian, then 8 bytes in order), so reading the raw bytes in order would give a string
/// that matches nothing an administrator sees. Returns `None` unless exactly 16 bytes are given.
pub fn guid_to_string(bytes: &[u8]) -> Option<String> {
    let b: &[u8; 16] = bytes.try_into().ok()?;
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let mut out = String::with_capacity(36);
    for (n, &i) in order.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(&mut out, b[i]);
    }
    Some(out)
}

/// A GUID written as text (`{3F2504E0-4F89-11D3-9A0C-0305E82C3301}`, any case, braces optional)
/// in the canonical form [`guid_to_string`] produces, so an id read from a CSV export matches the
/// one read over LDAP. `None` when the text is not a GUID.
pub fn canonical_guid(text: &str) -> Option<String> {
    let t = text.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(t);
    let bytes = t.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    for (i, &c) in bytes.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) {
            c == b'-'
        } else {
            c.is_ascii_hexdigit()
        };
        if !ok {
            return None;
        }
    }
    Some(t.to_ascii_lowercase())
}

/// The `S-1-5-21-…` form of a binary `objectSid`, as AD's tools print it. `None` when the bytes
/// are not a well-formed SID.
pub fn sid_to_string(bytes: &[u8]) -> Option<String> {
    let (&revision, rest) = bytes.split_first()?;
    let (&count, rest) = rest.split_first()?;
    let authority = rest.get(..6)?;
    let subs = rest.get(6..)?;
    if subs.len() != usize::from(count) * 4 {
        return None;
    }
    // The identifier authority is a 48-bit big-endian number, unlike the sub-authorities.
    let authority = authority
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let mut out = format!("S-{revision}-{authority}");
    for sub in subs.chunks_exact(4) {
        let v = u32::from_le_bytes([sub[0], sub[1], sub[2], sub[3]]);
        out.push('-');
        out.push_str(&v.to_string());
    }
    Some(out)
}

fn push_hex(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0xf)]));
}

/// AD's `userAccountControl` bit field: whether an account is disabled, a computer, and so on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UserAccountControl(pub u32);

impl UserAccountControl {
    pub const SCRIPT: u32 = 0x1;
    pub const ACCOUNTDISABLE: u32 = 0x2;
    pub const HOMEDIR_REQUIRED: u32 = 0x8;
    pub const LOCKOUT: u32 = 0x10;
    pub const PASSWD_NOTREQD: u32 = 0x20;
    pub const PASSWD_CANT_CHANGE: u32 = 0x40;
    pub const ENCRYPTED_TEXT_PWD_ALLOWED: u32 = 0x80;
    pub const TEMP_DUPLICATE_ACCOUNT: u32 = 0x100;
    pub const NORMAL_ACCOUNT: u32 = 0x200;
    pub const INTERDOMAIN_TRUST_ACCOUNT: u32 = 0x800;
    pub const WORKSTATION_TRUST_ACCOUNT: u32 = 0x1000;
    pub const SERVER_TRUST_ACCOUNT: u32 = 0x2000;
    pub const DONT_EXPIRE_PASSWORD: u32 = 0x10000;
    pub const MNS_LOGON_ACCOUNT: u32 = 0x20000;
    pub const SMARTCARD_REQUIRED: u32 = 0x40000;
    pub const TRUSTED_FOR_DELEGATION: u32 = 0x80000;
    pub const NOT_DELEGATED: u32 = 0x100000;
    pub const USE_DES_KEY_ONLY: u32 = 0x200000;
    pub const DONT_REQ_PREAUTH: u32 = 0x400000;
    pub const PASSWORD_EXPIRED: u32 = 0x800000;
    pub const TRUSTED_TO_AUTH_FOR_DELEGATION: u32 = 0x1000000;
    pub const PARTIAL_SECRETS_ACCOUNT: u32 = 0x4000000;

    const NAMES: &'static [(u32, &'static str)] = &[
        (Self::SCRIPT, "SCRIPT"),
        (Self::ACCOUNTDISABLE, "ACCOUNTDISABLE"),
        (Self::HOMEDIR_REQUIRED, "HOMEDIR_REQUIRED"),
        (Self::LOCKOUT, "LOCKOUT"),
        (Self::PASSWD_NOTREQD, "PASSWD_NOTREQD"),
        (Self::PASSWD_CANT_CHANGE, "PASSWD_CANT_CHANGE"),
        (
            Self::ENCRYPTED_TEXT_PWD_ALLOWED,
            "ENCRYPTED_TEXT_PWD_ALLOWED",
        ),
        (Self::TEMP_DUPLICATE_ACCOUNT, "TEMP_DUPLICATE_ACCOUNT"),
        (Self::NORMAL_ACCOUNT, "NORMAL_ACCOUNT"),
        (Self::INTERDOMAIN_TRUST_ACCOUNT, "INTERDOMAIN_TRUST_ACCOUNT"),
        (Self::WORKSTATION_TRUST_ACCOUNT, "WORKSTATION_TRUST_ACCOUNT"),
        (Self::SERVER_TRUST_ACCOUNT, "SERVER_TRUST_ACCOUNT"),
        (Self::DONT_EXPIRE_PASSWORD, "DONT_EXPIRE_PASSWORD"),
        (Self::MNS_LOGON_ACCOUNT, "MNS_LOGON_ACCOUNT"),
        (Self::SMARTCARD_REQUIRED, "SMARTCARD_REQUIRED"),
        (Self::TRUSTED_FOR_DELEGATION, "TRUSTED_FOR_DELEGATION"),
        (Self::NOT_DELEGATED, "NOT_DELEGATED"),
        (Self::USE_DES_KEY_ONLY, "USE_DES_KEY_ONLY"),
        (Self::DONT_REQ_PREAUTH, "DONT_REQ_PREAUTH"),
        (Self::PASSWORD_EXPIRED, "PASSWORD_EXPIRED"),
        (
            Self::TRUSTED_TO_AUTH_FOR_DELEGATION,
            "TRUSTED_TO_AUTH_FOR_DELEGATION",
        ),
        (Self::PARTIAL_SECRETS_ACCOUNT, "PARTIAL_SECRETS_ACCOUNT"),
    ];

    /// Reads the decimal text AD and its exports carry. The attribute's syntax is a signed 32-bit
    /// integer, so a value with the top bit set may be written negative; both forms are accepted.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        t.parse::<u32>()
            .ok()
            // Reinterpreting the bits is the point: AD's signed form carries the same flags.
            .or_else(|| t.parse::<i32>().ok().map(|v| v as u32))
            .map(UserAccountControl)
    }

    pub fn contains(self, flag: u32) -> bool {
        self.0 & flag == flag
    }

    /// AD refuses every logon to a disabled account; it is a leaver until re-enabled.
    pub fn is_disabled(self) -> bool {
        self.contains(Self::ACCOUNTDISABLE)
    }

    /// A computer or trust account: it has `objectClass: user` in AD but is not a person.
    pub fn is_machine(self) -> bool {
        self.0
            & (Self::WORKSTATION_TRUST_ACCOUNT
                | Self::SERVER_TRUST_ACCOUNT
                | Self::INTERDOMAIN_TRUST_ACCOUNT)
            != 0
    }

    /// The names of the set flags, lowest bit first; bits AD does not define are left out.
    pub fn flag_names(self) -> Vec<&'static str> {
        Self::NAMES
            .iter()
            .filter(|(bit, _)| self.contains(*bit))
            .map(|(_, name)| *name)
            .collect()
    }
}

/// Seconds between the FILETIME epoch (1601-01-01) and the Unix epoch (1970-01-01).
const FILETIME_UNIX_OFFSET_SECS: i64 = 11_644_473_600;
const FILETIME_TICKS_PER_SEC: i64 = 10_000_000;

/// A Windows FILETIME (100 ns ticks since 1601-01-01 UTC) as a UTC instant. `None` for a
/// negative value or one beyond what `chrono` represents.
pub fn filetime_to_datetime(filetime: i64) -> Option<DateTime<Utc>> {
    if filetime < 0 {
        return None;
    }
    let secs = filetime / FILETIME_TICKS_PER_SEC - FILETIME_UNIX_OFFSET_SECS;
    let nanos = u32::try_from((filetime % FILETIME_TICKS_PER_SEC) * 100).ok()?;
    DateTime::from_timestamp(secs, nanos)
}

/// When an account expires, from its `accountExpires` FILETIME; `None` when it never does.
///
/// AD writes "never" two ways: 0 for an account that never had an expiry, and
/// 0x7FFFFFFFFFFFFFFF once one was set and cleared (Microsoft's accountExpires documentation).
pub fn account_expires(filetime: i64) -> Option<DateTime<Utc>> {
    if filetime == 0 || filetime == i64::MAX {
        return None;
    }
    filetime_to_datetime(filetime)
}

/// An LDAP GeneralizedTime (`whenCreated: 20240101120000.0Z`) as a UTC instant.
///
/// Accepts what RFC 4517 allows: minutes and seconds optional, a fraction after `.` or `,`, and
/// `Z` or a `+hhmm`/`-hhmm` offset. AD always writes seconds, `.0` and `Z`; OpenLDAP writes no
/// fraction. A value without a zone is local time on the server, which we cannot know: `None`.
pub fn generalized_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if !matches!(digits, 10 | 12 | 14) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> { s.get(range)?.parse().ok() };
    let year = i32::try_from(num(0..4)?).ok()?;
    let (month, day, hour) = (num(4..6)?, num(6..8)?, num(8..10)?);
    let minute = if digits >= 12 { num(10..12)? } else { 0 };
    let second = if digits >= 14 { num(12..14)? } else { 0 };

    let mut rest = &s[digits..];
    let mut nanos: i64 = 0;
    if let Some(frac) = rest.strip_prefix('.').or_else(|| rest.strip_prefix(',')) {
        let len = frac.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        // A fraction applies to the last unit written: of a second, a minute or an hour.
        let unit_nanos: i64 = match digits {
            14 => 1_000_000_000,
            12 => 60_000_000_000,
            _ => 3_600_000_000_000,
        };
        let mut scale = unit_nanos;
        for d in frac[..len].bytes() {
            scale /= 10;
            nanos += i64::from(d - b'0') * scale;
        }
        rest = &frac[len..];
    }

    let offset_secs: i64 = match rest.as_bytes() {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), zone @ ..] if zone.len() == 2 || zone.len() == 4 => {
            let zone = std::str::from_utf8(zone).ok()?;
            if !zone.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let h: i64 = zone[..2].parse().ok()?;
            let m: i64 = if zone.len() == 4 {
                zone[2..].parse().ok()?
            } else {
                0
            };
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };

    // LDAP allows a leap second (:60). Billing needs no leap-second precision, and chrono's
    // representation of one is awkward, so it becomes the next minute's :00.
    let (second, leap_nanos) = if second == 60 {
        (59, 1_000_000_000)
    } else {
        (second, 0)
    };
    let local = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, second)?;
    let at = Utc.from_utc_datetime(&local) + chrono::Duration::nanoseconds(nanos + leap_nanos)
        - chrono::Duration::seconds(offset_secs);
    Some(at)
}

/// The value of a DN's first RDN when that RDN is `CN=…`: `CN=Billable Users,OU=Groups,DC=acme`
/// gives `Billable Users`. This is how a group is named to a person: `memberOf` holds DNs.
///
/// Handles the escapes RFC 4514 allows (`\,`, `\+`, `\\`, `\"`, hex pairs such as `\2C` or the
/// UTF-8 bytes `\C3\A9`) and RFC 1779 quoting (`CN="Smith, Ann"`). A multi-valued RDN
/// (`CN=a+UID=b`) gives the CN part. `None` when the first RDN is not a CN or is malformed.
pub fn cn_of_dn(dn: &str) -> Option<String> {
    let s = dn.trim_start();
    let eq = s.find('=')?;
    if !s[..eq].trim().eq_ignore_ascii_case("cn") {
        return None;
    }
    let value = s[eq + 1..].trim_start();
    let bytes = value.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    if let Some(quoted) = value.strip_prefix('"') {
        let qb = quoted.as_bytes();
        let mut i = 0;
        loop {
            match qb.get(i)? {
                b'"' => break,
                b'\\' => {
                    out.push(*qb.get(i + 1)?);
                    i += 2;
                }
                &c => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        return String::from_utf8(out).ok();
    }
    // Trailing spaces are insignificant unless escaped, so remember where the escaped text ends.
    let mut keep_len = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b',' | b'+' | b';' => break,
            b'\\' => {
                let next = *bytes.get(i + 1)?;
                let hex_pair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .filter(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|p| u8::from_str_radix(p, 16).ok());
                if let Some(b) = hex_pair {
                    out.push(b);
                    i += 3;
                } else {
                    out.push(next);
                    i += 2;
                }
                keep_len = out.len();
            }
            c => {
                out.push(c);
                if c != b' ' {
                    keep_len = out.len();
                }
                i += 1;
            }
        }
    }
    out.truncate(keep_len);
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_swaps_the_first_three_groups() {
        let bytes = [
            0x78, 0x56, 0x34, 0x12, 0x34, 0x12, 0x78, 0x56, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34,
            0x56, 0x78,
        ];
        assert_eq!(
            guid_to_string(&bytes).as_deref(),
            Some("12345678-1234-5678-9abc-def012345678")
        );
    }

    #[test]
    fn guid_matches_microsofts_published_vector() {
        // The example of .NET's Guid.ToByteArray, which uses the same layout as objectGUID:
        // 35918bc9-196d-40ea-9779-889d79b753f0 <-> C9 8B 91 35 6D 19 EA 40 97 79 88 9D 79 B7 53 F0.
        let bytes = [
            0xC9, 0x8B, 0x91, 0x35, 0x6D, 0x19, 0xEA, 0x40, 0x97, 0x79, 0x88, 0x9D, 0x79, 0xB7,
            0x53, 0xF0,
        ];
        assert_eq!(
            guid_to_string(&bytes).as_deref(),
            Some("35918bc9-196d-40ea-9779-889d79b753f0")
        );
    }

    #[test]
    fn guid_needs_exactly_sixteen_bytes() {
        assert_eq!(guid_to_string(&[0; 15]), None);
        assert_eq!(guid_to_string(&[0; 17]), None);
        assert_eq!(guid_to_string(&[]), None);
    }

    #[test]
    fn guid_text_is_canonicalised() {
        assert_eq!(
            canonical_guid("{35918BC9-196D-40EA-9779-889D79B753F0}").as_deref(),
            Some("35918bc9-196d-40ea-9779-889d79b753f0")
        );
        assert_eq!(
            canonical_guid(" 35918bc9-196d-40ea-9779-889d79b753f0 ").as_deref(),
            Some("35918bc9-196d-40ea-9779-889d79b753f0")
        );
        assert_eq!(canonical_guid("35918bc9196d40ea9779889d79b753f0"), None);
        assert_eq!(canonical_guid("35918bc9-196d-40ea-9779-889d79b753fg"), None);
        assert_eq!(canonical_guid("jsmith"), None);
    }

    #[test]
    fn sid_of_a_domain_user() {
        // S-1-5-21-1004336348-1177238915-682003330-512, as in Microsoft's SID documentation.
        let mut bytes = vec![1, 5, 0, 0, 0, 0, 0, 5];
        for sub in [21u32, 1004336348, 1177238915, 682003330, 512] {
            bytes.extend_from_slice(&sub.to_le_bytes());
        }
        assert_eq!(
            sid_to_string(&bytes).as_deref(),
            Some("S-1-5-21-1004336348-1177238915-682003330-512")
        );
        assert_eq!(sid_to_string(&bytes[..bytes.len() - 1]), None);
        assert_eq!(sid_to_string(&[1]), None);
    }

    #[test]
    fn uac_flags() {
        let normal = UserAccountControl(512);
        assert!(!normal.is_disabled());
        assert_eq!(normal.flag_names(), vec!["NORMAL_ACCOUNT"]);

        let disabled = UserAccountControl(514);
        assert!(disabled.is_disabled());
        assert_eq!(
            disabled.flag_names(),
            vec!["ACCOUNTDISABLE", "NORMAL_ACCOUNT"]
        );

        // 66050 = NORMAL_ACCOUNT | DONT_EXPIRE_PASSWORD | ACCOUNTDISABLE.
        let u = UserAccountControl(66050);
        assert!(u.is_disabled());
        assert_eq!(
            u.flag_names(),
            vec!["ACCOUNTDISABLE", "NORMAL_ACCOUNT", "DONT_EXPIRE_PASSWORD"]
        );

        let locked_expired = UserAccountControl(
            UserAccountControl::NORMAL_ACCOUNT
                | UserAccountControl::LOCKOUT
                | UserAccountControl::PASSWORD_EXPIRED,
        );
        assert!(!locked_expired.is_disabled());
        assert_eq!(
            locked_expired.flag_names(),
            vec!["LOCKOUT", "NORMAL_ACCOUNT", "PASSWORD_EXPIRED"]
        );

        // 4096: a workstation's computer account.
        assert!(UserAccountControl(4096).is_machine());
        assert!(!normal.is_machine());
        // Undefined bits are ignored by flag_names.
        assert_eq!(UserAccountControl(0x4).flag_names(), Vec::<&str>::new());
    }

    #[test]
    fn uac_parses_signed_and_unsigned_text() {
        assert_eq!(
            UserAccountControl::parse("514"),
            Some(UserAccountControl(514))
        );
        assert_eq!(
            UserAccountControl::parse(" -2147483134 "),
            Some(UserAccountControl(0x8000_0202))
        );
        assert_eq!(UserAccountControl::parse("yes"), None);
        assert_eq!(UserAccountControl::parse(""), None);
    }

    #[test]
    fn filetime_epochs() {
        assert_eq!(
            filetime_to_datetime(0).map(|d| d.to_rfc3339()),
            Some("1601-01-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            filetime_to_datetime(116_444_736_000_000_000).map(|d| d.timestamp()),
            Some(0)
        );
        // 2024-01-01T00:00:00Z, with 1234567 ticks (0.1234567 s) on top.
        let ft = (1_704_067_200 + FILETIME_UNIX_OFFSET_SECS) * FILETIME_TICKS_PER_SEC + 1_234_567;
        let at = filetime_to_datetime(ft).map(|d| d.to_rfc3339());
        assert_eq!(at.as_deref(), Some("2024-01-01T00:00:00.123456700+00:00"));
        assert_eq!(filetime_to_datetime(-1), None);
    }

    #[test]
    fn account_expires_never_and_a_date() {
        assert_eq!(account_expires(0), None);
        assert_eq!(account_expires(0x7FFF_FFFF_FFFF_FFFF), None);
        // 133485408000000000 is 2024-01-01T00:00:00Z.
        assert_eq!(
            account_expires(133_485_408_000_000_000).map(|d| d.to_rfc3339()),
            Some("2024-01-01T00:00:00+00:00".to_owned())
        );
    }

    #[test]
    fn generalized_time_forms() {
        let at = |s: &str| generalized_time(s).map(|d| d.to_rfc3339());
        assert_eq!(
            at("20240101120000.0Z").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(
            at("20240101120000Z").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(
            at("20240101120000.5Z").as_deref(),
            Some("2024-01-01T12:00:00.500+00:00")
        );
        assert_eq!(
            at("202401011230Z").as_deref(),
            Some("2024-01-01T12:30:00+00:00")
        );
        assert_eq!(
            at("2024010112Z").as_deref(),
            Some("2024-01-01T12:00:00+00:00")
        );
        assert_eq!(
            at("20240101120000+0130").as_deref(),
            Some("2024-01-01T10:30:00+00:00")
        );
        assert_eq!(
            at("20240101120000,25-02").as_deref(),
            Some("2024-01-01T14:00:00.250+00:00")
        );
        assert_eq!(at("20240101120000"), None, "no zone: local time unknown");
        assert_eq!(at("20241301120000Z"), None, "month 13");
        assert_eq!(at("2024-01-01T12:00:00Z"), None);
        assert_eq!(at(""), None);
        assert_eq!(at("20240101120000.Z"), None);
    }

    #[test]
    fn cn_of_dn_forms() {
        let cn = |s: &str| cn_of_dn(s);
        assert_eq!(
            cn("CN=Billable Users,OU=Groups,DC=acme,DC=local").as_deref(),
            Some("Billable Users")
        );
        assert_eq!(
            cn("cn=Smith\\, Ann,OU=Staff,DC=acme,DC=local").as_deref(),
            Some("Smith, Ann")
        );
        assert_eq!(cn("CN = Sales , DC=acme").as_deref(), Some("Sales"));
        assert_eq!(
            cn("CN=Ren\\C3\\A9e Dupr\\C3\\A9,OU=Staff").as_deref(),
            Some("Renée Dupré")
        );
        assert_eq!(cn("CN=Renée,OU=Staff").as_deref(), Some("Renée"));
        assert_eq!(cn("CN=a\\2Cb,DC=x").as_deref(), Some("a,b"));
        assert_eq!(cn("CN=\"Smith, Ann\",DC=x").as_deref(), Some("Smith, Ann"));
        assert_eq!(cn("CN=Ann+UID=ann,DC=x").as_deref(), Some("Ann"));
        assert_eq!(cn("CN=trailing\\ ,DC=x").as_deref(), Some("trailing "));
        assert_eq!(cn("CN=Solo").as_deref(), Some("Solo"));
        assert_eq!(cn("OU=Groups,DC=acme"), None);
        assert_eq!(cn("Billable Users"), None);
        assert_eq!(cn("CN=,DC=x"), None);
        assert_eq!(cn("CN=broken\\"), None);
        assert_eq!(cn("CN=\"unterminated"), None);
    }
}
