//! `suggest`: one BO suggestion (GP fit with restarts + acquisition search)
//! with 100 observations of Hartmann-6 in 6 dimensions. Target: ≤ 200 ms.
//!
//! `cargo bench -p fuselab-tune --bench suggest`

use criterion::{Criterion, criterion_group, criterion_main};
use fuselab_tune::testfns::{HARTMANN6, hartmann6};
use fuselab_tune::{
    BoOptions, BoTuner, Direction, Outcome, Problem, SearchSpace, Trial, Tuner, trial_rng,
};
use rand::Rng;

fn tuner_with_history(n: usize) -> BoTuner {
    let space = SearchSpace::parse(HARTMANN6.space).expect("valid space");
    let problem = Problem::single(space.clone(), "h6", Direction::Minimize);
    let mut tuner = BoTuner::new(problem, 7, BoOptions::default());
    let mut rng = trial_rng(99, 0);
    for i in 0..n {
        let u: Vec<f64> = (0..6).map(|_| rng.random::<f64>()).collect();
        let c = space.decode(&u);
        let x: Vec<f64> = c.0.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect();
        tuner.tell(Trial {
            index: i,
            config: c,
            outcome: Outcome::ok(vec![hartmann6(&x)], vec![]),
        });
    }
    tuner
}

fn suggest(c: &mut Criterion) {
    let mut tuner = tuner_with_history(100);
    // The benchmark checks its output once before measuring.
    let s = tuner.ask(1).expect("a suggestion");
    assert_eq!(s.len(), 1);
    let mut g = c.benchmark_group("suggest");
    g.sample_size(10);
    g.bench_function("bo/n=100,d=6", |b| {
        b.iter(|| tuner.ask(1).expect("a suggestion"))
    });
    g.finish();
}

criterion_group!(benches, suggest);
criterion_main!(benches);
