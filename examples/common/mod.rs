//! What the benchmarks share: their processes, started and read from outside.
#![allow(dead_code)]

pub mod load;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The HS256 secret every benchmark server runs with.
pub const SECRET: &str = "bench-secret-bench-secret-bench-secret-00";

pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

/// Starts a process and returns it with the first capture of `pattern` on its stdout. Its
/// log goes to `log` (as a deployment keeps it) or, for the helpers, nowhere.
pub fn start(cmd: &mut Command, marker: &str, log: Option<&std::path::Path>) -> (Proc, String) {
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
        None => {
            cmd.env("RUST_LOG", "warn");
            Stdio::null()
        }
    };
    let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("start");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = loop {
        let line = lines.next().expect("the process printed its address").unwrap();
        if let Some(rest) = line.split(marker).nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), found)
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every PostgreSQL process on this machine (its backends, the
/// writer, the WAL writer…): what the database spends serving a benchmark.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else { return f64::NAN };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres"))
        .map(cpu_seconds)
        .filter(|s| s.is_finite())
        .sum()
}

pub fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Starts a process and returns it with the first word after each of `markers` on its stdout
/// (a server's banner lines), its log going nowhere.
pub fn start_with_banner(cmd: &mut Command, markers: &[&str]) -> (Proc, Vec<String>) {
    cmd.env("RUST_LOG", "warn");
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("start");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut found: Vec<Option<String>> = vec![None; markers.len()];
    while found.iter().any(Option::is_none) {
        let line = lines.next().expect("the process printed its banner").unwrap();
        for (i, m) in markers.iter().enumerate() {
            if let Some(rest) = line.split(m).nth(1) {
                found[i] = rest.split_whitespace().next().map(str::to_string);
            }
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), found.into_iter().map(Option::unwrap).collect())
}

/// Resident memory of a process now, in KiB.
pub fn rss_kib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}
