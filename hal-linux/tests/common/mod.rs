//! The shared harness of `seastar-hal-conformance`, plus the io_uring platform the tests use.
#![allow(dead_code, unused_imports)] // each test binary uses a different subset

pub use seastar_hal_conformance::harness::*;
use seastar_hal_linux::{UringConfig, UringPlatform};

/// An io_uring platform with the default setup.
pub fn platform() -> UringPlatform {
    UringPlatform::new(UringConfig::new()).expect("io_uring platform")
}
