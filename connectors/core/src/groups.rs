//! Group membership as a directory states it, and nesting expanded the one way every source
//! shares.
//!
//! AD's `memberOf` lists a person's direct groups only; a billing group reached through a group
//! inside it (`Billable Users` ⊃ `Sales` ⊃ Ann) is found only by walking `member` links. A live
//! LDAP read and an export file (LDIF with group entries, or a CSV with a group-member file
//! beside it) must bill the same people for the same directory, so both hand their group
//! entries to [`Groups`] and ask it for each person's groups: cycles, which AD allows, end the
//! walk, and a group reached by two paths (a diamond) is counted once.
//!
//! DNs are compared by [`dn_key`]: servers return DNs as they store them and `member` values may
//! differ in case and spacing from the entry's own DN.

use std::collections::{HashMap, HashSet};

use crate::ad;

/// A DN in a form two spellings of the same DN share: servers return DNs as they store them
/// (slapd lowercases `cn=…,ou=…`; AD keeps the case written), and `member` values may differ in
/// case and spacing from the entry's own DN.
pub fn dn_key(dn: &str) -> String {
    let mut out = String::new();
    dn_key_into(dn, &mut out);
    out
}

/// [`dn_key`] into a buffer (cleared first), so a loop over many DNs can reuse one.
pub fn dn_key_into(dn: &str, out: &mut String) {
    out.clear();
    let dn = dn.trim();
    // Servers write DNs without spaces around separators: the key is then the DN lowercased,
    // which is most of a read's DNs done without a character-by-character walk.
    let spaced = dn.as_bytes().windows(2).any(|w| {
        matches!(
            (w[0], w[1]),
            (b',' | b'=' | b'+', b' ') | (b' ', b',' | b'=' | b'+')
        )
    });
    // Names such as Müller or Nguyễn have no capitals beyond ASCII; one that has (Ä, Ω) needs
    // Unicode's tables.
    let unicode_capitals = !dn.is_ascii()
        && dn
            .chars()
            .any(|c| !c.is_ascii() && !c.to_lowercase().eq(std::iter::once(c)));
    if !spaced && !unicode_capitals {
        out.push_str(dn);
        out.make_ascii_lowercase();
        return;
    }
    walked_dn_key(dn, out);
}

/// [`dn_key_into`] of a trimmed DN with spaces around separators or capitals beyond ASCII,
/// walked character by character.
fn walked_dn_key(dn: &str, out: &mut String) {
    if dn.is_ascii() {
        return ascii_dn_key(dn, out);
    }
    out.reserve(dn.len());
    let mut chars = dn.chars().peekable();
    let mut escaped = false;
    while let Some(c) = chars.next() {
        if escaped {
            out.extend(c.to_lowercase());
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                out.push(c);
                escaped = true;
            }
            ',' | '=' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(c);
                while chars.peek() == Some(&' ') {
                    chars.next();
                }
            }
            // Most of a non-ASCII DN is still ASCII: only the rest needs Unicode's tables.
            c if c.is_ascii() => out.push(c.to_ascii_lowercase()),
            c => out.extend(c.to_lowercase()),
        }
    }
}

/// [`dn_key`] of an ASCII DN (nearly all of them), byte by byte.
fn ascii_dn_key(dn: &str, out: &mut String) {
    let bytes = dn.as_bytes();
    out.reserve(bytes.len());
    let mut i = 0;
    let mut escaped = false;
    while i < bytes.len() {
        let b = bytes[i];
        i += 1;
        if escaped {
            out.push(char::from(b.to_ascii_lowercase()));
            escaped = false;
            continue;
        }
        match b {
            b'\\' => {
                out.push('\\');
                escaped = true;
            }
            b',' | b'=' | b'+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(char::from(b));
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
            }
            b => out.push(char::from(b.to_ascii_lowercase())),
        }
    }
}

/// A group's name as rules see it: its CN, else the DN as written.
pub fn group_name(dn: &str, cn: Option<&str>) -> String {
    cn.map(str::to_owned)
        .or_else(|| ad::cn_of_dn(dn))
        .unwrap_or_else(|| dn.to_owned())
}

