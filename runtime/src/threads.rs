//! The worker threads the kernels run on.
//!
//! Decode is a chain of short parallel sections: per layer four matrix-vector products and
//! the attention, each a few tens of microseconds on two cores, 121 sections per token.
//! Rayon puts its workers to sleep between them and wakes them through a condition variable
//! for the next one, while the calling thread blocks; a section then cost about 25 µs more
//! than the work itself (`examples/poolbench.rs`). [`parallel_for`] runs on a small persistent
//! pool instead: the calling thread takes part in the work, and the workers spin on an atomic
//! word for [`SPIN`] after each section, so the next one starts with a few atomic operations;
//! after that they park. On a busy machine spinning steals the time share that the working
//! threads need, so the spin calls `yield_now` every 64 rounds, and a caller whose workers
//! are slow to finish (one was preempted) sleeps in 20 µs steps instead of spinning.
//!
//! `QWEN_POOL=rayon` in the environment runs the same sections on rayon's global pool (the
//! previous scheme), to compare the two; `QWEN_SPIN_US` and `QWEN_SPIN_YIELD=0` tune the
//! spin. [`configure`] gives both pools the same number of threads; rayon stays for code
//! off the hot path.
//!
//! # Protocol
//!
//! One `AtomicU64` holds `epoch (31 bits) | open (1 bit) | joined (32 bits)`. A section:
//! 1. the caller (holding the submit lock) stores the job (closure pointer, item count),
//!    resets the item counter, and publishes `epoch + 1 | open | 0` with `Release`;
//! 2. a worker that sees a new epoch joins by a CAS that adds one to `joined` only while the
//!    epoch is the same and `open` is set (`Acquire`: it then sees the job), claims items
//!    from the counter, and leaves with a `Release` decrement;
//! 3. the caller claims items too; when they are gone it clears `open` (no one joins any
//!    more) and waits until `joined` is zero. Only then does it return, so the closure, which
//!    lives on the caller's stack, outlives every use. A worker that wakes late finds the
//!    section closed and goes back to waiting.

