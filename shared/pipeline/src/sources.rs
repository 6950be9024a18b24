//! The configured sources, compiled once at start-up and shared by every step.

use std::collections::HashMap;

use mapping::{ConfigError, IdentityStrategy, Mapper, RowContext, SourceConfig, SourceId};

pub struct Sources {
    by_id: HashMap<SourceId, Mapper>,
    webhooks: HashMap<SourceId, crate::webhook::WebhookAuth>,
    pub identity: IdentityStrategy,
}

impl Sources {
    pub fn new(configs: &[SourceConfig], identity: IdentityStrategy) -> Result<Self, ConfigError> {
        let mut by_id = HashMap::new();
        for (i, cfg) in configs.iter().enumerate() {
            let m = Mapper::new(cfg).map_err(|e| e.within(&format!("sources[{i}]")))?;
            if by_id.insert(cfg.id.clone(), m).is_some() {
                return Err(ConfigError::new(
                    format!("sources[{i}].id"),
                    format!("source id `{}` is used twice", cfg.id),
                ));
            }
        }
        Ok(Sources {
            by_id,
            webhooks: HashMap::new(),
            identity,
        })
    }

    pub fn get(&self, id: &SourceId) -> Option<&Mapper> {
        self.by_id.get(id)
    }

    /// Looks a source up by the id in a URL path (`/webhooks/{source}`).
    pub fn by_name(&self, name: &str) -> Option<&Mapper> {
        SourceId::new(name).ok().and_then(|id| self.by_id.get(&id))
    }

    pub fn row_context(&self, id: &SourceId) -> Option<RowContext> {
        self.get(id).map(|m| m.row_context(self.identity))
    }

    /// How a source's webhook requests are verified; `None`: webhooks are off for it.
    pub fn webhook(&self, id: &SourceId) -> Option<&crate::webhook::WebhookAuth> {
        self.webhooks.get(id)
    }

    pub fn set_webhook(&mut self, id: &SourceId, auth: crate::webhook::WebhookAuth) {
        self.webhooks.insert(id.clone(), auth);
    }

    pub fn ids(&self) -> impl Iterator<Item = &SourceId> {
        self.by_id.keys()
    }
}