/// Each group's name, and which groups every DN is in, nesting included.
#[derive(Debug, Default)]
pub struct Groups {
    names: Vec<String>,
    /// Each group's DN key, by index (the inverse of `index`).
    keys: Vec<String>,
    /// DN key of a member (person or group) → the groups it is in directly (or, from in-chain
    /// searches, transitively).
    parents: HashMap<String, Vec<u32>>,
    /// DN key of a group → its index.
    index: HashMap<String, u32>,
    /// Whether `parents` already holds transitive membership (in-chain): no expansion here.
    transitive: bool,
    /// Memo of each group's ancestors, by index, so deep nesting is walked once per group.
    ancestors: Vec<Option<Vec<u32>>>,
    /// Memo of each `memberOf` value as the server wrote it (every member of a group carries
    /// the same string): the group it names, so its DN key is worked out once, not per person.
    resolved: HashMap<String, Resolved>,
    /// The group indexes of the person being worked out; kept to spare an allocation each.
    scratch: Vec<u32>,
}

/// A `memberOf` value, resolved.
#[derive(Debug)]
enum Resolved {
    Group(u32),
    /// A group the source did not list (outside LDAP's `group_base_dns`, or absent from an
    /// export): named, but its nesting is unknown.
    Outside(String),
}

impl Groups {
    /// Adds a group the source lists, unless its DN key is known already.
    pub fn add(&mut self, key: String, name: String) -> Option<u32> {
        if self.index.contains_key(&key) {
            return None;
        }
        let idx = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name);
        self.keys.push(key.clone());
        self.index.insert(key, idx);
        Some(idx)
    }

    /// The names of every group a person is in, nesting included; cycles (which AD allows) end
    /// the walk instead of looping. `own_key` is the person's [`dn_key`], `None` when no group
    /// lists members (nothing would be found under it).
    pub fn of(&mut self, own_key: Option<&str>, member_of: &[String]) -> Vec<String> {
        let mut all = std::mem::take(&mut self.scratch);
        all.clear();
        if let Some(direct) = own_key.and_then(|k| self.parents.get(k)) {
            all.extend_from_slice(direct);
        }
        let mut outside: Vec<String> = Vec::new();
        for dn in member_of {
            if !self.resolved.contains_key(dn.as_str()) {
                let r = match self.index.get(&dn_key(dn)) {
                    Some(&g) => Resolved::Group(g),
                    None => Resolved::Outside(group_name(dn, None)),
                };
                self.resolved.insert(dn.clone(), r);
            }
            match &self.resolved[dn.as_str()] {
                Resolved::Group(g) => all.push(*g),
                Resolved::Outside(name) => outside.push(name.clone()),
            }
        }
        if !self.transitive {
            for i in 0..all.len() {
                let g = all[i];
                let ancestors = self.ancestors_of(g);
                all.extend_from_slice(ancestors);
            }
        }
        all.sort_unstable();
        all.dedup();
        let mut names: Vec<String> = Vec::with_capacity(all.len() + outside.len());
        names.extend(all.iter().map(|&g| self.names[g as usize].clone()));
        for o in outside {
            if !names.contains(&o) {
                names.push(o);
            }
        }
        names.sort();
        self.scratch = all;
        names
    }

    /// Records that the member with DN key `member_key` (a person or a group) is in `group`.
    pub fn add_member(&mut self, member_key: &str, group: u32) {
        match self.parents.get_mut(member_key) {
            Some(p) => p.push(group),
            None => {
                self.parents.insert(member_key.to_owned(), vec![group]);
            }
        }
    }

    /// Membership as added is already transitive (AD's in-chain searches): no expansion here.
    pub fn set_transitive(&mut self) {
        self.transitive = true;
    }

    /// The index of the group with DN key `key`, if the source listed it.
    pub fn index_of(&self, key: &str) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Each group's DN key, by index.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Each group's name, by index.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether any group lists a member: when none does, a person's own DN finds nothing.
    pub fn has_members(&self) -> bool {
        !self.parents.is_empty()
    }

    /// Every group `group` is in through nesting, walked once and remembered.
    fn ancestors_of(&mut self, group: u32) -> &[u32] {
        let at = group as usize;
        if self.ancestors.len() <= at {
            self.ancestors.resize(self.names.len().max(at + 1), None);
        }
        if self.ancestors[at].is_none() {
            let mut seen = HashSet::from([group]);
            let mut stack = vec![group];
            let mut out = Vec::new();
            while let Some(g) = stack.pop() {
                let Some(key) = self.keys.get(g as usize) else {
                    continue;
                };
                for &p in self.parents.get(key).map_or(&[][..], Vec::as_slice) {
                    if seen.insert(p) {
                        out.push(p);
                        stack.push(p);
                    }
                }
            }
            self.ancestors[at] = Some(out);
        }
        self.ancestors[at].as_deref().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_compare_whatever_their_case_and_spacing() {
        assert_eq!(
            dn_key("CN=Ann Lee, OU=Staff ,DC=Example,DC=Test"),
            dn_key("cn=ann lee,ou=staff,dc=example,dc=test")
        );
        assert_ne!(dn_key("CN=a\\,b,DC=x"), dn_key("CN=a,b,DC=x"));
        // Non-ASCII DNs take the char-by-char path, with the same rules.
        assert_eq!(
            dn_key(" CN=Zoë Müller , OU=Staff,DC=X "),
            "cn=zoë müller,ou=staff,dc=x"
        );
        assert_eq!(dn_key("CN=ÄB\\, C,DC=x"), "cn=äb\\, c,dc=x");
        let mut buf = String::from("left over");
        dn_key_into("CN=A ,DC=B", &mut buf);
        assert_eq!(buf, "cn=a,dc=b");
        // The lowercasing shortcut for DNs written without spaces agrees with the full walk.
        for dn in [
            "CN=Zoë Nguyễn u000004,OU=Sales,OU=Staff,DC=example,DC=test",
            "CN=Smith\\,John,OU=IT,DC=Acme,DC=Local",
            "CN=ΑΘΗΝΑ+UID=7,DC=X",
            "cn=already lower,dc=x",
            "CN=İstanbul Ofis,DC=X",
            "CN=ǅemal Müller,DC=X",
        ] {
            let mut walked = String::new();
            walked_dn_key(dn, &mut walked);
            assert_eq!(dn_key(dn), walked, "{dn}");
        }
    }

    /// Builds groups from `(group, members)` by DN, in the order given.
    fn graph(links: &[(&str, &[&str])]) -> Groups {
        let mut g = Groups::default();
        let ids: Vec<u32> = links
            .iter()
            .map(|(dn, _)| g.add(dn_key(dn), group_name(dn, None)).unwrap_or(u32::MAX))
            .collect();
        for ((_, members), id) in links.iter().zip(ids) {
            for m in *members {
                g.add_member(&dn_key(m), id);
            }
        }
        g
    }

    #[test]
    fn nesting_is_expanded_with_cycles_stopped_and_diamonds_once() {
        // Billing ⊃ Sales ⊃ ann; Billing ⊃ Staff ⊃ Sales (a diamond); Loop1 ⇄ Loop2 ∋ bob.
        let mut g = graph(&[
            ("CN=Billing,DC=x", &["CN=Sales,DC=x", "CN=Staff,DC=x"]),
            ("CN=Staff,DC=x", &["CN=Sales,DC=x"]),
            ("CN=Sales,DC=x", &["cn=ann, dc=x"]),
            ("CN=Loop1,DC=x", &["CN=Loop2,DC=x"]),
            ("CN=Loop2,DC=x", &["CN=Loop1,DC=x", "CN=Bob,DC=x"]),
        ]);
        assert_eq!(
            g.of(Some(&dn_key("CN=Ann,DC=x")), &[]),
            vec!["Billing", "Sales", "Staff"]
        );
        assert_eq!(
            g.of(Some(&dn_key("CN=Bob,DC=x")), &[]),
            vec!["Loop1", "Loop2"]
        );
        // memberOf names a known group (expanded) and an unknown one (kept by its CN).
        assert_eq!(
            g.of(
                None,
                &[
                    "CN=Staff,DC=X".to_owned(),
                    "CN=Elsewhere,OU=Far,DC=x".to_owned()
                ]
            ),
            vec!["Billing", "Elsewhere", "Staff"]
        );
    }

    #[test]
    fn a_deep_chain_is_walked_without_recursion() {
        let dns: Vec<String> = (0..20_000).map(|n| format!("CN=G{n},DC=x")).collect();
        let mut g = Groups::default();
        for dn in &dns {
            g.add(dn_key(dn), group_name(dn, None));
        }
        // G(n+1) contains G(n); the person is in G0.
        for (n, dn) in dns.iter().enumerate().take(dns.len() - 1) {
            g.add_member(&dn_key(dn), u32::try_from(n + 1).unwrap_or(u32::MAX));
        }
        g.add_member("cn=p,dc=x", 0);
        assert_eq!(g.of(Some("cn=p,dc=x"), &[]).len(), 20_000);
    }
}
