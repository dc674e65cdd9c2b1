//! The sampler: greedy, ties, seeds, top-k / top-p, distributions, suppression.

use qwenc_runtime::sampler::{argmax, Rng, Sampler, SamplerConfig, SamplerError};

const QWEN_VOCAB: usize = 151_936;

fn random_logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

fn config(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> SamplerConfig {
    SamplerConfig {
        temperature,
        top_k,
        top_p,
        seed,
    }
}

/// The sampler written the obvious way: sort everything, cut, draw with the same random
/// numbers. Walks the kept tokens in sorted order, as the sampler does when top-k or top-p
/// is active.
fn naive_sample(logits: &[f32], c: &SamplerConfig, rng: &mut Rng) -> u32 {
    let mut cands: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| **l > f32::NEG_INFINITY)
        .map(|(i, &l)| (l, i as u32))
        .collect();
    cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    if c.top_k > 0 {
        cands.truncate(c.top_k);
    }
    let max = cands[0].0;
    let w: Vec<f32> = cands
        .iter()
        .map(|x| ((x.0 - max) / c.temperature).exp())
        .collect();
    let total: f64 = w.iter().map(|&x| x as f64).sum();
    let mut keep = w.len();
    if c.top_p < 1.0 {
        let mut cum = 0.0;
        for (i, &x) in w.iter().enumerate() {
            cum += x as f64;
            if cum >= c.top_p as f64 * total {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = w[..keep].iter().map(|&x| x as f64).sum();
    let target = rng.next_f64() * kept_total;
    let mut cum = 0.0;
    for i in 0..keep {
        cum += w[i] as f64;
        if target < cum {
            return cands[i].1;
        }
    }
    cands[keep - 1].1
}

#[test]
fn greedy_is_the_default_and_picks_the_lowest_tied_id() {
    let logits = [1.0, 5.0, -2.0, 5.0, 4.9];
    let mut s = Sampler::new(SamplerConfig::default()).unwrap();
    assert!(s.config().is_greedy());
    assert_eq!(s.sample(&logits), 1);
    assert_eq!(argmax(&logits), 1);
    // Temperature 0 is greedy whatever top-k / top-p say.
    let mut s = Sampler::new(config(0.0, 3, 0.5, 9)).unwrap();
    assert_eq!(s.sample(&logits), 1);
    // top-k = 1 and a tiny top-p pick the same tied id when sampling.
    for seed in 0..20 {
        let mut k1 = Sampler::new(config(1.5, 1, 1.0, seed)).unwrap();
        assert_eq!(k1.sample(&logits), 1);
        let mut p0 = Sampler::new(config(1.5, 0, 1e-6, seed)).unwrap();
        assert_eq!(p0.sample(&logits), 1);
        let mut both = Sampler::new(config(1.5, 4, 1e-6, seed)).unwrap();
        assert_eq!(both.sample(&logits), 1);
    }
}

#[test]
fn top_k_one_and_tiny_top_p_equal_greedy_on_a_full_vocabulary() {
    for seed in 0..8 {
        let logits = random_logits(QWEN_VOCAB, seed, 10.0);
        let greedy = argmax(&logits);
        let mut k1 = Sampler::new(config(0.8, 1, 1.0, seed)).unwrap();
        let mut p0 = Sampler::new(config(0.8, 0, 1e-9, seed)).unwrap();
        let mut kp = Sampler::new(config(0.8, 50, 1e-9, seed)).unwrap();
        assert_eq!(k1.sample(&logits), greedy);
        assert_eq!(p0.sample(&logits), greedy);
        assert_eq!(kp.sample(&logits), greedy);
    }
}

#[test]
fn the_same_seed_gives_the_same_tokens() {
    let rows: Vec<Vec<f32>> = (0..50).map(|i| random_logits(5000, i, 4.0)).collect();
    let draw = |c: SamplerConfig| -> Vec<u32> {
        let mut s = Sampler::new(c).unwrap();
        rows.iter().map(|r| s.sample(r)).collect()
    };
    for (k, p) in [(0, 1.0), (40, 1.0), (0, 0.9), (40, 0.9)] {
        let a = draw(config(1.0, k, p, 1234));
        let b = draw(config(1.0, k, p, 1234));
        let c = draw(config(1.0, k, p, 1235));
        assert_eq!(a, b, "top_k {k} top_p {p}");
        assert_ne!(a, c, "top_k {k} top_p {p}: another seed, other tokens");
    }
}

#[test]
fn matches_a_full_sort_reference() {
    for (n, scale) in [(1000, 3.0), (QWEN_VOCAB, 12.0)] {
        let logits = random_logits(n, 77, scale);
        for c in [
            config(1.0, 40, 1.0, 5),
            config(0.7, 0, 0.9, 6),
            config(1.3, 100, 0.8, 7),
            config(2.0, 0, 0.5, 8),
        ] {
            let mut s = Sampler::new(c.clone()).unwrap();
            let mut rng = Rng::new(c.seed);
            let draws = if n > 10_000 { 8 } else { 100 };
            for _ in 0..draws {
                assert_eq!(
                    s.sample(&logits),
                    naive_sample(&logits, &c, &mut rng),
                    "{c:?}"
                );
            }
        }
    }
}

/// Frequencies of `draws` samples.
fn frequencies(logits: &[f32], c: SamplerConfig, draws: usize) -> Vec<f64> {
    let mut s = Sampler::new(c).unwrap();
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[s.sample(logits) as usize] += 1;
    }
    counts.iter().map(|&k| k as f64 / draws as f64).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < tol, "id {i}: {g} vs {w} (all: {got:?})");
    }
}

