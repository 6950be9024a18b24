//! Adaptive concurrency for Dataverse writes, as "Send parallel requests" and "Service protection
//! API limits" advise: start from the `x-ms-dop-hint` the service sends, and on a 429 pause
//! everything for its Retry-After (the limits are per user, so every request would be refused
//! alike).
//!
//! What else a 429 changes depends on which limit it names. Over the concurrent-request limit
//! (`0x80072326`) fewer requests must be in flight: the limiter steps down, remembers the level
//! that was throttled and settles just below it, probing above only after a long calm; a second
//! 429 soon after the first means the budget shrank, and it halves. Over the request-count or
//! execution-time budget of the sliding window (`0x80072322`, `0x80072321`) the level is not the
//! cause: the window is full, and its Retry-After says when enough of it frees. Stepping down
//! there would leave the window's budget unspent once it frees (the settled level could stay
//! below the rate the budget allows for the rest of a run), so the limiter only pauses.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

pub struct Limiter {
    state: Mutex<State>,
    changed: Notify,
}

struct State {
    in_flight: u32,
    limit: u32,
    /// Ceiling: configured maximum, lowered to the service's hint once known.
    max: u32,
    configured_max: u32,
    successes: u32,
    paused_until: Option<Instant>,
    /// Highest level known not to be throttled, once a 429 has been seen.
    settled: Option<u32>,
    last_throttle: Option<Instant>,
}

/// Which service protection limit a 429 names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Too many requests at once (`0x80072326`), or a 429 that does not say.
    Concurrency,
    /// The sliding window's request count or execution time is spent (`0x80072322`,
    /// `0x80072321`).
    Budget,
}

impl Throttle {
    /// From the 429's error code.
    pub fn of_code(code: &str) -> Throttle {
        match code {
            "0x80072322" | "0x80072321" => Throttle::Budget,
            _ => Throttle::Concurrency,
        }
    }
}

/// A slot; released on drop.
pub struct Permit<'a> {
    limiter: &'a Limiter,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.limiter.state.lock().expect("lock").in_flight -= 1;
        self.limiter.changed.notify_waiters();
    }
}

impl Limiter {
    pub fn new(initial: u32, max: u32) -> Self {
        let max = max.max(1);
        Limiter {
            state: Mutex::new(State {
                in_flight: 0,
                limit: initial.clamp(1, max),
                max,
                configured_max: max,
                successes: 0,
                paused_until: None,
                settled: None,
                last_throttle: None,
            }),
            changed: Notify::new(),
        }
    }

    pub async fn acquire(&self) -> Permit<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait_until = {
                let mut st = self.state.lock().expect("lock");
                match st.paused_until {
                    Some(t) if t > Instant::now() => Some(t),
                    _ => {
                        st.paused_until = None;
                        if st.in_flight < st.limit {
                            st.in_flight += 1;
                            return Permit { limiter: self };
                        }
                        None
                    }
                }
            };
            match wait_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => notified.await,
            }
        }
    }

    /// The service's recommended degree of parallelism.
    pub fn on_hint(&self, dop: u32) {
        let mut st = self.state.lock().expect("lock");
        let max = dop.clamp(1, st.configured_max);
        if max != st.max {
            // The first hint sets the pace; later ones move the ceiling.
            if st.max == st.configured_max && st.limit < max {
                st.limit = max;
            }
            st.max = max;
            st.limit = st.limit.min(max);
            drop(st);
            self.changed.notify_waiters();
        }
    }

    pub fn on_throttle(&self, retry_after: Duration, limit: Throttle) {
        let mut st = self.state.lock().expect("lock");
        let now = Instant::now();
        let until = now + retry_after;
        // Requests that were in flight together are refused together: one step down for all.
        let already_paused = st.paused_until.is_some_and(|t| t > now);
        if !already_paused && limit == Throttle::Concurrency {
            let soon_again = st
                .last_throttle
                .is_some_and(|t| now - t < retry_after * 3 + Duration::from_secs(1));
            st.limit = if soon_again {
                (st.limit / 2).max(1)
            } else {
                st.limit.saturating_sub(1).max(1)
            };
            st.settled = Some(st.limit);
            st.successes = 0;
            st.last_throttle = Some(until);
        }
        if st.paused_until.is_none_or(|t| t < until) {
            st.paused_until = Some(until);
        }
    }

    pub fn on_success(&self) {
        let mut st = self.state.lock().expect("lock");
        st.successes += 1;
        // Below the settled level ramp up quickly; at or above it, probe rarely.
        let needed = match st.settled {
            Some(s) if st.limit >= s => st.limit * 200,
            _ => st.limit,
        };
        if st.successes >= needed && st.limit < st.max {
            st.limit += 1;
            st.successes = 0;
            drop(st);
            self.changed.notify_waiters();
        }
    }

    pub fn limit(&self) -> u32 {
        self.state.lock().expect("lock").limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn halves_on_throttle_pauses_and_ramps_up() {
        let l = Limiter::new(4, 52);
        l.on_hint(8);
        assert_eq!(l.limit(), 8);
        l.on_throttle(Duration::from_secs(2), Throttle::Concurrency);
        // Everything in flight was refused at once: one step down, not one per request.
        l.on_throttle(Duration::from_secs(2), Throttle::Concurrency);
        assert_eq!(l.limit(), 7);
        let start = Instant::now();
        let p = l.acquire().await;
        assert!(
            Instant::now() - start >= Duration::from_secs(2),
            "paused for Retry-After"
        );
        drop(p);
        // Settled at 7: probing 8 takes a long calm.
        for _ in 0..100 {
            l.on_success();
        }
        assert_eq!(l.limit(), 7);
        for _ in 0..1300 {
            l.on_success();
        }
        assert_eq!(l.limit(), 8);
        // Throttled again soon after: the budget shrank, halve.
        tokio::time::advance(Duration::from_secs(3)).await;
        l.on_throttle(Duration::from_secs(2), Throttle::Concurrency);
        assert_eq!(l.limit(), 4);
        l.on_hint(100);
        assert!(l.limit() <= 52);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_pauses_without_stepping_down() {
        let l = Limiter::new(8, 52);
        for code in ["0x80072321", "0x80072322"] {
            tokio::time::advance(Duration::from_secs(10)).await;
            l.on_throttle(Duration::from_secs(3), Throttle::of_code(code));
            assert_eq!(l.limit(), 8, "{code}");
            let start = Instant::now();
            drop(l.acquire().await);
            assert!(Instant::now() - start >= Duration::from_secs(3), "{code}");
        }
        // Below the level after the pause, it still ramps up at the usual pace.
        for _ in 0..8 {
            l.on_success();
        }
        assert_eq!(l.limit(), 9);
        assert_eq!(Throttle::of_code("0x80072326"), Throttle::Concurrency);
        assert_eq!(Throttle::of_code(""), Throttle::Concurrency);
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_in_flight_than_the_limit() {
        let l = std::sync::Arc::new(Limiter::new(2, 2));
        let a = l.acquire().await;
        let _b = l.acquire().await;
        let l2 = l.clone();
        let waiter = tokio::spawn(async move {
            let _c = l2.acquire().await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        drop(a);
        waiter.await.unwrap();
    }
}
