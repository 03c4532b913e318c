//! # fuselab-tune
//!
//! Autotuning for fuselab: typed search spaces ([`SearchSpace`]), a
//! Gaussian-process Bayesian optimiser ([`BoTuner`]) with random and grid
//! baselines behind one ask/tell interface ([`Tuner`]), a crash-safe campaign
//! journal ([`Journal`]) and the loop that runs a campaign against an
//! [`Objective`] ([`run_campaign`]). This crate knows nothing about engines:
//! the CLI plugs the simulated engine (or an external command,
//! [`CommandObjective`]) in as an [`Objective`].
//!
//! ```
//! use fuselab_tune::{BoOptions, BoTuner, Direction, Outcome, Problem, SearchSpace, Trial, Tuner};
//! let space = SearchSpace::parse("x=-3.0..3,block=16|32|64").unwrap();
//! let mut tuner = BoTuner::new(Problem::single(space, "f", Direction::Minimize), 7, BoOptions::default());
//! for i in 0..8 {
//!     let c = tuner.ask(1).unwrap().remove(0);
//!     let x = c.0[0].as_f64().unwrap();
//!     tuner.tell(Trial { index: i, config: c, outcome: Outcome::ok(vec![(x - 1.0).powi(2)], vec![]) });
//! }
//! assert_eq!(tuner.trials().len(), 8);
//! ```
//!
//! ## Design notes
//!
//! *Why a home-grown GP instead of egobox or friedrich?* The lab's spaces are
//! small and mostly discrete, measurements are noisy, and failures (OOM,
//! timeouts) are common. We need ARD length-scales, a learned noise term, an
//! incumbent chosen by posterior mean, outcome-constraint GPs, a failure
//! classifier and exhaustive scoring of discrete candidates — a few hundred
//! lines on nalgebra + argmin (research/autotune.md §5).
//!
//! *How is noise handled?* The GP learns a noise variance (weak prior, floor
//! 1e-6 in standardised units); expected improvement is measured against the
//! best *posterior mean* among observed feasible points rather than the best
//! raw observation. The campaign's best ([`recommend`]) is the best observed
//! feasible trial; where the learned noise is material (at least
//! [`MATERIAL_NOISE`] of the objective's spread) the model's own pick, the
//! observed configuration with the best posterior mean, is reported beside
//! it with its posterior standard deviation.
//!
//! *Why is every trial fsynced?* So that a campaign killed at any point
//! (SIGKILL, power loss) resumes with every completed trial intact; a trial
//! costs seconds to minutes, an fsync microseconds.
//!
//! *Why are suggestions a function of (seed, trial index, history)?* So the
//! same seed replays the same campaign, and a resumed campaign continues
//! exactly as the journal says, with no hidden optimiser state to restore.

pub mod acq;
pub mod bo;
pub mod campaign;
pub mod compare;
mod error;
pub mod executor;
pub mod gp;
pub mod journal;
pub mod server;
pub mod space;
pub mod testfns;
pub mod tuner;

pub use bo::{BoOptions, BoTuner, MATERIAL_NOISE, ModelPick, Recommendation, recommend};
pub use campaign::{
    CampaignEnd, CommandObjective, CommandTrial, ExecOptions, Objective, TrialContext, TunerKind,
    campaign_meta, open_campaign, run_campaign, run_campaign_on,
};
pub use error::{Error, Result};
pub use executor::{
    Executor, ExecutorSpec, GPU_FILE, JobState, LocalExecutor, RayExecutor, RayResources,
    SlurmExecutor,
};
pub use journal::{CampaignMeta, JobLog, JobRecord, Journal, TrialRecord};
pub use space::{Config, Constraint, Domain, Param, SearchSpace, Value};
pub use tuner::{
    Direction, GridTuner, ObjectiveDef, Outcome, OutcomeConstraint, Problem, RandomTuner, Status,
    Trial, Tuner, pareto_front, pareto_trials, trial_rng,
};
