//! `tether-guard`: the small executable every backend of `tether` runs under (see
//! `tether_core::guard`). `tether` spawns it as `tether-guard __tether-guard [OPTIONS] --
//! BACKEND [ARGS…]`, the same arguments `tether __tether-guard` takes, when it sits beside
//! `tether`; it runs the guard and nothing else — no async runtime, argument parser or log
//! subscriber — so each guard process maps and relocates a fraction of the `tether` binary.

fn main() {
    match tether_core::guard::run_from_args() {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!(
                "tether-guard: the guard of a tether backend, started by tether only \
                 (`tether-guard {} [OPTIONS] -- PROGRAM [ARGS…]`)",
                tether_core::guard::GUARD_ARG
            );
            std::process::exit(2);
        }
    }
}
