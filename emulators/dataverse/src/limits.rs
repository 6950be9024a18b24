//! Service protection limits ("Service protection API limits",
//! https://learn.microsoft.com/power-apps/developer/data-platform/api-limits): per user, a
//! sliding window on the number of requests and on combined execution time, and a cap on
//! concurrent requests. Over a limit the API answers 429 with `Retry-After` (seconds) and one of
//! three documented error codes; a throttled request does no work and is not counted.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::config::Limits;
use crate::error::ApiError;

/// A 429 with its Retry-After.
#[derive(Debug, Clone)]
pub struct Throttled {
    pub error: ApiError,
    pub retry_after_secs: u64,
}

#[derive(Debug, Default)]
struct Window {
    requests: VecDeque<Instant>,
    exec: VecDeque<(Instant, Duration)>,
    in_flight: u32,
}

impl Window {
    fn prune(&mut self, now: Instant, window: Duration) {
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            self.requests.pop_front();
        }
        while self
            .exec
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= window)
        {
            self.exec.pop_front();
        }
    }
}

/// Per-user windows.
#[derive(Debug, Default)]
pub struct Limiter {
    users: HashMap<String, Window>,
}

fn secs_until(expiry: Instant, now: Instant) -> u64 {
    let d = expiry.saturating_duration_since(now);
    // Whole seconds, rounded up, at least 1: a client waiting that long is admitted.
    (d.as_millis().div_ceil(1000) as u64).max(1)
}

impl Limiter {
    /// Admits a request (counting it and marking it in flight) or explains the throttle.
    pub fn admit(&mut self, user: &str, limits: &Limits, now: Instant) -> Result<(), Throttled> {
        let w = self.users.entry(user.to_string()).or_default();
        w.prune(now, limits.window);
        if w.in_flight >= limits.max_concurrency {
            return Err(Throttled {
                error: ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072326",
                    format!(
                        "Number of concurrent requests exceeded the limit of {}.",
                        limits.max_concurrency
                    ),
                ),
                retry_after_secs: 1,
            });
        }
        if w.requests.len() >= limits.max_requests as usize {
            // Enough of the window frees up when the oldest counted request leaves it.
            let excess = w.requests.len() + 1 - limits.max_requests as usize;
            let frees = w.requests.get(excess - 1).copied().unwrap_or(now) + limits.window;
            return Err(Throttled {
                error: ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072322",
                    format!(
                        "Number of requests exceeded the limit of {} over time window of {} seconds.",
                        limits.max_requests,
                        limits.window.as_secs()
                    ),
                ),
                retry_after_secs: secs_until(frees, now),
            });
        }
        let total: Duration = w.exec.iter().map(|(_, d)| *d).sum();
        if total >= limits.max_execution {
            let mut remaining = total;
            let mut frees = now;
            for (t, d) in &w.exec {
                remaining = remaining.saturating_sub(*d);
                frees = *t + limits.window;
                if remaining < limits.max_execution {
                    break;
                }
            }
            return Err(Throttled {
                error: ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "0x80072321",
                    format!(
                        "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                        limits.max_execution.as_millis(),
                        limits.window.as_secs()
                    ),
                ),
                retry_after_secs: secs_until(frees, now),
            });
        }
        w.requests.push_back(now);
        w.in_flight += 1;
        Ok(())
    }

    /// Adds the execution time of work a request did.
    pub fn charge(&mut self, user: &str, cost: Duration, now: Instant) {
        if cost > Duration::ZERO {
            self.users
                .entry(user.to_string())
                .or_default()
                .exec
                .push_back((now, cost));
        }
    }

    pub fn release(&mut self, user: &str) {
        if let Some(w) = self.users.get_mut(user) {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.users.values().map(|w| w.in_flight).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_limit_and_retry_after() {
        let limits = Limits {
            window: Duration::from_secs(2),
            max_requests: 2,
            ..Limits::default()
        };
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            l.admit("u", &limits, t0).unwrap();
            l.release("u");
        }
        let e = l.admit("u", &limits, t0).unwrap_err();
        assert_eq!(e.error.code, "0x80072322");
        assert_eq!(e.retry_after_secs, 2);
        assert!(l.admit("u", &limits, t0 + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn execution_limit() {
        let limits = Limits {
            max_execution: Duration::from_millis(10),
            ..Limits::default()
        };
        let mut l = Limiter::default();
        let t0 = Instant::now();
        l.admit("u", &limits, t0).unwrap();
        l.charge("u", Duration::from_millis(10), t0);
        l.release("u");
        assert_eq!(
            l.admit("u", &limits, t0).unwrap_err().error.code,
            "0x80072321"
        );
    }
}
