"""The Python-state fuzzer (fuzz_state.py) in CI: a fixed budget of random
programs that read state in many ways, each compiled and called again after
random changes of that state, compared with eager every time."""

import fuzz_state

CI_PROGRAMS = 200
CI_SEED = 20261206


def test_random_state_programs_match_eager_after_state_changes():
    found = []
    failures = fuzz_state.run(CI_PROGRAMS, CI_SEED, log=found.append)
    assert not failures, "\n".join(found[:3])
