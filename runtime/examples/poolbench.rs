//! Section latency of the kernels' pool (`threads::parallel_for`) against rayon's:
//! `cargo run --release -p qwenc-runtime --example poolbench`, and again with
//! `QWEN_POOL=rayon`. Each section is `items` busy-waits of `us` microseconds, then 2 µs of
//! serial work, as decode's matmuls and the code between them; "ideal" is perfect sharing
//! over two threads.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn work(us: f64) {
    let t = Instant::now();
    while t.elapsed().as_secs_f64() * 1e6 < us {
        std::hint::spin_loop();
    }
}

fn main() {
    qwenc_runtime::threads::configure(Some(2));
    let by_caller = AtomicUsize::new(0);
    let main_id = std::thread::current().id();
    for &(items, us) in &[(8usize, 3.0f64), (8, 20.0), (2, 30.0)] {
        let sections = 5000;
        by_caller.store(0, Ordering::Relaxed);
        let t = Instant::now();
        for _ in 0..sections {
            qwenc_runtime::threads::parallel_for(items, |_| {
                if std::thread::current().id() == main_id {
                    by_caller.fetch_add(1, Ordering::Relaxed);
                }
                work(us)
            });
            work(2.0);
        }
        let el = t.elapsed().as_secs_f64() * 1e6 / sections as f64;
        let ideal = items as f64 * us / 2.0 + 2.0;
        println!(
            "items {items} x {us} us: {el:.1} us per section (ideal {ideal:.1}), caller ran {:.0}%",
            100.0 * by_caller.load(Ordering::Relaxed) as f64 / (sections * items) as f64
        );
    }
}
