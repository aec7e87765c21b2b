"""What the CLI prints for people: the zero-shot scores as a table, and no library chatter that is not theirs."""

import logging

from adapterxfer.artifacts import score_table


def test_the_zero_shot_scores_print_as_a_table_with_their_average():
    scores = {"en": {"f1": 0.8, "exact_match": 0.7}, "fr": {"f1": 0.6, "exact_match": 0.5},
              "de": {"f1": 0.4, "exact_match": 0.2}}
    assert score_table(scores, "en").splitlines() == [
        "zero-shot scores:",
        "  lang        f1  exact_match",
        "  en       0.800        0.700  (training language)",
        "  fr       0.600        0.500",
        "  de       0.400        0.200",
        "  mean     0.500        0.350  (zero-shot, 2 languages)",
    ]


def test_adapters_no_active_adapter_warning_is_silenced_and_its_other_warnings_are_not(caplog):
    import adapterxfer.regimes  # noqa: F401  (installs the filter)

    logger = logging.getLogger("adapters.model_mixin")
    with caplog.at_level(logging.WARNING, logger="adapters.model_mixin"):
        logger.warning("There are adapters available but none are activated for the forward pass.")
        logger.warning("something else")
    assert [record.getMessage() for record in caplog.records] == ["something else"]
