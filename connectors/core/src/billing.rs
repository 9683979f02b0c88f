//! The billing-system role: what a client is billed for, and the changes that alter it.

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::RemoteError;
use crate::invoice::{ActualInvoice, InvoiceFields, InvoiceTarget};
use crate::limits::FieldLimits;

/// Where one client is billed, as the pipeline names it: the billing system's company (or
/// customer) and, for PSAs, the agreement that carries the seats; for accounting systems, the
/// invoice of the billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillingAccount {
    /// PSA company identifier, or the accounting customer: `id:123`, an email, or a name.
    pub company: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement: Option<String>,
    /// The period's invoice, for systems that bill by invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceTarget>,
}

/// The same account resolved to the billing system's own ids, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRef {
    /// The company's (customer's) id; empty when the customer does not exist yet and the plan
    /// begins with [`Change::CreateCustomer`].
    pub company_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agreement_id: Option<String>,
}

/// How a contact and a person are matched: the lower-cased email where there is one, else the
/// lower-cased full name. Billing systems carry no directory id, so this is what both sides share.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactKey(pub String);

impl std::fmt::Display for ContactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The fields of a contact that rollcall manages. Anything else on the contact is left alone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct ContactFields {
    pub first_name: String,
    pub last_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl ContactFields {
    pub fn key(&self) -> ContactKey {
        match self
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            Some(email) => ContactKey(email.to_lowercase()),
            None => ContactKey(
                format!("{} {}", self.first_name.trim(), self.last_name.trim())
                    .trim()
                    .to_lowercase(),
            ),
        }
    }
}

/// The billed line for one product on a client's agreement: how many seats, at what price, and
/// the text the client reads on the invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdditionFields {
    pub quantity: u32,
    pub unit_price: Decimal,
    pub invoice_description: String,
}

/// A contact as the billing system holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualContact {
    pub id: String,
    pub fields: ContactFields,
    pub active: bool,
    /// The contact carries rollcall's mark (a tag written when rollcall made it), so it is
    /// known as rollcall's even by a store that lost its records.
    #[serde(default)]
    pub marked: bool,
}

/// An addition as the billing system holds it. Cancelled additions are not reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualAddition {
    pub id: String,
    /// The product's identifier in the billing system's catalogue.
    pub product: String,
    pub fields: AdditionFields,
    /// The addition carries rollcall's mark, as [`ActualContact::marked`].
    #[serde(default)]
    pub marked: bool,
}

/// Everything the billing system holds for one client that rollcall compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub account: AccountRef,
    pub contacts: Vec<ActualContact>,
    pub additions: Vec<ActualAddition>,
    /// The period's invoice (this client's lines of it), for systems that bill by invoice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<ActualInvoice>,
}

/// How a billing system carries seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingModel {
    /// A PSA agreement with one addition per product that bills itself every cycle.
    Agreement,
    /// An accounting system: rollcall writes the period's invoice.
    Invoice,
}

/// One change to one client's billing. Each carries the values before and after, so a plan can
/// be read by a person and replayed exactly.
///
/// The values are boxed: a change is then a tenth of its size unboxed, and a large client's
/// first run is a change per person (issue 18: 91,283 contacts to create held twice over while
/// the plan was assembled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    CreateContact {
        key: ContactKey,
        after: Box<ContactFields>,
    },
    UpdateContact {
        id: String,
        key: ContactKey,
        before: Box<ContactFields>,
        after: Box<ContactFields>,
    },
    /// A person who left and came back: their old contact is switched back on (and its fields
    /// brought up to date) rather than a second contact made.
    ReactivateContact {
        id: String,
        key: ContactKey,
        before: Box<ContactFields>,
        after: Box<ContactFields>,
    },
    /// Contacts are deactivated, never deleted: tickets and invoices still point at them.
    DeactivateContact {
        id: String,
        key: ContactKey,
        before: Box<ContactFields>,
    },
    CreateAddition {
        product: String,
        after: Box<AdditionFields>,
    },
    UpdateAddition {
        id: String,
        product: String,
        before: Box<AdditionFields>,
        after: Box<AdditionFields>,
    },
    CancelAddition {
        id: String,
        product: String,
        before: Box<AdditionFields>,
    },
    /// The customer the client (or its parent, for sites billed together) is invoiced as does
    /// not exist yet. Applied first: the invoice after it is written to the customer it made.
    CreateCustomer {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        email: Option<String>,
    },
    /// The period has no invoice yet. Applying looks the reference up first, so a retry, a
    /// crash or a sister site that got there first never makes a second invoice.
    CreateInvoice {
        reference: String,
        /// The label of this client's lines on an invoice shared by sites (`bill_to`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        after: Box<InvoiceFields>,
    },
    /// The period's draft invoice brought up to date: this client's lines are replaced, every
    /// other line is kept. Refused at apply time if the invoice stopped being a draft.
    UpdateInvoice {
        id: String,
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        before: Box<InvoiceFields>,
        after: Box<InvoiceFields>,
    },
}

