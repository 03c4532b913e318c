//! One module per subcommand.

pub mod bench;
pub mod calibrate;
pub mod gate;
pub mod kernels;
pub mod report;
pub mod run;
pub mod serve;
pub mod sweep;
pub mod tui;
pub mod tune;
pub mod workload;
