/**
 * Shell pieces for the scripts tests run in a booted sandbox (bash -c). Tests
 * synchronize on what they can observe (a marker file, a held lock, a
 * delivered signal) instead of sleeping and hoping the other side got there.
 */

/**
 * Defines `wait_until COMMAND [ARGS...]`: runs COMMAND every 0.1 s until it
 * succeeds. After 120 s it prints what it was waiting for on stdout (which the
 * tests assert on, so the failure shows it) and exits the script with status 1.
 */
export const WAIT_UNTIL =
  'wait_until() { local i; for i in $(seq 1200); do "$@" && return 0; sleep 0.1; done; echo "timed out after 120 s waiting until: $*"; exit 1; }';
