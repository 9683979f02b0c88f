//! Which plans wait for a person before they are written (`policy:` in a pipeline).
//!
//! A guard refuses what looks like a bad read; some MSPs also want every reduction, or every
//! change, looked at by someone before the client's bill moves. Such a plan is kept as a pending
//! approval (`src/approvals`) exactly like a refused one, so there is one way on for both:
//! `rollcall approve ID`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::At;

/// What a pipeline asks a person to approve before it is written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Which plans wait for `rollcall approve ID`, besides those a guard refuses: `none` (the
    /// default), `reductions` (a plan that lowers a client's seats or money, or deactivates a
    /// contact) or `all` (a plan that changes anything).
    #[serde(default)]
    pub approve: Option<ApproveWhen>,
    /// Days a pending approval waits for a decision before it expires (and a later run plans
    /// afresh). Default: 14.
    #[serde(default)]
    pub approval_expires_days: Option<At<u32>>,
}

/// Which plans need a person's approval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApproveWhen {
    /// Only what a guard refuses.
    #[default]
    None,
    /// Every plan that lowers a client's bill: fewer seats, less money, a contact deactivated.
    Reductions,
    /// Every plan that changes anything.
    All,
}

/// The policy as the engine uses it.
#[derive(Debug, Clone, Copy)]
pub struct ApprovalPolicy {
    pub approve: ApproveWhen,
    /// How long a pending approval waits.
    pub expires_after: chrono::Duration,
}

/// Days a pending approval waits when the pipeline does not say.
pub const DEFAULT_EXPIRY_DAYS: u32 = 14;

impl Default for ApprovalPolicy {
    fn default() -> Self {
        ApprovalPolicy {
            approve: ApproveWhen::None,
            expires_after: chrono::Duration::days(i64::from(DEFAULT_EXPIRY_DAYS)),
        }
    }
}

impl From<&RawPolicy> for ApprovalPolicy {
    fn from(raw: &RawPolicy) -> Self {
        ApprovalPolicy {
            approve: raw.approve.unwrap_or_default(),
            expires_after: chrono::Duration::days(i64::from(
                raw.approval_expires_days
                    .as_ref()
                    .map_or(DEFAULT_EXPIRY_DAYS, |d| d.value),
            )),
        }
    }
}
