# Sourced by scripts/test. tether reads its `up`/`mcp-proxy` options from TETHER_* variables
# too (e.g. TETHER_RUNNER=docker in a project's CI); the tests give their own, so a developer's
# settings must not reach them. Every TETHER_* variable is unset, whichever options exist,
# except the few that are no option (a unit test of src/bin/tether/cli.rs runs this file and
# checks that no option's variable survives it):
#   TETHER_STATE_DIR, TETHER_LOG          where tether keeps its records, what it logs
#   TETHER_TEST_SEED, TETHER_*_CYCLES     the tests' own knobs (a seed to replay, soak lengths)
#   TETHER_INSTANCE, TETHER_LEADER        what tether sets in a backend's environment
for tether_var in $(compgen -e TETHER_ || true); do
  case "$tether_var" in
    TETHER_STATE_DIR | TETHER_LOG | TETHER_TEST_SEED | TETHER_*_CYCLES | TETHER_INSTANCE | TETHER_LEADER) ;;
    *) unset "$tether_var" ;;
  esac
done
unset tether_var
