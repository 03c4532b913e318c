//! A cloneable cancellation signal (Ctrl-C, a TUI's stop button, a test).

use std::sync::Arc;

use tokio::sync::watch;

/// Cancels a run when [`CancelToken::cancel`] is called on any clone; the run
/// stops sending, marks unfinished requests `cancelled` and returns what it
/// measured.
#[derive(Clone, Debug)]
pub struct CancelToken {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// Cancels every holder of a clone of this token.
    pub fn cancel(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Self::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the token is cancelled.
    pub async fn cancelled(&self) {
        let mut rx = self.tx.subscribe();
        // `wait_for` fails only when the sender is gone, and we hold it.
        let _ = rx.wait_for(|c| *c).await;
    }
}
