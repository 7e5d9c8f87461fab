//! The simulated platform (`seastar-hal`'s `sim`: nops and timeouts on a virtual clock) runs
//! the part of the contract it offers, through the macro's subset form: the smallest custom
//! HAL, and the check that the subset form works.

seastar_hal_conformance::conformance_tests!(seastar_hal::sim::SimPlatform::new;
    ops::nop_completes_at_the_next_park
    ops::polling_an_unknown_id_is_invalid_input
    ops::timeouts_fire_in_order_never_early
    ops::a_timeout_in_the_past_completes_at_once
    ops::park_honours_its_deadline
    ops::dropping_a_timeout_cancels_it
);
