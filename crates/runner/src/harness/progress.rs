//! Progress of long work. On a terminal, a live bar (`indicatif`) with the count, the rate and
//! the time left; elsewhere (CI, Slurm, a pipe) plain lines on stderr, one at every tenth of the
//! work and at least one a minute, each with the same facts:
//!
//! ```text
//! [2/12] steps 40/400 (10%) loss 0.5231 · accuracy 0.8120, 3.12 steps/s, about 1 min 55 s left
//! ```
//!
//! Work resumed part-way (a checkpoint at step 200) is timed from where it resumed.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Most time between two plain lines.
const PLAIN_EVERY: Duration = Duration::from_secs(60);

/// A count of work done out of a total, shown as a bar or as plain lines.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The bars drawn together with this one (a run's steps and its evaluation).
    multi: Option<MultiProgress>,
    /// Plain lines off a terminal (an evaluation's result is logged instead).
    plain: bool,
    prefix: String,
    unit: String,
    total: u64,
    /// The count when this process started on the work (work resumed part-way), and when.
    base: (u64, Instant),
    last_line: Instant,
    /// The next tenth of the work that gets a plain line.
    next_tenth: u64,
    done: u64,
}

impl Progress {
    /// Progress of `total` `unit`s (`steps`, `windows`, `passages`), its lines prefixed by
    /// `prefix`; a bar when stderr is a terminal. `start` of them were done at `since`, when
    /// this process started on the work (0 and now, unless resumed).
    pub fn new(prefix: &str, unit: &str, total: u64, start: u64, since: Instant) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(&format!(
                "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{per_sec}}, {{eta}} left)"
            ))
            .expect("a valid progress template")
            .progress_chars("#>.");
            let bar = ProgressBar::new(total).with_style(style);
            bar.set_prefix(prefix.to_string());
            bar.set_position(start);
            bar.reset_eta();
            bar
        });
        Self {
            bar,
            multi: None,
            plain: true,
            prefix: prefix.into(),
            unit: unit.into(),
            total,
            base: (start, since),
            last_line: Instant::now(),
            next_tenth: (start * 10) / total.max(1) + 1,
            done: start,
        }
    }

    /// Draw the bar among `multi`'s (lines printed through it go above them all).
    pub fn within(mut self, multi: &MultiProgress) -> Self {
        if let Some(bar) = self.bar.take() {
            self.bar = Some(multi.add(bar));
            self.multi = Some(multi.clone());
        }
        self
    }

    /// A bar on a terminal, and nothing elsewhere.
    pub fn terminal_only(mut self) -> Self {
        self.plain = false;
        self
    }

    /// Whether `done` of `total` `unit`s goes on this count (the same unit and total, and not
    /// fewer done than before); otherwise it is a new count, with a bar of its own.
    pub fn goes_on(&self, unit: &str, total: u64, done: u64) -> bool {
        self.unit == unit && self.total == total && done >= self.done
    }

    /// `done` of the total are done; `message` says how it goes (`loss 0.5231`).
    pub fn update(&mut self, done: u64, message: &str) {
        let now = Instant::now();
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(message.to_string());
            return;
        }
        if !self.plain {
            return;
        }
        let tenth = (done * 10) / self.total.max(1);
        let due =
            done >= self.total || tenth >= self.next_tenth || now - self.last_line >= PLAIN_EVERY;
        if due {
            self.next_tenth = tenth + 1;
            self.last_line = now;
            eprintln!("{}", self.line(message));
        }
    }

    /// The plain line for the current count.
    pub fn line(&self, message: &str) -> String {
        let pct = 100 * self.done / self.total.max(1);
        let mut line = format!(
            "{} {} {}/{} ({pct}%)",
            self.prefix, self.unit, self.done, self.total
        );
        if !message.is_empty() {
            line.push(' ');
            line.push_str(message);
        }
        if let Some(rate) = self.rate() {
            line.push_str(&format!(", {rate:.2} {}/s", self.unit));
            if let Some(left) = self.seconds_left() {
                line.push_str(&format!(", about {} left", human(left)));
            }
        }
        line
    }

    /// Units per second since this process started counting (`None` before any was done).
    pub fn rate(&self) -> Option<f64> {
        let (base, since) = self.base;
        let done = self.done.checked_sub(base).filter(|&d| d > 0)?;
        Some(done as f64 / since.elapsed().as_secs_f64().max(1e-9))
    }

    /// Seconds left at the current rate.
    pub fn seconds_left(&self) -> Option<f64> {
        Some(self.total.saturating_sub(self.done) as f64 / self.rate()?)
    }

    /// Print `line` on stderr, above the bar when there is one.
    pub fn println(&self, line: &str) {
        match (&self.multi, &self.bar) {
            (Some(multi), _) => {
                let _ = multi.println(line);
            }
            (None, Some(bar)) => bar.println(line),
            (None, None) => eprintln!("{line}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// A duration for people: `45 s`, `3 min 20 s`, `2 h 05 min`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {:02} s", s / 60, s % 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(44.6), "45 s");
        assert_eq!(human(200.0), "3 min 20 s");
        assert_eq!(human(7500.0), "2 h 05 min");
        assert_eq!(human(-3.0), "0 s");
    }

    #[test]
    fn a_plain_line_says_count_share_rate_and_time_left() {
        let mut p = Progress::new(
            "[1/2] cell",
            "steps",
            400,
            20,
            Instant::now() - Duration::from_secs(5),
        );
        p.bar = None;
        p.done = 40;
        let line = p.line("loss 0.5000");
        assert!(
            line.starts_with("[1/2] cell steps 40/400 (10%) loss 0.5000, 4.00 steps/s"),
            "{line}"
        );
        assert!(line.ends_with("about 1 min 30 s left"), "{line}");
    }
}
