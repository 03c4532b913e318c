//! temporary probe
use fuselab_tune::*;
fn main() {
    let tf = fuselab_tune::testfns::BRANIN;
    let space = SearchSpace::parse(tf.space).unwrap();
    let problem = Problem::single(space, "b", Direction::Minimize);
    let mut t = BoTuner::new(problem, 1000, BoOptions::default());
    for i in 0..40 {
        let t0 = std::time::Instant::now();
        let c = t.ask(1).unwrap().pop().unwrap();
        let x: Vec<f64> = c.0.iter().map(|v| v.as_f64().unwrap()).collect();
        let y = (tf.f)(&x);
        println!("{i} ask {:?} y {y:.4}", t0.elapsed());
        t.tell(Trial { index: i, config: c, outcome: Outcome::ok(vec![y], vec![]) });
    }
}
