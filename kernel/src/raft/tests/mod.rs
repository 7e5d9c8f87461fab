//! Tests of the Raft core.

mod confchange_cases;
mod features;
mod harness;
mod hostile;
mod linearizability;
mod paper;
mod quorum_cases;
mod sim;
