//! Pure mapping from a CRM's records and notifications to Dataverse rows. No I/O.
//!
//! Reading order: [`model`] (the canonical change every queue carries), [`source`] and
//! [`profile`] (configuration and mappings as data), [`columns`] (the Dataverse column catalogue),
//! [`transform`] (value transforms and type coercion), [`mapper`] (one record → one change),
//! [`payload`] (pages and notification bodies → many), [`identity`] and [`row`] (a change → the
//! Web API request that applies it).

pub mod columns;
pub mod error;
pub mod events;
pub mod identity;
pub mod mapper;
pub mod model;
mod path;
pub mod payload;
pub mod profile;
pub mod row;
pub mod source;
pub mod transform;

pub use error::{ConfigError, KeyError, MapError, PayloadError};
pub use identity::IdentityStrategy;
pub use mapper::{Mapped, Mapper, Warning};
pub use model::{
    Change, CrmKind, DeletePolicy, Entity, FetchHint, Notice, Operation, Parent, RecordKey,
    SourceId,
};
pub use payload::{Item, Outcome};
pub use row::{DataverseOp, Method, RowContext};
pub use source::SourceConfig;

impl Mapper {
    /// The row-building context of this source under an identity strategy.
    pub fn row_context(&self, identity: IdentityStrategy) -> RowContext {
        RowContext {
            source: self.source.clone(),
            crm_choice: self.crm_choice,
            guid_passthrough: self.guid_passthrough,
            delete_policy: self.delete_policy,
            identity,
        }
    }
}
