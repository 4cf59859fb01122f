//! What the load generator prints: percentiles from an HDR histogram, the one-line JSON
//! summary, and a latency percentile plot as a hand-written SVG.

use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// Latencies are recorded in nanoseconds, from 1 ns to 10 minutes, with 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3)
        .expect("constant bounds satisfy low >= 1, high >= 2 * low, sigfig <= 5")
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Clients (closed loop) or the configured client count (open loop).
    pub clients: usize,
    /// Writes acknowledged.
    pub ops: u64,
    /// Writes that failed.
    pub errors: u64,
    /// Seconds from the first request to the last response.
    pub elapsed_secs: f64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub p50_us: f64,
    /// p90.
    pub p90_us: f64,
    /// p99.
    pub p99_us: f64,
    /// p99.9.
    pub p999_us: f64,
    /// The slowest.
    pub max_us: f64,
    /// CPU time of the whole process (every node, client and thread; user plus system) per
    /// acknowledged write, in microseconds, as the peers' harnesses report it.
    pub cpu_us_per_write: f64,
    /// The share of the machine's CPU time over the run that its hypervisor gave to others
    /// (steal, in percent; see [`CpuWindow::steal_pct`]), if known.
    pub steal_pct: Option<f64>,
}

impl Summary {
    /// Summarises `histogram` (nanoseconds).
    pub fn new(
        clients: usize,
        histogram: &Histogram<u64>,
        errors: u64,
        elapsed_secs: f64,
        cpu_secs: f64,
    ) -> Summary {
        let us = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            clients,
            ops: histogram.len(),
            errors,
            elapsed_secs,
            p50_us: us(0.50),
            p90_us: us(0.90),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: histogram.max() as f64 / 1000.0,
            cpu_us_per_write: if histogram.is_empty() {
                0.0
            } else {
                cpu_secs * 1e6 / histogram.len() as f64
            },
            steal_pct: None,
        }
    }

    /// The summary with the run's steal share.
    pub fn with_steal(mut self, steal_pct: Option<f64>) -> Summary {
        self.steal_pct = steal_pct;
        self
    }

    /// Acknowledged writes per second.
    pub fn writes_per_sec(&self) -> f64 {
        if self.elapsed_secs > 0.0 {
            self.ops as f64 / self.elapsed_secs
        } else {
            0.0
        }
    }

    /// The one-line JSON summary peers' benchmarks print too.
    pub fn json(&self) -> String {
        format!(
            "{{\"system\":\"ringraft\",\"clients\":{},\"ops\":{},\"writes_per_sec\":{:.0},\
\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"cpu_us_per_write\":{:.2},\"steal_pct\":{}}}",
            self.clients,
            self.ops,
            self.writes_per_sec(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.cpu_us_per_write,
            json_number(self.steal_pct, 1)
        )
    }
}

/// The plot's x positions: percentiles spaced evenly in "nines" (0, 90, 99, 99.9, …), up to
/// the resolution the sample count supports.
fn plot_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    let nines_max = (histogram.len().max(10) as f64)
        .log10()
        .floor()
        .clamp(1.0, 6.0);
    let steps = (nines_max * 20.0) as usize;
    (0..=steps)
        .map(|i| {
            let nines = i as f64 / 20.0;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, histogram.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

/// A round axis maximum at or above `v`: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// A latency-by-percentile plot (the usual HDR presentation) as an SVG document.
pub fn svg_plot(histogram: &Histogram<u64>, title: &str) -> String {
    let (width, height) = (800.0, 480.0);
    let (left, right, top, bottom) = (80.0, 30.0, 50.0, 60.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let points = plot_points(histogram);
    let nines_max = points.last().map_or(1.0, |p| p.0).max(1.0);
    let y_max = nice_ceiling(points.iter().map(|p| p.1).fold(0.0, f64::max));
    let x = |nines: f64| left + plot_w * nines / nines_max;
    let y = |us: f64| top + plot_h * (1.0 - us / y_max);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
font-family=\"sans-serif\" font-size=\"12\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"28\" \
text-anchor=\"middle\" font-size=\"15\">{}</text>",
        width / 2.0,
        escape(title)
    );
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{}\" y1=\"{py:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/>\
<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left + plot_w,
            left - 8.0,
            y(v) + 4.0,
            format_us(v),
            py = y(v),
        );
    }
    for n in 0..=(nines_max as usize) {
        let label = match n {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            n => format!("99.{}%", "9".repeat(n - 2)),
        };
        let px = x(n as f64);
        let _ = writeln!(
            s,
            "<line x1=\"{px:.1}\" x2=\"{px:.1}\" y1=\"{top}\" y2=\"{}\" stroke=\"#ddd\"/>\
<text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            top + plot_h,
            top + plot_h + 18.0
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|(n, us)| format!("{:.1},{:.1}", x(*n), y(*us)))
        .collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"{}\"/>",
        path.join(" ")
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n<text x=\"18\" \
y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">latency (µs)</text>\n</svg>",
        left + plot_w / 2.0,
        height - 15.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    s
}

fn format_us(v: f64) -> String {
    if v >= 100.0 || v == v.floor() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `v` with `digits` decimals, or `null`.
pub fn json_number(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "null".to_string(), |v| format!("{v:.digits$}"))
}

/// The machine's CPU time so far, in clock ticks summed over its CPUs: all of it, and the
/// part its hypervisor ran something else instead (steal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTicks {
    /// Every state: user, nice, system, idle, iowait, irq, softirq, steal.
    pub total: u64,
    /// Steal.
    pub steal: u64,
}

