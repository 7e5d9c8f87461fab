//! One internal logging macro family that routes to `log`, `defmt`, or nowhere.
//! The two back-ends are mutually exclusive features.

#[cfg(all(feature = "log", feature = "defmt"))]
compile_error!("features `log` and `defmt` of seastar-kernel are mutually exclusive: enable one");
