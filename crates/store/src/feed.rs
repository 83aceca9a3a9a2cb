//! The change feed behind watches: every committed write or delete of a resource, in
//! version order, kept for the last [`RECENT`] changes so that a watch can resume from a
//! `resourceVersion`, and broadcast to live watchers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

/// Changes kept for watches that resume from a version.
const RECENT: usize = 1024;

/// What happened to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeType {
    Added,
    Modified,
    Deleted,
}

impl ChangeType {
    /// Kubernetes' watch event type.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeType::Added => "ADDED",
            ChangeType::Modified => "MODIFIED",
            ChangeType::Deleted => "DELETED",
        }
    }
}

/// One committed change: the document as stored (for a delete, as it was last).
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub version: i64,
    pub change: ChangeType,
    pub body: String,
}

/// A watch resumed from a version older than the changes kept.
#[derive(Debug)]
pub struct TooOld {
    pub oldest: i64,
}

/// The kept changes a watch starts with, and its subscription to the ones that follow.
pub(crate) type Subscription = (Vec<Arc<Change>>, broadcast::Receiver<Arc<Change>>);

pub(crate) struct Feed {
    recent: Mutex<VecDeque<Arc<Change>>>,
    live: broadcast::Sender<Arc<Change>>,
}

impl Feed {
    pub(crate) fn new() -> Feed {
        Feed { recent: Mutex::new(VecDeque::with_capacity(RECENT)), live: broadcast::channel(RECENT).0 }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Change>>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the writer after the transaction holding `changes` committed.
    pub(crate) fn publish(&self, changes: Vec<Change>) {
        let mut recent = self.lock();
        for change in changes {
            let change = Arc::new(change);
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(change.clone());
            let _ = self.live.send(change);
        }
    }

    /// The kept changes after `after` (none when `None`) and, atomically with them, a
    /// subscription to the changes that follow.
    pub(crate) fn watch(&self, after: Option<i64>) -> Result<Subscription, TooOld> {
        let recent = self.lock();
        let live = self.live.subscribe();
        let Some(after) = after else { return Ok((Vec::new(), live)) };
        if recent.len() == RECENT
            && let Some(oldest) = recent.front()
            && oldest.version > after + 1
        {
            return Err(TooOld { oldest: oldest.version });
        }
        Ok((recent.iter().filter(|c| c.version > after).cloned().collect(), live))
    }
}
