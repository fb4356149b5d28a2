//! Every message the bot sends goes through one queue that keeps within Telegram's limits: a
//! token bucket per chat (by default a burst of 5, then 20 a minute — the group limit) and a
//! global one (30 a second). Notices in the moderated chat are best-effort: one that would have
//! to wait for its chat's budget is dropped (a flood of notices helps nobody); reports to the log
//! chat and answers to commands wait their turn.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::BotApi;

/// Sending limits.
#[derive(Clone, Debug)]
pub struct RateLimits {
    /// Messages a chat can receive at once.
    pub per_chat_burst: u32,
    /// Then this many a minute.
    pub per_chat_per_minute: u32,
    /// Global messages per second.
    pub global_per_second: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits { per_chat_burst: 5, per_chat_per_minute: 20, global_per_second: 30 }
    }
}

/// What a message is, which decides whether it may be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Neutral notice after a removal (dropped rather than delayed).
    Notice,
    /// Report to an admin log chat.
    Report,
    /// Answer to a command.
    Reply,
}

#[derive(Debug)]
struct Out {
    chat: i64,
    text: String,
    reply_to: Option<i64>,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    cap: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    fn new(cap: f64, per_sec: f64, now: Instant) -> Bucket {
        Bucket { tokens: cap, cap, per_sec, last: now }
    }
    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.per_sec).min(self.cap);
        self.last = now;
    }
    /// Time until one token is available.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_sec)
        }
    }
}

/// Token buckets per chat and global.
#[derive(Debug)]
pub struct Limiter {
    limits: RateLimits,
    chats: HashMap<i64, Bucket>,
    global: Bucket,
}

impl Limiter {
    /// New limiter.
    pub fn new(limits: RateLimits) -> Limiter {
        let now = Instant::now();
        let g = f64::from(limits.global_per_second.max(1));
        Limiter { global: Bucket::new(g, g, now), chats: HashMap::new(), limits }
    }

    fn chat(&mut self, chat: i64, now: Instant) -> &mut Bucket {
        let l = &self.limits;
        let (cap, rate) =
            (f64::from(l.per_chat_burst.max(1)), f64::from(l.per_chat_per_minute.max(1)) / 60.0);
        self.chats.entry(chat).or_insert_with(|| Bucket::new(cap, rate, now))
    }

    /// How long a message to `chat` must wait now (0: it may go).
    pub fn delay(&mut self, chat: i64, now: Instant) -> Duration {
        let c = self.chat(chat, now).wait(now);
        c.max(self.global.wait(now))
    }

    /// Takes a token from `chat`'s bucket and the global one (call when `delay` is 0).
    pub fn take(&mut self, chat: i64, now: Instant) {
        self.chat(chat, now).tokens -= 1.0;
        self.global.tokens -= 1.0;
        if self.chats.len() > 10_000 {
            // Forget full buckets (chats that have been quiet).
            self.chats.retain(|_, b| {
                b.refill(now);
                b.tokens < b.cap
            });
        }
    }

    /// Waits for a token (or returns false at once for a notice that would have to wait).
    pub async fn acquire(&mut self, chat: i64, droppable: bool) -> bool {
        loop {
            let d = self.delay(chat, Instant::now());
            if d.is_zero() {
                self.take(chat, Instant::now());
                return true;
            }
            if droppable {
                return false;
            }
            tokio::time::sleep(d).await;
        }
    }
}

/// The sending queue.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Out>,
    task: JoinHandle<()>,
}

/// A handle to queue messages (cheap to clone).
#[derive(Clone, Debug)]
pub struct OutboxHandle {
    tx: mpsc::UnboundedSender<Out>,
}

impl OutboxHandle {
    /// Queues `text` for `chat`.
    pub fn send(&self, chat: i64, text: String, reply_to: Option<i64>, kind: Kind) {
        let _ = self.tx.send(Out { chat, text, reply_to, kind });
    }
}

impl Outbox {
    /// Starts the sender task.
    pub fn start(api: BotApi, limits: RateLimits) -> Outbox {
        let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
        let task = tokio::spawn(async move {
            let mut limiter = Limiter::new(limits);
            while let Some(m) = rx.recv().await {
                if !limiter.acquire(m.chat, m.kind == Kind::Notice).await {
                    tracing::info!(chat = m.chat, "notice dropped: the chat's message budget is spent");
                    continue;
                }
                if let Err(e) = api.send_message(m.chat, &m.text, m.reply_to).await {
                    tracing::warn!(chat = m.chat, kind = ?m.kind, error = %e, "sendMessage failed");
                }
            }
        });
        Outbox { tx, task }
    }

    /// A handle for queueing.
    pub fn handle(&self) -> OutboxHandle {
        OutboxHandle { tx: self.tx.clone() }
    }

    /// Sends what is queued (every handle must be dropped first) and stops.
    pub async fn close(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn per_chat_burst_then_rate_and_global_cap() {
        let mut l =
            Limiter::new(RateLimits { per_chat_burst: 3, per_chat_per_minute: 20, global_per_second: 4 });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(-1, false).await);
        }
        assert_eq!(Instant::now(), t0, "the burst goes at once");
        // A notice past the burst is dropped, not delayed.
        assert!(!l.acquire(-1, true).await);
        assert_eq!(Instant::now(), t0);
        // A report waits for the next token: 60 s / 20 = 3 s.
        assert!(l.acquire(-1, false).await);
        let waited = Instant::now() - t0;
        assert!(waited >= Duration::from_millis(2990) && waited <= Duration::from_millis(3010), "{waited:?}");
        // Another chat has its own bucket, but the global one (4/s; 3 left) still applies.
        let t1 = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(-2, false).await);
        }
        assert_eq!(Instant::now(), t1, "chat -2 has its own full bucket");
        assert!(l.acquire(-3, false).await);
        let waited = Instant::now() - t1;
        assert!(
            waited >= Duration::from_millis(240) && waited <= Duration::from_millis(260),
            "global bucket: {waited:?}"
        );
    }
}
