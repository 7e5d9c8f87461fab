//! The HAL contract suite (`seastar-hal-conformance`) on mio.

seastar_hal_conformance::conformance_tests!(|| {
    seastar_hal_mio::MioPlatform::new().expect("mio platform")
});