#[test]
fn distributions_follow_temperature_top_k_and_top_p() {
    let probs = [0.5f64, 0.3, 0.15, 0.05];
    let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32 + 3.0).collect();
    let n = 40_000;
    assert_close(
        &frequencies(&logits, config(1.0, 0, 1.0, 1), n),
        &probs,
        0.012,
    );
    // Temperature 2: probabilities proportional to sqrt(p).
    let sq: Vec<f64> = probs.iter().map(|p| p.sqrt()).collect();
    let z: f64 = sq.iter().sum();
    let t2: Vec<f64> = sq.iter().map(|x| x / z).collect();
    assert_close(&frequencies(&logits, config(2.0, 0, 1.0, 2), n), &t2, 0.012);
    // top-k 2: the two best, renormalized.
    assert_close(
        &frequencies(&logits, config(1.0, 2, 1.0, 3), n),
        &[0.625, 0.375, 0.0, 0.0],
        0.012,
    );
    // top-p 0.7: 0.5 is below 0.7, 0.5 + 0.3 reaches it: the same two.
    assert_close(
        &frequencies(&logits, config(1.0, 0, 0.7, 4), n),
        &[0.625, 0.375, 0.0, 0.0],
        0.012,
    );
    // top-p 0.9: three tokens.
    assert_close(
        &frequencies(&logits, config(1.0, 0, 0.9, 5), n),
        &[0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0],
        0.012,
    );
}

#[test]
fn a_large_nucleus_is_found_past_the_first_sorted_block() {
    // Equal logits: the order is by id, so a nucleus of half the vocabulary is the lower half.
    let logits = vec![0.25f32; QWEN_VOCAB];
    let mut s = Sampler::new(config(1.0, 0, 0.5, 11)).unwrap();
    let half = QWEN_VOCAB as u32 / 2;
    let draws: Vec<u32> = (0..40).map(|_| s.sample(&logits)).collect();
    assert!(
        draws.iter().all(|&id| id <= half),
        "{:?}",
        draws.iter().max()
    );
    assert!(
        draws.iter().any(|&id| id > half / 4),
        "spread over the nucleus"
    );
    // top-k 1000 of equal logits: ids 0..1000.
    let mut s = Sampler::new(config(1.0, 1000, 1.0, 12)).unwrap();
    assert!((0..200).all(|_| s.sample(&logits) < 1000));
}

#[test]
fn top_k_samples_stay_in_the_top_k() {
    let logits = random_logits(QWEN_VOCAB, 3, 8.0);
    let mut order: Vec<u32> = (0..QWEN_VOCAB as u32).collect();
    order.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    let top: std::collections::HashSet<u32> = order[..20].iter().copied().collect();
    let mut s = Sampler::new(config(5.0, 20, 1.0, 4)).unwrap();
    let draws: std::collections::HashSet<u32> = (0..3000).map(|_| s.sample(&logits)).collect();
    assert!(draws.is_subset(&top));
    assert!(draws.len() >= 15, "a high temperature spreads over the 20");
}

#[test]
fn suppressed_ids_are_never_chosen() {
    let logits = [0.0f32, 9.0, 8.0, 1.0];
    assert_eq!(Sampler::greedy().sample_suppressed(&logits, &[1]), 2);
    assert_eq!(Sampler::greedy().sample_suppressed(&logits, &[1, 2]), 3);
    let mut s = Sampler::new(config(3.0, 0, 1.0, 1)).unwrap();
    for _ in 0..2000 {
        let id = s.sample_suppressed(&logits, &[2, 1]);
        assert!(id == 0 || id == 3);
    }
    let mut s = Sampler::new(config(1.0, 2, 0.9, 1)).unwrap();
    for _ in 0..200 {
        let id = s.sample_suppressed(&logits, &[1]);
        assert!(id == 2 || id == 3, "top-2 of what is left");
    }
    // Nothing eligible: the lowest id not suppressed, never a suppressed one.
    let dead = [f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY];
    assert_eq!(Sampler::greedy().sample_suppressed(&dead, &[0]), 1);
    let mut s = Sampler::new(config(1.0, 0, 1.0, 1)).unwrap();
    assert_eq!(s.sample_suppressed(&dead, &[0]), 1);
    assert_eq!(s.sample_suppressed(&[1.0, 2.0], &[0, 1]), 0);
    // Ids beyond the row are ignored.
    assert_eq!(s.sample_suppressed(&[1.0, 2.0], &[7]), 1);
}

#[test]
fn nan_and_infinite_logits() {
    let logits = [f32::NAN, 1.0, f32::INFINITY, 2.0];
    assert_eq!(argmax(&logits), 2);
    let mut s = Sampler::new(config(1.0, 0, 1.0, 3)).unwrap();
    for _ in 0..100 {
        assert_eq!(s.sample(&logits), 2, "+inf takes all the probability");
    }
    let mut s = Sampler::new(config(1e-30, 0, 1.0, 3)).unwrap();
    assert_eq!(
        s.sample(&[1.0, 3.0, 2.0]),
        1,
        "a tiny temperature is greedy"
    );
}

#[test]
fn invalid_settings_are_refused() {
    assert_eq!(
        Sampler::new(config(1.0, 0, 2.0, 0)).unwrap_err(),
        SamplerError::TopP(2.0)
    );
    assert!(Sampler::new(config(1.0, 0, 0.0, 0)).is_err());
    assert!(Sampler::new(config(1.0, 0, f32::NAN, 0)).is_err());
    assert!(Sampler::new(config(-1.0, 0, 1.0, 0)).is_err());
    assert!(Sampler::new(config(f32::INFINITY, 0, 1.0, 0)).is_err());
    assert!(Sampler::new(config(f32::NAN, 0, 1.0, 0)).is_err());
    assert!(SamplerError::TopP(2.0).to_string().contains("top_p"));
}
