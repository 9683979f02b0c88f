//! Friendly names for Microsoft 365 SKU part numbers.
//!
//! Graph's `/subscribedSkus` gives each licence a `skuPartNumber` (`SPB`, `ENTERPRISEPACK`) but
//! no product name, and the names clients see on their invoices are the marketing ones
//! ("Microsoft 365 Business Premium"). Microsoft publishes the mapping as a CSV ("Product names
//! and service plan identifiers for licensing"); this is the part of it MSPs bill for most. An
//! unknown part number keeps its own text as its name, so nothing is ever blank.

/// `(skuPartNumber, product name)`, from Microsoft's licensing reference.
const NAMES: &[(&str, &str)] = &[
    ("SPB", "Microsoft 365 Business Premium"),
    ("O365_BUSINESS_PREMIUM", "Microsoft 365 Business Standard"),
    ("O365_BUSINESS_ESSENTIALS", "Microsoft 365 Business Basic"),
    ("O365_BUSINESS", "Microsoft 365 Apps for business"),
    ("SMB_BUSINESS", "Microsoft 365 Apps for business"),
    ("OFFICESUBSCRIPTION", "Microsoft 365 Apps for enterprise"),
    ("STANDARDPACK", "Office 365 E1"),
    ("ENTERPRISEPACK", "Office 365 E3"),
    ("ENTERPRISEPREMIUM", "Office 365 E5"),
    ("DESKLESSPACK", "Office 365 F3"),
    ("SPE_E3", "Microsoft 365 E3"),
    ("SPE_E5", "Microsoft 365 E5"),
    ("SPE_F1", "Microsoft 365 F3"),
    ("Microsoft_365_E3", "Microsoft 365 E3 (no Teams)"),
    ("Microsoft_365_E5", "Microsoft 365 E5 (no Teams)"),
    ("EXCHANGESTANDARD", "Exchange Online (Plan 1)"),
    ("EXCHANGEENTERPRISE", "Exchange Online (Plan 2)"),
    (
        "EXCHANGEARCHIVE_ADDON",
        "Exchange Online Archiving for Exchange Online",
    ),
    ("EMS", "Enterprise Mobility + Security E3"),
    ("EMSPREMIUM", "Enterprise Mobility + Security E5"),
    ("AAD_PREMIUM", "Microsoft Entra ID P1"),
    ("AAD_PREMIUM_P2", "Microsoft Entra ID P2"),
    ("INTUNE_A", "Microsoft Intune Plan 1"),
    (
        "ATP_ENTERPRISE",
        "Microsoft Defender for Office 365 (Plan 1)",
    ),
    (
        "THREAT_INTELLIGENCE",
        "Microsoft Defender for Office 365 (Plan 2)",
    ),
    ("MCOEV", "Microsoft Teams Phone Standard"),
    ("MCOMEETADV", "Microsoft 365 Audio Conferencing"),
    ("Microsoft_Teams_Premium", "Microsoft Teams Premium"),
    ("POWER_BI_PRO", "Power BI Pro"),
    ("POWER_BI_STANDARD", "Power BI (free)"),
    ("FLOW_FREE", "Microsoft Power Automate Free"),
    ("VISIOCLIENT", "Visio Plan 2"),
    ("PROJECTPROFESSIONAL", "Project Plan 3"),
];

/// The product name for a SKU part number; the part number itself when it is not in the table.
/// Part numbers are matched ignoring case, as Microsoft's own lists vary in case.
pub fn friendly_name(part_number: &str) -> &str {
    NAMES
        .iter()
        .find(|(sku, _)| sku.eq_ignore_ascii_case(part_number))
        .map_or(part_number, |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_part_numbers_have_names_and_others_keep_theirs() {
        assert_eq!(friendly_name("SPB"), "Microsoft 365 Business Premium");
        assert_eq!(friendly_name("spe_e3"), "Microsoft 365 E3");
        assert_eq!(friendly_name("CONTOSO_CUSTOM"), "CONTOSO_CUSTOM");
    }

    #[test]
    fn the_table_names_each_part_number_once() {
        let mut seen = std::collections::HashSet::new();
        for (sku, _) in NAMES {
            assert!(seen.insert(sku.to_ascii_uppercase()), "{sku} twice");
        }
    }
}
