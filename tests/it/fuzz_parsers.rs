//! Fuzzing the two parsers users feed text into: `tether.toml` and the JSON
//! conditions. Neither may ever panic; every error must say something. The corpus in
//! `tests/corpus/` holds the hand-made cases (and any case proptest ever found).

use proptest::prelude::*;
use tether::Config;
use tether::core::probe::Condition;

fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn the_config_corpus_parses_or_fails_with_a_message() {
    let dir = std::fs::read_dir(corpus().join("config")).expect("corpus dir");
    let mut n = 0;
    for entry in dir.filter_map(Result::ok) {
        let bytes = std::fs::read(entry.path()).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        match Config::from_toml(&text).and_then(Config::plan) {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{:?}: config errors are usage errors", entry.path());
                assert!(!e.to_string().trim().is_empty());
            }
        }
        n += 1;
    }
    assert!(n >= 10, "the corpus has {n} files");
}

#[test]
fn the_condition_corpus_parses_or_fails_with_the_form() {
    let text = std::fs::read_to_string(corpus().join("conditions.txt")).expect("corpus");
    for line in text.lines() {
        if let Err(e) = Condition::parse(line) {
            assert!(e.to_string().contains("FIELD OP VALUE"), "{line}: {e}");
        }
    }
}

const KEYS: &[&str] = &[
    "runner",
    "name",
    "port",
    "host",
    "probe",
    "preset",
    "expect",
    "timeout",
    "grace",
    "args",
    "env",
    "restart",
    "max-restarts",
    "liveness",
    "prot",
    "",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_text_as_config_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_toml(&text).and_then(Config::plan);
    }

    #[test]
    fn config_shaped_text_never_panics(
        key in prop::sample::select(KEYS),
        value in prop_oneof![
            "-?[0-9]{1,7}".prop_map(|s| s),
            "\"[a-z0-9:/._{}= -]{0,20}\"".prop_map(|s| s),
            Just("true".to_string()),
            Just("[\"a\", 1]".to_string()),
            Just("{ a = 1 }".to_string()),
        ],
    ) {
        let text = format!("{key} = {value}\n");
        if let Err(e) = Config::from_toml(&text).and_then(Config::plan) {
            prop_assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn any_text_as_condition_never_panics(text in "\\PC{0,60}") {
        let _ = Condition::parse(&text);
    }

    #[test]
    fn a_valid_condition_round_trips_through_display(
        field in "[a-z_]{1,8}(\\.[a-z0-9_]{1,5}){0,3}",
        op in prop::sample::select(&["==", "!=", ">", ">=", "<", "<="][..]),
        n in -1000i64..1000,
    ) {
        let c = Condition::parse(&format!("{field}{op}{n}")).expect("valid");
        let again = Condition::parse(&c.to_string()).expect("its display parses");
        prop_assert_eq!(c, again);
    }
}