impl Change {
    /// The snake-case name of the change, as it appears in JSON plans and in history.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::CreateContact { .. } => "create_contact",
            Change::UpdateContact { .. } => "update_contact",
            Change::ReactivateContact { .. } => "reactivate_contact",
            Change::DeactivateContact { .. } => "deactivate_contact",
            Change::CreateAddition { .. } => "create_addition",
            Change::UpdateAddition { .. } => "update_addition",
            Change::CancelAddition { .. } => "cancel_addition",
            Change::CreateCustomer { .. } => "create_customer",
            Change::CreateInvoice { .. } => "create_invoice",
            Change::UpdateInvoice { .. } => "update_invoice",
        }
    }

    /// What the change is about, for tables and logs: a contact key or a product.
    pub fn subject(&self) -> String {
        self.subject_text().to_owned()
    }

    /// [`Change::subject`], borrowed.
    pub fn subject_text(&self) -> &str {
        match self {
            Change::CreateContact { key, .. }
            | Change::UpdateContact { key, .. }
            | Change::ReactivateContact { key, .. }
            | Change::DeactivateContact { key, .. } => &key.0,
            Change::CreateAddition { product, .. }
            | Change::UpdateAddition { product, .. }
            | Change::CancelAddition { product, .. } => product,
            Change::CreateCustomer { name, .. } => name,
            Change::CreateInvoice { reference, .. } | Change::UpdateInvoice { reference, .. } => {
                reference
            }
        }
    }
}

/// What applying a change produced: the id of the object written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub remote_id: String,
    /// True when a create found its object already there (a retried or crashed earlier attempt)
    /// and adopted it instead of writing a second one.
    #[serde(default)]
    pub reconciled: bool,
}

/// A service ticket raised for a client's person: the "what was done for them" of a client
/// value report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub summary: String,
    /// The contact the ticket is for, by the billing system's contact id.
    pub contact_id: Option<String>,
    /// When it was opened and, if it is, closed (RFC 3339 or the system's ISO form).
    pub opened: Option<String>,
    pub closed: Option<String>,
}

/// A ticket rollcall opens for a person at the MSP to act on (a plan waiting for approval, a
/// failed sync), on the client's company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    /// The service board it goes on, by name.
    pub board: String,
    /// One line; the connector shortens it to what the system stores, keeping `reference`.
    pub summary: String,
    /// The ticket's text.
    pub description: String,
    /// Unique to what the ticket is about (an approval's id, an event's): a retried create
    /// finds the ticket an earlier attempt made by it, so none is opened twice.
    pub reference: String,
}

/// A PSA's service desk: the tickets of a client's company. Only PSAs have one, so it is a
/// capability a billing system may offer, not part of the role.
#[async_trait]
pub trait ServiceDesk: Send + Sync {
    /// Every ticket of the account's company (the caller picks the period).
    async fn tickets(&self, account: &AccountRef) -> Result<Vec<Ticket>, RemoteError>;

    /// Opens a ticket on the account's company; its id.
    async fn open_ticket(
        &self,
        account: &AccountRef,
        ticket: &NewTicket,
    ) -> Result<String, RemoteError>;
}

/// A billing system: a PSA or an accounting package.
#[async_trait]
pub trait BillingSystem: Send + Sync + std::fmt::Debug {
    /// The connector's kind as written in pipelines ("connectwise").
    fn kind(&self) -> &'static str;

    /// How seats are carried: agreement additions (PSAs) or the period's invoice (accounting).
    fn billing_model(&self) -> BillingModel {
        BillingModel::Agreement
    }

    /// Whether the system keeps one contact per person. Accounting systems have customers, not
    /// people, so a pipeline's `contacts:` rules do not apply to them.
    fn manages_contacts(&self) -> bool {
        true
    }

    /// The longest value the system stores in each field rollcall writes, from the vendor's
    /// own description. The planner fits values to these before anything is sent.
    fn field_limits(&self) -> FieldLimits {
        FieldLimits::default()
    }

    /// The longest invoice text the system accepts ([`FieldLimits::line_description`]). The
    /// engine shortens longer text (a long list of names) before planning, so the plan shows
    /// what will be written.
    fn invoice_text_limit(&self) -> Option<usize> {
        self.field_limits().line_description
    }

    /// Called once per run before the clients are read, with every account the run will read:
    /// a system with a tight rate limit (Xero's 60 calls a minute) reads customers and invoices
    /// for all clients in a few pages here and answers `read` from that, instead of spending
    /// calls per client. Must never make `read` answer staler than the start of the run.
    async fn prepare(
        &self,
        _accounts: &[BillingAccount],
        _products: &[String],
    ) -> Result<(), RemoteError> {
        Ok(())
    }

    /// Reads the client's current state. `products` are the catalogue identifiers the pipeline
    /// bills, so only those additions (or invoice lines) are compared; others are left alone.
    /// An invoice-model system finds the customer (an empty `company_id` when there is none
    /// yet) and the invoice of `account.invoice`'s reference, cut down to this client's lines.
    async fn read(
        &self,
        account: &BillingAccount,
        products: &[String],
    ) -> Result<ClientState, RemoteError>;

    /// Applies one change. Must be safe to call again after a failure or a crash: a create
    /// first looks for the object it would make.
    async fn apply(&self, account: &AccountRef, change: &Change) -> Result<Applied, RemoteError>;

    /// The system's service desk, for PSAs that have one.
    fn service_desk(&self) -> Option<&dyn ServiceDesk> {
        None
    }
}
