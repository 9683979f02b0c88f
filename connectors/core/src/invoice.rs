//! Billing by invoice: the shapes an accounting system (QuickBooks Online, Xero) is planned in.
//!
//! A PSA carries seats on an agreement that bills itself every month, so rollcall adjusts
//! quantities there. An accounting package has no agreement: rollcall writes the client's
//! invoice for the billing period instead, one per client (or per parent customer, for sites
//! billed together) per period, and keeps that draft up to date until someone sends it.
//!
//! An invoice is found again by its period *reference* (`rollcall ACME 2026-11`), never by
//! remembering an id: a crashed run, a retry or a second worker all land on the same invoice.
//! Lines are rollcall's when their item is one of the pipeline's products and, on an invoice
//! shared by several sites, when they carry this site's label; every other line (a one-off
//! project line typed by a person, another site's seats) is kept as it is. [`merge_lines`] is
//! that rule, shared by every accounting connector.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The days one invoice bills, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BillingPeriod {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl BillingPeriod {
    /// Days in the period, both ends counted.
    pub fn days(&self) -> i64 {
        (self.end - self.start).num_days() + 1
    }

    pub fn contains(&self, day: NaiveDate) -> bool {
        self.start <= day && day <= self.end
    }
}

impl std::fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} to {}", self.start, self.end)
    }
}

/// The invoice a pipeline asks for, for one client and period: how it is found again and what
/// goes on its header. Part of [`crate::BillingAccount`] for accounting targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTarget {
    pub period: BillingPeriod,
    /// The period reference written on the invoice (Xero `Reference`, QuickBooks `DocNumber`
    /// or `PrivateNote`): how the invoice is found again before any create.
    pub reference: String,
    /// The invoice date.
    pub date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
    /// The parent customer when several clients (sites) are billed on one invoice; `None`
    /// bills the client's own customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bill_to: Option<String>,
    /// The label that marks this client's lines on an invoice shared with other sites
    /// (`Branch office: …`). Set exactly when `bill_to` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

/// One line of an invoice as rollcall manages it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct InvoiceLine {
    /// The item's code in the accounting system (QuickBooks item name or id, Xero `ItemCode`).
    pub product: String,
    /// Seats; a fraction only on prorated lines.
    pub quantity: Decimal,
    pub unit_price: Decimal,
    /// What the client reads: by default the people billed.
    pub description: String,
}

impl InvoiceLine {
    /// Quantity × unit price, rounded once at the currency's minor unit (half away from zero,
    /// [`crate::round_money`]), as the accounting systems compute a line amount.
    pub fn amount(&self, currency: crate::Currency) -> Decimal {
        crate::round_money(self.quantity * self.unit_price, currency)
    }
}

/// The part of an invoice rollcall manages: header and this client's lines, in product order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFields {
    pub reference: String,
    pub date: NaiveDate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_date: Option<NaiveDate>,
    pub lines: Vec<InvoiceLine>,
}

impl InvoiceFields {
    pub fn total(&self, currency: crate::Currency) -> Decimal {
        self.lines.iter().map(|l| l.amount(currency)).sum()
    }

    /// Seats on the whole invoice, fractions of prorated lines included.
    pub fn total_seats(&self) -> Decimal {
        self.lines.iter().map(|l| l.quantity).sum()
    }

    /// Seats on the invoice per product (prorated lines count their fraction).
    pub fn quantity_of(&self, product: &str) -> Decimal {
        self.lines
            .iter()
            .filter(|l| l.product.eq_ignore_ascii_case(product))
            .map(|l| l.quantity)
            .sum()
    }
}

/// Whether rollcall may still change an invoice. Only drafts are edited: once an invoice is
/// sent, approved, paid or voided it is the client's document, and a difference becomes a
/// conflict in the plan for a person to settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "status", rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    /// Final, with the vendor's own word for why (`AUTHORISED`, `PAID`, `EmailSent`…).
    Final(String),
}

impl InvoiceStatus {
    pub fn is_draft(&self) -> bool {
        matches!(self, InvoiceStatus::Draft)
    }
}

/// The period's invoice as the accounting system holds it, cut down to this client's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualInvoice {
    pub id: String,
    /// The number the client sees, when the system has assigned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub status: InvoiceStatus,
    pub fields: InvoiceFields,
}

/// The label prefix that marks a site's lines on a shared invoice.
pub fn site_prefix(site: &str) -> String {
    format!("{site}: ")
}

