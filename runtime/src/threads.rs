//! The worker threads the kernels run on: rayon's global pool.

/// The number of cores available to this process (1 if it cannot be told).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets up rayon's global pool with `threads` workers (default: [`default_threads`]).
/// Call it before any work runs on rayon. The pool can be set up only once per process:
/// later calls leave it as it is. Returns the number of workers in effect.
pub fn configure(threads: Option<usize>) -> usize {
    let n = threads.unwrap_or_else(default_threads).max(1);
    // Fails only if the pool already exists (set up earlier, or used before): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("qwen-worker-{i}"))
        .build_global();
    rayon::current_num_threads()
}
