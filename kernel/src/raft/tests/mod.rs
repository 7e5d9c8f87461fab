//! Tests of the Raft core.

mod confchange_cases;
mod harness;
mod linearizability;
mod paper;
mod quorum_cases;
mod sim;
mod hostile;
mod features;