/// Whether a line on the remote invoice is rollcall's to manage for this client: its item is
/// one of the pipeline's `products` and, on a shared invoice, it carries the site's label.
pub fn owns_line(
    product: &str,
    description: &str,
    products: &[String],
    site: Option<&str>,
) -> bool {
    products.iter().any(|p| p.eq_ignore_ascii_case(product))
        && site.is_none_or(|s| description.starts_with(&site_prefix(s)))
}

/// This client's lines of a remote invoice, as the planner compares them: only the lines
/// [`owns_line`] gives it, the site's label taken off, in order. `remote` is each item line's
/// (item code, description, quantity, unit price).
pub fn client_lines(
    remote: impl IntoIterator<Item = (String, String, Decimal, Decimal)>,
    products: &[String],
    site: Option<&str>,
) -> Vec<InvoiceLine> {
    let mut lines: Vec<InvoiceLine> = remote
        .into_iter()
        .filter(|(product, description, _, _)| owns_line(product, description, products, site))
        .map(|(product, description, quantity, unit_price)| InvoiceLine {
            description: match site {
                Some(s) => description
                    .strip_prefix(&site_prefix(s))
                    .unwrap_or(&description)
                    .to_owned(),
                None => description,
            },
            product,
            quantity,
            unit_price,
        })
        .collect();
    lines.sort();
    lines
}

/// The billing period a run's accounts share, for connectors that read ahead.
pub fn period_of(accounts: &[crate::BillingAccount]) -> Option<BillingPeriod> {
    accounts
        .iter()
        .find_map(|a| a.invoice.as_ref().map(|i| i.period))
}

/// The lines a connector writes: every remote line that is not this client's kept as it is (in
/// place), then this client's `wanted` lines, labelled with the site on a shared invoice.
/// `remote` is `(product, description, line)` in the vendor's own line type, so vendor fields
/// rollcall does not manage (tax codes, tracking, accounts) survive on untouched lines.
pub fn merge_lines<L: Clone>(
    remote: &[(String, String, L)],
    wanted: &[InvoiceLine],
    products: &[String],
    site: Option<&str>,
    make: impl Fn(&InvoiceLine) -> L,
) -> Vec<L> {
    let mut out: Vec<L> = remote
        .iter()
        .filter(|(product, description, _)| !owns_line(product, description, products, site))
        .map(|(_, _, line)| line.clone())
        .collect();
    out.extend(wanted.iter().map(|line| {
        let labelled = match site {
            Some(s) if !line.description.starts_with(&site_prefix(s)) => InvoiceLine {
                description: format!("{}{}", site_prefix(s), line.description),
                ..line.clone()
            },
            _ => line.clone(),
        };
        make(&labelled)
    }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().expect("decimal literal")
    }

    fn line(product: &str, qty: &str, description: &str) -> InvoiceLine {
        InvoiceLine {
            product: product.into(),
            quantity: dec(qty),
            unit_price: dec("10.00"),
            description: description.into(),
        }
    }

    #[test]
    fn period_counts_both_ends() {
        let p = BillingPeriod {
            start: NaiveDate::from_ymd_opt(2026, 11, 1).expect("date"),
            end: NaiveDate::from_ymd_opt(2026, 11, 30).expect("date"),
        };
        assert_eq!(p.days(), 30);
        assert!(p.contains(p.end));
    }

    #[test]
    fn merge_keeps_other_sites_and_hand_typed_lines() {
        let products = vec!["M365".to_owned()];
        let remote = vec![
            ("M365".to_owned(), "Head office: 3 users".to_owned(), "ho"),
            (
                "M365".to_owned(),
                "Branch: 2 users".to_owned(),
                "old-branch",
            ),
            (
                "PROJECT".to_owned(),
                "Branch: cabling".to_owned(),
                "project",
            ),
        ];
        let wanted = vec![line("M365", "4", "4 users")];
        let merged = merge_lines(&remote, &wanted, &products, Some("Branch"), |l| {
            if l.description == "Branch: 4 users" {
                "new-branch"
            } else {
                "wrong"
            }
        });
        assert_eq!(merged, vec!["ho", "project", "new-branch"]);
    }

    #[test]
    fn without_a_site_every_product_line_is_ours() {
        let products = vec!["M365".to_owned()];
        assert!(owns_line("m365", "anything", &products, None));
        assert!(!owns_line("OTHER", "anything", &products, None));
        assert!(!owns_line(
            "M365",
            "Other site: x",
            &products,
            Some("Branch")
        ));
    }

    #[test]
    fn amount_rounds_to_cents() {
        let l = InvoiceLine {
            unit_price: dec("22.00"),
            ..line("M365", "2.3333", "")
        };
        assert_eq!(l.amount(crate::Currency::Usd), dec("51.33"));
    }
}