/// Reads the machine's CPU ticks from the first line of `/proc/stat` (`cpu  user nice system
/// idle iowait irq softirq steal ...`); `None` if it is not in that form. The guest columns
/// that follow steal are already counted in user and nice.
pub fn parse_proc_stat(text: &str) -> Option<HostTicks> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    if ticks.len() != 8 {
        return None;
    }
    Some(HostTicks {
        total: ticks.iter().sum(),
        steal: ticks[7],
    })
}

fn host_ticks() -> Option<HostTicks> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// The start of a measured window: the process's CPU time and the machine's ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    process_secs: f64,
    host: Option<HostTicks>,
}

/// What happened between a [`CpuMark`] and [`CpuMark::end`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuWindow {
    /// CPU time the process used (user plus system, every thread), in seconds.
    pub process_secs: f64,
    /// The share of the machine's CPU time that its hypervisor gave to others, in percent: on
    /// a shared virtual machine, how much of the run's vCPU time was not ours to use (a
    /// polling idle vCPU counts too). `None` without `/proc/stat` or when no tick passed.
    pub steal_pct: Option<f64>,
}

impl CpuMark {
    /// Now.
    pub fn now() -> CpuMark {
        CpuMark {
            process_secs: process_cpu_secs(),
            host: host_ticks(),
        }
    }

    /// The window from this mark until now.
    pub fn end(&self) -> CpuWindow {
        CpuWindow {
            process_secs: process_cpu_secs() - self.process_secs,
            steal_pct: steal_pct(self.host, host_ticks()),
        }
    }
}

/// The steal share between two readings of the machine's ticks, in percent.
pub fn steal_pct(before: Option<HostTicks>, after: Option<HostTicks>) -> Option<f64> {
    let (before, after) = (before?, after?);
    let total = after.total.checked_sub(before.total)?;
    let steal = after.steal.checked_sub(before.steal)?;
    (total > 0).then(|| 100.0 * steal as f64 / total as f64)
}

/// CPU time this process has used so far (user plus system, every thread), in seconds.
pub fn process_cpu_secs() -> f64 {
    // SAFETY: `getrusage` fills the zeroed `rusage` it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` the call may write.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_json_and_plot_come_from_the_histogram() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("in range");
        }
        let s = Summary::new(4, &h, 0, 1.0, 0.05);
        assert_eq!(s.ops, 1000);
        assert!(
            (s.cpu_us_per_write - 50.0).abs() < 1e-9,
            "{}",
            s.cpu_us_per_write
        );
        assert!(
            s.json()
                .ends_with(",\"cpu_us_per_write\":50.00,\"steal_pct\":null}"),
            "{}",
            s.json()
        );
        assert!(
            s.clone()
                .with_steal(Some(12.34))
                .json()
                .ends_with(",\"steal_pct\":12.3}"),
            "{}",
            s.json()
        );
        assert!((s.p50_us - 500.0).abs() < 1.0, "{}", s.p50_us);
        assert!((s.p99_us - 990.0).abs() < 2.0, "{}", s.p99_us);
        assert!(s
            .json()
            .starts_with("{\"system\":\"ringraft\",\"clients\":4,\"ops\":1000,"));
        let svg = svg_plot(&h, "test <1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("99.9%") && svg.contains("test &lt;1&gt;"));
    }

    #[test]
    fn steal_comes_from_the_first_line_of_proc_stat() {
        let before = "cpu  100 5 50 800 10 1 4 30 0 0\ncpu0 50 2 25 400 5 0 2 15 0 0\n";
        let after = "cpu  150 5 70 900 10 1 4 60 7 0\ncpu0 75 2 35 450 5 0 2 30 7 0\n";
        let b = parse_proc_stat(before);
        assert_eq!(
            b,
            Some(HostTicks {
                total: 1000,
                steal: 30
            })
        );
        let a = parse_proc_stat(after);
        // 200 ticks passed, 30 of them stolen.
        let pct = steal_pct(b, a).expect("both readings");
        assert!((pct - 15.0).abs() < 1e-9, "{pct}");
        // No tick passed, a counter that went back, or a line of another form: unknown.
        assert_eq!(steal_pct(b, b), None);
        assert_eq!(steal_pct(a, b), None);
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3 4 x 6 7 8"), None);
        assert_eq!(parse_proc_stat("cpu  1 2 3"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }
}
