//! Autotuning: search spaces, Gaussian-process Bayesian optimisation, random and grid tuners, campaign journal.

pub mod acq;
pub mod bo;
pub mod campaign;
mod error;
pub mod gp;
pub mod journal;
pub mod space;
pub mod testfns;
pub mod tuner;

pub use bo::{BoOptions, BoTuner, Recommendation, recommend};
pub use campaign::{
    CampaignEnd, CommandObjective, Objective, TrialContext, TunerKind, campaign_meta, open_campaign, run_campaign,
};
pub use error::{Error, Result};
pub use journal::{CampaignMeta, Journal, TrialRecord};
pub use space::{Config, Constraint, Domain, Param, SearchSpace, Value};
pub use tuner::{
    Direction, GridTuner, ObjectiveDef, Outcome, OutcomeConstraint, Problem, RandomTuner, Status, Trial, Tuner,
    pareto_front, pareto_trials, trial_rng,
};
