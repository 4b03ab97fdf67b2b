"""The variable factory: names, reserved and secret names, size bound, environment, merge."""

from __future__ import annotations

import pytest

from loadme.contract import parse_output_lines
from loadme.errors import SecretInOutput, VariableError
from loadme.variables import MAX_VARIABLES_BYTES, VariableFactory, redact, variables_size

factory = VariableFactory("___", secret_names=["___ApiToken"])


@pytest.mark.parametrize("name", ["___Name", "____x", "___a1_B2", "___" + "x" * 125])
def test_accepts_well_formed_names(name: str) -> None:
    assert factory.check_name(name) == name


@pytest.mark.parametrize("name", ["Name", "__Name", "___", "___1abc", "___a-b", "___a.b", "___é", "___a b",
                                  "___" + "x" * 126, 7])
def test_rejects_malformed_names_naming_them(name: object) -> None:
    with pytest.raises(VariableError) as err:
        factory.check_name(name)
    assert repr(name) in err.value.message
    assert err.value.status == 400


def test_custom_prefix_is_honoured() -> None:
    custom = VariableFactory("LM_")
    assert custom.is_name("LM_Thing") and not custom.is_name("___Thing")
    assert custom.name("RunId") in custom.reserved


def test_requested_variables_cannot_set_reserved_or_secret_names() -> None:
    with pytest.raises(VariableError, match="___RunId is reserved"):
        factory.validate_requested({"___RunId": "x"})
    with pytest.raises(VariableError, match="___ApiToken is a secret"):
        factory.validate_requested({"___ApiToken": "x"})


def test_requested_values_must_be_strings() -> None:
    with pytest.raises(VariableError, match="___Count must be a string, got int"):
        factory.validate_requested({"___Count": 3})
    with pytest.raises(VariableError, match="must be a JSON object"):
        factory.validate_requested(["___A"])


def test_size_bound_is_413_and_exact() -> None:
    name = "___Big"
    overhead = variables_size({name: ""})
    at_limit = {name: "x" * (MAX_VARIABLES_BYTES - overhead)}
    assert variables_size(at_limit) == MAX_VARIABLES_BYTES
    assert factory.validate_requested(at_limit) == at_limit
    with pytest.raises(VariableError) as err:
        factory.validate_requested({name: "x" * (MAX_VARIABLES_BYTES - overhead + 1)})
    assert err.value.status == 413


def test_size_counts_escaped_unicode() -> None:
    # Non-ASCII travels as \\uXXXX escapes: six bytes per character, and the bound sees that.
    assert variables_size({"___A": "é"}) == len('{"___A":"\\u00e9"}')


def test_from_environ_keeps_prefixed_names_only_and_never_secrets() -> None:
    env = {"___A": "1", "PATH": "/bin", "__B": "x", "___ApiToken": "secret", "LOADME_PREFIX": "___"}
    assert factory.from_environ(env) == {"___A": "1"}


def test_merge_job_output_keeps_reserved_and_secret_values() -> None:
    state = {"___RunId": "r1", "___A": "1"}
    merged, ignored = factory.merge_job_output(
        state, {"___A": "2", "___New": "n", "___RunId": "evil", "___ApiToken": "t", "bad-name": "x"}
    )
    assert merged == {"___RunId": "r1", "___A": "2", "___New": "n"}
    assert sorted(ignored) == ["___ApiToken", "___RunId", "bad-name"]


def test_merge_job_output_rejects_oversized_state() -> None:
    with pytest.raises(VariableError) as err:
        factory.merge_job_output({}, {"___Big": "x" * MAX_VARIABLES_BYTES})
    assert err.value.status == 413


def test_parse_output_lines() -> None:
    found, bad = parse_output_lines("___A=1\n\nnot a pair\n___B=x=y\n___A=2\n=nope\n")
    assert found == {"___A": "2", "___B": "x=y"}
    assert bad == ["not a pair", "=nope"]


def test_redact_replaces_longest_secret_first() -> None:
    assert redact("token abc and abcdef", ["abc", "abcdef", ""]) == "token *** and ***"


def test_output_values_may_hold_unicode_line_separators() -> None:
    found, bad = parse_output_lines("___A=one\u2028two\x0bthree\r\n___B=x\n")
    assert found == {"___A": "one\u2028two\x0bthree", "___B": "x"} and bad == []


def test_an_output_holding_a_secret_the_step_was_given_is_refused_by_name() -> None:
    state = {"___RunId": "r1", "___A": "1"}
    reported = {"___Leak": "x-hunter2-value-y", "___Copy": "hunter2-value", "___Fine": "ok", "___A": "2"}
    with pytest.raises(SecretInOutput) as err:
        factory.merge_job_output(state, reported, ["hunter2-value", ""])
    assert err.value.names == ["___Leak", "___Copy"]
    assert err.value.status == 400 and "hunter2" not in err.value.message
    assert err.value.message.startswith("output variable(s) ___Leak, ___Copy refused: the value contains a secret")
    # Only the step's own secrets count; an empty secret value never matches anything.
    merged, ignored = factory.merge_job_output(state, reported, ["another-secret", ""])
    assert merged["___Leak"] == "x-hunter2-value-y" and ignored == []


def test_nul_characters_are_refused_in_requested_and_output_values() -> None:
    with pytest.raises(VariableError, match=r"variable ___A has a NUL character \(\\x00\) in its value"):
        factory.validate_requested({"___A": "a\x00b"})
    with pytest.raises(VariableError, match=r"output variable ___B has a NUL character"):
        factory.merge_job_output({}, {"___B": "\x00"})
