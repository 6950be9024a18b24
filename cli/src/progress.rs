//! A one-line progress bar on stderr, redrawn at most ten times a second, and only when stderr
//! is a terminal (logs and CI output stay clean): done of total, the rate since the bar started
//! and the time left at that rate.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    show: bool,
    drawn: Option<Instant>,
    /// When the bar first saw progress, and how much was done then: the rate is measured
    /// from there (work done before the bar started does not inflate it).
    first: Option<(Instant, u64)>,
}

const WIDTH: u64 = 30;

impl Progress {
    pub fn new(label: &str, total: u64, show: bool) -> Progress {
        Progress {
            label: label.to_string(),
            total: total.max(1),
            done: 0,
            show: show && std::io::stderr().is_terminal(),
            drawn: None,
            first: None,
        }
    }

    /// A new total (a job's reading total, then its writing total).
    pub fn set_total(&mut self, label: &str, total: u64) {
        if self.total != total.max(1) || self.label != label {
            self.label = label.to_string();
            self.total = total.max(1);
            self.first = None;
        }
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.first.is_none() {
            self.first = Some((Instant::now(), done));
        }
        if self
            .drawn
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.draw();
        }
    }

    pub fn finish(&mut self) {
        if self.show && self.drawn.is_some() {
            self.draw();
            eprintln!();
        }
    }

    fn draw(&mut self) {
        if !self.show {
            return;
        }
        self.drawn = Some(Instant::now());
        let filled = (self.done.min(self.total) * WIDTH / self.total) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            "-".repeat(WIDTH as usize - filled)
        );
        let mut err = std::io::stderr().lock();
        let rate = self
            .first
            .map(|(t, d0)| {
                rate_and_eta(
                    self.done.saturating_sub(d0),
                    t.elapsed(),
                    self.total.saturating_sub(self.done),
                )
            })
            .unwrap_or_default();
        let _ = write!(
            err,
            "\r  {:<13}[{bar}] {}/{}{rate}\x1b[K",
            self.label, self.done, self.total
        );
        let _ = err.flush();
    }
}

/// `  812/s  ETA 1m05s` from what was done in `elapsed` and what is left; empty until there is
/// a rate to speak of.
pub fn rate_and_eta(done: u64, elapsed: Duration, left: u64) -> String {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs < 0.5 {
        return String::new();
    }
    let rate = done as f64 / secs;
    let eta = (left as f64 / rate).ceil() as u64;
    let eta = match eta {
        0 => "done".to_string(),
        s if s < 60 => format!("ETA {s}s"),
        s if s < 3600 => format!("ETA {}m{:02}s", s / 60, s % 60),
        s => format!("ETA {}h{:02}m", s / 3600, (s % 3600) / 60),
    };
    format!("  {}/s  {eta}", rate.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_and_time_left() {
        assert_eq!(rate_and_eta(0, Duration::from_secs(5), 100), "");
        assert_eq!(rate_and_eta(10, Duration::from_millis(100), 100), "");
        assert_eq!(
            rate_and_eta(100, Duration::from_secs(10), 50),
            "  10/s  ETA 5s"
        );
        assert_eq!(
            rate_and_eta(10, Duration::from_secs(1), 650),
            "  10/s  ETA 1m05s"
        );
        assert_eq!(
            rate_and_eta(1, Duration::from_secs(1), 7200),
            "  1/s  ETA 2h00m"
        );
        assert_eq!(rate_and_eta(5, Duration::from_secs(1), 0), "  5/s  done");
    }
}
