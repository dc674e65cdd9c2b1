//! Peak resident memory of the process: `VmHWM` of `/proc/self/status` (Linux).
//!
//! The high-water mark never goes down, so a reading after a phase is the peak of the
//! process up to the end of that phase (weights loading included: the pages of the
//! memory-mapped weights that were touched count as resident, as they do for any tool that
//! polls the RSS).

/// Bytes in the `MB` of the reports (10^6, as optimum-benchmark counts).
pub const MB: f64 = 1e6;

/// The peak resident set size in bytes from the text of a `/proc/PID/status` file: its
/// `VmHWM:` line (`VmHWM:     123456 kB`, where the kernel's `kB` is 1024 bytes). `None` if
/// there is no such line or it does not parse.
pub fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let mut parts = line.split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    let factor = match parts.next() {
        Some("kB") | Some("KB") | Some("kiB") | Some("KiB") => 1024,
        Some("mB") | Some("MB") | Some("MiB") => 1024 * 1024,
        Some("B") | None => 1,
        Some(_) => return None,
    };
    value.checked_mul(factor)
}

/// The peak resident set size of this process in bytes, or `None` where
/// `/proc/self/status` cannot be read (not Linux) or has no `VmHWM`.
pub fn peak_rss_bytes() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_vm_hwm(&s))
}

/// `bytes` in MB (10^6 bytes).
pub fn to_mb(bytes: u64) -> f64 {
    bytes as f64 / MB
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let peak = peak_rss_bytes().expect("VmHWM on Linux");
            assert!(peak > 1_000_000, "{peak}");
        }
    }
}
