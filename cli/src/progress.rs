//! A one-line progress bar on stderr, redrawn at most ten times a second, and only when stderr
//! is a terminal (logs and CI output stay clean).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    show: bool,
    drawn: Option<Instant>,
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
        }
    }

    pub fn set(&mut self, done: u64) {
        self.done = done;
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
        let _ = write!(
            err,
            "\r  {:<13}[{bar}] {}/{}",
            self.label, self.done, self.total
        );
        let _ = err.flush();
    }
}
