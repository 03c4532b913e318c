//! One module per subcommand.

pub mod bench;
pub mod run;
pub mod sweep;
pub mod workload;
pub mod kernels;
pub mod report;
pub mod gate;
pub mod tune;