use std::cell::Cell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The number of cores available to this process (1 if it cannot be told).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sets up the kernels' pool and rayon's global pool with `threads` workers each (default:
/// [`default_threads`]), counting the calling thread. Call it before any work runs. Each pool
/// can be set up only once per process: later calls leave it as it is. Returns the number of
/// threads in effect.
pub fn configure(threads: Option<usize>) -> usize {
    let n = threads.unwrap_or_else(default_threads).max(1);
    // Fails only if the pool already exists (set up earlier, or used before): keep it.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("qwen-rayon-{i}"))
        .build_global();
    let _ = POOL.set(Pool::new(n));
    current_num_threads()
}

/// Threads that take part in a [`parallel_for`] (the caller and the workers).
pub fn current_num_threads() -> usize {
    pool().threads
}

/// How long a worker spins for the next section before it parks. Decode's sections are a few
/// microseconds apart; between tokens (sampling, streaming) a little more.
pub const SPIN: Duration = Duration::from_micros(50);

/// How long the caller spins for the workers still in a section before it sleeps-polls.
const WAIT_SPIN: Duration = Duration::from_micros(20);

const OPEN: u64 = 1 << 32;
const JOINED: u64 = OPEN - 1;
const EPOCH_SHIFT: u32 = 33;

struct Pool {
    /// Threads in a section, the caller included.
    threads: usize,
    /// `QWEN_POOL=rayon`: sections run on rayon's global pool instead (for comparisons).
    rayon: bool,
    /// `QWEN_SPIN_YIELD=0` turns off the `yield_now` between spins (for comparisons).
    yield_spin: bool,
    /// How long a worker spins before it parks ([`SPIN`], or `QWEN_SPIN_US`).
    spin: Duration,
    /// `epoch | open | joined`, see the module docs.
    state: AtomicU64,
    /// The job: a type-erased `&F` and the function that calls it on one item.
    data: AtomicPtr<()>,
    call: AtomicPtr<()>,
    items: AtomicUsize,
    /// The next item to claim.
    next: AtomicUsize,
    /// A worker's closure panicked in the current section.
    panicked: AtomicBool,
    /// Serializes sections from different threads (tests call kernels concurrently).
    submit: Mutex<()>,
    /// Parked workers and their wake-up.
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

static POOL: OnceLock<Pool> = OnceLock::new();

thread_local! {
    /// This thread is inside a section (as caller or worker): nested calls run inline.
    static IN_SECTION: Cell<bool> = const { Cell::new(false) };
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| Pool::new(default_threads()))
}

impl Pool {
    fn new(threads: usize) -> Pool {
        Pool {
            threads,
            rayon: std::env::var("QWEN_POOL").is_ok_and(|v| v == "rayon"),
            yield_spin: std::env::var("QWEN_SPIN_YIELD").map_or(true, |v| v != "0"),
            spin: std::env::var("QWEN_SPIN_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(SPIN, Duration::from_micros),
            state: AtomicU64::new(0),
            data: AtomicPtr::new(std::ptr::null_mut()),
            call: AtomicPtr::new(std::ptr::null_mut()),
            items: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            submit: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Claims and runs items until none are left.
    fn run_items(&self) {
        let (data, items) = (
            self.data.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
        );
        // SAFETY: `call` was stored from `trampoline::<F>` for this `data` (an `&F`) by the
        // caller of this section, which does not return before this thread has left it.
        let call: unsafe fn(*const (), usize) =
            unsafe { std::mem::transmute(self.call.load(Ordering::Relaxed)) };
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= items {
                break;
            }
            // SAFETY: see above; `data` points to a live `F`.
            unsafe { call(data, i) };
        }
    }

    fn worker(&'static self) {
        IN_SECTION.with(|s| s.set(true));
        let mut seen = self.state.load(Ordering::Relaxed) >> EPOCH_SHIFT;
        loop {
            // Wait for a new epoch: spin, then park.
            let mut state = self.state.load(Ordering::Relaxed);
            if state >> EPOCH_SHIFT == seen {
                let start = Instant::now();
                let mut spins = 0u32;
                loop {
                    std::hint::spin_loop();
                    state = self.state.load(Ordering::Relaxed);
                    if state >> EPOCH_SHIFT != seen {
                        break;
                    }
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        if start.elapsed() > self.spin {
                            state = self.park(seen);
                            break;
                        }
                        // On a busy machine, let a runnable thread have the core (on an
                        // idle one this returns at once).
                        if self.yield_spin {
                            std::thread::yield_now();
                        }
                    }
                }
            }
            let epoch = state >> EPOCH_SHIFT;
            seen = epoch;
            // Join while the section is open.
            while state >> EPOCH_SHIFT == epoch && state & OPEN != 0 {
                match self.state.compare_exchange_weak(
                    state,
                    state + 1,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        if catch_unwind(AssertUnwindSafe(|| self.run_items())).is_err() {
                            self.panicked.store(true, Ordering::Relaxed);
                        }
                        self.state.fetch_sub(1, Ordering::Release);
                        break;
                    }
                    Err(now) => state = now,
                }
            }
        }
    }

    /// Sleeps until the epoch differs from `seen`; returns the state then.
    fn park(&self, seen: u64) -> u64 {
        let mut guard = self.park.lock().unwrap_or_else(|e| e.into_inner());
        // Announce before the re-check; the caller bumps the epoch before it reads
        // `sleepers` (both SeqCst), so one of the two sees the other.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.load(Ordering::SeqCst);
        while state >> EPOCH_SHIFT == seen {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            state = self.state.load(Ordering::SeqCst);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        state
    }
}

/// Starts the workers on first use (the pool is built lazily, or by [`configure`]).
fn start_workers(pool: &'static Pool) {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        for i in 1..pool.threads {
            std::thread::Builder::new()
                .name(format!("qwen-worker-{i}"))
                .spawn(move || pool.worker())
                .expect("cannot start a worker thread");
        }
    });
}

/// Calls the `&F` behind `data` on item `i`.
///
/// # Safety
/// `data` must point to a live `F`.
unsafe fn trampoline<F: Fn(usize) + Sync>(data: *const (), i: usize) {
    unsafe { (*(data as *const F))(i) }
}

