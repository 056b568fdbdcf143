"""`MELConfig`'s docstring and field help are the one settings reference: every field of its own is in both."""

import dataclasses
import re

from trl import GRPOConfig

from melrl.training.config import MELConfig

GRPO_FIELDS = {f.name for f in dataclasses.fields(GRPOConfig)}


def test_every_mel_field_is_documented_and_has_help():
    own = [f for f in dataclasses.fields(MELConfig) if f.name not in GRPO_FIELDS or f.name == "loss_type"]
    assert len(own) > 20
    for f in own:
        # an entry of one of the docstring's `Parameters: <title>` sections: `        name: description`
        entry = re.search(rf"^ {{8}}{f.name}: ", MELConfig.__doc__, re.M)
        assert entry, f"{f.name} is missing from MELConfig's docstring"
        assert f.metadata.get("help"), f"{f.name} has no help"
