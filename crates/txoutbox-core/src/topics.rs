//! The registry of topic definitions, looked up by message type when publishing.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::message::NewMessage;
use crate::topic::Topic;

/// The topics an application publishes to, one per message type.
///
/// ```
/// # use serde::Serialize;
/// # use txoutbox_core::{Topic, Topics};
/// # #[derive(Serialize)] struct OrderCreated { id: u64 }
/// # #[derive(Serialize)] struct OrderShipped { id: u64 }
/// let topics = Topics::new()
///     .with(Topic::<OrderCreated>::json("orders.created")?.key(|o| o.id.to_string()))?
///     .with(Topic::<OrderShipped>::json("orders.shipped")?.key(|o| o.id.to_string()))?;
/// assert_eq!(topics.len(), 2);
/// # Ok::<(), txoutbox_core::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Topics {
    by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    names: Vec<String>,
}

impl std::fmt::Debug for Topics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topics").field("names", &self.names).finish()
    }
}

impl Topics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the topic of message type `T`; a second topic for the same type is an error.
    pub fn with<T: 'static>(mut self, topic: Topic<T>) -> Result<Self> {
        let type_id = TypeId::of::<T>();
        if self.by_type.contains_key(&type_id) {
            return Err(Error::DuplicateTopic {
                type_name: std::any::type_name::<T>(),
            });
        }
        self.names.push(topic.name().to_owned());
        self.by_type.insert(type_id, Arc::new(topic));
        Ok(self)
    }

    /// The topic defined for message type `T`.
    pub fn get<T: 'static>(&self) -> Result<&Topic<T>> {
        self.by_type
            .get(&TypeId::of::<T>())
            .and_then(|topic| topic.downcast_ref::<Topic<T>>())
            .ok_or(Error::UnknownTopic {
                type_name: std::any::type_name::<T>(),
            })
    }

    /// Encodes one message with its type's topic.
    pub fn encode<T: 'static>(&self, message: &T) -> Result<NewMessage> {
        self.get::<T>()?.encode(message)
    }

    /// Encodes many messages of one type.
    pub fn encode_all<'a, T: 'static>(
        &self,
        messages: impl IntoIterator<Item = &'a T>,
    ) -> Result<Vec<NewMessage>> {
        let topic = self.get::<T>()?;
        let trace = crate::trace_context::current();
        messages
            .into_iter()
            .map(|m| topic.encode_traced(m, &trace))
            .collect()
    }

    /// The names of the registered topics, in registration order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// How many topics are registered.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no topic is registered.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Known;
    struct Unknown;

    #[test]
    fn unknown_type_is_a_typed_error() {
        let topics = Topics::new()
            .with(Topic::<Known>::json("known").unwrap())
            .unwrap();
        assert!(topics.encode(&Known).is_ok());
        let err = topics.encode(&Unknown).unwrap_err();
        assert!(matches!(err, Error::UnknownTopic { type_name } if type_name.ends_with("Unknown")));
        assert!(err.to_string().contains("Topic::<"), "{err}");
    }

    #[test]
    fn duplicate_type_is_rejected() {
        let err = Topics::new()
            .with(Topic::<Known>::json("a").unwrap())
            .unwrap()
            .with(Topic::<Known>::json("b").unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::DuplicateTopic { .. }));
    }
}