/// Calls `f(i)` for every `i` in `0..items`, spread over the pool's threads (the caller
/// included), each item once, in no particular order; returns when all are done. Items are
/// claimed one at a time from a shared counter, so make them coarse enough (a few per
/// thread). Called from inside `f`, or with one thread or one item, it runs inline.
pub fn parallel_for<F: Fn(usize) + Sync>(items: usize, f: F) {
    if items == 0 {
        return;
    }
    let pool = pool();
    if pool.rayon {
        use rayon::prelude::*;
        (0..items).into_par_iter().for_each(&f);
        return;
    }
    if items == 1 || pool.threads == 1 || IN_SECTION.with(|s| s.get()) {
        (0..items).for_each(f);
        return;
    }
    let _submit = pool.submit.lock().unwrap_or_else(|e| e.into_inner());
    start_workers(pool);

    // 1. Publish the job.
    pool.data
        .store(&f as *const F as *mut (), Ordering::Relaxed);
    pool.call.store(
        trampoline::<F> as unsafe fn(*const (), usize) as *mut (),
        Ordering::Relaxed,
    );
    pool.items.store(items, Ordering::Relaxed);
    pool.next.store(0, Ordering::Relaxed);
    pool.panicked.store(false, Ordering::Relaxed);
    let epoch = (pool.state.load(Ordering::Relaxed) >> EPOCH_SHIFT) + 1;
    let epoch = epoch & ((1 << 31) - 1);
    pool.state
        .store((epoch << EPOCH_SHIFT) | OPEN, Ordering::SeqCst);
    if pool.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = pool.park.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }

    // 2. Work alongside.
    IN_SECTION.with(|s| s.set(true));
    let mine = catch_unwind(AssertUnwindSafe(|| pool.run_items()));
    IN_SECTION.with(|s| s.set(false));

    // 3. Close and wait for the workers that joined.
    let mut state = pool.state.fetch_and(!OPEN, Ordering::AcqRel) & !OPEN;
    // Workers that joined finish their last item within microseconds, unless one was
    // preempted (a busy machine): then sleep in short steps, so that this thread's core and
    // time share go to it instead of to spinning.
    let start = Instant::now();
    let mut spins = 0u32;
    while state & JOINED != 0 {
        spins += 1;
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
        } else if start.elapsed() > WAIT_SPIN {
            std::thread::sleep(Duration::from_micros(20));
        } else {
            std::thread::yield_now();
        }
        state = pool.state.load(Ordering::Acquire);
    }
    if let Err(panic) = mine {
        resume_unwind(panic);
    }
    if pool.panicked.load(Ordering::Relaxed) {
        panic!("a kernel worker thread panicked");
    }
}

/// Splits `data` into chunks of `chunk` elements (the last may be shorter) and calls
/// `f(index, chunk)` on each, in parallel as [`parallel_for`].
pub fn for_each_chunk_mut<T: Send, F: Fn(usize, &mut [T]) + Sync>(
    data: &mut [T],
    chunk: usize,
    f: F,
) {
    assert!(chunk > 0, "chunk size 0");
    let len = data.len();
    let base = SendPtr(data.as_mut_ptr());
    parallel_for(len.div_ceil(chunk), |c| {
        let start = c * chunk;
        let n = chunk.min(len - start);
        // SAFETY: item `c` is run once, and chunks `c * chunk..` of distinct items are
        // disjoint ranges inside `data`, which is borrowed mutably for the whole call.
        let part = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(c, part)
    });
}

/// A raw pointer that may cross threads ([`for_each_chunk_mut`] hands out disjoint parts).
struct SendPtr<T>(*mut T);
// SAFETY: used only to rebuild disjoint `&mut [T]` with `T: Send`.
unsafe impl<T: Send> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_item_runs_once() {
        for items in [0, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU32> = (0..items).map(|_| AtomicU32::new(0)).collect();
            parallel_for(items, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "{items} items"
            );
        }
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0usize; 1001];
        for_each_chunk_mut(&mut v, 64, |c, part| {
            for (i, x) in part.iter_mut().enumerate() {
                *x = c * 64 + i;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }

    #[test]
    fn nested_and_concurrent_sections() {
        let total = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..200 {
                        parallel_for(8, |_| {
                            parallel_for(3, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 4 * 200 * 8 * 3);
    }

    #[test]
    fn many_short_sections_after_parking() {
        let sum = AtomicUsize::new(0);
        for round in 0..3 {
            for _ in 0..500 {
                parallel_for(4, |i| {
                    sum.fetch_add(i, Ordering::Relaxed);
                });
            }
            if round < 2 {
                // Long enough for the workers to park.
                std::thread::sleep(SPIN * 3);
            }
        }
        assert_eq!(sum.load(Ordering::Relaxed), 3 * 500 * 6);
    }

    #[test]
    fn a_panicking_item_reaches_the_caller() {
        let r = catch_unwind(|| {
            parallel_for(64, |i| {
                if i == 40 {
                    panic!("item 40");
                }
            })
        });
        assert!(r.is_err());
        // The pool still works.
        let n = AtomicUsize::new(0);
        parallel_for(10, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 10);
    }
}
