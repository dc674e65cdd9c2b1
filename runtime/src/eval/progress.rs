//! A progress line with a rate and an ETA, printed at most every few seconds (plain
//! lines rather than a redrawn bar: the CLI's stderr is any `Write`, often a log file).

use std::io::Write;
use std::time::{Duration, Instant};

/// `42s`, `3m07s`, `2h05m`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// Rate-limited progress of `total` units of work.
pub struct Progress {
    label: String,
    unit: &'static str,
    total: usize,
    start: Instant,
    last: Instant,
    interval: Duration,
}

impl Progress {
    /// Prints at most every 5 seconds, and once at the end.
    pub fn new(label: impl Into<String>, unit: &'static str, total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            label: label.into(),
            unit,
            total,
            start: now,
            last: now,
            interval: Duration::from_secs(5),
        }
    }

    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// `label: done/total units (p%), r units/s, elapsed e, ETA t`.
    pub fn line(&self, done: usize, elapsed: f64) -> String {
        let pct = if self.total == 0 {
            100.0
        } else {
            100.0 * done as f64 / self.total as f64
        };
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta = if done >= self.total {
            "done".to_string()
        } else if rate > 0.0 {
            format!("ETA {}", format_duration((self.total - done) as f64 / rate))
        } else {
            "ETA ?".to_string()
        };
        format!(
            "{}: {done}/{} {} ({pct:.1}%), {rate:.2} {}/s, elapsed {}, {eta}",
            self.label,
            self.total,
            self.unit,
            self.unit,
            format_duration(elapsed)
        )
    }

    /// Reports `done` units if the interval has passed since the last line, or at the end.
    pub fn update(&mut self, done: usize, out: &mut dyn Write) {
        let now = Instant::now();
        if done >= self.total || now.duration_since(self.last) >= self.interval {
            self.last = now;
            let line = self.line(done, now.duration_since(self.start).as_secs_f64());
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}
