//! Active Directory value formats, shared by every source that reads AD data (LDAP, LDIF exports).
