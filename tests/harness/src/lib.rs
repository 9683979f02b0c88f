//! Real servers for tests (filled in by the LDAP work).
