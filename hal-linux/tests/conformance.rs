//! The HAL contract suite (`seastar-hal-conformance`) on io_uring, default setup.

mod common;

seastar_hal_conformance::conformance_tests!(common::platform);
