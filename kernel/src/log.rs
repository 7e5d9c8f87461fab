//! One internal logging macro that routes to `log`, `defmt`, or nowhere.
//!
//! `klog!(warn, "task {} panicked", id)`. Levels: `trace`, `debug`, `info`, `warn`, `error`.
//! Keep format strings to plain `{}` with arguments that are both `Display` and
//! `defmt::Format` (integers, `&str`), so one call site serves both back-ends.

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` of seastar-kernel are mutually exclusive: enable one");

#[cfg(feature = "log")]
#[allow(unused_macros)] // call sites may all be compiled out (e.g. no `std`)
macro_rules! klog {
    ($level:ident, $($arg:tt)+) => {
        ::log::$level!(target: "seastar", $($arg)+)
    };
}

#[cfg(feature = "defmt")]
#[allow(unused_macros)] // call sites may all be compiled out (e.g. no `std`)
macro_rules! klog {
    ($level:ident, $($arg:tt)+) => {
        ::defmt::$level!($($arg)+)
    };
}

#[cfg(not(any(feature = "log", feature = "defmt")))]
#[allow(unused_macros)] // call sites may all be compiled out (e.g. no `std`)
macro_rules! klog {
    ($level:ident, $($arg:tt)+) => {{
        // Type-check the arguments without evaluating them, so a call site that compiles
        // here compiles with a back-end too.
        if false {
            let _ = ::core::format_args!($($arg)+);
        }
    }};
}
